"""The transformers backend on CUDA, in this process: its scores against the CPU's, its token clock against one of
this test's own, torch's memory counters against NVML's, and out-of-memory as find_max's data."""

import os
import statistics
import time

import pytest

from harness.measure.recorder import Recorder
from harness.measure.stats import RepetitionPolicy
from harness.quality.scoring import normalized_pick
from harness.scenarios.capacity import run_find_max
from harness.scenarios.speed import generation_figures, synthetic_prompts

from .conftest import MIB, nvml_used_bytes

pytestmark = [pytest.mark.gpu, pytest.mark.slow]

# Questions that share a long header (scored once as a shared prefix), each with choices of several tokens.
HEADER = "The following are questions about sums, each with four answers.\n\n"
QUESTIONS = [(f"{HEADER}Question: what is {a} plus {b}?\nAnswer:", [f" {a + b}", f" {a + b + 1}", f" {a - b}",
                                                                     " none of these"])
             for a, b in ((2, 3), (7, 5), (11, 4), (6, 6), (9, 8), (13, 21), (5, 40), (17, 3))]


def picks(lls: list[float]) -> tuple[list[int], list[int]]:
    """Each question's pick by summed log-likelihood (acc) and by log-likelihood per character (acc_norm)."""
    by_sum, by_char = [], []
    for index, (_, choices) in enumerate(QUESTIONS):
        own = lls[index * len(choices):(index + 1) * len(choices)]
        by_sum.append(max(range(len(own)), key=own.__getitem__))
        by_char.append(normalized_pick(own, choices))
    return by_sum, by_char


def test_cpu_and_cuda_score_alike_in_fp32(tiny_dense, make_backend):
    requests = [(context, choice) for context, choices in QUESTIONS for choice in choices]
    scores = {}
    for device in ("cpu", "cuda"):
        backend = make_backend(tiny_dense, device, "fp32")
        try:
            scores[device] = [ll for ll, _ in backend.loglikelihood(requests)]
        finally:
            backend.close()
    worst = max(abs(cpu - cuda) for cpu, cuda in zip(scores["cpu"], scores["cuda"], strict=True))
    print(f"\ngpu-check: fp32 log-likelihoods, CPU against CUDA: max |difference| {worst:.2e} over "
          f"{len(requests)} requests")
    assert worst < 1e-3
    assert picks(scores["cuda"]) == picks(scores["cpu"])


# find_max under a cap of 1 GiB more than this process holds: tiny-dense (bf16) keeps 4 layers x (K, V) x 2 heads x 64
# x 2 bytes of cache per token, so no more than 1 GiB / (1,026 tokens x 2 KiB) = 511 sequences of 1,024 + 2 fit.
CAP_BYTES = 2**30
TINY_KV_BYTES_PER_TOKEN = 4 * 2 * 2 * 64 * 2
SEARCH = {"prompt_tokens": 1024, "output_tokens": 2, "max_batch_size": 4096, "max_prompt_tokens": 256}


def test_find_max_on_cuda_records_out_of_memory_as_data(tiny_dense, make_backend):
    import torch

    backend = make_backend(tiny_dense, "cuda", "bf16")
    raised, generate = [], backend.generate

    def watched(prompts, new_tokens):
        try:
            return generate(prompts, new_tokens)
        except Exception as exc:
            raised.append(type(exc))  # the type alone: the exception's frames would keep the trial's tensors
            raise

    backend.generate = watched
    torch.cuda.empty_cache()  # blocks cached free would be room beyond the cap
    total = torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory
    torch.cuda.set_per_process_memory_fraction((torch.cuda.memory_reserved() + CAP_BYTES) / total)
    rows = []
    try:
        start = time.perf_counter()
        run_find_max(backend, SEARCH, Recorder({}, RepetitionPolicy(), rows.append))
        seconds = time.perf_counter() - start
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
        backend.close()
    found = {row["metric"]: row for row in rows}
    batch, prompt = found["max_batch_size"], found["max_prompt_tokens"]
    print(f"\ngpu-check: find_max under a 1 GiB cap: batch {batch['value']} fits, {batch['stats']['first_failed']} "
          f"does not ({len(raised)} out-of-memory errors, {seconds:.1f} s)")
    assert raised and all(issubclass(kind, torch.cuda.OutOfMemoryError) for kind in raised), raised
    assert batch["stats"]["first_failed"] == batch["value"] + 1  # the gap closed on a real failure
    assert batch["value"] * (SEARCH["prompt_tokens"] + SEARCH["output_tokens"]) * TINY_KV_BYTES_PER_TOKEN <= CAP_BYTES
    assert prompt["value"] == SEARCH["max_prompt_tokens"] and prompt["stats"]["first_failed"] is None
    assert seconds < 60


