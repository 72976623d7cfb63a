"""Orchestrates a run: expands a suite into cells (model x backend x task x scenario), records the plan in the run
folder, and has each cell measured in a worker process (harness/worker.py: a model's cells share one, which loads
the model once) on the machine harness/machine.py resolves.

A cell that raises, crashes, runs out of memory or overruns its timeout becomes a failed row, and the suite goes on.
The parent process alone writes rows.jsonl: the worker sends each row over a pipe as soon as it is measured. When a
cell is over, the parent records it in cells.jsonl with its number of rows; `--resume` reruns every cell not recorded
there (dropping any rows it left), so an interrupted run ends with each cell's rows exactly once.
"""

import datetime
import hashlib
import json
import secrets
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from harness.backends.server import ServerPool
from harness.config import MeasureSpec, ScenarioSpec, SuiteSpec, suite_from_data
from harness.errors import BenchError, ConfigError, UnknownNameError, one_line
from harness.machine import Machine, resolve_machine
from harness.results.schema import failed_row
from harness.results.store import RowWriter, completed_cells, locked_run_dir, read_rows, write_yaml
from harness.results.tables import summary_rows, write_summary_csv
from harness.worker import Workers


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
    machine: "Machine"
    # Why the cell cannot run at all (its model or data could not be prepared); it becomes a failed row.
    unavailable: str | None = None
    memory_limit_mib: int | None = None  # the worker's address-space limit (RLIMIT_AS)
    trust_remote_code: bool = False  # only for a model named with --trust-remote-code
    allow_pickle: bool = False
    server: dict | None = None  # the OpenAI-compatible server of an `openai` cell (ServerPool.attach)
    isolate: bool = False  # a worker of its own (the suite's isolate_cells)
    assistant_path: str | None = None  # the draft model's weights, where the engine settings name one

    @property
    def cell_id(self) -> str:
        params = json.dumps(self.scenario.params, sort_keys=True)
        digest = hashlib.sha256(params.encode()).hexdigest()[:8]
        return f"{self.model}|{self.backend}|{self.scenario.task_and_version[0]}|{self.scenario.name}|{digest}"

    @property
    def load_key(self) -> str:
        """Cells with equal keys load the same model in the same way, so one worker's loaded model serves them all."""
        how = (self.model_path, self.backend, self.device, self.dtype, self.scenario.params.get("engine", {}),
               self.server, self.trust_remote_code, self.allow_pickle, self.memory_limit_mib)
        return json.dumps(how, sort_keys=True, default=str)

    def context(self, run_id: str, fingerprint: dict) -> dict:
        """The fields every row of this cell carries; the worker completes them with what the backend reports."""
        task, task_version = self.scenario.task_and_version
        return {
            "run_id": run_id, "cell_id": self.cell_id, "model": self.model, "model_source": self.model_source,
            "model_revision": self.model_revision, "backend": self.backend, "backend_version": None,
            "device": self.device, "device_name": None, "dtype": self.dtype, "task": task,
            "task_version": task_version, "scenario": self.scenario.name,
            "profile": self.machine.profile.name if self.machine.profile else None,
            "profile_specs": self.machine.profile_specs,
            "off_profile": self.machine.off_profile, "energy_source": None, "fingerprint": fingerprint,
        }


def new_run_id() -> str:
    return f"{datetime.datetime.now():%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"


def prepare_models(suite: SuiteSpec, online: bool, allow_pickle: bool = False) -> dict[str, object]:
    """Resolves every model of the suite to local weights (fetching or building them, with progress) before any cell
    runs. An unknown name stops the run; a model that cannot be had fails only its own cells."""
    from harness import zoo

    prepared: dict[str, object] = {}
    for name in dict.fromkeys([*suite.models, *suite.assistant_models]):
        try:
            prepared[name] = zoo.resolve(name, online=online, progress=True, allow_pickle=allow_pickle)
        except UnknownNameError:
            raise
        except BenchError as exc:
            prepared[name] = exc
    return prepared


def prepare_data(suite: SuiteSpec, online: bool = False) -> dict[str, str]:
    """Fetches the data of every quality task in the suite; returns, per task that could not be had, why."""
    from harness.quality import tasks

    problems = {}
    for name in {s.params["task"] for s in suite.scenarios if s.name == "quality"}:
        try:
            tasks.examples(tasks.load_task(name), progress=True, online=online)
        except BenchError as exc:
            problems[name] = exc.message
    return problems


