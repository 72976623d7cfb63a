"""OpenAI-compatible servers (vLLM, llama.cpp, Ollama, SGLang, TGI, `transformers serve`), streamed over HTTP.

The client is httpx over HTTP/1.1 with keep-alive, as the peers' clients are (vLLM's `vllm bench serve` shares one
aiohttp session, guidellm one httpx client). Served load goes through one `httpx.AsyncClient` per load point
(`OpenAIBackend.connections`), created inside the running event loop, whose pool holds as many connections as the
load point has requests in flight; at a fixed concurrency they are all opened before the window starts, so no timed
request pays for a TCP handshake. Server-sent events are read as they arrive, each non-empty text chunk stamped
with the host clock when the read that carried it returned. Tokens are counted afterwards, with the model's own
tokenizer, so the measured window holds no tokenizer work (see `token_times`). Quality requests (non-streamed JSON)
share one synchronous `httpx.Client` between QUALITY_CONCURRENCY threads. Proxy settings from the environment are
ignored (`trust_env=False`): a timed request goes straight to the server.
"""

import asyncio
import contextlib
import json
import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from harness.backends.base import BackendInfo
from harness.backends.tokens import Pair, RequestTokens, cut_at_stop
from harness.errors import ConfigError, UnavailableError, one_line

ENDPOINTS = {"completions": "/v1/completions", "chat": "/v1/chat/completions"}
# The request fields bench sets itself, on some server or other, to measure (a scenario's request_fields may not).
MEASURING_FIELDS = frozenset({"model", "prompt", "messages", "max_tokens", "temperature", "stream", "stream_options",
                              "ignore_eos", "min_tokens", "cache_prompt", "cache_salt", "generation_config"})

# What a failed exchange with a server can raise: transport and protocol errors, a body that is no JSON.
NETWORK_ERRORS = (httpx.HTTPError, httpx.InvalidURL, OSError, ValueError)


@dataclass
class Stream:
    """One streamed request: when it was sent, when each non-empty text chunk arrived and what it said, and why it
    failed (an HTTP status, a server error event, a timeout, a stream cut before its end), if it did."""

    t_send: float
    chunk_times: list[float] = field(default_factory=list)
    chunk_texts: list[str] = field(default_factory=list)
    t_end: float | None = None
    error: str | None = None
    server_tokens: int | None = None  # completion_tokens of the usage the server reported, if it did
    server_prompt_tokens: int | None = None  # its prompt_tokens
    server_cached_tokens: int | None = None  # its prompt_tokens_details.cached_tokens, where it says
    server_timings: dict | None = None  # the server's own timings of the request, where it sends them (llama.cpp)
    chunk_kinds: list[str] = field(default_factory=list)  # each chunk's "answer" or "reasoning" (reasoning_content)
    t_scheduled: float | None = None  # when the window meant to send it (its start + the request's offset)
    counted_tokens: int | None = None  # bench's count of its output (the model's tokenizer on the text)


def token_times(stream: Stream, count_tokens) -> list[float]:
    """The arrival time of each output token (METRICS.md: a chunk of k tokens stamps all k with its arrival).

    Token i belongs to the first chunk after which the text so far holds at least i tokens of the model's
    tokenizer (special tokens excluded); a chunk that completes no token (part of a multi-byte character, a merge)
    stamps none."""
    prefixes = [""]
    for text in stream.chunk_texts:
        prefixes.append(prefixes[-1] + text)
    counts = count_tokens(prefixes[1:]) if stream.chunk_texts else []
    times, done = [], 0
    for arrived, count in zip(stream.chunk_times, counts, strict=True):
        total = max(done, min(count, counts[-1]))
        times.extend([arrived] * (total - done))
        done = total
    return times


def _chunk_text(event: dict, endpoint: str) -> tuple[str, str, bool]:
    """The answer text and the reasoning text an event adds (a chat delta's reasoning_content, or vLLM's
    `reasoning`), and whether it says the generation finished."""
    choices = event.get("choices") or [{}]
    choice = choices[0]
    if endpoint == "completions":
        return choice.get("text") or "", "", bool(choice.get("finish_reason"))
    delta = choice.get("delta") or {}
    reasoning = delta.get("reasoning_content") or delta.get("reasoning") or ""
    return delta.get("content") or "", reasoning, bool(choice.get("finish_reason"))


THINK_OPEN, THINK_CLOSE = "<think>", "</think>"


