"""The wall time to a decode tok/s figure, by measurement protocol, on one loaded model, the protocols interleaved
round by round (their order rotating):

- target: bench's policy, repeating until the 95% interval of the median is within +-`--target-ci` (2%);
- fixed: bench's fixed protocol (`measure:` defaults: 1 warm-up, 5 repetitions), whose 5 samples bound no interval;
- optimum: optimum-benchmark's rule, at least 10 iterations and at least 10 s (1 warm-up).

Each protocol times the same greedy generation (batch 1, `--prompt-tokens`, `--output-tokens`, EOS ignored) as
`bench run` does. Prints per round each protocol's wall time, repetitions and the half-width its samples reach,
then the median of the per-round ratios target / optimum (target: at most 0.5) and target / fixed. Usage:

    .venv/bin/python benchmarks/time_to_figure.py --model smollm2-135m --rounds 5
"""

import argparse
import math
import statistics
import sys
import time

from harness.measure.intervals import median_half_width
from harness.measure.stats import RepetitionPolicy

PROTOCOLS = {
    "target": lambda target: RepetitionPolicy(warmup=1, target_ci=target, min_repetitions=6, max_seconds=60),
    "fixed": lambda target: RepetitionPolicy(warmup=1, repetitions=5),
    "optimum": lambda target: RepetitionPolicy(warmup=1, repetitions=10, min_seconds=10),
}


def decode_timer(model: str, prompt_tokens: int, output_tokens: int, dtype: str = "auto"):
    """One decode tok/s figure per call: a greedy generation of `model` on the CPU, timed as `bench run` times it."""
    from harness import zoo
    from harness.backends.transformers import TransformersBackend
    from harness.scenarios.speed import generation_figures, synthetic_prompts

    backend = TransformersBackend()
    backend.load(zoo.resolve(model, progress=False).path, "cpu", dtype)
    prompts = synthetic_prompts(backend.prompt_token_pool(), 1, prompt_tokens)
    return lambda: generation_figures(backend.generate(prompts, output_tokens), prompt_tokens)["decode_tok_s"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--prompt-tokens", type=int, default=16)
    parser.add_argument("--output-tokens", type=int, default=32)
    parser.add_argument("--target-ci", type=float, default=0.02)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    measure_once = decode_timer(args.model, args.prompt_tokens, args.output_tokens)
    names = list(PROTOCOLS)
    walls = {name: [] for name in names}
    for round_ in range(args.rounds):
        order = names[round_ % len(names):] + names[:round_ % len(names)]
        for name in order:
            started = time.perf_counter()
            series = PROTOCOLS[name](args.target_ci).run(measure_once)
            walls[name].append(time.perf_counter() - started)
            half = median_half_width(series.runs)
            print(f"round {round_} {name:8s} {walls[name][-1]:6.1f} s, {series.taken:3d} repetitions, "
                  f"median {statistics.median(series.runs):7.2f} tok/s, half-width "
                  f"{'unbounded' if math.isinf(half) else f'{half:.1%}'}, stopped: {series.stopped}", flush=True)
    for other in ("optimum", "fixed"):
        ratios = [t / o for t, o in zip(walls["target"], walls[other], strict=True)]
        print(f"wall time target / {other}: median of {len(ratios)} rounds {statistics.median(ratios):.3f} "
              f"(rounds: {', '.join(f'{r:.2f}' for r in ratios)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
