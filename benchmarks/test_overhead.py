"""`bench overhead` as a benchmark: bench's decode tok/s over a bare greedy loop on the same model, interleaved
(A B A B ...), as the median of the per-round paired ratios with its exact 95% interval. Target: at least 0.99.

    .venv/bin/python -m pytest benchmarks/test_overhead.py -s
"""

import os

from conftest import report

from harness.overhead import TARGET, measure_overhead

ROUNDS = int(os.environ.get("BENCH_OVERHEAD_ROUNDS", "16"))


def test_overhead(benchmark):
    result = benchmark.pedantic(measure_overhead, args=("smollm2-135m", "cpu", "auto", 64, 64, ROUNDS), rounds=1,
                                iterations=1)
    print(result.describe())
    benchmark.extra_info.update(ratio=result.ratio, low=result.low, high=result.high, rounds=ROUNDS)
    report("bench / bare decode tok/s, median paired ratio", result.ratio, TARGET, "", "higher")
    print(f"its 95% interval [{result.low:.3f}, {result.high:.3f}]: "
          + ("the target is inside it, so neither met nor missed is shown" if result.low < TARGET < result.high
             else "the target is outside it"))
