"""The claims registry (tasks/claims.yaml) and the verdict rules that read result rows.

A verdict is computed from measured rows, never typed in: supported, not supported, inconclusive when the 95%
confidence intervals of the figures it compares overlap, or skipped with the reason this run cannot test it.
"""

import csv
import datetime
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from harness.results.store import write_atomic
from harness.results.tables import csv_text
from harness.yamlfile import YamlDoc

CLAIMS_FILE = Path(__file__).resolve().parent.parent / "tasks" / "claims.yaml"
REFERENCE_SCORES = Path(__file__).resolve().parent.parent / "tasks" / "gap" / "reference_scores.csv"
Z95 = 1.96


@dataclass(frozen=True)
class Claim:
    id: str
    claim: str
    made_by: str
    tests: str
    rule: str
    params: dict


@dataclass
class Verdict:
    claim: Claim
    verdict: str  # supported | not supported | inconclusive | skipped
    reason: str
    figures: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Estimate:
    """A figure with its standard error: the median of timed samples (stderr of the mean of the samples, which
    bounds the median's for these near-normal runs) or a quality figure with its bootstrap stderr."""

    value: float
    stderr: float

    @property
    def low(self) -> float:
        return self.value - Z95 * self.stderr

    @property
    def high(self) -> float:
        return self.value + Z95 * self.stderr

    def overlaps(self, other: "Estimate") -> bool:
        return self.low <= other.high and other.low <= self.high


def load_claims(path: Path = CLAIMS_FILE) -> list[Claim]:
    doc = YamlDoc(path)
    doc.check_keys((), doc.data, {"claims"}, {"claims"})
    claims = []
    for index, entry in enumerate(doc.data["claims"]):
        base = {"id", "claim", "made_by", "tests", "rule"}
        doc.check_keys(("claims", index), entry, base | set(entry), base)
        if entry["rule"] not in RULES:
            raise doc.error(("claims", index, "rule"), f"unknown rule; known: {', '.join(RULES)}")
        claims.append(Claim(**{k: entry[k] for k in base}, params={k: v for k, v in entry.items() if k not in base}))
    return claims


def estimate(row: dict) -> Estimate:
    stats = row.get("stats", {})
    if stats.get("stderr") is not None:
        return Estimate(row["value"], stats["stderr"])
    n = stats.get("n") or 1
    return Estimate(row["value"], (stats.get("stdev") or 0.0) / math.sqrt(n))


def _find(rows: list[dict], **where) -> dict | None:
    """The ok row matching every field; params are matched on the keys given in `params`."""
    wanted_params = where.pop("params", {})
    for row in rows:
        if row.get("status") == "ok" and all(row.get(k) == v for k, v in where.items()) and all(
                row["params"].get(k) == v for k, v in wanted_params.items()):
            return row
    return None


def _compare(higher: Estimate, lower: Estimate) -> str:
    """supported when `higher` is above `lower` beyond both intervals; not supported when below; else inconclusive."""
    if higher.overlaps(lower):
        return "inconclusive"
    return "supported" if higher.value > lower.value else "not supported"


def moe_speed_memory(claim: Claim, rows: list[dict]) -> Verdict:
    """Supported when the MoE's decode speed is nearer dense-active's than dense-total's (in ratio) while its
    weights take about what dense-total's take; inconclusive when the MoE's interval reaches the midpoint.
    The first family of the claim with latency rows for all three models in this run decides."""
    for names in claim.params["families"]:
        found = {role: (_find(rows, model=model, metric="decode_tok_s", scenario="latency"),
                        _find(rows, model=model, metric="weights_mib", scenario="latency"))
                 for role, model in names.items()}
        if all(speed and memory for speed, memory in found.values()):
            return _moe_verdict(claim, rows, names, found)
    wanted = "; ".join(", ".join(names.values()) for names in claim.params["families"])
    return Verdict(claim, "skipped", f"no family has latency rows for all its models in this run ({wanted})")


