"""Harness overhead: the decode tok/s bench reports against a bare greedy loop over the same model, same process.

The two sides alternate (A B A B ...) so that drift of the machine's speed hits both alike; the figure is the
median of the per-round paired ratios (bench's run over the bare run right after it), with the exact 95% interval
of that median. A ratio near 1 says bench's timing hooks and generate() bookkeeping cost nothing measurable.
"""

import statistics
import time

from harness.measure.intervals import median_interval
from harness.scenarios.speed import generation_figures, synthetic_prompts


def _bare_greedy_decode_tok_s(model, prompt_ids, new_tokens: int, device: str) -> float:
    """The least a decode loop can do: one forward per token on a KV cache, argmax, no processors or checks."""
    import torch
    from transformers import DynamicCache

    from harness.hardware import synchronize

    with torch.inference_mode():
        cache = DynamicCache()
        out = model(prompt_ids, past_key_values=cache, use_cache=True)
        token = out.logits[:, -1].argmax(-1, keepdim=True)
        synchronize(device)
        t_1 = time.perf_counter()
        for _ in range(new_tokens - 1):
            out = model(token, past_key_values=out.past_key_values, use_cache=True)
            token = out.logits[:, -1].argmax(-1, keepdim=True)
        synchronize(device)
        t_n = time.perf_counter()
    return (new_tokens - 1) / (t_n - t_1)


def measure_overhead(model_name: str, device: str, dtype: str, prompt_tokens: int, output_tokens: int,
                     rounds: int) -> str:
    import torch

    from harness import zoo
    from harness.backends.transformers import TransformersBackend

    resolved = zoo.resolve(model_name, progress=True)
    backend = TransformersBackend()
    backend.load(resolved.path, device, dtype)
    prompt = synthetic_prompts(backend.prompt_token_pool(), 1, prompt_tokens)
    prompt_ids = torch.tensor(prompt, device=backend.device)

    def bench_side() -> float:
        return generation_figures(backend.generate(prompt, output_tokens), prompt_tokens)["decode_tok_s"]

    def bare_side() -> float:
        return _bare_greedy_decode_tok_s(backend.model, prompt_ids, output_tokens, backend.device)

    bench_side(), bare_side()  # warm-up, not counted
    bench, bare = [], []
    for _ in range(rounds):
        bench.append(bench_side())
        bare.append(bare_side())
    ratios = [a / b for a, b in zip(bench, bare, strict=True)]
    ratio, (low, high) = statistics.median(ratios), median_interval(ratios)
    return (
        f"model {model_name} on {backend.device} ({backend.dtype}), prompt {prompt_tokens}, output {output_tokens}, "
        f"{rounds} interleaved rounds\n"
        f"bench decode_tok_s median {statistics.median(bench):.2f}  (runs: {', '.join(f'{v:.1f}' for v in bench)})\n"
        f"bare  decode_tok_s median {statistics.median(bare):.2f}  (runs: {', '.join(f'{v:.1f}' for v in bare)})\n"
        f"ratio bench/bare, median of the {rounds} paired rounds: {ratio:.3f}, 95% interval [{low:.3f}, {high:.3f}]"
        f"  (target >= 0.99)"
    )
