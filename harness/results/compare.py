"""BASE against NEW: comparable rows paired, each figure's change with a bootstrap 95% interval from the stored
samples, and a verdict that knows which way is better for that figure.

Rows pair when their comparability keys and metrics are equal. `ignore` drops named key fields before pairing (to
compare across a deliberately changed setting, e.g. the dtype); the report then says so first, with both values.
"""

import json
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from harness.errors import ConfigError
from harness.measure.metrics import metric
from harness.results.console import table
from harness.results.schema import ENVIRONMENT_FIELDS, KEY_FIELDS, environment

# Figures of time and speed read "faster"/"slower"; the others "better"/"worse".
SPEED_UNITS = {"ms", "tok/s", "req/s", "s"}
RESAMPLES = 2000


@dataclass(frozen=True)
class Change:
    base: dict  # a representative row of each side (for its context)
    metric: str
    base_value: float
    new_value: float
    change: float | None  # new / base - 1
    low: float | None  # the change's 95% interval; None where a side has fewer than two samples
    high: float | None
    verdict: str
    regressed: bool  # worse beyond the threshold: what fails a CI gate


def _group(row: dict, ignore: tuple[str, ...]) -> str:
    key = {k: v for k, v in row["key"].items() if k not in ignore}
    return json.dumps([key, row["metric"]], sort_keys=True, default=str)


def _groups(rows: list[dict], ignore: tuple[str, ...]) -> pd.Series:
    """The rows with a figure, grouped by comparability key and metric (pandas' group-by, first seen first): a
    Series of row lists indexed by the group."""
    usable = [row for row in rows if row.get("status") == "ok" and row.get("metric") and row.get("value") is not None]
    frame = pd.DataFrame({"group": [_group(row, ignore) for row in usable], "row": usable})
    return frame.groupby("group", sort=False)["row"].agg(list) if usable else pd.Series(dtype=object)


def _side(rows: list[dict]) -> tuple[np.ndarray, object, bool]:
    """One side's samples (pooled over its rows: several nights of one figure) and the statistic its metric reports
    (the registry's): the median of timings, the mean of per-example samples. A pooled figure (perplexity) and an
    exact one (weights, the worst MoE layer) are compared by their rows' values, without an interval (the third
    item says whether the values are samples to resample)."""
    kind = metric(rows[0]["metric"]).statistic
    if kind in ("median", "mean"):
        samples = np.asarray([s for row in rows for s in row["samples"] if s is not None], dtype=float)
        return samples, np.median if kind == "median" else np.mean, True
    return np.asarray([row["value"] for row in rows], dtype=float), np.mean, False


