"""Expands a suite into cells (model x backend x task x scenario) and runs each cell in its own worker process.

A cell that raises, crashes, runs out of memory or overruns its timeout becomes a failed row, and the suite goes on.
The parent process alone writes rows.jsonl: the worker sends each row over a pipe as soon as it is measured.
"""

import datetime
import hashlib
import json
import multiprocessing
import os
import secrets
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path

from harness.config import MeasureSpec, ScenarioSpec, SuiteSpec
from harness.errors import BenchError, UnknownNameError
from harness.results.schema import failed_row
from harness.results.store import RowWriter, read_rows, write_yaml
from harness.results.tables import console_table, summary_rows, write_summary_csv


@dataclass(frozen=True)
class Cell:
    model: str
    model_path: str | None
    model_source: str | None
    model_revision: str | None
    backend: str
    scenario: ScenarioSpec
    device: str
    dtype: str
    measure: MeasureSpec
    timeout_s: float
    # Why the cell cannot run at all (its model or data could not be prepared); it becomes a failed row.
    unavailable: str | None = None

    @property
    def cell_id(self) -> str:
        params = json.dumps(self.scenario.params, sort_keys=True)
        digest = hashlib.sha256(params.encode()).hexdigest()[:8]
        return f"{self.model}|{self.backend}|{self.scenario.task[0]}|{self.scenario.name}|{digest}"

    def context(self, run_id: str, fingerprint: dict) -> dict:
        """The fields every row of this cell carries; the worker completes them with what the backend reports."""
        task, task_version = self.scenario.task
        return {
            "run_id": run_id, "cell_id": self.cell_id, "model": self.model, "model_source": self.model_source,
            "model_revision": self.model_revision, "backend": self.backend, "backend_version": None,
            "device": self.device, "device_name": None, "dtype": self.dtype, "task": task,
            "task_version": task_version, "scenario": self.scenario.name, "profile": None,
            "fingerprint": fingerprint,
        }


def new_run_id() -> str:
    return f"{datetime.datetime.now():%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"


def prepare_models(suite: SuiteSpec, online: bool) -> dict[str, object]:
    """Resolves every model of the suite to local weights (fetching or building them, with progress) before any cell
    runs. An unknown name stops the run; a model that cannot be had fails only its own cells."""
    from harness import zoo

    prepared: dict[str, object] = {}
    for name in suite.models:
        try:
            prepared[name] = zoo.resolve(name, online=online, progress=True)
        except UnknownNameError:
            raise
        except BenchError as exc:
            prepared[name] = exc
    return prepared


def prepare_data(suite: SuiteSpec) -> str | None:
    """Fetches the data that quality scenarios need; returns why it could not be had, or None."""
    if not any(s.name == "quality" for s in suite.scenarios):
        return None
    from harness.quality import mmlu

    try:
        mmlu.data_path(progress=True)
    except BenchError as exc:
        return exc.message
    return None


def expand(suite: SuiteSpec, models: dict[str, object], data_problem: str | None) -> list[Cell]:
    cells = []
    for model_name in suite.models:
        model = models[model_name]
        for backend in suite.backends:
            for scenario in suite.scenarios:
                problem = model.message if isinstance(model, BenchError) else None
                if problem is None and scenario.name == "quality":
                    problem = data_problem
                resolved = None if problem else model
                cells.append(Cell(
                    model=model_name,
                    model_path=str(resolved.path) if resolved else None,
                    model_source=resolved.source if resolved else None,
                    model_revision=resolved.revision if resolved else None,
                    backend=backend, scenario=scenario, device=suite.device, dtype=suite.dtype,
                    measure=suite.measure, timeout_s=suite.cell_timeout_s, unavailable=problem,
                ))
    return cells


def _quiet_worker_environment(online: bool) -> None:
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if not online:
        # Offline by default: a worker never reaches a hub unless the run was started with --online.
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["TRANSFORMERS_OFFLINE"] = "1"


def run_cell(cell: Cell, context: dict, emit) -> None:
    """Loads the cell's model, runs its scenario and emits its rows. Runs inside the worker process."""
    from harness.backends import BACKENDS
    from harness.measure.memory import peak_rss_mib
    from harness.measure.recorder import Recorder
    from harness.measure.stats import RepetitionPolicy
    from harness.scenarios import SCENARIOS

    backend = BACKENDS.get(cell.backend)()
    backend.load(Path(cell.model_path), cell.device, cell.dtype, {})
    info = backend.info()
    context = {**context, "backend_version": info.backend_version, "device": info.device,
               "device_name": info.device_name, "dtype": info.dtype, "backend_info": info.extra}
    policy = RepetitionPolicy(cell.measure.warmup, cell.measure.repetitions, cell.measure.min_seconds)
    recorder = Recorder(context, policy, emit)
    SCENARIOS.get(cell.scenario.name)(backend, cell.scenario.params, recorder)
    recorder.figure("weights_mib", [backend.memory()["weights_mib"]])
    backend.close()
    recorder.figure("peak_rss_mib", [peak_rss_mib()])


