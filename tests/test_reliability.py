"""Faults injected for real into real `bench run`s on the tiny models: a raising, crashing, hanging or out-of-memory
cell; kill -9 of the whole run at seeded random moments, then --resume; two runs on one folder; code and pickles
that a model ships. Each fault must leave a failed row with its reason (or a complete run after resume), the rest
of the suite intact, and nothing written before harmed."""

import collections
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from harness.cli import main
from harness.results.store import read_jsonl, read_rows

pytestmark = pytest.mark.slow

# A model whose shipped Python code does what its config says while the model is built: the way a stranger's code
# reaches the machine, used here to inject faults into a real worker.
FAULTY_CODE = '''\
import ctypes
import time

from transformers import LlamaConfig, LlamaForCausalLM


class FaultyConfig(LlamaConfig):
    model_type = "faulty"


class FaultyModel(LlamaForCausalLM):
    config_class = FaultyConfig

    def __init__(self, config):
        open(config.marker, "w").write("the model's code ran")
        if config.fault == "raise":
            raise RuntimeError("injected fault")
        if config.fault == "segfault":
            ctypes.string_at(0)
        if config.fault == "hang":
            time.sleep(3600)
        super().__init__(config)

    def forward(self, *args, **kwargs):
        if self.config.fault == "segfault_measuring":  # after the load: in the cell's own process, forked from it
            ctypes.string_at(0)
        return super().forward(*args, **kwargs)
'''


def faulty_model(tmp_path: Path, tiny_dense, fault: str) -> Path:
    folder = tmp_path / f"faulty-{fault}"
    folder.mkdir()
    for name in ("model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny_dense.path / name, folder)
    config = json.loads((tiny_dense.path / "config.json").read_text())
    config.update(model_type="faulty", architectures=["FaultyModel"], fault=fault, marker=str(folder / "ran"),
                  auto_map={"AutoConfig": "faulty.FaultyConfig", "AutoModelForCausalLM": "faulty.FaultyModel"})
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "faulty.py").write_text(FAULTY_CODE)
    return folder


def write_suite(path: Path, models: list, scenarios: list, **extra) -> Path:
    path.write_text(yaml.safe_dump({"name": "reliability", "models": models, "scenarios": scenarios, "device": "cpu",
                                    "measure": {"warmup": 0, "repetitions": 2}, **extra}))
    return path


