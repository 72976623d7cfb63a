import statistics

import pytest

from harness.measure.stats import RepetitionPolicy, bootstrap_stderr, summarize


def test_summarize_matches_the_standard_library():
    samples = [12.0, 10.0, 11.0, 15.0, 9.0, 10.5]
    figures = summarize(samples)
    assert figures["n"] == 6
    assert figures["median"] == statistics.median(samples)
    assert figures["mean"] == pytest.approx(statistics.mean(samples))
    assert figures["stdev"] == pytest.approx(statistics.stdev(samples))
    assert figures["cv"] == pytest.approx(statistics.stdev(samples) / statistics.mean(samples))
    assert figures["p10"] <= figures["median"] <= figures["p90"]
    assert min(samples) <= figures["p10"] and figures["p90"] <= max(samples)


def test_summarize_skips_missing_and_non_finite_values():
    assert summarize([1.0, None, float("nan"), 3.0])["n"] == 2
    assert summarize([]) == {"n": 0}
    assert summarize([4.0])["stdev"] == 0.0


def test_bootstrap_stderr_is_seeded_and_near_the_analytic_value():
    values = [1, 0] * 50
    first, again = bootstrap_stderr(values, seed=7), bootstrap_stderr(values, seed=7)
    assert first == again
    analytic = statistics.pstdev(values) / len(values) ** 0.5  # 0.05
    assert first == pytest.approx(analytic, rel=0.15)


def test_repetition_policy_counts_warmups_apart():
    calls = []
    results = RepetitionPolicy(warmup=2, repetitions=3).run(lambda: calls.append(1) or len(calls))
    assert len(calls) == 5
    assert results == [3, 4, 5]


def test_repetition_policy_repeats_until_the_minimum_time():
    import time

    start = time.perf_counter()
    results = RepetitionPolicy(warmup=0, repetitions=1, min_seconds=0.05).run(lambda: time.sleep(0.01))
    assert time.perf_counter() - start >= 0.05
    assert len(results) >= 2