def _moe_verdict(claim: Claim, rows: list[dict], names: dict, found: dict) -> Verdict:
    speed = {role: estimate(speed_row) for role, (speed_row, _) in found.items()}
    weights = {role: memory["value"] for role, (_, memory) in found.items()}
    midpoint = math.sqrt(speed["dense_active"].value * speed["dense_total"].value)
    moe = speed["moe"]
    figures = {f"decode_tok_s[{role}]": round(e.value, 3) for role, e in speed.items()}
    for role, model in names.items():  # prefill and energy beside it, for the reader; the verdict follows decode
        prefill = _find(rows, model=model, metric="prefill_tok_s", scenario="latency")
        figures[f"prefill_tok_s[{role}]"] = round(prefill["value"], 1) if prefill else None
        joules = _find(rows, model=model, metric="j_per_tok", scenario="latency")
        if joules:  # only where the machine has an energy counter
            figures[f"j_per_tok[{role}]"] = round(joules["value"], 4)
    routing = _find(rows, model=names["moe"], metric="expert_imbalance", scenario="latency")
    if routing:
        figures["expert_imbalance[moe, worst layer]"] = round(routing["value"], 2)
    figures.update({f"weights_mib[{role}]": round(v, 1) for role, v in weights.items()})
    memory_like_total = abs(weights["moe"] / weights["dense_total"] - 1) <= 0.1
    if moe.low <= midpoint <= moe.high:
        return Verdict(claim, "inconclusive", f"the MoE's decode speed interval [{moe.low:.1f}, {moe.high:.1f}] "
                                              f"contains the midpoint {midpoint:.1f} tok/s", figures)
    nearer_active = moe.value > midpoint
    verdict = "supported" if nearer_active and memory_like_total else "not supported"
    reason = (f"{names['moe']} decodes at {moe.value:.1f} tok/s: nearer dense-{'active' if nearer_active else 'total'} "
              f"({speed['dense_active'].value:.1f} active, {speed['dense_total'].value:.1f} total); its weights take "
              f"{weights['moe'] / weights['dense_total']:.2f}x dense-total's")
    return Verdict(claim, verdict, reason, figures)


def context_forgetting(claim: Claim, rows: list[dict]) -> Verdict:
    """Supported when passkey accuracy at the longest context is below that at the shortest, beyond both
    intervals; per model, the first model with all lengths decides."""
    lengths = claim.params["tasks"]
    for model in dict.fromkeys(row["model"] for row in rows):
        found = [_find(rows, model=model, task=task, metric="exact_match") for task in lengths]
        if all(found):
            accuracy = [estimate(row) for row in found]
            figures = {f"accuracy[{task}]": round(e.value, 3) for task, e in zip(lengths, accuracy, strict=True)}
            for row in rows:  # what each context length costs: KV cache and prefill speed from latency rows
                if row.get("model") == model and row.get("status") == "ok" and row["scenario"] == "latency" \
                        and row["metric"] in ("kv_cache_mib", "prefill_tok_s") and not row["params"].get("engine_step"):
                    figures[f"{row['metric']}[{row['params']['prompt_tokens']} tokens]"] = round(row["value"], 2)
            verdict = _compare(accuracy[0], accuracy[-1])
            reason = (f"{model}: passkey accuracy {accuracy[0].value:.2f} at {lengths[0]} against "
                      f"{accuracy[-1].value:.2f} at {lengths[-1]}")
            return Verdict(claim, verdict, reason, figures)
    return Verdict(claim, "skipped", f"no model has rows for all of {', '.join(lengths)} in this run")


def _price_usd_per_hour(rows: list[dict]) -> float | None:
    """The price per hour of the profile the run was held against; None where it has none."""
    from harness.profiles import get_profile

    name = next((row.get("profile") for row in rows if row.get("profile")), None)
    return get_profile(name).price_usd_per_hour if name else None


