"""The static estimator: prefill schedule, TTFT / TPOT / latency / throughput, fit and unsupported configs."""

from __future__ import annotations

import dataclasses
import math

import pytest

from guide_opt.perf import ESTIMATORS, StepShape, estimate, estimate_guide2024, step_time
from guide_opt.perf.estimator import phase_times, prefill_schedule
from guide_opt.perf.memory import kv_budget_bytes, kv_cache_bytes

METRIC_KEYS = {"ttft_ms", "tpot_ms", "batch_latency_s", "throughput_tokens_per_s", "memory_utilization"}


def test_estimator_registry():
    assert ESTIMATORS == {"roofline": estimate, "guide-2024": estimate_guide2024}


def test_single_request_by_definition(make_config):
    config = make_config(batch=1, input_tokens=512, output_tokens=128)
    est = estimate(config)
    prefill = step_time(config, StepShape.prefill_chunk(1, 512), pipeline_fill=True).time_s
    decode = step_time(config, StepShape.decode(1, 512 + 127 / 2)).time_s
    assert est.fits and est.estimator == "roofline"
    assert est.ttft_s == pytest.approx(prefill, rel=1e-12)
    assert est.tpot_s == pytest.approx(decode, rel=1e-12)
    assert est.batch_latency_s == pytest.approx(prefill + 127 * decode, rel=1e-12)
    assert est.throughput_tokens_per_s == pytest.approx(128 / est.batch_latency_s, rel=1e-12)
    assert est.decode_throughput_tokens_per_s == pytest.approx(1 / decode, rel=1e-12)


def test_metrics_are_the_contract_units(make_config):
    est = estimate(make_config(batch=16, input_tokens=512, output_tokens=256))
    m = est.metrics()
    assert set(m) == METRIC_KEYS
    assert m["ttft_ms"] == pytest.approx(est.ttft_s * 1e3) and m["tpot_ms"] == pytest.approx(est.tpot_s * 1e3)
    assert m["batch_latency_s"] == est.batch_latency_s and m["memory_utilization"] == est.memory.utilization
    assert m["throughput_tokens_per_s"] == pytest.approx(16 * 256 / est.batch_latency_s)
    assert 0 < m["ttft_ms"] < m["batch_latency_s"] * 1e3 and 0 < m["memory_utilization"] < 1


def test_tpot_is_the_mean_of_the_decode_steps(make_config):
    # Step time is affine in the context, so the step at the mean context is the exact mean.
    config = make_config(batch=8, input_tokens=300, output_tokens=50)
    steps = [step_time(config, StepShape.decode(8, 300 + i)).time_s for i in range(50)]  # context 300 .. 349
    assert estimate(config).tpot_s == pytest.approx(sum(steps) / len(steps), rel=1e-9)


def test_engine_that_cannot_hold_one_request_gives_no_latencies(make_config):
    # Llama-3.1-8B on a 24 GB L4: ~15 GiB of weights leave ~5 GiB, but one 131072-token request
    # needs 131072 x 32 layers x 2 x 8 heads x 128 x 2 bytes = 16 GiB of KV cache.
    est = estimate(make_config(llm="llama-3.1-8b", gpu="l4", input_tokens=130048, output_tokens=1024))
    assert not est.fits and est.phases is None and not est.runs and "one request of 131072 tokens" in est.start_reason
    assert est.ttft_s is None and est.tpot_s is None and est.batch_latency_s is None
    assert est.throughput_tokens_per_s is None and est.decode_throughput_tokens_per_s is None
    m = est.metrics()
    assert set(m) == METRIC_KEYS and m["memory_utilization"] > est.config.framework.gpu_memory_utilization
    assert all(m[k] is None for k in METRIC_KEYS - {"memory_utilization"})
    assert est.max_batch == 0


