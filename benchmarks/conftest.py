"""Shared parts of the benchmarks (a pytest-benchmark suite: `pytest benchmarks/`, not run by .ci/run)."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Benchmarks run for many minutes by design (the cloze comparison with lm-eval, two rounds of about 5 minutes each
# here): pyproject's per-test timeout is sized for tests/, so a benchmark not marked otherwise gets an hour.
BENCHMARK_TIMEOUT_S = 3600


def pytest_collection_modifyitems(items):
    for item in items:
        if item.path.is_relative_to(ROOT / "benchmarks") and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(BENCHMARK_TIMEOUT_S))


def bench(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """`bench ARGS` in a fresh process (what a user runs), its output captured; fails the benchmark if bench does."""
    done = subprocess.run([sys.executable, "-m", "harness", *args], cwd=cwd or ROOT, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
    assert done.returncode == 0, done.stdout
    return done


@pytest.fixture(scope="session")
def real_run(tmp_path_factory) -> Path:
    """A real quick-suite run on tiny-dense: the rows the scale benchmark multiplies."""
    out = tmp_path_factory.mktemp("real-run") / "run"
    bench("run", "--model", "tiny-dense", "--no-progress", "--out", str(out))
    return out


def report(name: str, figure: float, target: float, unit: str, better: str) -> str:
    """One printed line: the figure, its target and their ratio (figure over target), and whether it is met."""
    met = figure <= target if better == "lower" else figure >= target
    unit = f" {unit}" if unit else ""
    line = (f"{name}: {figure:.4g}{unit} (target {'at most' if better == 'lower' else 'at least'} {target:g}{unit}; "
            f"ratio {figure / target:.3f}) {'MET' if met else 'NOT MET'}")
    print(line)
    return line