def split_reasoning(stream: Stream) -> tuple[str, str, float | None] | None:
    """A response's reasoning text, its answer text and when the answer's first non-blank text arrived (METRICS.md
    reasoning.v1): chunks the server marked as reasoning, or a leading <think> block of the text; None where the
    response holds no reasoning."""
    texts, kinds = stream.chunk_texts, stream.chunk_kinds
    if "reasoning" in kinds:
        answer = [(t, text) for t, text, kind in zip(stream.chunk_times, texts, kinds, strict=True) if kind == "answer"]
        reasoning = "".join(text for text, kind in zip(texts, kinds, strict=True) if kind == "reasoning")
    else:
        whole = "".join(texts)
        if not whole.lstrip().startswith(THINK_OPEN):
            return None
        end = whole.find(THINK_CLOSE)
        end = len(whole) if end < 0 else end + len(THINK_CLOSE)
        reasoning, answer, seen = whole[:end], [], 0
        for arrived, text in zip(stream.chunk_times, texts, strict=True):
            if seen + len(text) > end:
                answer.append((arrived, text[max(0, end - seen):]))
            seen += len(text)
    first = next((arrived for arrived, text in answer if text.strip()), None)
    return reasoning, "".join(text for _, text in answer), first


async def stream_request(client: httpx.AsyncClient, endpoint: str, body: dict, timeout_s: float) -> Stream:
    """Sends one streaming request through the client's pool and records its chunks; never raises for what the
    server or network does: an HTTP error status, an error event, a timeout or a cut stream becomes `Stream.error`.
    `timeout_s` bounds the whole exchange, from the send to the stream's end."""
    request = client.build_request("POST", ENDPOINTS[endpoint], json=body, headers={"Accept": "text/event-stream"})
    stream = Stream(t_send=time.perf_counter())  # stamped again just before the send, in wait_for's task
    try:
        await asyncio.wait_for(_exchange(client, request, endpoint, stream), timeout_s)
    except asyncio.TimeoutError:
        stream.error = f"timeout: no complete response within {timeout_s:g} s"
    except NETWORK_ERRORS as exc:
        stream.error = one_line(exc)
    stream.t_end = time.perf_counter()
    return stream


def answer_text(stream: Stream) -> str:
    """What a response answered: its text less any reasoning (a chat client sends only that back)."""
    parts = split_reasoning(stream)
    return parts[1] if parts else "".join(stream.chunk_texts)


async def _exchange(client: httpx.AsyncClient, request: httpx.Request, endpoint: str, stream: Stream) -> None:
    """Sends the request, stamping the send; a request that a server disconnects before any response (a keep-alive
    connection it closed as the request went out: llama-server's close after 5 s idle, say) is sent once more, on a
    new connection, and timed from that send."""
    for attempt in range(2):
        stream.t_send = time.perf_counter()
        try:
            response = await client.send(request, stream=True)
            break
        except httpx.RemoteProtocolError:
            if attempt:
                raise
    try:
        if response.status_code != 200:
            text = (await response.aread()).decode(errors="replace")
            stream.error = f"HTTP {response.status_code} {response.reason_phrase}".strip() + f": {text.strip()[:200]}"
            return
        await _read_events(response, endpoint, stream)
    finally:
        await response.aclose()


async def _read_events(response: httpx.Response, endpoint: str, stream: Stream) -> None:
    """Reads the events to the body's end, past [DONE] too (it ends at once), so that the connection goes back to
    the pool: one closed with its body unread cannot be reused."""
    pending, finished, done = b"", False, False
    async for data in response.aiter_bytes():
        arrived = time.perf_counter()
        pending += data
        *lines, pending = pending.split(b"\n")
        for raw in lines if not done else ():
            outcome = _take_event(raw.strip(), endpoint, stream, arrived)
            if outcome == "error":
                return
            finished, done = finished or outcome == "finished", outcome == "done"
            if done:
                break
    # Some servers (transformers serve) close the stream after the chunk with a finish_reason and send no [DONE];
    # a stream cut before both is incomplete.
    if not (done or finished):
        stream.error = "stream ended without [DONE] or a finish_reason"


