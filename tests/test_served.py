"""The `openai` backend and the `served` scenario against real servers on 127.0.0.1: `transformers serve` with
SmolLM2 (started by the fixture), and a tiny HTTP server of this file that misbehaves on purpose."""

import asyncio
import json
import os
import random
import statistics
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import by_load

from harness.backends.openai import OpenAIBackend, answer_text, http_get, token_times
from harness.backends.server import LocalServer
from harness.cli import main
from harness.config import scenario
from harness.errors import ConfigError, UnavailableError
from harness.measure.recorder import Recorder
from harness.measure.stats import RepetitionPolicy
from harness.quality import tasks
from harness.results.store import read_rows
from harness.scenarios.served import (
    PromptSource,
    _record,
    _window,
    arrival_offsets,
    meets_slo,
    run_served,
    usage_figures,
    window_figures,
)
from harness.scenarios.trace import block_tokens, find_trace, load_trace, seeded_trace

pytestmark = pytest.mark.slow
OUTPUT_TOKENS = 4


@pytest.fixture(scope="module")
def server(smollm2, tmp_path_factory):
    with LocalServer("transformers", str(smollm2.path), tmp_path_factory.mktemp("server") / "server.log",
                     device="cpu", dtype="fp32", start_timeout_s=300) as running:
        yield running


@pytest.fixture(scope="module")
def backend(server, smollm2):
    loaded = OpenAIBackend()
    loaded.load(smollm2.path, options={"server": {"base_url": server.base_url, "model_name": str(smollm2.path),
                                                  "kind": "transformers"}})
    return loaded


def served_params(**changes) -> dict:
    return {**scenario("served").params, "prompt_tokens": 16, "output_tokens": OUTPUT_TOKENS, "requests": 3,
            "timeout_s": 120.0, **changes}


def run_rows(backend, **changes) -> list[dict]:
    rows = []
    run_served(backend, served_params(**changes), Recorder({"run_id": "t"}, RepetitionPolicy(warmup=1), rows.append))
    return rows


@pytest.mark.parametrize("endpoint", ["completions", "chat"])
def test_both_endpoints_stream_a_fixed_number_of_tokens(backend, endpoint):
    stream = asyncio.run(backend.stream(endpoint, "The capital of France is", OUTPUT_TOKENS, 120))
    assert stream.error is None
    times = token_times(stream, backend.count_tokens)
    # transformers serve is told min_new_tokens = max_new_tokens, so EOS cannot end a request early; our count
    # re-tokenizes the text, where two tokens the model generated apart ("\n", "\n") can make one.
    assert stream.server_tokens == OUTPUT_TOKENS == len(stream.chunk_texts)
    assert [len(times)] == backend.count_tokens(["".join(stream.chunk_texts)]) and 1 <= len(times) <= OUTPUT_TOKENS
    assert stream.t_send < times[0] and times == sorted(times) and times[-1] <= stream.t_end


def test_fixed_concurrency_sweep_rows_follow_the_metric_dictionary(backend):
    loads = by_load(run_rows(backend, concurrency=[1, 2]))
    assert set(loads) == {"concurrency=1", "concurrency=2"}
    for figures in loads.values():
        assert figures["failed_requests"]["value"] == 0
        for name in ("ttft_ms", "tpot_ms", "e2e_latency_ms"):
            assert figures[name]["stats"]["n"] == 3 and figures[name]["formula"] == f"{name.split('_')[0]}.v1"
        for ttft, e2e in zip(figures["ttft_ms"]["samples"], figures["e2e_latency_ms"]["samples"], strict=True):
            assert 0 < ttft < e2e
        output = figures["output_tok_s"]["stats"]
        # The server's count (transformers serve reports usage), not our re-tokenized one, which merges can lower.
        assert output["tokens"] == 3 * OUTPUT_TOKENS and 3 <= output["counted_tokens"] <= 3 * OUTPUT_TOKENS
        assert figures["output_tok_s"]["value"] == pytest.approx(output["tokens"] / output["seconds"])
        assert figures["request_s"]["value"] == pytest.approx(3 / output["seconds"])
        # Gaps pooled over requests: n - 1 per request. At most one event a generated token: a character of several
        # byte tokens comes in one (chunks then fall below the re-tokenized count: 0.909 a token, in one of five runs).
        assert figures["itl_ms"]["stats"]["n"] == output["counted_tokens"] - 3
        chunks = figures["itl_ms"]["stats"]["chunks_per_token"] * output["counted_tokens"]
        assert 3 <= round(chunks) <= output["tokens"]


