"""The llamacpp backend against a real llama-server (built by .ci/llamacpp_env.sh) on SmolLM2's Q4_1 GGUF as shipped:
what the rows say was run, served load and generation through it, and log-likelihood tasks refused in one line."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import by_load

from harness import zoo
from harness.backends.llamacpp import find_build, gguf_facts, server_arguments
from harness.backends.openai import http_get
from harness.cli import main
from harness.errors import BenchError
from harness.measure.memory import MIB
from harness.results.store import read_rows

ROOT = Path(__file__).resolve().parents[1]


def _build_or_reason() -> str | None:
    try:
        find_build()
    except BenchError as exc:
        return exc.message
    return None


NO_BUILD = _build_or_reason()
needs_build = pytest.mark.skipif(NO_BUILD is not None, reason=f"{NO_BUILD} (sh .ci/llamacpp_env.sh builds it)")


@pytest.fixture(scope="module")
def smollm2_gguf():
    return zoo.gguf_file("smollm2-135m", None, progress=False)


def test_gguf_facts_are_the_files_own(smollm2_gguf, smollm2):
    """The quantisation llama.cpp names, the sha256 the alias pins, the parameter count that transformers counts in
    the bf16 copy, and tensor bytes that fill the file's data section (all but its alignment padding)."""
    from gguf import GGUFReader
    from transformers import AutoModelForCausalLM

    facts = gguf_facts(smollm2_gguf)
    assert facts["quantization"] == "q4_1" and facts["architecture"] == "llama"
    assert facts["gguf_sha256"] == zoo.ALIASES["smollm2-135m"].packaged.sha256
    model = AutoModelForCausalLM.from_pretrained(smollm2.path)
    assert facts["params"] == sum(p.numel() for p in model.parameters())
    data_section = smollm2_gguf.stat().st_size - GGUFReader(smollm2_gguf).data_offset
    assert 0.999 * data_section <= facts["weight_bytes"] <= data_section
    # Q4_1 stores 32 weights in 20 bytes: most of SmolLM2's weights are in it, a few small tensors in f32.
    assert 0.625 <= facts["weight_bytes"] / facts["params"] < 0.75
    # K and V of 30 layers x 3 KV heads x 64 dims in f16 (SmolLM2-135M's config).
    assert facts["kv_bytes_per_token"] == 2 * 30 * 3 * 64 * 2
    assert facts["lookup_params"] == 0  # tied embeddings: the output head reads the whole table


def test_server_arguments_record_the_settings_in_force():
    command, settings = server_arguments(("-t", "1", "--ctx-size", "2048"))
    assert settings == {"threads": 1, "ctx_size": 2048, "batch_size": 2048, "ubatch_size": 512, "parallel": 4}
    assert command[-4:] == ["-t", "1", "--ctx-size", "2048"]
    # Each setting's flag once: bench's default gives way to the one given (llama.cpp warns of a flag given twice).
    for flags in (("-t", "--threads"), ("-c", "--ctx-size")):
        assert sum(arg in flags for arg in command) == 1
    assert command[command.index("-b") + 1] == "2048" and command.count("-b") == 1
    assert server_arguments(())[1]["threads"] == len(os.sched_getaffinity(0))


def test_a_model_without_a_gguf_is_refused_in_one_line(tiny_dense):
    with pytest.raises(BenchError, match="has no GGUF file for llama.cpp"):
        zoo.gguf_file("tiny-dense", str(tiny_dense.path))


SUITE = """name: llamacpp-test
models: [smollm2-135m]
backends: [llamacpp]
measure: {{warmup: 1}}
{server}
scenarios:
  - {{name: served, requests: 4, prompt_tokens: 32, output_tokens: 8, concurrency: [1, 2]}}
  - {{name: quality, task: arithmetic, limit: 3}}
  - {{name: quality, task: perplexity}}
  - {{name: latency, prompt_tokens: 8, output_tokens: 4}}
{extra}"""