# The 8B shape at batch 16 x 512 prompt tokens: a prefill of 8,192 tokens keeps the GPU busy far longer than the CPU
# takes to launch its kernels, so a clock read without a device synchronisation would time the launches alone.
BATCH, PROMPT, TOKENS = 16, 512, 33


@pytest.fixture(scope="module")
def eight_b(llama8b, make_backend):
    backend = make_backend(llama8b, "cuda", "bf16")
    yield backend
    backend.close()


def timed(backend, prompts, new_tokens: int):
    """One generation and its wall time on this test's own clock, read with the device synchronised."""
    import torch

    torch.cuda.synchronize()
    start = time.perf_counter()
    generation = backend.generate(prompts, new_tokens)
    torch.cuda.synchronize()
    return time.perf_counter() - start, generation


def test_token_times_agree_with_a_clock_outside_bench(eight_b):
    """Outside: a generation of 1 token lasts a prefill (and one token chosen); each further token adds a step.
    Inside: bench's ttft and tpot, which must agree."""
    prompts = synthetic_prompts(eight_b.prompt_token_pool(), BATCH, PROMPT)
    timed(eight_b, prompts, 2)  # warm-up
    one = statistics.median(timed(eight_b, prompts, 1)[0] for _ in range(3))
    runs = [timed(eight_b, prompts, TOKENS) for _ in range(3)]
    step = (statistics.median(wall for wall, _ in runs) - one) / (TOKENS - 1)
    figures = [generation_figures(generation, PROMPT) for _, generation in runs]
    ttft_s = statistics.median(f["ttft_ms"] for f in figures) / 1e3
    tpot_s = statistics.median(f["tpot_ms"] for f in figures) / 1e3
    print(f"\ngpu-check: 8B shape, batch {BATCH} x {PROMPT}: ttft {ttft_s * 1e3:.1f} ms (outside {one * 1e3:.1f}), "
          f"tpot {tpot_s * 1e3:.2f} ms (outside {step * 1e3:.2f})")
    assert ttft_s == pytest.approx(one, rel=0.15)
    assert tpot_s == pytest.approx(step, rel=0.15)
    for wall, generation in runs:
        assert 0.9 * wall <= generation.token_times[-1] - generation.t_send <= wall


def test_torch_peaks_sit_within_the_memory_nvml_sees(eight_b):
    """What torch allocated, within what its caching allocator reserved (nothing gave any back since), within bench's
    peak_device_mib, which is what NVML sees this process hold on the device (those, the CUDA context and the
    libraries' workspaces), as read here too."""
    eight_b.reset_peak_memory()
    eight_b.generate(synthetic_prompts(eight_b.prompt_token_pool(), BATCH, PROMPT), 4)
    figures = eight_b.memory()
    used, whose = nvml_used_bytes(os.getpid())
    print(f"\ngpu-check: 8B shape: weights {figures['weights_mib']:.0f} MiB, peak allocated "
          f"{figures['peak_allocated_mib']:.0f}, peak reserved {figures['peak_reserved_mib']:.0f}, peak device "
          f"{figures.get('peak_device_mib', float('nan')):.0f}; NVML here {used / MIB:.0f} ({whose})")
    assert figures["weights_mib"] < figures["peak_allocated_mib"] <= figures["peak_reserved_mib"]
    assert figures["peak_reserved_mib"] <= figures["peak_device_mib"] <= used / MIB + 1  # 1 MiB for rounding

