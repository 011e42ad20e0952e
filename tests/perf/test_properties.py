"""Property tests of the performance model (hypothesis, derandomized so runs are repeatable)."""

from __future__ import annotations

import dataclasses
import math

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from guide_opt.catalog import load_catalog
from guide_opt.perf import ServingConfig, StepShape, estimate, step_time
from guide_opt.perf.estimator import phase_times
from guide_opt.perf.memory import kv_cache_bytes, max_batch, memory_breakdown, weight_bytes_per_gpu

PROPERTY = settings(max_examples=100, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow])
REL = 1e-12  # float noise allowed in "never slower" comparisons

# Relative slack for TTFT against prompt length under chunked prefill: steps hold budget-sized
# slices of the concatenated prompts, so one more prompt token can move a prompt boundary out
# of a step and save that step a logit row -- a few parts in 10^4 at most.
CHUNK_BOUNDARY_REL = 1e-3


@st.composite
def configs(draw, *, llms=None, max_batch_size=64, max_input=4096, max_output=512, pp_choices=(1, 2)):
    """A runnable ServingConfig drawn from the catalog (any GPU, engine, TP/PP that the LLM supports)."""
    catalog = load_catalog()
    llm = catalog.llms[draw(st.sampled_from(sorted(llms or catalog.llms)))]
    gpu = catalog.gpus[draw(st.sampled_from(sorted(catalog.gpus)))]
    framework = catalog.frameworks[draw(st.sampled_from(sorted(catalog.frameworks)))]
    quantization = catalog.quantization(draw(st.sampled_from(["bf16", "w4a16", "w8a8", "fp8"])))
    config = ServingConfig(
        llm=llm, gpu=gpu, framework=framework, quantization=quantization,
        tp=draw(st.sampled_from([1, 2, 4, 8])), pp=draw(st.sampled_from(pp_choices)),
        batch=draw(st.integers(1, max_batch_size)),
        input_tokens=draw(st.integers(1, max_input)), output_tokens=draw(st.integers(1, max_output)),
        kv_cache_dtype=draw(st.sampled_from(["fp16", "fp8"])),
        flash_attention=draw(st.booleans()),
        h2o_kept_fraction=draw(st.sampled_from([1.0, 1.0, 0.5, 0.2])),
    )
    assume(config.unsupported_reason() is None)
    return config


def _not_faster(new: float, old: float) -> bool:
    return new >= old * (1 - REL)


def _not_slower(new: float, old: float) -> bool:
    return new <= old * (1 + REL)


# ---- faster hardware is never slower -------------------------------------------------------------
@PROPERTY
@given(data=st.data(), factor=st.floats(1.0, 8.0))
def test_more_hbm_bandwidth_is_never_slower(data, factor):
    config = data.draw(configs())
    faster = dataclasses.replace(config, gpu=config.gpu.model_copy(update={"hbm_bandwidth_gbps": config.gpu.hbm_bandwidth_gbps * factor}))
    old, new = phase_times(config), phase_times(faster)
    assert _not_slower(new.ttft_s, old.ttft_s) and _not_slower(new.tpot_s, old.tpot_s)
    assert _not_slower(new.batch_latency_s, old.batch_latency_s)


@PROPERTY
@given(data=st.data(), factor=st.floats(1.0, 8.0))
def test_more_flops_is_never_slower(data, factor):
    config = data.draw(configs())
    peaks = ("bf16_dense_tflops", "fp8_dense_tflops", "int8_dense_tops", "int4_dense_tops")
    gpu = config.gpu.model_copy(update={p: getattr(config.gpu, p) * factor for p in peaks if getattr(config.gpu, p) is not None})
    old, new = phase_times(config), phase_times(dataclasses.replace(config, gpu=gpu))
    assert _not_slower(new.ttft_s, old.ttft_s) and _not_slower(new.tpot_s, old.tpot_s)
    assert _not_slower(new.batch_latency_s, old.batch_latency_s)


