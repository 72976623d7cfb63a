"""Speculative decoding in process: transformers' prompt lookup and assisted generation (a draft model), on
tiny-dense in fp32. Greedy speculation must give the model's own greedy output; its steps are the model's forward
passes; its rows say how many drafts were accepted."""

import random
import statistics

import pytest
import yaml
from conftest import load_backend

from harness.backends.transformers import TransformersBackend
from harness.cli import main
from harness.results.store import read_rows


@pytest.fixture(scope="module")
def repeating_prompt(tiny_dense_backend) -> list[int]:
    """16 random tokens four times over: the prompt holds n-grams for prompt lookup to find."""
    rng = random.Random(7)
    return [rng.choice(tiny_dense_backend.prompt_token_pool()) for _ in range(16)] * 4


def _forward_calls(backend: TransformersBackend, prompt: list[int], tokens: int):
    """The generation and how many times the model's forward ran (a hook, independent of bench's clock)."""
    calls = []
    hook = backend.model.register_forward_hook(lambda module, inputs, output: calls.append(1))
    try:
        return backend.generate([prompt], tokens), len(calls)
    finally:
        hook.remove()


@pytest.mark.parametrize("engine", [{"prompt_lookup_num_tokens": 5}, {"assistant_model": "tiny-dense"},
                                    {"assistant_model": "tiny-moe"}],
                         ids=["prompt-lookup", "self-draft", "other-draft"])
def test_speculation_gives_the_greedy_output_in_fewer_or_equal_model_steps(
        engine, tiny_dense, tiny_moe, tiny_dense_backend, repeating_prompt):
    drafts = {"tiny-dense": tiny_dense, "tiny-moe": tiny_moe}
    if "assistant_model" in engine:
        engine = {"assistant_model": str(drafts[engine["assistant_model"]].path)}
    speculative = load_backend(tiny_dense, **engine)
    plain = tiny_dense_backend.generate([repeating_prompt], 32)
    assert plain.steps is None and plain.draft_tokens is None  # no speculation, no step count
    got, forwards = _forward_calls(speculative, repeating_prompt, 32)
    assert got.new_token_ids == plain.new_token_ids  # lossless: the same 32 greedy tokens
    assert got.steps == forwards  # one clock reading per forward pass of the model, the prompt's included
    assert len(got.token_times) == 32 and got.token_times == sorted(got.token_times)
    assert len(set(got.token_times)) == got.steps  # the tokens of one step share its time
    accepted = 32 - got.steps
    assert 0 <= accepted <= got.draft_tokens
    # speculate=False on the same engine is the plain generation again
    assert speculative.generate([repeating_prompt], 32, speculate=False).new_token_ids == plain.new_token_ids
    if engine.get("assistant_model") == str(tiny_dense.path):
        assert accepted == got.draft_tokens > 0  # a draft identical to the model: every draft token is right
    elif "assistant_model" in engine:
        assert accepted < got.draft_tokens / 2  # an unrelated random model: its drafts are mostly wrong
    else:
        assert got.steps < 32 / 2  # the prompt repeats itself and so does the output: lookup pays


def test_speculation_takes_one_sequence_and_a_draft_with_the_same_tokenizer(tiny_dense, smollm2, repeating_prompt):
    from harness.errors import ConfigError

    speculative = load_backend(tiny_dense, prompt_lookup_num_tokens=3)
    with pytest.raises(ConfigError, match="one sequence at a time, not a batch of 2"):
        speculative.generate([repeating_prompt, repeating_prompt], 4)
    with pytest.raises(ConfigError, match="another tokenizer"):
        load_backend(tiny_dense, assistant_model=str(smollm2.path))


