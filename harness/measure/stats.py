"""Summary statistics for repeated measurements, and the repetition policy that produces them."""

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np


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


@dataclass(frozen=True)
class RepetitionPolicy:
    """Warm-up runs first and are not counted; then at least `repetitions` runs AND at least `min_seconds`."""

    warmup: int = 1
    repetitions: int = 5
    min_seconds: float = 0.0
    max_repetitions: int = 1000

    def run(self, measure_once: Callable[[], dict]) -> list[dict]:
        for _ in range(self.warmup):
            measure_once()
        results = []
        start = time.perf_counter()
        while len(results) < self.max_repetitions and (
            len(results) < self.repetitions or time.perf_counter() - start < self.min_seconds
        ):
            results.append(measure_once())
        return results
