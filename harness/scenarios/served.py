"""Served load (scenario `served`): streamed requests to an OpenAI-compatible server at a fixed concurrency, with
gamma-distributed arrivals at a rate (burstiness 1: Poisson), or at a trace's arrivals; sweeps over either, under
each prefix-cache setting, and a bisection for the highest rate that meets SLOs. One window of `requests` requests
per load point (a trace: the whole trace), each with prompts no earlier window or run sent (METRICS.md, served
workloads).

Definitions follow METRICS.md: ttft.v1, tpot.v1, e2e.v1 per request; itl.v1 pooled; output.v1, reqs.v1, goodput.v1
over the window's wall time (from the first send to the last response's end); prefix_hit.v1, usage.v1, lag.v1 and
the server's gauges and counters beside them.
"""

import asyncio
import contextlib
import math
import random
import secrets
import time
from collections import Counter

from scipy import stats

from harness.backends.base import Generation
from harness.backends.openai import Stream, answer_text, split_reasoning, token_times
from harness.backends.server_metrics import ServerMetrics
from harness.errors import ConfigError
from harness.measure import roofline
from harness.measure.recorder import Recorder
from harness.measure.stats import percentile
from harness.scenarios import trace as traces
from harness.scenarios.speed import generation_figures

PER_REQUEST = ("ttft_ms", "tpot_ms", "e2e_latency_ms")
# What asking a server to reuse no cached prefix takes, by its kind (METRICS.md: prefix cache on or off).
CACHE_OFF_KINDS = ("llama.cpp", "vllm")


def arrival_offsets(count: int, rate: float, burstiness: float, rng: random.Random) -> list[float]:
    """Seconds after the window's start at which each request is sent: gaps drawn from a gamma distribution of
    shape `burstiness` and mean 1 / rate (burstiness 1: a Poisson process; below 1 burstier, above 1 steadier)."""
    offsets, t = [], 0.0
    for _ in range(count):
        offsets.append(t)
        t += rng.gammavariate(burstiness, 1.0 / (rate * burstiness))
    return offsets


class PromptSource:
    """The run's prompts in send order, none sent twice: seeded synthetic ids of (seed, salt) made into text of
    exactly that many tokens, with the run's one system prompt for a share of them (`shared_prefix`) or a trace's
    shared blocks (`hash_ids`); or a task's prompts in turn, repeating only once all were sent."""

    def __init__(self, backend, params: dict, salt: int):
        self.backend, self.params, self.sent = backend, params, 0
        self.rng = random.Random(f"{params['seed']}:{salt}")
        self.contexts = None
        if params["prompts"] == "synthetic":
            self.pool = backend.prompt_token_pool()
            shared = params.get("shared_prefix")
            self.system = backend.ids_as_sent(self._ids(shared["tokens"])) if shared else []
            self.blocks: dict = {}  # a trace's hash id -> its block's ids, drawn once per run
        else:
            from harness.quality import tasks

            self.contexts = tasks.prepare(tasks.load_task(params["prompts"]), None, params["seed"]).contexts

    def _ids(self, count: int) -> list[int]:
        return [self.rng.choice(self.pool) for _ in range(count)]

    def take(self, count: int) -> list[str]:
        return [self._next() for _ in range(count)]

    def _next(self) -> str:
        index, self.sent = self.sent, self.sent + 1
        if self.contexts is not None:
            return self.contexts[index % len(self.contexts)]
        shared, length = self.params.get("shared_prefix"), self.params["prompt_tokens"]
        if not shared:
            return self.backend.text_of_length(self._ids(length))
        share = shared["share"]
        shares = math.floor((index + 1) * share) > math.floor(index * share)
        head = self.system if shares else self._ids(len(self.system))
        return self.backend.text_of_length(head + self._ids(length - len(head)))

    def of_trace(self, requests: list[traces.TraceRequest], block_tokens: int) -> list[str]:
        """A prompt of input_length tokens for each request: its hash_ids' blocks (each drawn once), then fresh ids."""
        prompts = []
        for request in requests:
            for block in request.hash_ids:
                if block not in self.blocks:
                    self.blocks[block] = self.backend.ids_as_sent(self._ids(block_tokens))
            ids = [i for block in request.hash_ids for i in self.blocks[block]]
            ids = ids[:request.input_length]
            prompts.append(self.backend.text_of_length(ids + self._ids(request.input_length - len(ids))))
        return prompts


