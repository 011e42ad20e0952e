"""One model per answer: a calibrated plan is refined, simulated and checked with its own calibration and SLO margins."""

from __future__ import annotations

import dataclasses
import math

import pytest

from guide_opt.catalog import load_catalog
from guide_opt.frameworks import EfficiencyFactors
from guide_opt.perf import ServingConfig
from guide_opt.refine import Evaluator, simulate_deployments
from guide_opt.simcheck import check_plan
from guide_opt.simulate import FixedLengths, Workload, simulate
from guide_opt.solvers import get_solver
from guide_opt.space import build_space
from guide_opt.validation.calibration import Calibration, CalibrationEntry, save_calibration

from problem_fixtures import small_problem

#: Far from vllm's defaults, so a plan simulated with the defaults would differ visibly.
SLOW = EfficiencyFactors(compute_efficiency=0.3, memory_efficiency=0.35, communication_efficiency=0.5, step_overhead_ms=3.0)
#: ln(measured / predicted) quantile 0.1 at p50: every prediction is widened by e^0.1 = 1.105.
LOG_RESIDUAL_P50 = 0.1


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    path = tmp_path_factory.mktemp("cal") / "cal.yaml"
    quantiles = {0.05: 0.0, 0.5: LOG_RESIDUAL_P50, 0.95: 0.3}
    save_calibration(Calibration(entries=[CalibrationEntry(gpu=g, framework="vllm", efficiency=SLOW, rows=10)
                                          for g in ("a100-80gb-sxm", "l40s")],
                                 residual_kind="in-sample", residual_quantiles={"ttft_ms": quantiles, "tpot_ms": quantiles}), path)
    problem = small_problem(prediction={"calibration": str(path), "slo_margin": 1.2})
    solution = get_solver("cpsat").solve(problem, alternatives=False, check_by_simulation=False)
    return problem, solution


def test_simulation_uses_the_plans_calibrated_efficiency(calibrated):
    """The check's simulated TPOT equals a direct simulation of the deployment with the fitted factors."""
    problem, solution = calibrated
    d = solution.deployments[0]
    evaluation = simulate_deployments(problem, solution.deployments, num_requests=400, seed=3)
    cat = load_catalog()
    fw = cat.framework(d.framework)
    config = ServingConfig(llm=cat.llm(d.model), gpu=cat.gpu(d.gpu), framework=fw, quantization=cat.quantization(d.quantization), tp=d.tp,
                           pp=d.pp, batch=d.max_batch, input_tokens=512, output_tokens=128, kv_cache_dtype=d.kv_cache_dtype,
                           max_num_batched_tokens=max(fw.max_num_batched_tokens, d.max_batch),
                           gpu_memory_utilization=round(fw.gpu_memory_utilization, 2), efficiency=SLOW)
    direct = simulate(config, Workload.open_loop(FixedLengths(512, 128), 4), max_num_seqs=d.max_batch,
                      max_num_batched_tokens=config.max_num_batched_tokens, num_requests=400, seed=3, replicas=d.replicas,
                      balancer="random")
    assert evaluation.metrics[0].tpot_p50_ms == pytest.approx(direct.tpot_s.as_ms()["p50"], rel=1e-12)
    defaults = simulate(dataclasses.replace(config, efficiency=None), Workload.open_loop(FixedLengths(512, 128), 4), max_num_seqs=d.max_batch,
                        max_num_batched_tokens=config.max_num_batched_tokens, num_requests=400, seed=3, replicas=d.replicas,
                        balancer="random")
    assert not math.isclose(evaluation.metrics[0].tpot_p50_ms, defaults.tpot_s.as_ms()["p50"], rel_tol=0.05)


def test_refined_deployments_carry_the_planners_metrics(calibrated):
    """A refined batch size reports the static metrics the planner computed for that candidate (calibrated)."""
    problem, solution = calibrated
    refiner = Evaluator(problem, solution.deployments, 200, 0)
    settings = refiner.incumbent_settings[0]
    other = next(b for b in refiner.neighbourhoods[0].max_num_seqs if b != settings.max_num_seqs)
    refined = refiner.deployments((dataclasses.replace(settings, max_num_seqs=other),))[0]
    d = solution.deployments[0]
    planner = next(c for c in build_space(problem).models[0].candidates
                   if (c.shape.gpu.id, c.shape.tp, c.shape.framework.id, c.batch) == (d.gpu, d.tp, d.framework, other))
    assert refined.metrics["tpot_ms"] == pytest.approx(planner.tpot_s * 1e3, rel=1e-12)
    assert refined.metrics["ttft_ms"] == pytest.approx(planner.ttft_s * 1e3, rel=1e-12)


def test_simulated_slos_are_judged_with_the_plans_margins(calibrated):
    """The SLO factor is e^0.1 x slo_margin 1.2 = 1.326; an SLO just above the simulated TPOT fails once widened."""
    problem, solution = calibrated
    factor = math.exp(LOG_RESIDUAL_P50) * 1.2
    verdict = check_plan(problem, solution.deployments, num_requests=400)[0]
    assert verdict.tpot_factor == pytest.approx(factor, rel=1e-9)

    def with_tpot_slo(tpot_ms: float):
        req = problem.models[0]
        return problem.model_copy(update={"models": [req.model_copy(update={"slo": req.slo.model_copy(update={"tpot_ms": tpot_ms})})]})

    below_widened = check_plan(with_tpot_slo(verdict.tpot_ms * 1.1), solution.deployments, num_requests=400)[0]
    above_widened = check_plan(with_tpot_slo(verdict.tpot_ms * factor * 1.02), solution.deployments, num_requests=400)[0]
    assert "tpot" in below_widened.failed and not below_widened.meets
    assert "tpot" not in above_widened.failed
