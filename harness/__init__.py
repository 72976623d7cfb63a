"""bench: a local-inference benchmarking harness for open-weight language models."""

__version__ = "0.1.0"
