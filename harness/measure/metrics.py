"""The metric dictionary: every figure bench writes, once. Its unit, formula id and definition (docs/METRICS.md is
generated from here: `python -m harness.measure.metrics`), which way is better, the statistic its value is (and so
its interval), where it shows (summary.csv, the console, the leaderboard), its rank as a quality headline and the
names peer tools give it. A scenario names the metric; everything downstream of a row reads it from here.
"""

import sys
from dataclasses import dataclass, field
from pathlib import Path

# The peer tools whose names for a figure the registry gives, by the keyword each takes in _m (one definition per
# name here; the peers' names are aliases, so a user can line bench's figures up with theirs).
PEERS = {"vllm": "vllm bench", "guidellm": "guidellm", "AIPerf": "AIPerf", "optimum_benchmark": "optimum-benchmark",
         "llama_bench": "llama-bench", "lm_eval": "lm-eval"}


@dataclass(frozen=True)
class Metric:
    unit: str
    formula: str
    direction: str  # "higher" or "lower" is better, or "neither" (a count that describes, never judged)
    definition: str
    # The statistic the row's value is, which its interval is computed for (harness/measure/intervals.py): the
    # median of repeated timings, the mean of per-example samples, a figure pooled over documents, or an exact value.
    statistic: str = "median"
    console: str | None = None  # its column title in the console table; None: summary.csv only
    headline: int | None = None  # rank as the headline figure of a quality line (1 first)
    leaderboard: int | None = None  # its place among the leaderboard's figure columns (the latency line at batch 1)
    aliases: dict = field(default_factory=dict)


def _m(unit, formula, direction, definition, statistic="median", console=None, headline=None, leaderboard=None,
       **aliases) -> Metric:
    return Metric(unit, formula, direction, definition, statistic, console, headline, leaderboard,
                  {PEERS[peer]: name for peer, name in aliases.items()})


