"""Speed scenarios: latency (batch 1) and offline throughput (a batch-size sweep), on synthetic prompts.

Definitions follow METRICS.md: ttft.v1, tpot.v1, e2e.v1, prefill.v1, decode.v1.
"""

import random

from harness.backends.base import Backend, Generation
from harness.errors import ConfigError
from harness.measure import energy, roofline
from harness.measure.memory import MIB
from harness.measure.recorder import Recorder
from harness.measure.stats import RepetitionPolicy, Series

PROMPT_SEED = 1234


def synthetic_prompts(pool: list[int], batch_size: int, prompt_tokens: int, seed: int = PROMPT_SEED) -> list[list[int]]:
    """Prompts of exactly `prompt_tokens` ids drawn from `pool` by the generator's own seeded RNG."""
    rng = random.Random(seed)
    return [[rng.choice(pool) for _ in range(prompt_tokens)] for _ in range(batch_size)]


def generation_figures(gen: Generation, prompt_tokens: int) -> dict[str, float | None]:
    """The per-run figures of one batched generation, by their METRICS.md formulas."""
    batch = len(gen.new_token_ids)
    t_1, t_n = gen.token_times[0], gen.token_times[-1]
    # Tokens after the first step's: n - 1, or fewer where speculation made several available with the first.
    decoded = len(gen.token_times) - gen.token_times.count(t_1)
    decode_seconds = t_n - t_1
    return {
        "ttft_ms": (t_1 - gen.t_send) * 1e3,
        "e2e_latency_ms": (t_n - gen.t_send) * 1e3,
        "prefill_tok_s": prompt_tokens * batch / (t_1 - gen.t_send),
        # Undefined, not zero, for a single output token.
        "tpot_ms": decode_seconds / decoded * 1e3 if decoded else None,
        "decode_tok_s": batch * decoded / decode_seconds if decoded and decode_seconds > 0 else None,
    }


def speculation_figures(gen: Generation) -> dict[str, float | None]:
    """spec.v1 of one speculative generation: draft tokens accepted / proposed, and tokens per step of the model
    (each step yields its accepted drafts and one token of the model's own)."""
    tokens, decode_seconds = len(gen.token_times), gen.token_times[-1] - gen.token_times[0]
    accepted = tokens - gen.steps
    return {"spec_acceptance_rate": accepted / gen.draft_tokens if gen.draft_tokens else None,
            "spec_mean_accepted_length": tokens / gen.steps,
            # The model's steps after the first, per second: each reads the weights once (mbu's rate).
            "decode_steps_s": (gen.steps - 1) / decode_seconds if decode_seconds > 0 else None}


def measure_generation(
    backend: Backend, recorder: Recorder, policy: RepetitionPolicy, batch_size: int, prompt_tokens: int,
    output_tokens: int, engine_step: str | None = None,
) -> None:
    prompts = synthetic_prompts(backend.prompt_token_pool(), batch_size, prompt_tokens)
    counter = recorder.energy
    idle_w = energy.measure_idle_power_w(counter) if counter else None
    last: list[Generation] = []

    def once() -> dict:
        if counter:
            gen, spent = energy.phase(counter, idle_w, lambda: backend.generate(prompts, output_tokens))
        else:
            gen, spent = backend.generate(prompts, output_tokens), None
        counts = {len(ids) for ids in gen.new_token_ids}
        if counts != {output_tokens} or len(gen.token_times) != output_tokens:
            raise RuntimeError(f"asked for {output_tokens} output tokens, got {sorted(counts)}")
        last[:] = [gen]
        figures = generation_figures(gen, prompt_tokens)
        figures["energy_j"] = spent.energy_j if spent else None
        if gen.steps is not None:
            figures.update(speculation_figures(gen), steps=gen.steps, draft_tokens=gen.draft_tokens)
            figures.update(_paired_plain(backend, prompts, gen, figures["decode_tok_s"], prompt_tokens))
        return figures

    backend.reset_peak_memory()
    # Steady state and convergence are judged on decode speed, the figure a generation is mostly about (on the
    # whole generation's time where a single output token leaves no decode).
    watched = "decode_tok_s" if output_tokens > 1 else "e2e_latency_ms"
    series = policy.run(once, watch=lambda run: run[watched])
    params = {"batch_size": batch_size, "prompt_tokens": prompt_tokens, "output_tokens": output_tokens}
    if engine_step:
        params["engine_step"] = engine_step
    for name in ("ttft_ms", "tpot_ms", "e2e_latency_ms", "prefill_tok_s", "decode_tok_s"):
        recorder.figure(name, [run[name] for run in series.runs], params, series=series)
    if last[0].steps is not None:
        _record_speculation(recorder, series, params, output_tokens)
    kv_bytes = last[0].kv_cache_bytes
    if kv_bytes is not None:
        recorder.figure("kv_cache_mib", [kv_bytes / MIB], params)
    _record_limits(backend, recorder, series, params, kv_bytes)
    if counter:
        _record_energy(recorder, series, params, idle_w)
    if "router_stats" in backend.capabilities:
        _record_expert_load(backend, recorder, prompts, output_tokens, params)
    for name, value in backend.memory().items():
        if name != "weights_mib":
            recorder.figure(name, [value], params)


def _paired_plain(backend: Backend, prompts, speculative: Generation, decode_tok_s: float | None,
                  prompt_tokens: int) -> dict:
    """The same generation without speculation, right after the speculative one (so the two alternate, as this
    machine's drifting speed needs): the pair's decode speed-up, and the first token where the outputs differ."""
    plain = backend.generate(prompts, len(speculative.token_times), speculate=False)
    plain_decode = generation_figures(plain, prompt_tokens)["decode_tok_s"]
    pairs = zip(plain.new_token_ids[0], speculative.new_token_ids[0], strict=True)
    return {"spec_speedup": decode_tok_s / plain_decode if decode_tok_s and plain_decode else None,
            "first_difference": next((i for i, (a, b) in enumerate(pairs) if a != b), None)}