async def _window(backend, params: dict, prompts: list[str], concurrency: int | None, offsets: list[float],
                  outputs: list[int] | None = None, prefix_cache: str = "on",
                  server_metrics: ServerMetrics | None = None) -> tuple[list[Stream], float]:
    """One load point: the prompts sent at their offsets (each stream's t_scheduled), at most `concurrency` in
    flight, through one pool of connections that lives as long as the window (at a fixed concurrency its connections
    open before the clock starts, as vLLM's benchmark client reuses those of its warm-up), each asking for its
    `outputs` tokens (default: output_tokens); the server's /metrics read meanwhile when given; the streams and the
    window's seconds."""
    outputs = outputs or [params["output_tokens"]] * len(prompts)
    async with backend.connections(concurrency):
        limit = asyncio.Semaphore(concurrency or len(prompts))

        async def one(prompt: str, offset: float, output_tokens: int) -> Stream:
            await asyncio.sleep(max(0.0, start + offset - time.perf_counter()))
            async with limit:
                stream = await backend.stream(params["endpoint"], prompt, output_tokens, params["timeout_s"],
                                              prefix_cache, params.get("request_fields"))
            stream.t_scheduled = start + offset
            return stream

        async with server_metrics or contextlib.nullcontext():
            start = time.perf_counter()
            streams = await asyncio.gather(*(one(*request) for request in zip(prompts, offsets, outputs, strict=True)))
            seconds = time.perf_counter() - start
    return list(streams), seconds


def window_figures(streams: list[Stream], seconds: float, count_tokens, slo: dict) -> dict:
    """Per-request samples and window figures of one load point."""
    samples: dict[str, list] = {name: [] for name in PER_REQUEST}
    gaps, errors, tokens, counted, chunks, good, lags, reasoning = [], Counter(), 0, 0, 0, 0, [], []
    for stream in streams:
        times = token_times(stream, count_tokens) if not stream.error else []
        stream.counted_tokens = len(times)
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
        lags.append((stream.t_send - stream.t_scheduled) * 1e3 if stream.t_scheduled is not None else None)
        if parts := split_reasoning(stream):
            reasoning.append((*parts, stream.t_send))
        # An undefined tpot (one token) cannot break its limit.
        good += all(figures[name] is None or figures[name] <= limit for name, limit in slo.items()
                    if name in PER_REQUEST)
    # tokens: the server's count of each request where it gave one, else ours; counted: ours (the stamped tokens).
    return {**samples, "itl_ms": [gap * 1e3 for gap in gaps], "tokens": tokens, "counted_tokens": counted,
            "chunks": chunks, "completed": len(streams) - sum(errors.values()), "errors": errors, "good": good,
            "seconds": seconds, "schedule_lag_ms": [lag for lag in lags if lag is not None],
            **_reasoning_figures(reasoning, count_tokens)}


def _reasoning_figures(parts: list[tuple], count_tokens) -> dict[str, list]:
    """Of the requests that reasoned (split_reasoning's parts, with each stream): reasoning and answer tokens, and
    the time to the first answer token (METRICS.md reasoning.v1)."""
    if not parts:
        return {"reasoning_tokens": [], "answer_tokens": [], "ttfa_ms": []}
    reasoning = count_tokens([text for text, _, _, _ in parts])
    answers = count_tokens([text for _, text, _, _ in parts])
    return {"reasoning_tokens": reasoning, "answer_tokens": answers,
            "ttfa_ms": [(first - t_send) * 1e3 for _, _, first, t_send in parts if first is not None]}


def usage_figures(streams: list[Stream], prompt_counts: list[int]) -> dict[str, tuple[list[int], list[int]]]:
    """For each side (output, prompt), over the completed requests whose server reported that count: 1 where it
    differs from bench's, else 0; and the differences, server - bench (METRICS.md usage.v1)."""
    sides: dict[str, tuple[list[int], list[int]]] = {"output": ([], []), "prompt": ([], [])}
    for stream, prompt_count in zip(streams, prompt_counts, strict=True):
        if stream.error:
            continue
        for side, server, ours in (("output", stream.server_tokens, stream.counted_tokens),
                                   ("prompt", stream.server_prompt_tokens, prompt_count)):
            if server is not None:
                sides[side][0].append(int(server != ours))
                sides[side][1].append(server - ours)
    return sides


