"""The u_max predictors of LLM-Pilot's benchmark, on hand-made data (no measured files needed)."""

from __future__ import annotations

import math
import statistics

import pytest

from guide_opt.validation import pilot_predictors as pp
from guide_opt.validation.llm_pilot import USER_LEVELS, u_max


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
