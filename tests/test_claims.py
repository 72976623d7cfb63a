"""Claim verdicts from hand-made rows: every rule reaches supported, not supported, inconclusive and skipped, and the
defects of the old rules (batching as a ladder step, quality ignored, a closed frontier that only GPT-4 could meet,
unequal generation budgets, any row as cost) now give the other answer. Also the MoE family's exact parameter
counts and a real all-reduce."""

import csv
import datetime
from pathlib import Path

import numpy as np
import pytest
from conftest import HOSTILE_MODEL

from harness import claims
from harness.claims import gap
from harness.claims.core import Claim


def timed(center: float, spread: float = 0.5, n: int = 10) -> list[float]:
    return [float(v) for v in np.linspace(center - spread, center + spread, n)]


def row(model, metric, samples, *, task="synthetic", scenario="latency", value=None, stats=None, cell_id=None,
        specs=None, **params):
    """An ok row as the runner writes it: the value is the statistic of its samples (median for timings, mean for
    per-example figures)."""
    if value is None:
        per_example = metric in ("accuracy", "exact_match", "tokens_per_answer")
        value = float(np.mean(samples) if per_example else np.median(samples)) if samples else None
    return {"status": "ok", "model": model, "metric": metric, "value": value, "task": task, "scenario": scenario,
            "params": params, "stats": stats or {}, "samples": samples, "profile": "cpu",
            "cell_id": cell_id or f"{model}|{scenario}|{task}|{params.get('engine_step')}",
            "profile_specs": specs or {"price_usd_per_hour": None, "interconnect": None},
            "fingerprint": {"gpu_count": 0}}


def hits(right: int, total: int) -> list[float]:
    return [1.0] * right + [0.0] * (total - right)


def claim(claim_id, **changes):
    found = next(c for c in claims.load_claims() if c.id == claim_id)
    return Claim(**{**found.__dict__, "params": {**found.params, **changes}})


def verdict(claim_id, rows, **changes):
    return claims.verdict(claim(claim_id, **changes), rows)


def test_every_claim_of_the_registry_has_a_rule_and_its_parameters():
    ids = [c.id for c in claims.load_claims()]
    assert ids == ["efficiency.algorithms", "moe.more_with_less", "gap.months", "reasoning.token_overhead",
                   "context.forgetting", "cost.to_zero", "interconnect.speed_limit"]


def test_a_claim_without_its_rule_parameters_is_refused_with_file_line_and_field(tmp_path):
    from harness.errors import ConfigError

    bad = tmp_path / "claims.yaml"
    bad.write_text("claims:\n  - id: x\n    claim: c\n    made_by: m\n    tests: t\n    rule: cost_per_token\n"
                   "    usd_per_mtok: 0.1\n")
    with pytest.raises(ConfigError, match=r"claims.yaml:2: claims.0: missing required field 'scenario'"):
        claims.load_claims(bad)


# efficiency.algorithms


def ladder(**speeds) -> list[dict]:
    """Decode rows at batch 1 per step (name: (center, spread)) and a perplexity row per step (name_ppl)."""
    rows = []
    for step, (center, spread, perplexity) in speeds.items():
        rows.append(row("m", "decode_tok_s", timed(center, spread), engine_step=step, batch_size=1,
                        prompt_tokens=128, output_tokens=32))
        if perplexity is not None:
            rows.append(row("m", "perplexity", [], task="perplexity", scenario="quality", value=perplexity,
                            engine_step=step, limit=20))
    return rows


NAIVE = "1 naive (fp32 eager)"


def test_efficiency_rule_reaches_every_outcome():
    base = {NAIVE: (10.0, 0.2, 60.0)}
    assert verdict("efficiency.algorithms", ladder(**base, **{"7 bf16": (25.0, 0.5, 60.5)})).verdict == "supported"
    assert verdict("efficiency.algorithms", ladder(**base, **{"7 bf16": (13.0, 0.5, 60.5)})).verdict \
        == "not supported"
    spans = verdict("efficiency.algorithms", ladder(**base, **{"7 bf16": (20.0, 3.0, 60.5)}))
    assert spans.verdict == "inconclusive"
    assert verdict("efficiency.algorithms", ladder(**{"7 bf16": (25.0, 0.5, 60.0)})).verdict == "skipped"
    only_baseline = verdict("efficiency.algorithms", ladder(**base))
    assert only_baseline.verdict == "skipped" and "no setting other than the baseline" in only_baseline.reason