def _worker(cell: Cell, context: dict, conn, log_path: str, online: bool) -> None:
    # Everything the worker and its libraries print goes to the cell's log, keeping the console for the progress bar.
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    _quiet_worker_environment(online)
    try:
        run_cell(cell, context, lambda row: conn.send(("row", row)))
        conn.send(("done", None))
    except BaseException as exc:  # noqa: B036 - any failure of the cell must reach the parent as a row
        traceback.print_exc()
        message = exc.message if isinstance(exc, BenchError) else f"{type(exc).__name__}: {exc}"
        conn.send(("error", message.splitlines()[0] if message else type(exc).__name__))


def run_in_worker(cell: Cell, context: dict, on_row, log_path: Path, online: bool) -> str | None:
    """Runs one cell in a fresh process; returns None on success or why it failed."""
    mp = multiprocessing.get_context("spawn")
    receive, send = mp.Pipe(duplex=False)
    process = mp.Process(target=_worker, args=(cell, context, send, str(log_path), online), daemon=True)
    process.start()
    send.close()
    deadline = time.monotonic() + cell.timeout_s
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return f"timeout: the cell ran past its limit of {cell.timeout_s:g} s and was killed"
            if not receive.poll(min(remaining, 0.5)):
                continue
            try:
                kind, payload = receive.recv()
            except EOFError:
                process.join(timeout=10)
                code = process.exitcode
                how = f"signal {-code}" if code is not None and code < 0 else f"exit code {code}"
                return f"worker died ({how}); see {log_path}"
            if kind == "row":
                on_row(payload)
            elif kind == "error":
                return payload
            else:
                return None
    finally:
        if process.is_alive():
            process.kill()
        process.join(timeout=10)
        receive.close()


@dataclass
class RunResult:
    run_dir: Path
    lines: list[dict]
    wall_s: float

    @property
    def failed(self) -> int:
        return sum(1 for line in self.lines if line["status"] != "ok")


def run_suite(suite: SuiteSpec, out_dir: Path | None = None, online: bool = False, progress: bool = True) -> RunResult:
    from tqdm import tqdm

    from harness import hardware

    started = time.perf_counter()
    models = prepare_models(suite, online)
    data_problem = prepare_data(suite)
    cells = expand(suite, models, data_problem)
    run_id = new_run_id()
    run_dir = Path(out_dir) if out_dir else Path("results") / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "logs").mkdir(exist_ok=True)
    fingerprint = hardware.fingerprint(online=online)
    write_yaml(run_dir / "resolved_config.yaml", {
        "run_id": run_id,
        "suite": {**asdict(suite), "scenarios": [asdict(s) for s in suite.scenarios]},
        "models": {name: (str(m) if isinstance(m, BenchError) else {k: str(v) for k, v in asdict(m).items()})
                   for name, m in models.items()},
        "cells": [cell.cell_id for cell in cells],
        "fingerprint": fingerprint,
    })
    writer = RowWriter(run_dir / "rows.jsonl")
    bar = tqdm(total=len(cells), desc="cells", unit="cell", disable=not progress, dynamic_ncols=True)
    try:
        for index, cell in enumerate(cells):
            bar.set_postfix_str(f"{cell.model} {cell.backend} {cell.scenario.name}")
            context = cell.context(run_id, fingerprint)
            problem = cell.unavailable or run_in_worker(
                cell, context, writer.write, run_dir / "logs" / f"cell-{index:03d}.log", online
            )
            if problem:
                writer.write(failed_row(context, problem))
            bar.update()
    finally:
        bar.close()
        writer.close()
    lines = summary_rows(read_rows(run_dir / "rows.jsonl"))
    write_summary_csv(run_dir / "summary.csv", lines)
    return RunResult(run_dir, lines, time.perf_counter() - started)


def render(result: RunResult) -> str:
    return (f"{console_table(result.lines)}\n\nrun folder: {result.run_dir}  "
            f"(rows.jsonl, summary.csv, resolved_config.yaml)\nwall time: {result.wall_s:.1f} s")
