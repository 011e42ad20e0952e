"""TGIS's eager launch floor and its fitted host costs (:mod:`guide_opt.validation.tgis`, :mod:`guide_opt.validation.tgis_host`)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from guide_opt.frameworks import EagerLaunch
from guide_opt.perf import ServingConfig
from guide_opt.perf.step import StepShape, step_time
from guide_opt.validation import tgis, tgis_host
from guide_opt.validation.datasets import Measurement, load_source


def tgis_config(catalog, llm: str, gpu: str, tp: int, launch: EagerLaunch | None = None) -> ServingConfig:
    framework = catalog.framework("tgis")
    if launch is not None:
        framework = framework.model_copy(update={"eager_launch": launch})
    return ServingConfig(llm=catalog.llms[llm], gpu=catalog.gpus[gpu], framework=framework, quantization=catalog.quantization("bf16"),
                         tp=tp, batch=1, input_tokens=120, output_tokens=20)


def test_a_launch_bound_step_takes_exactly_the_launch_time_plus_the_host_overhead(catalog):
    """llama-7b (32 layers) on 4 x H100, 12 kernels of 25 us per layer and 2 all-reduces of 50 us at TP 4:
    32 x (12 x 25 + 2 x 50) us = 12.8 ms of launches, above the GPU work of one decode step (a few ms), so the
    pass takes 12.8 ms and the step that, plus the step model's host overhead (not overlapped)."""
    config = tgis_config(catalog, "llama-7b", "h100-sxm", 4, EagerLaunch(kernels_per_layer=12, launch_us=25.0, rank_sync_us=50.0))
    shape = StepShape.decode(1, 130)
    gpu = step_time(config, shape)
    assert gpu.time_s - gpu.overhead_s < 12.8e-3  # the premise: launch-bound
    assert tgis.launch_floor_s(config) == pytest.approx(12.8e-3, rel=1e-12)
    assert tgis.eager_step_s(config, shape) == pytest.approx(gpu.overhead_s + 12.8e-3, rel=1e-12)


def test_one_gpu_has_no_rank_synchronisation(catalog):
    """The same launches on 1 x H100: 32 x 12 x 25 us = 9.6 ms, the all-reduce term gone."""
    config = tgis_config(catalog, "llama-7b", "h100-sxm", 1, EagerLaunch(kernels_per_layer=12, launch_us=25.0, rank_sync_us=50.0))
    assert tgis.launch_floor_s(config) == pytest.approx(9.6e-3, rel=1e-12)


def test_a_gpu_bound_step_is_the_step_model_unchanged(catalog):
    """llama-7b on 1 x T4 (~300 GB/s): streaming 13.5 GB of weights takes over 40 ms, far above 32 x 12 x 25 us = 9.6 ms
    of launches, so the host runs ahead and the step is the step model's (GPU work + overhead, not their sum with launches)."""
    config = tgis_config(catalog, "llama-7b", "t4", 1, EagerLaunch(kernels_per_layer=12, launch_us=25.0))
    shape = StepShape.decode(1, 130)
    assert tgis.eager_step_s(config, shape) == step_time(config, shape).time_s


def test_an_engine_without_eager_launch_has_no_floor(catalog):
    """vLLM (CUDA graphs) states no launch block: floor 0, step = the step model's."""
    config = replace(tgis_config(catalog, "llama-7b", "h100-sxm", 4), framework=catalog.framework("vllm"))
    assert tgis.launch_floor_s(config) == 0.0


def _launch_bound_row(catalog, llm: str, tp: int, launch_us: float, sync_us: float) -> Measurement:
    """A one-user row on H100 whose measured ITL is the host overhead + the launch floor of (launch_us, sync_us), by hand."""
    config = tgis_config(catalog, llm, "h100-sxm", tp)
    step = step_time(config, StepShape.decode(1, 120 + 20 / 2))
    floor_ms = config.llm.num_layers * (12 * launch_us + (2 * sync_us if tp > 1 else 0.0)) * 1e-3
    assert step.time_s - step.overhead_s < floor_ms * 1e-3  # launch-bound, so the fit can see the floor
    return Measurement("llm-pilot", llm, "h100-sxm", "tgis", "bf16", tp, 1, 120, 20,
                       {"tpot_ms": step.overhead_s * 1e3 + floor_ms, "ttft_ms": 1.0})


