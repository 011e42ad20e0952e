"""Host costs per step: the fit recovers costs planted in synthetic measurements, and held-out scoring never trains on the held-out rows."""

from __future__ import annotations

import pytest

from guide_opt.validation.accuracy import measurement_config, predicted_metrics
from guide_opt.validation.datasets import Measurement, load_source
from guide_opt.validation.host_costs import (
    HostCosts,
    StepResidual,
    fit_host_costs,
    REREAD_EXPONENTS,
    fit_per_framework,
    fitted_rows,
    held_out_comparisons,
    shipped_differences,
    with_factors,
    without_host_costs,
)

#: Planted host costs of the synthetic engine: 50 us per running sequence per step, 0.8 ms per multi-GPU step.
PLANTED_US, PLANTED_MS = 50.0, 0.8
#: Planted KV re-read exponent: each KV head of llama-3.1-8b (4 query heads per KV head) read 4 ** 0.5 = 2 times per step.
PLANTED_EXPONENT = 0.5


def _rows(catalog, costs, exponent: float = PLANTED_EXPONENT) -> list[Measurement]:
    """Static batches 'measured' on the vllm profile carrying ``costs`` and the KV re-read ``exponent``
    (llama-2-7b, one query head per KV head, and llama-3.1-8b, four; A100 80GB, TP 1/2, batch 1-64)."""
    truth = with_factors(catalog, {"vllm": {"sequence_overhead_us": costs[0], "tp_step_overhead_ms": costs[1], "gqa_kv_reread_exponent": exponent}})
    rows = []
    for llm in ("llama-2-7b", "llama-3.1-8b"):
        for tp in (1, 2):
            for batch in (1, 8, 32, 64):
                m = Measurement("synthetic", llm, "a100-80gb-sxm", "vllm", "bf16", tp, batch, 128, 512, {})
                value = predicted_metrics(measurement_config(m, truth))["batch_latency_s"]
                rows.append(Measurement("synthetic", llm, "a100-80gb-sxm", "vllm", "bf16", tp, batch, 128, 512, {"batch_latency_s": value}))
    return rows


def test_fit_of_exact_linear_residuals_is_exact():
    # excess = batch x 0.05 ms + [TP > 1] x 0.8 ms, by hand for four rows
    rows = [Measurement("s", "llama-2-7b", "a100-80gb-sxm", "vllm", "bf16", tp, b, 128, 128, {}) for tp, b in ((1, 1), (1, 64), (2, 1), (2, 16))]
    residuals = [StepResidual(m, m.batch * 0.05 + (0.8 if m.tp > 1 else 0.0)) for m in rows]
    fit = fit_host_costs(residuals)
    assert fit.sequence_overhead_us == pytest.approx(PLANTED_US, rel=1e-6)
    assert fit.tp_step_overhead_ms == pytest.approx(PLANTED_MS, rel=1e-6)


def test_fit_per_framework_recovers_planted_costs(catalog):
    """The fit reads the excess per *decode* step, but the planted costs also lengthen the few prefill steps
    (one per batch of 128-token prompts against 511 decode steps), so the fit sits within 2% above the truth."""
    fit = fit_per_framework(_rows(catalog, (PLANTED_US, PLANTED_MS)), catalog)["vllm"]
    assert PLANTED_US <= fit.sequence_overhead_us <= PLANTED_US * 1.02
    assert PLANTED_MS <= fit.tp_step_overhead_ms <= PLANTED_MS * 1.02
    assert fit.gqa_kv_reread_exponent == PLANTED_EXPONENT


@pytest.mark.parametrize("planted", [0.0, 1.0])
def test_fit_recovers_the_planted_reread_exponent(catalog, planted):
    """Re-reading the KV cache lengthens llama-3.1-8b's steps by an amount that grows with the context, which no cost per
    sequence or per step reproduces: the fit keeps the exponent the rows were made with, at either end of the grid."""
    assert planted in REREAD_EXPONENTS
    assert fit_per_framework(_rows(catalog, (PLANTED_US, PLANTED_MS), planted), catalog)["vllm"].gqa_kv_reread_exponent == planted


def test_without_host_costs_leaves_the_cached_catalog_alone(catalog):
    shipped = catalog.frameworks["vllm"].efficiency
    bare = without_host_costs(catalog, ["vllm"])
    assert bare.frameworks["vllm"].efficiency.sequence_overhead_us == 0.0
    assert catalog.frameworks["vllm"].efficiency == shipped


def test_held_out_llm_is_predicted_with_costs_fitted_without_it(catalog):
    # exponent 0: with llama-3.1-8b held out, llama-2-7b's rows (one query head per KV head) cannot show any other
    rows = _rows(catalog, (PLANTED_US, PLANTED_MS), 0.0)
    comparisons, fits = held_out_comparisons(rows, catalog, "llm")
    assert set(fits) == {"llama-2-7b", "llama-3.1-8b"}
    assert fits["llama-2-7b"]["vllm"].rows == 8  # only the other LLM's 8 rows
    assert len(comparisons) == len(rows)
    # the planted costs are the same for both LLMs, so each held-out LLM is predicted within 1%
    assert all(c.ape_percent < 1.0 for c in comparisons)


def test_the_shipped_host_costs_are_the_fit_on_llm_inference_bench(catalog, data_dir):
    """vllm.yaml's and tensorrt-llm.yaml's host costs and re-read exponents are what fit_per_framework gives on
    LLM-Inference-Bench's A100/H100 rows (validation_data/llm_inference_bench) at their shipped rounding, so a refit of
    the kernel curves that moves the fit cannot leave the shipped defaults behind unnoticed; deepspeed-fastgen, not
    measured, carries vllm's values (deepspeed-fastgen.yaml, sources: host_costs)."""
    rows = fitted_rows(load_source("llm-inference-bench", catalog, data_dir).rows)
    fits = fit_per_framework(rows, catalog)
    assert set(fits) == {"vllm", "tensorrt-llm"}
    assert shipped_differences(catalog, fits) == {}
    vllm, fastgen = catalog.framework("vllm").efficiency, catalog.framework("deepspeed-fastgen").efficiency
    assert (fastgen.sequence_overhead_us, fastgen.tp_step_overhead_ms, fastgen.gqa_kv_reread_exponent) == \
        (vllm.sequence_overhead_us, vllm.tp_step_overhead_ms, vllm.gqa_kv_reread_exponent)


def test_a_shipped_cost_off_its_fit_by_more_than_its_rounding_is_named(catalog):
    """shipped_differences names exactly the factors beyond SHIPPED_ROUNDING: against a hand-made fit 1 us and 0.02 ms
    from vllm.yaml's shipped costs only the per-sequence cost is reported (0.5 us and 0.025 ms are the halves of the
    shipped steps)."""
    shipped = catalog.framework("vllm").efficiency
    fit = HostCosts(shipped.sequence_overhead_us + 1.0, shipped.tp_step_overhead_ms + 0.02, 100, shipped.gqa_kv_reread_exponent)
    assert shipped_differences(catalog, {"vllm": fit}) == {"vllm": [("sequence_overhead_us", shipped.sequence_overhead_us, fit.sequence_overhead_us)]}
