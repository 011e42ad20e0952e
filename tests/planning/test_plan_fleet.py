"""Fleet plans: several LLMs sharing inventory, max_gpus and budget (min_cost and max_served)."""

from __future__ import annotations

import math

import pytest

from guide_opt.plan import served_percent, served_problem, verification_problem
from guide_opt.problem import Problem
from guide_opt.solution import Status
from guide_opt.solvers import get_solver
from guide_opt.verify import verify, verify_deployments

#: problem file -> (status, objective window (low, high)); objective in the problem's unit.
GOLDEN = {
    # +-3% around the optimum of the exhaustive solver run to completion (get_solver("exhaustive"), time limit 900 s,
    # status OPTIMAL) on the step model with the elementwise kernels and the engines' host costs per step
    "fleet-mixed-inventory.yaml": (Status.OPTIMAL, (11.97, 12.71)),     # $/h (exhaustive optimum 12.34)
    "fleet-max-served.yaml": (Status.OPTIMAL, (91.06, 96.70)),          # mean % of demand served (exhaustive optimum 93.88)
}


@pytest.fixture(scope="module")
def solved(problem_file):
    cache = {}

    def get(name: str):
        if name not in cache:
            problem = problem_file(name)
            cache[name] = (problem, get_solver("cpsat").solve(problem, alternatives=False))
        return cache[name]

    return get


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_golden_fleet_status_objective_and_verification(solved, name):
    problem, solution = solved(name)
    status, (low, high) = GOLDEN[name]
    assert solution.status is status
    assert low <= solution.objective <= high
    assert len(solution.deployments) == len(problem.models) == 3
    assert verify(verification_problem(problem, solution.deployments), solution) == []


def test_fleet_shares_inventory_and_budget(solved):
    problem, solution = solved("fleet-mixed-inventory.yaml")
    used = {}
    for d in solution.deployments:
        used[d.gpu] = used.get(d.gpu, 0) + d.gpu_count
    for gpu, count in used.items():
        assert count <= problem.hardware.inventory[gpu]
    assert solution.total_cost_per_hour <= problem.budget_per_hour
    assert math.isclose(solution.objective, solution.total_cost_per_hour)


def test_max_served_serves_the_reported_share_and_not_more_than_the_budget(solved):
    problem, solution = solved("fleet-max-served.yaml")
    shares = [served_percent(req, d) for req, d in zip(problem.models, solution.deployments)]
    assert math.isclose(sum(shares) / len(shares), solution.objective, rel_tol=1e-9)
    assert min(shares) < 100.0, "the budget is too small for the whole demand"
    assert solution.total_cost_per_hour <= problem.budget_per_hour
    # Against the full demand the partly served LLM fails the demand check; against what it serves it passes.
    assert any("demand" in v.text for v in verify(problem, solution))
    assert verify_deployments(served_problem(problem, solution.deployments), list(solution.deployments)) == []


def test_max_served_with_enough_budget_serves_everything_at_min_cost(fleet_dict):
    served = get_solver("cpsat").solve(Problem.from_dict(fleet_dict(objective="max_served", budget_per_hour=50)), alternatives=False)
    cheapest = get_solver("cpsat").solve(Problem.from_dict(fleet_dict(budget_per_hour=50)), alternatives=False)
    assert served.objective == pytest.approx(100.0)
    assert served.total_cost_per_hour == pytest.approx(cheapest.objective), "ties among full service go to the cheapest plan"


def test_max_served_equals_exhaustive_on_a_small_fleet(fleet_dict):
    data = fleet_dict(objective="max_served", budget_per_hour=2.0)
    data["models"][1]["workload"]["concurrent_users"] = 300
    problem = Problem.from_dict(data)
    exact = get_solver("cpsat").solve(problem, alternatives=False)
    brute = get_solver("exhaustive").solve(problem, alternatives=False)
    assert exact.status is brute.status is Status.OPTIMAL
    assert exact.objective < 100.0
    assert math.isclose(exact.objective, brute.objective, rel_tol=1e-6)


