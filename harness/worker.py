"""A cell's worker process: it loads the cell's model, runs its scenario and sends each row to the parent as soon as it
is measured. A cell that raises, crashes, runs out of memory or overruns its timeout ends as one line saying why."""

import ctypes
import multiprocessing
import os
import resource
import signal
import sys
import time
import traceback
from pathlib import Path

from harness.errors import BenchError
from harness.measure.interconnect import bus_bandwidth_gbps
from harness.measure.memory import is_out_of_memory


def quiet_worker_environment(online: bool) -> None:
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if not online:
        # Offline by default: a worker never reaches a hub unless the run was started with --online.
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["TRANSFORMERS_OFFLINE"] = "1"


def measure_cell(cell, context: dict, emit) -> None:
    """Loads the cell's model, runs its scenario and emits its rows. Runs inside the worker process."""
    from harness.backends import BACKENDS
    from harness.measure.energy import open_counter
    from harness.measure.memory import peak_rss_mib
    from harness.measure.recorder import Recorder
    from harness.measure.stats import RepetitionPolicy
    from harness.scenarios import SCENARIOS

    backend = BACKENDS.get(cell.backend)()
    # The scenario's engine settings go to the backend as they are: each backend reads those it has.
    engine = cell.scenario.params.get("engine", {})
    options = {**engine, "trust_remote_code": cell.trust_remote_code, "allow_pickle": cell.allow_pickle}
    if cell.server:
        options["server"] = cell.server
    backend.load(Path(cell.model_path), cell.device, engine.get("dtype", cell.dtype), options)
    info = backend.info()
    counter, energy_source_or_reason = open_counter(info.device, backend.cuda_devices())
    context = {**context, "backend_version": info.backend_version, "device": info.device,
               "device_name": info.device_name, "dtype": info.dtype, "backend_info": info.extra,
               "energy_source": counter.source if counter else "none",
               "energy_unavailable": None if counter else energy_source_or_reason}
    policy = RepetitionPolicy(**cell.measure.model_dump())
    recorder = Recorder(context, policy, emit, cell.machine.limits, counter)
    _record_probe(recorder, cell.machine.probe)
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


def _record_probe(recorder, probe) -> None:
    """The run's calibration (measured once, or taken from the cache: when, and whether it was cached) and its
    all-reduce bus bandwidth, as rows of every cell, so that each cell's roofline figures carry what they used."""
    calibration = probe.calibration
    if calibration:
        params = {"copy_mib": calibration.copy_mib, "matmul_n": calibration.matmul_n}
        when = {"measured_at": calibration.measured_at, "cached": probe.calibration_cached}
        recorder.figure("calibrated_bandwidth_gbps", [calibration.bandwidth_gbps], params,
                        **calibration.bandwidth_stats, **when)
        recorder.figure("calibrated_tflops", [calibration.matmul_tflops], params, **calibration.matmul_stats, **when)
    for size_mib, seconds in (probe.allreduce_seconds or {}).items():
        recorder.figure("allreduce_busbw_gbps",
                        [bus_bandwidth_gbps(size_mib * 2**20, s, probe.allreduce_world_size) for s in seconds],
                        {"size_mib": size_mib, "world_size": probe.allreduce_world_size})


def die_with_parent(parent_pid: int) -> None:
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


def _worker_main(cell, context: dict, conn, log_path: str, online: bool, parent_pid: int) -> None:
    die_with_parent(parent_pid)
    if cell.memory_limit_mib:  # the address space the cell may use: past it allocations fail, the machine lives
        limit = cell.memory_limit_mib * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    # Everything the worker and its libraries print goes to the cell's log, keeping the console for the progress bar.
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    quiet_worker_environment(online)
    try:
        measure_cell(cell, context, lambda row: conn.send(("row", row)))
        conn.send(("done", None))
    except BaseException as exc:  # noqa: B036 - any failure of the cell must reach the parent as a row
        traceback.print_exc()
        conn.send(("error", failure_message(exc)))


def measure_in_worker(cell, context: dict, on_row, log_path: Path, online: bool) -> str | None:
    """Runs one cell in a fresh process; returns None on success or why it failed."""
    mp = multiprocessing.get_context("spawn")
    receive, send = mp.Pipe(duplex=False)
    process = mp.Process(target=_worker_main, args=(cell, context, send, str(log_path), online, os.getpid()),
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
