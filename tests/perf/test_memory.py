"""Per-GPU memory: weights, KV cache, breakdown, max batch and max sequence length."""

from __future__ import annotations

import dataclasses

import pytest

from guide_opt.hardware import GIB_BYTES
from guide_opt.perf.memory import (
    activation_bytes,
    kv_budget_bytes,
    kv_cache_bytes,
    max_batch,
    max_sequence_length,
    memory_breakdown,
    weight_bytes_per_gpu,
)

LLAMA_2_7B_PARAMS = 6_738_149_376
LLAMA_2_7B_KV_BYTES_PER_TOKEN = 2 * 32 * 32 * 128 * 2  # K and V, 32 layers, 32 heads of 128, fp16


# ---- weights -------------------------------------------------------------------------------------
def test_weights_are_all_parameters_on_one_gpu(make_config):
    assert weight_bytes_per_gpu(make_config()) == LLAMA_2_7B_PARAMS * 2
    # Weight-only 4-bit: decoder layers at 0.5625 bytes, the embedding and LM head (32000 x 4096 each) stay 16-bit.
    edges = 2 * 32000 * 4096
    assert weight_bytes_per_gpu(make_config(quantization="w4a16")) == pytest.approx((LLAMA_2_7B_PARAMS - edges) * 0.5625 + edges * 2)


@pytest.mark.parametrize(("llm", "tp"), [("llama-2-7b", 2), ("llama-2-7b", 8), ("llama-3.1-8b", 2), ("llama-3.1-8b", 8), ("mixtral-8x7b", 4)])
def test_tensor_parallel_divides_weights_when_kv_heads_divide(make_config, llm, tp):
    # Every tensor (QKV/O, MLP or experts, embedding, LM head) is split tp ways; an MoE router
    # (hidden x experts, 16-bit) is replicated on every GPU (vLLM's gate is a ReplicatedLinear).
    one_config = make_config(llm=llm)
    router_bytes = one_config.llm.num_layers * one_config.llm.router_params * 2
    one = weight_bytes_per_gpu(one_config)
    assert weight_bytes_per_gpu(make_config(llm=llm, tp=tp)) == pytest.approx((one - router_bytes) / tp + router_bytes, rel=1e-12)


def test_multi_query_kv_projection_is_replicated_under_tp(make_config):
    one, two = make_config(llm="starcoder-15b"), make_config(llm="starcoder-15b", tp=2)
    llm = one.llm
    assert llm.num_kv_heads == 1
    # The single K and V heads (hidden x head_dim each) stay whole on both GPUs.
    replicated = llm.num_layers * 2 * llm.hidden_size * llm.head_dim * 2
    assert weight_bytes_per_gpu(two) - weight_bytes_per_gpu(one) / 2 == pytest.approx(replicated / 2, rel=1e-12)


def test_pipeline_parallel_splits_layers(make_config):
    per_layer = 4 * 4096**2 + 3 * 4096 * 11008
    assert weight_bytes_per_gpu(make_config(pp=2)) == (16 * per_layer + 32000 * 4096) * 2  # larger of embedding / head
    assert weight_bytes_per_gpu(make_config(pp=3)) == (11 * per_layer + 32000 * 4096) * 2  # ceil(32 / 3) layers


# ---- KV cache ------------------------------------------------------------------------------------
def test_kv_cache_formula(make_config):
    config = make_config()
    assert config.kv_bytes_per_token == LLAMA_2_7B_KV_BYTES_PER_TOKEN
    assert kv_cache_bytes(config, 3, 1024) == 3 * 1024 * LLAMA_2_7B_KV_BYTES_PER_TOKEN


def test_kv_cache_rounds_up_to_whole_blocks(make_config):
    config = make_config()  # vLLM: 16-token blocks
    assert config.framework.kv_block_size_tokens == 16
    assert kv_cache_bytes(config, 1, 17) == kv_cache_bytes(config, 1, 32) == 32 * LLAMA_2_7B_KV_BYTES_PER_TOKEN
    assert kv_cache_bytes(config, 1, 1) == 16 * LLAMA_2_7B_KV_BYTES_PER_TOKEN
    token_pages = make_config(framework="sglang")
    assert kv_cache_bytes(token_pages, 1, 17) == 17 * token_pages.kv_bytes_per_token


