"""Cells of one model share a worker, which loads the model once (harness/worker.py), on real runs of tiny-dense:
the rows say which cells reused the model, the resident-memory peak starts again for each cell, a failed cell's
successor starts in a fresh worker, and --isolate-cells gives every cell its own."""

import types

import pytest
import yaml

from harness.cli import main
from harness.measure.memory import can_reset_peak_rss
from harness.results.store import read_jsonl, read_rows
from harness.worker import shares_worker

SMALL = {"name": "latency", "prompt_tokens": 16, "output_tokens": 4}
# 32 prompts of 512 tokens: a resident peak some 200 MiB above the small cells' on tiny-dense.
BIG = {"name": "throughput", "prompt_tokens": 512, "output_tokens": 2, "batch_sizes": [32]}


def run(tmp_path, name: str, scenarios: list, *options: str) -> tuple[int, list[dict]]:
    suite = tmp_path / f"{name}.yaml"
    suite.write_text(yaml.safe_dump({"name": name, "models": ["tiny-dense"], "device": "cpu", "scenarios": scenarios,
                                     "measure": {"warmup": 0, "repetitions": 2}}))
    out = tmp_path / name
    code = main(["run", "--suite", str(suite), "--out", str(out), "--no-progress", *options])
    return code, read_rows(out / "rows.jsonl")


def per_cell(rows: list[dict], field: str) -> list:
    """`field` of each cell's first row, cells in the order they ran."""
    firsts = {}
    for row in rows:
        firsts.setdefault(row["cell_id"], row.get(field))
    return list(firsts.values())


def peaks(rows: list[dict]) -> list[float]:
    return [row["value"] for row in rows if row["metric"] == "peak_rss_mib"]


def test_a_cell_shares_its_worker_unless_isolated_or_its_scenario_changes_the_process():
    def cell(scenario: str, isolate: bool = False):
        return types.SimpleNamespace(isolate=isolate, scenario=types.SimpleNamespace(name=scenario))

    assert shares_worker(cell("latency")) is can_reset_peak_rss()
    assert not shares_worker(cell("latency", isolate=True))
    assert not shares_worker(cell("find_max"))  # it lowers the process's address-space limit


@pytest.mark.slow
@pytest.mark.skipif(not can_reset_peak_rss(), reason="needs /proc/self/clear_refs (Linux) to reset the peak")
def test_a_models_cells_load_it_once_and_each_cell_has_its_own_peak(tmp_path, tiny_dense):
    scenarios = [SMALL, BIG, {**SMALL, "prompt_tokens": 17}]
    shared_code, shared = run(tmp_path, "shared", scenarios)
    isolated_code, isolated = run(tmp_path, "isolated", scenarios, "--isolate-cells")
    assert shared_code == isolated_code == 0
    assert per_cell(shared, "model_reused") == [False, True, True]
    assert per_cell(isolated, "model_reused") == [False, False, False]
    assert sorted((r["cell_id"], r["metric"]) for r in shared) == sorted((r["cell_id"], r["metric"]) for r in isolated)
    small, big, small_after_big = peaks(shared)
    # The kernel's high-water mark only rises: without the reset the last cell would say the big cell's peak.
    assert small_after_big < 0.85 * big
    # What earlier cells leave in the allocators (freed heap that glibc keeps, oneDNN's kernels per shape) is not in
    # a forked cell's process: the reset alone left 1-7% here.
    assert small_after_big == pytest.approx(peaks(isolated)[2], rel=0.01)


@pytest.mark.slow
def test_after_a_failed_cell_the_next_one_starts_in_a_fresh_worker(tmp_path, tiny_dense):
    # Under a 1536 MiB address-space limit, 256 prompts of 4000 tokens cannot be held.
    too_big = {"name": "throughput", "prompt_tokens": 4000, "output_tokens": 2, "batch_sizes": [256]}
    code, rows = run(tmp_path, "failing", [SMALL, too_big, {**SMALL, "prompt_tokens": 17}], "--memory-limit", "1536")
    assert code == 1
    records = read_jsonl(tmp_path / "failing" / "cells.jsonl")
    assert [r["status"] for r in records] == ["ok", "failed", "ok"]
    failed = [row for row in rows if row["status"] != "ok"]
    assert len(failed) == 1 and failed[0]["error"].startswith("out of memory: ")
    last = [row for row in rows if row["cell_id"] == records[2]["cell_id"]]
    assert {row["model_reused"] for row in last} == {False}
    assert any(row["metric"] == "decode_tok_s" and row["value"] > 0 for row in last)