def _interval(base: np.ndarray, new: np.ndarray, statistic, seed: int) -> tuple[float, float]:
    """95% percentile interval of statistic(new) / statistic(base) - 1, both sides resampled independently."""
    rng = np.random.default_rng(seed)
    base_stats = statistic(base[rng.integers(0, base.size, (RESAMPLES, base.size))], axis=1)
    new_stats = statistic(new[rng.integers(0, new.size, (RESAMPLES, new.size))], axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = new_stats / base_stats - 1
    ratios = ratios[np.isfinite(ratios)]
    if ratios.size == 0:
        return float("nan"), float("nan")
    return float(np.percentile(ratios, 2.5)), float(np.percentile(ratios, 97.5))


def _verdict(name: str, unit: str | None, change: float | None, low: float | None, high: float | None,
             threshold: float) -> tuple[str, bool]:
    """The verdict and whether it is a regression. Without an interval (a side with one sample: weights, memory),
    the threshold stands in for the noise."""
    if change is None:
        return "base is 0: no ratio", False
    if low is None and abs(change) <= threshold:
        return ("unchanged" if change == 0 else "within threshold, one sample"), False
    if low is not None and (math.isnan(low) or low <= 0 <= high):  # the interval holds no change
        return "within noise", False
    direction = metric(name).direction
    if direction == "neither":
        return "changed", False
    improved = (change > 0) == (direction == "higher")
    word = ("faster" if improved else "slower") if unit in SPEED_UNITS else ("better" if improved else "worse")
    regressed = not improved and abs(change) > threshold
    return word + (", one sample" if low is None else ""), regressed


def check_ignore(fields: list[str]) -> tuple[str, ...]:
    unknown = [f for f in fields if f not in KEY_FIELDS]
    if unknown:
        raise ConfigError(f"--ignore {unknown[0]}: not a comparability key field; known: {', '.join(KEY_FIELDS)}")
    return tuple(fields)


def compare(base_rows: list[dict], new_rows: list[dict], threshold: float = 0.1,
            ignore: tuple[str, ...] = (), seed: int = 0) -> tuple[list[Change], dict]:
    """The paired figures, and what did not pair: {"only_base": n, "only_new": n, "differs": {field: values}}."""
    base_groups, new_groups = _groups(base_rows, ignore), _groups(new_rows, ignore)
    # The pairing: an inner join of the two sides on the group, in BASE's order.
    paired = pd.concat({"base": base_groups, "new": new_groups}, axis=1, join="inner")
    changes = []
    for base, new in zip(paired["base"], paired["new"], strict=True):
        (base_samples, statistic, sampled), (new_samples, _, _) = _side(base), _side(new)
        base_value, new_value = float(statistic(base_samples)), float(statistic(new_samples))
        change = new_value / base_value - 1 if base_value else None
        low = high = None
        if change is not None and sampled and base_samples.size > 1 and new_samples.size > 1:
            low, high = _interval(base_samples, new_samples, statistic, seed)
        verdict, regressed = _verdict(base[0]["metric"], base[0].get("unit"), change, low, high, threshold)
        changes.append(Change(base[0], base[0]["metric"], base_value, new_value, change, low, high, verdict,
                              regressed))
    unpaired = {
        "only_base": int(base_groups.drop(paired.index).map(len).sum()),
        "only_new": int(new_groups.drop(paired.index).map(len).sum()),
        "differs": _differing_fields(base_groups.to_dict(), new_groups.to_dict()),
        "environment": environment_changes(set(paired.index), base_groups.to_dict(), new_groups.to_dict()),
    }
    return changes, unpaired


def environment_changes(paired: set[str], base_groups: dict, new_groups: dict) -> list[str]:
    """What differs in the environment of the two sides' paired figures ("transformers 5.24.0 -> 5.25.0"): rows
    pair across it, and the report says so first."""
    changes = []
    for name in ENVIRONMENT_FIELDS:
        base, new = (sorted({str(environment(row)[name]) for group in paired for row in groups[group]})
                     for groups in (base_groups, new_groups))
        if base != new:
            changes.append(f"{name} {', '.join(base)} -> {', '.join(new)}")
    return changes


def _differing_fields(base_groups: dict, new_groups: dict) -> dict[str, tuple[list, list]]:
    """Key fields whose values differ between the two sides' figures (why rows do not pair, or what --ignore hid)."""
    differs = {}
    for field in KEY_FIELDS:
        base = sorted({str(r["key"].get(field)) for rows in base_groups.values() for r in rows})
        new = sorted({str(r["key"].get(field)) for rows in new_groups.values() for r in rows})
        if base != new:
            differs[field] = (base, new)
    return differs


def _percent(value: float | None) -> str:
    return "" if value is None or math.isnan(value) else f"{value * 100:+.1f}%"


def report(changes: list[Change], unpaired: dict, ignore: tuple[str, ...], threshold: float) -> str:
    lines = [f"ENVIRONMENT CHANGED (paired across it): {change}" for change in unpaired["environment"]]
    for field in ignore:
        base, new = unpaired["differs"].get(field, (["(same)"], ["(same)"]))
        lines.append(f"PAIRED ACROSS {field.upper()} (--ignore {field}): BASE {', '.join(base)}  "
                     f"NEW {', '.join(new)}")
    header = ["model", "scenario", "task", "batch", "metric", "base", "new", "change", "95% interval", "verdict"]
    body = []
    for c in changes:
        params = c.base["params"]
        body.append([str(c.base.get("model")), str(c.base.get("scenario")), str(c.base.get("task")),
                     str(params.get("batch_size", "")), c.metric, f"{c.base_value:.4g}", f"{c.new_value:.4g}",
                     _percent(c.change), f"[{_percent(c.low)}, {_percent(c.high)}]" if c.low is not None else "",
                     c.verdict + (f" (beyond {threshold * 100:g}%)" if c.regressed else "")])
    lines.append(table(header, body))
    counts: dict[str, int] = {}
    for c in changes:
        counts[c.verdict] = counts.get(c.verdict, 0) + 1
    lines.append(f"\n{len(changes)} figures paired: " + ", ".join(f"{n} {v}" for v, n in sorted(counts.items())))
    if unpaired["only_base"] or unpaired["only_new"]:
        unignored = {f: d for f, d in unpaired["differs"].items() if f not in ignore}
        why = "; ".join(f"{f}: BASE {', '.join(b)} NEW {', '.join(n)}" for f, (b, n) in unignored.items())
        lines.append(f"not compared (no comparable row on the other side): {unpaired['only_base']} BASE rows, "
                     f"{unpaired['only_new']} NEW rows" + (f"; keys differ in {why}" if why else ""))
    regressions = sum(c.regressed for c in changes)
    lines.append(f"{regressions} figures regressed beyond the {threshold * 100:g}% threshold" if regressions
                 else f"no figure regressed beyond the {threshold * 100:g}% threshold")
    return "\n".join(lines)
