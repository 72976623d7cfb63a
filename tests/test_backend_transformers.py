"""The transformers backend on real models: exact token counts, honest timestamps, exact log-likelihoods."""

import itertools
import statistics
import time

import pytest
import torch

from harness.scenarios.speed import generation_figures, synthetic_prompts

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("backend_fixture", ["tiny_dense_backend", "smollm2_backend"])
@pytest.mark.parametrize("batch_size", [1, 3])
def test_generation_yields_exactly_the_tokens_asked_with_increasing_timestamps(request, backend_fixture, batch_size):
    backend = request.getfixturevalue(backend_fixture)
    prompts = synthetic_prompts(backend.prompt_token_pool(), batch_size, 12)
    gen = backend.generate(prompts, 9)
    assert [len(ids) for ids in gen.new_token_ids] == [9] * batch_size
    assert len(gen.token_times) == 9
    assert gen.t_send < gen.token_times[0]
    assert all(a < b for a, b in itertools.pairwise(gen.token_times))
    assert gen.kv_cache_bytes > 0


def test_eos_does_not_end_a_timed_generation_early(tiny_dense_backend):
    backend = tiny_dense_backend
    eos = backend.tokenizer.eos_token_id
    # A prompt of nothing but EOS tokens invites EOS; the fixed output length must still hold.
    gen = backend.generate([[eos] * 8], 20)
    assert len(gen.new_token_ids[0]) == 20 and len(gen.token_times) == 20


def test_decode_rate_agrees_with_an_independent_wall_clock(smollm2_backend):
    """decode_tok_s from the backend's timestamps against the test's own clock around whole generate() calls:
    (time for 1 + n tokens - time for 1 token) / n, interleaved to cancel this machine's drift."""
    backend = smollm2_backend
    prompt = synthetic_prompts(backend.prompt_token_pool(), 1, 32)
    extra_tokens = 24
    reported, wall = [], []
    backend.generate(prompt, 2)  # warm-up
    for _ in range(3):
        start = time.perf_counter()
        backend.generate(prompt, 1)
        one = time.perf_counter() - start
        start = time.perf_counter()
        gen = backend.generate(prompt, 1 + extra_tokens)
        many = time.perf_counter() - start
        reported.append(generation_figures(gen, 32)["decode_tok_s"])
        wall.append(extra_tokens / (many - one))
    ratio = statistics.median(reported) / statistics.median(wall)
    assert 0.75 <= ratio <= 1.25, (reported, wall)


def _reference_loglikelihood(backend, context: str, continuation: str) -> tuple[float, bool]:
    """One unbatched, unpadded forward pass over context + continuation, scored by hand."""
    context_ids, continuation_ids = backend.tokens.pair(context, continuation)
    ids = torch.tensor([context_ids + continuation_ids])
    with torch.inference_mode():
        logits = backend.model(ids).logits[0, len(context_ids) - 1: -1].float()
    logprobs = torch.log_softmax(logits, dim=-1)
    target = torch.tensor(continuation_ids)
    total = logprobs.gather(1, target[:, None]).sum().item()
    return total, bool((logprobs.argmax(-1) == target).all())


def test_loglikelihood_matches_an_unbatched_forward_pass(smollm2_backend):
    backend = smollm2_backend
    requests = [
        ("The capital of France is", " Paris"),
        ("The capital of France is", " Berlin"),
        ("Question: What is 2 + 2?\nAnswer:", " 4"),
        ("A much longer context, so that this batch needs left padding for the shorter rows, ends here:",
         " with a continuation of several tokens"),
        ("x", " y"),
    ]
    scored = backend.loglikelihood(requests)
    for (context, continuation), (logprob, greedy) in zip(requests, scored, strict=True):
        expected, expected_greedy = _reference_loglikelihood(backend, context, continuation)
        assert logprob == pytest.approx(expected, abs=1e-3)
        assert greedy == expected_greedy
    paris, berlin = scored[0][0], scored[1][0]
    assert paris > berlin and scored[0][1]  # a pretrained model knows this one, greedily
    assert all(logprob < 0 for logprob, _ in scored)


def test_context_trailing_space_moves_to_the_continuation(smollm2_backend):
    [(moved, _)] = smollm2_backend.loglikelihood([("Answer: ", "B")])
    [(given, _)] = smollm2_backend.loglikelihood([("Answer:", " B")])
    assert moved == pytest.approx(given, abs=1e-4)


