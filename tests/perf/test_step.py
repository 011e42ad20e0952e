"""One engine step: shapes, the per-operator roofline, TP all-reduces, PP micro-batching, MoE routing."""

from __future__ import annotations

import dataclasses

import pytest

from guide_opt.perf import StepShape, step_time
from guide_opt.perf.communication import point_to_point_time_s, ring_all_reduce_time_s
from guide_opt.perf.step import _experts_touched, layer_operator_times, lm_head_time


# ---- StepShape -----------------------------------------------------------------------------------
def test_decode_shape():
    assert StepShape.decode(4, 100) == StepShape(new_tokens=4, sequences=4, attended_tokens=400, kv_read_tokens=400)


def test_prefill_chunk_shape():
    # Two sequences, 10 new tokens each after 5 cached: each new token i attends to 5 + i tokens.
    shape = StepShape.prefill_chunk(2, 10, 5)
    assert shape == StepShape(new_tokens=20, sequences=2, attended_tokens=2 * (10 * 5 + 55), kv_read_tokens=10)


def test_whole_prompt_attends_triangle():
    assert StepShape.prefill_chunk(1, 4).attended_tokens == 1 + 2 + 3 + 4


def test_split_rounds_counts_up():
    assert StepShape(10, 5, 30.0, 9.0).split(3) == StepShape(4, 2, 10.0, 3.0)


# ---- a decode step by hand ---------------------------------------------------------------------------
def test_llama_2_7b_decode_step_by_hand(make_config, flat_gpu):
    config = make_config(gpu=flat_gpu("a100-80gb-sxm"), batch=1)
    f = config.factors
    hbm = config.gpu.hbm_bandwidth_gbps * 1e9 * f.memory_efficiency
    h, inter, ctx = 4096, 11008, 512
    kv_token_layer = 2 * 32 * 128 * 2  # K and V, 32 heads of 128, fp16
    per_layer_bytes = (
        (h * 3 * h * 2 + (h + 3 * h) * 2)  # QKV projection: weights + activations in/out
        + (h * h * 2 + 2 * h * 2)  # output projection
        + (ctx * kv_token_layer + kv_token_layer + 2 * h * 2)  # attention: read cache, write new K/V, Q in / out
        + (3 * h * inter * 2 + (2 * h + 2 * inter) * 2)  # SwiGLU MLP
        # elementwise kernels: 2 RMSNorms with fused residual add (read x and residual, write both),
        # RoPE reading and writing Q and K, SwiGLU activation reading gate and up and writing one
        + (2 * 4 * h + 2 * (h + h) + 3 * inter) * 2
    )
    head_bytes = h * 32000 * 2 + 32000 * 4
    # host time: the fixed step overhead and one sequence's scheduling/sampling cost (one GPU: no TP hand-off)
    expected = (32 * per_layer_bytes + head_bytes) / hbm + f.step_overhead_ms * 1e-3 + f.sequence_overhead_us * 1e-6
    t = step_time(config, StepShape.decode(1, ctx))
    assert t.compute_s == 0 and t.network_s == 0
    assert t.time_s == pytest.approx(expected, rel=1e-12)


def test_host_overhead_grows_with_sequences_and_a_multi_gpu_replica(make_config):
    """Host time per step, by hand from the EfficiencyFactors fields: 2 ms fixed, 50 us per sequence, 0.7 ms when
    the replica spans several GPUs. 16 sequences on one GPU: 2 + 16 x 0.05 = 2.8 ms; on TP 2: 2.8 + 0.7 = 3.5 ms."""
    from guide_opt.frameworks import EfficiencyFactors
    from guide_opt.perf.step import host_overhead_s

    factors = EfficiencyFactors(compute_efficiency=1.0, memory_efficiency=1.0, communication_efficiency=1.0, step_overhead_ms=2.0,
                                sequence_overhead_us=50.0, tp_step_overhead_ms=0.7)
    one = make_config(batch=16, efficiency=factors)
    two = make_config(batch=16, tp=2, efficiency=factors)
    assert host_overhead_s(one, 16) == pytest.approx(2.8e-3, rel=1e-12)
    assert host_overhead_s(two, 16) == pytest.approx(3.5e-3, rel=1e-12)
    assert step_time(two, StepShape.decode(16, 100)).overhead_s == pytest.approx(3.5e-3, rel=1e-12)


