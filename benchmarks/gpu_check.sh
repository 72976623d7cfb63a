#!/usr/bin/env bash
# The GPU path, proven: bench's CUDA tests (tests/gpu, `pytest -m gpu`) on this machine's GPU, the rows of the runs
# they make merged into OUT_DIR, and the key figures printed. Made to end within 8 minutes on an H200, so that it can
# run twice in 15 minutes of a lent machine, its start included. See benchmarks/README.md.
#
# Usage: benchmarks/gpu_check.sh OUT_DIR
#
# Writes in OUT_DIR: pytest.log; rows.jsonl, rows.parquet, summary.csv, summary.parquet (`bench merge` of every run
# the tests made); key_figures.txt. Exit status: pytest's (0 when every gpu test passed; 124 when they ran out of
# time), 3 when a Python module bench needs is missing, 4 when torch sees no CUDA device.
#
# bench runs from this checkout (PYTHONPATH) on the machine's own torch, since pip cannot fetch the pinned torch
# there, nor anything else offline. Modules a GPU image may lack (on the H200 image: pydantic and pydantic-core,
# annotated-types and typing-inspection, which they need, a typing-extensions as new as pydantic asks for, and
# platformdirs) travel as wheels in wheels/gpu/ (git-ignored; carry it to the machine), installed here into
# $BENCH_GPU_WORK/site, ahead of the machine's own. To make them, online, in the repository root (versions: those
# of a working venv; pydantic pins its pydantic-core):
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d wheels/gpu \
#     pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 \
#     typing-extensions==4.16.0 platformdirs==4.14.9
#
# Environment: PYTHON (default python3); BENCH_GPU_WORK (default /tmp/bench-gpu): the bench cache, with the built
# model and the calibration, and the tests' run folders, on local disk and kept out of OUT_DIR (a lent machine
# returns at most 8 files); BENCH_GPU_BUDGET_S (default 470): seconds for all of it, the tests getting what the
# build left; BENCH_GPU_TESTS (default "tests/gpu tests/test_energy.py"): where the `gpu`-marked tests are.
set -euo pipefail

if [[ $# -ne 1 ]]; then
  echo "usage: $0 OUT_DIR" >&2
  exit 2
fi
mkdir -p "$1"
OUT_DIR=$(cd "$1" && pwd)
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
PYTHON=${PYTHON:-python3}
WORK=${BENCH_GPU_WORK:-/tmp/bench-gpu}
BUDGET_S=${BENCH_GPU_BUDGET_S:-470}
export BENCH_CACHE="$WORK/cache" BENCH_GPU_OUT="$WORK/runs"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
rm -rf "$BENCH_GPU_OUT"
mkdir -p "$BENCH_GPU_OUT" "$BENCH_CACHE"

step() { printf '\n== %s (%d s in)\n' "$1" "$SECONDS"; }

step "Python modules"
if compgen -G "wheels/gpu/*.whl" >/dev/null; then
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$WORK/site" \
    wheels/gpu/*.whl
  export PYTHONPATH="$WORK/site:$ROOT${PYTHONPATH:+:$PYTHONPATH}"
else
  export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
fi
# What bench imports at run time (pyproject.toml's dependencies, gguf and plotly aside: neither is used here), and
# what the tests import; each as its pip name.
missing=$("$PYTHON" - <<'PY'
import importlib

NEEDED = {"pydantic": "pydantic", "pydantic_core": "pydantic-core", "annotated_types": "annotated-types",
          "typing_inspection": "typing-inspection", "platformdirs": "platformdirs", "yaml": "pyyaml",
          "psutil": "psutil", "numpy": "numpy", "scipy": "scipy", "rich": "rich", "typer": "typer", "httpx": "httpx",
          "pandas": "pandas", "pyarrow": "pyarrow", "torch": "torch", "transformers": "transformers",
          "accelerate": "accelerate", "safetensors": "safetensors", "tokenizers": "tokenizers",
          "huggingface_hub": "huggingface-hub", "pynvml": "nvidia-ml-py", "pytest": "pytest"}
missing = []
for module, package in NEEDED.items():
    try:
        importlib.import_module(module)
    except Exception as exc:  # absent, or present and broken (a version another module refuses)
        missing.append(f"{package} ({type(exc).__name__})")
print(", ".join(missing))
PY
)
if [[ -n $missing ]]; then
  echo "gpu_check: missing Python modules: $missing; bring their wheels in wheels/gpu/ (see this script's head)"
  exit 3
fi
"$PYTHON" - <<'PY' || exit 4
import sys

import torch
import transformers

print(f"torch {torch.__version__} (CUDA {torch.version.cuda}), transformers {transformers.__version__}")
if not torch.cuda.is_available():  # the tests would all skip: nothing would be proven
    sys.exit("gpu_check: torch sees no CUDA device here, so there is nothing to check")
PY
if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=name,memory.total,driver_version,power.limit --format=csv,noheader
fi

step "building llama3.1-8b-shape (random weights, on the CPU; once per bench cache)"
started=$SECONDS
"$PYTHON" -m harness models pull llama3.1-8b-shape
build_s=$((SECONDS - started))
echo "built or found in $build_s s"

tests_s=$((BUDGET_S - SECONDS - 20))  # 20 s kept for the merge and the figures
if ((tests_s < 240)); then
  tests_s=240
fi
step "gpu tests (at most $tests_s s)"
set +e
# Past the time, SIGINT: pytest stops as at Ctrl-C and writes its summary (a test's `bench run` in progress ends
# as interrupted instead, and the tests after it go on); whatever is left 30 s later is killed.
read -r -a test_paths <<<"${BENCH_GPU_TESTS:-tests/gpu tests/test_energy.py}"
timeout --signal=INT --kill-after=30 "$tests_s" \
  "$PYTHON" -m pytest "${test_paths[@]}" -m gpu -v -s -rs -p no:cacheprovider 2>&1 | tee "$OUT_DIR/pytest.log"
tests=${PIPESTATUS[0]}
set -e

step "rows"
{
  echo "llama3.1-8b-shape build: $build_s s; gpu tests: exit $tests"
  grep '^gpu-check: ' "$OUT_DIR/pytest.log" || true
  if compgen -G "$BENCH_GPU_OUT/*/rows.jsonl" >/dev/null; then
    "$PYTHON" -m harness merge "$BENCH_GPU_OUT" --out "$OUT_DIR" || echo "gpu_check: bench merge failed"
    "$PYTHON" tests/gpu/key_figures.py "$OUT_DIR/summary.csv" || echo "gpu_check: some cells failed or none ran"
  else
    echo "no run folder under $BENCH_GPU_OUT: no rows"
  fi
  echo "total: $SECONDS s"
} 2>&1 | tee "$OUT_DIR/key_figures.txt"
exit "$tests"
