"""The contract every inference engine fulfils; scenarios talk to engines only through it."""

import json
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from harness.measure.roofline import ModelShape

if TYPE_CHECKING:
    from harness.backends.openai import Stream


@dataclass
class Generation:
    """One batched generation.

    `t_send` is the host clock (time.perf_counter) when the batch was issued; `token_times[i]` is when output
    token i + 1 of every sequence became available to the caller, read after a device synchronisation.
    In-process engines produce one token per sequence per step, so the times are shared by the batch; with
    speculative decoding (one sequence) a step may make several tokens available at once, which share its time.
    """

    new_token_ids: list[list[int]]
    t_send: float
    token_times: list[float]
    kv_cache_bytes: int | None = None
    # With speculative decoding: the model's forward steps (the prompt's included) and the draft tokens it checked.
    steps: int | None = None
    draft_tokens: int | None = None


def checkpoint_quantization(model_path: Path) -> str | None:
    """The quantisation a checkpoint's config.json declares (quantization_config), as rows name it in `dtype`:
    its method and bits ("awq-int4", "gptq-int4", "fp8"), or None for an unquantised checkpoint."""
    try:
        config = json.loads((Path(model_path) / "config.json").read_text()).get("quantization_config")
    except (OSError, ValueError):
        return None
    if not isinstance(config, dict) or not config.get("quant_method"):
        return None
    bits = config.get("bits") or config.get("w_bit")
    return f"{config['quant_method']}-int{bits}" if bits else str(config["quant_method"])


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

    capabilities: what it can measure, each naming the methods below that it makes work. "token_times":
    `generate`, timed per token in process (scenarios latency, throughput, find_max); "loglikelihood":
    `loglikelihood` and `loglikelihood_rolling`; "generation": `generate_text`; "router_stats": `count_routes`;
    "served": `connections`, `stream`, `text_of_length` and `ids_as_sent`, requests to a server (scenario served).
    Scenarios ask capabilities, never backend names, and refuse a backend that lacks one with a one-line ConfigError.
    The methods tagged with no capability every backend has.
    """

    name: str
    capabilities: frozenset[str]

    def load(self, model_path: Path, device: str, dtype: str, options: dict) -> None:
        """Loads the weights in `model_path` (a transformers-style folder) onto `device` ("auto" allowed)."""

    def info(self) -> BackendInfo:
        """The engine's version and the device and dtype actually used (after "auto" was resolved)."""

    def prompt_token_pool(self) -> list[int]:
        """Token ids that are safe to build synthetic prompts from (no special tokens)."""

    def text_of_length(self, ids: list[int]) -> str:
        """Text made from `ids` that the model's tokenizer encodes to exactly len(ids) tokens (special tokens
        excluded), or as near as re-cutting gets: how a synthetic prompt is sent to a server as text (capability
        "served")."""

    def ids_as_sent(self, ids: list[int]) -> list[int]:
        """The tokens the model's tokenizer makes of text_of_length(ids): a block that keeps its length when it opens
        a prompt sent as text (capability "served")."""

    def generate(self, prompts: list[list[int]], new_tokens: int) -> Generation:
        """Greedy generation of exactly `new_tokens` tokens for every prompt (EOS ignored), timed per token
        (capability "token_times"). An engine loaded to speculate returns Generation.steps and draft_tokens, and
        takes `speculate=False` for the same generation without speculation."""

    def loglikelihood(self, requests: list[tuple[str, str]]) -> list[tuple[float, bool]]:
        """For each (context, continuation): log P(continuation | context) summed over its tokens, and whether
        greedy decoding from the context would produce exactly the continuation (capability "loglikelihood")."""

    def loglikelihood_rolling(self, texts: list[str]) -> list[tuple[float, int]]:
        """For each whole text: its log-likelihood summed over all its tokens (the first predicted from the
        boundary token, a text longer than the model's window scored in overlapping windows) and its token count,
        for perplexity and bits per byte (capability "loglikelihood")."""

    def connections(self, concurrency: int | None) -> AbstractAsyncContextManager:
        """An async context manager: within it, `stream` sends through one pool of connections to the server, made
        in the running event loop, `concurrency` of them opened before the block starts (None: opened as requests
        need them). One load point of scenario served runs inside one (capability "served")."""

    async def stream(self, endpoint: str, prompt: str, output_tokens: int, timeout_s: float) -> "Stream":
        """One streamed greedy request of `output_tokens` tokens (EOS ignored where the server allows) to
        `endpoint` ("completions" or "chat"): `Stream.t_send` stamped just before the send, each non-empty text
        chunk with the host clock when the read that carried it returned. Never raises for what the server or
        network does (an HTTP error status, an error event, a timeout past `timeout_s`, a stream cut before its
        end): that becomes `Stream.error` (capability "served"; Stream is harness.backends.openai's)."""

    def model_shape(self) -> ModelShape | None:
        """Parameter counts (total, embedding lookup, routed experts) for the roofline figures; None where the
        weights live in another process (a server, vLLM's workers), which leaves the roofline figures out."""

    def generate_text(self, prompts: list[str], max_new_tokens: int, stop: list[str]) -> list[str]:
        """Greedy completions of text prompts, each cut at its first stop string (capability "generation")."""

    def count_tokens(self, texts: list[str]) -> list[int]:
        """How many tokens of the model's tokenizer each text takes (special tokens excluded)."""

    def count_routes(self):
        """For MoE models, a counter of the experts each token is routed to (its close() returns the per-layer
        counts); None for dense models (capability "router_stats")."""

    def cuda_devices(self) -> list[int]:
        """The CUDA device ordinals the engine computes on (a device map's, a tensor-parallel engine's), whose energy
        and memory NVML reports; [] off CUDA and where the engine is another machine's (a server)."""

    def reset_peak_memory(self) -> None:
        """Starts a new window for the device's peak-memory counters."""

    def memory(self) -> dict[str, float]:
        """Memory figures in MiB, named as in the metric dictionary (weights_mib, peak_allocated_mib, ...)."""

    def close(self) -> None:
        """Frees the model."""