METRICS: dict[str, Metric] = {
    "ttft_ms": _m("ms", "ttft.v1", "lower", "t_1 - t_send: the first output token's time after the request (batch: "
                  "after the batch) was sent", console="ttft_ms", leaderboard=2, vllm="TTFT",
                  guidellm="time_to_first_token_ms", AIPerf="time_to_first_token"),
    "tpot_ms": _m("ms", "tpot.v1", "lower", "(t_n - t_1) / (n - 1): mean time per output token after the first "
                  "(through a server, n is the server's token count where it reports one); undefined (not 0) when "
                  "n <= 1", console="tpot_ms", leaderboard=3, vllm="TPOT",
                  guidellm="inter_token_latency_ms", AIPerf="inter_token_latency"),
    "e2e_latency_ms": _m("ms", "e2e.v1", "lower", "t_n - t_send: the whole request", vllm="E2EL",
                         guidellm="request_latency", AIPerf="request_latency"),
    "prefill_tok_s": _m("tok/s", "prefill.v1", "higher", "p x batch / (t_1 - t_send): prompt tokens per second up to "
                        "the first token, measured directly at the first decode step (device synchronised)",
                        console="prefill_tok/s", optimum_benchmark="prefill.throughput", llama_bench="pp t/s"),
    "decode_tok_s": _m("tok/s", "decode.v1", "higher", "batch x (n - 1) / (t_n - t_1) at a fixed n (EOS ignored): "
                       "output tokens per second after the first, summed over the batch (speculating in process: "
                       "the tokens after those that came with the first, over the same time)", console="decode_tok/s",
                       leaderboard=1, optimum_benchmark="decode.throughput", llama_bench="tg t/s"),
    "peak_rss_mib": _m("MiB", "rss.v3", "lower", "the kernel's high-water mark of the resident set (VmHWM) over "
                       "the model's load and the cell: the load's mark and the cell's own, whichever is higher. The "
                       "cell's own is that of a process forked from the worker just after the load where cells share "
                       "a CPU worker of an in-process engine (transformers), else of the worker, reset as the cell "
                       "starts", "exact",
                       console="peak_rss_MiB", leaderboard=4,
                       optimum_benchmark="memory.max_ram"),
    "peak_allocated_mib": _m("MiB", "torchmem.v1", "lower", "torch.cuda / torch.mps peak allocated bytes, reset "
                             "before the phase", "exact", leaderboard=5,
                             optimum_benchmark="memory.max_allocated"),
    "peak_reserved_mib": _m("MiB", "torchmem.v1", "lower", "torch.cuda peak reserved bytes (the caching "
                            "allocator's), reset before the phase", "exact", optimum_benchmark="memory.max_reserved"),
    "peak_device_mib": _m("MiB", "nvml.v1", "lower", "NVML memory that the engine's processes hold on its CUDA "
                          "devices after the phase, CUDA contexts included", "exact",
                          optimum_benchmark="memory.max_process_vram"),
    "weights_mib": _m("MiB", "weights.v1", "lower", "bytes of the weights as loaded (parameters + buffers)", "exact"),
    "kv_cache_mib": _m("MiB", "kvcache.v1", "lower", "bytes of the KV cache left after a generation", "exact"),
    "accuracy": _m("fraction", "acc.v1", "higher", "share of questions whose highest summed log-likelihood "
                   "continuation is the right one", "mean", headline=1, lm_eval="acc"),
    "acc_norm": _m("fraction", "acc_norm.v1", "higher", "as accuracy, each choice's log-likelihood divided by the "
                   "characters of the choice text (the continuation less its leading space), as lm-eval's acc_norm",
                   "mean", lm_eval="acc_norm"),
    "exact_match": _m("fraction", "em.v1", "higher", "share of answers equal to the reference after the task's "
                      "extraction rule", "mean", headline=2, lm_eval="exact_match"),
    "pass_at_1": _m("fraction", "passk.v1", "higher", "share of problems whose greedy completion passes its tests "
                    "in the sandbox", "mean", headline=3, lm_eval="pass@1"),
    "perplexity": _m("ratio", "ppl.v1", "lower", "exp(-sum log p / tokens), pooled over the documents", "pooled",
                     headline=4, lm_eval="word_perplexity (per word, not per token)"),
    "bits_per_byte": _m("bits/byte", "ppl.v1", "lower", "-sum log p / (ln 2 x UTF-8 bytes), pooled over the "
                        "documents", "pooled", lm_eval="bits_per_byte"),
    "tokens_per_answer": _m("tok", "tokens_per_answer.v1", "neither", "generated tokens per answer (the model's "
                            "tokenizer, after the stop-string cut)", "mean"),
    "eval_s": _m("s", "evaltime.v1", "lower", "wall time of scoring a quality task, the model loaded", "exact"),
    "mbu": _m("fraction", "mbu.v1", "higher", "(weight bytes + KV bytes read per decode step) x steps/s / the "
              "profile's datasheet memory bandwidth (a step: one token per sequence, or with speculation one "
              "forward pass of the model; a draft model's reads are not counted)", console="mbu_sheet"),
    "mbu_calibrated": _m("fraction", "mbu.v1", "higher", "as mbu, over this machine's calibrated copy bandwidth",
                         console="mbu_cal"),
    "mfu": _m("fraction", "mfu.v1", "higher", "2 x active params x prefill tok/s / the profile's datasheet dense "
              "FLOP/s for the dtype"),
    "mfu_calibrated": _m("fraction", "mfu.v1", "higher", "as mfu, over this machine's calibrated matmul FLOP/s"),
    "calibrated_bandwidth_gbps": _m("GB/s", "calib_bw.v1", "higher", "bytes read + written per second by a large "
                                    "device copy (256 MiB on CPUs, 1 GiB on GPUs); on a CPU, only where other "
                                    "processes took at most 10% of its time meanwhile"),
    "calibrated_tflops": _m("TFLOP/s", "calib_flops.v1", "higher", "2 n^3 / s of an n x n matmul in the run's "
                            "dtype; on a CPU, only where other processes took at most 10% of its time meanwhile"),
    "allreduce_busbw_gbps": _m("GB/s", "busbw.v1", "higher", "all-reduce across every GPU: bytes / s x 2 (n - 1) / "
                               "n, nccl-tests' bus bandwidth"),
    "energy_j": _m("J", "energy.v1", "lower", "energy counter delta over whole generate() calls (NVML, or RAPL on "
                   "CPUs), minus idle power x time measured just before"),
    "j_per_tok": _m("J", "energy.v1", "lower", "energy_j / output tokens", leaderboard=6,
                    optimum_benchmark="energy per token"),
    "tok_per_j": _m("tok/J", "energy.v1", "higher", "output tokens / energy_j"),
    "usd_per_mtok": _m("$", "cost.v1", "lower", "the profile's price per hour / 3600 / output tok/s of whole "
                       "generate() calls x 1e6", console="$/Mtok", leaderboard=7),
    "expert_imbalance": _m("ratio", "router.v1", "lower", "per MoE layer, the busiest expert's token count over "
                           "the mean (samples); the value is the worst layer's", "exact"),
    "total_params": _m("params", "params.v1", "neither", "parameters of the model", "exact"),
    "active_params": _m("params", "params.v1", "neither", "parameters one token computes with (a MoE's unused "
                        "experts and the embedding lookup left out)", "exact"),
    "itl_ms": _m("ms", "itl.v1", "lower", "every gap t_(i+1) - t_i over all requests, pooled; chunks of several "
                 "tokens make zero gaps (chunks_per_token beside it)", vllm="ITL", AIPerf="inter_chunk_latency"),
    "output_tok_s": _m("tok/s", "output.v1", "higher", "served load: all output tokens (the server's count of each "
                       "request where it reports one, else the re-tokenized text's) / wall time of the measured window",
                       console="output_tok/s", vllm="Output token throughput",
                       guidellm="output_tokens_per_second", AIPerf="output_token_throughput"),
    "request_s": _m("req/s", "reqs.v1", "higher", "completed requests / wall time of the measured window",
                    vllm="Request throughput", guidellm="requests_per_second", AIPerf="request_throughput"),
    "goodput_req_s": _m("req/s", "goodput.v1", "higher", "requests meeting every stated SLO (ttft, tpot, e2e) / "
                        "wall time", vllm="Request goodput"),
    "failed_requests": _m("req", "errors.v1", "lower", "requests that ended in an HTTP error, a server error event, "
                          "a timeout or a cut stream (the reasons counted)", "exact"),
    "prefix_cache_hit_rate": _m("fraction", "prefix_hit.v1", "higher", "prompt tokens the server took from its "
                                "prefix cache / prompt tokens it was sent, over the window: from each response "
                                "(llama.cpp's timings cache_n / (cache_n + prompt_n), or usage.prompt_tokens_details."
                                "cached_tokens / usage.prompt_tokens), else from /metrics (vLLM: the deltas of "
                                "prefix_cache_hits / prefix_cache_queries over the window)", "exact"),
    "usage_mismatch_output": _m("fraction", "usage.v1", "lower", "share of completed requests with a usage count "
                                "whose completion_tokens differs from bench's count (the model's tokenizer on the "
                                "streamed text); mean_difference beside it (server - bench)", "mean"),
    "usage_mismatch_prompt": _m("fraction", "usage.v1", "lower", "share of completed requests with a usage count "
                                "whose prompt_tokens differs from bench's count of the prompt as sent (completions: "
                                "the tokenizer with its special tokens; chat: the model's chat template with its "
                                "generation prompt); mean_difference beside it (server - bench)", "mean"),
    "server_kv_cache_usage": _m("fraction", "server_gauge.v1", "neither", "the server's KV-cache use (vLLM "
                                "kv_cache_usage_perc, llama.cpp kv_cache_usage_ratio), read from /metrics every "
                                "metrics_interval_s during the window (samples; max beside the median)"),
    "server_requests_running": _m("req", "server_gauge.v1", "neither", "requests the server is running (vLLM "
                                  "num_requests_running, llama.cpp requests_processing), sampled as "
                                  "server_kv_cache_usage"),
    "server_requests_waiting": _m("req", "server_gauge.v1", "lower", "requests queued at the server (vLLM "
                                  "num_requests_waiting, llama.cpp requests_deferred), sampled as "
                                  "server_kv_cache_usage"),
    "server_preemptions": _m("req", "server_counter.v1", "lower", "preemptions the server counted during the window "
                             "(vLLM num_preemptions: the delta from the window's start to its end)", "exact"),
    "ttft_history_slope_ms_per_ktok": _m("ms/ktok", "ttft_slope.v1", "lower", "multi-turn chat: the least-squares "
                                         "slope of each request's ttft_ms against its prompt's tokens (the "
                                         "conversation so far, through the chat template), per 1,000 tokens; its "
                                         "stderr and the requests' prompt_token_range beside it", "exact"),
    "reasoning_tokens": _m("tok", "reasoning.v1", "neither", "served requests that reason: tokens of the reasoning "
                           "(the chunks a server sends as reasoning_content, or a leading <think>...</think> block, "
                           "tags included), by the model's tokenizer; the server's reasoning_tokens beside it where "
                           "its usage gives them", "mean"),
    "answer_tokens": _m("tok", "reasoning.v1", "neither", "served requests that reason: tokens of the text after the "
                        "reasoning, by the model's tokenizer", "mean"),
    "ttfa_ms": _m("ms", "reasoning.v1", "lower", "time to the first answer token of a request that reasons: t_send to "
                  "the arrival of the first non-blank text after its reasoning (ttft_ms counts reasoning tokens as "
                  "output; a request that never answers has none)", AIPerf="time_to_first_output_token"),
    "spec_acceptance_rate": _m("fraction", "spec.v1", "higher", "speculative decoding: draft tokens the target "
                               "model accepted / draft tokens proposed, over the window (vLLM /metrics: the deltas "
                               "of spec_decode_num_accepted_tokens / spec_decode_num_draft_tokens) or, in process, "
                               "over the runs (output tokens - model steps) / drafts", "exact",
                               vllm="Acceptance rate"),
    "spec_mean_accepted_length": _m("tok", "spec.v1", "higher", "speculative decoding: tokens each verification step "
                                    "yields, 1 + accepted draft tokens / drafts (the target's own token counts), "
                                    "over the window; in process, output tokens / forward passes of the model "
                                    "(the prompt's included)", "exact", vllm="Mean acceptance length"),
    "spec_speedup": _m("x", "spec.v1", "higher", "speculative decoding in process: decode_tok_s of each speculative "
                       "run over that of the same generation without speculation run right after it (the pairs "
                       "alternate through the cell); the median of the pairs' ratios"),
    "schedule_lag_ms": _m("ms", "lag.v1", "lower", "trace replay: each request's send time after the window's start "
                          "minus its scheduled arrival (the trace's timestamp over time_scale); p99 and max beside "
                          "the median"),
    "slo_max_rate_req_s": _m("req/s", "slo_rate.v1", "higher", "the highest Poisson rate whose window met every SLO "
                             "at its percentile, found by bisection", "exact", console="slo_max_rate"),
    "max_batch_size": _m("seqs", "findmax.v1", "higher", "the largest batch size (at the search's prompt length) "
                         "whose generation did not run out of memory; first_failed: the smallest that did", "exact",
                         console="max_batch"),
    "max_prompt_tokens": _m("tok", "findmax.v1", "higher", "the largest prompt length (batch 1) whose generation "
                            "did not run out of memory; first_failed: the smallest that did", "exact",
                            console="max_prompt"),
}