def token_overhead(claim: Claim, rows: list[dict]) -> Verdict:
    """Supported when step-by-step answers take more tokens than direct ones beyond both intervals; with seconds
    per answer (the task's batched generation time over its questions) and, where the profile has a price, dollars
    per answer at that price."""
    tasks = claim.params["tasks"]
    price = _price_usd_per_hour(rows)
    for model in dict.fromkeys(row["model"] for row in rows):
        direct = _find(rows, model=model, task=tasks["direct"], metric="tokens_per_answer")
        reasoning = _find(rows, model=model, task=tasks["reasoning"], metric="tokens_per_answer")
        if direct and reasoning:
            d, r = estimate(direct), estimate(reasoning)
            figures = {"tokens_direct": round(d.value, 1), "tokens_reasoning": round(r.value, 1),
                       "ratio": round(r.value / d.value, 2) if d.value else None}
            for role, task in tasks.items():
                accuracy = _find(rows, model=model, task=task, metric="exact_match")
                seconds = _find(rows, model=model, task=task, metric="eval_s")
                if accuracy:
                    figures[f"exact_match[{role}]"] = round(accuracy["value"], 3)
                if seconds:  # the task's scoring time over its questions (batched generation)
                    per_answer = seconds["value"] / seconds["params"]["limit"]
                    figures[f"seconds_per_answer[{role}]"] = round(per_answer, 3)
                    if price:
                        figures[f"usd_per_answer[{role}]"] = round(per_answer * price / 3600, 8)
            return Verdict(claim, _compare(r, d), f"{model}: {r.value:.1f} tokens per step-by-step answer "
                                                  f"against {d.value:.1f} direct", figures)
    return Verdict(claim, "skipped", f"no model has tokens_per_answer for both {tasks['direct']} and "
                                     f"{tasks['reasoning']} in this run")


def cost_per_token(claim: Claim, rows: list[dict]) -> Verdict:
    """Supported when every model's cost per million output tokens is under the claim's threshold beyond its
    interval (batch 1 decode, the way a local user runs)."""
    costs = [row for row in rows if row.get("status") == "ok" and row["metric"] == "usd_per_mtok"]
    if not costs:
        profile = next((row.get("profile") for row in rows), None)
        return Verdict(claim, "skipped", f"profile {profile} has no price per hour, so no usd_per_mtok was measured")
    threshold = claim.params["usd_per_mtok"]
    worst = max(costs, key=lambda row: row["value"])
    figures = {f"usd_per_mtok[{row['model']} b{row['params'].get('batch_size')}]": round(row["value"], 4)
               for row in costs}
    e = estimate(worst)
    verdict = _compare(Estimate(threshold, 0.0), e)
    return Verdict(claim, verdict, f"highest cost ${e.value:.3f} per million tokens ({worst['model']}) against "
                                   f"${threshold} ", figures)


def _release(text: str) -> datetime.date | None:
    """The date at the start of a release-date cell ("2024-05-13 (...)" or "2024-01 (...)")."""
    found = re.match(r"(\d{4})-(\d{2})(?:-(\d{2}))?", text.strip())
    return datetime.date(int(found[1]), int(found[2]), int(found[3] or 1)) if found else None


def months_between(earlier: datetime.date, later: datetime.date) -> float:
    return (later - earlier).days / (365.25 / 12)


def months_behind(score: float, released: datetime.date, closed: list[dict]) -> tuple[float, dict, bool]:
    """Months from the first closed model (by release) whose score reached `score` to `released`; and whether the
    table's earliest model already reached it (the months are then a lower bound)."""
    reached = sorted((row for row in closed if row["score"] >= score), key=lambda row: row["released"])
    if not reached:
        raise ValueError("no closed model in the reference reached this score")
    first = reached[0]
    earliest = min(row["released"] for row in closed)
    return months_between(first["released"], released), first, first["released"] == earliest


def reference_scores(path: Path = REFERENCE_SCORES) -> list[dict]:
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        row["score"] = float(row["score"])
        row["released"] = _release(row["release_date"])
    return rows


def closed_scores(reference: list[dict], benchmark: str, setting: str) -> list[dict]:
    """The reference rows of closed models on `benchmark` in exactly `setting` (never across settings)."""
    return [r for r in reference if r["open_weights"].startswith("no") and r["benchmark"] == benchmark
            and r["setting_as_reported"] == setting and r["released"]]


