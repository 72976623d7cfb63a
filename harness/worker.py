"""Cell worker processes: a worker loads a model for its first cell and keeps it for the next cells of that model
(loaded the same way), runs each cell's scenario and sends each row to the parent as soon as it is measured. A cell
that raises, crashes, runs out of memory or overruns its timeout ends as one line saying why, and ends its worker:
the next cell starts in a fresh one. On the CPU, a worker of an in-process engine runs each cell in a process forked
from itself just after the load, so that every cell starts from the memory an isolated cell starts from. A suite's
`isolate_cells` gives every cell a worker of its own."""

import ctypes
import multiprocessing
import os
import resource
import signal
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from harness.errors import BenchError
from harness.measure.interconnect import bus_bandwidth_gbps
from harness.measure.memory import (
    can_reset_peak_rss,
    is_out_of_memory,
    peak_rss_mib,
    reset_peak_rss,
    resident_file_pages,
    touch_pages,
)


def quiet_worker_environment(online: bool) -> None:
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if not online:
        # Offline by default: a worker never reaches a hub unless the run was started with --online.
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["TRANSFORMERS_OFFLINE"] = "1"


# Scenarios that leave the process changed: find_max lowers its address-space limit and fills memory to failure.
OWN_WORKER_SCENARIOS = {"find_max"}


def shares_worker(cell) -> bool:
    """Whether the cell may run on a model that an earlier cell loaded: not where the suite isolates cells, nor for a
    scenario that changes the process, nor where the resident-memory peak cannot be reset between cells."""
    return not cell.isolate and cell.scenario.name not in OWN_WORKER_SCENARIOS and can_reset_peak_rss()


# Engines that hold their model in the worker's own process and survive a fork there on the CPU. CUDA cannot be
# used in a forked child, and vLLM's engine runs in processes of its own; those cells share the worker itself.
FORKING_BACKENDS = {"transformers"}


def forks_cells(cell) -> bool:
    """Whether a shared worker runs the cell in a child forked from the loaded model. Resetting the peak between
    cells of one process leaves in it what earlier cells left in the allocators (glibc's raised mmap threshold,
    oneDNN's kernels per shape: a perplexity cell after two speed cells peaked 2.4% above its isolated twin); a child
    forked just after the load starts where an isolated cell starts."""
    return shares_worker(cell) and cell.backend in FORKING_BACKENDS and cell.device == "cpu"


@dataclass
class LoadedModel:
    """The backend a worker loaded for its first cell, the resident-memory peak that the load reached, and, where
    cells run in forked children, the torch threads they get back."""

    backend: object
    load_peak_rss_mib: float
    child_threads: int | None = None
    cells: int = 0

    @classmethod
    def load(cls, cell) -> "LoadedModel":
        from harness.backends import BACKENDS

        child_threads = None
        if forks_cells(cell):
            import torch

            # A child forked after OpenMP started its threads waits for them forever (they are not copied): the
            # parent computes on one thread, and each child gets the threads back.
            child_threads = torch.get_num_threads()
            torch.set_num_threads(1)
        backend = BACKENDS.get(cell.backend)()
        # The scenario's engine settings go to the backend as they are: each backend reads those it has.
        engine = cell.scenario.params.get("engine", {})
        options = {**engine, "trust_remote_code": cell.trust_remote_code, "allow_pickle": cell.allow_pickle}
        if cell.server:
            options["server"] = cell.server
        if cell.assistant_path:
            options["assistant_model"] = cell.assistant_path
        backend.load(Path(cell.model_path), cell.device, engine.get("dtype", cell.dtype), options)
        return cls(backend, peak_rss_mib(), child_threads)


def measure_cell(loaded: LoadedModel, cell, context: dict, emit) -> None:
    """Runs the cell's scenario on the loaded model and emits its rows. Runs inside the worker process, or in a child
    forked from it."""
    from harness.measure.energy import open_counter
    from harness.measure.recorder import Recorder
    from harness.measure.stats import RepetitionPolicy
    from harness.scenarios import SCENARIOS

    backend = loaded.backend
    info = backend.info()
    counter, energy_source_or_reason = open_counter(info.device, backend.cuda_devices())
    context = {**context, "backend_version": info.backend_version, "device": info.device,
               "device_name": info.device_name, "dtype": info.dtype, "backend_info": info.extra,
               "energy_source": counter.source if counter else "none",
               "energy_unavailable": None if counter else energy_source_or_reason, "model_reused": loaded.cells > 0}
    policy = RepetitionPolicy(**cell.measure.model_dump(), drift_factor=cell.machine.probe.drift_factor)
    recorder = Recorder(context, policy, emit, cell.machine.limits, counter)
    _record_probe(recorder, cell.machine.probe)
    if can_reset_peak_rss():
        reset_peak_rss()
    SCENARIOS.get(cell.scenario.name)(backend, cell.scenario.params, recorder)
    shape = backend.model_shape()
    if shape is None:  # the weights live in another process, which says nothing of them
        return
    recorder.figure("total_params", [shape.total_params])
    recorder.figure("active_params", [shape.active_params])
    recorder.figure("weights_mib", [backend.memory()["weights_mib"]])
    if "served" not in backend.capabilities:  # a server's memory is its own process's, not this one's
        recorder.figure("peak_rss_mib", [max(loaded.load_peak_rss_mib, peak_rss_mib())])


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


