"""Summary statistics for repeated measurements, and the repetition policy that produces them."""

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from harness.measure.intervals import median_half_width

T = TypeVar("T")


def summarize(samples: Sequence[float]) -> dict:
    """median, p10, p90, mean, stdev (sample), cv and n of a list of measurements; empty -> n = 0 only."""
    values = np.asarray([s for s in samples if s is not None and math.isfinite(s)], dtype=float)
    n = int(values.size)
    if n == 0:
        return {"n": 0}
    mean = float(values.mean())
    stdev = float(values.std(ddof=1)) if n > 1 else 0.0
    return {
        "median": float(np.median(values)),
        "p10": float(np.percentile(values, 10)),
        "p90": float(np.percentile(values, 90)),
        "mean": mean,
        "stdev": stdev,
        "cv": stdev / mean if mean else None,
        "n": n,
    }


def percentile(samples: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0-100) of the finite samples; None when there are none."""
    values = [s for s in samples if s is not None and math.isfinite(s)]
    return float(np.percentile(values, q)) if values else None


def bootstrap_stderr(values: Sequence[float], seed: int = 0, resamples: int = 1000,
                     statistic: Callable[[np.ndarray], float] | None = None) -> float:
    """Standard error of `statistic` (default: the mean) over resamples of the examples, by bootstrap with its own
    seeded generator (nothing global). `statistic` receives the resampled indexes, for figures that are not means
    (perplexity pools tokens over documents)."""
    n = len(values)
    if n < 2:
        return 0.0
    data = np.asarray(values, dtype=float)
    statistic = statistic or (lambda indexes: data[indexes].mean())
    rng = np.random.default_rng(seed)
    estimates = [statistic(rng.integers(0, n, size=n)) for _ in range(resamples)]
    return float(np.std(estimates, ddof=1))


# Steady state: a leading sample this many scaled MADs (a robust standard deviation) from the median of the samples
# after it is warm-up; the band is never narrower than +-1% of that median (coarse clocks repeat timings exactly,
# which makes the MAD 0). At most a third of the samples are ever dropped.
STEADY_BAND_MADS = 3.0
STEADY_BAND_FLOOR = 0.01
MAD_TO_SIGMA = 1.4826  # the MAD of a normal distribution times this is its standard deviation


def leading_outliers(values: Sequence[float]) -> int:
    """How many leading samples lie outside the band of the samples after them: warm-up that a fixed count missed
    (torch.compile, GPU clocks ramping, caches filling). It stops at the first sample inside the band, so no sample
    from the middle is ever dropped, and it keeps at least two thirds of the samples and three after the last drop."""
    dropped = 0
    while dropped < len(values) // 3 and len(values) - dropped - 1 >= 3:
        rest = np.asarray(values[dropped + 1:], dtype=float)
        center = float(np.median(rest))
        band = max(STEADY_BAND_MADS * MAD_TO_SIGMA * float(np.median(np.abs(rest - center))),
                   STEADY_BAND_FLOOR * abs(center))
        if abs(values[dropped] - center) <= band:
            break
        dropped += 1
    return dropped


@dataclass(frozen=True)
class Series:
    """The timed repetitions a policy took: those kept after the warm-up it found in them, and how it stopped."""

    runs: list
    taken: int  # timed repetitions run, the dropped ones included (warm-up runs of the fixed count are not)
    dropped: int  # leading repetitions dropped as warm-up (leading_outliers)
    stopped: str  # "repetitions" (the fixed protocol), "converged", "drift", "max_seconds" or "max_repetitions"
    target_ci: float | None
    drift_factor: float | None = None  # the machine's (calibration.Stability), which widens the figure's interval

    def stats(self) -> dict:
        """What every row measured from these repetitions carries in its stats."""
        why = (f"the first {self.dropped} outside the band of the rest (median +- {STEADY_BAND_MADS:g} scaled MADs, "
               f"at least +-{STEADY_BAND_FLOOR:.0%})") if self.dropped else None
        return {"repetitions": self.taken, "warmup_dropped": self.dropped, "warmup_dropped_why": why,
                "stopped": self.stopped, "target_ci": self.target_ci, "drift_factor": self.drift_factor}


@dataclass(frozen=True)
class RepetitionPolicy:
    """Warm-up runs first, not counted; then timed runs, from whose leading ones any still warming up are dropped.

    Fixed protocol (target_ci None): at least `repetitions` kept runs AND at least `min_seconds`. With a target: runs
    until the 95% interval of the watched figure's median is within +-target_ci of it, with at least
    `min_repetitions` kept runs, or until `max_seconds` have passed (then the figure has not converged). The order
    statistics of the median (harness/measure/intervals.py) bound a 95% interval from 6 samples on. With the
    machine's `drift_factor` f the interval is widened by it; where f alone is wider than the target, no number of
    repetitions can reach it, and the policy stops at `min_repetitions` ("drift")."""

    warmup: int = 1
    repetitions: int = 5
    min_seconds: float = 0.0
    target_ci: float | None = None
    min_repetitions: int = 6
    max_seconds: float = 60.0
    max_repetitions: int = 1000
    drift_factor: float | None = None

    def run(self, measure_once: Callable[[], T], watch: Callable[[T], float] = lambda result: result) -> Series:
        """Repeats measure_once() as the policy says; `watch` gives the figure of a result that steady state and
        convergence are judged on."""
        for _ in range(self.warmup):
            measure_once()
        results, values = [], []
        start = time.perf_counter()
        while True:
            results.append(measure_once())
            values.append(watch(results[-1]))
            dropped = leading_outliers(values)
            stopped = self.stop_reason(values[dropped:], len(results), time.perf_counter() - start)
            if stopped:
                return Series(results[dropped:], len(results), dropped, stopped, self.target_ci, self.drift_factor)

    def stop_reason(self, kept: list[float], taken: int, seconds: float) -> str | None:
        """Why the policy stops after `taken` repetitions of which `kept` remain, `seconds` in (None: it goes on)."""
        if taken >= self.max_repetitions:
            return "max_repetitions"
        if self.target_ci is None:
            return "repetitions" if len(kept) >= self.repetitions and seconds >= self.min_seconds else None
        if len(kept) >= self.min_repetitions:
            if median_half_width(kept, drift_factor=self.drift_factor) <= self.target_ci:
                return "converged"
            if self.drift_factor and self.drift_factor - 1 > self.target_ci:
                return "drift"
        return "max_seconds" if seconds >= self.max_seconds else None
