"""BASE against NEW: comparable rows paired, each figure's change with a bootstrap 95% interval from the stored
samples, and a verdict that knows which way is better for that figure.

Rows pair when their comparability keys and metrics are equal. `ignore` drops named key fields before pairing (to
compare across a deliberately changed setting, e.g. the dtype); the report then says so first, with both values.
"""

import json
import math
from dataclasses import dataclass

import numpy as np

from harness.errors import ConfigError
from harness.results.schema import KEY_FIELDS

# Which way is better, per figure; a figure in neither set (parameter counts) is reported but never judged.
HIGHER_IS_BETTER = {"prefill_tok_s", "decode_tok_s", "output_tok_s", "request_s", "goodput_req_s", "tok_per_j",
                    "accuracy", "acc_norm", "exact_match", "pass_at_1", "mbu", "mbu_calibrated", "mfu",
                    "mfu_calibrated", "calibrated_bandwidth_gbps", "calibrated_tflops"}
LOWER_IS_BETTER = {"ttft_ms", "tpot_ms", "itl_ms", "e2e_latency_ms", "peak_rss_mib", "peak_allocated_mib",
                   "peak_reserved_mib", "peak_device_mib", "weights_mib", "kv_cache_mib", "energy_j", "j_per_tok",
                   "usd_per_mtok", "perplexity", "bits_per_byte", "eval_s", "expert_imbalance"}
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


def _groups(rows: list[dict], ignore: tuple[str, ...]) -> dict[str, list[dict]]:
    groups: dict[str, list[dict]] = {}
    for row in rows:
        if row.get("status") == "ok" and row.get("metric") and row.get("value") is not None:
            groups.setdefault(_group(row, ignore), []).append(row)
    return groups


def _statistic(rows: list[dict]):
    """Quality figures (with a bootstrap stderr over examples) are means of their samples; timed figures medians."""
    return np.mean if rows[0]["stats"].get("stderr") is not None else np.median


def _samples(rows: list[dict]) -> np.ndarray:
    """The raw samples of every row of one side, pooled (a side may hold several nights of the same figure)."""
    return np.asarray([s for row in rows for s in row["samples"] if s is not None], dtype=float)


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


def _verdict(metric: str, unit: str | None, change: float | None, low: float | None, high: float | None,
             threshold: float) -> tuple[str, bool]:
    """The verdict and whether it is a regression. Without an interval (a side with one sample: weights, memory),
    the threshold stands in for the noise."""
    if change is None:
        return "base is 0: no ratio", False
    if low is None and abs(change) <= threshold:
        return ("unchanged" if change == 0 else "within threshold, one sample"), False
    if low is not None and (math.isnan(low) or low <= 0 <= high):  # the interval holds no change
        return "within noise", False
    if metric not in HIGHER_IS_BETTER and metric not in LOWER_IS_BETTER:
        return "changed", False
    improved = (change > 0) == (metric in HIGHER_IS_BETTER)
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
    changes = []
    for group, base in base_groups.items():
        new = new_groups.get(group)
        if not new:
            continue
        statistic = _statistic(base)
        base_samples, new_samples = _samples(base), _samples(new)
        base_value, new_value = float(statistic(base_samples)), float(statistic(new_samples))
        change = new_value / base_value - 1 if base_value else None
        low = high = None
        if change is not None and base_samples.size > 1 and new_samples.size > 1:
            low, high = _interval(base_samples, new_samples, statistic, seed)
        verdict, regressed = _verdict(base[0]["metric"], base[0].get("unit"), change, low, high, threshold)
        changes.append(Change(base[0], base[0]["metric"], base_value, new_value, change, low, high, verdict,
                              regressed))
    unpaired = {
        "only_base": sum(len(rows) for g, rows in base_groups.items() if g not in new_groups),
        "only_new": sum(len(rows) for g, rows in new_groups.items() if g not in base_groups),
        "differs": _differing_fields(base_groups, new_groups),
    }
    return changes, unpaired


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
    lines = []
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
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]
    lines += ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
              for row in [header, *body]]
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
