"""OpenAI-compatible servers (vLLM, llama.cpp, Ollama, SGLang, TGI, `transformers serve`), streamed over HTTP.

The client is the standard library's asyncio: one HTTP/1.1 connection per request (no pool, so no request ever
waits for another's connection), server-sent events read as they arrive, each event stamped with the host clock
when the read that carried it returned. Tokens are counted afterwards, with the model's own tokenizer, so the
measured window holds no tokenizer work (see `token_times`).
"""

import asyncio
import json
import ssl
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from harness.backends.base import BackendInfo
from harness.backends.tokens import Pair, RequestTokens, cut_at_stop
from harness.errors import ConfigError, UnavailableError, one_line

ENDPOINTS = {"completions": "/v1/completions", "chat": "/v1/chat/completions"}


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


async def _read_body(reader: asyncio.StreamReader, headers: dict):
    """The response body's bytes as they arrive, de-chunked when the server uses chunked transfer encoding."""
    if "chunked" not in headers.get("transfer-encoding", ""):
        while data := await reader.read(65536):
            yield data
        return
    while True:
        size_line = await reader.readline()
        if not size_line:
            return
        size = int(size_line.split(b";")[0].strip() or b"0", 16)
        if size == 0:
            return
        yield await reader.readexactly(size)
        await reader.readexactly(2)  # the CRLF after each chunk


def _chunk_text(event: dict, endpoint: str) -> tuple[str, bool]:
    """The text an event adds and whether it says the generation finished."""
    choices = event.get("choices") or [{}]
    choice = choices[0]
    text = choice.get("text") if endpoint == "completions" else (choice.get("delta") or {}).get("content")
    return text or "", bool(choice.get("finish_reason"))


async def stream_request(base_url: str, endpoint: str, body: dict, timeout_s: float,
                         api_key: str | None = None) -> Stream:
    """Sends one streaming request and records its chunks; never raises for what the server or network does: an
    HTTP error status, an error event, a timeout or a cut stream becomes `Stream.error`."""
    stream = Stream(t_send=time.perf_counter())
    try:
        await asyncio.wait_for(_exchange(base_url, endpoint, body, api_key, stream), timeout_s)
    except asyncio.TimeoutError:
        stream.error = f"timeout: no complete response within {timeout_s:g} s"
    except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
        stream.error = one_line(exc)
    stream.t_end = time.perf_counter()
    return stream


async def _exchange(base_url: str, endpoint: str, body: dict, api_key: str | None, stream: Stream) -> None:
    url = urlsplit(base_url)
    secure = url.scheme == "https"
    reader, writer = await asyncio.open_connection(
        url.hostname, url.port or (443 if secure else 80), ssl=ssl.create_default_context() if secure else None)
    try:
        payload = json.dumps(body).encode()
        headers = [f"POST {url.path.rstrip('/')}{ENDPOINTS[endpoint]} HTTP/1.1", f"Host: {url.netloc}",
                   "Content-Type: application/json", "Accept: text/event-stream", "Connection: close",
                   f"Content-Length: {len(payload)}"]
        if api_key:
            headers.append(f"Authorization: Bearer {api_key}")
        writer.write(("\r\n".join(headers) + "\r\n\r\n").encode() + payload)
        await writer.drain()
        status_line = (await reader.readline()).decode("latin-1").split(maxsplit=2)
        response_headers = {}
        while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            response_headers[name.strip().lower()] = value.strip().lower()
        if len(status_line) < 2 or status_line[1] != "200":
            text = b"".join([data async for data in _read_body(reader, response_headers)]).decode(errors="replace")
            stream.error = f"HTTP {' '.join(status_line[1:]).strip() or '(no status)'}: {text.strip()[:200]}"
            return
        await _read_events(reader, response_headers, endpoint, stream)
    finally:
        writer.close()


async def _read_events(reader, headers: dict, endpoint: str, stream: Stream) -> None:
    pending, finished = b"", False
    async for data in _read_body(reader, headers):
        arrived = time.perf_counter()
        pending += data
        *lines, pending = pending.split(b"\n")
        for raw in lines:
            line = raw.strip()
            if not line.startswith(b"data:"):
                continue
            content = line[5:].strip()
            if content == b"[DONE]":
                return
            event = json.loads(content)
            if "error" in event:
                stream.error = f"server error event: {json.dumps(event['error'])[:200]}"
                return
            if event.get("usage"):
                stream.server_tokens = event["usage"].get("completion_tokens")
            text, finish = _chunk_text(event, endpoint)
            finished = finished or finish
            if text:
                stream.chunk_times.append(arrived)
                stream.chunk_texts.append(text)
    # Some servers (transformers serve) close the stream after the chunk with a finish_reason and send no [DONE];
    # a stream cut before both is incomplete.
    if not finished:
        stream.error = "stream ended without [DONE] or a finish_reason"