def test_batch_beyond_the_kv_cache_runs_in_waves(make_config):
    # A continuous-batching engine queues what its KV cache cannot hold; with equal requests
    # that is successive waves of max_batch M. For exactly three full waves of L seconds each, a
    # request of wave k (0, 1, 2) waits k x L before its own TTFT, so by hand:
    # TTFT = TTFT(one wave) + L x (0 + 1 + 2) / 3, TPOT = TPOT(one wave), latency = 3 L.
    probe = make_config(batch=1, input_tokens=2048, output_tokens=2048)
    m = estimate(probe).max_batch
    assert m > 1
    wave = estimate(make_config(batch=m, input_tokens=2048, output_tokens=2048))
    config = make_config(batch=3 * m, input_tokens=2048, output_tokens=2048)
    waves_only = phase_times(config, running=m, admitted=m)
    assert waves_only.ttft_s == pytest.approx(wave.ttft_s + wave.batch_latency_s, rel=1e-12)
    assert waves_only.tpot_s == pytest.approx(wave.tpot_s, rel=1e-12)
    assert waves_only.batch_latency_s == pytest.approx(3 * wave.batch_latency_s, rel=1e-12)
    # Engines admit by prompt size: with 2M prompts admitted on arrival, those 2M get their first token in
    # the first prefill (of 2M prompts) and only the third wave's M wait 2 L.
    two = phase_times(dataclasses.replace(config, batch=2 * m))
    admitted = phase_times(config, running=m, admitted=2 * m)
    assert admitted.ttft_s == pytest.approx((2 * m * two.ttft_s + m * (2 * wave.batch_latency_s + wave.ttft_s)) / (3 * m), rel=1e-12)
    assert admitted.batch_latency_s == waves_only.batch_latency_s and admitted.tpot_s == waves_only.tpot_s
    three = estimate(config)
    assert not three.fits and three.runs and three.waves == 3 and three.start_reason is None
    # The estimate admits floor(KV budget / KV of one prompt + first token) requests on arrival.
    expected = math.floor(kv_budget_bytes(config) / kv_cache_bytes(config, 1, 2049))
    assert three.ttft_s == pytest.approx(phase_times(config, running=m, admitted=expected).ttft_s, rel=1e-12)
    # A partial last wave: ceil(batch / max_batch) waves.
    assert estimate(make_config(batch=3 * m + 1, input_tokens=2048, output_tokens=2048)).waves == 4


def test_weights_alone_do_not_fit(make_config):
    est = estimate(make_config(llm="llama-2-70b", gpu="a100-80gb-sxm"))
    assert not est.fits and est.phases is None and est.max_batch == 0
    assert estimate(make_config(llm="llama-2-70b", gpu="a100-80gb-sxm", tp=4)).fits


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"tp": 3}, "does not divide the 32 attention heads"),
        ({"llm": "llama-3.1-8b", "tp": 16}, "exceeds the 8 GPUs"),
        ({"llm": "qwen2-7b", "tp": 8}, "does not divide the 28 attention heads"),
        ({"pp": 33}, "PP=33 exceeds the 32 layers"),
        ({"quantization": "fp8"}, "has no fp8 tensor cores"),
        ({"gpu": "v100-32gb", "quantization": "w8a8"}, "has no int8 tensor cores"),
        ({"gpu": "v100-32gb", "kv_cache_dtype": "fp8"}, "vllm has no fp8 KV cache on v100-32gb"),
        # TensorRT-LLM's fp8 KV cache needs FP8 tensor cores (SM89+); vLLM's also runs on Ampere.
        ({"framework": "tensorrt-llm", "kv_cache_dtype": "fp8"}, "tensorrt-llm has no fp8 KV cache on a100-80gb-sxm"),
        ({"llm": "llama-3.1-70b-awq", "tp": 4}, "serve it with quantization w4a16, not bf16"),
        ({"expert_parallel": True}, "expert parallelism needs a mixture-of-experts LLM"),
        ({"batch": 0}, "at least 1"),
        ({"input_tokens": 0}, "at least 1"),
        ({"h2o_kept_fraction": 0.0}, "h2o_kept_fraction"),
    ],
)
def test_unsupported_configurations_say_why(make_config, fields, reason):
    config = make_config(**fields)
    assert reason in config.unsupported_reason()
    with pytest.raises(ValueError, match=reason):
        estimate(config)
    with pytest.raises(ValueError, match=reason):
        estimate_guide2024(config)


def test_kv_heads_may_be_replicated(make_config):
    config = make_config(llm="chatglm3-6b", tp=8)  # 2 KV heads on 8 GPUs: replicated, allowed
    assert config.unsupported_reason() is None and config.kv_heads_per_gpu == 1


