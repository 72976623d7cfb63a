"""`bench run --device cuda` on tiny-dense and on the Llama-3.1-8B shape, its figures held against physics, the
datasheet of the card's profile, the card's own memory and Llama-3.1-8B's published parameter count."""

import pytest

from .conftest import EIGHT_B, MIB, by_line

pytestmark = [pytest.mark.gpu, pytest.mark.slow]

# meta-llama/Llama-3.1-8B: 8,030,261,248 parameters (its safetensors index: 16,060,522,496 bytes in bf16). From its
# config.json: the input embedding, 128,256 x 4,096, is not tied to the output head, so a decode step reads only its
# tokens' rows of it; 32 layers keep K and V of 8 heads x 128 per token.
LLAMA_8B_PARAMS = 8_030_261_248
LLAMA_8B_EMBEDDING = 128_256 * 4_096
LLAMA_8B_KV_BYTES_PER_TOKEN = 32 * 2 * 8 * 128 * 2
BF16_BYTES = 2

TINY = "tiny-dense"
# Latency at batch 1; throughput at batch 16 with prompts long enough (8,192 tokens a batch) that the 8B shape's
# prefill keeps the GPU busy well past the CPU's kernel launches: a clock read without a device synchronisation
# would then time the launches and report a prefill faster than the datasheet's FLOP/s allow.
SCENARIOS = [{"name": "latency", "prompt_tokens": 128, "output_tokens": 32},
             {"name": "throughput", "prompt_tokens": 512, "output_tokens": 16, "batch_sizes": [16]}]
LINES = [(model, "latency", 1) for model in (TINY, EIGHT_B)] + [(model, "throughput", 16) for model in (TINY, EIGHT_B)]
EIGHT_B_LINES = [line for line in LINES if line[0] == EIGHT_B]


def line_id(line) -> str:
    return "-".join(map(str, line))  # e.g. llama3.1-8b-shape-throughput-16


@pytest.fixture(scope="module")
def lines(bench_run, tiny_dense, llama8b):
    return by_line(bench_run("cuda", [TINY, EIGHT_B], SCENARIOS))


def params(line) -> dict:
    return next(scenario for scenario in SCENARIOS if scenario["name"] == line[1])


def samples(figures: dict, metric: str) -> list[float]:
    return figures[metric]["samples"]


def test_every_cell_ran_on_this_card_in_bf16_with_nvml_energy(lines, card):
    for line in LINES:
        row = lines[line]["decode_tok_s"]
        assert (row["device"], row["device_name"], row["dtype"]) == ("cuda", card.name, "bf16"), line
        assert row["energy_source"].startswith("nvml:"), (line, row["energy_unavailable"])


@pytest.mark.parametrize("line", LINES, ids=line_id)
def test_each_runs_timings_hold_their_definitions(lines, line):
    """Per timed run: e2e = ttft + (n - 1) tpot, decode tok/s = batch / tpot, prefill tok/s = batch x p / ttft."""
    figures, batch, n = lines[line], line[2], params(line)["output_tokens"]
    runs = zip(*(samples(figures, m) for m in ("ttft_ms", "tpot_ms", "e2e_latency_ms", "decode_tok_s",
                                                 "prefill_tok_s")), strict=True)
    for ttft, tpot, e2e, decode, prefill in runs:
        assert e2e == pytest.approx(ttft + (n - 1) * tpot, rel=1e-6)
        assert decode == pytest.approx(batch * 1e3 / tpot, rel=1e-6)
        assert prefill == pytest.approx(batch * params(line)["prompt_tokens"] * 1e3 / ttft, rel=1e-6)


@pytest.mark.parametrize("line", EIGHT_B_LINES, ids=line_id)
def test_the_8b_shape_stays_under_the_datasheets_bandwidth_and_flops(lines, line, datasheet):
    """A decode step reads every weight but the embedding's other rows: tok/s / batch x those bytes cannot exceed
    the datasheet's bandwidth; a prefill token costs 2 FLOPs per such weight (attention's own not counted):
    prefill tok/s x that cannot exceed the datasheet's bf16 peak. Missing device synchronisations break both."""
    figures, batch = lines[line], line[2]
    read_per_step = (LLAMA_8B_PARAMS - LLAMA_8B_EMBEDDING) * BF16_BYTES
    for decode in samples(figures, "decode_tok_s"):
        assert 0 < decode / batch * read_per_step <= datasheet["memory_bandwidth_gbps"] * 1e9, decode
    for prefill in samples(figures, "prefill_tok_s"):
        assert 0 < prefill * 2 * (LLAMA_8B_PARAMS - LLAMA_8B_EMBEDDING) <= datasheet["bf16_tflops"] * 1e12, prefill
    assert 0 < figures["mfu"]["value"] <= 1