def test_concurrency_bounds_requests_in_flight(backend):
    prompts = ["Hello there", "Once upon a time", "The weather today"]
    params = served_params()

    def in_flight(concurrency):
        streams, _ = asyncio.run(_window(backend, params, prompts, concurrency, [0.0] * 3))
        assert all(s.error is None for s in streams)
        return max(sum(s.t_send <= t < s.t_end for s in streams) for t in (s.t_send for s in streams))

    assert in_flight(1) == 1
    assert in_flight(3) == 3


def test_poisson_rate_sends_on_schedule(backend):
    rows = run_rows(backend, rates=[4.0], concurrency=[1])
    figures = by_load(rows)["rate=4"]
    assert figures["failed_requests"]["value"] == 0 and figures["ttft_ms"]["stats"]["n"] == 3
    assert figures["request_s"]["params"]["rate_req_s"] == 4.0
    offsets = arrival_offsets(3, 4.0, 1.0, random.Random(1234))
    params = served_params()
    streams, _ = asyncio.run(_window(backend, params, ["a", "b", "c"], None, offsets))
    sent = [s.t_send - streams[0].t_send for s in streams]
    assert sent == pytest.approx(offsets, abs=0.05)


def test_arrivals_are_seeded_gamma_with_burstiness():
    random.seed(99)  # scrambling the global RNG changes nothing: the schedule has its own
    first = arrival_offsets(2000, 5.0, 1.0, random.Random(7))
    random.seed(100)
    assert arrival_offsets(2000, 5.0, 1.0, random.Random(7)) == first
    gaps = [b - a for a, b in zip(first, first[1:], strict=False)]
    assert statistics.mean(gaps) == pytest.approx(0.2, rel=0.1)
    assert statistics.stdev(gaps) / statistics.mean(gaps) == pytest.approx(1.0, rel=0.1)  # Poisson: CV 1
    bursty = arrival_offsets(2000, 5.0, 0.25, random.Random(7))
    bursty_gaps = [b - a for a, b in zip(bursty, bursty[1:], strict=False)]
    assert statistics.mean(bursty_gaps) == pytest.approx(0.2, rel=0.15)
    assert statistics.stdev(bursty_gaps) / statistics.mean(bursty_gaps) == pytest.approx(2.0, rel=0.15)


def test_slo_search_finds_a_rate_and_goodput(backend):
    # Limits no request on this machine can miss, so the search must end at the ceiling with goodput = request_s.
    rows = run_rows(backend, rates=[2.0], slo={"ttft_ms": 1e7, "e2e_latency_ms": 1e7, "percentile": 90},
                    search_rates=[0.5, 8.0], search_steps=1)
    best = next(r for r in rows if r["metric"] == "slo_max_rate_req_s")
    assert best["value"] == 8.0 and best["stats"]["at_ceiling"]
    figures = by_load(rows)["rate=2"]
    assert figures["goodput_req_s"]["value"] == figures["request_s"]["value"]
    # Limits every request misses: no rate meets them, said with the reason, and goodput is 0.
    rows = run_rows(backend, rates=[2.0], slo={"ttft_ms": 0.001}, search_rates=[0.5, 8.0], search_steps=1)
    best = next(r for r in rows if r["metric"] == "slo_max_rate_req_s")
    assert best["value"] is None and "misses" in best["stats"]["reason"]
    assert by_load(rows)["rate=2"]["goodput_req_s"]["value"] == 0


