"""A server's Prometheus /metrics read while a served window runs (METRICS.md, served workloads): gauges sampled at
the window's start, every `interval_s` during it and at its end; counters as their deltas from the start to the end.
Servers name the same figure differently: GAUGES and COUNTERS give, for each of bench's figures, the names that vLLM
and llama.cpp (started with --metrics) use. A server that does not answer /metrics is left alone for the window.
"""

import asyncio
import contextlib

import httpx
from prometheus_client.parser import text_string_to_metric_families

from harness.backends.openai import NETWORK_ERRORS

# bench's figure -> the servers' metric families (the first a server has is read; values summed over labels).
GAUGES = {
    "server_kv_cache_usage": ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc", "llamacpp:kv_cache_usage_ratio"),
    "server_requests_running": ("vllm:num_requests_running", "llamacpp:requests_processing"),
    "server_requests_waiting": ("vllm:num_requests_waiting", "llamacpp:requests_deferred"),
}
COUNTERS = {
    "server_preemptions": ("vllm:num_preemptions",),
    "prefix_cache_hits": ("vllm:prefix_cache_hits",),
    "prefix_cache_queries": ("vllm:prefix_cache_queries",),
    "spec_drafts": ("vllm:spec_decode_num_drafts",),
    "spec_draft_tokens": ("vllm:spec_decode_num_draft_tokens",),
    "spec_accepted_tokens": ("vllm:spec_decode_num_accepted_tokens",),
}


def parse(text: str) -> dict[str, float]:
    """Each metric family's value by its name less `_total`, summed over its label sets (a counter's `_total`
    samples, not its `_created`; lines with no # TYPE before them too, which the parser makes a family each)."""
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        name = family.name.removesuffix("_total")
        wanted = (name, f"{name}_total")
        values[name] = values.get(name, 0.0) + sum(s.value for s in family.samples if s.name in wanted)
    return values


def pick(values: dict[str, float], names: tuple[str, ...]) -> float | None:
    return next((values[name] for name in names if name in values), None)


class ServerMetrics:
    """An async context around a window: reads `backend`'s /metrics on a connection of its own (the window's pool
    is the requests'), then `gauges` (bench's name -> samples) and `counters` (bench's name -> delta) hold what the
    server reported; both stay empty where it answers no /metrics."""

    def __init__(self, backend, interval_s: float):
        self.backend, self.interval_s = backend, interval_s
        self.gauges: dict[str, list[float]] = {}
        self.counters: dict[str, float] = {}
        self._readings: list[dict[str, float]] = []

    async def _read(self) -> dict[str, float] | None:
        with contextlib.suppress(*NETWORK_ERRORS):
            response = await self._client.get("/metrics", timeout=5.0)
            if response.status_code == 200:
                return parse(response.text)
        return None

    async def _sample(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            if reading := await self._read():
                self._readings.append(reading)

    async def __aenter__(self):
        self._client = httpx.AsyncClient(**self.backend.client_options())
        first = await self._read()
        self._task = None
        if first is not None:
            self._readings.append(first)
            self._task = asyncio.create_task(self._sample())
        return self

    async def __aexit__(self, *exc) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            if last := await self._read():
                self._readings.append(last)
        await self._client.aclose()
        self._summarise()

    def _summarise(self) -> None:
        for figure, names in GAUGES.items():
            samples = [value for reading in self._readings if (value := pick(reading, names)) is not None]
            if samples:
                self.gauges[figure] = samples
        if len(self._readings) >= 2:
            first, last = self._readings[0], self._readings[-1]
            for figure, names in COUNTERS.items():
                if (start := pick(first, names)) is not None and (end := pick(last, names)) is not None:
                    self.counters[figure] = end - start