def test_efficiency_counts_only_quality_preserving_settings():
    # int8 decodes 2.7x faster but perplexity goes from 60 to 252: reported, not counted.
    rows = ladder(**{NAIVE: (10.0, 0.2, 60.0), "5 sdpa + int8 weights": (27.0, 0.5, 252.0),
                     "2 sdpa attention": (11.0, 0.3, 60.0)})
    result = verdict("efficiency.algorithms", rows)
    assert result.verdict == "not supported" and result.figures["best_quality_preserving_setting"] == \
        "2 sdpa attention"
    assert "not counted" in result.figures["speedup[5 sdpa + int8 weights]"]
    assert result.figures["perplexity_ratio[5 sdpa + int8 weights]"] == 4.2
    # The same speed-up within the tolerance counts.
    kept = ladder(**{NAIVE: (10.0, 0.2, 60.0), "5 sdpa + int8 weights": (27.0, 0.5, 61.0)})
    assert verdict("efficiency.algorithms", kept).verdict == "supported"
    assert verdict("efficiency.algorithms", kept, max_perplexity_ratio=1.01).verdict == "not supported"
    # A setting without a perplexity row is not counted either.
    unknown = ladder(**{NAIVE: (10.0, 0.2, 60.0), "7 bf16": (30.0, 0.5, None)})
    assert verdict("efficiency.algorithms", unknown).verdict == "not supported"


def test_a_speculative_step_counts_only_where_its_output_equals_the_plain_greedy_output():
    lookup = "8 sdpa + prompt lookup"

    def rows(equal: bool) -> list[dict]:
        ladder_rows = ladder(**{NAIVE: (10.0, 0.2, 60.0), lookup: (25.0, 0.5, None)})  # no perplexity row
        accepted = row("m", "spec_acceptance_rate", [0.7, 0.7, 0.7], value=0.7, engine_step=lookup, batch_size=1,
                       stats={"output_equals_plain": equal})
        paired = row("m", "spec_speedup", timed(2.4, 0.1), engine_step=lookup, batch_size=1)
        return ladder_rows + [accepted, paired]

    same = verdict("efficiency.algorithms", rows(True))
    assert same.verdict == "supported" and same.figures["best_quality_preserving_setting"] == lookup
    assert same.figures[f"spec_acceptance_rate[{lookup}]"] == 0.7 and f"perplexity_ratio[{lookup}]" not in same.figures
    assert same.figures[f"spec_speedup[{lookup}]"].startswith("2.40 [")
    differs = verdict("efficiency.algorithms", rows(False))
    assert differs.verdict == "not supported" and "not counted" in differs.figures[f"speedup[{lookup}]"]
    assert differs.figures[f"output_equals_plain[{lookup}]"] is False


def test_engines_are_their_own_axis_with_speed_weights_and_the_same_tasks_score():
    rows = ladder(**{NAIVE: (10.0, 0.2, 60.0), "2 sdpa attention": (11.0, 0.3, 60.0)})
    in_process = {**row("m", "decode_tok_s", timed(20.0, 1.0), batch_size=1, prompt_tokens=128, output_tokens=32),
                  "backend": "transformers", "dtype": "bf16"}
    served = {**row("m", "tpot_ms", timed(10.0, 0.5), scenario="served", concurrency=1, prompt_tokens=128,
                    load="concurrency=1"), "backend": "llamacpp", "dtype": "q4_1"}
    weights = [{**row("m", "weights_mib", [mib], cell_id=source["cell_id"]), "backend": source["backend"]}
               for mib, source in ((256.0, in_process), (92.1, served))]
    scores = [{**row("m", "exact_match", hits(right, 30), task="passkey_128", scenario="quality"), "backend": backend}
              for right, backend in ((6, "transformers"), (5, "llamacpp"))]
    result = verdict("efficiency.algorithms", rows + [in_process, served, *weights, *scores])
    figures = result.figures
    assert figures["engine[transformers bf16] decode_tok_s"].startswith("20.0 [")
    # 1000 / tpot: the interval's bounds swap sides (the slowest token time gives the lowest speed).
    low, high = (float(x) for x in figures["engine[llamacpp q4_1] decode_tok_s"].split("[")[1].rstrip("]").split(","))
    assert figures["engine[llamacpp q4_1] decode_tok_s"].startswith("100.0 [") and low < 100.0 < high <= 1000 / 9.5
    assert figures["engine[transformers bf16] weights_mib"] == 256.0 and figures["engine[llamacpp q4_1] weights_mib"] \
        == 92.1
    assert figures["engine[llamacpp q4_1] exact_match[passkey_128]"].startswith("0.167 [")
    assert result.verdict == "not supported"  # the engines never count as a step of the ladder
    without = verdict("efficiency.algorithms", rows + [in_process])
    assert without.figures["engine[llamacpp]"] == "not in this run"
    assert without.figures["engine[transformers bf16] exact_match[passkey_128]"] == "no row"