class Misbehaving(BaseHTTPRequestHandler):
    """Answers by the prompt: ok, several tokens in one event, cut (no finish_reason, no [DONE]), HTTP 500, a
    stall past the client's timeout, an error event. Keeps the connection after ok and multi, closes it after the
    others; `seen` lists each request's method and client port."""

    protocol_version = "HTTP/1.1"
    seen: list[tuple[str, int]] = []
    dropped: list[int] = []  # the client port of the one "drop" request answered by closing the connection

    def log_message(self, *args):
        pass

    def event(self, text: str, finish: str | None = None) -> None:
        payload = json.dumps({"choices": [{"index": 0, "text": text, "finish_reason": finish}]})
        self.chunk(f"data: {payload}\n\n")

    def chunk(self, data: str) -> None:
        raw = data.encode()
        self.wfile.write(f"{len(raw):x}\r\n".encode() + raw + b"\r\n")
        self.wfile.flush()

    def do_GET(self):
        self.seen.append(("GET", self.client_address[1]))
        self.send_response(200 if self.path == "/health" else 404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        prompt = body.get("prompt") or body["messages"][-1]["content"]
        self.seen.append(("POST", self.client_address[1]))
        if prompt == "drop" and not self.dropped:  # the first time: the connection closed, no response at all
            self.dropped.append(self.client_address[1])
            self.close_connection = True
            return
        if prompt == "fail":
            body = b'{"error": "out of KV cache"}'
            self.send_response(500)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        if prompt in ("ok", "drop"):
            for word in (" one", " two", " three"):
                self.event(word)
                time.sleep(0.02)
            self.event("", "length")
            self.chunk("data: [DONE]\n\n")
        elif prompt == "multi":
            self.event(" one two three four", "length")
            self.chunk("data: [DONE]\n\n")
        elif prompt == "usage":  # says it generated 6 tokens, whose text re-tokenizes to 4
            self.event(" one two")
            time.sleep(0.05)
            self.event(" three four", "length")
            self.chunk(f"data: {json.dumps({'choices': [], 'usage': {'completion_tokens': 6}})}\n\n")
            self.chunk("data: [DONE]\n\n")
        elif prompt == "think":  # a chat server that sends its reasoning apart, as reasoning_content
            for delta in ({"reasoning_content": "Two and two"}, {"reasoning_content": " make four."},
                          {"content": "\n\n"}, {"content": "Four"}):
                self.chunk(f"data: {json.dumps({'choices': [{'index': 0, 'delta': delta}]})}\n\n")
                time.sleep(0.02)
            self.chunk(f"data: {json.dumps({'choices': [{'index': 0, 'delta': {}, 'finish_reason': 'stop'}]})}\n\n")
            self.chunk("data: [DONE]\n\n")
        elif prompt == "inline":  # a server that leaves the model's <think> block in the text
            for text in ("<think>Two and", " two make four.</thi", "nk>\n\nFo", "ur"):
                self.event(text)
                time.sleep(0.02)
            self.event("", "length")
            self.chunk("data: [DONE]\n\n")
        elif prompt == "cut":
            self.event(" one")
        elif prompt == "stall":
            self.event(" one")
            time.sleep(2)
        elif prompt == "error":
            self.chunk('data: {"error": {"message": "engine died"}}\n\n')
        self.chunk("")  # the last chunk: the body ends (the connection may stay)
        self.close_connection = prompt not in ("ok", "multi", "usage", "drop", "think", "inline")


@pytest.fixture(scope="module")
def broken_backend(smollm2):
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Misbehaving)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    loaded = OpenAIBackend()
    loaded.load(smollm2.path, options={"server": {"base_url": f"http://127.0.0.1:{httpd.server_port}"}})
    yield loaded
    httpd.shutdown()
    httpd.server_close()


