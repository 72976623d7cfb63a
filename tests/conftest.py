"""Shared fixtures: real models from the zoo (built or fetched once into the bench cache, then reused). And a check
that fails a test whose own calls (bench's code or the test's) use a deprecated API."""

import contextlib
import dataclasses
import logging
import os
import re
import sys
import warnings
from pathlib import Path

import pytest

import harness
from harness import zoo

# Deprecations that bench can fix fail the test that causes them. An ini filter ("error::FutureWarning:harness") cannot
# tell them: it matches the module that the warning's stacklevel points at, and transformers' deprecated forward
# arguments are reported at torch's Module.__call__, its deprecated output fields in a log line (not a warning at all).
# So each deprecation warning, and each line of transformers' log that says deprecated, is judged by the stack at the
# moment it is issued: the call that used the deprecated API is the first frame past the function that reports it and
# the call machinery around that (Module.__call__, decorators, accelerate's hooks, transformers' deprecation wrappers);
# or the frame the warning itself names. Where that frame is in harness/ or tests/, the test fails, naming it; a
# deprecation that third-party code causes by its own calls stays a warning (in pytest's summary). Workers and `bench`
# subprocesses are other processes: this sees only what a test runs in its own.
OURS = tuple(f"{folder.resolve()}{os.sep}" for folder in (Path(harness.__file__).parent, Path(__file__).parent))
DEPRECATIONS = (DeprecationWarning, PendingDeprecationWarning, FutureWarning)
DEPRECATED_LOG_LINE = re.compile(r"deprecat|will be removed", re.IGNORECASE)
# Frames of the code that delivers a warning or a log line, and of the machinery between a caller and the API it calls.
REPORTING = ("/warnings.py", "/logging/__init__.py", "/transformers/utils/logging.py")
PLUMBING = ("/functools.py", "/contextlib.py", "/torch/nn/modules/module.py", "/torch/utils/_contextlib.py",
            "/accelerate/hooks.py", "/transformers/utils/deprecation.py", "/transformers/utils/generic.py")
# bench's deprecated calls with no move yet, each with why: (the calling file, the message's start). They stay warnings.
TOLERATED = [
    # int8 weights (harness/backends/quantize.py): the successor is torchao's quantize_, not a dependency of bench.
    ("harness/backends/quantize.py", "torch.ao.quantization is deprecated"),
]
_CAUGHT = pytest.StashKey["Caught"]()


@dataclasses.dataclass
class Caught:
    """The deprecations a test has caused so far, each 'file:line: category: message': by bench's own calls (which
    fail the test) and by third-party code's (which do not)."""

    bench: list = dataclasses.field(default_factory=list)
    others: list = dataclasses.field(default_factory=list)

    def add(self, where: str | None, category: str, message: str) -> None:
        tolerated = where is not None and any(where.rsplit(":", 1)[0].replace(os.sep, "/").endswith(file)
                                              and message.startswith(start) for file, start in TOLERATED)
        (self.bench if where is not None and not tolerated else self.others).append(
            f"{where or '-'}: {category}: {message}" + (" (tolerated: see TOLERATED)" if tolerated else ""))


def _in(frame, suffixes) -> bool:
    return frame.f_code.co_filename.replace(os.sep, "/").endswith(suffixes)


def _ours(filename: str) -> bool:
    return os.path.realpath(filename).startswith(OURS)


def bench_caller(frame, named_file: str | None = None) -> str | None:
    """'file:line' of bench's own call that a deprecation reported from `frame` (the hook's caller) is due to, or None
    where the call is third-party code's."""
    while frame is not None and _in(frame, REPORTING):
        frame = frame.f_back
    if frame is not None and not _ours(frame.f_code.co_filename):
        frame = frame.f_back  # the reporting function: the deprecated API itself (or its wrapper)
        while frame is not None and _in(frame, PLUMBING):
            frame = frame.f_back
    if frame is not None and _ours(frame.f_code.co_filename):
        return f"{frame.f_code.co_filename}:{frame.f_lineno}"
    return named_file if named_file is not None and _ours(named_file.rsplit(":", 1)[0]) else None


class _DeprecatedLogLines(logging.Handler):
    def __init__(self, caught: Caught):
        super().__init__(logging.WARNING)
        self.caught = caught

    def emit(self, record):
        message = record.getMessage()
        if DEPRECATED_LOG_LINE.search(message):
            self.caught.add(bench_caller(sys._getframe(1)), record.name, message)


@contextlib.contextmanager
def _deprecations_caught(caught: Caught):
    previous = warnings.showwarning

    def showwarning(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, DEPRECATIONS):
            caught.add(bench_caller(sys._getframe(1), f"{filename}:{lineno}"), category.__name__, str(message))
        previous(message, category, filename, lineno, file, line)  # on to pytest's record of the test's warnings

    handler, logger = _DeprecatedLogLines(caught), logging.getLogger("transformers")
    if (hf_logging := sys.modules.get("transformers.utils.logging")) is not None:
        hf_logging.warning_once.cache_clear()  # "once" per test, not per session: each test that causes one sees it
    warnings.showwarning = showwarning
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        warnings.showwarning = previous


