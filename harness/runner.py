"""Expands a suite into cells (model x backend x task x scenario) and runs each cell in its own worker process.

A cell that raises, crashes, runs out of memory or overruns its timeout becomes a failed row, and the suite goes on.
The parent process alone writes rows.jsonl: the worker sends each row over a pipe as soon as it is measured. When a
cell is over, the parent records it in cells.jsonl with its number of rows; `--resume` reruns every cell not recorded
there (dropping any rows it left), so an interrupted run ends with each cell's rows exactly once.
"""

import collections
import concurrent.futures
import ctypes
import datetime
import hashlib
import json
import multiprocessing
import os
import resource
import secrets
import signal
import statistics
import sys
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from harness.backends.server import ServerPool
from harness.config import MeasureSpec, ScenarioSpec, SuiteSpec
from harness.errors import BenchError, ConfigError, UnknownNameError
from harness.measure.calibration import Probe, probe
from harness.measure.interconnect import bus_bandwidth_gbps
from harness.measure.memory import is_out_of_memory
from harness.measure.roofline import Limits
from harness.profiles import Profile, detect, get_profile, match
from harness.results.schema import failed_row
from harness.results.store import RowWriter, locked_run_dir, read_jsonl, read_rows, write_jsonl_atomic, write_yaml
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
    machine: "Machine"
    # Why the cell cannot run at all (its model or data could not be prepared); it becomes a failed row.
    unavailable: str | None = None
    memory_limit_mib: int | None = None  # the worker's address-space limit (RLIMIT_AS)
    trust_remote_code: bool = False  # only for a model named with --trust-remote-code
    allow_pickle: bool = False
    server: dict | None = None  # the OpenAI-compatible server of an `openai` cell (ServerPool.attach)

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
            "task_version": task_version, "scenario": self.scenario.name,
            "profile": self.machine.profile.name if self.machine.profile else None,
            "profile_specs": self.machine.profile_specs,
            "off_profile": self.machine.off_profile, "energy_source": None, "fingerprint": fingerprint,
        }


@dataclass(frozen=True)
class Machine:
    """The hardware a run is on: what the probe found, the profile its results are held against, the limits."""

    probe: Probe
    profile: Profile | None
    off_profile: bool
    profile_reason: str

    @property
    def profile_specs(self) -> dict:
        """The profile's figures that verdicts read (harness/claims), carried in every row so that a verdict never
        depends on the profile files of the machine it is computed on."""
        profile = self.profile
        return {"price_usd_per_hour": profile.price_usd_per_hour if profile else None,
                "interconnect": profile.interconnect if profile else None}

    @property
    def limits(self) -> Limits:
        profile, calibration = self.profile, self.probe.calibration
        return Limits(
            datasheet_gbps=profile.memory_bandwidth_gbps if profile else None,
            datasheet_tflops=profile.peak_tflops(self.probe.dtype) if profile else None,
            calibrated_gbps=calibration.bandwidth_gbps if calibration else None,
            calibrated_tflops=calibration.matmul_tflops if calibration else None,
            price_usd_per_hour=profile.price_usd_per_hour if profile else None,
        )


def _probe_in_subprocess(device: str, dtype: str) -> Probe:
    """Device, dtype and calibration, found in a fresh process so that neither torch nor the calibration's memory
    stays in this one (the cells' peak memory must not include it)."""
    mp = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=mp, initializer=_die_with_parent,
                                                initargs=(os.getpid(),)) as pool:
        return pool.submit(probe, device, dtype).result()


