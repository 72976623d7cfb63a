"""Shared fixtures: real models from the zoo (built or fetched once into the bench cache, then reused)."""

import pytest

from harness import zoo


@pytest.fixture(scope="session")
def tiny_dense():
    return zoo.resolve("tiny-dense", progress=False)


@pytest.fixture(scope="session")
def tiny_moe():
    return zoo.resolve("tiny-moe", progress=False)


@pytest.fixture(scope="session")
def smollm2():
    return zoo.resolve("smollm2-135m", progress=False)


def load_backend(model, device="cpu", dtype="fp32"):
    from harness.backends.transformers import TransformersBackend

    backend = TransformersBackend()
    backend.load(model.path, device, dtype, {})
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
                hog.wait()
        assert done.returncode == 0, f"bench run ({name}) failed:\n{done.stdout}"
    return {name: root / name for name in extra}