def metric(name: str) -> Metric:
    try:
        return METRICS[name]
    except KeyError:
        raise KeyError(f"metric '{name}' is not in the metric dictionary (harness/measure/metrics.py)") from None


def console_columns() -> dict[str, str]:
    """The metrics of the console table and their titles, in registry order."""
    return {name: m.console for name, m in METRICS.items() if m.console}


def leaderboard_columns() -> list[str]:
    """The metrics of the leaderboard, in their order."""
    return sorted((name for name, m in METRICS.items() if m.leaderboard), key=lambda name: METRICS[name].leaderboard)


def headlines() -> list[str]:
    """Quality figures that head a quality line, best first."""
    return sorted((name for name, m in METRICS.items() if m.headline), key=lambda name: METRICS[name].headline)


DOC = Path(__file__).resolve().parent.parent.parent / "docs" / "METRICS.md"
RULES_MARK = "Rules for every measured figure:"


def dictionary_table() -> str:
    """The registry as the Markdown table at the head of docs/METRICS.md."""
    lines = ["| name | unit | formula id | better | statistic | definition | peers' names |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, m in METRICS.items():
        peers = "; ".join(f"{peer}: {alias}" for peer, alias in m.aliases.items())
        lines.append(f"| {name} | {m.unit} | {m.formula} | {m.direction} | {m.statistic} | {m.definition} | "
                     f"{peers} |")
    return "\n".join(lines)


def document(current: str) -> str:
    """docs/METRICS.md with its table made from the registry; the prose around the table is kept."""
    head, rest = current.split("<!-- registry -->", 1)
    rules = rest[rest.index(RULES_MARK):]
    return f"{head}<!-- registry -->\n{dictionary_table()}\n\n{rules}"


if __name__ == "__main__":  # python -m harness.measure.metrics: rewrite docs/METRICS.md's table from the registry
    DOC.write_text(document(DOC.read_text()))
    sys.stdout.write(f"written: {DOC}\n")