def bench(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "harness", "run", *args, "--no-progress"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


# A `bench run` of these suites takes seconds (about 20 s for the kill suite here); one still running after this long
# hangs. Once killed, its output pipes close within seconds, unless a worker of it outlives it and holds them.
RUN_TIMEOUT_S = 300
AFTER_KILL_S = 60


def kill(run: subprocess.Popen) -> tuple[str, str]:
    """SIGKILL to the run; what it printed."""
    run.send_signal(signal.SIGKILL)
    try:
        return run.communicate(timeout=AFTER_KILL_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{run.args}: killed, but its output is still open after {AFTER_KILL_S} s (a worker outliving it?)")


def finish(run: subprocess.Popen, timeout_s: float = RUN_TIMEOUT_S) -> tuple[str, str]:
    """What the run printed once it ends. One that has not ended after `timeout_s` is killed and fails the test,
    with the end of what it printed."""
    try:
        return run.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        _, err = kill(run)
        pytest.fail(f"{run.args}: still running after {timeout_s} s, killed; its stderr ends:\n{err[-3000:]}")


def by_model(out: Path) -> dict:
    rows = collections.defaultdict(list)
    for row in read_rows(out / "rows.jsonl"):
        rows[row["model"]].append(row)
    return rows


SMALL_LATENCY = {"name": "latency", "prompt_tokens": 16, "output_tokens": 4}


def test_exception_segfault_hang_and_out_of_memory_each_fail_one_cell_and_the_suite_goes_on(tmp_path, tiny_dense):
    faults = ("raise", "segfault", "hang", "segfault_measuring")
    models = {fault: faulty_model(tmp_path, tiny_dense, fault) for fault in faults}
    # Under the worker's address-space limit, 256 prompts of 4000 tokens cannot be held; one prompt of 16 can.
    too_big = {"name": "throughput", "prompt_tokens": 4000, "output_tokens": 2, "batch_sizes": [256],
               "models": ["tiny-dense"]}
    suite = write_suite(tmp_path / "suite.yaml", [*map(str, models.values()), "tiny-dense"],
                        [SMALL_LATENCY, too_big], cell_timeout_s=45)
    out = tmp_path / "run"
    trust = [arg for folder in models.values() for arg in ("--trust-remote-code", str(folder))]
    assert main(["run", "--suite", str(suite), "--out", str(out), "--memory-limit", "1536", *trust,
                 "--no-progress"]) == 1
    rows = by_model(out)
    [raised], [crashed], [hung] = (rows[str(models[fault])] for fault in faults[:3])
    assert raised["status"] == "failed" and raised["error"] == "RuntimeError: injected fault"
    assert crashed["status"] == "failed" and crashed["error"].startswith("worker died (signal 11 (SIGSEGV))")
    # The calibration's rows came before the crash; the cell's measured ones never did.
    [crashed_measuring] = [r for r in rows[str(models["segfault_measuring"])] if r["status"] != "ok"]
    assert crashed_measuring["error"].startswith("the cell's process died (signal 11 (SIGSEGV))")
    assert hung["status"] == "failed" and hung["error"].startswith("timeout")
    assert all((folder / "ran").exists() for folder in models.values())  # each fault happened where it was put
    tiny = rows["tiny-dense"]
    # (Calibration figures come first in every cell: the throughput cell's measured figures must be missing.)
    assert {r["scenario"] for r in tiny if r["metric"] == "decode_tok_s" and r["value"] > 0} == {"latency"}
    [oom] = [r for r in tiny if r["status"] != "ok"]
    assert oom["scenario"] == "throughput" and oom["error"].startswith("out of memory: "), oom["error"]
    records = read_jsonl(out / "cells.jsonl")
    assert sorted(r["status"] for r in records) == ["failed"] * 5 + ["ok"]


def test_model_code_runs_only_for_the_model_named_with_trust_remote_code(tmp_path, tiny_dense):
    folder = faulty_model(tmp_path, tiny_dense, "none")
    suite = write_suite(tmp_path / "suite.yaml", [str(folder)], [SMALL_LATENCY])
    assert main(["run", "--suite", str(suite), "--out", str(tmp_path / "refused"), "--no-progress"]) == 1
    [row] = read_rows(tmp_path / "refused" / "rows.jsonl")
    assert row["status"] == "failed" and "not run without --trust-remote-code" in row["error"]
    assert not (folder / "ran").exists()  # refused before a line of it ran
    assert main(["run", "--suite", str(suite), "--out", str(tmp_path / "trusted"), "--trust-remote-code",
                 str(folder), "--no-progress"]) == 0
    assert (folder / "ran").exists()
    assert main(["run", "--suite", str(suite), "--out", str(tmp_path / "other"), "--trust-remote-code",
                 "tiny-dense", "--no-progress"]) == 2  # trust is for a model of the run, by name


def test_pickle_weights_are_refused_unless_allowed(tmp_path, tiny_dense):
    import torch
    from safetensors.torch import load_file

    folder = tmp_path / "pickled"
    folder.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny_dense.path / name, folder)
    torch.save(load_file(tiny_dense.path / "model.safetensors"), folder / "pytorch_model.bin")
    suite = write_suite(tmp_path / "suite.yaml", [str(folder)], [SMALL_LATENCY])
    assert main(["run", "--suite", str(suite), "--out", str(tmp_path / "refused"), "--no-progress"]) == 1
    [row] = read_rows(tmp_path / "refused" / "rows.jsonl")
    assert row["status"] == "failed" and "pickle" in row["error"] and "pytorch_model.bin" in row["error"]
    assert not (tmp_path / "refused" / "logs" / "cell-000.log").exists()  # refused before any worker started
    assert main(["run", "--suite", str(suite), "--out", str(tmp_path / "allowed"), "--allow-pickle",
                 "--no-progress"]) == 0


def test_workers_are_offline_unless_online_and_the_fingerprint_says_so(tmp_path, tiny_dense):
    suite = write_suite(tmp_path / "suite.yaml", ["tiny-dense"], [SMALL_LATENCY])
    assert main(["run", "--suite", str(suite), "--out", str(tmp_path / "run"), "--no-progress"]) == 0
    rows = read_rows(tmp_path / "run" / "rows.jsonl")
    assert rows and all(row["fingerprint"]["online"] is False for row in rows)
    from harness.worker import quiet_worker_environment

    environment = dict(os.environ)
    try:
        os.environ.pop("HF_HUB_OFFLINE", None)
        quiet_worker_environment(online=False)
        assert os.environ["HF_HUB_OFFLINE"] == "1" and os.environ["TRANSFORMERS_OFFLINE"] == "1"
    finally:
        os.environ.clear()
        os.environ.update(environment)


def test_a_second_run_on_the_same_folder_is_stopped_and_harms_nothing(tmp_path, tiny_dense):
    suite = write_suite(tmp_path / "suite.yaml", ["tiny-dense"], [SMALL_LATENCY])
    out = tmp_path / "run"
    first = bench("--suite", str(suite), "--out", str(out))
    lock, deadline = out / ".lock", time.monotonic() + RUN_TIMEOUT_S
    while first.poll() is None and not (lock.exists() and lock.read_text() == str(first.pid)):
        if time.monotonic() > deadline:
            kill(first)
            pytest.fail(f"the first run took no lock in {RUN_TIMEOUT_S} s")
        time.sleep(0.05)
    second = bench("--suite", str(suite), "--out", str(out))
    _, err = finish(second)
    assert second.returncode == 2
    assert err.splitlines()[0] == f"bench: error: run folder {out} is in use by another bench run (pid {first.pid})"
    finish(first)
    assert first.returncode == 0
    before = (out / "rows.jsonl").read_bytes()
    assert main(["run", "--suite", str(suite), "--out", str(out), "--no-progress"]) == 2  # it already holds a run
    assert (out / "rows.jsonl").read_bytes() == before


KILL_SUITE = [
    {"name": "latency", "prompt_tokens": 16, "output_tokens": 8},
    {"name": "throughput", "prompt_tokens": 8, "output_tokens": 4, "batch_sizes": [1, 2]},
    {"name": "latency", "prompt_tokens": 32, "output_tokens": 4},
]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, tiny_dense):
    """The kill suite run once without interruption: its figures and how long it took."""
    folder = tmp_path_factory.mktemp("uninterrupted")
    suite = write_suite(folder / "suite.yaml", ["tiny-dense"], KILL_SUITE)
    started = time.monotonic()
    run = bench("--suite", str(suite), "--out", str(folder / "run"))
    finish(run)
    assert run.returncode == 0
    return suite, figures(folder / "run"), time.monotonic() - started