def gap_to_best_closed(score: float, closed: list[dict]) -> tuple[dict, float]:
    """The best closed model of `closed` and how many points `score` (in percent) trails it."""
    best = max(closed, key=lambda r: r["score"])
    return best, best["score"] - score


def gap_comparisons() -> list[dict]:
    """Which figures of a run line up with which reference benchmark and setting (the gap claim's mapping)."""
    return next(claim.params.get("comparisons", []) for claim in load_claims() if claim.rule == "gap_months")


def gap_months(claim: Claim, rows: list[dict]) -> Verdict:
    """For each model of the run with a reference entry and a quality row on a benchmark and setting the reference
    has for closed models: months behind the first closed model that reached its score."""
    reference = reference_scores()
    for mapping in claim.params.get("comparisons", []):
        row = _find(rows, model=mapping["model"], task=mapping["task"], metric=mapping["metric"])
        if row is None:
            continue
        own = next((r for r in reference if r["model"] == mapping["reference_model"] and r["released"]), None)
        closed = closed_scores(reference, mapping["benchmark"], mapping["setting"])
        if own is None or not closed:
            continue
        score = row["value"] * 100
        best, gap = gap_to_best_closed(score, closed)
        figures = {"score": round(score, 1), "best_closed": f"{best['model']} {best['score']}",
                   "gap_points": round(gap, 1)}
        try:
            months, first, lower_bound = months_behind(score, own["released"], closed)
        except ValueError:
            return Verdict(claim, "supported", f"{row['model']} scores {score:.1f}, above every closed model in the "
                                               f"reference on {mapping['benchmark']} {mapping['setting']}", figures)
        figures.update(months_behind=round(months, 1), first_closed_to_reach=f"{first['model']} ({first['released']})")
        bound = "at least " if lower_bound else ""
        verdict = "supported" if months <= claim.params["months"] and not lower_bound else "not supported"
        return Verdict(claim, verdict, f"{row['model']} ({score:.1f} on {mapping['benchmark']} {mapping['setting']},"
                                       f" released {own['released']}) is {bound}{months:.0f} months behind "
                                       f"{first['model']}", figures)
    return Verdict(claim, "skipped", "no quality row of this run matches a benchmark and setting of the reference")


def efficiency_steps(claim: Claim, rows: list[dict]) -> Verdict:
    """Each engine setting against the first (the naive baseline): decode speed-up, weights saved, perplexity
    change. Supported when the best setting is at least `min_speedup` times the baseline beyond both intervals;
    not supported when even its interval's top is below that; else inconclusive."""
    speeds = [row for row in rows if row.get("status") == "ok" and row["metric"] == "decode_tok_s"
              and row["params"].get("engine_step")]
    if len(speeds) < 2:
        return Verdict(claim, "skipped", "this run has no engine-settings ladder (the claims suite has one)")
    baseline, factor = estimate(speeds[0]), claim.params["min_speedup"]
    figures = {}
    for row in speeds:
        step = row["params"]["engine_step"]
        figures[f"speedup[{step}]"] = round(row["value"] / baseline.value, 2)
        weights = _find(rows, cell_id=row["cell_id"], metric="weights_mib")
        perplexity = _find(rows, metric="perplexity", params={"engine_step": step})
        if weights:
            figures[f"weights_mib[{step}]"] = round(weights["value"], 1)
        if perplexity:
            figures[f"perplexity[{step}]"] = round(perplexity["value"], 2)
    best = max(speeds[1:], key=lambda row: row["value"])
    e = estimate(best)
    target = Estimate(baseline.value * factor, baseline.stderr * factor)
    verdict = "inconclusive" if e.overlaps(target) else ("supported" if e.value > target.value else "not supported")
    return Verdict(claim, verdict, f"best setting '{best['params']['engine_step']}' decodes "
                                   f"{e.value / baseline.value:.2f}x the naive baseline (the claim: >= {factor}x)",
                   figures)


