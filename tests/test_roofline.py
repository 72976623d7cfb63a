"""mbu, mfu and cost arithmetic on known numbers (METRICS.md mbu.v1, mfu.v1, cost.v1)."""

import pytest

from harness.measure.roofline import ModelShape, mbu, mean_kv_bytes_read_per_step, mfu, usd_per_mtok

DENSE = ModelShape(total_params=1_000_000_000, bytes_per_param=2)
# 4 layers x 8 experts of 10M params each = 320M expert params; 2 experts per token.
MOE = ModelShape(total_params=500_000_000, bytes_per_param=2, expert_params=320_000_000, num_experts=8,
                 experts_per_token=2)


def test_dense_decode_mbu():
    # 2 GB of weights + 0.5 GB of KV per step, 100 tok/s at batch 1 = 100 steps/s: 250 GB/s of 1000 GB/s.
    assert mbu(DENSE, 1, 0.5e9, 100.0, 1000.0) == pytest.approx(0.25)
    # Batch 4 at 400 tok/s is still 100 steps/s, each reading the weights once.
    assert mbu(DENSE, 4, 0.5e9, 400.0, 1000.0) == pytest.approx(0.25)


def test_prefill_mfu_counts_two_flops_per_active_parameter():
    # 2 x 1e9 x 1000 tok/s = 2e12 FLOP/s of 100 TFLOP/s.
    assert mfu(DENSE, 1000.0, 100.0) == pytest.approx(0.02)


def test_moe_counts_only_the_experts_a_token_uses():
    # Unused experts: 320M x 6/8 = 240M, so 260M active.
    assert MOE.active_params == 260_000_000
    assert mfu(MOE, 1000.0, 100.0) == pytest.approx(2 * 260e6 * 1000 / 100e12)
    # Batch 1 reads the active experts only; a large batch reads nearly all of them.
    assert MOE.weight_bytes_per_step(1) == pytest.approx(260e6 * 2)
    assert MOE.weight_bytes_per_step(2) == pytest.approx((180e6 + 320e6 * (1 - 0.75**2)) * 2)
    assert MOE.weight_bytes_per_step(1000) == pytest.approx(500e6 * 2)


def test_an_untied_input_embedding_is_a_lookup_not_a_read():
    shape = ModelShape(total_params=1_100_000_000, bytes_per_param=2, lookup_only_params=100_000_000)
    assert shape.active_params == 1_000_000_000
    assert shape.weight_bytes_per_step(1) == pytest.approx(2e9)


def test_mean_kv_read_is_the_cache_at_mid_decode():
    # The final cache holds 100 + 11 - 1 = 110 tokens at 1 kB each; the mean step reads 100 + 11/2 tokens.
    assert mean_kv_bytes_read_per_step(110_000, 100, 11) == pytest.approx(105_500)


def test_cost_per_million_tokens():
    # $3.6/h = $0.001/s; at 1000 tok/s a million tokens take 1000 s = $1.
    assert usd_per_mtok(3.6, 1000.0) == pytest.approx(1.0)