def figures(out: Path) -> collections.Counter:
    return collections.Counter((r["cell_id"], r["metric"], json.dumps(r["params"], sort_keys=True))
                               for r in read_rows(out / "rows.jsonl"))


def resume_or_start(suite: Path, out: Path) -> tuple[subprocess.Popen, bool]:
    """--resume where the killed run recorded its plan (resolved_config.yaml); a fresh run where it was killed before
    (then the folder holds no rows, and `bench run --out` takes it again)."""
    resuming = (out / "resolved_config.yaml").exists()
    return (bench("--resume", str(out)) if resuming else bench("--suite", str(suite), "--out", str(out))), resuming


# Three seeded rounds by default; BENCH_KILL_SEEDS=40 runs forty (for a soak, not for every commit).
@pytest.mark.parametrize("seed", range(1, 1 + int(os.environ.get("BENCH_KILL_SEEDS", "3"))))
def test_kill_9_at_random_moments_then_resume_loses_and_duplicates_nothing(tmp_path, uninterrupted, seed):
    suite, expected, wall_s = uninterrupted
    out, rng = tmp_path / "run", random.Random(seed)
    kills = resumes = 0
    for _ in range(3):
        run, resuming = resume_or_start(suite, out)
        resumes += resuming
        try:
            # Within the first 60% of an uninterrupted run's time: a fresh run is always cut, a resumed one may end.
            _, err = run.communicate(timeout=rng.uniform(0, 0.6 * wall_s))
            break  # it finished before its moment came
        except subprocess.TimeoutExpired:
            _, err = kill(run)
            kills += 1
        if (out / "rows.jsonl").exists():  # every row written before the kill reads back; at most the last is torn
            bad = []
            read_rows(out / "rows.jsonl", on_bad_line=bad.append)
            lines = (out / "rows.jsonl").read_text().count("\n")
            assert not bad or (len(bad) == 1 and bad[0].startswith(f"{out / 'rows.jsonl'}:{lines + 1}:"))
    if run.returncode != 0:
        run, resuming = resume_or_start(suite, out)
        resumes += resuming
        _, err = finish(run)
    assert run.returncode == 0, err
    got = figures(out)
    lost, duplicated = expected - got, [k for k, n in got.items() if n > 1]
    print(f"seed {seed}: {kills} kills at random moments, {resumes} resumes, {sum(lost.values())} lost rows, "
          f"{len(duplicated)} duplicated rows")
    assert kills >= 1 and not lost and not duplicated and set(got) == set(expected)
    cells = [r["cell_id"] for r in read_jsonl(out / "cells.jsonl")]
    assert sorted(cells) == sorted(yaml.safe_load((out / "resolved_config.yaml").read_text())["cells"])
    assert len(set(cells)) == len(cells) == len(KILL_SUITE)


