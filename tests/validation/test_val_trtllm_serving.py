"""TensorRT-LLM's in-flight-batching max-throughput tables: trtllm-bench's engine sizing and the offline prediction."""

from __future__ import annotations

import dataclasses

import pytest

from guide_opt.perf.memory import max_batch
from guide_opt.simulate import FixedLengths, Workload, simulate
from guide_opt.validation.accuracy import evaluate, measurement_config, offline_throughput_metrics
from guide_opt.validation.datasets import load_trtllm_serving
from guide_opt.validation.trtllm_bench import engine_settings, tuned_settings


@pytest.fixture(scope="module")
def serving(catalog, data_dir):
    return load_trtllm_serving(data_dir, catalog)


@pytest.mark.parametrize(("requests", "isl", "osl", "expected"), [
    # By hand from trtllm-bench's finetune_setting (tensorrt_llm/bench/build/tuning.py):
    # 1,113.4 requests >= 1,024 -> 256 x ceil(4.35) = 1,280; tokens 1,113.4 x 2 = 2,226.8 < 4,096 -> 256 x 9 = 2,304.
    (1113.4, 128, 128, (1280, 2304)),
    # 40 requests < 256 -> max(64, 32 x 2) = 64; tokens 40 x (1 + 2048 / 128) = 680 -> the 2,048 floor.
    (40.0, 2048, 128, (64, 2048)),
    # 300 requests -> 128 x 3 = 384; tokens 300 x 2 = 600 -> 2,048.
    (300.0, 500, 500, (384, 2048)),
    # 10,000 requests -> the 4,096 cap; tokens 4,096 x 11 -> the 32,768 cap (1,024 x 32).
    (10000.0, 20000, 2000, (4096, 32768)),
    # 2,600 requests -> 256 x ceil(10.16) = 2,816; tokens 2,600 x 2.5 = 6,500 < 8,192 -> 512 x 13 = 6,656.
    (2600.0, 1500, 1000, (2816, 6656)),
])
def test_tuned_settings_follow_trtllm_bench_rounding(requests, isl, osl, expected):
    assert tuned_settings(requests, isl, osl) == expected


def test_engine_settings_of_llama_3_1_8b_fp8_on_one_h100(catalog):
    # By hand from calc_engine_setting: an FP8 cache holds 2 x 32 layers x 8 KV heads x 128 x 1 byte
    # = 65,536 bytes per token; the engine is 8.03 billion parameters x 1 byte = 8.03 GB (Meta's
    # published count); 0.95 x (80 GiB - 8.03) / 65,536 B per token / 256 tokens = 4,376 requests,
    # above the 4,096 cap; tokens 4,096 x 2 = 8,192 (512 x 16).
    llm = catalog.llms["llama-3.1-8b"]
    assert llm.total_params == pytest.approx(8.03e9, rel=0.01)
    settings = engine_settings(llm, catalog.gpus["h100-sxm"], tp=1, pp=1, fp8_weights=True, kv_cache_dtype="fp8",
                               input_tokens=128, output_tokens=128)
    assert settings.kv_cache_max_requests == pytest.approx(0.95 * (80 - 8.03) * 2**30 / 65536 / 256, rel=0.01)
    assert (settings.max_batch_size, settings.max_num_tokens) == (4096, 8192)


def test_serving_rows_are_offline_throughput_runs(serving, catalog):
    assert serving.rows
    for m in serving.rows:
        assert m.offline and set(m.measured) == {"throughput_tokens_per_s"} and m.report_only == {"throughput_tokens_per_s"}
        assert m.framework == "tensorrt-llm" and m.batch >= 64 and m.max_num_batched_tokens >= 2048
        assert m.input_tokens + m.output_tokens <= catalog.llms[m.llm].max_position_embeddings
        # "If you specify FP8 quantization, the KV cache will automatically be set to FP8 as well"
        assert m.kv_cache_dtype == ("fp8" if m.quantization == "fp8" else "fp16")
    assert {m.gpu for m in serving.rows} == {"h100-sxm", "h200", "a100-80gb-sxm", "l40s"}
    assert serving.skipped["precision FP4 not modelled"] > 0
    assert serving.skipped["GPU 'GH200 120GB' not in the catalog"] > 0
    # Llama-2-70B (4,096-token context) was measured at 5,000 + 500 tokens.
    assert serving.skipped["input + output tokens exceed the LLM's context (the planner refuses such requests)"] > 0


@pytest.mark.parametrize("key", [
    "LLaMA v3.1 8B H100 80GB HBM3 FP16 tp1 2048/128 v0.13.0",  # prefill-bound: one 2,048-token prompt per 4,096-token step
    "LLaMA v3.1 8B H100 80GB HBM3 FP8 tp1 1000/1000 v0.13.0",  # decode-bound, the KV cache binds the running requests
    "LLaMA v2 70B H100 80GB HBM3 FP16 tp8 128/2048 v0.13.0",
])
def test_offline_throughput_agrees_with_a_simulated_offline_run(serving, catalog, key):
    # Expected: the simulator playing the run itself -- 3 x the running requests queued at once,
    # served with the same max batch, token budget and KV cache -- an independent implementation
    # of the engine rules. The model leaves out filling and draining the engine (about 2%).
    row = next(m for m in serving.rows if m.key == key)
    config = measurement_config(row, catalog)
    running = min(config.batch, max_batch(config))
    predicted = offline_throughput_metrics(config, steady=True)["throughput_tokens_per_s"]
    sim = simulate(dataclasses.replace(config, batch=running), Workload.burst(FixedLengths(row.input_tokens, row.output_tokens)),
                   max_num_seqs=running, max_num_batched_tokens=config.step_token_budget, num_requests=3 * running)
    assert predicted == pytest.approx(sim.throughput_tokens_per_s, rel=0.04)


def test_static_and_steady_readings_are_both_offered(serving, catalog):
    rows = [m for m in serving.rows if m.llm == "llama-3.1-8b" and m.gpu == "h100-sxm"][:6]
    static = evaluate(rows, catalog, serving="static").comparisons
    steady = evaluate(rows, catalog, serving="steady_state").comparisons
    assert len(static) == len(steady) == len(rows)
    assert all(c.metric == "throughput_tokens_per_s" for c in static + steady)