def test_broken_streams_become_per_request_errors(broken_backend):
    prompts = ["ok", "multi", "cut", "fail", "stall", "error"]
    params = served_params(timeout_s=0.5)
    streams, seconds = asyncio.run(_window(broken_backend, params, prompts, None, [0.0] * len(prompts)))
    errors = {prompt: stream.error for prompt, stream in zip(prompts, streams, strict=True)}
    assert errors["ok"] is None and errors["multi"] is None
    assert "without [DONE]" in errors["cut"]
    assert errors["fail"].startswith("HTTP 500") and "out of KV cache" in errors["fail"]
    assert errors["stall"].startswith("timeout")
    assert "engine died" in errors["error"]
    window = window_figures(streams, seconds, broken_backend.count_tokens, {})
    assert window["completed"] == 2 and sum(window["errors"].values()) == 4
    # "multi": four tokens in one chunk, stamped alike, so three zero gaps; "ok": three chunks of a token each.
    multi = token_times(streams[1], broken_backend.count_tokens)
    assert len(multi) == 4 and len(set(multi)) == 1
    assert window["tokens"] == window["counted_tokens"] == 3 + 4 and window["chunks"] == 3 + 1  # no usage: ours
    assert window["itl_ms"].count(0.0) == 3
    assert not meets_slo(window, {"ttft_ms": 1e9})


def test_the_servers_own_token_count_makes_throughput_and_tpot_where_it_gives_one(broken_backend):
    streams, seconds = asyncio.run(_window(broken_backend, served_params(), ["usage"], None, [0.0]))
    times = token_times(streams[0], broken_backend.count_tokens)
    assert streams[0].server_tokens == 6 and len(times) == 4  # two chunks of two tokens each, by our tokenizer
    window = window_figures(streams, seconds, broken_backend.count_tokens, {})
    assert window["tokens"] == 6 and window["counted_tokens"] == 4
    assert window["tpot_ms"] == [pytest.approx((times[-1] - times[0]) / 5 * 1e3)]  # 6 tokens: 5 gaps
    assert window["itl_ms"].count(0.0) == 2  # gaps between the stamped tokens, as before


def test_a_request_the_server_drops_before_answering_is_sent_once_more_on_a_new_connection(broken_backend):
    Misbehaving.seen.clear()
    Misbehaving.dropped.clear()
    streams, _ = asyncio.run(_window(broken_backend, served_params(), ["drop"], 1, [0.0]))
    assert streams[0].error is None and "".join(streams[0].chunk_texts) == " one two three"
    sent = [port for method, port in Misbehaving.seen if method == "POST"]
    assert len(sent) == 2 and sent[0] == Misbehaving.dropped[0] != sent[1]


def test_a_window_sends_through_a_pool_of_its_concurrency_opened_before_it(broken_backend):
    Misbehaving.seen.clear()
    streams, _ = asyncio.run(_window(broken_backend, served_params(), ["ok"] * 6, 3, [0.0] * 6))
    assert all(stream.error is None for stream in streams)
    opened = [port for method, port in Misbehaving.seen if method == "GET"]
    sent = [port for method, port in Misbehaving.seen if method == "POST"]
    # Three connections, opened (one GET each) before the first send; the six requests reuse them, two each.
    assert len(set(opened)) == len(opened) == 3 and Misbehaving.seen[:3] == [("GET", port) for port in opened]
    assert len(sent) == 6 and set(sent) == set(opened)