def test_batching_is_its_own_axis_never_a_step():
    rows = ladder(**{NAIVE: (10.0, 0.2, 60.0), "2 sdpa attention": (11.0, 0.3, 60.0)})
    batched = row("m", "decode_tok_s", timed(160.0, 2.0), scenario="throughput", engine_step="9 batch 16",
                  batch_size=16, prompt_tokens=64, output_tokens=16)
    tpot = {**row("m", "tpot_ms", timed(100.0), scenario="throughput", engine_step="9 batch 16", batch_size=16),
            "cell_id": batched["cell_id"]}
    tensor_parallel = row("m", "decode_tok_s", timed(40.0), engine_step="tp2", batch_size=1)
    result = verdict("efficiency.algorithms", rows + [batched, tpot, tensor_parallel])
    assert result.verdict == "not supported"  # 16 summed sequences no longer count as a 16x speed-up
    assert result.figures["batching[b16] aggregate decode_tok_s"].startswith("160.0 (16.00x one stream's")
    assert result.figures["batching[b16] tpot_ms per sequence"] == 100.0
    assert not any("tp2" in name for name in result.figures)


# moe.more_with_less


def family(moe_speed, moe_spread=0.5, moe_weights=200.0, names=("family-moe", "family-dense-total",
                                                                 "family-dense-active")):
    out = []
    for model, speed, spread, weights in ((names[0], moe_speed, moe_spread, moe_weights),
                                          (names[1], 20.0, 0.5, 205.0), (names[2], 80.0, 0.5, 61.0)):
        out += [row(model, "decode_tok_s", timed(speed, spread), batch_size=1, prompt_tokens=128),
                row(model, "weights_mib", [weights])]
    return out


@pytest.mark.parametrize("moe_speed, moe_spread, moe_weights, expected", [
    (70.0, 0.5, 200.0, "supported"),       # near dense-active's speed, holding dense-total's weights
    (22.0, 0.5, 200.0, "not supported"),   # as slow as dense-total
    (40.0, 30.0, 200.0, "inconclusive"),   # its interval reaches the midpoint, 40 tok/s
    (70.0, 0.5, 60.0, "skipped"),          # fast, but not holding the total parameters: not a matched family
])
def test_moe_rule(moe_speed, moe_spread, moe_weights, expected):
    assert verdict("moe.more_with_less", family(moe_speed, moe_spread, moe_weights)).verdict == expected


def test_moe_thresholds_come_from_the_claims_file():
    # 45 tok/s is above the geometric midpoint (40) but below the point 0.75 of the way (56.6).
    assert verdict("moe.more_with_less", family(45.0)).verdict == "supported"
    assert verdict("moe.more_with_less", family(45.0), min_position=0.75).verdict == "not supported"
    assert verdict("moe.more_with_less", family(70.0, moe_weights=170.0)).verdict == "skipped"
    assert verdict("moe.more_with_less", family(70.0, moe_weights=170.0), weights_tolerance=0.2).verdict \
        == "supported"


def test_moe_rule_prefers_a_real_family_and_skips_without_one():
    real = family(30.0, names=("allenai/OLMoE-1B-7B-0924", "allenai/OLMo-7B-0724-hf", "allenai/OLMo-1B-0724-hf"))
    result = verdict("moe.more_with_less", real + family(70.0))  # the built family alone: supported
    assert result.verdict == "not supported" and "OLMoE" in result.reason  # the real family decides
    assert verdict("moe.more_with_less", family(70.0)[:4]).verdict == "skipped"


# gap.months

REFERENCE_HEADER = ["model", "developer", "release_date", "open_weights", "total_params_B", "active_params_B",
                    "variant", "benchmark", "score", "setting_as_reported", "source", "notes"]


def reference(tmp_path: Path, entries: list[tuple]) -> Path:
    """A reference table of (model, release date, open?, benchmark, score, setting) rows."""
    path = tmp_path / "reference.csv"
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, REFERENCE_HEADER)
        writer.writeheader()
        for model, released, is_open, benchmark, score, setting in entries:
            writer.writerow({"model": model, "release_date": released, "open_weights": "yes" if is_open else "no",
                             "benchmark": benchmark, "score": score, "setting_as_reported": setting})
    return path


GROUP = [{"name": "B 5-shot", "benchmark": "B", "settings": ["5-shot", "5-shot (vendor)"]}]


def gap_verdict(tmp_path, entries, rows=(), **changes):
    return verdict("gap.months", list(rows), reference=str(reference(tmp_path, entries)), groups=GROUP, **changes)


