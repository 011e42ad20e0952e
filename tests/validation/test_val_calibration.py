"""Calibration: a round trip through a synthetic benchmark CSV, the YAML file, intervals, the build_config hook."""

from __future__ import annotations

import csv
import math
import random
from dataclasses import replace
from pathlib import Path

import pytest

from guide_opt.errors import InputError
from guide_opt.frameworks import EfficiencyFactors
from guide_opt.validation.accuracy import error_stats, measurement_config, predicted_metrics
from guide_opt.validation.calibration import (
    Calibration,
    CalibrationEntry,
    calibrate,
    interval,
    load_calibration,
    margin_factor,
    save_calibration,
)
from guide_opt.validation.datasets import Measurement, load_user_csv

#: The "true" engine behind the synthetic benchmark: far from the vllm defaults (0.6, 0.8, 0.7, 1 ms).
TRUE_FACTORS = EfficiencyFactors(compute_efficiency=0.42, memory_efficiency=0.62, communication_efficiency=0.35, step_overhead_ms=4.0)
LLMS = ("llama-2-7b", "llama-2-13b", "llama-3.1-8b", "qwen2-7b")
NOISE_SIGMA = 0.03


def _true_factors(catalog) -> EfficiencyFactors:
    """TRUE_FACTORS with the vllm profile's host costs and KV re-read exponent, which calibrate keeps rather than fits."""
    shipped = catalog.frameworks["vllm"].efficiency
    return TRUE_FACTORS.model_copy(update={"sequence_overhead_us": shipped.sequence_overhead_us, "tp_step_overhead_ms": shipped.tp_step_overhead_ms,
                                           "gqa_kv_reread_exponent": shipped.gqa_kv_reread_exponent})


def write_synthetic_csv(path: Path, catalog) -> Path:
    """Benchmarks 'measured' on an engine with TRUE_FACTORS plus 3 % log-normal noise."""
    rng = random.Random(7)
    with open(path, "w", newline="") as handle:
        out = csv.writer(handle)
        out.writerow(["model", "gpu", "framework", "tp", "batch", "input_tokens", "output_tokens", "ttft_ms", "tpot_ms", "batch_latency_s"])
        for llm in LLMS:
            for tp in (1, 2):
                for batch in (1, 8, 32):
                    for isl in (128, 1024):
                        m = Measurement("synthetic", llm, "a100-80gb-sxm", "vllm", "bf16", tp, batch, isl, 128, {})
                        p = predicted_metrics(measurement_config(m, catalog, _true_factors(catalog)))
                        noisy = {k: p[k] * math.exp(rng.gauss(0, NOISE_SIGMA)) for k in ("ttft_ms", "tpot_ms", "batch_latency_s")}
                        out.writerow([llm, "a100-80gb-sxm", "vllm", tp, batch, isl, 128, noisy["ttft_ms"], noisy["tpot_ms"], noisy["batch_latency_s"]])
    return path


@pytest.fixture(scope="module")
def round_trip(catalog, tmp_path_factory):
    assert set(LLMS) <= set(catalog.llms), "the synthetic benchmark's LLMs must be in hardware_db/"
    path = write_synthetic_csv(tmp_path_factory.mktemp("cal") / "bench.csv", catalog)
    rows = load_user_csv(path, catalog).rows
    return path, rows, calibrate(rows, catalog, data_labels=[str(path)])


def test_round_trip_recovers_the_engine(round_trip):
    _path, rows, run = round_trip
    (entry,) = run.calibration.entries
    assert (entry.gpu, entry.framework, entry.rows) == ("a100-80gb-sxm", "vllm", len(rows))
    f = entry.efficiency
    assert f.memory_efficiency == pytest.approx(TRUE_FACTORS.memory_efficiency, rel=0.1)
    assert f.compute_efficiency == pytest.approx(TRUE_FACTORS.compute_efficiency, rel=0.15)
    assert f.step_overhead_ms == pytest.approx(TRUE_FACTORS.step_overhead_ms, abs=1.5)
    # the host costs and the re-read exponent are not fitted: they stay vllm.yaml's (68 us per sequence, 1.0 ms per
    # multi-GPU step, exponent 0.375)
    assert (f.sequence_overhead_us, f.tp_step_overhead_ms, f.gqa_kv_reread_exponent) == (68.0, 1.0, 0.375)
    for metric, before in entry.mape_before.items():
        assert entry.mape_after[metric] < min(before, 6.0), metric


def test_held_out_rows_fit_better_after_calibration(round_trip):
    _path, _rows, run = round_trip
    held = run.held_out
    assert held is not None and not held.no_training_rows
    assert {c.measurement.llm for c in held.calibrated} == set(LLMS)
    for metric in ("ttft_ms", "tpot_ms", "batch_latency_s"):
        before = error_stats([c for c in held.default if c.metric == metric])[0]
        after = error_stats([c for c in held.calibrated if c.metric == metric])[0]
        assert after < 0.5 * before and after < 8.0, (metric, before, after)
    assert run.calibration.residual_kind == "leave-one-llm-out"