def interconnect(claim: Claim, rows: list[dict]) -> Verdict:
    """From the all-reduce bus bandwidth measured across the machine's GPUs and decode speed at tensor-parallel
    sizes 1 and n (vLLM, the `interconnect` suite): supported when size n decodes below `efficiency_below` x n x
    size 1's speed beyond both intervals, not supported when above, inconclusive when the intervals overlap."""
    busbw = {row["params"]["size_mib"]: row for row in rows
             if row.get("status") == "ok" and row["metric"] == "allreduce_busbw_gbps"}
    if not busbw:
        gpus = max((row.get("fingerprint", {}).get("gpu_count") or 0 for row in rows), default=0)
        if gpus < 2:
            return Verdict(claim, "skipped", f"needs more than one GPU; this machine has {gpus}")
        return Verdict(claim, "skipped", "no all-reduce figure was measured (resolved_config.yaml says why)")
    world = next(iter(busbw.values()))["params"]["world_size"]
    figures = {f"allreduce_busbw_gbps[{size} MiB]": round(row["value"], 1) for size, row in sorted(busbw.items())}
    profile = next((row.get("profile") for row in rows if row.get("profile")), None)
    if profile:
        from harness.profiles import get_profile

        figures["datasheet_interconnect"] = get_profile(profile).interconnect
    decode = {}
    for row in rows:
        size = (row.get("backend_info") or {}).get("tensor_parallel_size")
        if row.get("status") == "ok" and row["metric"] == "decode_tok_s" and row["scenario"] == "latency" and size:
            decode.setdefault(row["model"], {})[size] = row
    pairs = {model: sizes for model, sizes in decode.items() if 1 in sizes and max(sizes) > 1}
    if not pairs:
        return Verdict(claim, "skipped", f"all-reduce measured across {world} GPUs, but no decode rows at "
                                         "tensor-parallel sizes 1 and more: run the `interconnect` suite", figures)
    model, sizes = next(iter(pairs.items()))
    n = max(sizes)
    single, split = estimate(sizes[1]), estimate(sizes[n])
    efficiency = split.value / (n * single.value)
    figures.update({f"decode_tok_s[{model} tp1]": round(single.value, 2),
                    f"decode_tok_s[{model} tp{n}]": round(split.value, 2),
                    f"scaling_efficiency[tp{n}]": round(efficiency, 3)})
    share = claim.params["efficiency_below"]
    target = Estimate(single.value * n * share, single.stderr * n * share)
    verdict = _compare(target, split)
    return Verdict(claim, verdict, f"tensor parallel {n} decodes {efficiency:.2f} of {n}x the single-GPU speed "
                                   f"(the claim: below {share}); all-reduce bus bandwidth "
                                   f"{busbw[max(busbw)]['value']:.1f} GB/s at {max(busbw)} MiB", figures)


RULES = {"moe_speed_memory": moe_speed_memory, "context_forgetting": context_forgetting,
         "token_overhead": token_overhead, "cost_per_token": cost_per_token, "gap_months": gap_months,
         "efficiency_steps": efficiency_steps, "interconnect": interconnect}


def verdicts(rows: list[dict], claims: list[Claim] | None = None) -> list[Verdict]:
    return [RULES[claim.rule](claim, rows) for claim in (claims or load_claims())]


def write_report(run_dir: Path, results: list[Verdict]) -> str:
    """claims.md and claims.csv in the run folder; returns the text printed."""
    lines = ["# Claims", ""]
    for v in results:
        lines += [f"## {v.claim.id}: {v.verdict.upper()}", "", f"> {v.claim.claim} ({v.claim.made_by})", "",
                  f"Test: {v.claim.tests}.", "", f"Why: {v.reason}", ""]
        lines += [f"- {name}: {value}" for name, value in v.figures.items()] + [""]
    text = "\n".join(lines)
    write_atomic(run_dir / "claims.md", text)
    rows = [{"claim": v.claim.id, "verdict": v.verdict, "reason": v.reason,
             "figures": "; ".join(f"{k}={val}" for k, val in v.figures.items())} for v in results]
    write_atomic(run_dir / "claims.csv", csv_text(["claim", "verdict", "reason", "figures"], rows))
    width = max(len(v.claim.id) for v in results)
    return "\n".join(f"{v.claim.id:<{width}}  {v.verdict:<13}  {v.reason}" for v in results)
