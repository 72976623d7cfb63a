"""Served workloads against a real llama-server on 127.0.0.1 (built by .ci/llamacpp_env.sh) on SmolLM2's shipped
GGUF: a shared system prompt with the prefix cache on and off, prompts that no second run repeats, the server's
usage counts and /metrics beside bench's figures, and a trace replayed from a suite and from `bench serve-bench`."""

import asyncio
import os
import re

import pytest
from conftest import by_load
from test_llamacpp import needs_build

from harness import zoo
from harness.backends.llamacpp import LlamaCppBackend, llama_server
from harness.backends.openai import http_get
from harness.backends.server_metrics import GAUGES, parse, pick
from harness.cli import main
from harness.config import scenario
from harness.measure.recorder import Recorder
from harness.measure.stats import RepetitionPolicy
from harness.results.store import read_rows
from harness.results.tables import summary_rows
from harness.scenarios.served import PromptSource, _window, run_served, window_figures

pytestmark = [pytest.mark.slow, needs_build]
PROMPT, SYSTEM = 64, 48


@pytest.fixture(scope="module")
def running(tmp_path_factory):
    gguf = zoo.gguf_file("smollm2-135m", None, progress=False)
    server, details = llama_server(gguf, tmp_path_factory.mktemp("llama") / "server.log", ("-t", "2"))
    with server:
        yield server, details


@pytest.fixture(scope="module")
def backend(running, smollm2):
    server, details = running
    loaded = LlamaCppBackend()
    loaded.load(smollm2.path, options={"server": {"base_url": server.base_url, **details}})
    return loaded


def figures_of(backend, **changes) -> dict:
    """The rows of one served scenario run, by load point (a window with the prefix cache off labelled so), then by
    metric."""
    rows = []
    params = {**scenario("served").params, "prompt_tokens": PROMPT, "output_tokens": 4, "requests": 6,
              "metrics_interval_s": 0.2, **changes}
    run_served(backend, params, Recorder({"run_id": "t"}, RepetitionPolicy(warmup=1), rows.append))
    figures: dict = {}
    for row in rows:
        assert row["params"]["load"].endswith(" prefix_cache=off") == (row["params"]["prefix_cache"] == "off")
        figures.setdefault(row["params"]["load"], {})[row["metric"]] = row
    # The summary has a line of each window's own: none overwrites another's figures.
    assert [line["load"] for line in summary_rows(rows)] == list(figures)
    return figures


def test_a_shared_system_prompt_is_served_from_the_cache_only_when_it_is_on_and_shared(backend):
    figures = figures_of(backend, shared_prefix={"tokens": SYSTEM, "share": 1.0}, prefix_cache=["on", "off"])
    on, off = figures["concurrency=1"], figures["concurrency=1 prefix_cache=off"]
    hit = on["prefix_cache_hit_rate"]
    assert hit["stats"]["source"] == "timings" and hit["stats"]["prompt_tokens"] == 6 * PROMPT
    # Every request after the warm-up's carries the run's system prompt, so each can take from the cache the longest
    # token prefix it shares with a prompt sent before it: the system prompt's tokens, and any that re-tokenizing
    # the text merges across the boundary. The run's salt gives its prompts again, to count those prefixes here.
    params = {**scenario("served").params, "prompt_tokens": PROMPT, "shared_prefix": {"tokens": SYSTEM, "share": 1.0}}
    sent = [backend.tokenizer(p).input_ids for p in PromptSource(backend, params, hit["stats"]["prompt_salt"]).take(7)]
    shared = [max(len(os.path.commonprefix([ids, earlier])) for earlier in sent[:i]) for i, ids in enumerate(sent)
              if i]
    assert all(SYSTEM - 2 <= length <= SYSTEM + 4 for length in shared)
    assert hit["stats"]["cached_tokens"] == pytest.approx(sum(shared), abs=6)  # a token a request, at most
    assert off["prefix_cache_hit_rate"]["value"] == 0  # with the cache off, none
    unshared = figures_of(backend, shared_prefix={"tokens": SYSTEM, "share": 0.0})["concurrency=1"]
    assert unshared["prefix_cache_hit_rate"]["value"] < 0.05


