"""Memory and step cost of MoE, MLA, sliding-window and pre-quantized LLMs, and the engines' memory rules.

Expected values are hand computations from the published architecture (config.json) or
published deployment facts, each cited where it is used.
"""

from __future__ import annotations

import dataclasses

import pytest

from guide_opt.hardware import GIB_BYTES
from guide_opt.llm import LlmSpec
from guide_opt.perf import estimate
from guide_opt.perf.memory import activation_bytes, kv_budget_bytes, kv_cache_bytes, memory_breakdown, weight_bytes_per_gpu
from guide_opt.perf.step import StepShape, layer_operator_times

LLAMA_31_70B_EDGES = 2 * 128256 * 8192  # embedding + untied LM head


# ---- weights ----------------------------------------------------------------------------------------
def test_qwen_moe_weights_follow_the_published_parameter_counts(make_config):
    # Qwen1.5-MoE-A2.7B: 14.3B parameters (model card) x 2 bytes = 26.6 GiB, not the 94.7 GiB that
    # reading intermediate_size as the expert width gave. Qwen3-30B-A3B: 30.5B x 2 bytes.
    assert weight_bytes_per_gpu(make_config(llm="qwen1.5-moe-a2.7b", gpu="h100-sxm")) / GIB_BYTES == pytest.approx(14.3e9 * 2 / GIB_BYTES, rel=0.01)
    assert weight_bytes_per_gpu(make_config(llm="qwen3-30b-a3b", gpu="h100-sxm")) == pytest.approx(30.5e9 * 2, rel=0.01)


def test_fp8_keeps_embedding_and_lm_head_in_16_bit(make_config, need):
    # FP8 checkpoints quantize the decoder layers' linear projections only.
    total = need("llms", "llama-3.1-70b").total_params
    fp8 = make_config(llm="llama-3.1-70b", gpu="h100-sxm", quantization="fp8", tp=2)
    assert weight_bytes_per_gpu(fp8) == pytest.approx(((total - LLAMA_31_70B_EDGES) * 1 + LLAMA_31_70B_EDGES * 2) / 2, rel=1e-12)


def test_awq_checkpoint_weights_by_hand(make_config, need):
    # hugging-quants Llama-3.1-70B AWQ-INT4: 4-bit weights with an fp16 scale and a 4-bit zero per 128, fp16 edges.
    total = need("llms", "llama-3.1-70b-awq").total_params
    config = make_config(llm="llama-3.1-70b-awq", gpu="a100-80gb-sxm", quantization="w4a16")
    assert weight_bytes_per_gpu(config) == pytest.approx((total - LLAMA_31_70B_EDGES) * (0.5 + 2.5 / 128) + LLAMA_31_70B_EDGES * 2, rel=1e-12)
    assert make_config(llm="llama-3.1-70b-awq", quantization="bf16").unsupported_reason() is not None


def test_expert_parallel_places_whole_experts(make_config, need):
    # Qwen1.5-MoE has 60 experts: over 8 GPUs, TP gives each GPU 60/8 = 7.5 experts' worth of columns,
    # EP (= TP) gives the most loaded GPU ceil(60/8) = 8 whole experts: half an expert (3 x 2048 x 1408
    # weights, 2 bytes each) more per MoE layer, 24 layers.
    tp = make_config(llm="qwen1.5-moe-a2.7b", gpu="h100-sxm", tp=8)
    ep = dataclasses.replace(tp, expert_parallel=True)
    assert weight_bytes_per_gpu(ep) - weight_bytes_per_gpu(tp) == pytest.approx(24 * 0.5 * 3 * 2048 * 1408 * 2, rel=1e-12)
    # 128 experts divide over 4 GPUs: the same bytes either way.
    qwen3 = make_config(llm="qwen3-30b-a3b", gpu="h100-sxm", tp=4)
    assert weight_bytes_per_gpu(dataclasses.replace(qwen3, expert_parallel=True)) == pytest.approx(weight_bytes_per_gpu(qwen3), rel=1e-12)


def test_deepseek_v3_fits_one_h200_node_but_not_one_h100_node(make_config):
    # SGLang's DeepSeek-V3 guide: one 8 x H200 node serves the FP8 checkpoint with --tp 8; 8 x H100 80GB
    # does not hold it (two H100 nodes are needed): 671 GB of FP8 weights exceed 8 x 80 GB x 0.88.
    h200 = estimate(make_config(llm="deepseek-v3", gpu="h200", framework="sglang", quantization="fp8", tp=8, input_tokens=1024, output_tokens=1024))
    h100 = estimate(make_config(llm="deepseek-v3", gpu="h100-sxm", framework="sglang", quantization="fp8", tp=8))
    assert h200.runs and h200.max_batch > 1
    assert not h100.runs and "exceed" in h100.start_reason