def test_the_launch_fit_recovers_the_times_that_generated_launch_bound_rows(catalog):
    """Rows generated with 30 us per launch and 20 us per all-reduce (TP 1 pins the launch, TP > 1 the sync) are fitted back exactly."""
    rows = [_launch_bound_row(catalog, llm, tp, 30.0, 20.0) for llm, tp in (("llama-7b", 1), ("llama-7b", 2), ("llama-13b", 1), ("llama-13b", 4))]
    assert tgis_host.fit_launch(rows, catalog) == (30.0, 20.0)


def test_the_shipped_launch_and_prefill_host_times_are_the_fit_on_llm_pilot(catalog, data_dir):
    """tgis.yaml's launch_us / rank_sync_us and tgis.PREFILL_HOST_MS are what fit_launch / fit_prefill_host_ms give on
    LLM-Pilot's rows (validation_data/llm_pilot), so the shipped defaults reproduce from the data."""
    rows = load_source("llm-pilot", catalog, data_dir).rows
    shipped = catalog.framework("tgis").eager_launch
    assert tgis_host.fit_launch(rows, catalog) == (shipped.launch_us, shipped.rank_sync_us)
    shared = catalog.framework("tgis").efficiency.compute_efficiency  # stage 2 fits the host time at the shared efficiency
    assert tgis_host.fit_prefill_host_ms(rows, catalog, shipped, shared) == tgis.PREFILL_HOST_MS


