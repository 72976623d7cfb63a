"""The claims registry (tasks/claims.yaml) and the verdicts its rules compute from result rows.

A verdict is computed from measured rows, never typed in: supported, not supported, inconclusive when a figure's
interval reaches the claim's threshold, or skipped with the reason this run cannot test it. Rules select rows by
name and take every threshold from the claim's entry; a verdict reads nothing but the rows and the shipped tables.
"""

from pathlib import Path

from harness.claims import gap, rules
from harness.claims.core import Claim, Verdict
from harness.claims.report import write_report
from harness.specs import Spec, validate
from harness.yamlfile import YamlDoc

CLAIMS_FILE = Path(__file__).resolve().parent.parent.parent / "tasks" / "claims.yaml"

# Each rule and the parameters its claim entry must give.
RULES = {
    "efficiency_steps": (rules.efficiency_steps, {"scenario", "batch_size", "baseline", "settings", "quality_task",
                                                  "max_perplexity_ratio", "min_speedup", "batching", "engines"}),
    "moe_speed_memory": (rules.moe_speed_memory, {"scenario", "where", "weights_tolerance", "min_position",
                                                  "families"}),
    "gap_months": (gap.gap_months, {"reference", "months", "groups", "reproductions", "max_halfwidth_points"}),
    "token_overhead": (rules.token_overhead, {"tasks", "min_token_ratio"}),
    "context_forgetting": (rules.context_forgetting, {"tasks", "metric", "min_drop", "min_short_accuracy"}),
    "cost_per_token": (rules.cost_per_token, {"scenario", "where", "usd_per_mtok"}),
    "interconnect": (rules.interconnect, {"single_step", "split_steps", "efficiency_below"}),
}


class ClaimsFile(Spec):
    claims: tuple[Claim, ...]


def load_claims(path: Path = CLAIMS_FILE) -> list[Claim]:
    doc = YamlDoc(path)
    return list(validate(ClaimsFile, doc.data, str(doc.file), doc.line).claims)


def verdict(claim: Claim, rows: list[dict]) -> Verdict:
    return RULES[claim.rule][0](claim, rows)


def verdicts(rows: list[dict], claims: list[Claim] | None = None) -> list[Verdict]:
    return [verdict(claim, rows) for claim in (claims or load_claims())]


def leaderboard_gaps(claims: list[Claim] | None = None) -> dict[str, dict]:
    """bench task -> the gap claim's group it lines up with, with the group's best closed model (`best`, None where
    it has none): the leaderboard's gap column. The reference table is read once."""
    claim = next(c for c in (claims or load_claims()) if c.rule == "gap_months")
    reference = gap.reference_scores(gap.TASKS_DIR / claim.params["reference"])
    return {group["task"]: {**group, "best": gap.best_closed(group, reference)}
            for group in claim.params["groups"] if group.get("task")}


__all__ = ["Claim", "Verdict", "load_claims", "verdict", "verdicts", "write_report", "leaderboard_gaps"]
