"""transformers with an accelerate device map on this CPU: tiny-dense held partly in CPU memory and partly on disk
(a `max_memory` smaller than the model), against the plain load."""

import pytest

from harness.backends.transformers import TransformersBackend
from harness.cli import main
from harness.results.store import read_rows
from harness.scenarios.speed import synthetic_prompts

pytestmark = pytest.mark.slow
# tiny-dense in fp32: 0.5 MB of embeddings (tied to the output) and about 4 MB per layer, 16.5 MB in all.
SPLIT = {"device_map": "auto", "max_memory": {"cpu": "10MB"}}


def test_offloaded_layers_generate_the_same_greedy_tokens(tiny_dense, tiny_dense_backend):
    split = TransformersBackend()
    split.load(tiny_dense.path, "cpu", "fp32", SPLIT)
    placed = split.info().extra["device_map"]
    offload = split._offload.name
    try:
        assert placed["cpu"] >= 1 and placed["disk"] >= 1, placed
        assert tiny_dense_backend.info().extra["device_map"] is None
        prompts = synthetic_prompts(split.prompt_token_pool(), 2, 12)
        assert split.generate(prompts, 8).new_token_ids == tiny_dense_backend.generate(prompts, 8).new_token_ids
        # The offloaded weights count in the model's size, though they are not in memory.
        assert split.memory()["weights_mib"] == pytest.approx(tiny_dense_backend.memory()["weights_mib"])
    finally:
        split.close()
    assert not (tiny_dense.path / offload).exists()


def test_a_suite_engine_setting_places_the_model(tiny_dense, tmp_path):
    suite = tmp_path / "split.yaml"
    suite.write_text(f"""name: split
models: [tiny-dense]
device: cpu
dtype: fp32
measure: {{warmup: 0, repetitions: 1}}
scenarios:
  - {{name: latency, prompt_tokens: 8, output_tokens: 4, engine: {{step: split, device_map: auto,
      max_memory: {{cpu: {SPLIT['max_memory']['cpu']}}}}}}}
""")
    assert main(["run", "--suite", str(suite), "--out", str(tmp_path / "run"), "--no-progress"]) == 0
    ttft = next(r for r in read_rows(tmp_path / "run" / "rows.jsonl") if r["metric"] == "ttft_ms")
    assert ttft["value"] > 0 and ttft["params"]["engine_step"] == "split"
    assert ttft["backend_info"]["device_map"]["disk"] >= 1