def http_post_json(url: str, body: dict, api_key: str | None = None, timeout_s: float = 600.0) -> dict:
    """The JSON answer to a JSON POST; an HTTP error status or a network failure raises UnavailableError."""
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {api_key}"} if api_key else {})}
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        text = exc.read().decode(errors="replace").strip()[:200]
        raise UnavailableError(f"{url} answered HTTP {exc.code}: {text}") from None
    except (OSError, ValueError) as exc:
        raise UnavailableError(f"{url}: {one_line(exc)}") from None


def http_get(base_url: str, path: str, timeout_s: float = 5.0) -> tuple[int, str]:
    """Status and body of a GET; status 0 and the reason when the server cannot be reached."""
    try:
        with urllib.request.urlopen(base_url.rstrip("/") + path, timeout=timeout_s) as response:
            return response.status, response.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, ""
    except (OSError, ValueError) as exc:
        return 0, f"{type(exc).__name__}: {exc}"


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

    def load(self, model_path: Path, device: str = "auto", dtype: str = "auto", options: dict | None = None) -> None:
        from transformers import AutoTokenizer

        server = (options or {}).get("server") or {}
        if not server.get("base_url"):
            raise ConfigError("the openai backend needs a server: a base URL (serve-bench --base-url) or a suite "
                              "`server:` section")
        self.base_url = server["base_url"].rstrip("/")
        self.model_name = server.get("model_name") or str(model_path)
        self.api_key = server.get("api_key")
        self.dtype = dtype
        # A server we started says where it runs; of another we know only its host.
        self.device = server.get("device", "server")
        self.device_name = server.get("device_name") or urlsplit(self.base_url).hostname
        status, text = http_get(self.base_url, "/health")
        if status == 0:
            raise UnavailableError(f"cannot reach the server at {self.base_url}: {text}")
        version_status, version = http_get(self.base_url, "/version")
        self.version = json.loads(version).get("version") if version_status == 200 else None
        # vLLM answers /version; a server we started says what it is.
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
                           extra={"server_kind": self.kind, "model_name": self.model_name, "base_url": self.base_url})

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

    def request_body(self, endpoint: str, prompt: str, output_tokens: int) -> dict:
        """Greedy, streamed, `output_tokens` long where the server can be told to ignore EOS."""
        body = {"model": self.model_name, "max_tokens": output_tokens, "temperature": 0.0, "stream": True}
        if endpoint == "chat":
            body["messages"] = [{"role": "user", "content": prompt}]
        else:
            body["prompt"] = prompt
        if self.kind == "vllm":
            body.update(ignore_eos=True, min_tokens=output_tokens, stream_options={"include_usage": True})
        elif self.kind == "transformers":
            body["generation_config"] = json.dumps({"min_new_tokens": output_tokens, "max_new_tokens": output_tokens,
                                                    "do_sample": False})
        return body

    async def stream(self, endpoint: str, prompt: str, output_tokens: int, timeout_s: float) -> Stream:
        return await stream_request(self.base_url, endpoint, self.request_body(endpoint, prompt, output_tokens),
                                    timeout_s, self.api_key)

    def _complete(self, prompts: list, **fields) -> list[dict]:
        """Non-streamed greedy /v1/completions of prompts (texts or token id lists), one prompt to a request,
        QUALITY_CONCURRENCY at a time; each prompt's choice, in order."""
        url = self.base_url + ENDPOINTS["completions"]

        def complete(prompt) -> dict:
            answer = http_post_json(url, {"model": self.model_name, "prompt": prompt, "temperature": 0.0, **fields},
                                    self.api_key)
            if not answer.get("choices"):
                raise UnavailableError(f"{url} answered no completion: {json.dumps(answer)[:200]}")
            return answer["choices"][0]

        with ThreadPoolExecutor(QUALITY_CONCURRENCY) as pool:
            return list(pool.map(complete, prompts))

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

    def reset_peak_memory(self) -> None:
        pass

    def memory(self) -> dict[str, float]:
        return {}

    def close(self) -> None:
        pass
