"""Predicted vs measured: error statistics, grouping, the closed-loop reading, skipped rows."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from guide_opt.validation.accuracy import (
    NOT_FITTING,
    AccuracyRow,
    Comparison,
    error_stats,
    evaluate,
    measurement_config,
    predicted_metrics,
    summarize,
)
from guide_opt.validation.datasets import Measurement


def _row(**fields) -> Measurement:
    base = dict(source="test", llm="llama-2-7b", gpu="a100-80gb-sxm", framework="vllm", quantization="bf16", tp=1, batch=8,
                input_tokens=512, output_tokens=128, measured={})
    return Measurement(**{**base, **fields})


def test_error_stats_by_hand():
    m = _row()
    comps = [Comparison(m, "tpot_ms", p, 10.0) for p in (11.0, 8.0, 10.0, 14.0)]  # errors +10, -20, 0, +40 %
    mape, median_ape, bias = error_stats(comps)
    assert mape == pytest.approx(17.5)
    assert median_ape == pytest.approx(15.0)
    assert bias == pytest.approx(7.5)


def test_perfect_and_scaled_measurements(catalog, need):
    need("llms", "llama-2-7b")
    shapes = [dict(batch=b, input_tokens=i) for b in (1, 16) for i in (128, 1024)]
    exact = []
    for shape in shapes:
        predicted = predicted_metrics(measurement_config(_row(**shape), catalog))
        exact.append(_row(**shape, measured=dict(predicted)))
    result = evaluate(exact, catalog)
    assert len(result.comparisons) == 4 * len(shapes)
    assert all(r.mape == pytest.approx(0, abs=1e-9) and r.bias == pytest.approx(0, abs=1e-9) for r in summarize(result.comparisons))
    # measured 25% above every prediction: |pred - 1.25 p| / 1.25 p = 20 %, predictions too low
    slow = [replace(m, measured={k: 1.25 * v for k, v in m.measured.items()}) for m in exact]
    rows = summarize(evaluate(slow, catalog).comparisons)
    assert {r.metric for r in rows} == {"ttft_ms", "tpot_ms", "batch_latency_s", "throughput_tokens_per_s"}
    for r in rows:
        assert r.mape == pytest.approx(20.0) and r.median_ape == pytest.approx(20.0) and r.bias == pytest.approx(-20.0)
        assert r.count == len(shapes)


def test_calibration_mapping_changes_predictions(catalog, need):
    need("llms", "llama-2-7b")
    from guide_opt.frameworks import EfficiencyFactors

    m = _row(measured={"tpot_ms": 10.0})
    slow = EfficiencyFactors(compute_efficiency=0.3, memory_efficiency=0.4, communication_efficiency=0.5, step_overhead_ms=5.0)
    default = evaluate([m], catalog).comparisons[0].predicted
    calibrated = evaluate([m], catalog, {("a100-80gb-sxm", "vllm"): slow}).comparisons[0].predicted
    other_pair = evaluate([m], catalog, {("h100-sxm", "vllm"): slow}).comparisons[0].predicted
    assert calibrated > 1.5 * default
    assert other_pair == default


def test_closed_loop_reads_cycle_time_per_token(catalog, need):
    need("llms", "llama-2-7b")
    config = measurement_config(_row(batch=32, input_tokens=120, output_tokens=20), catalog)
    static = predicted_metrics(config)
    loop = predicted_metrics(config, closed_loop=True)
    assert loop["tpot_ms"] == pytest.approx(static["batch_latency_s"] * 1e3 / 20)
    assert loop["tpot_ms"] > static["tpot_ms"]  # the prefills of returning users are part of the cycle
    assert loop["ttft_ms"] == static["ttft_ms"]


def test_rows_that_do_not_fit_are_counted(catalog, need):
    need("llms", "llama-2-70b")
    rows = [_row(llm="llama-2-70b", measured={"tpot_ms": 30.0}), _row(measured={"tpot_ms": 10.0})]
    result = evaluate(rows, catalog)
    assert result.skipped[NOT_FITTING] == 1  # 140 GB of weights on one 80 GB GPU
    assert len(result.comparisons) == 1


def test_summary_groups_and_json_shape():
    a, b = _row(gpu="a100-80gb-sxm"), _row(gpu="h100-sxm")
    comps = [Comparison(a, "ttft_ms", 12, 10), Comparison(b, "ttft_ms", 9, 10), Comparison(a, "tpot_ms", 10, 10)]
    rows = summarize(comps)
    assert [(r.gpu, r.metric, r.count) for r in rows] == [("a100-80gb-sxm", "ttft_ms", 1), ("a100-80gb-sxm", "tpot_ms", 1), ("h100-sxm", "ttft_ms", 1)]
    pooled = summarize(comps, by_gpu=False)
    ttft = next(r for r in pooled if r.metric == "ttft_ms")
    assert ttft.count == 2 and ttft.mape == pytest.approx(15.0) and ttft.bias == pytest.approx(5.0)
    d = rows[0].as_dict()
    assert set(d) == {"source", "gpu", "metric", "mape", "median_ape", "bias", "count"}
    assert isinstance(AccuracyRow(**d), AccuracyRow) and not math.isnan(d["mape"])
