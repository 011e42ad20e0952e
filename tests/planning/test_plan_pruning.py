"""Dominance pruning is exact: the optimum with and without pruning is the same (and equals brute force)."""

from __future__ import annotations

import dataclasses
import math

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from guide_opt.formulation import build_formulation
from guide_opt.problem import Problem
from guide_opt.pruning import dominance_signature, prune_dominated
from guide_opt.solution import Status
from guide_opt.solvers import get_solver
from guide_opt.solvers.cpsat import CpSatSolver
from guide_opt.space import build_space

LLMS = ["llama-3.2-1b", "llama-3.1-8b", "qwen2-7b"]
GPUS = ["l4", "l40s", "a100-80gb-sxm", "h100-sxm"]


def test_a_sibling_that_is_no_worse_prunes_and_equal_signatures_keep_one(fleet_dict):
    space = build_space(Problem.from_dict(fleet_dict()))
    usable = [c for c in space.models[1].candidates if c.feasible]
    kept, pruned = prune_dominated(usable, "min_cost")
    assert pruned == len(usable) - len(kept) > 0
    for c in usable:
        if c in kept:
            continue
        group, vector = dominance_signature(c, "min_cost")
        assert any(dominance_signature(k, "min_cost")[0] == group and all(a <= b for a, b in zip(dominance_signature(k, "min_cost")[1], vector))
                   for k in kept), "every pruned candidate has a kept dominator in its group"
    twin = dataclasses.replace(kept[0])
    again, n = prune_dominated([kept[0], twin], "min_cost")
    assert again == [kept[0]] and n == 1


def test_pruning_only_compares_candidates_on_the_same_gpu_type(fleet_dict):
    space = build_space(Problem.from_dict(fleet_dict()))
    usable = [c for ms in space.models for c in ms.candidates if c.feasible]
    kept, _ = prune_dominated(usable, "min_cost")
    assert {(c.model_index, c.shape.gpu.id) for c in kept} == {(c.model_index, c.shape.gpu.id) for c in usable}


def test_same_shape_pruning_keeps_every_shape(fleet_dict):
    space = build_space(Problem.from_dict(fleet_dict()))
    usable = [c for c in space.models[0].candidates if c.feasible]
    kept, _ = prune_dominated(usable, "max_throughput", same_shape_only=True)
    assert {c.shape for c in kept} == {c.shape for c in usable}


def test_formulation_reports_the_pruned_count(fleet_dict):
    space = build_space(Problem.from_dict(fleet_dict()))
    full = build_formulation(space, "min_cost")
    pruned = build_formulation(space, "min_cost", prune=True)
    assert pruned.pruned > 0 and len(pruned.candidates) + pruned.pruned == len(full.candidates)


def test_solution_stats_say_how_many_were_pruned(fleet_dict):
    solution = get_solver("cpsat").solve(Problem.from_dict(fleet_dict()), alternatives=False)
    assert solution.stats["dominated_pruned"] > 0


@st.composite
def fleets(draw):
    models = []
    for _ in range(draw(st.integers(1, 3))):
        workload = {"input_tokens": draw(st.sampled_from([256, 1024])), "output_tokens": draw(st.sampled_from([64, 256]))}
        demand = draw(st.sampled_from(["rate", "users", "job"]))
        if demand == "rate":
            workload["request_rate_per_s"] = draw(st.sampled_from([1.0, 8.0]))
        elif demand == "users":
            workload["concurrent_users"] = draw(st.sampled_from([16, 96]))
        else:
            workload.update(requests=draw(st.sampled_from([20000, 200000])), deadline_h=4.0)
        models.append({"id": draw(st.sampled_from(LLMS)), "workload": workload,
                       "slo": {"ttft_ms": draw(st.sampled_from([500.0, 3000.0])), "tpot_ms": draw(st.sampled_from([20.0, 80.0]))}})
    gpus = draw(st.lists(st.sampled_from(GPUS), min_size=1, max_size=3, unique=True))
    hardware = {"gpus": gpus, "max_gpus": draw(st.sampled_from([4, 12]))}
    if draw(st.booleans()):
        hardware["inventory"] = {gpus[0]: draw(st.sampled_from([1, 2, 4]))}
    return Problem.from_dict({
        "name": "random fleet", "models": models, "hardware": hardware, "frameworks": ["vllm"],
        "budget_per_hour": draw(st.sampled_from([5.0, 12.0, 40.0])),
        "objective": draw(st.sampled_from(["min_cost", "max_throughput", "min_latency", "max_served"])),
        "search": {"tp": [1, 2], "batch_sizes": draw(st.lists(st.sampled_from([1, 8, 32, 128]), min_size=1, max_size=3, unique=True)),
                   "max_replicas": 6},
    })


@settings(max_examples=20, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(fleets())
def test_pruned_and_unpruned_cpsat_and_exhaustive_agree(problem):
    space = build_space(problem)
    pruned = CpSatSolver(prune_dominated=True).solve(problem, space=space, alternatives=False)
    full = CpSatSolver(prune_dominated=False).solve(problem, space=space, alternatives=False)
    brute = get_solver("exhaustive").solve(problem, space=space, alternatives=False)
    assert pruned.status is full.status is brute.status
    if pruned.status is Status.OPTIMAL:
        assert math.isclose(pruned.objective, full.objective, rel_tol=1e-6, abs_tol=1e-6)
        assert math.isclose(pruned.objective, brute.objective, rel_tol=1e-5, abs_tol=1e-6)


@settings(max_examples=300, deadline=None)
@given(st.integers(2, 3).flatmap(lambda d: st.lists(st.tuples(*[st.sampled_from([0.0, 1.0, 2.0, 2.5, 7.0, math.inf])] * d), max_size=40)))
def test_undominated_keeps_what_a_pairwise_comparison_keeps(vectors):
    # Expected: member i stays unless another member j is no larger in every component and comes first in (vector, index)
    # order (so of equal vectors the lowest index stays): the definition, checked pair by pair.
    from guide_opt.pruning import undominated

    def dominated(i: int) -> bool:
        return any(all(a <= b for a, b in zip(vectors[j], vectors[i])) and (vectors[j], j) < (vectors[i], i) for j in range(len(vectors)))

    assert sorted(undominated([(v, i) for i, v in enumerate(vectors)])) == [i for i in range(len(vectors)) if not dominated(i)]
