"""Loaders of measured data: catalog mapping, skip accounting, plausibility filter, user files."""

from __future__ import annotations

import json

import pytest

from guide_opt.errors import InputError
from guide_opt.validation.accuracy import measurement_config
from guide_opt.validation.physics import batch_latency_floor_s
from guide_opt.validation.datasets import (
    METRICS,
    SOURCES,
    load_llm_inference_bench,
    load_llm_pilot,
    load_lmdeploy,
    load_source,
    load_trtllm_perf,
    load_user_csv,
    load_user_data,
    load_vllm_bench_json,
)


def test_every_source_loads_rows_with_known_metrics(catalog, data_dir):
    for name in SOURCES:
        data = load_source(name, catalog, data_dir)
        assert data.rows, f"{name} produced no usable row"
        for m in data.rows:
            assert set(m.measured) <= set(METRICS)
            assert m.llm in catalog.llms and m.gpu in catalog.gpus and m.framework in catalog.frameworks
            assert m.tp >= 1 and m.batch >= 1 and m.input_tokens >= 1 and m.output_tokens >= 1


def test_unknown_source_is_bad_input(catalog, data_dir):
    with pytest.raises(InputError, match="unknown source"):
        load_source("nope", catalog, data_dir)


def test_lmdeploy_mapping_and_skips(catalog, need, data_dir):
    need("frameworks", "tensorrt-llm")
    data = load_lmdeploy(data_dir, catalog)
    assert {m.gpu for m in data.rows} == {"a100-80gb-sxm"}
    assert {m.framework for m in data.rows} == {"tensorrt-llm"}
    # 80 transcribed rows: internlm-20b (20) is not in the catalog, the other 60 are usable
    assert len(data.rows) + data.skipped["LLM 'internlm-20b' not in the catalog"] == 80
    one_token = [m for m in data.rows if m.input_tokens == 1]
    assert one_token and all("ttft_ms" not in m.measured and "tpot_ms" in m.measured for m in one_token)
    row = next(m for m in data.rows if m.llm == "llama-2-7b" and m.batch == 1 and m.input_tokens == 128 and m.output_tokens == 128)
    assert row.measured["ttft_ms"] == pytest.approx(22.0) and row.measured["tpot_ms"] == pytest.approx(10.0)


def test_llm_inference_bench_filters(catalog, data_dir):
    data = load_llm_inference_bench(data_dir, catalog)
    assert {m.framework for m in data.rows} <= {"vllm", "tensorrt-llm"}
    assert any("llama.cpp" in reason for reason in data.skipped)
    for m in data.rows:
        assert m.input_tokens == m.output_tokens
        assert m.report_only == frozenset({"throughput_tokens_per_s"})
        lat = m.measured["batch_latency_s"]
        assert m.measured["throughput_tokens_per_s"] == pytest.approx(m.batch * m.output_tokens / lat)
        assert lat >= batch_latency_floor_s(measurement_config(m, catalog), static_batch=True)
    keys = [(m.gpu, m.tp, m.framework, m.llm, m.input_tokens, m.batch) for m in data.rows]
    assert len(keys) == len(set(keys)), "duplicate keys must be merged"
    # Qwen2-7B, TensorRT-LLM on 4 x H100, batch 64, 2,048 / 2,048 tokens, measured in 2.27 s: above the weights alone
    # (2,048 x 7.07 B active parameters x 2 bytes / (4 x 3.35 TB/s) = 2.16 s) but below the weights plus the 64 prompts'
    # KV cache read at every step (28 layers x 1 KV head per GPU x 128 x 2 x 2 bytes x 2,048 tokens x 64 = 1.88 GB per
    # GPU, 0.56 ms per step: 3.31 s in all): a run that stopped early.
    assert not any(m.llm == "qwen2-7b" and m.framework == "tensorrt-llm" and m.tp == 4 and m.batch == 64 and m.input_tokens == 2048
                   for m in data.rows)
    assert any("prompt KV cache" in reason for reason in data.skipped)