def test_latency_throughput_and_find_max_through_a_server_are_refused_in_one_line(server, smollm2, tmp_path):
    suite = tmp_path / "speed-served.yaml"
    suite.write_text(f"""name: speed-through-a-server
models: ["{smollm2.path}"]
backends: [openai]
device: cpu
dtype: fp32
server: {{base_url: "{server.base_url}", model_name: "{smollm2.path}"}}
scenarios:
  - {{name: latency, prompt_tokens: 8, output_tokens: 3}}
  - {{name: throughput, prompt_tokens: 8, output_tokens: 3, batch_sizes: [1, 2]}}
  - {{name: find_max}}
""")
    out = tmp_path / "run"
    assert main(["run", "--suite", str(suite), "--out", str(out), "--no-progress"]) == 1
    failed = {row["scenario"]: row["error"] for row in read_rows(out / "rows.jsonl") if row["status"] == "failed"}
    lacks = "needs per-token times of in-process generation (capability token_times), which backend openai lacks"
    assert failed == {
        "latency": f"scenario latency {lacks}: for TTFT and TPOT through a server, use scenario served at "
                   "concurrency 1",
        "throughput": f"scenario throughput {lacks}: for throughput through a server, use scenario served with a "
                      "concurrency sweep",
        "find_max": f"scenario find_max {lacks}: a server's limits are its own settings (vLLM's --max-num-seqs, "
                    "--max-model-len)"}


def test_serve_bench_writes_rows_and_summary(server, smollm2, tmp_path):
    out = tmp_path / "run"
    code = main(["serve-bench", "--base-url", server.base_url, "--model", str(smollm2.path), "--tokenizer",
                 str(smollm2.path), "--requests", "2", "--output-tokens", "3", "--prompt-tokens", "8",
                 "--concurrency", "2", "--endpoint", "chat", "--out", str(out), "--no-progress"])
    assert code == 0
    rows = [r for r in read_rows(out / "rows.jsonl") if "load" in r["params"]]
    metrics = {r["metric"] for r in rows}
    assert {"ttft_ms", "tpot_ms", "itl_ms", "e2e_latency_ms", "output_tok_s", "request_s"} <= metrics
    assert all(r["backend"] == "openai" and r["params"]["endpoint"] == "chat" for r in rows)
    summary = (out / "summary.csv").read_text()
    assert "output_tok_s" in summary.splitlines()[0] and "concurrency=2" in summary


