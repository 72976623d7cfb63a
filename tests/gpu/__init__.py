"""Tests of the CUDA path (`pytest -m gpu`): skipped with the reason where no CUDA device is present. A package, so
that its conftest.py does not take the name `conftest` from tests/conftest.py, which test modules import."""