def prefix_hits(streams: list[Stream], counters: dict[str, float]) -> tuple[float, float, str] | None:
    """Prompt tokens the server took from its prefix cache, prompt tokens it was sent, and where that was read
    (METRICS.md prefix_hit.v1); None where the server says neither."""
    cached = sent = 0
    source = None
    for stream in streams:
        timings = stream.server_timings or {}
        if stream.error:
            continue
        if "cache_n" in timings and "prompt_n" in timings:
            reused, total, source = timings["cache_n"], timings["cache_n"] + timings["prompt_n"], "timings"
        elif stream.server_cached_tokens is not None and stream.server_prompt_tokens:
            reused, total, source = stream.server_cached_tokens, stream.server_prompt_tokens, "usage"
        else:
            continue
        cached, sent = cached + reused, sent + total
    if sent:
        return cached, sent, source
    if counters.get("prefix_cache_queries"):
        return counters["prefix_cache_hits"], counters["prefix_cache_queries"], "/metrics"
    return None


def meets_slo(window: dict, slo: dict) -> bool:
    """Every request completed, and each stated limit holds at the SLO's percentile (default 90)."""
    q = slo.get("percentile", 90)
    return not window["errors"] and all(
        (value := percentile(window[name], q)) is None or value <= limit
        for name, limit in slo.items() if name in PER_REQUEST)


def _record(recorder: Recorder, window: dict, params: dict, slo: dict, salt: dict) -> None:
    for name in (*PER_REQUEST, "itl_ms"):
        extra = {"p99": percentile(window[name], 99)}
        if name == "itl_ms":
            counted = window["counted_tokens"]
            extra["chunks_per_token"] = window["chunks"] / counted if counted else None
        recorder.figure(name, window[name], params, **extra, **salt)
    seconds = window["seconds"]
    recorder.figure("output_tok_s", [window["tokens"] / seconds], params, tokens=window["tokens"], seconds=seconds,
                    counted_tokens=window["counted_tokens"], **salt)
    recorder.figure("request_s", [window["completed"] / seconds], params, **salt)
    if slo:
        recorder.figure("goodput_req_s", [window["good"] / seconds], {**params, "slo": slo},
                        meets_slo=meets_slo(window, slo), **salt)
    recorder.figure("failed_requests", [sum(window["errors"].values())], params, errors=dict(window["errors"]),
                    **salt)
    if window["reasoning_tokens"]:
        for name in ("reasoning_tokens", "answer_tokens", "ttfa_ms"):
            recorder.figure(name, window[name], params, **({"value": sum(window[name]) / len(window[name])}
                                                           if name != "ttfa_ms" else {}), **salt)


def _record_server_side(recorder: Recorder, streams: list[Stream], window: dict, prompt_counts: list[int],
                        server: ServerMetrics, params: dict, salt: dict) -> None:
    """What the server said beside the client's clocks: usage counts, prefix-cache hits, its /metrics; and, where
    requests had arrival times, how late each was sent."""
    for side, (mismatched, differences) in usage_figures(streams, prompt_counts).items():
        if mismatched:
            recorder.figure(f"usage_mismatch_{side}", mismatched, params, sum(mismatched) / len(mismatched),
                            requests=len(mismatched),
                            mean_difference=sum(differences) / len(differences), **salt)
    if hits := prefix_hits(streams, server.counters):
        cached, sent, source = hits
        recorder.figure("prefix_cache_hit_rate", [cached / sent], params, cached_tokens=cached, prompt_tokens=sent,
                        source=source, **salt)
    for name, samples in server.gauges.items():
        recorder.figure(name, samples, params, max=max(samples), interval_s=server.interval_s, **salt)
    if "server_preemptions" in server.counters:
        recorder.figure("server_preemptions", [server.counters["server_preemptions"]], params, **salt)
    _record_speculation(recorder, server.counters, params, salt)
    if params.get("rate_req_s") or params.get("trace"):
        lags = window["schedule_lag_ms"]
        recorder.figure("schedule_lag_ms", lags, params, p99=percentile(lags, 99), max=max(lags, default=None),
                        **salt)


def _record_speculation(recorder: Recorder, counters: dict[str, float], params: dict, salt: dict) -> None:
    """A speculating server's acceptance over the window (METRICS.md spec.v1), where it drafted any tokens."""
    drafts, drafted, accepted = (counters.get(name) for name in ("spec_drafts", "spec_draft_tokens",
                                                                 "spec_accepted_tokens"))
    if drafts and drafted and accepted is not None:
        counts = {"drafts": drafts, "draft_tokens": drafted, "accepted_tokens": accepted, "source": "/metrics"}
        recorder.figure("spec_acceptance_rate", [accepted / drafted], params, **counts, **salt)
        recorder.figure("spec_mean_accepted_length", [1 + accepted / drafts], params, **counts, **salt)


