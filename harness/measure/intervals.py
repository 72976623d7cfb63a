"""95% intervals of a figure, computed from the samples its row stores, for the statistic the figure reports.

The statistic of each metric is in the metric dictionary (harness/measure/metrics.py); the methods, as METRICS.md
(docs/METRICS.md) states them:
- median of timed samples: the exact distribution-free order-statistic interval (scipy's quantile_test). It exists
  only from 6 samples on at 95% (7 at 97.5%); with fewer the interval is unbounded, so nothing can be decided on it.
  Where the machine's stability was measured (`bench calibrate --stability`), the row carries its drift factor f and
  the interval is [low / f, high x f]: it then holds the machine's long-run median, not only the window's.
- mean of 0/1 per-example samples (accuracy, exact match, pass@1): the Wilson score interval.
- mean of other per-example samples (tokens per answer): the bias-corrected and accelerated (BCa) bootstrap.
- pooled perplexity and bits per byte: BCa bootstrap over documents (each document's NLL and token or byte count),
  or, for rows written before the counts were stored, the stored bootstrap standard error x 1.96.
- exact figures (weights bytes, parameter counts, a single scoring time): the value itself.
k figures compared with each other take each at level 1 - (1 - level) / k, so that all hold together at `level` at
least (Bonferroni); the interval of their ratio or difference holds whenever both of its figures' intervals do.
"""

import math
import warnings
from dataclasses import dataclass

import numpy as np
from scipy import stats

from harness.measure.metrics import metric

LEVEL = 0.95
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0


@dataclass(frozen=True)
class Interval:
    value: float
    low: float
    high: float
    method: str

    def side(self, threshold: float) -> str:
        """'above' or 'below' when the whole interval is on that side of `threshold`, else 'spans'."""
        if self.low > threshold:
            return "above"
        if self.high < threshold:
            return "below"
        return "spans"

    @property
    def relative_half_width(self) -> float:
        return relative_half_width(self.value, self.low, self.high)

    def text(self, digits: int = 2) -> str:
        return f"{self.value:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"


def relative_half_width(value: float, low: float, high: float) -> float:
    """The larger distance from `value` to a bound, over |value|: the x of "within +-x of it" (inf where the interval is
    unbounded or the value is 0)."""
    return max(value - low, high - value) / abs(value) if value else math.inf


def median_half_width(samples, level: float = LEVEL, drift_factor: float | None = None) -> float:
    """relative_half_width of the samples' median and its interval (widened by `drift_factor`)."""
    values = _finite(samples)
    if not values.size:
        return math.inf
    return relative_half_width(float(np.median(values)), *widened(*_median_bounds(values, level), drift_factor))


def widened(low: float, high: float, drift_factor: float | None) -> tuple[float, float]:
    """A timed figure's interval widened by the machine's drift factor f (calibration.Stability): [low / f, high x f].
    The window's figure is within a factor f of the machine's long-run one (95% of windows), so this holds it."""
    return (low / drift_factor, high * drift_factor) if drift_factor else (low, high)


def _finite(samples) -> np.ndarray:
    return np.asarray([s for s in samples or [] if s is not None and math.isfinite(s)], dtype=float)


UNBOUNDED = (-math.inf, math.inf)


def median_interval(samples, level: float = LEVEL) -> tuple[float, float]:
    return _median_bounds(_finite(samples), level)


def _median_bounds(values: np.ndarray, level: float) -> tuple[float, float]:
    """median_interval of samples already made finite."""
    if values.size == 0:
        return UNBOUNDED
    found = stats.quantile_test(values, q=float(np.median(values)), p=0.5).confidence_interval(level)
    return _bounds(found)


def mean_interval(samples, level: float = LEVEL) -> tuple[float, float, str]:
    values = _finite(samples)
    if values.size == 0:
        return (*UNBOUNDED, "no samples")
    if set(np.unique(values)) <= {0.0, 1.0}:
        found = stats.binomtest(int(values.sum()), int(values.size)).proportion_ci(level, method="wilson")
        return float(found.low), float(found.high), "Wilson score"
    return (*_bootstrap((values,), np.mean, level), "BCa bootstrap of the mean")


