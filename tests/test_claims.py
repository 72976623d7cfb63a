"""Claim verdicts from hand-made rows, the months-behind arithmetic, and the MoE family's exact parameter counts."""

import datetime

import pytest

from harness import claims


def row(model, metric, value, *, task="synthetic", scenario="latency", stderr=None, stdev=0.0, n=5, **params):
    stats = {"n": n, "stdev": stdev} if stderr is None else {"stderr": stderr}
    return {"status": "ok", "model": model, "metric": metric, "value": value, "task": task, "scenario": scenario,
            "params": params, "stats": stats, "profile": "cpu", "fingerprint": {"gpu_count": 0}}


def claim(claim_id):
    return next(c for c in claims.load_claims() if c.id == claim_id)


def verdict(claim_id, rows):
    c = claim(claim_id)
    return claims.RULES[c.rule](c, rows)


def family(moe_speed, moe_stdev=0.5, moe_weights=200.0):
    out = []
    for model, speed, stdev, weights in (("family-moe", moe_speed, moe_stdev, moe_weights),
                                         ("family-dense-total", 20.0, 0.5, 205.0),
                                         ("family-dense-active", 80.0, 0.5, 61.0)):
        out += [row(model, "decode_tok_s", speed, stdev=stdev), row(model, "weights_mib", weights)]
    return out


def test_every_claim_of_the_registry_has_a_rule():
    ids = [c.id for c in claims.load_claims()]
    assert ids == ["efficiency.algorithms", "moe.more_with_less", "gap.months", "reasoning.token_overhead",
                   "context.forgetting", "cost.to_zero", "interconnect.speed_limit"]


@pytest.mark.parametrize("moe_speed, moe_stdev, moe_weights, expected", [
    (70.0, 0.5, 200.0, "supported"),        # near dense-active's speed, dense-total's memory
    (22.0, 0.5, 200.0, "not supported"),    # as slow as dense-total
    (70.0, 0.5, 60.0, "not supported"),     # fast, but it is not holding the total parameters
    (40.0, 30.0, 200.0, "inconclusive"),    # its interval reaches the midpoint (40 tok/s)
])
def test_moe_rule(moe_speed, moe_stdev, moe_weights, expected):
    assert verdict("moe.more_with_less", family(moe_speed, moe_stdev, moe_weights)).verdict == expected


def test_moe_rule_prefers_a_real_family_and_skips_without_one():
    real = [row(model, metric, value, stdev=0.1) for model, speed, weights in (
        ("allenai/OLMoE-1B-7B-0924", 30.0, 13000.0), ("allenai/OLMo-7B-0724-hf", 10.0, 13500.0),
        ("allenai/OLMo-1B-0724-hf", 35.0, 2300.0)) for metric, value in (("decode_tok_s", speed),
                                                                          ("weights_mib", weights))]
    result = verdict("moe.more_with_less", real + family(22.0))
    assert result.verdict == "supported" and "OLMoE" in result.reason  # the real family decides, not the built one
    assert verdict("moe.more_with_less", family(70.0)[:4]).verdict == "skipped"


def test_context_rule():
    def passkey(short, long, stderr):
        return [row("m", "exact_match", short, task="passkey_128", stderr=stderr),
                row("m", "exact_match", 0.5, task="passkey_512", stderr=stderr),
                row("m", "exact_match", long, task="passkey_2k", stderr=stderr)]

    assert verdict("context.forgetting", passkey(0.9, 0.2, 0.05)).verdict == "supported"
    assert verdict("context.forgetting", passkey(0.2, 0.9, 0.05)).verdict == "not supported"
    assert verdict("context.forgetting", passkey(0.6, 0.5, 0.1)).verdict == "inconclusive"
    assert verdict("context.forgetting", passkey(0.6, 0.5, 0.1)[:2]).verdict == "skipped"
    costs = [row("m", "kv_cache_mib", 6.0, prompt_tokens=128), row("m", "kv_cache_mib", 90.0, prompt_tokens=2048)]
    figures = verdict("context.forgetting", passkey(0.9, 0.2, 0.05) + costs).figures
    assert figures["kv_cache_mib[128 tokens]"] == 6.0 and figures["kv_cache_mib[2048 tokens]"] == 90.0


def test_reasoning_rule():
    def answers(direct, cot, stderr):
        return [row("m", "tokens_per_answer", direct, task="arithmetic", stderr=stderr),
                row("m", "tokens_per_answer", cot, task="arithmetic_cot", stderr=stderr)]

    assert verdict("reasoning.token_overhead", answers(3.0, 40.0, 1.0)).verdict == "supported"
    assert verdict("reasoning.token_overhead", answers(40.0, 3.0, 1.0)).verdict == "not supported"
    assert verdict("reasoning.token_overhead", answers(10.0, 11.0, 2.0)).verdict == "inconclusive"
    # Seconds per answer from the tasks' scoring time; dollars per answer at the profile's price, where it has one.
    timed = answers(3.0, 40.0, 1.0) + [row("m", "eval_s", 10.0, task="arithmetic", limit=20),
                                       row("m", "eval_s", 60.0, task="arithmetic_cot", limit=20)]
    figures = verdict("reasoning.token_overhead", timed).figures
    assert figures["seconds_per_answer[direct]"] == 0.5 and figures["seconds_per_answer[reasoning]"] == 3.0
    assert "usd_per_answer[direct]" not in figures  # the cpu profile has no price
    priced = [{**r, "profile": "l4"} for r in timed]
    figures = verdict("reasoning.token_overhead", priced).figures
    from harness.profiles import get_profile

    price = get_profile("l4").price_usd_per_hour
    assert figures["usd_per_answer[reasoning]"] == pytest.approx(3.0 * price / 3600, abs=1e-8)