@pytest.mark.parametrize("kv_cache_dtype, fp8_reread, reads", [("fp16", True, 2.0), ("fp8", True, 2.0), ("fp8", False, 1.0), ("fp16", False, 2.0)])
def test_gqa_kv_reread_multiplies_the_cached_kv_read(make_config, flat_gpu, kv_cache_dtype, fp8_reread, reads):
    """llama-3.1-8b has 32 query heads over 8 KV heads: a kernel re-reading the cache with exponent 0.5 reads each
    cached token 4 ** 0.5 = 2 times. By hand, decode of 8 sequences at 1,000 tokens on one GPU: 8,000 cached tokens x
    2 (K, V) x 8 heads x 128 x 2 bytes (1 for FP8) per layer, read once more at the flat GPU's bandwidth. An engine
    that runs FP8 caches with a group kernel (gqa_kv_reread_fp8_cache off, as TensorRT-LLM's XQA) reads them once."""
    from guide_opt.frameworks import EfficiencyFactors

    def factors(exponent: float) -> EfficiencyFactors:
        return EfficiencyFactors(compute_efficiency=1.0, memory_efficiency=1.0, communication_efficiency=1.0, step_overhead_ms=0.0,
                                 gqa_kv_reread_exponent=exponent, gqa_kv_reread_fp8_cache=fp8_reread)

    gpu = flat_gpu("a100-80gb-sxm")
    once, reread = (make_config(llm="llama-3.1-8b", gpu=gpu, batch=8, kv_cache_dtype=kv_cache_dtype, efficiency=factors(e)) for e in (0.0, 0.5))
    assert reread.kv_reads_per_token == reads
    shape = StepShape.decode(8, 1000)
    extra = layer_operator_times(reread, shape)["attention"].memory_time_s - layer_operator_times(once, shape)["attention"].memory_time_s
    element_bytes = 2 if kv_cache_dtype == "fp16" else 1
    assert extra == pytest.approx((reads - 1) * 8000 * 2 * 8 * 128 * element_bytes / (gpu.hbm_bandwidth_gbps * 1e9), rel=1e-9, abs=1e-15)


def test_gqa_kv_reread_leaves_one_kv_head_per_query_head_alone(make_config):
    from guide_opt.frameworks import EfficiencyFactors

    factors = EfficiencyFactors(compute_efficiency=1.0, memory_efficiency=1.0, communication_efficiency=1.0, step_overhead_ms=0.0,
                                gqa_kv_reread_exponent=1.0)
    assert make_config(llm="llama-2-7b", efficiency=factors).kv_reads_per_token == 1.0  # 32 query heads over 32 KV heads


def test_step_is_layers_times_operators_plus_head(make_config):
    config = make_config(llm="llama-3.1-8b", batch=8)
    shape = StepShape.prefill_chunk(2, 300)
    ops = layer_operator_times(config, shape)
    assert set(ops) == {"qkv_projection", "output_projection", "attention", "elementwise", "mlp"}
    expected = config.llm.num_layers * sum(t.time_s for t in ops.values()) + lm_head_time(config, shape).time_s
    expected += config.factors.step_overhead_ms * 1e-3 + config.factors.sequence_overhead_us * 1e-6 * shape.sequences
    assert step_time(config, shape).time_s == pytest.approx(expected, rel=1e-12)


def test_tensor_parallel_adds_two_ring_all_reduces_per_layer(make_config, flat_gpu):
    config = make_config(gpu=flat_gpu("a100-80gb-sxm"), tp=4, batch=8)
    gpu, f = config.gpu, config.factors
    shape = StepShape.decode(8, 1000)
    one = ring_all_reduce_time_s(8 * 4096 * 2, 4, gpu.link_bandwidth_gbps * 1e9 * f.communication_efficiency, gpu.link_latency_us * 1e-6)
    assert step_time(config, shape).network_s == pytest.approx(32 * 2 * one, rel=1e-12)


def test_tensor_parallel_shards_the_work(make_config, flat_gpu):
    shape = StepShape.prefill_chunk(8, 512)
    flat_one, flat_four = make_config(gpu=flat_gpu("a100-80gb-sxm"), batch=8), make_config(gpu=flat_gpu("a100-80gb-sxm"), tp=4, batch=8)
    assert layer_operator_times(flat_four, shape)["mlp"].compute_time_s == pytest.approx(
        layer_operator_times(flat_one, shape)["mlp"].compute_time_s / 4, rel=1e-12)
    # with the measured curves a quarter of the matrix runs at a lower efficiency (small matrices leave SMs idle)
    one, four = make_config(batch=8), make_config(tp=4, batch=8)
    assert layer_operator_times(four, shape)["mlp"].compute_time_s > layer_operator_times(one, shape)["mlp"].compute_time_s / 4
    if one.gpu.link_kind == "nvlink":  # a fast link: TP=4 decodes faster than one GPU
        assert step_time(four, StepShape.decode(8, 512)).time_s < step_time(one, StepShape.decode(8, 512)).time_s


