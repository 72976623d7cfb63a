"""Served load (scenario `served`): streamed requests to an OpenAI-compatible server at a fixed concurrency or with
gamma-distributed arrivals at a rate (burstiness 1: Poisson), sweeps over either, and a bisection for the highest rate
that meets SLOs. One window of `requests` requests per load point.

Definitions follow METRICS.md: ttft.v1, tpot.v1, e2e.v1 per request; itl.v1 pooled; output.v1, reqs.v1, goodput.v1
over the window's wall time (from the first send to the last response's end).
"""

import asyncio
import random
import time
from collections import Counter

from harness.backends.base import Generation
from harness.backends.openai import Stream, token_times
from harness.errors import ConfigError
from harness.measure import roofline
from harness.measure.recorder import Recorder
from harness.measure.stats import percentile
from harness.scenarios.speed import generation_figures, synthetic_prompts

PER_REQUEST = ("ttft_ms", "tpot_ms", "e2e_latency_ms")


def arrival_offsets(count: int, rate: float, burstiness: float, rng: random.Random) -> list[float]:
    """Seconds after the window's start at which each request is sent: gaps drawn from a gamma distribution of
    shape `burstiness` and mean 1 / rate (burstiness 1: a Poisson process; below 1 burstier, above 1 steadier)."""
    offsets, t = [], 0.0
    for _ in range(count):
        offsets.append(t)
        t += rng.gammavariate(burstiness, 1.0 / (rate * burstiness))
    return offsets


def build_prompts(backend, params: dict) -> list[str]:
    """`requests` prompts: seeded synthetic text of exactly prompt_tokens tokens, or the task's prompts in turn."""
    count = params["requests"]
    if params["prompts"] == "synthetic":
        ids = synthetic_prompts(backend.prompt_token_pool(), count, params["prompt_tokens"], params["seed"])
        return [backend.text_of_length(prompt) for prompt in ids]
    from harness.quality import tasks

    contexts = tasks.prepare(tasks.load_task(params["prompts"]), None, params["seed"]).contexts
    return [contexts[i % len(contexts)] for i in range(count)]


async def _window(backend, params: dict, prompts: list[str], concurrency: int | None,
                  offsets: list[float]) -> tuple[list[Stream], float]:
    """One load point: the prompts sent at their offsets, at most `concurrency` in flight, through one pool of
    connections that lives as long as the window (at a fixed concurrency its connections open before the clock
    starts, as vLLM's benchmark client reuses those of its warm-up); the streams and the window's seconds."""
    async with backend.connections(concurrency):
        limit = asyncio.Semaphore(concurrency or len(prompts))
        start = time.perf_counter()

        async def one(prompt: str, offset: float) -> Stream:
            await asyncio.sleep(max(0.0, start + offset - time.perf_counter()))
            async with limit:
                return await backend.stream(params["endpoint"], prompt, params["output_tokens"], params["timeout_s"])

        streams = await asyncio.gather(*(one(p, o) for p, o in zip(prompts, offsets, strict=True)))
        seconds = time.perf_counter() - start
    return list(streams), seconds


def window_figures(streams: list[Stream], seconds: float, count_tokens, slo: dict) -> dict:
    """Per-request samples and window figures of one load point."""
    samples: dict[str, list] = {name: [] for name in PER_REQUEST}
    gaps, errors, tokens, counted, chunks, good = [], Counter(), 0, 0, 0, 0
    for stream in streams:
        times = token_times(stream, count_tokens) if not stream.error else []
        if not stream.error and not times:
            stream.error = "no output tokens"
        if stream.error:
            errors[stream.error] += 1
            continue
        figures = generation_figures(Generation([[]], stream.t_send, times), 0)
        if stream.server_tokens and stream.server_tokens > 1:
            # The tokens the server generated, where it says how many: re-tokenizing the text is only an estimate
            # (merges make it lower; a byte token cut from its character, re-encoded, higher).
            figures["tpot_ms"] = (times[-1] - times[0]) / (stream.server_tokens - 1) * 1e3
        for name in PER_REQUEST:
            samples[name].append(figures[name])
        gaps.extend(b - a for a, b in zip(times, times[1:], strict=False))
        counted += len(times)
        chunks += len(stream.chunk_times)
        tokens += stream.server_tokens or len(times)
        # An undefined tpot (one token) cannot break its limit.
        good += all(figures[name] is None or figures[name] <= limit for name, limit in slo.items()
                    if name in PER_REQUEST)
    # tokens: the server's count of each request where it gave one, else ours; counted: ours (the stamped tokens).
    return {**samples, "itl_ms": [gap * 1e3 for gap in gaps], "tokens": tokens, "counted_tokens": counted,
            "chunks": chunks, "completed": len(streams) - sum(errors.values()), "errors": errors, "good": good,
            "seconds": seconds}


def meets_slo(window: dict, slo: dict) -> bool:
    """Every request completed, and each stated limit holds at the SLO's percentile (default 90)."""
    q = slo.get("percentile", 90)
    return not window["errors"] and all(
        (value := percentile(window[name], q)) is None or value <= limit
        for name, limit in slo.items() if name in PER_REQUEST)