def test_calibration_file_round_trip(round_trip, tmp_path):
    _path, _rows, run = round_trip
    out = tmp_path / "cal.yaml"
    save_calibration(run.calibration, out)
    loaded = load_calibration(out)
    assert loaded == run.calibration
    assert loaded.factors_for("a100-80gb-sxm", "vllm") == run.calibration.entries[0].efficiency
    assert loaded.factors_for("h100-sxm", "vllm") is None
    # residuals of 3 % noise: the 10th-90th percentile band is narrow and contains 1
    assert 0.85 < margin_factor(loaded, "tpot_ms", 0.1) <= 1.0 <= margin_factor(loaded, "tpot_ms", 0.9) < 1.15


def test_bad_calibration_file_is_bad_input(tmp_path):
    path = tmp_path / "cal.yaml"
    path.write_text("format: guide-opt-calibration/1\nentries: []\nsurprise: 1\n")
    with pytest.raises(InputError, match="surprise"):
        load_calibration(path)
    with pytest.raises(InputError, match="not found"):
        load_calibration(tmp_path / "missing.yaml")


def _calibration(quantiles: dict[float, float]) -> Calibration:
    factors = EfficiencyFactors(compute_efficiency=0.5, memory_efficiency=0.5, communication_efficiency=0.5, step_overhead_ms=2.0)
    return Calibration(entries=[CalibrationEntry(gpu="a100-80gb-sxm", framework="vllm", efficiency=factors, rows=3)],
                       residual_kind="in-sample", residual_quantiles={"ttft_ms": quantiles})


def test_interval_and_margin():
    cal = _calibration({0.1: math.log(0.8), 0.5: 0.0, 0.9: math.log(1.5)})
    assert interval(cal, "ttft_ms", 200.0, 0.9) == pytest.approx(300.0)
    assert cal.interval("ttft_ms", 200.0, 0.1) == pytest.approx(160.0)
    assert margin_factor(cal, "ttft_ms", 0.5) == pytest.approx(1.0)
    assert margin_factor(cal, "ttft_ms", 0.7) == pytest.approx(math.exp(0.5 * math.log(1.5)))  # linear between stored quantiles
    assert margin_factor(None, "ttft_ms", 0.9) == 1.0
    with pytest.raises(ValueError, match="outside"):
        margin_factor(cal, "ttft_ms", 0.99)
    with pytest.raises(ValueError, match="no residuals for tpot_ms"):
        margin_factor(cal, "tpot_ms", 0.9)


def test_build_config_hook(catalog, need):
    need("llms", "llama-2-7b")
    from guide_opt.cli.common import build_config

    cal = _calibration({0.5: 0.0})
    plain = build_config(model="llama-2-7b", gpu="a100-80gb-sxm")
    assert plain.efficiency is None
    hooked = build_config(model="llama-2-7b", gpu="a100-80gb-sxm", calibration=cal)
    assert hooked.efficiency == cal.entries[0].efficiency and hooked.factors.step_overhead_ms == 2.0
    as_mapping = build_config(model="llama-2-7b", gpu="a100-80gb-sxm", calibration=cal.factors_map())
    assert as_mapping.efficiency == hooked.efficiency
    other = build_config(model="llama-2-7b", gpu="a100-80gb-sxm", framework="sglang" if "sglang" in catalog.frameworks else "vllm", calibration=cal)
    if other.framework.id != "vllm":
        assert other.efficiency is None
    assert replace(plain, efficiency=hooked.efficiency) == hooked


# ---- physics checks ---------------------------------------------------------------------------
#: Llama-2-7B on one A100-80GB SXM in bf16: 6,607,077,376 active parameters x 2 bytes / 2,039 GB/s
#: (hardware_db/gpus/a100-80gb-sxm.yaml) = 6.48 ms to stream the weights once, the floor of any TPOT.
LLAMA2_7B_A100_FLOOR_MS = 6_607_077_376 * 2 / 2039e9 * 1e3


def _row(tpot_ms: float, key: str) -> Measurement:
    return Measurement("mine", "llama-2-7b", "a100-80gb-sxm", "vllm", "bf16", 1, 1, 512, 128, {"tpot_ms": tpot_ms}, key=key)


def test_weight_streaming_floor_by_hand(catalog):
    from guide_opt.validation.physics import weight_stream_time_s

    config = measurement_config(_row(10.0, "a"), catalog)
    assert weight_stream_time_s(config) * 1e3 == pytest.approx(LLAMA2_7B_A100_FLOOR_MS, rel=1e-9)