def pooled_interval(row: dict, level: float = LEVEL) -> tuple[float, float, str]:
    """Perplexity exp(sum NLL / sum tokens) or bits per byte sum NLL / (ln 2 x sum bytes) over resampled documents;
    the samples are each document's mean NLL per token, the stats hold each document's tokens and bytes."""
    if "doc_tokens" not in row["stats"]:  # written before the counts were stored
        half = stats.norm.ppf(0.5 + level / 2) * row["stats"].get("stderr", math.inf)
        return row["value"] - half, row["value"] + half, "stored bootstrap standard error x z"
    tokens = np.asarray(row["stats"]["doc_tokens"], dtype=float)
    sizes = np.asarray(row["stats"]["doc_bytes"], dtype=float)
    total_nll = np.asarray(row["samples"], dtype=float) * tokens

    def statistic(nll, count, size, axis=-1):
        return pooled(row["metric"], nll, count, size, axis)

    return (*_bootstrap((total_nll, tokens, sizes), statistic, level), "BCa bootstrap over documents")


def pooled(name: str, nll, tokens, sizes, axis=-1):
    """Perplexity exp(sum NLL / sum tokens) or bits per byte sum NLL / (ln 2 x sum bytes), from each document's
    total NLL, tokens and UTF-8 bytes (summed along `axis`)."""
    if name == "perplexity":
        return np.exp(np.sum(nll, axis=axis) / np.sum(tokens, axis=axis))
    return np.sum(nll, axis=axis) / (math.log(2) * np.sum(sizes, axis=axis))


def _bounds(found) -> tuple[float, float]:
    low, high = float(found.low), float(found.high)
    return UNBOUNDED if math.isnan(low) or math.isnan(high) else (low, high)


def _bootstrap(data: tuple, statistic, level: float) -> tuple[float, float]:
    """BCa interval of `statistic` over examples resampled together (one row of every array per example)."""
    if data[0].size < 2:
        return UNBOUNDED
    if all(np.ptp(column) == 0 for column in data):  # every example alike: nothing varies under resampling
        value = float(statistic(*data))
        return value, value
    with warnings.catch_warnings():  # a flat jackknife warns (and gives NaN: unbounded)
        warnings.simplefilter("ignore")
        found = stats.bootstrap(data, statistic, paired=True, vectorized=True, confidence_level=level,
                                n_resamples=BOOTSTRAP_RESAMPLES, method="BCa",
                                rng=np.random.default_rng(BOOTSTRAP_SEED)).confidence_interval
    return _bounds(found)


def interval(row: dict, level: float = LEVEL) -> Interval:
    """The interval of a row's figure (its `value`), for the statistic its metric reports."""
    kind, value = metric(row["metric"]).statistic, row["value"]
    if kind == "median":
        drift = (row.get("stats") or {}).get("drift_factor")
        low, high = widened(*median_interval(row.get("samples"), level), drift)
        method = "order statistics of the median" + (f", widened by the machine's drift factor {drift:.3f}"
                                                     if drift else "")
    elif kind == "mean":
        low, high, method = mean_interval(row.get("samples"), level)
    elif kind == "pooled":
        low, high, method = pooled_interval(row, level)
    else:
        low, high, method = value, value, "exact"
    return Interval(value, min(low, value), max(high, value), method)


def joint_level(count: int, level: float = LEVEL) -> float:
    """The level each of `count` figures takes so that all hold together at `level` at least (Bonferroni)."""
    return 1 - (1 - level) / count


def ratio(a: Interval, b: Interval) -> Interval:
    """a / b for positive figures: [a.low / b.high, a.high / b.low]."""
    low = a.low / b.high if b.high > 0 and math.isfinite(b.high) else 0.0
    high = a.high / b.low if b.low > 0 else math.inf
    return Interval(a.value / b.value, max(low, 0.0), high, f"ratio of ({a.method}) and ({b.method})")


def difference(a: Interval, b: Interval) -> Interval:
    """a - b: [a.low - b.high, a.high - b.low]."""
    return Interval(a.value - b.value, a.low - b.high, a.high - b.low, f"difference of ({a.method}) and ({b.method})")
