"""bench calls no deprecated transformers API, and the check in conftest.py that makes such a call fail its test tells
bench's calls from third-party code's own."""

import math
import warnings
from pathlib import Path

import pytest

import harness

HARNESS = Path(harness.__file__).parent


@pytest.fixture(scope="module")
def little_llama():
    """A one-layer Llama built from its config in memory (no weights to fetch)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64)
    return LlamaForCausalLM(config).eval()


def run_as(filename: Path, source: str, **names):
    """Runs `source` as if it were code of the file `filename` (its frames carry that file's name)."""
    exec(compile(source, str(filename), "exec"), names)
    return names


# transformers' old name of the KV cache, as bench used it before the rename to `cache` (5.x): the forward argument
# (a FutureWarning reported at torch's Module.__call__), generate()'s argument (a FutureWarning reported at the
# caller) and the output field (a line of transformers' log, no warning).
OLD_CALLS = """
import torch
from transformers import DynamicCache

ids = torch.tensor([[1, 2, 3]])
out = model(ids, past_key_values=DynamicCache(), use_cache=True)
model.generate(ids, past_key_values=DynamicCache(), max_new_tokens=2, do_sample=False, pad_token_id=0)
out.past_key_values
"""


def test_a_deprecated_call_in_harness_is_caught_with_its_line(little_llama, deprecations):
    with warnings.catch_warnings():  # (not record=True: that would hand the warnings past conftest's check)
        warnings.simplefilter("always")
        run_as(HARNESS / "deprecated_calls.py", OLD_CALLS, model=little_llama)
    found = list(deprecations.bench)
    deprecations.bench.clear()  # caught, as it should be: this test passes
    where = f"{HARNESS / 'deprecated_calls.py'}:"
    assert any(line.startswith(f"{where}6: FutureWarning") and "forward" in line for line in found), found
    assert any(line.startswith(f"{where}7: FutureWarning") and "generate" in line for line in found), found
    assert any(line.startswith(f"{where}8: transformers") and "deprecated" in line for line in found), found


def test_the_same_calls_from_third_party_code_stay_warnings(little_llama, deprecations, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        run_as(tmp_path / "site-packages" / "other.py", OLD_CALLS, model=little_llama)
    assert not deprecations.bench
    assert len([line for line in deprecations.others if "past_key_values" in line]) == 3, deprecations.others


def test_the_cache_is_named_as_each_model_takes_it(little_llama):
    from harness.backends.transformers import GENERATE_CACHE, cache_argument

    class ShippedCode:  # a model's own code (--trust-remote-code) written before the rename
        def forward(self, input_ids, past_key_values=None, use_cache=None):
            pass

    assert cache_argument(little_llama) == GENERATE_CACHE == "cache"  # the installed transformers: renamed
    assert cache_argument(ShippedCode()) == "past_key_values"


@pytest.mark.slow
def test_overhead_measures_both_sides(tiny_dense):
    """`bench overhead`'s bare loop and bench's generate() on a real model (with no deprecation: see conftest.py)."""
    from harness.overhead import measure_overhead

    result = measure_overhead("tiny-dense", "cpu", "fp32", prompt_tokens=16, output_tokens=8, rounds=2)
    assert len(result.bench) == len(result.bare) == 2 and all(v > 0 for v in result.bench + result.bare)
    assert math.isfinite(result.ratio) and result.ratio > 0
