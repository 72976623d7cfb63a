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
