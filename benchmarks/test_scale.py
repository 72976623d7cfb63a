"""Merge and the leaderboard over 1,000,000 rows from 1,000 run folders: target at most 30 s and 2 GB RSS each.

The rows are a real quick-suite run's on tiny-dense, repeated (each run folder has its own run id, each copy of a
cell its own cell id, values jittered), so they have the fields, lists and types real rows have. Each command runs
in a fresh process, as a user runs it; its peak RSS is the kernel's high-water mark of that process.

    .venv/bin/pip install -e ".[benchmarks]" && .venv/bin/python -m pytest benchmarks/test_scale.py -s
"""

import json
import os
import random
import subprocess
import sys
import time

import pytest
from conftest import ROOT, report

RUNS = int(os.environ.get("BENCH_SCALE_RUNS", "1000"))
ROWS_PER_RUN = 1000
TARGET_S, TARGET_GIB = 30.0, 2.0


@pytest.fixture(scope="module")
def many_runs(real_run, tmp_path_factory):
    lines = [json.loads(line) for line in (real_run / "rows.jsonl").read_text().splitlines()]
    environment = next(line for line in lines if line.get("record") == "environment")
    rows = [line for line in lines if "record" not in line]
    root = tmp_path_factory.mktemp("many-runs")
    rng = random.Random(0)
    for number in range(RUNS):
        folder = root / f"run-{number:04d}"
        folder.mkdir()
        out = [json.dumps(environment)]
        for index in range(ROWS_PER_RUN):
            row = dict(rows[index % len(rows)])
            row["run_id"], row["cell_id"] = f"run-{number:04d}", f"{row['cell_id']}#{index // len(rows)}"
            if isinstance(row["value"], float):
                row["value"] *= rng.uniform(0.9, 1.1)
            out.append(json.dumps(row))
        (folder / "rows.jsonl").write_text("\n".join(out) + "\n")
    return root


def _timed(*args: str) -> tuple[float, float]:
    """Seconds and peak RSS (GiB, that process's own high-water mark, from wait4) of `bench ARGS`."""
    start = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "harness", *args], cwd=ROOT, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    assert process.returncode == 0, f"bench {' '.join(args)} exited {process.returncode}"
    return seconds, usage.ru_maxrss / 2**20


@pytest.mark.parametrize("command", ["merge", "leaderboard"])
def test_scale(benchmark, command, many_runs, tmp_path):
    args = {"merge": ["merge", str(many_runs), "--out", str(tmp_path / "merged")],
            "leaderboard": ["leaderboard", "build", str(many_runs), "--out", str(tmp_path / "board")]}[command]
    seconds, gib = benchmark.pedantic(_timed, args=args, rounds=1, iterations=1)
    benchmark.extra_info.update(rows=RUNS * ROWS_PER_RUN, seconds=seconds, peak_rss_gib=gib)
    report(f"{command} of {RUNS * ROWS_PER_RUN} rows, wall time", seconds, TARGET_S, "s", "lower")
    report(f"{command} of {RUNS * ROWS_PER_RUN} rows, peak RSS", gib, TARGET_GIB, "GiB", "lower")