def test_tp_must_divide_kv_heads_when_not_replicating(make_config, catalog):
    llm = catalog.llm("llama-2-7b").model_copy(update={"num_attention_heads": 48, "num_kv_heads": 12})
    assert "does not divide the 12 KV heads" in make_config(llm=llm, tp=8).unsupported_reason()
    assert make_config(llm=llm, tp=4).unsupported_reason() is None


@pytest.mark.parametrize(("llm", "tp", "pp"), [("llama-2-7b", 1, 1), ("llama-2-7b", 2, 2), ("mixtral-8x7b", 4, 1), ("starcoder-15b", 4, 2)])
def test_supported_configurations_estimate(make_config, llm, tp, pp):
    config = make_config(llm=llm, tp=tp, pp=pp, batch=4)
    assert config.unsupported_reason() is None
    est = estimate(config)
    assert est.fits and 0 < est.ttft_s < est.batch_latency_s and est.tpot_s > 0


# ---- prefill schedule ----------------------------------------------------------------------------
@pytest.mark.parametrize(("batch", "prompt"), [(1, 100), (7, 1000), (3, 2731), (2, 20_000), (50, 8192), (5, 8191)])
def test_chunked_prefill_fills_every_step_to_the_budget(make_config, batch, prompt):
    config = make_config(batch=batch, input_tokens=prompt, output_tokens=4)
    budget = config.step_token_budget
    steps = prefill_schedule(config)
    tokens = [shape.new_tokens for shape, _ in steps]
    assert sum(tokens) == batch * prompt and sum(done for _, done in steps) == batch
    assert all(t == budget for t in tokens[:-1]) and 0 < tokens[-1] <= budget
    assert len(steps) == math.ceil(batch * prompt / budget)
    # Attention work is the same however the prompts are cut: each prompt's triangle.
    assert sum(shape.attended_tokens for shape, _ in steps) == pytest.approx(batch * prompt * (prompt + 1) / 2)


def test_chunked_prefill_step_holds_the_prompt_pieces(make_config):
    config = make_config(batch=3, input_tokens=3000, output_tokens=4, max_num_batched_tokens=8192)
    (first, done1), (second, done2) = prefill_schedule(config)
    # Step 1: prompts 1 and 2 whole, then 2192 tokens of prompt 3; step 2: its last 808 tokens.
    assert (first.new_tokens, first.sequences, done1) == (8192, 3, 2)
    assert first.kv_read_tokens == 0 and first.attended_tokens == 2 * 3000 * 3001 / 2 + 2192 * 2193 / 2
    assert (second.new_tokens, second.sequences, done2) == (808, 1, 1)
    assert second.kv_read_tokens == 2192 and second.attended_tokens == 808 * 2192 + 808 * 809 / 2


def test_whole_prefill_packs_whole_prompts(make_config):
    config = make_config(framework="tensorrt-llm", batch=5, input_tokens=3000, output_tokens=4)
    assert config.framework.prefill_mode == "whole"
    steps = prefill_schedule(config)
    assert [(s.new_tokens, s.sequences, done) for s, done in steps] == [(6000, 2, 2), (6000, 2, 2), (3000, 1, 1)]
    long = prefill_schedule(dataclasses.replace(config, batch=2, input_tokens=20_000))
    assert [(s.new_tokens, done) for s, done in long] == [(20_000, 1), (20_000, 1)]  # never split


def test_ttft_means_over_the_batch(make_config):
    config = make_config(framework="tensorrt-llm", batch=3, input_tokens=3000, output_tokens=4)
    t2 = step_time(config, StepShape.prefill_chunk(2, 3000), pipeline_fill=True).time_s
    t1 = step_time(config, StepShape.prefill_chunk(1, 3000), pipeline_fill=True).time_s
    assert estimate(config).ttft_s == pytest.approx((2 * t2 + (t2 + t1)) / 3, rel=1e-12)


def test_longer_prompts_do_not_lower_chunked_ttft(make_config):
    # Regression: chunked prefill used to pack whole prompts, so 3 prompts of 2730 tokens
    # (one 8190-token step) had a 22% higher mean TTFT than 3 prompts of 2731 (2 steps).
    config = make_config(batch=3, input_tokens=2730, output_tokens=16)
    assert estimate(dataclasses.replace(config, input_tokens=2731)).ttft_s >= estimate(config).ttft_s