def test_one_user_on_a_launch_bound_replica_sees_the_launch_time_per_token(catalog):
    """One user alone on 4 x H100 (llama-7b, launches of 25 us x 12 + 2 x 50 us per layer = 12.8 ms per pass): every
    inter-token gap is one decode step = the step model's host overhead + 12.8 ms with the floor on, the step model's
    time with it off (the GPU work is below the floor, so the two differ)."""
    config = tgis_config(catalog, "llama-7b", "h100-sxm", 4, EagerLaunch(kernels_per_layer=12, launch_us=25.0, rank_sync_us=50.0))
    lengths = tgis.HistogramLengths(input_bins=((120, 1.0),), output_bins=((5, 1.0),))
    middle = StepShape.decode(1, 120 + 5 // 2)  # the gaps see contexts 121..124; the median is the middle one
    on = tgis.tgis_closed_loop(config, 1, lengths, tgis.TgisSettings(256, launch_floor=True), num_requests=5)
    off = tgis.tgis_closed_loop(config, 1, lengths, tgis.TgisSettings(256), num_requests=5)
    overhead_ms = step_time(config, middle).overhead_s * 1e3
    assert on.median_itl_ms == pytest.approx(overhead_ms + 12.8, rel=1e-6)
    assert off.median_itl_ms == pytest.approx(step_time(config, middle).time_s * 1e3, rel=0.01)
    assert off.median_itl_ms < on.median_itl_ms


def _synthetic_rows(catalog, fit: tgis_host.TgisHostFit, gpus: tuple[str, ...] = ("a100-40gb",)) -> list[Measurement]:
    """llama-7b and llama-13b on one of each of ``gpus`` at 1, 4 and 16 users, every request 128 + 16 tokens (a multiple
    of the batcher's 16-token prefill buckets), 'measured' as the TGIS batcher predicts them with ``fit``."""
    rows = [Measurement("llm-pilot", llm, gpu, "tgis", "bf16", 1, users, 128, 16, {"ttft_ms": 1.0, "tpot_ms": 1.0},
                        key=f"{llm} {gpu} u{users}") for gpu in gpus for llm in ("llama-7b", "llama-13b") for users in (1, 4, 16)]
    predicted: dict[str, dict[str, float]] = {}
    for c in tgis_host.predict_rows(rows, catalog, fit):
        predicted.setdefault(c.measurement.key, {})[c.metric] = c.predicted
    return [replace(m, measured=predicted[m.key]) for m in rows]


def test_the_compute_efficiency_fit_recovers_the_efficiency_and_host_time_that_made_the_rows(catalog):
    """Rows made with a compute efficiency of 0.55 and 5 ms of host time per prefill pass (launch floor and per-sequence
    host time as shipped) are fitted back to exactly (0.55, 5.0): 0.55 lies on the fine grid next to the coarse 0.5 or
    0.6, and at 0.55 the one-user TTFT minus the predicted pass is 5 ms to the 0.5 ms rounding."""
    shipped = catalog.framework("tgis").eager_launch
    truth = tgis_host.TgisHostFit(shipped.launch_us, shipped.rank_sync_us, 5.0, tgis.SEQUENCE_HOST_MS, 0.55)
    rows = _synthetic_rows(catalog, truth)
    assert tgis_host.fit_compute_efficiency(rows, catalog, shipped.launch_us, shipped.rank_sync_us, tgis.SEQUENCE_HOST_MS) == (0.55, 5.0)


def test_each_architecture_gets_back_the_efficiency_its_rows_were_made_with(catalog):
    """Rows on A100 (Ampere) made with compute efficiency 0.55 and on H100 (Hopper) with 0.3, the rest shared: each
    architecture's own fit returns its value."""
    shipped = catalog.framework("tgis").eager_launch
    truth = tgis_host.TgisHostFit(shipped.launch_us, shipped.rank_sync_us, 5.0, tgis.SEQUENCE_HOST_MS, 0.4,
                                  (("ampere", 0.55), ("hopper", 0.3)))
    rows = _synthetic_rows(catalog, truth, ("a100-40gb", "h100-sxm"))
    base = tgis_host.TgisHostFit(shipped.launch_us, shipped.rank_sync_us, 5.0, tgis.SEQUENCE_HOST_MS, 0.4)
    assert tgis_host.fit_efficiency_by_architecture(rows, catalog, base) == (("ampere", 0.55), ("hopper", 0.3))


def test_grid_minimum_searches_coarse_then_fine_and_breaks_ties_low():
    """|x - 1.62| on 1.0..3.0: coarse 0.25 steps find 1.5 and 1.75 (0.12 and 0.13), the fine 0.05 steps around 1.5 find
    1.6 (0.02) and 1.65 (0.03): 1.6. A flat score returns the range's low end."""
    assert tgis_host.grid_minimum(lambda x: abs(x - 1.62), 1.0, 3.0, 0.25, 0.05) == 1.6
    assert tgis_host.grid_minimum(lambda x: 1.0, 1.0, 3.0, 0.25, 0.05) == 1.0


@pytest.mark.slow
def test_the_shipped_tgis_host_time_is_the_whole_fit_on_llm_pilot(catalog, data_dir):
    """Every stage on LLM-Pilot's closed-loop rows (about 2 min) gives the shipped launch floor, compute efficiencies (the
    shared one and each architecture's) and host times: the defaults reproduce from the data."""
    rows = [m for m in load_source("llm-pilot", catalog, data_dir).rows if m.closed_loop]
    shipped = catalog.framework("tgis").eager_launch
    profile = catalog.framework("tgis")
    by_architecture = tuple(sorted((a, e.compute_efficiency) for a, e in profile.efficiency_by_architecture.items()))
    assert tgis_host.fit_all(rows, catalog) == tgis_host.TgisHostFit(shipped.launch_us, shipped.rank_sync_us, tgis.PREFILL_HOST_MS,
                                                                     tgis.SEQUENCE_HOST_MS, profile.efficiency.compute_efficiency, by_architecture)