def _take_event(line: bytes, endpoint: str, stream: Stream, arrived: float) -> str | None:
    """Records one line of the event stream: "done" ([DONE]), "error" (an error event, set as the stream's error),
    "finished" (an event with a finish_reason), else None."""
    if not line.startswith(b"data:"):
        return None
    content = line[5:].strip()
    if content == b"[DONE]":
        return "done"
    event = json.loads(content)
    if "error" in event:
        stream.error = f"server error event: {json.dumps(event['error'])[:200]}"
        return "error"
    if usage := event.get("usage"):
        stream.server_tokens, stream.server_prompt_tokens = usage.get("completion_tokens"), usage.get("prompt_tokens")
        stream.server_cached_tokens = (usage.get("prompt_tokens_details") or {}).get("cached_tokens")
    if event.get("timings"):
        stream.server_timings = event["timings"]
    text, reasoning, finish = _chunk_text(event, endpoint)
    for kind, part in (("reasoning", reasoning), ("answer", text)):
        if part:
            stream.chunk_times.append(arrived)
            stream.chunk_texts.append(part)
            stream.chunk_kinds.append(kind)
    return "finished" if finish else None


def messages(prompt: str | list[dict]) -> list[dict]:
    """A chat request's messages: a conversation as it is, a text as one user message."""
    return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt


async def open_connections(client: httpx.AsyncClient, count: int) -> None:
    """Opens `count` connections of the client's pool now, with as many concurrent GETs of /health (whatever the
    server answers: a 404 keeps the connection too), for the requests that follow to reuse. A failure is left to
    the requests to report."""
    async def touch() -> None:
        with contextlib.suppress(*NETWORK_ERRORS):
            await client.get("/health", timeout=10.0)  # a server that never answers is left to the requests

    await asyncio.gather(*(touch() for _ in range(count)))


def http_post_json(client: httpx.Client, url: str, body: dict) -> dict:
    """The JSON answer to a JSON POST through `client`; an HTTP error status or a network failure raises
    UnavailableError."""
    try:
        response = client.post(url, json=body)
        if response.status_code >= 400:
            raise UnavailableError(f"{url} answered HTTP {response.status_code}: {response.text.strip()[:200]}")
        return response.json()
    except NETWORK_ERRORS as exc:
        raise UnavailableError(f"{url}: {one_line(exc)}") from None


def http_get(base_url: str, path: str, timeout_s: float = 5.0) -> tuple[int, str]:
    """Status and body of a GET (the body empty for an error status); status 0 and the reason when the server
    cannot be reached."""
    try:
        response = httpx.get(base_url.rstrip("/") + path, timeout=timeout_s, follow_redirects=True, trust_env=False)
    except NETWORK_ERRORS as exc:
        return 0, one_line(exc)
    return response.status_code, "" if response.status_code >= 400 else response.text


# Quality requests in flight at once (one prompt each: some servers take no lists), for the server to batch.
QUALITY_CONCURRENCY = 8


