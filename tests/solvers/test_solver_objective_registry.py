"""A new objective is one registry entry: registered alone, both fleet solvers optimize it.

The toy objective ``min_gpus`` (fewest GPUs in all, ties to the cheapest plan) is defined only
by an :class:`~guide_opt.objectives.ObjectiveKind` entry: its value, its integer coefficient
(GPUs per replica), quantum, sense, tie-break and unit. Nothing else in the package names it.
The expected optimum comes from a brute force over the evaluated table: every combination of
one usable candidate per LLM and every replica count from its demand floor to its limit,
kept when it respects the shared limits.
"""

from __future__ import annotations

import itertools

import pytest

from guide_opt.objectives import OBJECTIVES, ObjectiveKind, register_objective
from guide_opt.plan import Pick, objective_value, shared_limit_violations
from guide_opt.solution import Status
from guide_opt.solvers import get_solver
from guide_opt.space import build_space, replica_limit

from problem_fixtures import small_problem


@pytest.fixture
def min_gpus():
    """The toy objective, registered for one test and removed after it."""
    saved = dict(OBJECTIVES)
    register_objective(ObjectiveKind("min_gpus", 1, "GPUs", suffix=" GPUs", decimals=0, tie_break="min_cost",
                                     value=lambda plan: float(sum(p.gpus for p in plan)),
                                     coefficient=lambda c: c.shape.gpus_per_replica, quantum=1.0))
    yield "min_gpus"
    OBJECTIVES.clear()
    OBJECTIVES.update(saved)


def _two_llm_problem(objective: str):
    # two LLMs, two GPU types, a budget that rules out the largest shapes: a small fleet with a shared limit
    return small_problem(objective=objective, budget_per_hour=14, models=[
        {"id": "llama-3.1-8b", "workload": {"input_tokens": 512, "output_tokens": 128, "request_rate_per_s": 4},
         "slo": {"ttft_ms": 800, "tpot_ms": 40}},
        {"id": "mistral-7b", "workload": {"input_tokens": 1024, "output_tokens": 256, "request_rate_per_s": 2},
         "slo": {"ttft_ms": 1500, "tpot_ms": 60}},
    ])


def _brute_force(space) -> tuple[float, float]:
    """(fewest GPUs, least $/h among plans with that many GPUs) over every feasible plan of the table."""
    options = [[Pick(c, r) for c in ms.candidates if c.feasible for r in range(c.replicas_min, replica_limit(space, c) + 1)]
               for ms in space.models]
    best = None
    for plan in itertools.product(*options):
        if shared_limit_violations(space, plan):
            continue
        key = (sum(p.gpus for p in plan), sum(p.cost_per_hour for p in plan))
        best = key if best is None or key < best else best
    assert best is not None, "the toy problem has a feasible plan"
    return best


@pytest.mark.parametrize("solver_name", ["cpsat", "exhaustive"])
def test_an_objective_added_through_the_registry_alone_is_optimized(min_gpus, solver_name):
    problem = _two_llm_problem(min_gpus)
    space = build_space(problem)
    gpus, cost = _brute_force(space)
    solution = get_solver(solver_name).solve(problem, space=space, alternatives=False)
    assert solution.status is Status.OPTIMAL
    assert solution.objective == gpus
    assert sum(d.cost_per_hour for d in solution.deployments) == pytest.approx(cost, rel=1e-9)  # the tie-break: the cheapest
    assert OBJECTIVES[min_gpus].format(solution.objective) == f"{gpus:.0f} GPUs"


def test_an_unregistered_objective_is_refused_with_the_registry_names():
    from guide_opt.errors import InputError

    with pytest.raises(InputError, match="objective.*'min_cost'.*'max_served'"):
        _two_llm_problem("min_gpus")