def test_infeasible_fleet_names_the_model_and_the_constraint(fleet_dict):
    data = fleet_dict(budget_per_hour=None)
    data["hardware"] = {"gpus": ["a100-80gb-sxm"], "inventory": {"a100-80gb-sxm": 2}}
    data["models"][1]["workload"]["concurrent_users"] = 400
    solution = get_solver("cpsat").solve(Problem.from_dict(data), alternatives=False)
    assert solution.status is Status.INFEASIBLE
    e = solution.explanation
    assert "inventory[a100-80gb-sxm]" in e["conflicting_constraints"]
    assert any("models[1]" in c for c in e["conflicting_constraints"]), e["conflicting_constraints"]
    assert any("a100-80gb-sxm" in r["text"] for r in e["relaxations"])
    assert any("models[1]" in r["text"] for r in e["relaxations"])


def test_max_served_is_a_valid_objective_and_bad_ones_name_the_field():
    base = {"name": "x", "models": [{"id": "llama-3.1-8b", "workload": {"input_tokens": 10, "output_tokens": 10}}]}
    assert Problem.from_dict({**base, "objective": "max_served"}).objective == "max_served"
    from guide_opt.errors import InputError

    with pytest.raises(InputError, match="objective"):
        Problem.from_dict({**base, "objective": "max_serve"})


def test_verification_shares_step_tables_between_services_alike_with_the_same_findings(fleet_dict):
    # Two services of one LLM at the same lengths on one shape share a step table inside verify_deployments; the
    # expected findings are those of each service verified in a problem of its own (a fresh table each).
    light = {"id": "llama-3.2-1b", "workload": {"input_tokens": 512, "output_tokens": 128, "request_rate_per_s": 6},
             "slo": {"ttft_ms": 1000, "tpot_ms": 40}}
    heavy = {**light, "workload": {**light["workload"], "request_rate_per_s": 400}}
    alone = Problem.from_dict(fleet_dict(models=[light]))
    deployment = get_solver("cpsat").solve(alone, alternatives=False).deployments[0]
    both = Problem.from_dict(fleet_dict(models=[light, heavy]))
    found = verify_deployments(both, [deployment, deployment])
    assert [v.text for v in found if v.model_index == 0] == [v.text for v in verify_deployments(alone, [deployment])] == []
    heavy_alone = [v.text for v in verify_deployments(Problem.from_dict(fleet_dict(models=[heavy])), [deployment])]
    assert heavy_alone and any("replicas" in text for text in heavy_alone)
    assert [v.text.replace("models[1]", "models[0]") for v in found if v.model_index == 1] == heavy_alone


def test_verification_spread_over_processes_finds_what_it_finds_serially(solved, monkeypatch):
    # verify_deployments evaluates each step table's deployments in a forked process once a fleet has enough tables; the
    # expected findings are those of the same check run serially. Two deployments are spoiled so that there is something
    # to find: one with fewer replicas than its demand needs (the SLOs at the load it would carry), one reporting a TTFT
    # the model does not give.
    import dataclasses

    from guide_opt import parallel, verify as verify_module

    problem, solution = solved("fleet-mixed-inventory.yaml")
    deployments = list(solution.deployments)
    deployments[0] = dataclasses.replace(deployments[0], replicas=max(1, deployments[0].replicas - 1))
    deployments[1] = dataclasses.replace(deployments[1], metrics={**deployments[1].metrics, "ttft_ms": deployments[1].metrics["ttft_ms"] * 2})
    checked = verification_problem(problem, deployments)
    monkeypatch.setattr(verify_module, "PARALLEL_MIN_TABLES", 10**9)
    serial = [(v.model_index, v.text) for v in verify_deployments(checked, deployments)]
    processes = []
    real_map = verify_module.forked_map
    monkeypatch.setattr(verify_module, "forked_map", lambda f, items, workers: processes.append(parallel.workers_used(workers, len(items)))
                        or real_map(f, items, workers))
    monkeypatch.setattr(verify_module, "PARALLEL_MIN_TABLES", 2)
    spread = [(v.model_index, v.text) for v in verify_deployments(checked, deployments)]
    assert processes == [min(parallel.default_workers(), 3)]
    assert spread == serial
    assert any("per replica" in text for _, text in serial) and any("reported ttft_ms" in text for _, text in serial)