def expand(suite: SuiteSpec, models: dict[str, object], data_problems: dict[str, str], machine: "Machine",
           trust_remote_code: tuple[str, ...] = (), allow_pickle: bool = False) -> list[Cell]:
    cells = []
    # The suite's backends, then any that only some scenarios name, each backend's cells together.
    backends = dict.fromkeys([*suite.backends, *(b for scenario in suite.scenarios for b in scenario.backends)])
    for model_name in suite.models:
        model = models[model_name]
        for backend in backends:
            for scenario in suite.scenarios:
                if scenario.models and model_name not in scenario.models:
                    continue
                if backend not in (scenario.backends or suite.backends) or not suite.runs_on(model_name, backend):
                    continue
                problem = model.message if isinstance(model, BenchError) else None
                if problem is None and scenario.name == "quality":
                    problem = data_problems.get(scenario.params["task"])
                assistant, problem = _assistant(scenario, backend, models, problem)
                resolved = None if problem else model
                cells.append(Cell(
                    model=model_name,
                    model_path=str(resolved.path) if resolved else None,
                    model_source=resolved.source if resolved else None,
                    model_revision=resolved.revision if resolved else None,
                    backend=backend, scenario=scenario, device=machine.probe.device, dtype=machine.probe.dtype,
                    measure=suite.measure_of(scenario), timeout_s=suite.cell_timeout_s, machine=machine,
                    unavailable=problem,
                    memory_limit_mib=suite.cell_memory_limit_mib, trust_remote_code=model_name in trust_remote_code,
                    allow_pickle=allow_pickle, isolate=suite.isolate_cells,
                    assistant_path=str(assistant.path) if assistant and not problem else None,
                ))
    return cells


def _assistant(scenario, backend: str, models: dict[str, object], problem: str | None) -> tuple[object, str | None]:
    """The draft model a scenario's speculative engine settings name (resolved with the suite's models), and why
    the cell cannot run where it cannot: speculation in process is transformers' assisted generation."""
    engine = getattr(scenario, "engine", None)
    if problem or engine is None or not engine.speculative:
        return None, problem
    if backend != "transformers":
        return None, (f"engine speculation (prompt_lookup_num_tokens, assistant_model) is transformers' assisted "
                      f"generation, not {backend}'s: measure a server's own speculation with scenario served")
    draft = models.get(engine.assistant_model) if engine.assistant_model else None
    return draft, (f"assistant model {engine.assistant_model}: {draft.message}"
                   if isinstance(draft, BenchError) else None)


@dataclass
class RunResult:
    run_dir: Path
    lines: list[dict]
    wall_s: float
    machine: Machine
    claims_text: str | None = None

    @property
    def failed(self) -> int:
        return sum(1 for line in self.lines if line["status"] != "ok")


@dataclass(frozen=True)
class RunOptions:
    """What a run is trusted with and how it reports; given afresh when a run is resumed."""

    online: bool = False
    progress: bool = True
    trust_remote_code: tuple[str, ...] = ()
    allow_pickle: bool = False


def start_run(suite: SuiteSpec, out_dir: Path | None = None, profile: str | None = None, force: bool = False,
              **options) -> RunResult:
    """Runs `suite` into a new run folder (`out_dir`, or results/<run-id>), locked while the run writes it.
    `options`: those of RunOptions."""
    run_id = new_run_id()
    run_dir = Path(out_dir) if out_dir else Path("results") / run_id
    with locked_run_dir(run_dir):
        if (run_dir / "rows.jsonl").exists():
            raise ConfigError(f"{run_dir} already holds a run (rows.jsonl)",
                              hint=f"bench run --resume {run_dir} finishes it; or give this run another --out")
        return _carry_out(suite, run_dir, run_id, None, profile, force, RunOptions(**options))