class _LoadPoints:
    """Runs windows on one event loop, each with prompts of its own, and records each as it ends."""

    def __init__(self, backend, params: dict, recorder: Recorder, salt: int):
        self.backend, self.params, self.recorder = backend, params, recorder
        self.salt = {"prompt_salt": salt}
        self.prompts = PromptSource(backend, params, salt)
        self.loop = asyncio.new_event_loop()
        self.base = {key: params[key] for key in ("endpoint", "prompts", "output_tokens", "requests", "seed")}
        if params["prompts"] == "synthetic":
            self.base["prompt_tokens"] = params["prompt_tokens"]
        if params.get("shared_prefix"):
            self.base["shared_prefix"] = params["shared_prefix"]
        self.prefix_cache = "on"

    def warm_up(self, count: int) -> None:
        """Untimed requests one after another, so the first window does not pay for the server's first request;
        their prompts come first in the run's and are never sent again."""
        if count:
            self.loop.run_until_complete(_window(self.backend, self.params, self.prompts.take(count), 1, [0.0] * count))

    def run(self, concurrency: int | None = None, rate: float | None = None, search: bool = False) -> dict:
        prompts = self.prompts.take(self.params["requests"])
        if rate is None:
            offsets = [0.0] * len(prompts)
            load = {"load": f"concurrency={concurrency}", "concurrency": concurrency}
        else:
            burstiness = self.params["burstiness"]
            offsets = arrival_offsets(len(prompts), rate, burstiness, random.Random(self.params["seed"]))
            load = {"load": f"rate={rate:g}", "rate_req_s": rate, "burstiness": burstiness}
        return self.measure(prompts, offsets, concurrency, load, {"search": True} if search else {})

    def replay(self, trace: str) -> dict:
        """The whole trace as one window: each request at its timestamp / time_scale, with its lengths."""
        block = traces.block_tokens(trace, self.params.get("block_tokens"))
        requests = traces.load_trace(trace, block)
        scale = self.params["time_scale"]
        load = {"load": f"trace x{scale:g}", "trace": traces.trace_name(trace), "time_scale": scale,
                "requests": len(requests)}
        return self.measure(self.prompts.of_trace(requests, block),
                            [r.timestamp / 1e3 / scale for r in requests], None, load, {},
                            [r.output_length for r in requests])

    def measure(self, prompts: list[str], offsets: list[float], concurrency: int | None, load: dict, extra: dict,
                outputs: list[int] | None = None) -> dict:
        server = ServerMetrics(self.backend, self.params["metrics_interval_s"])
        streams, seconds = self.loop.run_until_complete(_window(
            self.backend, self.params, prompts, concurrency, offsets, outputs, self.prefix_cache, server))
        return self.record(streams, prompts, seconds, server, concurrency, {**load, **extra})[0]

    def record(self, streams: list[Stream], prompts: list, seconds: float, server: ServerMetrics,
               concurrency: int | None, load: dict) -> tuple[dict, dict, list[int]]:
        """Records a window's figures; its figures, its rows' params and bench's count of each prompt's tokens."""
        window = window_figures(streams, seconds, self.backend.count_tokens, self.params["slo"])
        params = {**self.base, **load, "prefix_cache": self.prefix_cache}
        if self.prefix_cache == "off":  # the summary's line of a load point is its label: off gets a line of its own
            params["load"] += " prefix_cache=off"
        for name in ("prompt_tokens", "output_tokens") if "trace" in load else ():  # the trace's, per request
            params.pop(name, None)
        _record(self.recorder, window, params, self.params["slo"], self.salt)
        counts = self.backend.count_prompts(self.params["endpoint"], prompts)
        _record_server_side(self.recorder, streams, window, counts, server, params, self.salt)
        if concurrency == 1 and self.params["prompts"] == "synthetic":
            _record_roofline(self.backend, self.recorder, window, params)
        return window, params, counts

    def converse(self) -> None:
        """Multi-turn chat as one window: its figures pooled (load `conversations`), then per turn, and the slope of
        TTFT against the history's tokens."""
        spec = self.params["conversation"]
        turns = [self.prompts.take(spec["turns"]) for _ in range(spec["users"])]
        server = ServerMetrics(self.backend, self.params["metrics_interval_s"])
        streams, sent, seconds = self.loop.run_until_complete(
            _conversations(self.backend, self.params, turns, self.prefix_cache, server))
        flat = [stream for user in streams for stream in user]
        _, params, counts = self.record(flat, [m for user in sent for m in user], seconds, server, None,
                                        {"load": "conversations", "requests": len(flat), "conversation": spec})
        turn_of = [turn for user in streams for turn in range(1, len(user) + 1)]
        for turn in range(1, spec["turns"] + 1):
            mine = [i for i, t in enumerate(turn_of) if t == turn]
            window = window_figures([flat[i] for i in mine], seconds, self.backend.count_tokens, {})
            turn_params = {**params, "load": params["load"].replace("conversations", f"turn={turn}"), "turn": turn}
            for name in PER_REQUEST:
                self.recorder.figure(name, window[name], turn_params, p99=percentile(window[name], 99),
                                     history_tokens=sum(counts[i] for i in mine) / len(mine) if mine else None,
                                     **self.salt)
        _record_history_slope(self.recorder, flat, counts, self.backend.count_tokens, params, self.salt)