def test_a100_form_factor_per_source(catalog, need, data_dir):
    """LLM-Inference-Bench ran on Polaris's NVLink A100 40GB SXM4; LLM-Pilot's A100 is the PCIe card."""
    need("gpus", "a100-40gb-sxm")
    assert catalog.gpus["a100-40gb-sxm"].link_kind == "nvlink" and catalog.gpus["a100-40gb"].link_kind == "pcie"
    bench = load_llm_inference_bench(data_dir, catalog)
    bench_gpus = {m.gpu for m in bench.rows}
    assert "a100-40gb-sxm" in bench_gpus and "a100-40gb" not in bench_gpus
    assert any(m.gpu == "a100-40gb-sxm" and m.tp > 1 for m in bench.rows)
    pilot_a100 = {m.gpu for m in load_llm_pilot(data_dir, catalog).rows if m.gpu.startswith("a100")}
    assert pilot_a100 == {"a100-40gb"}


def test_llm_inference_bench_mistral_and_qwen2_72b_resolve(catalog, need, data_dir):
    need("llms", "mistral-7b")
    need("llms", "qwen2-72b")
    data = load_llm_inference_bench(data_dir, catalog)
    assert not [reason for reason in data.skipped if "Mistral-7B" in reason or "Qwen2-72B" in reason]
    llms = {m.llm for m in data.rows}
    assert {"mistral-7b", "qwen2-72b"} <= llms
    # Qwen2-72B (145 GB of bf16 weights): its vLLM / TensorRT-LLM rows are 4 x H100 only
    assert {(m.gpu, m.tp) for m in data.rows if m.llm == "qwen2-72b"} == {("h100-sxm", 4)}


def test_plausibility_floor_drops_early_stopped_runs(catalog, need, data_dir):
    need("llms", "qwen2-7b")
    need("gpus", "h100-sxm")
    data = load_llm_inference_bench(data_dir, catalog)
    # batch 1, ISL = OSL = 2048 in 0.05-0.08 s: 2047 decode steps cannot each read 15 GB of weights that fast
    assert not [m for m in data.rows if m.llm == "qwen2-7b" and m.gpu == "h100-sxm" and m.framework == "tensorrt-llm"
                and m.input_tokens == 2048 and m.batch == 1]
    assert sum(v for k, v in data.skipped.items() if "physically impossible" in k) >= 11


def test_llm_pilot_is_decoder_only_closed_loop(catalog, data_dir):
    data = load_llm_pilot(data_dir, catalog)
    assert data.skipped["encoder-decoder LLM (out of scope for a decoder-only model)"] == 240
    assert all(m.closed_loop and m.framework == "vllm" for m in data.rows)
    assert {m.batch for m in data.rows} <= {1, 2, 4, 8, 16, 32, 64, 128}
    mpt = [m for m in data.rows if m.llm == "mpt-7b"]
    assert mpt and not any(m.flash_attention for m in mpt)  # llm_features.csv: no flash attention


def test_trtllm_perf_keeps_static_tables_only(catalog, data_dir):
    data = load_trtllm_perf(data_dir, catalog)
    assert data.skipped["in-flight-batching max-throughput table (the trtllm-serving source)"] > 0
    assert not any(m.offline for m in data.rows)
    ttft = [m for m in data.rows if "ttft_ms" in m.measured]
    assert ttft and all(m.batch == 1 for m in ttft)


def test_trtllm_perf_fp8_rows_hold_an_fp8_kv_cache(catalog, data_dir):
    # The release-0.5 tables' FP8 engines were built with --enable_fp8 --fp8_kv_cache (TensorRT-LLM's
    # docs/source/performance.md). Independent check: the L40S row "LLaMA 7B, batch 64, 128 in / 2048 out"
    # cannot have run with a 16-bit cache -- 64 x 2176 tokens x 32 layers x 2 x 4096 x 2 bytes = 68 GiB
    # of KV cache (hand computation) on a 48 GB card -- but fits in 34 GiB at one byte per element.
    from guide_opt.validation.accuracy import measurement_config

    data = load_trtllm_perf(data_dir, catalog)
    assert {m.kv_cache_dtype for m in data.rows if m.quantization == "fp8"} == {"fp8"}
    assert {m.kv_cache_dtype for m in data.rows if m.quantization == "bf16"} == {"fp16"}
    row = next(m for m in data.rows if m.gpu == "l40s" and m.batch == 64 and m.output_tokens == 2048)
    config = measurement_config(row, catalog)
    assert config.kv_bytes_per_token * 64 * 2176 / 2**30 == 34.0
    assert config.kv_cache_dtype == "fp8"


