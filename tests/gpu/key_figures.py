"""The key figures of a GPU check (benchmarks/gpu_check.sh), from the summary.csv it merged: per model, scenario
and batch size decode tok/s, MBU, latency, J/token and the memory counters; the calibration against the profile's
datasheet. Usage: python tests/gpu/key_figures.py SUMMARY_CSV"""

import csv
import sys
from pathlib import Path

from harness.profiles import get_profile
from harness.results.console import table

# summary.csv's column, and its title here.
FIGURES = {"decode_tok_s": "decode_tok/s", "mbu": "mbu", "mbu_calibrated": "mbu_cal", "ttft_ms": "ttft_ms",
           "tpot_ms": "tpot_ms", "j_per_tok": "J/tok", "weights_mib": "weights_MiB", "kv_cache_mib": "kv_MiB",
           "peak_allocated_mib": "allocated_MiB", "peak_reserved_mib": "reserved_MiB", "peak_device_mib": "device_MiB"}


def number(text: str) -> str:
    return f"{float(text):.4g}" if text else "-"


def calibration(line: dict) -> str:
    """The calibrated copy bandwidth and matmul rate, each as a share of the profile's datasheet figure."""
    profile = get_profile(line["profile"]) if line["profile"] else None
    parts = []
    for column, sheet, unit in (("calibrated_bandwidth_gbps", profile and profile.memory_bandwidth_gbps, "GB/s"),
                                ("calibrated_tflops", profile and profile.peak_tflops(line["dtype"]), "TFLOP/s")):
        value = float(line[column]) if line[column] else None
        share = f" = {value / sheet:.3f} of the datasheet's {sheet:g}" if value and sheet else ""
        parts.append(f"{number(line[column])} {unit}{share}")
    return (f"calibration on {line['device_name']} (profile {line['profile'] or 'none'}, {line['dtype']}): copy "
            f"{parts[0]}; matmul {parts[1]}")


def main(summary: Path) -> int:
    with summary.open(newline="") as handle:
        lines = list(csv.DictReader(handle))
    speed = [line for line in lines if line["decode_tok_s"]]
    if speed:
        print(table(["model", "scenario", "batch", *FIGURES.values()],
                    [[line["model"], line["scenario"], line["batch_size"], *(number(line[c]) for c in FIGURES)]
                     for line in speed], right=("batch", *FIGURES.values())))
        print(calibration(speed[0]))
    failed = [f"{line['model']} {line['scenario']}: {line['error']}" for line in lines if line["status"] != "ok"]
    for problem in failed:
        print(f"failed: {problem}")
    return 1 if failed or not speed else 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
