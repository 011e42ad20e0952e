"""End-to-end curve fit: it recovers curves planted in synthetic measurements, leave-one-LLM-out never trains on the
held-out LLM, and the shipped MI300X curves meet the bias target on the measured rows they were fitted on."""

from __future__ import annotations

from dataclasses import replace

import pytest

from guide_opt.catalog import kernel_profile_for, load_kernel_profiles
from guide_opt.validation.accuracy import evaluate, measurement_config, predicted_metrics
from guide_opt.validation.calibration import prepare_rows
from guide_opt.validation.datasets import Measurement, load_llm_inference_bench_prefill, load_source
from guide_opt.validation.profile_fit import (
    EndToEndParams,
    apply_params,
    batch_latency_quality,
    fit_end_to_end,
    leave_one_llm_out,
    with_gpu_kernels,
)

#: Planted curves of the synthetic MI300X: a slow compute path, 60% of HBM, 12 us per kernel, a 25 us / 30% all-reduce.
PLANTED = EndToEndParams(compute_scale=0.1, half_tokens=20.0, hbm_fraction=0.6, kernel_latency_us=12.0, all_reduce_latency_us=25.0,
                         all_reduce_bus_fraction=0.3)


@pytest.fixture(scope="module")
def base(catalog):
    """The curves MI300X gets without a file of its own (the fit's starting point)."""
    return kernel_profile_for(catalog.gpu("mi300x"), load_kernel_profiles(), own=False)


def _rows(catalog, base, params) -> list[Measurement]:
    """Static batches 'measured' on MI300X carrying ``params`` (llama-2-7b and llama-3.1-8b, TP 1/2/4, batch 1/16/64, 512 + 128 tokens)."""
    truth = with_gpu_kernels(catalog, "mi300x", apply_params(base, params))
    rows = []
    for llm in ("llama-2-7b", "llama-3.1-8b"):
        for tp in (1, 2, 4):
            for batch in (1, 16, 64):
                m = Measurement("synthetic", llm, "mi300x", "vllm", "bf16", tp, batch, 512, 128, {})
                value = predicted_metrics(measurement_config(m, truth))["batch_latency_s"]
                rows.append(Measurement("synthetic", llm, "mi300x", "vllm", "bf16", tp, batch, 512, 128, {"batch_latency_s": value}))
    return rows


def test_fit_recovers_planted_curves(catalog, base):
    # the generic curves start 2-3x away from the planted ones in compute and latency
    prepared = prepare_rows(_rows(catalog, base, PLANTED), catalog)
    fit = fit_end_to_end(prepared, base)
    for name in ("compute_scale", "hbm_fraction", "kernel_latency_us", "all_reduce_latency_us"):
        assert getattr(fit.params, name) == pytest.approx(getattr(PLANTED, name), rel=0.03), name
    assert fit.cost < 1e-4  # 18 rows within about 0.3% each


def test_leave_one_llm_out_predicts_the_held_out_llm_from_the_other(catalog, base):
    rows = _rows(catalog, base, PLANTED)
    # llama-3.1-8b's rows 'measured' twice as slow as the planted curves make them
    doubled = [replace(m, measured={"batch_latency_s": 2 * m.measured["batch_latency_s"]}) if m.llm == "llama-3.1-8b" else m for m in rows]
    held = leave_one_llm_out(prepare_rows(doubled, catalog), base, catalog, "mi300x")
    assert set(held.fits) == {"llama-2-7b", "llama-3.1-8b"}
    by_llm = {llm: batch_latency_quality([c for c in held.comparisons if c.measurement.llm == llm]) for llm in held.fits}
    # llama-3.1-8b held out: fitted on llama-2-7b's true rows alone, so it gets the planted curves and predicts half its doubled rows
    assert held.fits["llama-3.1-8b"].params.hbm_fraction == pytest.approx(PLANTED.hbm_fraction, rel=0.03)
    assert by_llm["llama-3.1-8b"].bias_pct == pytest.approx(-50.0, abs=1.5)
    # llama-2-7b held out: fitted on the doubled rows alone, so it predicts its true rows far too slow
    assert by_llm["llama-2-7b"].bias_pct > 40.0


def test_fit_without_all_reduce_keeps_the_generic_one(catalog, base):
    prepared = [r for r in prepare_rows(_rows(catalog, base, PLANTED), catalog) if r.measurement.tp == 1]
    fit = fit_end_to_end(prepared, base, all_reduce=False)
    assert fit.params.all_reduce_latency_us is None
    assert apply_params(base, fit.params).all_reduce == base.all_reduce


def test_shipped_mi300x_curves_meet_the_bias_target_on_the_measured_rows(catalog, base, data_dir):
    """The 719 MI300X vLLM rows of validation_data/llm_inference_bench (Plots/All_results.csv): with the generic
    curves guide-opt predicted them about twice as fast (bias -55%, RESULTS.md section 1.2); issue 9 asks |bias| <= 15%."""
    rows = [m for m in load_source("llm-inference-bench", catalog, data_dir).rows if m.gpu == "mi300x"]
    shipped = batch_latency_quality(evaluate(rows, catalog).comparisons)
    generic = batch_latency_quality(evaluate(rows, with_gpu_kernels(catalog, "mi300x", base)).comparisons)
    assert shipped.rows == generic.rows == 719
    assert generic.bias_pct < -50.0
    assert abs(shipped.bias_pct) <= 15.0 and shipped.mape_pct <= 25.0


def test_prefill_rows_are_the_whole_batch_for_one_token(catalog, data_dir):
    """Plots/Fig_21/all_results_TTFT.csv, first data row: MI300X, vLLM, Llama-2-7B, 16 prompts of 1024 tokens, 1 output token, 2.2758 s."""
    rows = load_llm_inference_bench_prefill(data_dir, catalog).rows
    first = next(m for m in rows if m.gpu == "mi300x" and m.llm == "llama-2-7b")
    assert (first.batch, first.input_tokens, first.output_tokens, first.tp, first.framework) == (16, 1024, 1, 1, "vllm")
    assert first.measured["batch_latency_s"] == pytest.approx(2.2758256473345684)
    assert {m.gpu for m in rows} == {"mi300x", "h100-sxm", "a100-40gb-sxm"}  # MI250, GH200, SN40L are not in the catalog