def resolve_machine(device: str, dtype: str, profile_name: str | None, force: bool) -> Machine:
    """This machine, held against the named profile (refused when it does not match, unless forced) or against
    the profile detected."""
    found = _probe_in_subprocess(device, dtype)
    if profile_name is None:
        profile, reason = detect(found.device, found.device_name, found.memory_gb)
        return Machine(found, profile, False, reason)
    profile = get_profile(profile_name)
    matches, reason = match(profile, found.device, found.device_name, found.memory_gb)
    if not matches and not force:
        raise ConfigError(f"this machine does not match profile {profile.name}: {reason}",
                          hint="`bench profiles detect` shows which profile does; --force runs anyway, "
                               "marking every row off_profile")
    if dtype == "auto" and profile.default_dtype not in ("auto", found.dtype):
        found = _probe_in_subprocess(device, profile.default_dtype)
    return Machine(found, profile, not matches, reason)


def new_run_id() -> str:
    return f"{datetime.datetime.now():%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"


def prepare_models(suite: SuiteSpec, online: bool, allow_pickle: bool = False) -> dict[str, object]:
    """Resolves every model of the suite to local weights (fetching or building them, with progress) before any cell
    runs. An unknown name stops the run; a model that cannot be had fails only its own cells."""
    from harness import zoo

    prepared: dict[str, object] = {}
    for name in suite.models:
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
    for model_name in suite.models:
        model = models[model_name]
        for backend in suite.backends:
            for scenario in suite.scenarios:
                if scenario.models and model_name not in scenario.models:
                    continue
                problem = model.message if isinstance(model, BenchError) else None
                if problem is None and scenario.name == "quality":
                    problem = data_problems.get(scenario.params["task"])
                resolved = None if problem else model
                cells.append(Cell(
                    model=model_name,
                    model_path=str(resolved.path) if resolved else None,
                    model_source=resolved.source if resolved else None,
                    model_revision=resolved.revision if resolved else None,
                    backend=backend, scenario=scenario, device=machine.probe.device, dtype=machine.probe.dtype,
                    measure=suite.measure, timeout_s=suite.cell_timeout_s, machine=machine, unavailable=problem,
                    memory_limit_mib=suite.cell_memory_limit_mib, trust_remote_code=model_name in trust_remote_code,
                    allow_pickle=allow_pickle,
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
    from harness.measure.energy import open_counter
    from harness.measure.memory import peak_rss_mib
    from harness.measure.recorder import Recorder
    from harness.measure.stats import RepetitionPolicy
    from harness.scenarios import SCENARIOS

    backend = BACKENDS.get(cell.backend)()
    engine = cell.scenario.params.get("engine", {})
    options = {k: v for k, v in engine.items() if k not in ("step", "dtype", "cache_implementation")}
    options.update(trust_remote_code=cell.trust_remote_code, allow_pickle=cell.allow_pickle)
    if engine.get("cache_implementation") == "static":
        options["cache_implementation"] = "static"
    if cell.server:
        options["server"] = cell.server
    backend.load(Path(cell.model_path), cell.device, engine.get("dtype", cell.dtype), options)
    info = backend.info()
    counter, energy_source_or_reason = open_counter(info.device)
    context = {**context, "backend_version": info.backend_version, "device": info.device,
               "device_name": info.device_name, "dtype": info.dtype, "backend_info": info.extra,
               "energy_source": counter.source if counter else "none",
               "energy_unavailable": None if counter else energy_source_or_reason}
    policy = RepetitionPolicy(cell.measure.warmup, cell.measure.repetitions, cell.measure.min_seconds)
    recorder = Recorder(context, policy, emit, cell.machine.limits, counter)
    calibration = cell.machine.probe.calibration
    if calibration:
        params = {"copy_mib": calibration.copy_mib, "matmul_n": calibration.matmul_n}
        # The run's calibration, measured once (or taken from the cache): when, and whether it was cached.
        when = {"measured_at": calibration.measured_at, "cached": cell.machine.probe.calibration_cached}
        bandwidth, tflops = calibration.bandwidth_stats, calibration.matmul_stats
        recorder.figure("calibrated_bandwidth_gbps", [calibration.bandwidth_gbps], params, **bandwidth, **when)
        recorder.figure("calibrated_tflops", [calibration.matmul_tflops], params, **tflops, **when)
    probe = cell.machine.probe
    for size_mib, seconds in (probe.allreduce_seconds or {}).items():
        recorder.figure("allreduce_busbw_gbps",
                        [bus_bandwidth_gbps(size_mib * 2**20, s, probe.allreduce_world_size) for s in seconds],
                        {"size_mib": size_mib, "world_size": probe.allreduce_world_size})
    SCENARIOS.get(cell.scenario.name)(backend, cell.scenario.params, recorder)
    shape = backend.model_shape()
    backend_memory = backend.memory()
    backend.close()
    if shape is None:  # the weights live in a server's process: this process's size says nothing about them
        return
    recorder.figure("total_params", [shape.total_params])
    recorder.figure("active_params", [shape.active_params])
    recorder.figure("weights_mib", [backend_memory["weights_mib"]])
    recorder.figure("peak_rss_mib", [peak_rss_mib()])


def _die_with_parent(parent_pid: int) -> None:
    """A worker never outlives its `bench run` (killed with -9, say): Linux sends it SIGKILL when the parent dies."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # 1: PR_SET_PDEATHSIG
        if os.getppid() != parent_pid:  # the parent died before the line above
            os._exit(1)


def failure_message(exc: BaseException) -> str:
    """One line saying why a cell failed; out-of-memory is named as such, whatever raised it."""
    message = exc.message if isinstance(exc, BenchError) else f"{type(exc).__name__}: {exc}"
    first = message.splitlines()[0] if message.strip() else type(exc).__name__
    return f"out of memory: {first}" if is_out_of_memory(exc) else first


def _worker(cell: Cell, context: dict, conn, log_path: str, online: bool, parent_pid: int) -> None:
    _die_with_parent(parent_pid)
    if cell.memory_limit_mib:  # the address space the cell may use: past it allocations fail, the machine lives
        limit = cell.memory_limit_mib * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
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
        conn.send(("error", failure_message(exc)))


def run_in_worker(cell: Cell, context: dict, on_row, log_path: Path, online: bool) -> str | None:
    """Runs one cell in a fresh process; returns None on success or why it failed."""
    mp = multiprocessing.get_context("spawn")
    receive, send = mp.Pipe(duplex=False)
    process = mp.Process(target=_worker, args=(cell, context, send, str(log_path), online, os.getpid()),
                         daemon=True)
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
                how = f"signal {-code} ({signal.Signals(-code).name})" if code and code < 0 else f"exit code {code}"
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
    machine: Machine
    claims_text: str | None = None

    @property
    def failed(self) -> int:
        return sum(1 for line in self.lines if line["status"] != "ok")


def run_suite(suite: SuiteSpec, out_dir: Path | None = None, online: bool = False, progress: bool = True,
              profile: str | None = None, force: bool = False, trust_remote_code: tuple[str, ...] = (),
              allow_pickle: bool = False) -> RunResult:
    """Runs `suite` into a new run folder (`out_dir`, or results/<run-id>), locked while the run writes it."""
    run_id = new_run_id()
    run_dir = Path(out_dir) if out_dir else Path("results") / run_id
    with locked_run_dir(run_dir):
        if (run_dir / "rows.jsonl").exists():
            raise ConfigError(f"{run_dir} already holds a run (rows.jsonl)",
                              hint=f"bench run --resume {run_dir} finishes it; or give this run another --out")
        return _run(suite, run_dir, run_id, None, online, progress, profile, force, trust_remote_code, allow_pickle)


def resume_suite(run_dir: Path, online: bool = False, progress: bool = True, trust_remote_code: tuple[str, ...] = (),
                 allow_pickle: bool = False) -> RunResult:
    """Finishes an interrupted run: the suite, machine profile, device and dtype it was started with; every cell not
    recorded as complete runs again. Trust (--online, --trust-remote-code, --allow-pickle) is given afresh."""
    run_dir = Path(run_dir)
    file = run_dir / "resolved_config.yaml"
    if not file.exists():
        raise ConfigError(f"{run_dir} is not a run folder: it has no resolved_config.yaml",
                          hint="--resume takes a folder that an earlier `bench run` wrote")
    with locked_run_dir(run_dir):
        try:
            config = yaml.safe_load(file.read_text())
            suite, machine = _suite_from_resolved(config["suite"]), config["machine"]
            suite = suite.replace(device=machine["device"], dtype=machine["dtype"])
            run_id, profile, force = config["run_id"], machine["profile"], machine["off_profile"]
        except (yaml.YAMLError, KeyError, TypeError, AttributeError) as exc:
            raise ConfigError(f"{file}: cannot resume from it ({type(exc).__name__}: {exc})") from None
        done = completed_cells(run_dir)
        return _run(suite, run_dir, run_id, done, online, progress, profile, force, trust_remote_code, allow_pickle)


def _suite_from_resolved(data: dict) -> SuiteSpec:
    scenarios = tuple(ScenarioSpec(s["name"], s["params"], tuple(s["models"])) for s in data["scenarios"])
    return SuiteSpec(**{**data, "models": tuple(data["models"]), "backends": tuple(data["backends"]),
                        "measure": MeasureSpec(**data["measure"]), "scenarios": scenarios,
                        "profile_models": {k: tuple(v) for k, v in data["profile_models"].items()}})


def completed_cells(run_dir: Path) -> set[str]:
    """The cells whose rows are all on disk: recorded in cells.jsonl, with as many rows in rows.jsonl as recorded.
    Rows of every other cell (cut short by a kill) and any torn line are dropped, both files rewritten atomically,
    so that running those cells again duplicates nothing."""
    rows_file, cells_file = run_dir / "rows.jsonl", run_dir / "cells.jsonl"
    rows = read_rows(rows_file) if rows_file.exists() else []
    counts = collections.Counter(row["cell_id"] for row in rows)
    records = read_jsonl(cells_file) if cells_file.exists() else []
    done = {r["cell_id"]: r for r in records if r.get("cell_id") in counts and counts[r["cell_id"]] == r.get("rows")}
    write_jsonl_atomic(rows_file, [row for row in rows if row["cell_id"] in done])
    write_jsonl_atomic(cells_file, list(done.values()))
    return set(done)


def _run(suite: SuiteSpec, run_dir: Path, run_id: str, done: set[str] | None, online: bool, progress: bool,
         profile: str | None, force: bool, trust_remote_code: tuple[str, ...], allow_pickle: bool) -> RunResult:
    from harness import hardware
    from harness.results.console import Progress

    started = time.perf_counter()
    machine = resolve_machine(suite.device, suite.dtype, profile, force)
    extra_models = suite.profile_models.get(machine.profile.name, ()) if machine.profile else ()
    if extra_models:
        suite = suite.replace(models=tuple(dict.fromkeys(suite.models + extra_models)))
    unknown = sorted(set(trust_remote_code) - set(suite.models))
    if unknown:
        raise ConfigError(f"--trust-remote-code {unknown[0]}: not a model of this run",
                          hint=f"the run's models: {', '.join(suite.models)}")
    models = prepare_models(suite, online, allow_pickle)
    data_problems = prepare_data(suite, online)
    cells = expand(suite, models, data_problems, machine, trust_remote_code, allow_pickle)
    (run_dir / "logs").mkdir(exist_ok=True)
    fingerprint = hardware.fingerprint(online=online)
    if done is None:  # a new run (a resumed one keeps the config it was started with)
        done = set()
        write_yaml(run_dir / "resolved_config.yaml", {
            "run_id": run_id,
            "suite": {**asdict(suite), "scenarios": [asdict(s) for s in suite.scenarios]},
            "models": {name: (str(m) if isinstance(m, BenchError) else {k: str(v) for k, v in asdict(m).items()})
                       for name, m in models.items()},
            "cells": [cell.cell_id for cell in cells],
            "machine": {"device": machine.probe.device, "device_name": machine.probe.device_name,
                        "memory_gb": machine.probe.memory_gb, "dtype": machine.probe.dtype,
                        "profile": machine.profile.name if machine.profile else None,
                        "off_profile": machine.off_profile,
                        "profile_reason": machine.profile_reason, "limits": asdict(machine.limits),
                        "calibration": asdict(machine.probe.calibration) if machine.probe.calibration else None,
                        "calibration_cached": machine.probe.calibration_cached,
                        "calibration_error": machine.probe.calibration_error,
                        "allreduce_seconds": machine.probe.allreduce_seconds,
                        "allreduce_world_size": machine.probe.allreduce_world_size,
                        "allreduce_error": machine.probe.allreduce_error},
            "fingerprint": fingerprint,
        })
    writer, cells_log = RowWriter(run_dir / "rows.jsonl"), RowWriter(run_dir / "cells.jsonl")
    bar = Progress(len(cells), "cells", enabled=progress, done=len(done))
    servers = ServerPool(suite.server, run_dir / "logs")
    try:
        for index, cell in enumerate(cells):
            if cell.cell_id in done:
                continue
            bar.start(f"{cell.model} {cell.backend} {cell.scenario.name}")
            context = cell.context(run_id, fingerprint)
            before = writer.written
            cell, problem = servers.attach(cell)
            problem = problem or run_in_worker(
                cell, context, writer.write, run_dir / "logs" / f"cell-{index:03d}.log", online
            )
            if problem:
                writer.write(failed_row(context, problem))
            # Written once every row of the cell is on disk: what --resume trusts.
            cells_log.write({"cell_id": cell.cell_id, "status": "failed" if problem else "ok",
                             "rows": writer.written - before})
            bar.advance()
    finally:
        servers.close()
        bar.close()
        writer.close()
        cells_log.close()
    lines = summary_rows(read_rows(run_dir / "rows.jsonl"))
    write_summary_csv(run_dir / "summary.csv", lines)
    claims_text = None
    if suite.report_claims:
        from harness import claims

        claims_text = claims.write_report(run_dir, claims.verdicts(read_rows(run_dir / "rows.jsonl")))
    return RunResult(run_dir, lines, time.perf_counter() - started, machine, claims_text)


def describe(machine: Machine) -> str:
    """Two lines: the profile and why, and what calibration measured."""
    found = machine.probe
    profile = machine.profile.name if machine.profile else "none"
    off = " (OFF-PROFILE: rows marked off_profile)" if machine.off_profile else ""
    calibration = found.calibration
    measured = (f"calibrated {calibration.bandwidth_gbps:.1f} GB/s copy bandwidth, {calibration.matmul_tflops:.3g} "
                f"TFLOP/s {found.dtype} matmul{' (cached)' if found.calibration_cached else ''}"
                if calibration else f"no calibration: {found.calibration_error}")
    if found.allreduce_seconds:
        size, seconds = max(found.allreduce_seconds.items())
        busbw = bus_bandwidth_gbps(size * 2**20, statistics.median(seconds), found.allreduce_world_size)
        measured += f"; all-reduce across {found.allreduce_world_size} GPUs: {busbw:.1f} GB/s bus bandwidth"
    elif found.allreduce_error:
        measured += f"; no all-reduce figure: {found.allreduce_error}"
    return (f"device {found.device} ({found.device_name}, {found.memory_gb:.0f} GB), dtype {found.dtype}; "
            f"profile {profile}{off}: {machine.profile_reason}\n{measured}")


def render(result: RunResult) -> str:
    claims = f"\n\nclaims (claims.md, claims.csv):\n{result.claims_text}" if result.claims_text else ""
    return (f"{describe(result.machine)}\n\n{console_table(result.lines)}{claims}\n\nrun folder: {result.run_dir}  "
            f"(rows.jsonl, summary.csv, resolved_config.yaml)\nwall time: {result.wall_s:.1f} s")