def _record(recorder: Recorder, window: dict, params: dict, slo: dict) -> None:
    for name in (*PER_REQUEST, "itl_ms"):
        extra = {"p99": percentile(window[name], 99)}
        if name == "itl_ms":
            counted = window["counted_tokens"]
            extra["chunks_per_token"] = window["chunks"] / counted if counted else None
        recorder.figure(name, window[name], params, **extra)
    seconds = window["seconds"]
    recorder.figure("output_tok_s", [window["tokens"] / seconds], params, tokens=window["tokens"], seconds=seconds,
                    counted_tokens=window["counted_tokens"])
    recorder.figure("request_s", [window["completed"] / seconds], params)
    if slo:
        recorder.figure("goodput_req_s", [window["good"] / seconds], {**params, "slo": slo},
                        meets_slo=meets_slo(window, slo))
    recorder.figure("failed_requests", [sum(window["errors"].values())], params, errors=dict(window["errors"]))


class _LoadPoints:
    """Runs windows on one event loop with the cell's prompts, and records each as it ends."""

    def __init__(self, backend, params: dict, recorder: Recorder, warmup: int):
        self.backend, self.params, self.recorder = backend, params, recorder
        # The warm-up's prompts come first in the seeded list and are not timed: a server that caches prefixes
        # would answer a timed prompt it saw warm faster.
        prompts = build_prompts(backend, {**params, "requests": warmup + params["requests"]})
        self.warmups, self.prompts = prompts[:warmup], prompts[warmup:]
        self.loop = asyncio.new_event_loop()
        self.base = {key: params[key] for key in ("endpoint", "prompts", "output_tokens", "requests", "seed")}
        if params["prompts"] == "synthetic":
            self.base["prompt_tokens"] = params["prompt_tokens"]

    def warm_up(self) -> None:
        """Untimed requests one after another, so the first window does not pay for the server's first request."""
        if self.warmups:
            self.loop.run_until_complete(
                _window(self.backend, self.params, self.warmups, 1, [0.0] * len(self.warmups)))

    def run(self, concurrency: int | None = None, rate: float | None = None, search: bool = False) -> dict:
        if rate is None:
            offsets = [0.0] * len(self.prompts)
            load = {"load": f"concurrency={concurrency}", "concurrency": concurrency}
        else:
            burstiness = self.params["burstiness"]
            offsets = arrival_offsets(len(self.prompts), rate, burstiness, random.Random(self.params["seed"]))
            load = {"load": f"rate={rate:g}", "rate_req_s": rate, "burstiness": burstiness}
        streams, seconds = self.loop.run_until_complete(
            _window(self.backend, self.params, self.prompts, concurrency, offsets))
        window = window_figures(streams, seconds, self.backend.count_tokens, self.params["slo"])
        params = {**self.base, **load, **({"search": True} if search else {})}
        _record(self.recorder, window, params, self.params["slo"])
        if concurrency == 1 and self.params["prompts"] == "synthetic":
            _record_roofline(self.backend, self.recorder, window, params)
        return window


def _record_roofline(backend, recorder: Recorder, window: dict, params: dict) -> None:
    """mbu of one request at a time (METRICS.md mbu.v1, decode steps/s = 1000 / tpot_ms), where the backend knows
    the bytes its server reads per step (llama.cpp: the GGUF's tensors, and the KV cache from its layout)."""
    shape = backend.model_shape()
    if shape is None or not shape.kv_bytes_per_token:
        return
    prompt, output = params["prompt_tokens"], params["output_tokens"]
    kv_read = roofline.mean_kv_bytes_read_per_step(shape.kv_bytes_per_token * (prompt + output - 1), prompt, output)
    for name, gbps in (("mbu", recorder.limits.datasheet_gbps), ("mbu_calibrated", recorder.limits.calibrated_gbps)):
        if gbps:
            recorder.figure(name, [roofline.mbu(shape, 1, kv_read, 1000 / tpot, gbps) for tpot in window["tpot_ms"]
                                   if tpot], {**params, "peak_gbps": gbps})


def run_served(backend, params: dict, recorder: Recorder) -> None:
    if "served" not in backend.capabilities:
        raise ConfigError(f"scenario served needs a server backend (openai), not {backend.name}")
    points = _LoadPoints(backend, params, recorder, recorder.policy.warmup)
    try:
        points.warm_up()
        if params["rates"]:
            for rate in params["rates"]:
                points.run(rate=rate)
        else:
            for concurrency in params["concurrency"]:
                points.run(concurrency=concurrency)
        if params["search_rates"]:
            _search(points, params, recorder)
    finally:
        points.loop.close()


def _search(points: _LoadPoints, params: dict, recorder: Recorder) -> None:
    """Bisection over Poisson rates between search_rates [low, high] for the highest that meets the SLOs, in
    search_steps windows after checking both ends; records it (empty, with the reason, when even low fails)."""
    slo = params["slo"]
    low, high = params["search_rates"]
    search_params = {**points.base, "slo": slo, "search_rates": [low, high], "burstiness": params["burstiness"]}
    if meets_slo(points.run(rate=high, search=True), slo):
        recorder.figure("slo_max_rate_req_s", [high], search_params, at_ceiling=True)
        return
    if not meets_slo(points.run(rate=low, search=True), slo):
        recorder.figure("slo_max_rate_req_s", [], search_params, reason=f"the lowest rate, {low:g} req/s, misses")
        return
    for _ in range(params["search_steps"]):
        middle = (low + high) / 2
        if meets_slo(points.run(rate=middle, search=True), slo):
            low = middle
        else:
            high = middle
    recorder.figure("slo_max_rate_req_s", [low], search_params, bracket=[low, high])