def _failing_on_deprecations(item):
    caught = item.stash.setdefault(_CAUGHT, Caught())
    with _deprecations_caught(caught):
        result = yield
    if caught.bench:
        lines = list(dict.fromkeys(caught.bench))
        caught.bench.clear()
        pytest.fail("a deprecated API used by bench's own code (move to what the message names):\n"
                    + "\n".join(lines), pytrace=False)
    return result


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item):
    return (yield from _failing_on_deprecations(item))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    return (yield from _failing_on_deprecations(item))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item):
    return (yield from _failing_on_deprecations(item))


@pytest.fixture
def deprecations(request) -> Caught:
    """The deprecations the current test has caused so far (a test of the check above empties `bench`, so that it
    passes)."""
    return request.node.stash.setdefault(_CAUGHT, Caught())


@pytest.fixture(scope="session")
def tiny_dense():
    return zoo.resolve("tiny-dense", progress=False)


@pytest.fixture(scope="session")
def tiny_moe():
    return zoo.resolve("tiny-moe", progress=False)


@pytest.fixture(scope="session")
def smollm2():
    return zoo.resolve("smollm2-135m", progress=False)


def load_backend(model, device="cpu", dtype="fp32", **engine):
    """A transformers backend of `model`, loaded with `engine` settings (none: the defaults)."""
    from harness.backends.transformers import TransformersBackend

    backend = TransformersBackend()
    backend.load(model.path, device, dtype, engine)
    return backend


@pytest.fixture(scope="session")
def smollm2_backend(smollm2):
    backend = load_backend(smollm2)
    yield backend
    backend.close()


@pytest.fixture(scope="session")
def tiny_dense_backend(tiny_dense):
    backend = load_backend(tiny_dense)
    yield backend
    backend.close()


@pytest.fixture(scope="session")
def make_backend():
    """Loads a fresh backend (for tests that need two of one model, e.g. with other batch sizes)."""
    return load_backend


def by_load(rows: list[dict]) -> dict:
    """Served-load rows by load point ("concurrency=2", "rate=4") and metric; the SLO search's probes left out."""
    grouped = {}
    for row in rows:
        if "load" in row["params"] and not row["params"].get("search"):
            grouped.setdefault(row["params"]["load"], {})[row["metric"]] = row
    return grouped


# A model name that is markup to a browser and a formula to a spreadsheet: the results tools must show it as text.
HOSTILE_MODEL = "=1+1<img src=x onerror=\"document.title='pwned'\">"


# The result_runs fixture below takes 390 s here (three bench runs, one on a machine its CPU hogs slow down), paid by
# whichever test asks for it first: every test that does gets this per-test timeout instead of pyproject's.
RESULT_RUNS_TIMEOUT_S = 1200


def pytest_collection_modifyitems(items):
    for item in items:
        if "result_runs" in getattr(item, "fixturenames", ()) and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(RESULT_RUNS_TIMEOUT_S))
    gpu_tests = [item for item in items if item.get_closest_marker("gpu")]
    reason = _without_cuda() if gpu_tests else None
    if reason:
        for item in gpu_tests:
            item.add_marker(pytest.mark.skip(reason=reason))


def _without_cuda() -> str | None:
    """Why the `gpu` tests (tests/gpu/) cannot run here, or None where a CUDA device is present. torch is imported
    only once a gpu test has been collected, so that this file keeps the CLI's rule of no torch at import."""
    try:
        import torch
    except ImportError as exc:
        return f"needs a CUDA GPU: torch cannot be imported ({exc})"
    if not torch.cuda.is_available():
        return (f"needs a CUDA GPU: torch.cuda.is_available() is false (torch {torch.__version__}, "
                f"CUDA build {torch.version.cuda or 'none'})")
    return None


@pytest.fixture(scope="session")
def result_runs(tmp_path_factory, tiny_dense):
    """Real `bench run`s of tests/fixtures/suite_results.yaml on tiny-dense, one after another: `base` and `same`
    (the same suite), and `slowed`: the other dtype (fp32 where `auto` picks bf16, else bf16), run while a busy
    loop holds every core (a deliberately slowed machine: on a model this small the dtype alone may go either way),
    and also on a copy of tiny-dense named HOSTILE_MODEL."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from harness.hardware import auto_dtype

    root = tmp_path_factory.mktemp("result_runs")
    suite = str(Path(__file__).parent / "fixtures" / "suite_results.yaml")
    (root / HOSTILE_MODEL).symlink_to(tiny_dense.path, target_is_directory=True)
    slow_dtype = "fp32" if auto_dtype("cpu") == "bf16" else "bf16"
    command = [sys.executable, "-m", "harness", "run", "--suite", suite, "--no-progress", "--out"]
    extra = {"base": [], "same": [], "slowed": ["--dtype", slow_dtype, "--model", "tiny-dense", "--model",
                                                 HOSTILE_MODEL]}
    for name, args in extra.items():
        hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
                for _ in range(os.cpu_count() or 1)] if name == "slowed" else []
        try:
            done = subprocess.run([*command, str(root / name), *args], cwd=root, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True, timeout=1200)
        finally:
            for hog in hogs:
                hog.kill()
                hog.wait(timeout=30)
        assert done.returncode == 0, f"bench run ({name}) failed:\n{done.stdout}"
    return {name: root / name for name in extra}