def test_a_second_run_hits_no_cache_unless_it_repeats_the_first_run_s_salt(backend):
    first = figures_of(backend)["concurrency=1"]["prefix_cache_hit_rate"]
    salt = first["stats"]["prompt_salt"]
    fresh = figures_of(backend)["concurrency=1"]["prefix_cache_hit_rate"]
    repeated = figures_of(backend, prompt_salt=salt)["concurrency=1"]["prefix_cache_hit_rate"]
    assert fresh["stats"]["prompt_salt"] != salt and repeated["stats"]["prompt_salt"] == salt
    assert first["value"] < 0.05 and fresh["value"] < 0.05
    assert repeated["value"] > 0.5  # the same prompts again: llama-server's slots and prompt cache still hold them


@pytest.mark.parametrize("endpoint", ["completions", "chat"])
def test_the_server_s_usage_counts_and_metrics_sit_beside_bench_s(backend, endpoint):
    figures = figures_of(backend, endpoint=endpoint, concurrency=[2])["concurrency=2"]
    # bench counts the prompt as the server sees it (chat: through the model's chat template): they agree.
    assert figures["usage_mismatch_prompt"]["value"] == 0 and figures["usage_mismatch_prompt"]["stats"]["n"] == 6
    output = figures["usage_mismatch_output"]
    assert output["stats"]["requests"] == 6 and 0 <= output["value"] <= 1
    assert figures["output_tok_s"]["stats"]["tokens"] == 6 * 4  # the server's count, which ignore_eos fixes
    running = figures["server_requests_running"]
    assert running["stats"]["max"] <= 2 and running["stats"]["n"] >= 2  # the start and end reads at least
    assert "server_kv_cache_usage" not in figures  # this llama-server reports no KV-cache gauge


def test_metrics_text_is_read_by_family(running):
    server, _ = running
    status, text = http_get(server.base_url, "/metrics")
    values = parse(text)
    assert status == 200 and pick(values, GAUGES["server_requests_running"]) == 0
    typed = ("# TYPE vllm:num_preemptions counter\nvllm:num_preemptions_total{engine=\"0\"} 3\n"
             "vllm:num_preemptions_total{engine=\"1\"} 2\nvllm:num_preemptions_created{engine=\"0\"} 1.7e9\n")
    for text in (typed, typed.split("\n", 1)[1]):  # with its # TYPE line and without
        assert pick(parse(text), ("vllm:num_preemptions",)) == 5


def test_a_trace_replays_from_a_suite_and_from_serve_bench(running, smollm2, tmp_path):
    server, details = running
    suite = tmp_path / "trace.yaml"
    suite.write_text(f"""name: trace
models: ["{smollm2.path}"]
backends: [openai]
server: {{base_url: "{server.base_url}", model_name: "{details['model_name']}"}}
scenarios:
  - {{name: served, trace: mooncake_sample, time_scale: 4}}
  - {{name: served, endpoint: chat, prompt_tokens: 8, output_tokens: 4, conversation: {{users: 2, turns: 2}}}}
""")
    commands = {"suite": ["run", "--suite", str(suite)],
                "serve-bench": ["serve-bench", "--base-url", server.base_url, "--model", details["model_name"],
                                "--tokenizer", str(smollm2.path), "--trace", "mooncake_sample", "--time-scale", "4"]}
    for name, command in commands.items():
        out = tmp_path / name
        assert main([*command, "--out", str(out), "--no-progress"]) == 0
        rows = by_load([r for r in read_rows(out / "rows.jsonl") if "load" in r["params"]])
        window = rows["trace x4"]
        assert window["failed_requests"]["value"] == 0 and window["ttft_ms"]["stats"]["n"] == 24
        assert window["request_s"]["params"]["trace"] == "mooncake_sample"
        assert "prompt_tokens" not in window["request_s"]["params"]  # each request's own, from the trace
        lag = window["schedule_lag_ms"]
        assert lag["stats"]["n"] == 24 and lag["value"] < 50
        # Half the trace's requests begin with one of three shared system prompts: some prompt tokens are cached.
        assert 0 < window["prefix_cache_hit_rate"]["value"] < 1
    # The suite's multi-turn rows went through the rows file and its summary with the others.
    summary = (tmp_path / "suite" / "summary.csv").read_text()
    assert all(f'"{load}"' in summary for load in ("trace x4", "conversations", "turn=1", "turn=2"))


