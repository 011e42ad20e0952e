"""The u_max predictors of LLM-Pilot's benchmark, on hand-made data (no measured files needed)."""

from __future__ import annotations

import math
import statistics

import pytest

from guide_opt.validation import pilot_predictors as pp
from guide_opt.validation.llm_pilot import ITL_LIMIT_MS, USER_LEVELS, u_max


def test_lognormal_bins_match_the_median_and_mean():
    """Mid-quantile point masses of a log-normal: their median is the median, their mean close to the mean (e^(mu + s^2/2))."""
    bins = pp.lognormal_bins(120.0, 85.0, bins=64)
    tokens = [t for t, _ in bins]
    assert statistics.median(tokens) == pytest.approx(85, abs=2)
    assert statistics.fmean(tokens) == pytest.approx(120, rel=0.05)


class _FixedTable(pp.PhysicsTable):
    """A physics table whose 'simulations' are given: grid point g gives ITL = (g + 1) x users^0.5 ms."""

    def __init__(self):
        super().__init__(catalog=None, lengths=None, llm_ids={}, flash={}, levels=USER_LEVELS)

    def _simulate(self, model, profile, grid_index):
        return {u: (1.0, (grid_index + 1) * math.sqrt(u)) for u in USER_LEVELS}


def test_the_physics_fit_picks_the_grid_point_that_reproduces_the_training_llms():
    """Measured = grid point 7's curve on an A100 profile, point 3's on an H100 one: the fit must find 7 and 3."""
    table = _FixedTable()
    points = {"a": {"1 x A100": {u: (1.0, 8 * math.sqrt(u)) for u in USER_LEVELS},
                    "1 x H100": {u: (1.0, 4 * math.sqrt(u)) for u in USER_LEVELS}},
              "b": {"2 x A100": {u: (1.0, 8 * math.sqrt(u)) for u in USER_LEVELS}}}
    assert pp.fit_grid(table, points, ["a", "b"]) == {"A100": 7, "H100": 3}
    # the held-out LLM's u_max from grid point 7: ITL = 8 sqrt(u) <= 50 ms holds up to u = 39, so 32
    assert u_max(pp.physics_levels(table, "c", "1 x A100", {"A100": 7})) == 32


def test_the_learned_predictor_recovers_a_smooth_law():
    """Training LLMs whose ITL is 0.4 ms per billion parameters per user plus 10 ms; the held-out 10B LLM gets u_max by that law."""
    pytest.importorskip("sklearn")
    gpu = {"gpu_n_gpus": "1", "gpu_memory_capacity_gb_total": "80", "gpu_memory_bandwidth": "2000", "gpu_tflops_tc_fp16": "312"}

    def llm(params_b):
        return {"model_n_parameters": str(params_b), "model_n_heads": "32", "model_n_layers": "32", "model_is_flash_attention": "TRUE",
                "model_is_encoder_decoder": "FALSE", "model_torch_dtype": "float16", "model_vocabulary_size": "32000"}

    sizes = {f"m{p}": p for p in (2, 4, 6, 8, 12, 14, 16, 20)}
    points = {m: {"1 x G": {u: (1.0, 10 + 0.4 * p * u / 8) for u in USER_LEVELS}} for m, p in sizes.items()}
    features = {m: llm(p) for m, p in sizes.items()} | {"held": llm(10)}
    model = pp.train_learned(points, features, {"1 x G": gpu}, list(sizes))
    # by the law, a 10B LLM: 10 + 0.5 u <= 50 up to u = 80 -> u_max 64 (level 128 gives 74 ms)
    assert u_max(model.levels("held", "1 x G", USER_LEVELS)) == 64


def test_the_tgis_kv_fit_recovers_known_costs_from_the_training_llms_only(catalog, data_dir):
    """Synthetic measurements played by the TGIS batcher itself with memory efficiency 0.7, step overhead 2 ms (1 GPU)
    and 5 ms (2 GPUs), prefill host cost 12 ms, 0.4 / 0.3 ms per sequence (1 / 2 GPUs) and 5 ms per GiB of KV cache:
    the fit must return them (the costs to the rounding of the linearized least squares), whatever the held-out
    LLM's absurd points say, and ignore a training level where half the requests failed."""
    from guide_opt.validation.llm_pilot import tgis_table

    table = tgis_table(data_dir, catalog, ["llama-7b", "llama-13b", "bigcode/starcoder"])
    truth = pp.TgisGpuFit(0.7, ((1, 2.0), (2, 5.0)), 12.0, ((1, 0.4), (2, 0.3)), 5.0)
    points, one_user, failed = {}, {}, {}
    for model in ("llama-7b", "bigcode/starcoder"):
        for profile in ("1 x A100", "2 x A100"):
            overhead = truth.for_gpus(int(profile[0])).step_overhead_ms
            prefill_ms, decode_ms = pp._one_user_times(table, model, profile, 0.7, overhead)
            loaded = table.get(model, profile, truth.for_gpus(int(profile[0])), (2, 4, 8, 16, 32))
            points.setdefault(model, {})[profile] = {1: (1.0, decode_ms), **loaded, 64: (1e-3, 1e-3)}
            failed[(model, profile, 64)] = 0.5
            one_user[(model, profile)] = prefill_ms + 12.0
    points["llama-13b"] = {"1 x A100": {u: (1e6, 1e6) for u in (1, 2, 4)}}
    one_user[("llama-13b", "1 x A100")] = 1e6
    fit = pp.fit_tgis_kv(table, points, one_user, ["llama-7b", "bigcode/starcoder"], failed, itl_limit_ms=ITL_LIMIT_MS)["A100"]
    assert (fit.memory_efficiency, fit.step_overhead_ms, fit.prefill_overhead_ms) == (0.7, ((1, 2.0), (2, 5.0)), 12.0)
    per_seq = dict(fit.per_sequence_overhead_ms)
    assert per_seq[1] == pytest.approx(0.4, abs=0.02) and per_seq[2] == pytest.approx(0.3, abs=0.02)
    assert fit.kv_ms_per_gib == pytest.approx(5.0, abs=0.5)
    assert fit.padded_addon_overhead_ms == 0.0  # no training LLM without flash attention