class OpenAIBackend:
    """A model behind an OpenAI-compatible server. options["server"]: base_url (required), model_name (what the
    server calls the model; default: the model folder), kind ("vllm", "transformers" or "openai": decides how a
    fixed output length is asked for), api_key. The tokenizer comes from the model folder.

    Quality goes through /v1/completions: log-likelihoods from the prompt's log-probabilities (`echo` with
    `logprobs`, the prompt sent as token ids, as lm-evaluation-harness's local-completions does; vLLM answers it,
    `transformers serve` does not), generation as greedy completions of text prompts."""

    name = "openai"
    capabilities = frozenset({"served", "loglikelihood", "generation"})
    _client: httpx.AsyncClient | None = None  # the pool `stream` sends through, inside `connections`

    def load(self, model_path: Path, device: str = "auto", dtype: str = "auto", options: dict | None = None) -> None:
        from transformers import AutoTokenizer

        server = (options or {}).get("server") or {}
        if not server.get("base_url"):
            raise ConfigError("the openai backend needs a server: a base URL (serve-bench --base-url) or a suite "
                              "`server:` section")
        self.base_url = server["base_url"].rstrip("/")
        self.model_name = server.get("model_name") or str(model_path)
        self.api_key = server.get("api_key")
        self.facts = server.get("facts", {})  # what a server bench started runs (llama.cpp: the GGUF, the build)
        self.dtype = self.facts.get("quantization", dtype)
        # A server we started says where it runs; of another we know only its host.
        self.device = server.get("device", "server")
        self.device_name = server.get("device_name") or urlsplit(self.base_url).hostname
        status, text = http_get(self.base_url, "/health")
        if status == 0:
            raise UnavailableError(f"cannot reach the server at {self.base_url}: {text}")
        version_status, version = http_get(self.base_url, "/version")
        # vLLM answers /version; a server bench started says its build (llama.cpp's).
        self.version = server.get("version") or (json.loads(version).get("version") if version_status == 200 else None)
        # A server we started says what it is.
        self.kind = server.get("kind") or ("vllm" if self.version else "openai")
        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        self.tokens = RequestTokens(self.tokenizer)
        # vLLM lists each model's context length.
        listed = http_get(self.base_url, "/v1/models")
        models = json.loads(listed[1]).get("data", []) if listed[0] == 200 else []
        self.max_model_len = next((m.get("max_model_len") for m in models if m.get("id") == self.model_name), None)

    def info(self) -> BackendInfo:
        # The device name is in the comparability key, the URL (its port changes from run to run) is not.
        return BackendInfo(backend=self.name, backend_version=self.version or "unknown", device=self.device,
                           device_name=self.device_name, dtype=self.dtype,
                           extra={"server_kind": self.kind, "model_name": self.model_name, "base_url": self.base_url,
                                  **self.facts})

    def prompt_token_pool(self) -> list[int]:
        special = set(self.tokenizer.all_special_ids)
        return [i for i in range(len(self.tokenizer)) if i not in special]

    def count_tokens(self, texts: list[str]) -> list[int]:
        return [len(ids) for ids in self.tokenizer(texts, add_special_tokens=False).input_ids]

    def text_of_length(self, ids: list[int]) -> str:
        """Text that the tokenizer encodes to exactly len(ids) tokens, made from `ids` (decoding and encoding again
        can merge or split tokens: the text is re-cut until the count holds, or the nearest is kept)."""
        target, text = len(ids), self.tokenizer.decode(ids)
        for _ in range(8):
            encoded = self.tokenizer(text, add_special_tokens=False).input_ids
            if len(encoded) == target:
                break
            encoded = (encoded + ids)[:target]
            text = self.tokenizer.decode(encoded)
        return text

    def ids_as_sent(self, ids: list[int]) -> list[int]:
        """The tokens of text_of_length(ids) as the server's tokenizer makes them: ids whose own text gives them back,
        so that a block of them keeps its length inside a prompt (random ids often do not: 48 can come back as 53)."""
        return self.tokenizer(self.text_of_length(ids), add_special_tokens=False).input_ids

    def count_prompts(self, endpoint: str, prompts: list[str | list[dict]]) -> list[int]:
        """The tokens of each prompt as the server should see them (METRICS.md usage.v1): completions the
        tokenizer's with its special tokens; chat the model's chat template with its generation prompt (where the
        tokenizer has none, the text's tokens)."""
        if endpoint == "chat" and self.tokenizer.chat_template:
            return [len(self.tokenizer.apply_chat_template(messages(p), tokenize=True, add_generation_prompt=True,
                                                           return_dict=True)["input_ids"]) for p in prompts]
        texts = [p if isinstance(p, str) else "".join(m["content"] for m in p) for p in prompts]
        return [len(ids) for ids in self.tokenizer(texts).input_ids]

    def request_body(self, endpoint: str, prompt: str | list[dict], output_tokens: int,
                     prefix_cache: str = "on", fields: dict | None = None) -> dict:
        """Greedy, streamed, `output_tokens` long where the server can be told to ignore EOS; with prefix_cache
        "off", told to reuse no cached prefix (METRICS.md: prefix cache on or off); with the scenario's own
        `fields` (none of MEASURING_FIELDS)."""
        body = {**(fields or {}), "model": self.model_name, "max_tokens": output_tokens, "temperature": 0.0,
                "stream": True}
        if endpoint == "chat":
            body["messages"] = messages(prompt)
        else:
            body["prompt"] = prompt
        if self.kind in ("vllm", "llama.cpp", "transformers"):
            # The servers bench knows send their usage chunk only when asked (transformers serve too, since 5.25,
            # as OpenAI's API does); a server of unknown kind gets no field it might refuse.
            body["stream_options"] = {"include_usage": True}
        if self.kind == "vllm":
            body.update(ignore_eos=True, min_tokens=output_tokens)
            if prefix_cache == "off":  # a salt of its own: no other request's cached blocks match
                body["cache_salt"] = secrets.token_hex(8)
        elif self.kind == "llama.cpp":
            body.update(ignore_eos=True, cache_prompt=prefix_cache == "on")
        elif self.kind == "transformers":
            body["generation_config"] = json.dumps({"min_new_tokens": output_tokens, "max_new_tokens": output_tokens,
                                                    "do_sample": False})
        return body

    def client_options(self) -> dict:
        auth = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        return {"base_url": self.base_url, "headers": auth, "trust_env": False}

    @contextlib.asynccontextmanager
    async def connections(self, concurrency: int | None):
        """Within the block, `stream` sends through one pool of keep-alive connections to the server, made in the
        running event loop: `concurrency` of them, all opened before the block starts, or (None) as many as the
        requests in flight need, each opened when one does."""
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        async with httpx.AsyncClient(limits=limits, timeout=None, **self.client_options()) as client:
            if concurrency:
                await open_connections(client, concurrency)
            outer, self._client = self._client, client
            try:
                yield
            finally:
                self._client = outer

    async def stream(self, endpoint: str, prompt: str | list[dict], output_tokens: int, timeout_s: float,
                     prefix_cache: str = "on", fields: dict | None = None) -> Stream:
        if self._client is None:  # outside `connections`: a pool of this one request's own
            async with self.connections(None):
                return await self.stream(endpoint, prompt, output_tokens, timeout_s, prefix_cache, fields)
        body = self.request_body(endpoint, prompt, output_tokens, prefix_cache, fields)
        return await stream_request(self._client, endpoint, body, timeout_s)

    def _complete(self, prompts: list, **fields) -> list[dict]:
        """Non-streamed greedy /v1/completions of prompts (texts or token id lists), one prompt to a request,
        QUALITY_CONCURRENCY at a time through one pool of as many connections; each prompt's choice, in order."""
        url = self.base_url + ENDPOINTS["completions"]
        limits = httpx.Limits(max_connections=QUALITY_CONCURRENCY, max_keepalive_connections=QUALITY_CONCURRENCY)

        def complete(client: httpx.Client, prompt) -> dict:
            answer = http_post_json(client, url, {"model": self.model_name, "prompt": prompt, "temperature": 0.0,
                                                  **fields})
            if not answer.get("choices"):
                raise UnavailableError(f"{url} answered no completion: {json.dumps(answer)[:200]}")
            return answer["choices"][0]

        with (httpx.Client(limits=limits, timeout=600.0, **self.client_options()) as client,
              ThreadPoolExecutor(QUALITY_CONCURRENCY) as pool):
            return list(pool.map(lambda prompt: complete(client, prompt), prompts))

    def loglikelihood(self, requests: list[tuple[str, str]]) -> list[tuple[float, bool]]:
        return self._loglikelihood_tokens(self.tokens.pairs(requests))

    def loglikelihood_rolling(self, texts: list[str]) -> list[tuple[float, int]]:
        # A pair's tokens and the one token generated after them must fit in the model length.
        window = self.max_model_len - 1 if self.max_model_len else None
        return self.tokens.rolling(texts, window, self._loglikelihood_tokens)

    def _loglikelihood_tokens(self, pairs: list[Pair]) -> list[tuple[float, bool]]:
        """Each prompt token's log-probability comes back with the top one of its position: a continuation is greedy
        where every token's log-probability is the top one."""
        cannot = f"the server at {self.base_url} cannot score log-likelihoods (/v1/completions of token ids with " \
                 "echo and logprobs)"
        try:
            choices = self._complete([context + continuation for context, continuation in pairs], echo=True,
                                     logprobs=1, max_tokens=1)
        except UnavailableError as exc:
            raise UnavailableError(f"{cannot}: {exc.message}") from None
        results = []
        for choice, (context, continuation) in zip(choices, pairs, strict=True):
            logprobs = choice.get("logprobs") or {}
            scored, tops = logprobs.get("token_logprobs") or [], logprobs.get("top_logprobs") or []
            span = range(len(context), len(context) + len(continuation))
            if len(scored) < span.stop or len(tops) < span.stop:
                raise UnavailableError(f"{cannot}: it returned no log-probabilities for the prompt")
            results.append((sum(scored[j] for j in span), all(scored[j] >= max(tops[j].values()) for j in span)))
        return results

    def generate_text(self, prompts: list[str], max_new_tokens: int, stop: list[str]) -> list[str]:
        """Greedy completions, each cut at its first stop string (here too, for servers that ignore `stop`)."""
        choices = self._complete(prompts, max_tokens=max_new_tokens, **({"stop": list(stop)} if stop else {}))
        return [cut_at_stop(choice.get("text") or "", stop) for choice in choices]

    def model_shape(self):
        """None: the weights live in the server's process, not here."""
        return None

    def cuda_devices(self) -> list[int]:
        return []

    def reset_peak_memory(self) -> None:
        pass

    def memory(self) -> dict[str, float]:
        return {}

    def close(self) -> None:
        pass