# ---- KV cache ---------------------------------------------------------------------------------------
def test_mla_caches_the_latent_on_every_gpu(make_config):
    # DeepSeek-V3: (kv_lora_rank 512 + qk_rope_head_dim 64) elements per token and layer, 61 layers,
    # 2 bytes = 70,272 bytes per token, whatever the TP degree (each GPU keeps the whole latent).
    for tp in (1, 8):
        config = make_config(llm="deepseek-v3", gpu="h200", quantization="fp8", tp=tp)
        assert config.kv_bytes_per_token == 61 * 576 * 2
    fp8_kv = make_config(llm="deepseek-v3", gpu="h200", quantization="fp8", tp=8, kv_cache_dtype="fp8")
    assert kv_cache_bytes(fp8_kv, 2, 1024) == 2 * 1024 * 61 * 576


def test_sliding_window_layers_stop_growing_at_the_window(make_config):
    per_layer_token = 2 * 8 * 128 * 2  # Mistral-7B: K and V of 8 heads of 128, fp16
    mistral = make_config(llm="mistral-7b", gpu="h100-sxm")
    # Up to the window every layer holds every token (16-token blocks).
    assert kv_cache_bytes(mistral, 1, 4096) == 32 * 4096 * per_layer_token
    # Beyond it a layer keeps the 256 blocks of the window plus the block its start straddles.
    assert kv_cache_bytes(mistral, 1, 8192) == kv_cache_bytes(mistral, 1, 30000) == 32 * (4096 + 16) * per_layer_token
    # Gemma-2-9B: 21 global layers hold all 8192 tokens, 21 local layers 4096 + 16; 8 KV heads of 256.
    gemma = make_config(llm="gemma-2-9b", gpu="h100-sxm")
    assert kv_cache_bytes(gemma, 1, 8192) == (21 * 8192 + 21 * 4112) * 2 * 8 * 256 * 2


def test_fp8_kv_cache_on_ampere_halves_the_kv_bytes(make_config):
    # vLLM stores fp8 KV on A100 and dequantizes it in attention (no FP8 tensor cores needed).
    fp16 = make_config(llm="llama-3.1-8b", gpu="a100-80gb-sxm")
    fp8 = dataclasses.replace(fp16, kv_cache_dtype="fp8")
    assert fp8.unsupported_reason() is None
    assert kv_cache_bytes(fp8, 8, 4096) == kv_cache_bytes(fp16, 8, 4096) / 2
    assert estimate(fp8).max_batch > estimate(fp16).max_batch


def test_tp_must_divide_or_be_a_multiple_of_the_kv_heads(make_config):
    # 48 query heads, 6 KV heads: TP 2 and 3 divide 6; TP 8 neither divides 6 nor is a multiple of it.
    llm = LlmSpec(id="x", name="x", hidden_size=6144, num_layers=4, num_attention_heads=48, num_kv_heads=6, head_dim=128,
                  intermediate_size=16384, vocab_size=32000, mlp_kind="gated", max_position_embeddings=4096, source="test")
    assert make_config(llm=llm, tp=2).unsupported_reason() is None
    assert "not a multiple of the 6 KV heads" in make_config(llm=llm, tp=8).unsupported_reason()
    assert "does not divide the 6 KV heads" in make_config(llm=llm, tp=4).unsupported_reason()


# ---- the engines' memory rules ------------------------------------------------------------------------
def test_each_engine_sizes_its_kv_cache_by_its_documented_rule(make_config):
    device = 80 * GIB_BYTES
    for framework, rule in (("vllm", "device"), ("sglang", "weights_and_kv"), ("tensorrt-llm", "free_after_weights")):
        config = make_config(llm="llama-3.1-8b", gpu="h100-sxm", framework=framework)
        m = memory_breakdown(config)
        fraction = config.framework.gpu_memory_utilization
        workspace = m.activation_bytes + m.reserve_bytes
        assert config.framework.memory_fraction_of == rule
        if rule == "device":  # vLLM: weights + activations + KV within gpu_memory_utilization x device
            expected = fraction * device - m.weights_bytes - workspace
        elif rule == "weights_and_kv":  # SGLang: mem_fraction_static covers weights + KV pool only
            expected = fraction * device - m.weights_bytes
        else:  # TensorRT-LLM: free_gpu_memory_fraction of what is free after weights and workspace
            expected = fraction * (device - m.weights_bytes - workspace)
        assert kv_budget_bytes(config) == pytest.approx(expected, rel=1e-12)