def _worker_main(conn, online: bool, parent_pid: int, memory_limit_mib: int | None) -> None:
    """Measures the cells the parent sends, one at a time, on the model loaded for the first, until it sends None.
    A cell that fails ends the worker: whatever failed may have left the process harmed."""
    die_with_parent(parent_pid)
    if memory_limit_mib:  # the address space the cell may use: past it allocations fail, the machine lives
        limit = memory_limit_mib * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    quiet_worker_environment(online)
    loaded = None
    while (message := conn.recv()) is not None:
        cell, context, log_path = message
        # Everything the worker and its libraries print goes to the cell's log, keeping the console for the bar.
        log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        os.close(log_fd)
        try:
            loaded = loaded or LoadedModel.load(cell)
        except BaseException as exc:  # noqa: B036 - any failure of the cell must reach the parent as a row
            report_failure(conn, exc)
            return
        went_well = _measure_in_child(loaded, cell, context, conn, log_path) if loaded.child_threads else \
            measure_and_report(loaded, cell, context, conn)
        loaded.cells += 1
        if not went_well:
            return
    if loaded:
        loaded.backend.close()


def report_failure(conn, exc: BaseException) -> None:
    traceback.print_exc()
    conn.send(("error", failure_message(exc)))


def measure_and_report(loaded: LoadedModel, cell, context: dict, conn) -> bool:
    """Measures the cell, sending its rows and then done, or why it failed; returns whether it went well."""
    try:
        measure_cell(loaded, cell, context, lambda row: conn.send(("row", row)))
        conn.send(("done", None))
        return True
    except BaseException as exc:  # noqa: B036 - any failure of the cell must reach the parent as a row
        report_failure(conn, exc)
        return False


# A forked cell's exit codes when it has said how it went; any other end is said by the worker.
CHILD_DONE, CHILD_FAILED = 0, 86


def _measure_in_child(loaded: LoadedModel, cell, context: dict, conn, log_path: str) -> bool:
    """Measures the cell in a child forked from this worker (forks_cells), which sends the rows itself; returns
    whether it went well. A child that dies without saying so (a crash, the kernel's OOM killer) is said to."""
    import torch

    sys.stdout.flush()
    sys.stderr.flush()
    worker, file_pages = os.getpid(), resident_file_pages()
    child = os.fork()
    if child == 0:
        die_with_parent(worker)
        touch_pages(file_pages)
        torch.set_num_threads(loaded.child_threads)
        went_well = measure_and_report(loaded, cell, context, conn)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(CHILD_DONE if went_well else CHILD_FAILED)
    _, status = os.waitpid(child, 0)
    code = os.waitstatus_to_exitcode(status)
    if code not in (CHILD_DONE, CHILD_FAILED):
        conn.send(("error", f"the cell's process died ({exit_description(code)}); see {log_path}"))
    return code == CHILD_DONE


def exit_description(code: int | None) -> str:
    """A process's end as `signal 11 (SIGSEGV)` or `exit code 3`."""
    return f"signal {-code} ({signal.Signals(-code).name})" if code and code < 0 else f"exit code {code}"


# An engine's shutdown (vLLM stops its engine process) that takes longer than this is cut short.
CLOSE_TIMEOUT_S = 60


class CellWorker:
    """A worker process for the cells of one load key, given to it in turn; the first loads the model."""

    def __init__(self, cell, online: bool):
        self.load_key = cell.load_key
        mp = multiprocessing.get_context("spawn")
        self.conn, child = mp.Pipe()
        # Not daemonic, so that an engine may start processes of its own (vLLM's ranks): die_with_parent and
        # close() end it instead.
        self.process = mp.Process(target=_worker_main, args=(child, online, os.getpid(), cell.memory_limit_mib))
        self.process.start()
        child.close()
        self.idle = True  # no cell in hand: it may be asked to close

    def serves(self, cell) -> bool:
        return self.process.is_alive() and cell.load_key == self.load_key and shares_worker(cell)

    def measure(self, cell, context: dict, on_row, log_path: Path) -> str | None:
        """Has the cell measured, passing on each row; returns None on success or why it failed."""
        self.conn.send((cell, context, str(log_path)))
        self.idle = False
        deadline = time.monotonic() + cell.timeout_s
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return f"timeout: the cell ran past its limit of {cell.timeout_s:g} s and was killed"
            if not self.conn.poll(min(remaining, 0.5)):
                continue
            try:
                kind, payload = self.conn.recv()
            except EOFError:
                self.process.join(timeout=10)
                return f"worker died ({exit_description(self.process.exitcode)}); see {log_path}"
            if kind == "row":
                on_row(payload)
            else:
                self.idle = payload is None
                return payload  # None when done, else the error

    def close(self) -> None:
        """Ends the worker: asked to close its engine first where its last cell went well, else killed."""
        if self.idle and self.process.is_alive():
            self.conn.send(None)
            self.process.join(timeout=CLOSE_TIMEOUT_S)
        if self.process.is_alive():
            self.process.kill()
        self.process.join(timeout=10)
        self.conn.close()


class Workers:
    """Hands each cell to a worker: the current one where it holds the cell's model loaded the same way, else a new
    one. A cell that fails, or that must have a worker of its own, ends its worker."""

    def __init__(self, online: bool):
        self.online = online
        self.current: CellWorker | None = None

    def measure(self, cell, context: dict, on_row, log_path: Path) -> str | None:
        if self.current and not self.current.serves(cell):
            self.close()
        self.current = self.current or CellWorker(cell, self.online)
        problem = self.current.measure(cell, context, on_row, log_path)
        if problem or not shares_worker(cell):
            self.close()
        return problem

    def close(self) -> None:
        if self.current:
            self.current.close()
            self.current = None