@pytest.mark.slow  # three bench run cells, about 35 s
def test_a_suite_measures_prompt_lookup_beside_plain_decoding(tmp_path, tiny_dense, capsys):
    latency = {"name": "latency", "prompt_tokens": 32, "output_tokens": 24}
    suite = {"name": "speculation", "models": ["tiny-dense"], "backends": ["transformers"], "device": "cpu",
             "dtype": "fp32", "measure": {"warmup": 1, "repetitions": 3},
             "scenarios": [{**latency, "engine": {"step": "plain", "dtype": "fp32"}},
                           {**latency, "engine": {"step": "lookup", "dtype": "fp32", "prompt_lookup_num_tokens": 4}},
                           {**latency, "engine": {"step": "draft", "dtype": "fp32", "assistant_model": "tiny-dense"}}]}
    file = tmp_path / "suite.yaml"
    file.write_text(yaml.safe_dump(suite))
    assert main(["run", "--suite", str(file), "--out", str(tmp_path / "run"), "--no-progress"]) == 0
    rows = read_rows(tmp_path / "run" / "rows.jsonl")
    steps_of = {row["cell_id"]: row["params"]["engine_step"] for row in rows if "engine_step" in row["params"]}
    step = {}
    for row in rows:
        step.setdefault(steps_of[row["cell_id"]], {})[row["metric"]] = row
    assert "spec_acceptance_rate" not in step["plain"]
    for name in ("lookup", "draft"):
        rate, length = step[name]["spec_acceptance_rate"], step[name]["spec_mean_accepted_length"]
        assert rate["stats"]["output_equals_plain"] is True and rate["stats"]["first_difference"] is None
        steps, drafted = rate["stats"]["steps"], rate["stats"]["draft_tokens"]
        tokens = 24 * rate["stats"]["repetitions"]
        assert rate["value"] == pytest.approx((tokens - steps) / drafted)
        assert length["value"] == pytest.approx(tokens / steps) and 1 <= length["value"] <= 24
        assert len(rate["samples"]) == rate["stats"]["repetitions"]
    assert step["draft"]["spec_acceptance_rate"]["value"] == 1.0  # tiny-dense drafting for itself
    # The speed-up of each run over the plain generation paired with it; lookup's 3 or more tokens a step pay here.
    speedup = step["lookup"]["spec_speedup"]
    assert len(speedup["samples"]) == speedup["stats"]["repetitions"]
    assert speedup["value"] == pytest.approx(statistics.median(speedup["samples"])) and speedup["value"] > 1
    # MBU counts the weights once per step of the model, not per token: at about the plain step's bandwidth, not
    # tokens-per-step times it (generous bounds: this machine's speed drifts).
    for name in ("lookup", "draft"):
        tokens_per_step = step[name]["spec_mean_accepted_length"]["value"]
        mbu_ratio = step[name]["mbu_calibrated"]["value"] / step["plain"]["mbu_calibrated"]["value"]
        decode_ratio = step[name]["decode_tok_s"]["value"] / step["plain"]["decode_tok_s"]["value"]
        assert mbu_ratio == pytest.approx(decode_ratio / tokens_per_step, rel=0.3), (name, mbu_ratio, decode_ratio)
    # The draft model is not the model: rows name tiny-dense as the model, weights counted once.
    assert step["draft"]["weights_mib"]["value"] == step["plain"]["weights_mib"]["value"]


def test_speculation_outside_latency_or_transformers_is_refused(tmp_path, capsys):
    engine = {"step": "lookup", "prompt_lookup_num_tokens": 4}
    suite = {"name": "bad", "models": ["tiny-dense"],
             "scenarios": [{"name": "throughput", "batch_sizes": [1, 4], "engine": engine}]}
    file = tmp_path / "suite.yaml"
    file.write_text(yaml.safe_dump(suite))
    assert main(["run", "--suite", str(file), "--out", str(tmp_path / "run"), "--no-progress"]) == 2
    [line, *_] = capsys.readouterr().err.splitlines()
    assert "scenarios.0.engine" in line and "measured in scenario latency" in line

    suite["scenarios"] = [{"name": "latency", "engine": {**engine, "assistant_model": "tiny-moe"}}]
    file.write_text(yaml.safe_dump(suite))
    assert main(["run", "--suite", str(file), "--out", str(tmp_path / "run"), "--no-progress"]) == 2
    assert "not both" in capsys.readouterr().err.splitlines()[0]


def test_decode_after_the_first_step_counts_only_tokens_that_came_later():
    """decode.v1 with speculation: tokens that arrive with the first one (several at t_1) are not decode tokens."""
    from harness.backends.base import Generation
    from harness.scenarios.speed import generation_figures

    one_a_step = generation_figures(Generation([[1] * 4], 0.0, [1.0, 2.0, 3.0, 4.0]), 8)
    assert one_a_step["decode_tok_s"] == pytest.approx(3 / 3) and one_a_step["tpot_ms"] == pytest.approx(1000)
    # Three tokens at t_1 = 1 s, then one at 2 s and two at 4 s: 3 decode tokens in 3 s, not 5.
    speculative = generation_figures(Generation([[1] * 6], 0.0, [1.0, 1.0, 1.0, 2.0, 4.0, 4.0]), 8)
    assert speculative["decode_tok_s"] == pytest.approx(1.0) and speculative["ttft_ms"] == pytest.approx(1000)
    assert generation_figures(Generation([[1] * 2], 0.0, [1.0, 1.0]), 8)["decode_tok_s"] is None
