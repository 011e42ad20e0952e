"""Property tests: on random small problems CP-SAT's optimum equals exhaustive enumeration's.

Problems vary the LLMs (one or two sharing budget and inventory), GPU types, TP degrees,
engines, batch sizes, demand kind, SLOs, budget, inventory and objective.
"""

from __future__ import annotations

import math

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from guide_opt.problem import Problem
from guide_opt.solution import Status
from guide_opt.solvers import get_solver
from guide_opt.space import build_space
from guide_opt.verify import verify

LLMS = ["llama-3.2-1b", "llama-3.1-8b", "qwen2-7b", "llama-2-13b"]
GPUS = ["a10g", "l4", "l40s", "a100-80gb-sxm", "h100-sxm"]


@st.composite
def workloads(draw):
    workload = {"input_tokens": draw(st.sampled_from([128, 512, 2048])), "output_tokens": draw(st.sampled_from([32, 256]))}
    demand = draw(st.sampled_from(["rate", "users", "job", "none"]))
    if demand == "rate":
        workload["request_rate_per_s"] = draw(st.sampled_from([0.5, 2.0, 6.0]))
    elif demand == "users":
        workload["concurrent_users"] = draw(st.sampled_from([8, 40, 100]))
    elif demand == "job":
        workload["requests"] = draw(st.sampled_from([2000, 20000]))
        workload["deadline_h"] = draw(st.sampled_from([2.0, 8.0]))
    return workload


@st.composite
def problems(draw):
    n_models = draw(st.integers(1, 2))
    models = []
    for _ in range(n_models):
        slo = {}
        if draw(st.booleans()):
            slo["ttft_ms"] = draw(st.sampled_from([300.0, 2000.0, 10000.0]))
        if draw(st.booleans()):
            slo["tpot_ms"] = draw(st.sampled_from([15.0, 50.0, 150.0]))
        models.append({"id": draw(st.sampled_from(LLMS)), "workload": draw(workloads()), "slo": slo,
                       "precision_tolerance": draw(st.sampled_from(["none", "10%"]))})
    gpus = draw(st.lists(st.sampled_from(GPUS), min_size=1, max_size=3, unique=True))
    hardware = {"gpus": gpus, "max_gpus": draw(st.sampled_from([8, 16]))}
    if draw(st.booleans()):
        hardware["inventory"] = {gpus[0]: draw(st.sampled_from([2, 4, 8]))}
    objective = draw(st.sampled_from(["min_cost", "max_throughput", "min_latency"]))
    data = {
        "name": "random",
        "models": models,
        "hardware": hardware,
        "frameworks": draw(st.lists(st.sampled_from(["vllm", "sglang", "tensorrt-llm"]), min_size=1, max_size=2, unique=True)),
        "budget_per_hour": draw(st.sampled_from([4.0, 15.0, 60.0])),
        "objective": objective,
        "search": {"tp": draw(st.lists(st.sampled_from([1, 2, 4]), min_size=1, max_size=2, unique=True)),
                   "batch_sizes": draw(st.lists(st.sampled_from([1, 4, 16, 64]), min_size=1, max_size=3, unique=True)),
                   "max_replicas": 8},
    }
    return Problem.from_dict(data)


@settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(problems())
def test_cpsat_optimum_equals_exhaustive(problem):
    space = build_space(problem)  # one table, searched both ways (each solver copies it before adding no-goods)
    exact = get_solver("cpsat").solve(problem, space=space, alternatives=False)
    brute = get_solver("exhaustive").solve(problem, space=space, alternatives=False)
    assert exact.status is brute.status
    if exact.status is Status.OPTIMAL:
        assert math.isclose(exact.objective, brute.objective, rel_tol=1e-5, abs_tol=1e-6)
        assert verify(problem, exact) == []
        assert verify(problem, brute) == []


@settings(max_examples=12, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(problems())
def test_picks_capped_at_the_optimums_cost_equal_exhaustive(problem):
    # The best-throughput and min-latency picks are solved under a budget equal to the optimum's cost: there the
    # per-LLM budget shares CP-SAT's model adds (Formulation.hold_cost_shares: each LLM at most the budget less the
    # others' cheapest options) cut hardest. Exhaustive enumeration checks only the budget itself, so equal values
    # show that the shares leave out no plan within the budget.
    problem = problem.model_copy(update={"objective": "min_cost", "budget_per_hour": None})
    space = build_space(problem)
    exact = get_solver("cpsat").solve(problem, space=space, check_by_simulation=False)
    brute = get_solver("exhaustive").solve(problem, space=space, check_by_simulation=False)
    assert exact.status is brute.status
    for kind in ("best-throughput", "min-latency"):
        pick, other = ({a["kind"]: a for a in solution.alternatives}.get(kind) for solution in (exact, brute))
        assert (pick is None) == (other is None)  # a pick is left out when no plan within the cap exists
        if pick is not None:
            assert pick["status"] == other["status"]
            if pick["objective"] is not None:
                assert math.isclose(pick["objective"], other["objective"], rel_tol=1e-5, abs_tol=1e-6)
