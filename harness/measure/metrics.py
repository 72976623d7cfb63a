"""The metric dictionary in code: every figure's unit and formula id, as ../shared/design/METRICS.md defines them.

A scenario names the metric; the unit and formula come from here, so no two places can disagree.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class Metric:
    unit: str
    formula: str
    higher_is_better: bool


METRICS: dict[str, Metric] = {
    "ttft_ms": Metric("ms", "ttft.v1", False),
    "tpot_ms": Metric("ms", "tpot.v1", False),
    "e2e_latency_ms": Metric("ms", "e2e.v1", False),
    "prefill_tok_s": Metric("tok/s", "prefill.v1", True),
    "decode_tok_s": Metric("tok/s", "decode.v1", True),
    "peak_rss_mib": Metric("MiB", "rss.v1", False),
    "peak_allocated_mib": Metric("MiB", "torchmem.v1", False),
    "peak_reserved_mib": Metric("MiB", "torchmem.v1", False),
    # Bytes of the weights as loaded (parameters + buffers) and of the KV cache left after a generation.
    "weights_mib": Metric("MiB", "weights.v1", False),
    "kv_cache_mib": Metric("MiB", "kvcache.v1", False),
    "accuracy": Metric("fraction", "acc.v1", True),
}


def metric(name: str) -> Metric:
    try:
        return METRICS[name]
    except KeyError:
        raise KeyError(f"metric '{name}' is not in the metric dictionary (harness/measure/metrics.py)") from None