def _record_speculation(recorder: Recorder, series: Series, params: dict, output_tokens: int) -> None:
    """Each run's acceptance rate and tokens per step (the value: pooled over the runs) and its speed-up over the
    plain generation paired with it, with whether every pair's outputs were equal: speculation that changes the
    output is not the same work done faster."""
    runs = series.runs
    differs = next((run["first_difference"] for run in runs if run["first_difference"] is not None), None)
    drafted, steps = sum(run["draft_tokens"] for run in runs), sum(run["steps"] for run in runs)
    tokens = output_tokens * len(runs)
    pooled = {"spec_acceptance_rate": (tokens - steps) / drafted if drafted else None,
              "spec_mean_accepted_length": tokens / steps, "spec_speedup": None}
    for name, value in pooled.items():
        recorder.figure(name, [run[name] for run in runs if run[name] is not None], params, value=value,
                        series=series, draft_tokens=drafted, steps=steps, output_equals_plain=differs is None,
                        first_difference=differs)


def _output_tok_s(run: dict, params: dict) -> float:
    return params["batch_size"] * params["output_tokens"] / (run["e2e_latency_ms"] / 1e3)


def _record_limits(backend: Backend, recorder: Recorder, series: Series, params: dict, kv_bytes: int | None) -> None:
    """mbu for decode, mfu for prefill (each against the datasheet and the calibrated peak), and cost."""
    shape, limits, batch, runs = backend.model_shape(), recorder.limits, params["batch_size"], series.runs
    kv_read = roofline.mean_kv_bytes_read_per_step(kv_bytes or 0, params["prompt_tokens"], params["output_tokens"])
    # No shape, no roofline: an engine whose weights live in its worker processes (vLLM) does not report one.
    for suffix, gbps, tflops in (("", limits.datasheet_gbps, limits.datasheet_tflops),
                                 ("_calibrated", limits.calibrated_gbps, limits.calibrated_tflops)) if shape else ():
        if gbps and kv_bytes is not None:  # per step of the model: one token per sequence, unless speculating
            decode = [run.get("decode_steps_s", run["decode_tok_s"]) for run in runs if run["decode_tok_s"]]
            recorder.figure(f"mbu{suffix}", [roofline.mbu(shape, batch, kv_read, v, gbps) for v in decode],
                            {**params, "peak_gbps": gbps}, series=series)
        if tflops:
            recorder.figure(f"mfu{suffix}", [roofline.mfu(shape, run["prefill_tok_s"], tflops) for run in runs],
                            {**params, "peak_tflops": tflops, "active_params": shape.active_params}, series=series)
    if limits.price_usd_per_hour:
        recorder.figure("usd_per_mtok", [roofline.usd_per_mtok(limits.price_usd_per_hour, _output_tok_s(run, params))
                                         for run in runs], {**params, "price_usd_per_hour": limits.price_usd_per_hour},
                        series=series)


def _record_expert_load(backend: Backend, recorder: Recorder, prompts, output_tokens: int, params: dict) -> None:
    """Per-layer expert-load histograms from one extra, untimed generation (the hooks stay out of the timed runs),
    and each layer's imbalance: the busiest expert's load over the mean load."""
    routes = backend.count_routes()
    if routes is None:
        return
    backend.generate(prompts, output_tokens)
    loads = [layer for layer in routes.close() if sum(layer)]
    if loads:
        imbalance = [max(layer) / (sum(layer) / len(layer)) for layer in loads]
        recorder.figure("expert_imbalance", imbalance, params, value=max(imbalance), histograms=loads)


def _record_energy(recorder: Recorder, series: Series, params: dict, idle_w: float) -> None:
    tokens = params["batch_size"] * params["output_tokens"]
    joules = [run["energy_j"] for run in series.runs]
    energy_params = {**params, "idle_w": idle_w, "energy_source": recorder.energy.source}
    recorder.figure("energy_j", joules, energy_params, series=series)
    recorder.figure("j_per_tok", [j / tokens for j in joules], energy_params, series=series)
    recorder.figure("tok_per_j", [tokens / j for j in joules if j > 0], energy_params, series=series)


# What a scenario that times `generate` says to a backend without it (a server), naming the scenario to use.
THROUGH_A_SERVER = {"latency": "for TTFT and TPOT through a server, use scenario served at concurrency 1",
                    "throughput": "for throughput through a server, use scenario served with a concurrency sweep",
                    "find_max": "a server's limits are its own settings (vLLM's --max-num-seqs, --max-model-len)"}


def require_token_times(backend: Backend, scenario: str) -> None:
    """Refuses, in one line, a backend without capability "token_times" (in-process generation timed per token)."""
    if "token_times" not in backend.capabilities:
        raise ConfigError(f"scenario {scenario} needs per-token times of in-process generation (capability "
                          f"token_times), which backend {backend.name} lacks: {THROUGH_A_SERVER[scenario]}")


def run_latency(backend: Backend, params: dict, recorder: Recorder) -> None:
    require_token_times(backend, "latency")
    measure_generation(backend, recorder, recorder.policy, 1, params["prompt_tokens"], params["output_tokens"],
                       params["engine"].get("step"))


def run_throughput(backend: Backend, params: dict, recorder: Recorder) -> None:
    require_token_times(backend, "throughput")
    for batch_size in params["batch_sizes"]:
        measure_generation(backend, recorder, recorder.policy, batch_size, params["prompt_tokens"],
                           params["output_tokens"], params["engine"].get("step"))
