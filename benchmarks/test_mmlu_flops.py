"""MMLU 0-shot scoring's achieved FLOP/s over the calibrated matmul peak of this device and dtype: target at least
0.85. A figure near 1 says the scorer keeps the matrix units as busy as one large matmul does.

FLOPs are counted from what the model computed: 2 x (active parameters - output head) per token fed to the model,
plus 2 x output-head parameters per position the head projected (both counted by forward hooks, so a shared
context computed once is counted once). Attention's own FLOPs are left out, as MFU leaves them out. The peak is
`bench calibrate`'s (the median of timed square matmuls). Scoring runs `rounds` times; the median time is used.

    .venv/bin/python -m pytest benchmarks/test_mmlu_flops.py -s
"""

import os
import statistics
import time

from conftest import report

LIMIT = int(os.environ.get("BENCH_MMLU_LIMIT", "100"))
ROUNDS = 3
TARGET = 0.85


def _counting(backend) -> dict:
    """Forward hooks that count tokens fed to the model and rows the output head projects."""
    counts = {"tokens": 0, "head_rows": 0}

    def model_hook(module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        counts["tokens"] += ids.numel()

    def head_hook(module, args):
        counts["head_rows"] += args[0].numel() // args[0].shape[-1]

    backend.model.register_forward_pre_hook(model_hook, with_kwargs=True)
    backend.model.get_output_embeddings().register_forward_pre_hook(head_hook)
    return counts


def test_mmlu_flops_over_calibrated_peak(benchmark):
    from harness import zoo
    from harness.backends.transformers import TransformersBackend
    from harness.hardware import auto_dtype
    from harness.measure.calibration import calibrate
    from harness.quality import scoring, tasks

    dtype = auto_dtype("cpu")
    backend = TransformersBackend()
    backend.load(zoo.resolve("smollm2-135m").path, "cpu", dtype, {})
    prepared = tasks.prepare(tasks.load_task("mmlu"), limit=LIMIT, seed=1234)
    counts = _counting(backend)
    scoring.score(prepared, backend, seed=1234)  # warm-up; its counts are one round's
    tokens, head_rows = counts["tokens"], counts["head_rows"]
    times = []

    def one_round():
        start = time.perf_counter()
        scoring.score(prepared, backend, seed=1234)
        times.append(time.perf_counter() - start)

    benchmark.pedantic(one_round, rounds=ROUNDS, iterations=1)
    head = backend.model.get_output_embeddings().weight.numel()
    flops = 2 * (backend.model_shape().active_params - head) * tokens + 2 * head * head_rows
    achieved = flops / statistics.median(times) / 1e12
    peak = calibrate("cpu", dtype)[0].matmul_tflops
    print(f"SmolLM2-135M {dtype}, {LIMIT} MMLU questions: {tokens} tokens, {head_rows} head rows, "
          f"{flops / 1e12:.3f} TFLOP per round, median {statistics.median(times):.2f} s of {ROUNDS} rounds; "
          f"achieved {achieved:.4f} TFLOP/s, calibrated peak {peak:.4f} TFLOP/s")
    benchmark.extra_info.update(achieved_tflops=achieved, peak_tflops=peak, ratio=achieved / peak)
    report("MMLU scoring FLOP/s over the calibrated matmul peak", achieved / peak, TARGET, "", "higher")