CSV_HEADER = "model,gpu,framework,tp,batch,input_tokens,output_tokens,ttft_ms,tpot_ms\n"


def test_user_csv(tmp_path, catalog, need):
    need("llms", "llama-2-7b")
    path = tmp_path / "bench.csv"
    path.write_text(CSV_HEADER + "llama-2-7b,a100-80gb-sxm,vllm,1,8,512,128,80.5,11.2\nllama-2-7b,a100-80gb-sxm,vllm,1,16,512,128,,12.0\n")
    data = load_user_data(path, catalog)
    assert [m.measured for m in data.rows] == [{"ttft_ms": 80.5, "tpot_ms": 11.2}, {"tpot_ms": 12.0}]
    assert data.rows[0].batch == 8 and data.rows[0].quantization == "bf16" and not data.rows[0].closed_loop


@pytest.mark.parametrize(
    "body, match",
    [
        ("model,gpu,tp,batch,input_tokens,output_tokens,ttft_ms\n", "missing column"),
        (CSV_HEADER + "llama-2-7bb,a100-80gb-sxm,vllm,1,8,512,128,80,11\n", "line 2: model"),
        (CSV_HEADER + "llama-2-7b,a100-80gb-sxm,vllm,one,8,512,128,80,11\n", "line 2: tp"),
        (CSV_HEADER + "llama-2-7b,a100-80gb-sxm,vllm,1,8,512,128,fast,11\n", "line 2: ttft_ms"),
    ],
)
def test_user_csv_errors_name_the_cell(tmp_path, catalog, need, body, match):
    need("llms", "llama-2-7b")
    path = tmp_path / "bad.csv"
    path.write_text(body)
    with pytest.raises(InputError, match=match):
        load_user_csv(path, catalog)


def _vllm_result(**extra) -> dict:
    return {"date": "20250101-000000", "backend": "vllm", "model_id": "meta-llama/Llama-2-7b-hf", "num_prompts": 200, "request_rate": "inf",
            "max_concurrency": 16, "duration": 60.0, "completed": 200, "total_input_tokens": 200 * 512, "total_output_tokens": 200 * 128,
            "output_throughput": 1500.0, "mean_ttft_ms": 90.0, "median_ttft_ms": 85.0, "mean_tpot_ms": 12.5, "median_tpot_ms": 12.0, **extra}


def test_vllm_bench_json(tmp_path, catalog, need):
    need("llms", "llama-2-7b")
    path = tmp_path / "run.json"
    path.write_text(json.dumps(_vllm_result(gpu="a100-80gb-sxm", tp="2")))
    (m,) = load_vllm_bench_json(path, catalog).rows
    assert (m.llm, m.gpu, m.tp, m.batch, m.input_tokens, m.output_tokens) == ("llama-2-7b", "a100-80gb-sxm", 2, 16, 512, 128)
    assert m.measured == {"ttft_ms": 90.0, "tpot_ms": 12.5, "throughput_tokens_per_s": 1500.0}
    assert m.closed_loop  # 200 prompts through 16 slots: a closed loop of 16 users
    (m,) = load_vllm_bench_json(path, catalog, tp=4, gpu="h100-sxm").rows  # options win over metadata
    assert (m.gpu, m.tp) == ("h100-sxm", 4)


def test_vllm_bench_json_lines_and_errors(tmp_path, catalog, need):
    need("llms", "llama-2-7b")
    path = tmp_path / "runs.jsonl"
    path.write_text(json.dumps(_vllm_result(max_concurrency=8)) + "\n" + json.dumps(_vllm_result(max_concurrency=32)) + "\n")
    assert [m.batch for m in load_vllm_bench_json(path, catalog, gpu="a100-80gb-sxm").rows] == [8, 32]
    with pytest.raises(InputError, match="--gpu"):
        load_vllm_bench_json(path, catalog)
    poisson = tmp_path / "poisson.json"
    poisson.write_text(json.dumps(_vllm_result(max_concurrency=None, request_rate=4.0)))
    with pytest.raises(InputError, match="--batch"):
        load_vllm_bench_json(poisson, catalog, gpu="a100-80gb-sxm")