def test_gap_rule_reaches_every_outcome_from_published_lags(tmp_path):
    closed = [("Closed-1", "2023-01-01", False, "B", 70.0, "5-shot"),
              ("Closed-2", "2024-01-01", False, "B", 80.0, "5-shot (vendor)")]
    soon = [("Open-1", "2023-03-02", True, "B", 71.0, "5-shot"), ("Open-2", "2024-04-01", True, "B", 82.0, "5-shot")]
    late = [("Open-1", "2024-01-01", True, "B", 71.0, "5-shot"), ("Open-2", "2025-06-01", True, "B", 82.0, "5-shot")]
    assert gap_verdict(tmp_path, closed + soon).verdict == "supported"   # 2 and 3 months
    assert gap_verdict(tmp_path, closed + late).verdict == "not supported"  # 12 and 17 months
    # Released "2024-01" (any day of January) and the open model on 2024-07-10: 5.3 to 6.3 months, across 6.
    month_only = [("Closed-1", "2024-01", False, "B", 70.0, "5-shot"), ("Open-1", "2024-07-10", True, "B", 75.0,
                                                                       "5-shot")]
    result = gap_verdict(tmp_path, month_only)
    assert result.verdict == "inconclusive" and result.figures["median_lag_months"] == "5.3 to 6.3"
    # Other settings never line up: a 0-shot closed score is not in the group.
    other = [("Closed-1", "2023-01-01", False, "B", 70.0, "0-shot"), ("Open-1", "2023-02-01", True, "B", 71.0,
                                                                      "5-shot")]
    assert gap_verdict(tmp_path, other).verdict == "skipped"


def test_gap_milestones_no_open_model_reached_are_lower_bounds(tmp_path):
    entries = [("Closed-1", "2023-01-01", False, "B", 90.0, "5-shot"), ("Open-1", "2023-02-01", True, "B", 60.0,
                                                                        "5-shot")]
    result = gap_verdict(tmp_path, entries)
    assert result.verdict == "inconclusive"  # at least one month so far: it may yet be reached within six
    assert result.figures["lag[B 5-shot: Closed-1 90.0]"].startswith("at least 1.0 months")
    entries[1] = ("Open-1", "2024-02-01", True, "B", 60.0, "5-shot")
    assert gap_verdict(tmp_path, entries).verdict == "not supported"  # at least 13 months


def test_gap_rule_on_the_shipped_reference():
    result = verdict("gap.months", [])
    # GPT-3.5 (2022-11-30, 70.0 MMLU 5-shot) was first matched by Mixtral 8x7B (2023-12-11, 70.6): 376 days.
    assert result.figures["lag[MMLU 5-shot: GPT-3.5 70.0]"] == f"{376 / (365.25 / 12):.1f} months (Mixtral 8x7B, 70.6)"
    # o1-mini (2024-09-12) on AIME 2024 in DeepSeek-R1's table, first matched by DeepSeek-R1 (2025-01-20): 130 days.
    assert result.figures["lag[AIME 2024 (R1 table): o1-mini 63.6]"].startswith(f"{130 / (365.25 / 12):.1f} months")
    assert result.verdict in ("supported", "not supported", "inconclusive")
    assert "published figures" in result.reason


def test_the_shipped_groups_name_settings_the_table_has():
    table = gap.reference_scores(gap.TASKS_DIR / "gap" / "reference_scores.csv")
    present = {(r["benchmark"], r["setting_as_reported"]) for r in table}
    for group in claim("gap.months").params["groups"]:
        assert {(group["benchmark"], s) for s in group["settings"]} <= present, group["name"]


def cloze(right: int, total: int = 400, degenerate: bool = False) -> dict:
    return row("smollm2-135m", "accuracy", hits(right, total), task="mmlu_cloze", scenario="quality",
               stats={"degenerate": degenerate}, limit=total)


def test_gap_reproduction_of_a_listed_model_beside_the_verdict():
    name = "reproduction[SmolLM2-135M MMLU (cloze) 0-shot (lighteval)]"
    assert verdict("gap.months", [cloze(126)]).figures[name].startswith("reproduces: published 31.5 within bench "
                                                                        "31.5")
    assert verdict("gap.months", [cloze(88)]).figures[name].startswith("differs by -9.5 points")
    assert verdict("gap.months", [cloze(3, total=10)]).figures[name].startswith("too few questions")
    assert verdict("gap.months", [cloze(88, degenerate=True)]).figures[name].startswith("degenerate run")
    assert verdict("gap.months", []).figures[name].startswith("not measured in this run")
    # The local model never decides: the verdict is the same with or without it.
    assert verdict("gap.months", [cloze(126)]).verdict == verdict("gap.months", [cloze(20)]).verdict


def test_release_dates_given_to_the_month_span_the_month():
    assert gap.release_range("2024-02 (announced)") == (datetime.date(2024, 2, 1), datetime.date(2024, 2, 29))
    assert gap.release_range("2024-05-13 (snapshot)") == (datetime.date(2024, 5, 13),) * 2
    assert gap.release_range("unknown") is None


# reasoning.token_overhead