@pytest.mark.slow
@needs_build
def test_bench_run_starts_llama_server_on_the_shipped_gguf_and_stops_it(smollm2_gguf, tmp_path):
    suite = tmp_path / "suite.yaml"
    # The same generation task on the in-process engine too: a backend only a scenario names runs that scenario alone.
    suite.write_text(SUITE.format(server='server: {launch: llama.cpp, args: ["-t", "2"]}',
                                  extra="  - {name: quality, task: arithmetic, limit: 3, backends: [transformers]}\n"))
    out = tmp_path / "run"
    assert main(["run", "--suite", str(suite), "--out", str(out), "--no-progress"]) == 1  # two cells cannot run
    rows = read_rows(out / "rows.jsonl")
    served = [r for r in rows if "load" in r["params"]]
    info = served[0]["backend_info"]
    facts = gguf_facts(smollm2_gguf)
    assert info["server_kind"] == "llama.cpp" and info["model_name"] == str(smollm2_gguf)
    assert {k: info[k] for k in ("quantization", "gguf_sha256", "weight_bytes", "threads", "ctx_size")} == {
        "quantization": "q4_1", "gguf_sha256": facts["gguf_sha256"], "weight_bytes": facts["weight_bytes"],
        "threads": 2, "ctx_size": 4096}
    assert served[0]["backend"] == "llamacpp" and served[0]["dtype"] == "q4_1"
    assert served[0]["backend_version"] == info["build"] == find_build().build_id != "unknown"
    for figures in by_load(served).values():
        assert figures["failed_requests"]["value"] == 0
        # ignore_eos: the server's own usage counts say every request returned the 8 tokens asked for.
        assert figures["output_tok_s"]["stats"]["tokens"] == 4 * 8
    by_metric = {r["metric"]: r for r in rows if r["status"] == "ok" and r["scenario"] == "served"}
    assert by_metric["weights_mib"]["value"] == pytest.approx(facts["weight_bytes"] / MIB)
    assert "peak_rss_mib" not in by_metric  # this process's memory is not the server's
    mbu = by_metric["mbu_calibrated"]
    assert mbu["params"]["load"] == "concurrency=1" and 0 < mbu["value"] <= 1
    quality = {(r["backend"], r["task"]): r for r in rows
               if r["scenario"] == "quality" and r["metric"] in ("exact_match", None)}
    assert set(quality) == {("llamacpp", "arithmetic"), ("llamacpp", "perplexity"), ("transformers", "arithmetic")}
    for backend in ("llamacpp", "transformers"):
        assert quality[backend, "arithmetic"]["status"] == "ok" and quality[backend, "arithmetic"]["stats"]["n"] == 3
    assert quality["transformers", "arithmetic"]["dtype"] != "q4_1"
    quality = {task: r for (backend, task), r in quality.items() if backend == "llamacpp"}
    assert quality["perplexity"]["status"] == "failed"
    assert "cannot score log-likelihoods" in quality["perplexity"]["error"]
    latency = next(r for r in rows if r["scenario"] == "latency" and r["status"] == "failed")
    assert latency["status"] == "failed" and "needs per-token times of in-process generation" in latency["error"]
    # The server was stopped with the model's last cell: its port no longer answers.
    assert http_get(info["base_url"], "/health", timeout_s=2)[0] == 0


@pytest.mark.slow
@needs_build
def test_a_server_that_cannot_start_fails_its_cells_in_one_line(tmp_path):
    suite = tmp_path / "suite.yaml"
    suite.write_text(SUITE.format(server='server: {launch: llama.cpp, args: ["--no-such-flag"], start_timeout_s: 60}',
                                  extra=""))
    done = subprocess.run([sys.executable, "-m", "harness", "run", "--suite", str(suite), "--out",
                           str(tmp_path / "run"), "--no-progress"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    rows = read_rows(tmp_path / "run" / "rows.jsonl")
    assert rows and all(r["status"] == "failed" for r in rows)
    assert "llama.cpp server exited with code" in rows[0]["error"]


@pytest.mark.slow
@needs_build
def test_the_build_decodes_the_shipped_gguf_on_this_cpu(smollm2_gguf):
    # Built with llama.cpp's AMX kernels, llama-bench died of SIGSEGV here (a Sapphire Rapids virtual machine) in
    # ggml_backend_amx_mul_mat at its first decode; .ci/llamacpp_env.sh leaves them out.
    done = subprocess.run([str(find_build().tool("llama-bench")), "-m", str(smollm2_gguf), "-t", "2", "-p", "8",
                           "-n", "4", "-r", "1", "-o", "json"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    tests = json.loads(done.stdout)
    assert [test["n_gen"] for test in tests] == [0, 4]
    assert all(test["avg_ts"] > 0 for test in tests)


def test_the_agreement_script_decides_on_the_whole_paired_interval():
    """benchmarks/llamacpp_agreement.py's verdict: the intervals are this machine's decode runs (40 rounds at -t 1 and
    -t 2, 8 rounds at -t 2); a point inside the band with an interval across its bound decides nothing."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from llamacpp_agreement import agreement

    assert agreement(0.979, 0.988, 0.05) == "met"
    assert agreement(0.921, 0.940, 0.05) == "missed"
    assert agreement(0.905, 0.964, 0.05) == "undecided"
    assert agreement(1.06, 1.11, 0.05) == "missed"
    assert agreement(0.94, 1.12, 0.10) == "undecided"