def test_physically_impossible_rows_are_refused_with_a_count_and_an_example(catalog):
    """0.001 ms per token is 6,000x faster than the weights can be read; 5 s per token is > 100x the model (about 7 ms)."""
    rows = [_row(0.001, "impossible-1"), _row(0.002, "impossible-2"), _row(5000.0, "stalled"),
            _row(LLAMA2_7B_A100_FLOOR_MS * 1.3, "plausible-1"), _row(LLAMA2_7B_A100_FLOOR_MS * 1.5, "plausible-2")]
    run = calibrate(rows, catalog, cross_validate=False)
    refused = {reason: n for reason, n in run.skipped.items() if reason.startswith("refused")}
    too_fast = next(r for r in refused if "faster than streaming the weights" in r)
    too_slow = next(r for r in refused if "slower than the model" in r)
    assert refused[too_fast] == 2 and "impossible-1" in too_fast and "0.001 ms" in too_fast
    assert refused[too_slow] == 1 and "stalled" in too_slow
    assert run.calibration.entries[0].rows == 2  # only the plausible rows were fitted


#: The same LLM's KV cache: 32 layers x 32 KV heads x 128 x 2 (K and V) x 2 bytes = 524,288 bytes per token
#: (Llama-2-7B config.json: no GQA). A static batch of 64 prompts of 2,048 tokens holds 64 x 2,048 of them, and every
#: decode step reads them all: 33.7 ms at 2,039 GB/s, on top of the weights' 6.48 ms.
LLAMA2_7B_KV_READ_MS = 64 * 2048 * 32 * 32 * 128 * 2 * 2 / 2039e9 * 1e3


def test_a_static_batch_faster_than_reading_its_kv_cache_is_refused(catalog):
    """2.0 s for 128 output tokens clears the weights alone (128 x 6.48 ms = 0.83 s) but not weights plus KV cache
    (128 x 40.2 ms = 5.14 s); 6.0 s clears both."""
    from guide_opt.validation.physics import batch_latency_floor_s

    def batch_row(latency_s: float, key: str) -> Measurement:
        return Measurement("mine", "llama-2-7b", "a100-80gb-sxm", "vllm", "bf16", 1, 64, 2048, 128, {"batch_latency_s": latency_s}, key=key)

    floor_s = batch_latency_floor_s(measurement_config(batch_row(1.0, "x"), catalog), static_batch=True)
    assert floor_s * 1e3 == pytest.approx(128 * (LLAMA2_7B_A100_FLOOR_MS + LLAMA2_7B_KV_READ_MS), rel=1e-9)
    closed_loop = measurement_config(batch_row(1.0, "x"), catalog)  # the same 64 users in a closed loop: the weights alone
    assert batch_latency_floor_s(closed_loop, static_batch=False) * 1e3 == pytest.approx(128 * LLAMA2_7B_A100_FLOOR_MS, rel=1e-9)
    rows = [batch_row(2.0, "too-fast"), batch_row(6.0, "plausible-1"), batch_row(7.0, "plausible-2")]
    run = calibrate(rows, catalog, cross_validate=False)
    refused = {reason: n for reason, n in run.skipped.items() if reason.startswith("refused")}
    assert list(refused.values()) == [1] and "too-fast" in next(iter(refused))


def test_a_row_without_a_usable_metric_is_counted_not_dropped(catalog):
    """A row whose only metric is NaN (a load level where every request failed) cannot be fitted; it
    is left out with its own reason, so the report accounts for every row it was given."""
    from guide_opt.validation.calibration import NO_USABLE_METRIC

    rows = [_row(math.nan, "failed-level"), _row(LLAMA2_7B_A100_FLOOR_MS * 1.3, "plausible-1"), _row(LLAMA2_7B_A100_FLOOR_MS * 1.5, "plausible-2")]
    run = calibrate(rows, catalog, cross_validate=False)
    assert run.skipped[NO_USABLE_METRIC] == 1
    assert run.calibration.entries[0].rows == 2


def test_a_file_of_impossible_rows_is_bad_input(catalog):
    with pytest.raises(InputError, match="physically impossible"):
        calibrate([_row(0.001, "a"), _row(0.001, "b")], catalog, cross_validate=False)


def test_calibration_fits_the_all_reduce_latency(catalog):
    """Noise-free rows from an engine whose all-reduce latency is 0.3 x the measured NCCL one (a
    custom small-message all-reduce), with compute 0.8 and memory 0.85: the fit recovers all of them."""
    from guide_opt.validation.calibration import fit_factors, prepare_rows

    truth = catalog.framework("vllm").efficiency.model_copy(update={"collective_latency_scale": 0.3, "memory_efficiency": 0.85, "compute_efficiency": 0.8})
    rows = []
    for tp in (1, 2, 4, 8):
        for batch in (1, 4, 16):
            m = Measurement("synthetic", "llama-3.1-8b", "h100-sxm", "vllm", "bf16", tp, batch, 512, 128, {})
            p = predicted_metrics(measurement_config(m, catalog, truth))
            rows.append(replace(m, measured={k: p[k] for k in ("ttft_ms", "tpot_ms")}))
    fit = fit_factors(prepare_rows(rows, catalog))
    assert fit.factors.collective_latency_scale == pytest.approx(0.3, abs=0.05)
    assert fit.factors.step_overhead_ms == pytest.approx(truth.step_overhead_ms, abs=0.2)
    assert fit.factors.memory_efficiency == pytest.approx(0.85, abs=0.03)
