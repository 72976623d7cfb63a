import statistics

import numpy as np
import pytest

from harness.measure.calibration import block_ratios
from harness.measure.intervals import median_half_width
from harness.measure.stats import RepetitionPolicy, bootstrap_stderr, leading_outliers, summarize


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
    series = RepetitionPolicy(warmup=2, repetitions=3).run(lambda: calls.append(1) or len(calls))
    assert len(calls) == 5
    assert series.runs == [3, 4, 5] and series.taken == 3 and series.stopped == "repetitions"


def test_repetition_policy_repeats_until_the_minimum_time():
    import time

    start = time.perf_counter()
    series = RepetitionPolicy(warmup=0, repetitions=1, min_seconds=0.05).run(lambda: time.sleep(0.01) or 1.0)
    assert time.perf_counter() - start >= 0.05
    assert len(series.runs) >= 2


def test_leading_samples_outside_the_rest_are_warm_up_and_the_middle_is_never_dropped():
    steady = [10.0, 10.1, 9.9, 10.05, 9.95, 10.0, 10.1, 9.9, 10.0]
    assert leading_outliers([30.0, 18.0, *steady]) == 2  # compiling, then caches filling
    assert leading_outliers(steady) == 0
    assert leading_outliers([10.0, 30.0, *steady]) == 0  # an outlier in the middle stays: the first sample is steady
    assert leading_outliers([10.08, *steady]) == 0  # within +-1% of the rest is never warm-up, even where MAD is 0
    assert leading_outliers([99.0, 60.0, 40.0, 30.0, *steady[:5]]) == 3  # never more than a third of the samples


def noisy(relative_sd: float, seed: int = 0):
    """A measurement whose value is 100 with seeded normal noise of relative_sd."""
    rng = np.random.default_rng(seed)
    return lambda: float(100 * (1 + relative_sd * rng.standard_normal()))


def test_a_target_stops_when_the_median_is_known_to_it():
    series = RepetitionPolicy(warmup=0, target_ci=0.02, max_seconds=30).run(noisy(0.01))
    assert series.stopped == "converged" and series.taken >= 6
    assert median_half_width(series.runs) <= 0.02
    # One repetition fewer and it had not yet: the policy stops at the first repetition where the target holds.
    assert median_half_width(series.runs[:-1]) > 0.02 or len(series.runs) == 6


def test_a_target_out_of_reach_stops_at_the_time_cap_unconverged():
    series = RepetitionPolicy(warmup=0, target_ci=0.001, max_seconds=0.2).run(noisy(0.3))
    assert series.stopped == "max_seconds" and median_half_width(series.runs) > 0.001
    assert series.stats()["target_ci"] == 0.001 and series.stats()["repetitions"] == series.taken


def test_a_drift_wider_than_the_target_stops_at_the_minimum_unconverged():
    # Samples alike: the window alone is exact, so only the machine's drift (factor 1.10, +-10%) limits the interval.
    drifting = RepetitionPolicy(warmup=0, target_ci=0.05, drift_factor=1.10, max_seconds=30).run(lambda: 100.0)
    assert drifting.stopped == "drift" and drifting.taken == 6
    assert median_half_width(drifting.runs, drift_factor=1.10) == pytest.approx(0.10)
    assert drifting.stats()["drift_factor"] == 1.10
    # The same policy on a machine that drifts +-1% reaches +-5% at once.
    stable = RepetitionPolicy(warmup=0, target_ci=0.05, drift_factor=1.01, max_seconds=30).run(lambda: 100.0)
    assert stable.stopped == "converged" and stable.taken == 6


def test_block_ratios_are_the_blocks_quantiles_over_their_median():
    # 40 blocks: 38 at 1.0, one at 0.5 and one at 2.0. numpy's linear quantiles at 0.025 and 0.975 of 40 sorted
    # values sit at positions 0.975 and 38.025: 0.5 + 0.975 x 0.5 = 0.9875 and 1.0 + 0.025 x 1.0 = 1.025.
    low, high, factor = block_ratios([1.0] * 19 + [0.5, 2.0] + [1.0] * 19)
    assert (low, high) == (pytest.approx(0.9875), pytest.approx(1.025))
    assert factor == pytest.approx(max(1.025, 1 / 0.9875))
    # A slow side wider than the fast one sets the factor: 1 / 0.8 = 1.25.
    assert block_ratios([0.8] * 2 + [1.0] * 38)[2] == pytest.approx(1.25)