def test_activation_workspace_does_not_depend_on_the_batch_asked_for(make_config):
    # vLLM profiles one max_num_batched_tokens pass with max_num_seqs logit rows at start-up.
    config = make_config(llm="llama-3.1-8b", gpu="h100-sxm")
    assert activation_bytes(dataclasses.replace(config, batch=1)) == activation_bytes(dataclasses.replace(config, batch=256))


@pytest.mark.parametrize(("quantization", "tp", "gpus"), [("fp8", 2, "2 x H100 80GB"), ("bf16", 4, "4 x H100 80GB")])
def test_documented_llama_70b_deployments_serve_long_requests_at_high_concurrency(make_config, quantization, tp, gpus):
    # vLLM serves Llama-3.1-70B in FP8 on 2 x H100 80GB (TP=2) and in bf16 on 4 x H100 80GB (TP=4), with a
    # 16-bit KV cache, at 256 concurrent 8k-token requests: the KV cache holds fewer at once and the rest queue.
    est = estimate(make_config(llm="llama-3.1-70b", gpu="h100-sxm", quantization=quantization, tp=tp, batch=256,
                               input_tokens=8192, output_tokens=1024))
    assert est.runs and est.start_reason is None, gpus
    assert not est.fits and est.waves > 1


# ---- step cost ---------------------------------------------------------------------------------------
# Byte counts by hand: on a GPU without kernel curves (flat_gpu) memory time is exactly bytes / (HBM x memory factor).
def _hbm(config) -> float:
    return config.gpu.hbm_bandwidth_gbps * 1e9 * config.factors.memory_efficiency


def test_moe_decode_reads_top_k_experts_of_the_expert_width(make_config, flat_gpu):
    # Qwen3-30B-A3B, one token: its 8 experts of 3 x 2048 x 768 weights, the 2048 x 128 router (16-bit),
    # and per expert the token's hidden in/out and its 768-wide intermediate.
    config = make_config(llm="qwen3-30b-a3b", gpu=flat_gpu("h100-sxm"))
    mlp = layer_operator_times(config, StepShape.decode(1, 100))["mlp"]
    expected = 8 * 3 * 2048 * 768 * 2 + 2048 * 128 * 2 + 8 * (2 * 2048 + 2 * 768) * 2
    assert mlp.memory_time_s == pytest.approx(expected / _hbm(config), rel=1e-12)


def test_shared_experts_are_always_read(make_config, flat_gpu):
    # Qwen1.5-MoE, one token: 4 routed experts (3 x 2048 x 1408) and the shared expert (3 x 2048 x 5632) every step.
    config = make_config(llm="qwen1.5-moe-a2.7b", gpu=flat_gpu("h100-sxm"))
    mlp = layer_operator_times(config, StepShape.decode(1, 100))["mlp"]
    weights = (4 * 3 * 2048 * 1408 + 3 * 2048 * 5632) * 2 + 2048 * 60 * 2
    activations = (4 * (2 * 2048 + 2 * 1408) + (2 * 2048 + 2 * 5632)) * 2
    assert mlp.memory_time_s == pytest.approx((weights + activations) / _hbm(config), rel=1e-12)


def test_mla_decode_reads_the_latent_cache(make_config, flat_gpu):
    # DeepSeek-V3 on 8 GPUs, 4 sequences of 2000 tokens: each GPU reads 8000 x 576 fp8 latent entries,
    # writes 4 new ones, and reads Q / writes the output of its 16 heads (192 + 128 wide, 1-byte activations).
    config = make_config(llm="deepseek-v3", gpu=flat_gpu("h200"), quantization="fp8", tp=8, kv_cache_dtype="fp8")
    attention = layer_operator_times(config, StepShape.decode(4, 2000))["attention"]
    expected = 8000 * 576 + 4 * 576 + 4 * 16 * (192 + 128) * 1
    assert attention.memory_time_s == pytest.approx(expected / _hbm(config), rel=1e-12)


def test_sliding_window_decode_reads_at_most_the_window(make_config):
    config = make_config(llm="mistral-7b", gpu="h100-sxm")
    far, at_window = (layer_operator_times(config, StepShape.decode(1, c))["attention"] for c in (20000, 4096))
    assert far.memory_time_s == pytest.approx(at_window.memory_time_s, rel=1e-12)