def test_find_max_records_the_largest_that_fits_and_the_first_that_failed(tmp_path, tiny_dense, capsys):
    out = tmp_path / "run"
    search = {"name": "find_max", "prompt_tokens": 1024, "output_tokens": 2, "max_prompt_tokens": 256}
    suite = write_suite(tmp_path / "suite.yaml", ["tiny-dense"], [search])
    # fp32: on CPUs with native bf16, auto picks bf16, whose oneDNN matmuls keep address space across trials, so
    # under an address-space limit later, smaller trials can fail after larger ones passed (seen here).
    assert main(["run", "--suite", str(suite), "--memory-limit", "1536", "--dtype", "fp32", "--out", str(out),
                 "--no-progress"]) == 0
    printed = capsys.readouterr().out
    rows = {row["metric"]: row for row in read_rows(out / "rows.jsonl") if row["metric"].startswith("max_")}
    batch, prompt = rows["max_batch_size"], rows["max_prompt_tokens"]
    assert batch["stats"]["memory_limit_mib"] == 1536 and batch["params"]["prompt_tokens"] == 1024
    # The limit was reached and the search closed the gap: the first failure is the next size up.
    assert batch["stats"]["first_failed"] == batch["value"] + 1 and batch["value"] >= 1, batch
    # One prompt of up to 256 tokens fits: the ceiling, and nothing failed.
    assert prompt["value"] == 256 and prompt["stats"]["first_failed"] is None
    # The answer is in summary.csv and in the table printed (the registry's columns).
    import csv

    with open(out / "summary.csv", newline="") as handle:
        [line] = list(csv.DictReader(handle))
    assert int(line["max_batch_size"]) == batch["value"] and line["max_prompt_tokens"] == "256"
    lines = printed.splitlines()
    top = next(i for i, text in enumerate(lines) if text.startswith("model "))
    header, body = lines[top], lines[top + 2]
    assert "max_batch" in header and "max_prompt" in header and f" {int(batch['value'])} " in body and " 256 " in body


def test_refused_allocations_count_as_out_of_memory_and_other_errors_do_not():
    from harness.measure.memory import is_out_of_memory

    refused = [MemoryError(), RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 2516"),
               RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"),
               RuntimeError("could not create a primitive")]
    assert all(map(is_out_of_memory, refused))
    assert not any(map(is_out_of_memory, [RuntimeError("mat1 and mat2 shapes cannot be multiplied"), ValueError("x")]))
