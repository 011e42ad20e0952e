"""Calibrated efficiencies and SLO margins flow into planning and verification alike."""

from __future__ import annotations

import pytest
import yaml

from guide_opt.errors import InputError
from guide_opt.solution import Status
from guide_opt.solvers import get_solver
from guide_opt.verify import verify

from problem_fixtures import small_problem


def with_prediction(problem, **prediction):
    return problem.model_copy(update={"prediction": problem.prediction.model_copy(update=prediction)})


def write_calibration(path, *, compute=0.3, memory=0.4, ttft_p90_log=0.5, tpot_p90_log=0.25):
    path.write_text(yaml.safe_dump({
        "format": "guide-opt-calibration/1",
        "entries": [{"gpu": "a100-80gb-sxm", "framework": "vllm", "rows": 10, "llms": ["x"],
                     "efficiency": {"compute_efficiency": compute, "memory_efficiency": memory, "communication_efficiency": 0.5,
                                    "step_overhead_ms": 2.0}}],
        "residual_kind": "leave-one-llm-out",
        "residual_quantiles": {"ttft_ms": {0.1: -0.1, 0.5: 0.0, 0.9: ttft_p90_log}, "tpot_ms": {0.1: -0.1, 0.5: 0.0, 0.9: tpot_p90_log}},
    }))
    return str(path)


def test_slo_margin_never_lowers_cost_and_plans_keep_headroom():
    base = small_problem()
    plain = get_solver("cpsat").solve(base, alternatives=False)
    widened_problem = with_prediction(base, slo_margin=1.5)
    widened = get_solver("cpsat").solve(widened_problem, alternatives=False)
    assert widened.status is Status.OPTIMAL
    assert widened.objective >= plain.objective - 1e-9
    margin = widened.deployments[0].slo_margin
    assert margin["ttft_factor"] == pytest.approx(1.5) and margin["ttft_headroom_ms"] >= 0 and margin["tpot_headroom_ms"] >= 0
    assert verify(widened_problem, widened) == []
    assert plain.deployments[0].slo_margin is None


def test_margin_is_enforced_by_verification():
    """A plan made without the margin fails verification against a problem that has one."""
    base = small_problem(models=[{"id": "llama-3.1-8b", "workload": {"input_tokens": 512, "output_tokens": 128, "request_rate_per_s": 4},
                                  "slo": {"ttft_ms": 800, "tpot_ms": 12}}])
    plain = get_solver("cpsat").solve(base, alternatives=False)
    assert plain.status is Status.OPTIMAL
    tpot = plain.deployments[0].metrics["tpot_ms"]
    strict = with_prediction(base, slo_margin=12 / tpot * 1.01)
    assert any("margin" in v.text for v in verify(strict, plain))


def test_calibration_replaces_efficiencies_and_widens_to_the_percentile(tmp_path):
    path = write_calibration(tmp_path / "cal.yaml")
    base = small_problem(hardware={"gpus": ["a100-80gb-sxm"], "max_gpus": 8})
    slow = with_prediction(base, calibration=path)
    plain = get_solver("cpsat").solve(base, alternatives=False)
    calibrated = get_solver("cpsat").solve(slow, alternatives=False)
    assert calibrated.status is Status.OPTIMAL
    # lower efficiencies predict slower replicas, so the same batch needs more money
    assert calibrated.objective >= plain.objective
    assert verify(slow, calibrated) == []
    p90 = small_problem(hardware={"gpus": ["a100-80gb-sxm"], "max_gpus": 8},
                        models=[{"id": "llama-3.1-8b", "workload": {"input_tokens": 512, "output_tokens": 128, "request_rate_per_s": 4},
                                 "slo": {"ttft_ms": 800, "tpot_ms": 40, "percentile": 90}}])
    solution = get_solver("cpsat").solve(with_prediction(p90, calibration=path), alternatives=False)
    import math

    assert solution.deployments[0].slo_margin["ttft_factor"] == pytest.approx(math.exp(0.5))


def test_percentile_beyond_the_calibration_is_refused(tmp_path):
    path = write_calibration(tmp_path / "cal.yaml")
    problem = small_problem(models=[{"id": "llama-3.1-8b", "workload": {"input_tokens": 512, "output_tokens": 128},
                                     "slo": {"tpot_ms": 40, "percentile": 99}}])
    with pytest.raises(InputError, match=r"models\[0\].slo.percentile"):
        get_solver("cpsat").solve(with_prediction(problem, calibration=path), alternatives=False)


def test_missing_calibration_file_is_bad_input(capsys):
    from guide_opt.cli import main
    from problem_fixtures import PROBLEMS_DIR

    code = main(["solve", str(PROBLEMS_DIR / "quickstart.yaml"), "--calibration", "/nonexistent/cal.yaml"])
    assert code == 1 and "calibration" in capsys.readouterr().err
    assert main(["solve", str(PROBLEMS_DIR / "quickstart.yaml"), "--slo-margin", "0.5"]) == 1