async def _conversations(backend, params: dict, turns: list[list[str]], prefix_cache: str,
                         server_metrics: ServerMetrics) -> tuple[list[list[Stream]], list[list[list[dict]]], float]:
    """Each user's turns one after another, through a pool of a connection per user opened before the clock starts:
    the conversation so far and the turn's new message, think_time_s after each answer ends; a user whose request
    fails sends no more. Each user's streams and the messages each request sent, and the window's seconds."""
    think = params["conversation"]["think_time_s"]

    async def user(messages: list[str]) -> tuple[list[Stream], list[list[dict]]]:
        history, streams, sent = [], [], []
        for index, text in enumerate(messages):
            if index:
                await asyncio.sleep(think)
            history.append({"role": "user", "content": text})
            sent.append(list(history))
            streams.append(await backend.stream("chat", list(history), params["output_tokens"], params["timeout_s"],
                                                prefix_cache, params.get("request_fields")))
            if streams[-1].error:
                break
            history.append({"role": "assistant", "content": answer_text(streams[-1])})
        return streams, sent

    async with backend.connections(len(turns)), server_metrics:
        start = time.perf_counter()
        results = await asyncio.gather(*(user(messages) for messages in turns))
        seconds = time.perf_counter() - start
    return [streams for streams, _ in results], [sent for _, sent in results], seconds


def _record_history_slope(recorder: Recorder, streams: list[Stream], counts: list[int], count_tokens, params: dict,
                          salt: dict) -> None:
    """ttft_history_slope_ms_per_ktok (METRICS.md ttft_slope.v1) over the completed requests, where their prompts
    have at least two lengths."""
    points = [(count, generation_figures(Generation([[]], stream.t_send, times), 0)["ttft_ms"])
              for stream, count in zip(streams, counts, strict=True)
              if not stream.error and (times := token_times(stream, count_tokens))]
    if len({count for count, _ in points}) < 2:
        return
    fit = stats.linregress([count for count, _ in points], [ttft for _, ttft in points])
    recorder.figure("ttft_history_slope_ms_per_ktok", [fit.slope * 1e3], params, stderr=fit.stderr * 1e3,
                    intercept_ms=fit.intercept, requests=len(points),
                    prompt_token_range=[min(c for c, _ in points), max(c for c, _ in points)], **salt)


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
    if "off" in params["prefix_cache"] and backend.kind not in CACHE_OFF_KINDS:
        raise ConfigError(f"prefix_cache off: bench cannot tell a {backend.kind} server to reuse no cached prefix "
                          f"(it can tell {' and '.join(CACHE_OFF_KINDS)})")
    salt = params["prompt_salt"] if params.get("prompt_salt") is not None else secrets.randbelow(2**32)
    points = _LoadPoints(backend, params, recorder, salt)
    try:
        points.warm_up(recorder.policy.warmup)
        for setting in params["prefix_cache"]:
            points.prefix_cache = setting
            _load_points(points, params, recorder)
    finally:
        points.loop.close()


def _load_points(points: _LoadPoints, params: dict, recorder: Recorder) -> None:
    """The scenario's windows under the current prefix-cache setting: the trace, or the rates or concurrencies,
    then the search."""
    if params.get("conversation"):
        points.converse()
    elif params.get("trace"):
        points.replay(params["trace"])
    elif params["rates"]:
        for rate in params["rates"]:
            points.run(rate=rate)
    else:
        for concurrency in params["concurrency"]:
            points.run(concurrency=concurrency)
    if params["search_rates"]:
        _search(points, params, recorder)


def _search(points: _LoadPoints, params: dict, recorder: Recorder) -> None:
    """Bisection over Poisson rates between search_rates [low, high] for the highest that meets the SLOs, in
    search_steps windows after checking both ends; records it (empty, with the reason, when even low fails)."""
    slo = params["slo"]
    low, high = params["search_rates"]
    search_params = {**points.base, "slo": slo, "search_rates": [low, high], "burstiness": params["burstiness"],
                     "prefix_cache": points.prefix_cache}
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