def answers(direct, reasoning, direct_budget=64, spread=1.0):
    budget = {"max_new_tokens": direct_budget, "stop": ["\n"]}
    return [row("m", "tokens_per_answer", timed(direct, spread, 30), task="arithmetic", scenario="quality",
                stats=budget),
            row("m", "tokens_per_answer", timed(reasoning, spread * 5, 30), task="arithmetic_cot",
                scenario="quality", stats={**budget, "max_new_tokens": 64})]


def test_reasoning_rule_reaches_every_outcome():
    assert verdict("reasoning.token_overhead", answers(4.0, 40.0)).verdict == "supported"
    assert verdict("reasoning.token_overhead", answers(10.0, 15.0)).verdict == "not supported"  # 1.5x
    assert verdict("reasoning.token_overhead", answers(10.0, 30.0, spread=3.0)).verdict == "inconclusive"
    assert verdict("reasoning.token_overhead", answers(4.0, 40.0)[:1]).verdict == "skipped"


def test_reasoning_needs_one_budget_for_both_tasks():
    # The old tasks capped direct answers at 12 tokens and step-by-step ones at 64: not like for like.
    unequal = verdict("reasoning.token_overhead", answers(4.0, 40.0, direct_budget=12))
    assert unequal.verdict == "skipped" and "budgets differ" in unequal.reason
    unknown = [{**r, "stats": {}} for r in answers(4.0, 40.0)]  # rows of a bench that did not record it
    assert verdict("reasoning.token_overhead", unknown).verdict == "skipped"


def thinking_window(reasoning_tokens: list[float], answer_tokens: list[float]) -> list[dict]:
    """A served window of a model that reasons by itself: per-request reasoning and answer tokens (means)."""
    load = {"scenario": "served", "cell_id": "m|served", "load": "concurrency=1"}
    return [row("m", "reasoning_tokens", reasoning_tokens, value=float(np.mean(reasoning_tokens)), **load),
            row("m", "answer_tokens", answer_tokens, value=float(np.mean(answer_tokens)), **load),
            row("m", "ttfa_ms", timed(900.0, 50.0), **load), row("m", "ttft_ms", timed(40.0, 5.0), **load)]


def test_a_model_that_reasons_by_itself_is_judged_on_its_own_thinking_first():
    answer = timed(20.0, 2.0, 30)
    many = verdict("reasoning.token_overhead", thinking_window(timed(200.0, 20.0, 30), answer) + answers(10.0, 15.0))
    # 1 + 200/20 = 11x, although the prompted tasks of the same run say 1.5x: the model's own thinking decides.
    assert many.verdict == "supported" and many.figures["ratio"].startswith("11.00 [")
    assert many.figures["ttfa_ms"] == 900.0 and many.figures["ttft_ms"] == 40.0
    few = verdict("reasoning.token_overhead", thinking_window(timed(20.0, 2.0, 30), answer))
    assert few.verdict == "not supported" and few.figures["ratio"].startswith("2.00 [")  # 1 + 20/20
    spread = verdict("reasoning.token_overhead", thinking_window(timed(40.0, 35.0, 6), timed(20.0, 15.0, 6)))
    assert spread.verdict == "inconclusive"  # 3x, with an interval on both sides of 3
    # Without a thinking window, the prompted tasks as before.
    assert verdict("reasoning.token_overhead", answers(10.0, 15.0)).verdict == "not supported"


def test_reasoning_figures_per_answer_with_the_price_the_rows_carry():
    rows = answers(4.0, 40.0) + [row("m", "exact_match", hits(3, 30), task="arithmetic", scenario="quality"),
                                 row("m", "exact_match", hits(9, 30), task="arithmetic_cot", scenario="quality"),
                                 row("m", "eval_s", [10.0], task="arithmetic", scenario="quality", limit=20),
                                 row("m", "eval_s", [60.0], task="arithmetic_cot", scenario="quality", limit=20)]
    figures = verdict("reasoning.token_overhead", rows).figures
    assert figures["seconds_per_answer[direct]"] == 0.5 and figures["seconds_per_answer[reasoning]"] == 3.0
    assert figures["exact_match_per_extra_token"] == pytest.approx(round(0.2 / 36.0, 5))
    assert "usd_per_answer[direct]" not in figures  # no price in the rows
    priced = [{**r, "profile_specs": {"price_usd_per_hour": 0.8, "interconnect": None}} for r in rows]
    figures = verdict("reasoning.token_overhead", priced).figures
    assert figures["usd_per_answer[reasoning]"] == pytest.approx(3.0 * 0.8 / 3600, abs=1e-8)


# context.forgetting


