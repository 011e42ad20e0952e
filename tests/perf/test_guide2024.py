"""GUIDE's published equations (arXiv 2412.04788, Sections 3.2-3.3) against hand-computed numbers."""

from __future__ import annotations

import dataclasses
import math

import pytest

from guide_opt.perf import estimate
from guide_opt.perf.guide2024 import (
    available_memory_bytes,
    estimate_guide2024,
    kv_bytes_per_request,
    max_batch_size,
    max_parallelism,
    max_sequence_length,
    multi_gpu_throughput,
)

GPU_80_GIB = 80 * 2**30  # 85,899,345,920 bytes
LLAMA_2_7B_BF16 = 6_738_149_376 * 2  # 13,476,298,752 bytes
AVAILABLE = 72_423_047_168  # 80 GiB - Llama-2-7B bf16 weights
KV_PER_REQUEST_768 = 2 * 32 * 4096 * 768 * 2  # 2 x N x H x S x kv = 402,653,184 bytes


# ---- the equations -----------------------------------------------------------------------------
def test_available_memory():
    assert available_memory_bytes(GPU_80_GIB, LLAMA_2_7B_BF16) == AVAILABLE


def test_kv_bytes_per_request_without_batch_size():
    assert kv_bytes_per_request(32, 4096, 768, 2) == KV_PER_REQUEST_768 == 402_653_184


def test_maximum_parallelism_is_dp_times_requests_that_fit():
    assert max_parallelism(1, AVAILABLE, KV_PER_REQUEST_768) == pytest.approx(179.8645833)
    assert max_parallelism(2, AVAILABLE, KV_PER_REQUEST_768) == pytest.approx(359.7291667)
    assert max_parallelism(4, 100.0, 30.0) == pytest.approx(13.3333333)


def test_max_batch_size_is_floored_per_data_parallel_replica():
    assert max_batch_size(359.7291667, 2) == 179
    assert max_batch_size(179.99, 1) == 179
    assert max_batch_size(13.3333, 4) == 3
    assert max_batch_size(-3.0, 1) == 0  # the weights alone overflow


def test_max_sequence_length():
    # S_max = floor(C_available / (2 x N x H x B x kv)) = floor(72,423,047,168 / 8,388,608) = floor(8633.5)
    assert max_sequence_length(AVAILABLE, 32, 4096, 16, 2) == 8633
    assert max_sequence_length(AVAILABLE, 32, 4096, 1, 2) == 138_136  # 8633.5 x 16
    assert max_sequence_length(-1.0, 32, 4096, 1, 2) == 0


@pytest.mark.parametrize(
    ("n", "t_single", "tp", "expected"),
    [(4, 100, 4, 400 / 3), (8, 50, 1, 400), (2, 100, 2, 100), (8, 10, 8, 20), (1, 77.5, 1, 77.5)],
)
def test_multi_gpu_throughput(n, t_single, tp, expected):
    assert multi_gpu_throughput(n, t_single, tp) == pytest.approx(expected, rel=1e-12)


def test_multi_gpu_throughput_example_from_the_issue():
    assert round(multi_gpu_throughput(4, 100, 4), 2) == 133.33


# ---- the guide-2024 estimator ------------------------------------------------------------------
def test_estimate_uses_the_papers_memory_model(make_config):
    est = estimate_guide2024(make_config(batch=16, input_tokens=512, output_tokens=256))
    assert est.estimator == "guide-2024" and est.fits
    assert est.memory.weights_bytes == LLAMA_2_7B_BF16
    assert est.memory.kv_cache_bytes == 16 * KV_PER_REQUEST_768
    assert est.memory.usable_bytes == GPU_80_GIB and est.memory.activation_bytes == 0 and est.memory.reserve_bytes == 0
    assert est.max_batch == 179
    assert est.max_sequence_length == 4096  # 8633 capped by Llama-2's context


def test_estimate_max_batch_boundary(make_config):
    config = make_config(input_tokens=512, output_tokens=256)
    assert estimate_guide2024(dataclasses.replace(config, batch=179)).fits
    over = estimate_guide2024(dataclasses.replace(config, batch=180))
    assert not over.fits and over.phases is None and over.ttft_s is None


def test_kv_is_not_sharded_and_ignores_gqa(make_config):
    # TP=2 halves the model slice only: floor((80 GiB - 6.74e9 B) / 402,653,184) = 196.
    assert estimate_guide2024(make_config(tp=2, input_tokens=512, output_tokens=256)).max_batch == 196
    gqa = estimate_guide2024(make_config(llm="llama-3.1-8b", batch=4, input_tokens=512, output_tokens=256))
    assert gqa.memory.kv_cache_bytes == 4 * KV_PER_REQUEST_768  # hidden size 4096, not 8 KV heads


def test_h2o_scales_the_kv_per_request(make_config):
    est = estimate_guide2024(make_config(batch=16, input_tokens=512, output_tokens=256, h2o_kept_fraction=0.5))
    assert est.memory.kv_cache_bytes == 16 * KV_PER_REQUEST_768 / 2
    assert est.max_batch == math.floor(AVAILABLE / (KV_PER_REQUEST_768 / 2)) == 359


def test_single_gpu_times_are_the_roofline_times(make_config):
    config = make_config(batch=8, input_tokens=512, output_tokens=64)
    paper, ours = estimate_guide2024(config), estimate(config)
    assert paper.tpot_s == pytest.approx(ours.tpot_s, rel=1e-12)
    assert paper.ttft_s == pytest.approx(ours.ttft_s, rel=1e-12)
    assert paper.batch_latency_s == pytest.approx(ours.batch_latency_s, rel=1e-12)


@pytest.mark.parametrize(("tp", "pp"), [(2, 1), (4, 1), (8, 1), (2, 2)])
def test_multi_gpu_speed_up_follows_the_formula(make_config, tp, pp):
    one = estimate_guide2024(make_config(batch=8, input_tokens=512, output_tokens=64))
    many = estimate_guide2024(make_config(tp=tp, pp=pp, batch=8, input_tokens=512, output_tokens=64))
    n = tp * pp
    expected = multi_gpu_throughput(n, one.decode_throughput_tokens_per_s, tp)
    assert many.decode_throughput_tokens_per_s == pytest.approx(expected, rel=1e-12)
    assert many.tpot_s == pytest.approx(one.tpot_s * (1 + math.log2(tp)) / n, rel=1e-12)
    assert many.ttft_s == pytest.approx(one.ttft_s * (1 + math.log2(tp)) / n, rel=1e-12)
    assert many.batch_latency_s == pytest.approx(many.phases.prefill_total_s + 63 * many.tpot_s, rel=1e-12)


def test_tp2_gives_no_speed_up_in_the_papers_formula(make_config):
    # N / (1 + log2 TP) = 2 / 2 = 1 for TP=2.
    one = estimate_guide2024(make_config(batch=4))
    two = estimate_guide2024(make_config(batch=4, tp=2))
    assert two.tpot_s == pytest.approx(one.tpot_s, rel=1e-12)
