"""The contract every registered solver honours (like CVXPY's solver_test_helpers).

Each concrete test class names one solver; the tests are inherited.
"""

from __future__ import annotations

import math
import subprocess
import sys

import pytest

from guide_opt.solution import Status
from guide_opt.space import build_space
from guide_opt.solvers import SOLVER_MODULES, SOLVERS, get_solver, load_all
from guide_opt.verify import verify

from problem_fixtures import small_problem


class SolverContract:
    solver_name: str

    def solver(self):
        return get_solver(self.solver_name)

    def test_found_solution_has_one_verified_deployment_per_llm(self, small):
        solution = self.solver().solve(small, alternatives=False)
        assert solution.status is Status.OPTIMAL
        assert len(solution.deployments) == len(small.models)
        assert verify(small, solution) == []

    def test_objective_is_the_cheapest_plan_found_by_hand_enumeration(self, small):
        # Independent expected value: one LLM and no shared limit binding below the budget, so
        # the optimum is the cheapest (feasible candidate, fewest replicas its demand needs)
        # within the budget -- enumerated here directly, without any solver code.
        solution = self.solver().solve(small, alternatives=False)
        space = build_space(small)
        costs = [c.replicas_min * c.shape.usd_per_replica_hour for c in space.models[0].candidates
                 if c.feasible and c.replicas_min * c.shape.gpus_per_replica <= small.hardware.max_gpus]
        expected = min(cost for cost in costs if cost <= small.budget_per_hour + 1e-9)
        assert solution.objective == pytest.approx(expected)
        assert solution.objective == pytest.approx(sum(d.cost_per_hour for d in solution.deployments))
        assert solution.bound <= solution.objective + 1e-9
        assert solution.gap == pytest.approx(0.0, abs=1e-9)

    def test_infeasible_problem_returns_status_not_exception(self):
        problem = small_problem(budget_per_hour=0.5)
        solution = self.solver().solve(problem, alternatives=False)
        assert solution.status is Status.INFEASIBLE
        assert solution.deployments == ()
        assert solution.objective is None and solution.gap is None
        assert solution.explanation["conflicting_constraints"]

    def test_deterministic_under_a_seed(self, small):
        first = self.solver().solve(small, seed=3, alternatives=False)
        second = self.solver().solve(small, seed=3, alternatives=False)
        assert first.deployments == second.deployments

    def test_json_has_the_contract_keys(self, small):
        payload = self.solver().solve(small).to_json()
        assert {"status", "objective", "bound", "gap", "wall_time_s", "deployments", "alternatives"} <= payload.keys()
        dep = payload["deployments"][0]
        assert {"model", "gpu", "gpu_count", "tp", "pp", "replicas", "framework", "quantization", "max_batch", "cost_per_hour", "metrics"} <= dep.keys()
        assert {"ttft_ms", "tpot_ms", "batch_latency_s", "throughput_tokens_per_s", "memory_utilization"} <= dep["metrics"].keys()
        assert dep["gpu_count"] == dep["replicas"] * dep["tp"] * dep["pp"]

    def test_alternatives_are_ranked_and_within_budget(self, small):
        solution = self.solver().solve(small)
        kinds = [a["kind"] for a in solution.alternatives]
        assert kinds[0] == "top-1" and "best-throughput" in kinds and "min-latency" in kinds
        tops = [a["objective"] for a in solution.alternatives if a["kind"].startswith("top-")]
        assert tops == sorted(tops)
        assert all(a["cost_per_hour"] <= small.budget_per_hour + 1e-9 for a in solution.alternatives)

    @pytest.mark.parametrize("objective", ["max_throughput", "min_latency"])
    def test_other_objectives_report_their_own_value(self, objective):
        problem = small_problem(objective=objective)
        solution = self.solver().solve(problem, alternatives=False)
        assert solution.status is Status.OPTIMAL
        value = sum(d.metrics["throughput_tokens_per_s"] for d in solution.deployments) if objective == "max_throughput" else \
            sum(d.metrics["request_latency_ms"] for d in solution.deployments)
        assert math.isclose(solution.objective, value, rel_tol=1e-9)


class TestCpSatContract(SolverContract):
    solver_name = "cpsat"


class TestExhaustiveContract(SolverContract):
    solver_name = "exhaustive"