@pytest.mark.parametrize("line", LINES, ids=line_id)
def test_mbu_is_a_fraction_of_the_datasheets_bandwidth(lines, line, datasheet):
    figures = lines[line]
    assert figures["mbu"]["profile"] == datasheet["name"] and not figures["mbu"]["off_profile"]
    assert figures["mbu"]["params"]["peak_gbps"] == datasheet["memory_bandwidth_gbps"]
    assert 0 < figures["mbu"]["value"] <= 1
    if line[0] == EIGHT_B:  # the bytes a step reads, from the published shape: weights, and the cache at its mean
        p, n, batch = params(line)["prompt_tokens"], params(line)["output_tokens"], line[2]
        kv = batch * (p + n / 2) * LLAMA_8B_KV_BYTES_PER_TOKEN
        steps_per_s = figures["decode_tok_s"]["value"] / batch
        expected = ((LLAMA_8B_PARAMS - LLAMA_8B_EMBEDDING) * BF16_BYTES + kv) * steps_per_s
        assert figures["mbu"]["value"] == pytest.approx(expected / (datasheet["memory_bandwidth_gbps"] * 1e9),
                                                        rel=0.02)


@pytest.mark.parametrize("line", LINES, ids=line_id)
def test_memory_counters_nest_within_the_card(lines, line, card):
    """Weights and the KV cache are both held at a generation's end, inside what torch allocated, inside what its
    caching allocator reserved, inside what NVML sees the worker hold (a CUDA context more), inside the card."""
    figures, cell = lines[line], lines[(line[0], line[1], None)]
    held = cell["weights_mib"]["value"] + figures["kv_cache_mib"]["value"]
    allocated, reserved, device = (figures[name]["value"]
                                   for name in ("peak_allocated_mib", "peak_reserved_mib", "peak_device_mib"))
    assert held <= allocated <= reserved <= device <= card.memory_bytes / MIB, (held, allocated, reserved, device)


def test_the_8b_shape_weighs_its_published_parameters_in_bf16(lines):
    for scenario in ("latency", "throughput"):
        cell = lines[(EIGHT_B, scenario, None)]
        assert cell["total_params"]["value"] == LLAMA_8B_PARAMS
        assert cell["weights_mib"]["value"] * MIB == pytest.approx(LLAMA_8B_PARAMS * BF16_BYTES, rel=0.01)


def test_calibration_is_within_the_datasheet(lines, datasheet):
    """Copy bandwidth (bytes read + written) at most the datasheet's and more than half of it (a GiB/GB slip or a
    missed synchronisation would leave that range); the bf16 matmul at most the dense peak."""
    for model, scenario in {(line[0], line[1]) for line in LINES}:
        cell = lines[(model, scenario, None)]
        bandwidth, tflops = cell["calibrated_bandwidth_gbps"]["value"], cell["calibrated_tflops"]["value"]
        assert 0.5 * datasheet["memory_bandwidth_gbps"] < bandwidth <= datasheet["memory_bandwidth_gbps"]
        assert 0 < tflops <= datasheet["bf16_tflops"]


@pytest.mark.parametrize("line", EIGHT_B_LINES, ids=line_id)
def test_energy_per_token_is_positive_and_its_power_within_the_cards_limit(lines, line, datasheet):
    """The median energy above idle > 0; per run, (that energy over the run's time) + idle power at most the
    profile's power limit. The run's time is taken as its e2e latency, a little shorter than the counted generate()
    call, so the power found errs high. (A single run's energy is not held above idle: NVML's counter moves in
    steps, and an 8B decode at batch 1 draws little above idle.)"""
    figures, tokens = lines[line], line[2] * params(line)["output_tokens"]
    assert figures["energy_j"]["value"] > 0 and figures["j_per_tok"]["value"] > 0
    idle_w = figures["energy_j"]["params"]["idle_w"]
    runs = zip(samples(figures, "energy_j"), samples(figures, "j_per_tok"), samples(figures, "e2e_latency_ms"),
               strict=True)
    for energy_j, j_per_tok, e2e_ms in runs:
        assert j_per_tok == pytest.approx(energy_j / tokens)
        assert 0 < energy_j / (e2e_ms / 1e3) + idle_w <= datasheet["power_w"], (energy_j, e2e_ms, idle_w)