def resume_run(run_dir: Path, **options) -> RunResult:
    """Finishes an interrupted run: the suite, machine profile, device and dtype it was started with; every cell not
    recorded as complete runs again. `options` (RunOptions: --online, --trust-remote-code, ...) are given afresh."""
    run_dir = Path(run_dir)
    file = run_dir / "resolved_config.yaml"
    if not file.exists():
        raise ConfigError(f"{run_dir} is not a run folder: it has no resolved_config.yaml",
                          hint="--resume takes a folder that an earlier `bench run` wrote")
    with locked_run_dir(run_dir):
        try:
            config = yaml.safe_load(file.read_text())
            machine = config["machine"]
            run_id, profile, force = config["run_id"], machine["profile"], machine["off_profile"]
            suite = {**config["suite"], "device": machine["device"], "dtype": machine["dtype"]}
        except (yaml.YAMLError, KeyError, TypeError) as exc:
            raise ConfigError(f"{file}: cannot resume from it ({one_line(exc)})") from None
        suite = suite_from_data(suite, str(file))
        return _carry_out(suite, run_dir, run_id, completed_cells(run_dir), profile, force, RunOptions(**options))


def _carry_out(suite: SuiteSpec, run_dir: Path, run_id: str, done: set[str] | None, profile: str | None,
               force: bool, options: RunOptions) -> RunResult:
    """Plans the run's cells on this machine, records the plan (a new run), measures every cell not `done`."""
    from harness import hardware

    started = time.perf_counter()
    machine = resolve_machine(suite.device, suite.dtype, profile, force)
    extra_models = suite.profile_models.get(machine.profile.name, ()) if machine.profile else ()
    if extra_models:
        suite = suite.replace(models=tuple(dict.fromkeys(suite.models + extra_models)))
    unknown = sorted(set(options.trust_remote_code) - set(suite.models))
    if unknown:
        raise ConfigError(f"--trust-remote-code {unknown[0]!r}: not a model of this run",
                          hint=f"the run's models: {', '.join(suite.models)}")
    models = prepare_models(suite, options.online, options.allow_pickle)
    cells = expand(suite, models, prepare_data(suite, options.online), machine, options.trust_remote_code,
                   options.allow_pickle)
    (run_dir / "logs").mkdir(exist_ok=True)
    fingerprint = hardware.fingerprint(online=options.online)
    if done is None:  # a new run (a resumed one keeps the config it was started with)
        done = set()
        models = {name: (str(m) if isinstance(m, BenchError) else {k: str(v) for k, v in asdict(m).items()})
                  for name, m in models.items()}
        write_yaml(run_dir / "resolved_config.yaml", {
            "run_id": run_id, "suite": suite.to_data(), "models": models, "cells": [cell.cell_id for cell in cells],
            "machine": machine.record(), "fingerprint": fingerprint})
    _measure_cells(cells, done, run_dir, run_id, fingerprint, suite.server, options)
    lines = summary_rows(read_rows(run_dir / "rows.jsonl"))
    write_summary_csv(run_dir / "summary.csv", lines)
    claims_text = None
    if suite.report_claims:
        from harness import claims

        claims_text = claims.write_report(run_dir, claims.verdicts(read_rows(run_dir / "rows.jsonl")))
    return RunResult(run_dir, lines, time.perf_counter() - started, machine, claims_text)


def _measure_cells(cells: list[Cell], done: set[str], run_dir: Path, run_id: str, fingerprint: dict, server,
                   options: RunOptions) -> None:
    """Each cell not `done` in a worker (Workers), its rows appended to rows.jsonl as they come, then recorded complete
    in cells.jsonl (what --resume trusts); a cell that cannot run or fails leaves a failed row saying why."""
    from harness.results.console import Progress

    writer, cells_log = RowWriter(run_dir / "rows.jsonl"), RowWriter(run_dir / "cells.jsonl")
    bar = Progress(len(cells), "cells", enabled=options.progress, done=len(done))
    servers, workers = ServerPool(server, run_dir / "logs"), Workers(options.online)
    try:
        for index, cell in enumerate(cells):
            if cell.cell_id in done:
                continue
            bar.start(f"{cell.model} {cell.backend} {cell.scenario.name}")
            context = cell.context(run_id, fingerprint)
            before = writer.written
            cell, problem = servers.attach(cell)
            log = run_dir / "logs" / f"cell-{index:03d}.log"
            problem = problem or workers.measure(cell, context, writer.write, log)
            if problem:
                writer.write(failed_row(context, problem))
            cells_log.write({"cell_id": cell.cell_id, "status": "failed" if problem else "ok",
                             "rows": writer.written - before})
            bar.advance()
    finally:
        workers.close()
        servers.close()
        bar.close()
        writer.close()
        cells_log.close()
