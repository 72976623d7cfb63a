"""The contract every inference engine fulfils; scenarios talk to engines only through it."""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from harness.measure.roofline import ModelShape


@dataclass
class Generation:
    """One batched generation.

    `t_send` is the host clock (time.perf_counter) when the batch was issued; `token_times[i]` is when output
    token i + 1 of every sequence became available to the caller, read after a device synchronisation.
    In-process engines produce one token per sequence per step, so the times are shared by the batch.
    """

    new_token_ids: list[list[int]]
    t_send: float
    token_times: list[float]
    kv_cache_bytes: int | None = None


@dataclass
class BackendInfo:
    backend: str
    backend_version: str
    device: str
    device_name: str
    dtype: str
    extra: dict = field(default_factory=dict)


class Backend(Protocol):
    """An engine loaded with one model on one device.

    capabilities: what it can measure. "token_times": per-token timestamps; "loglikelihood": scoring of
    continuations. Scenarios ask capabilities, never backend names.
    """

    name: str
    capabilities: frozenset[str]

    def load(self, model_path: Path, device: str, dtype: str, options: dict) -> None:
        """Loads the weights in `model_path` (a transformers-style folder) onto `device` ("auto" allowed)."""

    def info(self) -> BackendInfo:
        """The engine's version and the device and dtype actually used (after "auto" was resolved)."""

    def prompt_token_pool(self) -> list[int]:
        """Token ids that are safe to build synthetic prompts from (no special tokens)."""

    def generate(self, prompts: list[list[int]], new_tokens: int) -> Generation:
        """Greedy generation of exactly `new_tokens` tokens for every prompt (EOS ignored), timed per token."""

    def loglikelihood(self, requests: list[tuple[str, str]]) -> list[tuple[float, bool]]:
        """For each (context, continuation): log P(continuation | context) summed over its tokens, and whether
        greedy decoding from the context would produce exactly the continuation."""

    def model_shape(self) -> ModelShape:
        """Parameter counts (total, embedding lookup, routed experts) for the roofline figures."""

    def generate_text(self, prompts: list[str], max_new_tokens: int, stop: list[str]) -> list[str]:
        """Greedy completions of text prompts, each cut at its first stop string (capability "generation")."""

    def count_tokens(self, texts: list[str]) -> list[int]:
        """How many tokens of the model's tokenizer each text takes (special tokens excluded)."""

    def count_routes(self):
        """For MoE models, a counter of the experts each token is routed to (its close() returns the per-layer
        counts); None for dense models (capability "router_stats")."""

    def reset_peak_memory(self) -> None:
        """Starts a new window for the device's peak-memory counters."""

    def memory(self) -> dict[str, float]:
        """Memory figures in MiB, named as in the metric dictionary (weights_mib, peak_allocated_mib, ...)."""

    def close(self) -> None:
        """Frees the model."""
