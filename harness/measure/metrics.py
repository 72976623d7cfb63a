"""The metric dictionary in code: every figure's unit and formula id, as ../shared/design/METRICS.md defines them.

A scenario names the metric; the unit and formula come from here, so no two places can disagree.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class Metric:
    unit: str
    formula: str
    higher_is_better: bool
    # The statistic the row's value is, which its interval is computed for (harness/measure/intervals.py): the
    # median of repeated timings, the mean of per-example samples, a figure pooled over documents, or an exact count.
    statistic: str = "median"


METRICS: dict[str, Metric] = {
    "ttft_ms": Metric("ms", "ttft.v1", False),
    "tpot_ms": Metric("ms", "tpot.v1", False),
    "e2e_latency_ms": Metric("ms", "e2e.v1", False),
    "prefill_tok_s": Metric("tok/s", "prefill.v1", True),
    "decode_tok_s": Metric("tok/s", "decode.v1", True),
    "peak_rss_mib": Metric("MiB", "rss.v1", False, "exact"),
    "peak_allocated_mib": Metric("MiB", "torchmem.v1", False, "exact"),
    "peak_reserved_mib": Metric("MiB", "torchmem.v1", False, "exact"),
    # Bytes of the weights as loaded (parameters + buffers) and of the KV cache left after a generation.
    "weights_mib": Metric("MiB", "weights.v1", False, "exact"),
    "kv_cache_mib": Metric("MiB", "kvcache.v1", False, "exact"),
    "accuracy": Metric("fraction", "acc.v1", True, "mean"),
    "acc_norm": Metric("fraction", "acc.v1", True, "mean"),
    "exact_match": Metric("fraction", "em.v1", True, "mean"),
    "perplexity": Metric("ratio", "ppl.v1", False, "pooled"),
    "bits_per_byte": Metric("bits/byte", "ppl.v1", False, "pooled"),
    "pass_at_1": Metric("fraction", "passk.v1", True, "mean"),
    # Generated tokens per answer (the model's tokenizer, after the stop string cut).
    "tokens_per_answer": Metric("tok", "tokens_per_answer.v1", False, "mean"),
    # Wall time of scoring a quality task (model already loaded).
    "eval_s": Metric("s", "evaltime.v1", False, "exact"),
    # Roofline: against the profile's datasheet peak, and against this machine's calibrated peak (_calibrated).
    "mbu": Metric("fraction", "mbu.v1", True),
    "mbu_calibrated": Metric("fraction", "mbu.v1", True),
    "mfu": Metric("fraction", "mfu.v1", True),
    "mfu_calibrated": Metric("fraction", "mfu.v1", True),
    # Calibration: bytes read + written per second by a large device copy; 2 n^3 / s for an n x n matmul.
    "calibrated_bandwidth_gbps": Metric("GB/s", "calib_bw.v1", True),
    "calibrated_tflops": Metric("TFLOP/s", "calib_flops.v1", True),
    # All-reduce across every GPU (NCCL), per message size: bytes / s x 2 (n - 1) / n, nccl-tests' bus bandwidth.
    "allreduce_busbw_gbps": Metric("GB/s", "busbw.v1", True),
    # Energy of whole generate() calls (prefill + decode) net of idle power, per output token; and its inverse.
    "energy_j": Metric("J", "energy.v1", False),
    "j_per_tok": Metric("J", "energy.v1", False),
    "tok_per_j": Metric("tok/J", "energy.v1", True),
    # Output tokens per second of whole generate() calls (batch x n / e2e) priced at the profile's rate.
    "usd_per_mtok": Metric("$", "cost.v1", False),
    # MoE: the busiest expert's token count over the mean, per layer (samples); the value is the worst layer's.
    "expert_imbalance": Metric("ratio", "router.v1", False, "exact"),
    "total_params": Metric("params", "params.v1", False, "exact"),
    "active_params": Metric("params", "params.v1", False, "exact"),
    # Served load (an OpenAI-compatible server; one window of requests per load point). Per request: ttft_ms,
    # tpot_ms, e2e_latency_ms as above; itl_ms pools every gap between consecutive tokens of every request (its row
    # also carries chunks_per_token: chunks of several tokens make zero gaps).
    "itl_ms": Metric("ms", "itl.v1", False),
    "output_tok_s": Metric("tok/s", "output.v1", True),
    "request_s": Metric("req/s", "reqs.v1", True),
    "goodput_req_s": Metric("req/s", "goodput.v1", True),
    # Requests that ended in an HTTP error, a server error event, a timeout or a cut stream (the reasons counted).
    "failed_requests": Metric("req", "errors.v1", False, "exact"),
    # The highest Poisson rate whose window met every SLO at its percentile, found by bisection.
    "slo_max_rate_req_s": Metric("req/s", "slo_rate.v1", True, "exact"),
    # NVML memory used on the device by the engine's processes (vLLM).
    "peak_device_mib": Metric("MiB", "nvml.v1", False, "exact"),
    # find_max: the largest batch size / prompt length whose generation did not run out of memory (first_failed:
    # the smallest that did).
    "max_batch_size": Metric("seqs", "findmax.v1", True, "exact"),
    "max_prompt_tokens": Metric("tok", "findmax.v1", True, "exact"),
}


def metric(name: str) -> Metric:
    try:
        return METRICS[name]
    except KeyError:
        raise KeyError(f"metric '{name}' is not in the metric dictionary (harness/measure/metrics.py)") from None