@PROPERTY
@given(data=st.data(), factor=st.floats(1.0, 8.0))
def test_faster_links_are_never_slower(data, factor):
    config = data.draw(configs())
    gpu = config.gpu.model_copy(update={"link_bandwidth_gbps": config.gpu.link_bandwidth_gbps * factor,
                                        "link_latency_us": config.gpu.link_latency_us / factor})
    old, new = phase_times(config), phase_times(dataclasses.replace(config, gpu=gpu))
    assert _not_slower(new.ttft_s, old.ttft_s) and _not_slower(new.tpot_s, old.tpot_s)


# ---- the decode step reads the weights ---------------------------------------------------------------
@PROPERTY
@given(data=st.data())
def test_decode_step_is_never_faster_than_reading_the_weights(data):
    dense = [i for i, m in load_catalog().llms.items() if not m.is_moe]
    config = data.draw(configs(llms=dense))
    llm, q = config.llm, config.quantization
    weights = weight_bytes_per_gpu(config)
    if config.pp == 1 and not llm.tie_word_embeddings:
        weights -= llm.embedding_params / config.tp * config.unquantized_weight_bytes_per_param  # a 16-bit lookup table, not streamed
    rate = config.gpu.hbm_bandwidth_bytes_per_s * config.factors.memory_efficiency
    floor_s = weights / rate + config.factors.step_overhead_ms * 1e-3
    context = config.input_tokens + config.output_tokens / 2
    assert step_time(config, StepShape.decode(config.batch, context)).time_s >= floor_s * (1 - 1e-9)
    assert phase_times(config).tpot_s >= floor_s * (1 - 1e-9)


# ---- latency grows with the work ---------------------------------------------------------------------
@PROPERTY
@given(data=st.data(), extra=st.integers(1, 64))
def test_ttft_and_tpot_never_decrease_with_batch(data, extra):
    config = data.draw(configs())
    old, new = phase_times(config), phase_times(dataclasses.replace(config, batch=config.batch + extra))
    assert _not_faster(new.ttft_s, old.ttft_s) and _not_faster(new.tpot_s, old.tpot_s)
    assert _not_faster(new.batch_latency_s, old.batch_latency_s)


@PROPERTY
@given(data=st.data(), extra=st.integers(1, 3000))
def test_tpot_never_decreases_with_input_or_output_length(data, extra):
    config = data.draw(configs())
    old = phase_times(config)
    assert _not_faster(phase_times(dataclasses.replace(config, input_tokens=config.input_tokens + extra)).tpot_s, old.tpot_s)
    assert _not_faster(phase_times(dataclasses.replace(config, output_tokens=config.output_tokens + extra)).tpot_s, old.tpot_s)


@PROPERTY
@given(data=st.data(), extra=st.integers(1, 3000))
def test_ttft_never_decreases_with_input_length_under_chunked_prefill(data, extra):
    # Under whole-prompt prefill (packing prompts up to the token budget) a longer prompt can
    # legitimately lower the *mean* TTFT: fewer prompts share a step, so the first ones finish
    # earlier. Chunked prefill / SplitFuse fills every step to the budget, so it cannot.
    config = data.draw(configs(pp_choices=(1,)))
    assume(config.framework.prefill_mode != "whole")
    old = phase_times(config).ttft_s
    for longer in (config.input_tokens + 1, config.input_tokens + extra):
        new = phase_times(dataclasses.replace(config, input_tokens=longer)).ttft_s
        assert new >= old * (1 - CHUNK_BOUNDARY_REL)


@PROPERTY
@given(data=st.data())
def test_ttft_at_prompt_packing_thresholds(data):
    # The prompt lengths where whole-prompt packing changes (budget // prompt drops) are where
    # the old chunked schedule lowered TTFT by up to ~20%.
    config = data.draw(configs(pp_choices=(1,)))
    assume(config.framework.prefill_mode != "whole")
    per_step = data.draw(st.integers(2, 8))
    prompt = config.step_token_budget // per_step
    at = dataclasses.replace(config, batch=max(config.batch, per_step), input_tokens=prompt)
    assert phase_times(dataclasses.replace(at, input_tokens=prompt + 1)).ttft_s >= phase_times(at).ttft_s * (1 - CHUNK_BOUNDARY_REL)