def test_every_registered_solver_has_a_contract_class():
    load_all()
    covered = {cls.solver_name for cls in SolverContract.__subclasses__()}
    assert set(SOLVERS) <= covered | {"optuna"}
    assert set(SOLVERS) == set(SOLVER_MODULES)  # each module registers the name it is listed under


def test_a_cpsat_solve_does_not_load_optuna():
    # In a fresh process: asking for the CP-SAT solver imports its module only, not the Optuna refinement.
    code = ("import sys; from guide_opt.solvers import get_solver; get_solver('cpsat'); "
            "print('optuna' in sys.modules, 'guide_opt.solvers.optuna_solver' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]


def test_commands_that_solve_nothing_do_not_load_or_tools():
    # In a fresh process: estimate and simulate need no solver, and naming one (validating --solver)
    # loads none, so OR-Tools (half a second with the pandas it imports) stays out of them.
    code = ("import sys; import guide_opt.cli.estimate_cmd, guide_opt.cli.simulate_cmd, guide_opt.cli.solve_cmd; "
            "from guide_opt.solvers import solver_module; solver_module('cpsat'); "
            "print(any(m == 'ortools' or m.startswith('ortools.') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False"]


def test_alternatives_state_whether_they_were_proven(small):
    solution = get_solver("cpsat").solve(small)
    assert {a["status"] for a in solution.alternatives} == {"OPTIMAL"}


def test_both_solvers_hold_a_budget_to_the_last_cost_quantum():
    # Two services that need 4 L40S replicas each (found by both solvers without a budget: $8,000.00/h at $1,000/GPU-h).
    # A budget 3 quanta (3e-6 $/h) below that admits no plan. A float check with a relative tolerance of 1e-9
    # (8e-6 $/h at this budget) let the brute force return the $8,000/h plan over its budget while CP-SAT said INFEASIBLE.
    service = {"id": "llama-3.1-8b", "workload": {"input_tokens": 512, "output_tokens": 128, "request_rate_per_s": 12},
               "slo": {"ttft_ms": 800, "tpot_ms": 40}}

    def solved(budget, name):
        problem = small_problem(hardware={"gpus": ["l40s"], "max_gpus": 16, "prices": {"l40s": 1000}}, budget_per_hour=budget,
                                models=[service, dict(service)], search={"tp": [1], "batch_sizes": [16]})
        return get_solver(name).solve(problem, check_by_simulation=False, alternatives=False)

    for name in ("cpsat", "exhaustive"):
        free = solved(None, name)
        assert free.status is Status.OPTIMAL and [d.replicas for d in free.deployments] == [4, 4] and free.objective == 8000.0
        assert solved(8000.0, name).status is Status.OPTIMAL, name
        assert solved(8000.0 - 3e-6, name).status is Status.INFEASIBLE, name


def test_picks_capped_at_the_optimums_cost_exist_when_that_cost_reads_back_a_quantum_short():
    # Without a budget the best-throughput and min-latency picks are capped at the optimum's cost, so the optimum itself
    # is always one such plan and both picks must be found. Eight L40S replicas at $4.02/h cost $32.16/h, but
    # 8 * 4.02 / 1e-6 = 32159999.999999996 in floats (hand check in Python): a cap read back from $/h into the model's
    # 1e-6 $/h quanta falls one quantum short of the optimum's 32,160,000, which left both picks out as infeasible.
    problem = small_problem(hardware={"gpus": ["l40s"], "max_gpus": 16, "prices": {"l40s": 4.02}}, budget_per_hour=None,
                            models=[{"id": "llama-3.1-8b", "workload": {"input_tokens": 512, "output_tokens": 128, "request_rate_per_s": 24},
                                     "slo": {"ttft_ms": 800, "tpot_ms": 40}}], search={"tp": [1], "batch_sizes": [16]})
    solution = get_solver("cpsat").solve(problem, check_by_simulation=False)
    assert [d.replicas for d in solution.deployments] == [8] and math.isclose(solution.objective, 32.16)
    picks = {a["kind"]: a for a in solution.alternatives}
    for kind in ("best-throughput", "min-latency"):
        assert kind in picks and picks[kind]["status"] == "OPTIMAL", kind
        assert picks[kind]["cost_per_hour"] <= solution.objective * (1 + 1e-12)
