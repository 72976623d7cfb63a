"""How close a result comes to the hardware's limits, and what it costs (METRICS.md mbu.v1, mfu.v1, cost.v1).

Pure arithmetic on counts the backend reports (ModelShape) and peaks from a profile or a calibration.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelShape:
    """Parameter counts that decide bytes moved and FLOPs spent per token."""

    total_params: int
    bytes_per_param: float
    # Input-embedding parameters not shared with the output head: a step reads only the rows of its tokens.
    lookup_only_params: int = 0
    # Routed-expert parameters (all experts of all layers), the number of experts per layer and how many a token uses.
    expert_params: int = 0
    num_experts: int = 0
    experts_per_token: int = 0
    # KV-cache bytes one token of context takes, where the engine's cache layout is known without running it
    # (llama.cpp's, from the GGUF); 0 where the engine reports its cache's bytes itself.
    kv_bytes_per_token: int = 0

    @property
    def active_params(self) -> int:
        """Parameters one token computes with: everything but the unused routed experts and the embedding lookup."""
        unused_experts = self.expert_params * (1 - self.experts_per_token / self.num_experts) if self.num_experts else 0
        return round(self.total_params - self.lookup_only_params - unused_experts)

    def weight_bytes_per_step(self, batch_size: int) -> float:
        """Weight bytes one decode step reads for `batch_size` sequences. Dense: all but the embedding lookup. MoE:
        each distinct expert the batch routes to is read once; with routing taken as uniform, the expected
        number of distinct experts per layer is E * (1 - (1 - k/E)^batch)."""
        params = self.total_params - self.lookup_only_params - self.expert_params
        if self.num_experts:
            share = 1 - (1 - self.experts_per_token / self.num_experts) ** batch_size
            params += self.expert_params * share
        return params * self.bytes_per_param


@dataclass(frozen=True)
class Limits:
    """The peaks a cell's results are held against: the profile's datasheet figures for the run's dtype (None where
    the profile has none) and this machine's calibrated ones; and the profile's price."""

    datasheet_gbps: float | None = None
    datasheet_tflops: float | None = None
    calibrated_gbps: float | None = None
    calibrated_tflops: float | None = None
    price_usd_per_hour: float | None = None


def mbu(shape: ModelShape, batch_size: int, kv_bytes_read_per_step: float, decode_tok_s: float,
        peak_gbps: float) -> float:
    """mbu.v1: (weight bytes + KV bytes read per step) x steps per second / peak bandwidth."""
    steps_per_s = decode_tok_s / batch_size
    return (shape.weight_bytes_per_step(batch_size) + kv_bytes_read_per_step) * steps_per_s / (peak_gbps * 1e9)


def mfu(shape: ModelShape, tok_s: float, peak_tflops: float) -> float:
    """mfu.v1: 2 x active params x tokens per second / peak dense FLOP/s for the dtype."""
    return 2 * shape.active_params * tok_s / (peak_tflops * 1e12)


def usd_per_mtok(price_usd_per_hour: float, output_tok_s: float) -> float:
    """cost.v1: price per hour / 3600 / output tokens per second x 1e6."""
    return price_usd_per_hour / 3600 / output_tok_s * 1e6


def mean_kv_bytes_read_per_step(kv_bytes_at_end: float, prompt_tokens: int, output_tokens: int) -> float:
    """A decode step reads the whole KV cache so far. The cache grows by one token per step, from prompt + 1 to
    prompt + n - 1 tokens, so the mean step reads it at prompt + n/2 tokens; `kv_bytes_at_end` is the cache holding
    prompt + n - 1 tokens."""
    per_token = kv_bytes_at_end / (prompt_tokens + output_tokens - 1)
    return per_token * (prompt_tokens + output_tokens / 2)
