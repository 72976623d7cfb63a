"""Coverage of bench's 95% interval of a median, on a long series of real decode-speed samples.

Measures `--samples` decode tok/s figures of one model back to back (tiny-dense on this CPU by default, each a
greedy generation as `bench run` times it), or reads a series saved by an earlier run (`--series FILE`, one number
a line). Before the series it measures the machine's stability as `bench calibrate --stability` does
(`--stability-seconds`; or `--stability FILE`, a saved calibration's JSON), apart in time from the series, as a
run's cached calibration is. Then it draws windows from the series, as a run would have measured them, and counts how
often the window's 95% interval holds the median of the whole series, both as the window alone gives it and widened
by the stability's drift factor (what rows carry on a calibrated machine):
- fixed windows of `--window` consecutive samples (every start), as the fixed protocol takes them;
- sequential windows from every start: samples taken one by one until the policy's target (`--target-ci`) holds
  or `--max-samples` are taken, with the policy's own steady-state drop, as `measure: {target_ci: ...}` takes them.
The target coverage is 0.95; on a machine whose speed drifts, at least 0.90.

    .venv/bin/python benchmarks/interval_coverage.py --samples 400 --window 10 --target-ci 0.05
"""

import argparse
import dataclasses
import json
import math
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from time_to_figure import decode_timer  # noqa: E402 - beside this script

from harness.measure.calibration import Stability, measure_stability  # noqa: E402
from harness.measure.intervals import median_interval, widened  # noqa: E402
from harness.measure.stats import RepetitionPolicy, leading_outliers  # noqa: E402


def measure_series(model: str, samples: int, prompt_tokens: int, output_tokens: int) -> list[float]:
    measure_once = decode_timer(model, prompt_tokens, output_tokens, dtype="fp32")
    measure_once()  # warm-up, as the policy's fixed count does
    series = []
    for i in range(samples):
        series.append(measure_once())
        if (i + 1) % 50 == 0:
            print(f"{i + 1} samples, median so far {statistics.median(series):.2f} tok/s", file=sys.stderr, flush=True)
    return series


def holds(window: list[float], truth: float, drift: float | None) -> bool:
    low, high = widened(*median_interval(window), drift)
    return low <= truth <= high


def fixed_coverage(series: list[float], window: int, truth: float, drift: float | None) -> tuple[float, int]:
    starts = range(len(series) - window + 1)
    return sum(holds(series[s:s + window], truth, drift) for s in starts) / len(starts), len(starts)


def sequential_windows(series: list[float], target: float, max_samples: int,
                       drift: float | None) -> list[tuple[list[float], bool]]:
    """From every start: the kept samples when the policy stopped (its own rule, RepetitionPolicy.stop_reason, with
    no time cap: at most `max_samples` are taken), and whether it stopped converged."""
    policy = RepetitionPolicy(target_ci=target, max_seconds=math.inf, drift_factor=drift)
    windows = []
    for start in range(len(series) - max_samples + 1):
        for end in range(start + 1, start + max_samples + 1):
            taken = series[start:end]
            kept = taken[leading_outliers(taken):]
            if stopped := policy.stop_reason(kept, len(taken), 0.0):
                windows.append((kept, stopped == "converged"))
                break
        else:
            windows.append((kept, False))
    return windows


def stability(args) -> Stability:
    if args.stability:
        return Stability(**json.loads(Path(args.stability).read_text()))
    print(f"measuring stability for {args.stability_seconds:g} s", file=sys.stderr, flush=True)
    found = measure_stability("cpu", args.stability_seconds)
    if args.save:
        Path(args.save).with_suffix(".stability.json").write_text(json.dumps(dataclasses.asdict(found)))
    return found


def report(series: list[float], args, drift: float | None, label: str) -> None:
    truth = statistics.median(series)
    for window in args.window or [6, 10, 20]:
        coverage, count = fixed_coverage(series, window, truth, drift)
        print(f"{label}: fixed windows of {window}: coverage {coverage:.3f} of {count} windows")
    windows = sequential_windows(series, args.target_ci, args.max_samples, drift)
    converged = [kept for kept, done in windows if done]
    coverage = sum(holds(kept, truth, drift) for kept, _ in windows) / len(windows)
    print(f"{label}: sequential, target +-{args.target_ci:.0%}, at most {args.max_samples} samples: {len(converged)} "
          f"of {len(windows)} converged (median {statistics.median(map(len, converged)) if converged else '-'} "
          f"samples); coverage {coverage:.3f}; of the converged ones "
          f"{sum(holds(kept, truth, drift) for kept in converged) / max(len(converged), 1):.3f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny-dense")
    parser.add_argument("--samples", type=int, default=400)
    parser.add_argument("--prompt-tokens", type=int, default=16)
    parser.add_argument("--output-tokens", type=int, default=16)
    parser.add_argument("--series", help="read the series from this file instead of measuring it")
    parser.add_argument("--save", help="write the measured series to this file")
    parser.add_argument("--window", type=int, action="append", help="fixed window length (repeatable) [6, 10, 20]")
    parser.add_argument("--target-ci", type=float, default=0.05)
    parser.add_argument("--max-samples", type=int, default=40)
    parser.add_argument("--stability", help="a saved stability (JSON) instead of measuring it")
    parser.add_argument("--stability-seconds", type=float, default=180.0)
    args = parser.parse_args()
    found = stability(args)
    print(f"stability: {found.blocks} blocks of {found.block_seconds:g} s, 95% within [{found.block_ratio_low:.3f}, "
          f"{found.block_ratio_high:.3f}] of their median: drift factor {found.drift_factor:.3f}")
    if args.series:
        series = [float(line) for line in Path(args.series).read_text().split()]
    else:
        series = measure_series(args.model, args.samples, args.prompt_tokens, args.output_tokens)
        if args.save:
            Path(args.save).write_text("".join(f"{value!r}\n" for value in series))
    quartiles = statistics.quantiles(series, n=4)
    print(f"{len(series)} samples of decode tok/s: median {statistics.median(series):.3f}, quartiles "
          f"{quartiles[0]:.3f} / {quartiles[2]:.3f}, first tenth's median "
          f"{statistics.median(series[:len(series) // 10]):.3f}, last tenth's "
          f"{statistics.median(series[-(len(series) // 10):]):.3f}")
    report(series, args, None, "window alone")
    report(series, args, found.drift_factor, f"widened x {found.drift_factor:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