def test_a_pod_size_without_training_data_takes_the_nearest_measured_one():
    """Pod sizes 1 and 4 fitted: 2 GPUs are nearer 1 and take its values, 8 take 4's; with sizes 2 and 4 fitted,
    3 GPUs are as near either and take the larger pod's."""
    fit = pp.TgisGpuFit(0.8, ((1, 2.0), (4, 9.0)), 10.0, ((1, 0.5), (4, 0.4)), 3.0, 20.0)
    assert fit.for_gpus(2) == pp.TgisFit(0.8, 2.0, 10.0, 0.5, 3.0, 20.0)
    assert fit.for_gpus(8).step_overhead_ms == 9.0 and fit.for_gpus(8).per_sequence_overhead_ms == 0.4
    tie = pp.TgisGpuFit(0.8, ((2, 5.0), (4, 9.0)), 10.0, ((2, 0.5), (4, 0.4)))
    assert (tie.for_gpus(3).step_overhead_ms, tie.for_gpus(3).per_sequence_overhead_ms) == (9.0, 0.4)
    assert pp.profile_fit({"A100": fit}, "1 x H100") is None


def _perturbed_copy(data_dir, tmp_path, model):
    """A copy of validation_data/llm_pilot where ``model``'s aggregate rows read 3x slower, with twice the tokens and 90% failed."""
    import csv
    import shutil

    shutil.copytree(data_dir / "llm_pilot", tmp_path / "llm_pilot")
    path = tmp_path / "llm_pilot" / "llm_pilot_aggregate.csv"
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        if row["model"] == model:
            for key in ("median_itl_ms", "median_nttft_ms_per_in_tok", "median_ttft_ms"):
                row[key] = str(3 * float(row[key]))
            for key in ("mean_input_tokens", "median_input_tokens", "mean_output_tokens", "median_output_tokens"):
                row[key] = str(2 * float(row[key]))
            row["fail_frac"] = "0.9"
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return tmp_path


def test_the_held_out_llms_rows_never_reach_its_tgis_kv_prediction(catalog, data_dir, tmp_path):
    """Leak test: starcoder held out, llama-7b trains. Making starcoder's measured rows 3x slower (and its prompts
    longer, its levels failed) must leave its prediction -- u_max per profile and the fitted costs -- unchanged;
    the same change to llama-7b's rows (the training LLM) must move the fitted costs (the test can fail)."""
    base, held, trained = _starcoder_held_out(catalog, data_dir, tmp_path, "tgis-kv")
    assert held.predicted_u_max == base.predicted_u_max and held.factors == base.factors
    assert trained.factors != base.factors


def _starcoder_held_out(catalog, data_dir, tmp_path, name: str):
    """``name``'s recommendation for starcoder (held out; llama-7b trains) from the data as it is, with starcoder's
    rows perturbed, and with llama-7b's rows perturbed (:func:`_perturbed_copy`)."""
    from guide_opt.validation.llm_pilot import ground_truth, load_prices, predictor_recommendations

    truth, prices = ground_truth(data_dir), load_prices(data_dir)
    models = ["llama-7b", "bigcode/starcoder"]

    def predict(folder):
        return predictor_recommendations(name, folder, catalog, models, truth, prices, "measured",
                                         held_out=["bigcode/starcoder"])["bigcode/starcoder"]

    return (predict(data_dir), predict(_perturbed_copy(data_dir, tmp_path / "held", "bigcode/starcoder")),
            predict(_perturbed_copy(data_dir, tmp_path / "train", "llama-7b")))


@pytest.mark.parametrize("name", ["physics", "hybrid"])
def test_the_held_out_llms_rows_never_reach_its_physics_prediction(catalog, data_dir, tmp_path, monkeypatch, name):
    """Leak test of the simulator-based predictors: starcoder held out, llama-7b trains. Making starcoder's measured
    rows 3x slower with twice the tokens must leave its predicted levels (and u_max) unchanged -- its request
    lengths, too, are measurements a user planning a new LLM does not have; the same change to llama-7b's rows
    (the training LLM, whose lengths the fold simulates) must move them (the test can fail). Two grid points, three
    user levels and short streams keep it fast: the leak is in what the fold reads, not in the grid."""
    if name == "hybrid":
        pytest.importorskip("sklearn")
    from guide_opt.validation import llm_pilot

    monkeypatch.setattr(llm_pilot, "USER_LEVELS", (1, 4, 16))
    monkeypatch.setattr(pp, "EFFICIENCY_GRID", ((0.3, 0.65, 5.0), (0.5, 0.85, 1.0)))
    monkeypatch.setattr(pp, "FALLBACK_GRID_INDEX", 0)
    monkeypatch.setattr(pp, "MIN_REQUESTS", 20)
    monkeypatch.setattr(pp, "ROUNDS_PER_USER", 1)
    base, held, trained = _starcoder_held_out(catalog, data_dir, tmp_path, name)
    assert held.levels == base.levels and held.predicted_u_max == base.predicted_u_max
    assert trained.levels != base.levels