@pytest.mark.parametrize("cache", ["on", "off"])
def test_multi_turn_chat_sends_each_user_s_conversation_so_far_turn_after_turn(backend, cache):
    think = 0.3
    rows = []
    params = {**scenario("served").params, "endpoint": "chat", "prompt_tokens": 16, "output_tokens": 4,
              "metrics_interval_s": 0.2, "prefix_cache": [cache],
              "conversation": {"users": 2, "turns": 3, "think_time_s": think}}
    run_served(backend, params, Recorder({"run_id": "t"}, RepetitionPolicy(warmup=1), rows.append))
    label = "" if cache == "on" else " prefix_cache=off"
    figures: dict = {}
    for row in rows:
        figures.setdefault(row["params"]["load"], {})[row["metric"]] = row
    assert set(figures) == {f"{load}{label}" for load in ("conversations", "turn=1", "turn=2", "turn=3")}
    pooled = figures[f"conversations{label}"]
    assert pooled["failed_requests"]["value"] == 0 and pooled["ttft_ms"]["stats"]["n"] == 6
    # The server's prompt counts equal bench's count of each conversation so far through the chat template.
    assert pooled["usage_mismatch_prompt"]["value"] == 0 and pooled["usage_mismatch_prompt"]["stats"]["n"] == 6
    history = [figures[f"turn={turn}{label}"]["ttft_ms"]["stats"]["history_tokens"] for turn in (1, 2, 3)]
    # Each turn adds an answer (4 tokens) and a new message (16) to the history, and the template's tokens around them.
    assert all(16 + 4 <= later - earlier <= 16 + 4 + 16 for earlier, later in zip(history, history[1:], strict=False))
    slope = pooled["ttft_history_slope_ms_per_ktok"]
    low, high = slope["stats"]["prompt_token_range"]
    assert slope["stats"]["requests"] == 6 and low <= min(history) and max(history) <= high
    hit = pooled["prefix_cache_hit_rate"]["value"]
    # With the cache on, turns 2 and 3 reuse the conversation before them; off, nothing.
    assert (hit > 0.3) if cache == "on" else (hit == 0)
    # A user waits the think time after each answer: the window lasts at least its two waits.
    assert pooled["request_s"]["value"] <= 6 / (2 * think)


# A llama.cpp grammar (a request field) that makes SmolLM2 open every response with a <think> block: a real server's
# text for bench's reasoning split, from a model that does not reason by itself.
THINKING = 'root ::= "<think>" [a-z ]{8,24} "</think>" [a-z .]+'


def test_request_fields_reach_the_server_and_a_think_block_is_counted_as_reasoning(backend):
    params = {**scenario("served").params, "prompt_tokens": PROMPT, "output_tokens": 64,
              "request_fields": {"grammar": THINKING}}
    streams, seconds = asyncio.run(_window(backend, params, PromptSource(backend, params, 1).take(3), 1, [0.0] * 3))
    window = window_figures(streams, seconds, backend.count_tokens, {})
    texts = ["".join(stream.chunk_texts) for stream in streams]
    assert all(re.fullmatch(r"<think>[a-z ]{8,24}</think>[a-z .]+", text) for text in texts), texts  # the grammar held
    parts = [text.partition("</think>") for text in texts]
    assert window["reasoning_tokens"] == backend.count_tokens([think + close for think, close, _ in parts])
    assert window["answer_tokens"] == backend.count_tokens([answer for _, _, answer in parts])
    assert all(ttfa > ttft for ttfa, ttft in zip(window["ttfa_ms"], window["ttft_ms"], strict=True))
    plain = {**params, "request_fields": None}
    streams, seconds = asyncio.run(_window(backend, plain, PromptSource(backend, plain, 2).take(2), 1, [0.0] * 2))
    assert window_figures(streams, seconds, backend.count_tokens, {})["reasoning_tokens"] == []  # it never thinks