def test_pipeline_steady_state_and_fill(make_config, flat_gpu):
    config = make_config(gpu=flat_gpu("a100-80gb-sxm"), pp=2, batch=8)
    shape = StepShape.decode(8, 700)
    steady, fill = step_time(config, shape), step_time(config, shape, pipeline_fill=True)
    # Two micro-batches of 4: steady state takes pp = 2 stage times, a fill takes m + pp - 1 = 3.
    assert config.layers_per_stage == 16
    assert fill.compute_s + fill.memory_s == pytest.approx(1.5 * (steady.compute_s + steady.memory_s), rel=1e-12)
    gpu, f = config.gpu, config.factors
    hop = point_to_point_time_s(4 * 4096 * 2, gpu.link_bandwidth_gbps * 1e9 * f.communication_efficiency, gpu.link_latency_us * 1e-6)
    assert steady.network_s == pytest.approx(hop, rel=1e-12)  # TP=1: only the one stage boundary


def test_flash_attention_avoids_score_traffic(make_config):
    shape = StepShape.prefill_chunk(1, 4096)
    with_fa = make_config(batch=1, input_tokens=4096)
    without = dataclasses.replace(with_fa, flash_attention=False)
    assert layer_operator_times(without, shape)["attention"].memory_time_s > layer_operator_times(with_fa, shape)["attention"].memory_time_s
    assert step_time(without, shape).time_s >= step_time(with_fa, shape).time_s


def test_h2o_eviction_reads_fewer_kv_entries(make_config):
    full = make_config(batch=16)
    half = dataclasses.replace(full, h2o_kept_fraction=0.5)
    shape = StepShape.decode(16, 4000)
    assert layer_operator_times(half, shape)["attention"].time_s < layer_operator_times(full, shape)["attention"].time_s
    assert step_time(half, shape).time_s < step_time(full, shape).time_s


def test_weight_only_quantization_speeds_up_decode(make_config):
    bf16, w4 = make_config(batch=1), make_config(batch=1, quantization="w4a16")
    shape = StepShape.decode(1, 256)
    assert step_time(w4, shape).time_s < 0.5 * step_time(bf16, shape).time_s


def test_fp8_speeds_up_prefill_on_hopper(make_config):
    bf16, fp8 = make_config(gpu="h100-sxm", batch=4), make_config(gpu="h100-sxm", batch=4, quantization="fp8")
    shape = StepShape.prefill_chunk(4, 2048)
    assert step_time(fp8, shape).time_s < step_time(bf16, shape).time_s


# ---- mixture of experts ------------------------------------------------------------------------------
def test_experts_touched():
    assert _experts_touched(1, 1, 100) == 1.0
    assert _experts_touched(8, 2, 1) == pytest.approx(2.0)
    assert _experts_touched(8, 2, 2) == pytest.approx(8 * (1 - 0.75**2))
    assert _experts_touched(8, 2, 10_000) == pytest.approx(8.0)


def test_moe_decode_reads_only_the_routed_experts(make_config, flat_gpu):
    config = make_config(llm="mixtral-8x7b", gpu=flat_gpu("a100-80gb-sxm"), tp=2, batch=1)
    mlp = layer_operator_times(config, StepShape.decode(1, 100))["mlp"]
    hbm = config.gpu.hbm_bandwidth_gbps * 1e9 * config.factors.memory_efficiency
    expert_bytes = 3 * 4096 * (14336 / 2) * 2
    activations = 2 * (2 * 4096 + 2 * 14336 / 2) * 2
    router_bytes = 4096 * 8 * 2  # hidden x experts, 16-bit, whole on each GPU
    assert mlp.memory_time_s == pytest.approx((2 * expert_bytes + router_bytes + activations) / hbm, rel=1e-12)
    big = layer_operator_times(config, StepShape.decode(64, 100))["mlp"]
    assert big.memory_time_s > 3.5 * mlp.memory_time_s  # nearly all 8 experts are hit by 64 tokens
