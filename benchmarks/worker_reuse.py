"""A suite's wall time and peak memory with a model's cells sharing a worker (bench's default) against
--isolate-cells (a worker, and a model load, per cell), interleaved round by round, which goes first alternating.

Prints each round's wall times, the median of the per-round ratios shared / isolated, and per cell the peak RSS of
every round in both modes, the ratio of their medians, and each mode's own spread over rounds (max / min): a
shared / isolated difference smaller than that spread is not one that rounds can show. Usage:

    .venv/bin/python benchmarks/worker_reuse.py --rounds 2
    .venv/bin/python benchmarks/worker_reuse.py --backend vllm --model smollm2-135m --rounds 1
"""

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness.results.store import read_rows


def timed_run(args, out: Path, isolate: bool) -> float:
    command = [sys.executable, "-m", "harness", "run", "--suite", args.suite, "--device", args.device,
               "--out", str(out), "--no-progress", *(["--isolate-cells"] if isolate else [])]
    for model in args.model or ():
        command += ["--model", model]
    for backend in args.backend or ():
        command += ["--backend", backend]
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, timeout=args.timeout_s)
    return time.perf_counter() - started


def cell_peaks(out: Path) -> dict[str, float]:
    return {row["cell_id"]: row["value"] for row in read_rows(out / "rows.jsonl") if row["metric"] == "peak_rss_mib"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", default="quick")
    parser.add_argument("--model", action="append", help="repeatable [the suite's]")
    parser.add_argument("--backend", action="append", help="repeatable [the suite's]")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--timeout-s", type=float, default=3600)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="worker-reuse-"))
    ratios, peaks = [], {"shared": [], "isolated": []}  # per mode, each round's {cell: peak}
    for round_ in range(args.rounds):
        walls = {}
        for mode in (("shared", "isolated") if round_ % 2 == 0 else ("isolated", "shared")):
            out = work / f"{mode}-{round_}"
            walls[mode] = timed_run(args, out, isolate=mode == "isolated")
            peaks[mode].append(cell_peaks(out))
        ratios.append(walls["shared"] / walls["isolated"])
        print(f"round {round_}: shared {walls['shared']:.1f} s, isolated {walls['isolated']:.1f} s, "
              f"ratio {ratios[-1]:.3f}", flush=True)
    print(f"wall time shared / isolated: median of {len(ratios)} rounds {statistics.median(ratios):.3f}")
    print("peak_rss_mib per cell: shared rounds | isolated rounds | ratio of medians | spread shared, isolated")
    for cell in peaks["isolated"][0]:
        rounds = {mode: [found[cell] for found in peaks[mode] if cell in found] for mode in peaks}
        if len(rounds["shared"]) < len(rounds["isolated"]):
            print(f"  {cell}: missing in a shared run")
            continue
        medians = {mode: statistics.median(values) for mode, values in rounds.items()}
        spreads = ", ".join(f"{max(values) / min(values):.3f}" for values in rounds.values())
        print(f"  {cell}: " + " | ".join(" ".join(f"{v:.1f}" for v in rounds[mode]) for mode in rounds)
              + f" | {medians['shared'] / medians['isolated']:.3f} | {spreads}")
    print(f"work folder {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