def test_serve_bench_bad_input_is_one_line(capsys, tmp_path):
    assert main(["serve-bench", "--base-url", "http://127.0.0.1:9", "--model", "m", "--rate", "-1",
                 "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0] == "bench: error: --rate: must be a number > 0, got -1.0" and "Traceback" not in "".join(err)


def test_bench_run_starts_and_stops_its_own_server(smollm2, tmp_path):
    suite = tmp_path / "served.yaml"
    suite.write_text(f"""name: served-local
models: ["{smollm2.path}"]
backends: [openai]
device: cpu
dtype: fp32
measure: {{warmup: 0}}
server: {{launch: transformers, start_timeout_s: 300}}
scenarios:
  - {{name: served, requests: 2, prompt_tokens: 8, output_tokens: 3, concurrency: [2]}}
""")
    out = tmp_path / "run"
    assert main(["run", "--suite", str(suite), "--out", str(out), "--no-progress"]) == 0
    rows = read_rows(out / "rows.jsonl")
    ttft = next(r for r in rows if r["metric"] == "ttft_ms")
    assert ttft["stats"]["n"] == 2 and ttft["device"] == "cpu"
    assert ttft["backend_info"]["server_kind"] == "transformers"
    assert http_get(ttft["backend_info"]["base_url"], "/health", timeout_s=2)[0] == 0  # stopped with the suite


def test_quality_through_a_server_that_gives_no_prompt_log_probabilities(backend, smollm2_backend):
    """transformers serve: greedy completions equal the in-process ones on the same weights; log-likelihoods, which
    it cannot give (no token-id prompts, no echo), are refused in one line that says so."""
    sums = tasks.prepare(tasks.load_task("arithmetic"), limit=3, seed=1234)
    served = backend.generate_text(sums.contexts, sums.task.max_new_tokens, list(sums.task.stop))
    assert served == smollm2_backend.generate_text(sums.contexts, sums.task.max_new_tokens, list(sums.task.stop))
    assert any(served)
    with pytest.raises(UnavailableError, match="cannot score log-likelihoods") as refused:
        backend.loglikelihood([("The capital of France is", " Paris")])
    assert "\n" not in refused.value.message


def test_no_prompt_is_sent_twice_in_a_run_and_a_new_run_draws_new_ones(broken_backend):
    params = served_params(prompt_tokens=24)
    source = PromptSource(broken_backend, params, salt=1)
    first, second = source.take(5), source.take(5)
    assert len(set(first + second)) == 10  # the warm-up's, then each window's own
    assert PromptSource(broken_backend, params, salt=1).take(10) == first + second  # prompt_salt repeats a run
    assert not set(PromptSource(broken_backend, params, salt=2).take(10)) & set(first + second)
    assert broken_backend.count_tokens(first) == [24] * 5


@pytest.mark.parametrize("share", [1.0, 0.5, 0.0])
def test_a_shared_prefix_heads_its_share_of_the_prompts(broken_backend, share):
    params = served_params(prompt_tokens=40, shared_prefix={"tokens": 32, "share": share})
    source = PromptSource(broken_backend, params, salt=3)
    prompts = source.take(8)
    system = broken_backend.tokenizer.decode(source.system)
    # Re-tokenizing the joined ids may merge across the boundary: all of the system prompt but its last characters.
    heads = [p.startswith(system[:-8]) for p in prompts]
    assert sum(heads) == 8 * share and (share != 0.5 or heads == [False, True] * 4)
    assert broken_backend.count_tokens(prompts) == [40] * 8


def test_the_system_prompt_is_as_many_tokens_as_sent_whatever_the_salt(broken_backend):
    # Random ids decode to text that often encodes to more tokens (48 of SmolLM2's came back as 53 to 57 for one salt
    # in seven), which made the shared prefix longer than the suite said and its hit rate higher than expected.
    params = served_params(prompt_tokens=40, shared_prefix={"tokens": 32, "share": 1.0})
    encode = broken_backend.tokenizer
    for salt in range(40):
        source = PromptSource(broken_backend, params, salt=salt)
        assert encode(encode.decode(source.system)).input_ids == source.system and len(source.system) == 32
        sent = [encode(p).input_ids for p in source.take(3)]
        shared = len(os.path.commonprefix(sent))
        assert 30 <= shared <= 36, (salt, shared)  # re-tokenizing may merge a few across the boundary


def test_usage_counts_beside_bench_s_say_which_requests_disagree(broken_backend):
    streams, seconds = asyncio.run(_window(broken_backend, served_params(), ["usage", "ok"], None, [0.0, 0.0]))
    window_figures(streams, seconds, broken_backend.count_tokens, {})
    # "usage": the server says 6 output tokens of a text bench counts as 4; "ok" reports no usage, so it is left out.
    mismatched, differences = usage_figures(streams, [1, 1])["output"]
    assert mismatched == [1] and differences == [2]
    assert usage_figures(streams, [1, 1])["prompt"] == ([], [])


def test_a_trace_replays_on_its_schedule_scaled(broken_backend):
    requests = load_trace(find_trace("mooncake_sample"), 16)[:8]
    for scale in (4.0, 8.0):
        offsets = [r.timestamp / 1e3 / scale for r in requests]
        streams, _ = asyncio.run(_window(broken_backend, served_params(), ["ok"] * 8, None, offsets))
        sent = [s.t_send - streams[0].t_send for s in streams]
        assert sent == pytest.approx(offsets, abs=0.05)
        window = window_figures(streams, 1.0, broken_backend.count_tokens, {})
        assert len(window["schedule_lag_ms"]) == 8 and max(window["schedule_lag_ms"]) < 50
    assert offsets[-1] > 0.2  # the trace's span, scaled, is long enough for the check to tell the scales apart


def test_the_shipped_trace_is_the_seeded_generator_s():
    shipped = Path(find_trace("mooncake_sample")).read_text().splitlines()
    assert [json.loads(line) for line in shipped] == seeded_trace()
    assert block_tokens(find_trace("mooncake_sample"), None) == 16 and block_tokens("/x/other.jsonl", None) == 512


@pytest.mark.parametrize(("line", "says"), [
    ("{not json", "not JSON"),
    ('{"timestamp": 0, "input_length": 0, "output_length": 4}', "input_length"),
    ('{"timestamp": -1, "input_length": 8, "output_length": 4}', "timestamp"),
    ('{"timestamp": 0, "input_length": 40, "output_length": 4, "hash_ids": [1, 2]}', "2 hash_ids do not make"),
])
def test_a_bad_trace_line_is_one_error_naming_its_line(tmp_path, line, says):
    trace = tmp_path / "t.jsonl"
    trace.write_text('{"timestamp": 0, "input_length": 8, "output_length": 4, "extra": "ignored"}\n' + line + "\n")
    with pytest.raises(ConfigError) as caught:
        load_trace(str(trace), 16)
    assert f"{trace}:2" in caught.value.message and says in caught.value.message


@pytest.mark.parametrize(("endpoint", "prompt"), [("chat", "think"), ("completions", "inline"), ("completions", "ok")])
def test_reasoning_and_answer_tokens_are_counted_apart(broken_backend, endpoint, prompt):
    params = served_params(endpoint=endpoint)
    streams, seconds = asyncio.run(_window(broken_backend, params, [prompt], None, [0.0]))
    window = window_figures(streams, seconds, broken_backend.count_tokens, {})
    stream = streams[0]
    if prompt == "ok":  # no reasoning: no reasoning figures, and the whole text is the answer
        assert window["reasoning_tokens"] == window["ttfa_ms"] == [] and answer_text(stream) == " one two three"
        rows = []
        _record(Recorder({"run_id": "t"}, RepetitionPolicy(), rows.append), window, {"load": "x"}, {}, {})
        assert not {"reasoning_tokens", "answer_tokens", "ttfa_ms"} & {row["metric"] for row in rows}
        return
    reasoning = {"think": "Two and two make four.", "inline": "<think>Two and two make four.</think>"}[prompt]
    count = broken_backend.count_tokens
    assert window["reasoning_tokens"] == count([reasoning]) and window["answer_tokens"] == count(["\n\nFour"])
    assert answer_text(stream) == "\n\nFour"
    # The first token is reasoning (ttft counts it as output); the answer's first non-blank text is "Four" (think: the
    # fourth chunk, after a blank one) or "Fo" (inline: the third, whose head closes the <think> block).
    answer_at = stream.chunk_times[3 if prompt == "think" else 2]
    assert window["ttfa_ms"] == [pytest.approx((answer_at - stream.t_send) * 1e3)]
    assert window["ttft_ms"][0] < window["ttfa_ms"][0]
    assert window["counted_tokens"] == count([reasoning + "\n\nFour"])[0]
    rows = []
    context = {"run_id": "t", "model": "m", "scenario": "served", "cell_id": "m|served", "status": "ok"}
    _record(Recorder(context, RepetitionPolicy(), rows.append), window, {"load": "x"}, {}, {"prompt_salt": 1})
    recorded = {row["metric"]: row for row in rows}
    assert recorded["reasoning_tokens"]["value"] == count([reasoning])[0]
    assert recorded["answer_tokens"]["value"] == count(["\n\nFour"])[0]
    assert recorded["ttfa_ms"]["value"] == window["ttfa_ms"][0]
    # The reasoning claim reads these rows: tokens per response over tokens of the answer.
    from harness import claims

    found = next(c for c in claims.load_claims() if c.id == "reasoning.token_overhead")
    judged = claims.verdict(found, rows)
    expected = 1 + count([reasoning])[0] / count(["\n\nFour"])[0]
    assert float(judged.figures["ratio"].split()[0]) == pytest.approx(expected, abs=0.005)