def test_cost_rule_and_skips():
    cheap = [row("m", "usd_per_mtok", 0.02, stdev=0.001, batch_size=1)]
    dear = [row("m", "usd_per_mtok", 0.5, stdev=0.001, batch_size=1)]
    assert verdict("cost.to_zero", cheap).verdict == "supported"
    assert verdict("cost.to_zero", dear).verdict == "not supported"
    skipped = verdict("cost.to_zero", [row("m", "decode_tok_s", 10.0)])
    assert skipped.verdict == "skipped" and "no price" in skipped.reason
    assert verdict("interconnect.speed_limit", cheap).verdict == "skipped"


def test_months_behind_arithmetic():
    closed = [{"model": "A", "score": 60.0, "released": datetime.date(2022, 1, 1)},
              {"model": "B", "score": 80.0, "released": datetime.date(2023, 1, 1)},
              {"model": "C", "score": 90.0, "released": datetime.date(2024, 1, 1)}]
    months, first, lower_bound = claims.months_behind(85.0, datetime.date(2024, 7, 1), closed)
    assert first["model"] == "C" and months == pytest.approx(6.0, abs=0.1) and not lower_bound
    months, first, lower_bound = claims.months_behind(70.0, datetime.date(2024, 1, 1), closed)
    assert first["model"] == "B" and months == pytest.approx(12.0, abs=0.1) and not lower_bound
    months, first, lower_bound = claims.months_behind(50.0, datetime.date(2023, 1, 1), closed)
    assert first["model"] == "A" and lower_bound  # the table's earliest model already scored higher
    with pytest.raises(ValueError):
        claims.months_behind(95.0, datetime.date(2024, 1, 1), closed)


def test_gap_rule_on_the_shipped_reference():
    # SmolLM2-135M (released 2024-11-01) at 25% MMLU 5-shot: GPT-3.5 (2022-11-30) scored more, and it is the
    # reference's earliest closed MMLU 5-shot entry, so the model is at least 23 months behind.
    result = verdict("gap.months", [row("smollm2-135m", "accuracy", 0.25, task="mmlu_5shot", scenario="quality",
                                        stderr=0.04)])
    assert result.verdict == "not supported"
    assert result.figures["months_behind"] == pytest.approx(702 / (365.25 / 12), abs=0.05)  # 702 days
    assert "at least" in result.reason and result.figures["best_closed"].startswith("GPT-4")


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


def test_efficiency_rule():
    def ladder(tuned, stdev):
        rows = [row("m", "decode_tok_s", 10.0, stdev=0.5, engine_step="1 naive"),
                row("m", "decode_tok_s", tuned, stdev=stdev, engine_step="2 tuned")]
        for r, cell in zip(rows, ("a", "b"), strict=True):
            r["cell_id"] = cell
        return rows

    assert verdict("efficiency.algorithms", ladder(35.0, 0.5)).verdict == "supported"
    assert verdict("efficiency.algorithms", ladder(12.0, 0.5)).verdict == "not supported"
    assert verdict("efficiency.algorithms", ladder(20.5, 5.0)).verdict == "inconclusive"
    figures = verdict("efficiency.algorithms", ladder(35.0, 0.5)).figures
    assert figures["speedup[2 tuned]"] == 3.5
    assert verdict("efficiency.algorithms", [row("m", "decode_tok_s", 1.0)]).verdict == "skipped"


def tp_rows(single: float, split: float, size: int = 2, stdev: float = 0.5) -> list[dict]:
    busbw = [{**row("m", "allreduce_busbw_gbps", value, size_mib=mib, world_size=size), "profile": "h800"}
             for mib, value in ((1, 40.0), (256, 180.0))]
    decode = []
    for tp, value in ((1, single), (size, split)):
        decode.append({**row("m", "decode_tok_s", value, stdev=stdev, n=10, engine_step=f"tp{tp}"),
                       "backend_info": {"tensor_parallel_size": tp}})
    return busbw + decode


def test_interconnect_rule_reads_tensor_parallel_scaling_beside_the_all_reduce_bandwidth():
    limited = verdict("interconnect.speed_limit", tp_rows(100.0, 120.0))  # 0.60 of 2x: the GPUs wait
    assert limited.verdict == "supported" and limited.figures["scaling_efficiency[tp2]"] == 0.6
    assert limited.figures["allreduce_busbw_gbps[256 MiB]"] == 180.0
    assert "400 GB/s" in limited.figures["datasheet_interconnect"]
    assert verdict("interconnect.speed_limit", tp_rows(100.0, 190.0)).verdict == "not supported"  # 0.95
    assert verdict("interconnect.speed_limit", tp_rows(100.0, 160.0, stdev=20.0)).verdict == "inconclusive"
    only_busbw = verdict("interconnect.speed_limit", tp_rows(100.0, 120.0)[:2])
    assert only_busbw.verdict == "skipped" and "interconnect` suite" in only_busbw.reason


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