def test_kv_cache_shrinks_with_gqa_tp_pp_fp8_and_h2o(make_config):
    base = kv_cache_bytes(make_config(), 4, 2048)
    assert kv_cache_bytes(make_config(llm="llama-3.1-8b"), 4, 2048) == base / 4  # 8 of 32 KV heads
    assert kv_cache_bytes(make_config(tp=2), 4, 2048) == base / 2
    assert kv_cache_bytes(make_config(pp=2), 4, 2048) == base / 2
    assert kv_cache_bytes(make_config(gpu="h100-sxm", kv_cache_dtype="fp8"), 4, 2048) == base / 2
    assert kv_cache_bytes(make_config(h2o_kept_fraction=0.5), 4, 2048) == base / 2


def test_kv_heads_replicate_when_tp_exceeds_them(make_config):
    config = make_config(llm="starcoder-15b", tp=4)
    assert config.kv_heads_per_gpu == 1
    assert kv_cache_bytes(config, 1, 64) == kv_cache_bytes(make_config(llm="starcoder-15b"), 1, 64)


# ---- breakdown, max batch, max sequence length ---------------------------------------------------
def test_breakdown_adds_up(make_config):
    config = make_config(batch=16, input_tokens=512, output_tokens=256)
    m = memory_breakdown(config)
    assert m.weights_bytes == LLAMA_2_7B_PARAMS * 2
    assert m.kv_cache_bytes == 16 * 768 * LLAMA_2_7B_KV_BYTES_PER_TOKEN
    assert m.activation_bytes == activation_bytes(config) > 0
    assert m.reserve_bytes == config.framework.runtime_reserve_gib * GIB_BYTES
    assert m.usable_bytes == pytest.approx(80 * GIB_BYTES * config.framework.gpu_memory_utilization)
    assert m.used_bytes == pytest.approx(m.weights_bytes + m.kv_cache_bytes + m.activation_bytes + m.reserve_bytes)
    assert m.utilization == pytest.approx(m.used_bytes / (80 * GIB_BYTES)) and m.fits
    gib = m.as_gib()
    assert gib["kv_cache_gib"] == pytest.approx(6.0) and gib["device_gib"] == 80
    assert kv_budget_bytes(config) == pytest.approx(m.usable_bytes - m.weights_bytes - m.activation_bytes - m.reserve_bytes)


def test_weights_that_do_not_fit(make_config):
    config = make_config(llm="llama-2-70b", gpu="a10")
    assert not memory_breakdown(config).fits
    assert max_batch(config) == 0 and max_sequence_length(config) == 0


@pytest.mark.parametrize(
    ("batch", "input_tokens", "output_tokens"),
    [(1, 512, 256), (2590, 772, 18), (4000, 100, 10), (1, 30, 2), (64, 4000, 96)],
)
def test_max_batch_is_the_largest_batch_that_fits(make_config, batch, input_tokens, output_tokens):
    config = make_config(batch=batch, input_tokens=input_tokens, output_tokens=output_tokens)
    best = max_batch(config)
    assert best > 0
    assert memory_breakdown(dataclasses.replace(config, batch=best)).fits
    assert not memory_breakdown(dataclasses.replace(config, batch=best + 1)).fits


def test_max_batch_does_not_depend_on_the_batch_asked_for(make_config):
    # Regression: the logit rows of the activation workspace grow with the batch, and
    # max_batch used to take them at the requested batch instead of at max_batch.
    results = {max_batch(make_config(batch=b, input_tokens=772, output_tokens=18)) for b in (1, 100, 2590, 9000)}
    assert len(results) == 1


def test_max_sequence_length_is_the_longest_that_fits(make_config):
    config = make_config(batch=64, input_tokens=100, output_tokens=1)  # chunked prefill: activations don't depend on length
    longest = max_sequence_length(config)
    block = config.framework.kv_block_size_tokens
    assert 0 < longest < config.llm.max_position_embeddings and longest % block == 0
    assert memory_breakdown(dataclasses.replace(config, input_tokens=longest - 1, output_tokens=1)).fits
    assert not memory_breakdown(dataclasses.replace(config, input_tokens=longest, output_tokens=1)).fits


def test_max_sequence_length_capped_by_context(make_config):
    assert max_sequence_length(make_config(batch=1)) == 4096


def test_h2o_lengthens_the_longest_sequence(make_config):
    config = make_config(batch=64)
    assert max_sequence_length(dataclasses.replace(config, h2o_kept_fraction=0.5)) == pytest.approx(2 * max_sequence_length(config), abs=1)
