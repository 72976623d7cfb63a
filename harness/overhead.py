"""Harness overhead: the decode tok/s bench reports against a bare greedy loop over the same model, same process.

The two sides alternate (A B A B ...) so that drift of the machine's speed hits both alike; the figure is the
median of the per-round paired ratios (bench's run over the bare run right after it), with the exact 95% interval
of that median. A ratio near 1 says bench's timing hooks and generate() bookkeeping cost nothing measurable.
"""

import statistics
import time
from dataclasses import dataclass

from harness.measure.intervals import median_interval
from harness.scenarios.speed import generation_figures, synthetic_prompts


def _bare_greedy_decode_tok_s(model, prompt_ids, new_tokens: int, device: str) -> float:
    """The least a decode loop can do: one forward per token on a KV cache, argmax, no processors or checks."""
    import torch
    from transformers import DynamicCache

    from harness.backends.transformers import cache_argument
    from harness.hardware import synchronize

    with torch.inference_mode():
        cache = {cache_argument(model): DynamicCache()}  # filled in place, as generate() does with its own
        out = model(prompt_ids, **cache, use_cache=True)
        token = out.logits[:, -1].argmax(-1, keepdim=True)
        synchronize(device)
        t_1 = time.perf_counter()
        for _ in range(new_tokens - 1):
            out = model(token, **cache, use_cache=True)
            token = out.logits[:, -1].argmax(-1, keepdim=True)
        synchronize(device)
        t_n = time.perf_counter()
    return (new_tokens - 1) / (t_n - t_1)


@dataclass(frozen=True)
class Overhead:
    model: str
    device: str
    dtype: str
    prompt_tokens: int
    output_tokens: int
    bench: list[float]  # decode tok/s of bench's generate(), round by round
    bare: list[float]  # decode tok/s of the bare loop run right after it
    ratio: float  # median of the per-round ratios bench / bare
    low: float  # the exact 95% interval of that median (unbounded below 6 rounds)
    high: float

    def describe(self) -> str:
        rounds = len(self.bench)
        return (
            f"model {self.model} on {self.device} ({self.dtype}), prompt {self.prompt_tokens}, output "
            f"{self.output_tokens}, {rounds} interleaved rounds\n"
            f"bench decode_tok_s median {statistics.median(self.bench):.2f}  (runs: "
            f"{', '.join(f'{v:.1f}' for v in self.bench)})\n"
            f"bare  decode_tok_s median {statistics.median(self.bare):.2f}  (runs: "
            f"{', '.join(f'{v:.1f}' for v in self.bare)})\n"
            f"ratio bench/bare, median of the {rounds} paired rounds: {self.ratio:.3f}, 95% interval "
            f"[{self.low:.3f}, {self.high:.3f}]  (target >= {TARGET})"
        )


TARGET = 0.99  # bench's decode tok/s over the bare loop's


def measure_overhead(model_name: str, device: str, dtype: str, prompt_tokens: int, output_tokens: int,
                     rounds: int) -> Overhead:
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
    low, high = median_interval(ratios)
    return Overhead(model_name, str(backend.device), str(backend.dtype), prompt_tokens, output_tokens, bench, bare,
                    statistics.median(ratios), low, high)
