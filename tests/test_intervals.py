"""95% intervals from stored samples (harness/measure/intervals.py): exact cases by hand, and coverage measured by
simulation from known distributions (each interval must contain the true statistic in at least its share of draws)."""

import math

import numpy as np
import pytest

from harness.measure.intervals import Interval, difference, interval, joint_level, median_interval, ratio


def timed(samples):
    return {"metric": "decode_tok_s", "value": float(np.median(samples)), "samples": list(samples), "stats": {}}


def test_the_median_interval_is_the_exact_order_statistic_one():
    # n = 10 at 95%: [x(2), x(9)] covers with 1 - 2 P(Bin(10, 1/2) <= 1) = 1 - 22/1024 = 0.979; [x(3), x(8)] only
    # 0.891, so x(2) and x(9) it is.
    samples = [float(v) for v in (7, 1, 9, 3, 10, 5, 2, 8, 4, 6)]
    assert median_interval(samples) == (2.0, 9.0)
    # n = 6: only [min, max] reaches 95% (1 - 2/64 = 0.969); n = 5 cannot (1 - 2/32 = 0.9375): unbounded.
    assert median_interval([1.0, 2.0, 3.0, 4.0, 5.0, 6.0]) == (1.0, 6.0)
    assert median_interval([1.0, 2.0, 3.0, 4.0, 5.0]) == (-math.inf, math.inf)
    # At 97.5% (each of two compared figures) n = 6 is not enough any more, and n = 7 is (1 - 2/128 = 0.984).
    assert median_interval([1.0, 2.0, 3.0, 4.0, 5.0, 6.0], joint_level(2)) == (-math.inf, math.inf)
    assert median_interval([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0], joint_level(2)) == (1.0, 7.0)


def test_an_interval_of_a_handful_of_samples_never_decides():
    e = interval(timed([10.0, 10.1, 10.2, 10.3, 10.4]))
    assert e.side(5.0) == "spans" and e.side(50.0) == "spans"
    assert interval(timed([10.0 + i / 10 for i in range(10)])).side(5.0) == "above"


def test_a_calibrated_drift_widens_a_timed_interval_to_hold_the_long_run_median():
    # A window measured while the machine ran 20% fast: [x(2), x(9)] = [12.0, 12.7] misses a long-run median of 10.
    window = timed([11.9 + i / 10 for i in range(10)])
    assert (window_alone := interval(window)).side(10.0) == "above"
    # The machine's measured drift factor 1.25: [12.0 / 1.25, 12.7 x 1.25] = [9.6, 15.875] holds it.
    drifting = interval({**window, "stats": {"drift_factor": 1.25}})
    assert drifting.low == pytest.approx(window_alone.low / 1.25) and drifting.high == pytest.approx(12.7 * 1.25)
    assert drifting.side(10.0) == "spans" and "drift factor 1.250" in drifting.method
    # A stable machine (factor 1.05) still decides: 12.0 / 1.05 = 11.43 > 10.
    assert interval({**window, "stats": {"drift_factor": 1.05}}).side(10.0) == "above"


def test_proportions_take_the_wilson_interval():
    # 0 right out of 30: Wilson's upper bound z^2 / (n + z^2) = 3.8415 / 33.8415 = 0.1135, not the Wald [0, 0].
    e = interval({"metric": "exact_match", "value": 0.0, "samples": [0.0] * 30, "stats": {}})
    assert e.low == 0.0 and e.high == pytest.approx(0.11351, abs=1e-4)
    assert e.method == "Wilson score"


def test_ratio_and_difference_hold_whenever_both_intervals_do():
    a, b = Interval(20.0, 18.0, 22.0, "a"), Interval(10.0, 9.0, 11.0, "b")
    r = ratio(a, b)
    assert (r.value, r.low, r.high) == (2.0, pytest.approx(18 / 11), pytest.approx(22 / 9))
    d = difference(a, b)
    assert (d.value, d.low, d.high) == (10.0, 7.0, 13.0)
    assert ratio(a, Interval(10.0, -math.inf, math.inf, "none")).side(1.0) == "spans"


def coverage(draw, statistic_of_population, make_row, trials=400, seed=11):
    rng = np.random.default_rng(seed)
    hits = 0
    for _ in range(trials):
        e = interval(make_row(draw(rng)))
        hits += e.low <= statistic_of_population <= e.high
    return hits / trials


def test_each_interval_holds_its_coverage_on_known_distributions():
    # The median of 10 timings from a skewed (log-normal) distribution: exact method, at least 0.979 by theory.
    median = coverage(lambda rng: rng.lognormal(3.0, 0.4, 10), math.exp(3.0), timed)
    assert median >= 0.95
    # A proportion of 60 questions at p = 0.3 (Wilson).
    proportion = coverage(lambda rng: (rng.random(60) < 0.3).astype(float), 0.3,
                          lambda s: {"metric": "accuracy", "value": float(s.mean()), "samples": list(s), "stats": {}})
    assert proportion >= 0.92
    # The mean of 40 skewed counts (tokens per answer, BCa bootstrap): bootstraps run a little under nominal.
    mean = coverage(lambda rng: rng.exponential(10.0, 40), 10.0,
                    lambda s: {"metric": "tokens_per_answer", "value": float(s.mean()), "samples": list(s),
                               "stats": {}}, trials=200)
    assert mean >= 0.88


def test_the_z_interval_it_replaced_would_fail_this_coverage_check():
    """The check above can fail: the old Estimate (median +- 1.96 stdev / sqrt(n), n = 5) covers the median of the
    same log-normal far less often than 95%."""
    rng = np.random.default_rng(11)
    hits = 0
    for _ in range(400):
        s = rng.lognormal(3.0, 0.4, 5)
        half = 1.96 * s.std(ddof=1) / math.sqrt(5)
        hits += np.median(s) - half <= math.exp(3.0) <= np.median(s) + half
    assert hits / 400 < 0.90


def test_pooled_perplexity_is_bootstrapped_over_documents():
    nll = [3.0, 4.0, 3.5, 5.0, 2.5, 4.5, 3.2, 3.8]
    tokens = [100, 50, 80, 20, 120, 60, 90, 70]
    value = math.exp(sum(n * t for n, t in zip(nll, tokens, strict=True)) / sum(tokens))
    row = {"metric": "perplexity", "value": value, "samples": nll,
           "stats": {"doc_tokens": tokens, "doc_bytes": [4 * t for t in tokens], "stderr": 1.0}}
    e = interval(row)
    assert e.low < value < e.high and e.method == "BCa bootstrap over documents"
    # A row written before the counts were stored falls back to its stored standard error.
    old = interval({**row, "stats": {"stderr": 1.0}})
    assert (old.low, old.high) == (pytest.approx(value - 1.96, abs=1e-3), pytest.approx(value + 1.96, abs=1e-3))