def test_router_hooks_count_every_routed_token_of_an_moe(tiny_moe, make_backend):
    backend = make_backend(tiny_moe)
    routes = backend.count_routes()
    prompts = synthetic_prompts(backend.prompt_token_pool(), 2, 10)
    backend.generate(prompts, 5)
    loads = routes.close()
    shape = backend.model_shape()
    assert len(loads) == 4 and all(len(layer) == shape.num_experts for layer in loads)
    # Every token position processed (2 x 10 prompt, then 2 x 4 decode steps) goes to top-k experts in each layer.
    assert all(sum(layer) == (2 * 10 + 2 * 4) * shape.experts_per_token for layer in loads)
    assert backend.count_routes() is not None


def test_dense_models_have_no_routes(tiny_dense_backend):
    assert tiny_dense_backend.count_routes() is None


def test_engine_settings_int8_weights_and_static_cache(tiny_dense):
    from harness.backends.transformers import TransformersBackend

    plain, tuned = TransformersBackend(), TransformersBackend()
    plain.load(tiny_dense.path, "cpu", "fp32", {"attn_implementation": "eager"})
    tuned.load(tiny_dense.path, "cpu", "fp32", {"quantize": "int8", "cache_implementation": "static"})
    prompt = synthetic_prompts(plain.prompt_token_pool(), 1, 8)
    assert len(tuned.generate(prompt, 6).new_token_ids[0]) == 6
    # int8 Linear weights take about a quarter of their fp32 bytes; the parameter counts do not change.
    assert tuned.memory()["weights_mib"] < 0.5 * plain.memory()["weights_mib"]
    assert tuned.model_shape().total_params == plain.model_shape().total_params
    assert tuned.model_shape().bytes_per_param < 2 < plain.model_shape().bytes_per_param == 4


def test_int4_linear_multiplies_by_its_dequantized_weights():
    import torch

    from harness.backends.quantize import INT4_GROUP_SIZE, Int4Linear

    linear = torch.nn.Linear(4 * INT4_GROUP_SIZE, 48, bias=True)
    packed = Int4Linear(linear)
    x = torch.randn(3, 5, linear.in_features)
    # The same grouping, rounding and zero point by hand: 16 levels between each group's min and max.
    groups = linear.weight.detach().reshape(48, -1, INT4_GROUP_SIZE)
    low, high = groups.amin(-1, keepdim=True), groups.amax(-1, keepdim=True)
    scale = (high - low) / 15
    dequantized = (((groups - low) / scale).round() * scale + low).reshape(48, -1)
    expected = x @ dequantized.T + linear.bias
    assert torch.allclose(packed(x), expected, atol=1e-4)
    # and it is a real 4-bit approximation: close to, but not equal to, the full-precision layer
    error = (packed(x) - linear(x)).abs().max().item()
    assert 0 < error < 0.1 * linear(x).abs().max().item()


def test_engine_settings_int4_weights(tiny_dense):
    from harness.backends.transformers import TransformersBackend

    plain, tuned = TransformersBackend(), TransformersBackend()
    plain.load(tiny_dense.path, "cpu", "fp32", {})
    tuned.load(tiny_dense.path, "cpu", "fp32", {"quantize": "int4"})
    prompt = synthetic_prompts(plain.prompt_token_pool(), 2, 8)
    assert [len(ids) for ids in tuned.generate(prompt, 5).new_token_ids] == [5, 5]
    # 4-bit weights plus a scale and zero per 32 weights: about a sixth of fp32 for the Linear layers.
    plain_mib, tuned_mib = plain.memory()["weights_mib"], tuned.memory()["weights_mib"]
    embedding_mib = plain.model.get_input_embeddings().weight.numel() * 4 / 2**20
    assert tuned_mib - embedding_mib < 0.2 * (plain_mib - embedding_mib)
    assert tuned.model_shape().total_params == plain.model_shape().total_params


@pytest.mark.slow
def test_compiled_decoding_gives_the_eager_tokens(tiny_dense):
    from harness.backends.transformers import TransformersBackend

    eager, compiled = TransformersBackend(), TransformersBackend()
    eager.load(tiny_dense.path, "cpu", "fp32", {})
    compiled.load(tiny_dense.path, "cpu", "fp32", {"compile": True})
    prompt = synthetic_prompts(eager.prompt_token_pool(), 1, 8)
    first = compiled.generate(prompt, 6)  # compiles
    assert compiled.cache_implementation == "static"
    assert first.new_token_ids == compiled.generate(prompt, 6).new_token_ids == eager.generate(prompt, 6).new_token_ids