def passkey(short, long, total=30):
    return [row("m", "exact_match", hits(short, total), task="passkey_128", scenario="quality"),
            row("m", "exact_match", hits((short + long) // 2, total), task="passkey_512", scenario="quality"),
            row("m", "exact_match", hits(long, total), task="passkey_2k", scenario="quality")]


def test_context_rule_reaches_every_outcome():
    assert verdict("context.forgetting", passkey(28, 2)).verdict == "supported"
    assert verdict("context.forgetting", passkey(196, 196, total=200)).verdict == "not supported"
    assert verdict("context.forgetting", passkey(25, 18)).verdict == "inconclusive"  # a drop of 0.23 +- 0.3
    cannot = verdict("context.forgetting", passkey(0, 0))
    assert cannot.verdict == "inconclusive" and "does not retrieve" in cannot.reason
    assert verdict("context.forgetting", passkey(28, 2)[:2]).verdict == "skipped"
    costs = [row("m", "kv_cache_mib", [6.0], prompt_tokens=128), row("m", "kv_cache_mib", [90.0], prompt_tokens=2048)]
    figures = verdict("context.forgetting", passkey(28, 2) + costs).figures
    assert figures["kv_cache_mib[128 tokens]"] == 6.0 and figures["kv_cache_mib[2048 tokens]"] == 90.0


# cost.to_zero

PRICED = {"price_usd_per_hour": 0.8, "interconnect": None}


def cost(model, center, spread=0.001, scenario="latency", batch_size=1, prompt_tokens=128):
    return row(model, "usd_per_mtok", timed(center, spread), scenario=scenario, specs=PRICED, batch_size=batch_size,
               prompt_tokens=prompt_tokens, output_tokens=32, price_usd_per_hour=0.8)


def test_cost_rule_reaches_every_outcome():
    assert verdict("cost.to_zero", [cost("a", 0.02), cost("b", 0.05)]).verdict == "supported"
    assert verdict("cost.to_zero", [cost("a", 0.02), cost("b", 0.5)]).verdict == "not supported"
    assert verdict("cost.to_zero", [cost("a", 0.1, spread=0.02)]).verdict == "inconclusive"
    skipped = verdict("cost.to_zero", [row("m", "decode_tok_s", timed(10.0))])
    assert skipped.verdict == "skipped" and "no price per hour" in skipped.reason


def test_cost_takes_batch_one_decode_and_shows_batched_cost_apart():
    # A dear batch-1 row and a cheap batch-16 one: batch 1 decides; the batch-16 figure is its own line.
    rows = [cost("m", 0.5), cost("m", 0.03, scenario="throughput", batch_size=16, prompt_tokens=64),
            cost("m", 0.01, prompt_tokens=2048)]  # another prompt length is not the claim's row either
    result = verdict("cost.to_zero", rows)
    assert result.verdict == "not supported"
    assert result.figures["best_batched_usd_per_mtok[m]"] == "0.0300 (batch 16)"
    served = row("m", "output_tok_s", [200.0], scenario="served", specs=PRICED, load="concurrency=8")
    figures = verdict("cost.to_zero", [cost("m", 0.5), served]).figures
    assert figures["best_batched_usd_per_mtok[m]"] == f"{0.8 / 3600 / 200.0 * 1e6:.4f} (served concurrency=8)"


# interconnect.speed_limit


def tp_rows(single: float, split: float, size: int = 2, spread: float = 0.5) -> list[dict]:
    specs = {"price_usd_per_hour": None, "interconnect": "NVLink 400 GB/s (H800)"}
    busbw = [row("m", "allreduce_busbw_gbps", [value], specs=specs, size_mib=mib, world_size=size)
             for mib, value in ((1, 40.0), (256, 180.0))]
    decode = [{**row("m", "decode_tok_s", timed(value, spread), specs=specs, engine_step=f"tp{tp}", batch_size=1),
               "backend_info": {"tensor_parallel_size": tp}} for tp, value in ((1, single), (size, split))]
    return busbw + decode


def test_interconnect_rule_reaches_every_outcome():
    limited = verdict("interconnect.speed_limit", tp_rows(100.0, 120.0))  # 0.60 of 2x: the GPUs wait
    assert limited.verdict == "supported" and limited.figures["scaling_efficiency[tp2]"].startswith("0.600")
    assert limited.figures["allreduce_busbw_gbps[256 MiB]"] == 180.0
    assert limited.figures["datasheet_interconnect"] == "NVLink 400 GB/s (H800)"  # from the rows, not a file
    assert verdict("interconnect.speed_limit", tp_rows(100.0, 190.0)).verdict == "not supported"  # 0.95
    assert verdict("interconnect.speed_limit", tp_rows(100.0, 160.0, spread=20.0)).verdict == "inconclusive"
    only_busbw = verdict("interconnect.speed_limit", tp_rows(100.0, 120.0)[:2])
    assert only_busbw.verdict == "skipped" and "interconnect` suite" in only_busbw.reason
    assert verdict("interconnect.speed_limit", [cost("m", 0.02)]).verdict == "skipped"


# the report


def test_model_names_are_text_in_claims_md_and_claims_csv(tmp_path):
    dollar = "$\\alpha$ model"
    rows = [{**r, "model": HOSTILE_MODEL} for r in answers(4.0, 40.0)]
    results = [verdict("reasoning.token_overhead", rows), verdict("cost.to_zero", [cost(dollar, 0.02)])]
    claims.write_report(tmp_path, results)
    md = (tmp_path / "claims.md").read_text()
    assert HOSTILE_MODEL not in md and "<img" not in md and dollar not in md
    assert "\\=1+1&lt;img src\\=x onerror\\=&quot;document.title\\=&#x27;pwned&#x27;&quot;&gt;" in md
    assert "\\$\\\\alpha\\$ model" in md
    with (tmp_path / "claims.csv").open(newline="") as handle:
        lines = {line["claim"]: line for line in csv.DictReader(handle)}
    assert lines["reasoning.token_overhead"]["reason"] == f"'{HOSTILE_MODEL}: " + results[0].reason.split(": ", 1)[1]
    assert f"usd_per_mtok[{dollar}, batch 1]" in lines["cost.to_zero"]["figures"]


# A cut-down claims suite: the random-weight models, every claim's rows, 7 timed runs (the fewest whose median has
# an interval at the 97.5% each of two compared figures takes).
TINY_CLAIMS_SUITE = """
name: claims-tiny
description: every claim's rows on the tiny models, briefly
models: [tiny-dense, family-moe, family-dense-total, family-dense-active]
backends: [transformers]
device: cpu
dtype: fp32
measure: {warmup: 1, repetitions: 7}
cell_timeout_s: 600
report_claims: true
scenarios:
  - {name: latency, prompt_tokens: 128, output_tokens: 8, models: [family-moe, family-dense-total, family-dense-active]}
  - {name: latency, prompt_tokens: 128, output_tokens: 8, models: [tiny-dense],
     engine: {step: 1 naive (fp32 eager), dtype: fp32, attn_implementation: eager}}
  - {name: latency, prompt_tokens: 128, output_tokens: 8, models: [tiny-dense],
     engine: {step: 2 sdpa attention, dtype: fp32, attn_implementation: sdpa}}
  - {name: quality, task: perplexity, limit: 4, models: [tiny-dense],
     engine: {step: 1 naive (fp32 eager), dtype: fp32, attn_implementation: eager}}
  - {name: quality, task: perplexity, limit: 4, models: [tiny-dense],
     engine: {step: 2 sdpa attention, dtype: fp32, attn_implementation: sdpa}}
  - {name: quality, task: arithmetic, limit: 4, models: [tiny-dense]}
  - {name: quality, task: arithmetic_cot, limit: 4, models: [tiny-dense]}
  - {name: quality, task: passkey_128, limit: 10, models: [tiny-dense]}
  - {name: quality, task: passkey_512, limit: 10, models: [tiny-dense]}
  - {name: quality, task: passkey_2k, limit: 10, models: [tiny-dense]}
"""


@pytest.mark.slow
@pytest.mark.timeout(900)  # 279 s on a 2-core CPU (busy with other work)
def test_a_cut_down_claims_suite_on_the_tiny_models_gives_every_verdict_from_its_rows(tmp_path):
    import subprocess
    import sys

    from harness.results.store import read_rows

    suite, out = tmp_path / "claims_tiny.yaml", tmp_path / "run"
    suite.write_text(TINY_CLAIMS_SUITE)
    done = subprocess.run([sys.executable, "-m", "harness", "run", "--suite", str(suite), "--no-progress", "--out",
                           str(out)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=1200)
    assert done.returncode == 0, done.stdout
    with (out / "claims.csv").open(newline="") as handle:
        lines = {line["claim"]: line for line in csv.DictReader(handle)}
    md = (out / "claims.md").read_text()
    rows = read_rows(out / "rows.jsonl")
    for result in claims.verdicts(rows):  # the report says what the rules say of its own rows
        assert lines[result.claim.id]["verdict"] == result.verdict
        assert f"## {result.claim.id}: {result.verdict.upper()}" in md
    decided = ("supported", "not supported", "inconclusive")
    assert lines["efficiency.algorithms"]["verdict"] in decided
    assert "speedup[2 sdpa attention]=" in lines["efficiency.algorithms"]["figures"]
    assert "perplexity_ratio[2 sdpa attention]=1.0;" in lines["efficiency.algorithms"]["figures"]  # same weights
    assert lines["moe.more_with_less"]["verdict"] in decided  # the built family is matched
    assert "decode_tok_s[moe]=" in lines["moe.more_with_less"]["figures"]
    assert lines["reasoning.token_overhead"]["verdict"] in decided  # one budget, recorded in the rows
    # Random weights retrieve no pass key, so they cannot show forgetting; the cpu profile has no price; one device.
    assert lines["context.forgetting"]["verdict"] == "inconclusive"
    assert "does not retrieve" in lines["context.forgetting"]["reason"]
    assert lines["cost.to_zero"]["verdict"] == "skipped" and "no price per hour" in lines["cost.to_zero"]["reason"]
    assert lines["interconnect.speed_limit"]["verdict"] == "skipped"
    assert lines["gap.months"]["verdict"] == verdict("gap.months", []).verdict  # published lags decide
    assert "not measured in this run (smollm2-135m, mmlu_cloze)" in lines["gap.months"]["figures"]
    # The same verdicts from the run folder alone, later: nothing but its rows and the shipped table is read.
    before = (out / "claims.csv").read_text()
    (out / "claims.csv").unlink()
    again = subprocess.run([sys.executable, "-m", "harness", "claims", str(out)], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, timeout=300)
    assert again.returncode == 0, again.stdout
    assert (out / "claims.csv").read_text() == before


@pytest.mark.slow
def test_the_moe_family_parameter_counts_are_exact(make_backend):
    from harness import zoo

    shapes = {name: make_backend(zoo.resolve(name, progress=False)).model_shape()
              for name in ("family-moe", "family-dense-total", "family-dense-active")}
    attention = 4 * (512 * 512 * 2 + 512 * 256 * 2 + 64 * 2 + 512 * 2)  # q, o; k, v; q/k norms; layer norms
    shared = attention + 512 * 512 + 512  # tied embedding, final norm
    experts = 4 * 8 * 3 * 512 * 1024
    assert shapes["family-moe"].total_params == shared + experts + 4 * 8 * 512  # plus the routers
    assert shapes["family-moe"].active_params == shared + experts // 4 + 4 * 8 * 512
    assert shapes["family-dense-total"].total_params == shared + 4 * 3 * 512 * 8192 == shared + experts
    assert shapes["family-dense-active"].total_params == shared + 4 * 3 * 512 * 2048 == shared + experts // 4


def test_all_reduce_between_two_real_processes_is_timed_and_its_bus_bandwidth_follows_nccl_tests():
    from harness.measure.interconnect import bus_bandwidth_gbps, measure_allreduce

    assert bus_bandwidth_gbps(10**9, 1.0, 2) == 1.0 and bus_bandwidth_gbps(10**9, 1.0, 8) == 1.75
    seconds = measure_allreduce(2, "gloo", sizes_mib=(1, 8), warmup=1, repetitions=3)  # two CPU ranks
    assert set(seconds) == {1, 8} and all(len(s) == 3 and min(s) > 0 for s in seconds.values())
    # Eight times the bytes takes longer than one: the ranks really exchanged the data.
    assert sorted(seconds[8])[1] > sorted(seconds[1])[1]


def test_a_failing_rank_is_one_line():
    from harness.measure.interconnect import measure_allreduce

    with pytest.raises(RuntimeError, match=r"all-reduce rank 0 of 2 \(nosuch\) failed: "):
        measure_allreduce(2, "nosuch", sizes_mib=(1,), timeout_s=60)


def test_rows_of_schema_version_1_are_still_valid_input():
    from harness.results.merge import load

    rows, _ = load([str(Path(__file__).parent / "fixtures" / "rows_v1.jsonl")])
    assert rows and all(row["profile_specs"] == {"price_usd_per_hour": None, "interconnect": None} for row in rows)
    results = {v.claim.id: v for v in claims.verdicts(rows)}
    assert results["cost.to_zero"].verdict == "skipped" and "no price per hour" in results["cost.to_zero"].reason
    assert results["efficiency.algorithms"].verdict == "skipped"


def test_the_leaderboard_gap_column_uses_the_claims_group():
    from harness.results import frame
    from harness.results.leaderboard import entries

    quality = row("smollm2-135m", "accuracy", hits(25, 100), task="mmlu_5shot", scenario="quality", limit=100)
    quality.update(run_id="r", time="2026-12-01T00:00:00+00:00", backend="transformers", dtype="bf16",
                   device="cpu", device_name="cpu", key_id="k", model_revision="x", energy_source="none")
    line = entries(frame.from_rows([quality]))[0]
    # The best closed MMLU 5-shot score of the group: Claude 3 Opus, 86.8 (vendor-reported 5-shot).
    assert line["best_closed_model"] == "Claude 3 Opus (86.8)" and line["gap_to_best_closed_points"] == 61.8
    assert line["gap_task"] == "mmlu_5shot (MMLU 5-shot)"