# ---- memory ----------------------------------------------------------------------------------------
@PROPERTY
@given(data=st.data(), blocks=st.integers(1, 512), batch=st.integers(1, 256))
def test_kv_memory_is_linear_in_tokens_and_batch(data, blocks, batch):
    # Full attention only: sliding-window layers stop growing at their window, MLA caches a latent.
    full_attention = [i for i, m in load_catalog().llms.items() if not m.num_sliding_layers and not m.is_mla]
    config = data.draw(configs(llms=full_attention))
    kept = config.h2o_kept_fraction
    config = dataclasses.replace(config, h2o_kept_fraction=1.0)
    block = config.framework.kv_block_size_tokens
    one_block = kv_cache_bytes(config, 1, block)
    assert one_block == block * 2 * config.layers_per_stage * config.kv_heads_per_gpu * config.llm.head_dim * (
        1 if config.kv_cache_dtype == "fp8" else 2)
    assert kv_cache_bytes(config, batch, blocks * block) == pytest.approx(batch * blocks * one_block, rel=1e-12)
    # Between block multiples the cache is rounded up to the next whole block.
    assert kv_cache_bytes(config, batch, blocks * block + 1) == pytest.approx(
        kv_cache_bytes(config, batch, (blocks + 1) * block) if block > 1 else batch * (blocks + 1) * one_block, rel=1e-12)
    # H2O keeps ceil(tokens x kept) entries of the same cache.
    tokens = blocks * block
    evicting = dataclasses.replace(config, h2o_kept_fraction=kept)
    assert kv_cache_bytes(evicting, batch, tokens) == kv_cache_bytes(config, batch, math.ceil(tokens * kept))


@PROPERTY
@given(data=st.data(), tp=st.sampled_from([2, 4, 8]))
def test_tensor_parallel_divides_per_gpu_weights(data, tp):
    config = data.draw(configs(pp_choices=(1,)))
    config = dataclasses.replace(config, tp=1)
    sharded = dataclasses.replace(config, tp=tp)
    assume(sharded.unsupported_reason() is None)
    llm, wb = config.llm, config.weight_bytes_per_param
    # Everything splits tp ways except KV heads that must be replicated when tp > num_kv_heads,
    # MoE routers (16-bit) and MLA's down-projections (attention_params with no heads), which
    # every GPU holds whole.
    replicated_kv_heads = math.ceil(llm.num_kv_heads / tp) - llm.num_kv_heads / tp
    extra = llm.num_layers * 2 * llm.hidden_size * llm.head_dim * replicated_kv_heads * wb
    extra += (1 - 1 / tp) * (llm.num_moe_layers * llm.router_params * 2 + llm.num_layers * llm.attention_params(0, 0) * wb)
    assert weight_bytes_per_gpu(sharded) == pytest.approx(weight_bytes_per_gpu(config) / tp + extra, rel=1e-12)
    if llm.num_kv_heads % tp == 0 and not llm.is_moe and not llm.is_mla:
        assert extra == 0


@PROPERTY
@given(data=st.data())
def test_max_batch_is_the_largest_batch_that_fits(data):
    config = data.draw(configs(max_batch_size=4096, max_input=16384, max_output=4096))
    best = max_batch(config)
    if best > 0:
        assert memory_breakdown(dataclasses.replace(config, batch=best)).fits
    assert not memory_breakdown(dataclasses.replace(config, batch=best + 1)).fits


@PROPERTY
@given(data=st.data())
def test_fits_exactly_up_to_max_batch_and_runs_while_one_request_fits(data):
    config = data.draw(configs(max_batch_size=4096, max_input=2048, max_output=1024))
    est = estimate(config)
    assert est.fits == memory_breakdown(config).fits == (config.batch <= est.max_batch)
    # The engine serves the batch (in waves when it is not resident) exactly when one request fits.
    assert est.runs == (est.max_batch >= 1) == (est.start_reason is None)
    assert est.waves == (1 if est.fits or not est.runs else math.ceil(config.batch / est.max_batch))
    metrics = est.metrics()
    assert (metrics["ttft_ms"] is None) == (metrics["throughput_tokens_per_s"] is None) == (not est.runs)
    assert metrics["memory_utilization"] == pytest.approx(est.memory.used_bytes / est.memory.device_bytes)
