"""`bench run` end to end on real tiny models: files on disk, failed cells as rows, the suite going on."""

import csv
import json
import math
import subprocess
import sys

import pytest
import yaml

from harness.cli import main
from harness.hardware import auto_dtype
from harness.results.store import read_rows

pytestmark = pytest.mark.slow

REQUIRED_COLUMNS = ("run_id model backend device dtype task scenario batch_size prompt_tokens output_tokens ttft_ms "
                    "tpot_ms prefill_tok_s decode_tok_s peak_rss_mib accuracy status").split()


def write_suite(tmp_path, models, scenarios=None, timeout=600):
    scenarios = scenarios or [
        {"name": "latency", "prompt_tokens": 16, "output_tokens": 8},
        {"name": "throughput", "prompt_tokens": 8, "output_tokens": 4, "batch_sizes": [1, 2]},
        {"name": "quality", "limit": 8},
    ]
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump({
        "name": "test", "models": models, "scenarios": scenarios, "device": "cpu",
        "measure": {"warmup": 0, "repetitions": 2}, "cell_timeout_s": timeout,
    }))
    return path


def read_summary(run_dir):
    with open(run_dir / "summary.csv") as handle:
        return list(csv.DictReader(handle))


def test_cli_run_on_a_tiny_model_writes_positive_finite_figures(tmp_path, tiny_dense, capsys):
    out = tmp_path / "run"
    assert main(["run", "--suite", str(write_suite(tmp_path, ["tiny-dense"])), "--out", str(out),
                 "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "decode_tok/s" in printed and "wall time:" in printed
    config = yaml.safe_load((out / "resolved_config.yaml").read_text())
    assert config["suite"]["models"] == ["tiny-dense"] and len(config["cells"]) == 3
    lines = [json.loads(line) for line in (out / "rows.jsonl").read_text().splitlines()]
    # The fingerprint is stored once; the reader gives it back to every row.
    assert [line.get("record") for line in lines].count("environment") == 1 and "fingerprint" not in lines[1]
    rows = read_rows(out / "rows.jsonl")
    assert len(rows) == len(lines) - 1 and all(row["status"] == "ok" for row in rows)
    assert all(row["fingerprint"]["python"] and row["fingerprint"]["torch"] for row in rows)
    summary = read_summary(out)
    assert set(REQUIRED_COLUMNS) <= set(summary[0])
    assert [(r["scenario"], r["batch_size"]) for r in summary] == [
        ("latency", "1"), ("throughput", "1"), ("throughput", "2"), ("quality", "")]
    for row in summary[:3]:
        assert row["status"] == "ok" and row["dtype"] == auto_dtype("cpu") and row["device"] == "cpu"
        for column in ("ttft_ms", "tpot_ms", "prefill_tok_s", "decode_tok_s", "peak_rss_mib"):
            value = float(row[column])
            assert math.isfinite(value) and value > 0, (column, row[column])
    accuracy = float(summary[3]["accuracy"])
    assert 0 <= accuracy <= 1 and summary[3]["task"] == "mmlu"


def test_progress_off_a_terminal_is_one_plain_line_per_cell(tmp_path, tiny_dense):
    suite = write_suite(tmp_path, ["tiny-dense"], [{"name": "latency", "prompt_tokens": 8, "output_tokens": 4},
                                                   {"name": "quality", "limit": 4}])
    done = subprocess.run([sys.executable, "-m", "harness", "run", "--suite", str(suite), "--out",
                           str(tmp_path / "run")], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "\r" not in done.stderr  # no bar redrawn in a log file
    cells = [line for line in done.stderr.splitlines() if line.startswith("cells ")]
    assert cells == ["cells 1/2: tiny-dense transformers latency", "cells 2/2: tiny-dense transformers quality"]


def test_a_failing_cell_becomes_a_failed_row_and_the_next_cell_runs(tmp_path, tiny_dense):
    no_weights = tmp_path / "no-weights"  # a valid config, but no weights: loading fails inside the worker
    no_weights.mkdir()
    (no_weights / "config.json").write_text((tiny_dense.path / "config.json").read_text())
    out = tmp_path / "run"
    scenarios = [{"name": "latency", "prompt_tokens": 8, "output_tokens": 4}]
    suite = write_suite(tmp_path, [str(no_weights), "tiny-dense"], scenarios)
    assert main(["run", "--suite", str(suite), "--out", str(out), "--no-progress"]) == 1
    failed, ok = read_summary(out)
    assert failed["status"] == "failed" and failed["model"] == str(no_weights)
    assert "error" in failed and failed["error"]
    assert ok["status"] == "ok" and float(ok["decode_tok_s"]) > 0
    assert (out / "logs" / "cell-000.log").read_text()  # the worker's traceback is kept in its log


def test_a_cell_past_its_timeout_is_killed_and_recorded(tmp_path, tiny_dense):
    out = tmp_path / "run"
    scenarios = [{"name": "latency", "prompt_tokens": 8, "output_tokens": 4}]
    suite = write_suite(tmp_path, ["tiny-dense"], scenarios, timeout=0.5)
    assert main(["run", "--suite", str(suite), "--out", str(out), "--no-progress"]) == 1
    [row] = read_summary(out)
    assert row["status"] == "failed" and row["error"].startswith("timeout")


def test_a_folder_that_is_not_a_model_fails_its_cells_without_a_worker(tmp_path, tiny_dense):
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "run"
    suite = write_suite(tmp_path, [str(empty)], [{"name": "latency"}])
    assert main(["run", "--suite", str(suite), "--out", str(out), "--no-progress"]) == 1
    [row] = read_summary(out)
    assert row["status"] == "failed" and "no config.json" in row["error"]


def test_unknown_model_alias_is_one_line_naming_the_known_ones(capsys):
    assert main(["run", "--model", "smollm3-9000", "--no-progress"]) == 2
    err = capsys.readouterr().err.splitlines()
    from harness.zoo import ALIASES

    assert err[0] == f"bench: error: unknown model 'smollm3-9000'; known: {', '.join(sorted(ALIASES))}"
    assert len(err) == 2 and err[1].startswith("hint:")

