"""Cloze MMLU (answer texts as the choices) scored by bench against lm-evaluation-harness on the same questions,
weights and dtype (fp32): bench's scoring time over lm-eval's simple_evaluate at batch 1, target at most 0.5 (the
four answers of a question share its context's forward pass). Runs benchmarks/lm_eval_parity.py, which also checks
that both sides send the same requests and pick the same answers, interleaved (lm-eval, bench, ...).

    python3 -m venv /work/lmeval-venv && /work/lmeval-venv/bin/pip install torch==2.13.0 lm-eval
    .venv/bin/python -m pytest benchmarks/test_cloze_vs_lm_eval.py -s
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, report

LM_EVAL_PYTHON = os.environ.get("BENCH_LM_EVAL_PYTHON", "/work/lmeval-venv/bin/python")
TARGET = 0.5


def test_cloze_scoring_time_over_lm_eval(benchmark):
    if not Path(LM_EVAL_PYTHON).exists():
        pytest.skip(f"no lm-eval at {LM_EVAL_PYTHON} (set BENCH_LM_EVAL_PYTHON; the docstring says how to make one)")
    command = [sys.executable, "benchmarks/lm_eval_parity.py", "--task", "mmlu_cloze", "--limit", "200",
               "--rounds", "2", "--batch-sizes", "1", "--dtype", "fp32", "--lm-eval-python", LM_EVAL_PYTHON]
    done = benchmark.pedantic(subprocess.run, args=(command,), kwargs={"cwd": ROOT, "capture_output": True,
                                                                       "text": True}, rounds=1, iterations=1)
    print(done.stdout)
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    ratio = float(re.search(r"bs 1 +scoring / simple_evaluate ([\d.]+)", done.stdout)[1])
    benchmark.extra_info.update(ratio=ratio)
    report("cloze MMLU scoring, bench / lm-eval simple_evaluate (batch 1)", ratio, TARGET, "", "lower")
