"""Explanations: infeasible problems name a minimal conflict and a working relaxation;
solved problems say which constraints bind."""

from __future__ import annotations

import pytest

from guide_opt.presets import load_preset
from guide_opt.problem import Problem
from guide_opt.solution import Status
from guide_opt.solvers import get_solver
from guide_opt.space import build_space
from guide_opt.explain import explain_binding

from problem_fixtures import PROBLEMS_DIR, small_problem


def test_impossible_tpot_names_the_slo_and_the_needed_value():
    problem = Problem.from_yaml(PROBLEMS_DIR / "infeasible-tpot.yaml")
    solution = get_solver("cpsat").solve(problem, alternatives=False)
    assert solution.status is Status.INFEASIBLE
    e = solution.explanation
    assert any("tpot_slo" in c for c in e["conflicting_constraints"])
    relaxation = next(r for r in e["relaxations"] if r["constraint"] == "models[0].slo.tpot_ms")
    assert relaxation["needed"] > 5
    # the relaxation really works: re-solve with the suggested TPOT
    relaxed = problem.model_copy(update={"models": [problem.models[0].model_copy(update={
        "slo": problem.models[0].slo.model_copy(update={"tpot_ms": relaxation["needed"] * 1.0001})})]})
    assert get_solver("cpsat").solve(relaxed, alternatives=False).status is Status.OPTIMAL


def test_budget_relaxation_is_exactly_the_cheapest_plan():
    problem = small_problem(budget_per_hour=0.5)
    solution = get_solver("cpsat").solve(problem, alternatives=False)
    relaxation = next(r for r in solution.explanation["relaxations"] if r["constraint"] == "budget_per_hour")
    unconstrained = get_solver("cpsat").solve(small_problem(budget_per_hour=None), alternatives=False)
    assert relaxation["needed"] == pytest.approx(unconstrained.objective)
    assert solution.explanation["conflicting_constraints"] == ["budget"] or "budget" in solution.explanation["conflicting_constraints"]


def test_conflict_is_minimal():
    """Dropping any one named family makes the problem feasible (deletion-filtered core)."""
    from guide_opt.explain import conflicting_families
    from guide_opt.formulation import build_formulation
    from ortools.sat.python import cp_model

    problem = small_problem(budget_per_hour=0.5)
    space = build_space(problem)
    core = conflicting_families(space, load_preset())
    assert core
    for dropped in core:
        form = build_formulation(space, "min_cost", explain=True)
        form.model.AddAssumptions([lit for name, lit in form.family_literals.items() if name in core and name != dropped])
        assert cp_model.CpSolver().Solve(form.model) in (cp_model.OPTIMAL, cp_model.FEASIBLE)


def test_no_runnable_shape_is_explained_by_data_prechecks():
    problem = Problem.from_dict({
        "name": "too big", "models": [{"id": "llama-2-70b", "workload": {"input_tokens": 100, "output_tokens": 10}}],
        "hardware": {"gpus": ["t4"]}, "search": {"tp": [1]},
    })
    solution = get_solver("cpsat").solve(problem, alternatives=False)
    assert solution.status is Status.INFEASIBLE
    assert "weights need" in solution.explanation["reasons"][0]


def test_binding_constraints_report_savings():
    problem = small_problem(models=[{"id": "llama-3.1-8b", "workload": {"input_tokens": 512, "output_tokens": 128, "request_rate_per_s": 4},
                                     "slo": {"ttft_ms": 800, "tpot_ms": 12}}])
    # only A100 TP 2 (10.4-11.2 ms p-TPOT at this load) meets it; A100 TP 1 needs 13.8 ms and L40S TP 2 14.9 ms
    space = build_space(problem)
    result = get_solver("cpsat").best_plans(space, "min_cost", k=1, forbidden=frozenset(), deadline=5, seed=0)
    report = {b["constraint"]: b for b in explain_binding(space, result.plans[0], get_solver("cpsat"))}
    assert report["models[0].slo.tpot_ms"]["binding"]
    assert report["models[0].slo.tpot_ms"]["gain"] > 0
    assert not report["budget_per_hour"]["binding"]


@pytest.mark.parametrize("objective", ["min_cost", "max_throughput"])
def test_relaxed_values_are_the_exhaustive_optima_of_the_relaxed_problems(objective):
    """Each relaxation is solved for its value only (no tie-break pass): the value must still be the relaxed
    problem's optimum, which the exhaustive solver finds by enumeration (the independent reference)."""
    import dataclasses

    from guide_opt.explain import _refilter
    from guide_opt.plan import objective_value

    problem = small_problem(models=[{"id": "llama-3.1-8b", "workload": {"input_tokens": 512, "output_tokens": 128, "request_rate_per_s": 4},
                                     "slo": {"ttft_ms": 800, "tpot_ms": 12}}], objective=objective)
    space = build_space(problem)
    result = get_solver("cpsat").best_plans(space, objective, k=1, forbidden=frozenset(), deadline=30, seed=0)
    report = explain_binding(space, result.plans[0], get_solver("cpsat"), deadline=60)
    relaxations = {"budget_per_hour": {"budget_per_hour": None},
                   "hardware.max_gpus": {"hardware": problem.hardware.model_copy(update={"max_gpus": None})},
                   "models[0].slo.tpot_ms": {"models": [problem.models[0].model_copy(
                       update={"slo": problem.models[0].slo.model_copy(update={"tpot_ms": None})})]}}
    checked = 0
    for entry in report:
        if entry["constraint"] not in relaxations or "objective_if_relaxed" not in entry:
            continue
        relaxed = problem.model_copy(update=relaxations[entry["constraint"]])
        relaxed_space = dataclasses.replace(space, problem=relaxed, models=[_refilter(ms, relaxed) for ms in space.models])
        best = get_solver("exhaustive").best_plans(relaxed_space, objective, k=1, forbidden=frozenset(), deadline=60, seed=0)
        assert entry["objective_if_relaxed"] == pytest.approx(objective_value(objective, best.plans[0]), rel=1e-9), entry["constraint"]
        checked += 1
    assert checked >= 2


def test_relaxed_min_cost_values_of_two_llms_sharing_a_binding_inventory_are_the_exhaustive_optima():
    """A relaxed min-cost solve looks only at plans no dearer than the plan explained (SearchSpace.cost_limit_quanta, each
    LLM within its share of it): with two LLMs competing for a short inventory, every relaxed value must still be the
    relaxed problem's optimum, which the exhaustive solver finds by enumeration without any such limit."""
    import dataclasses

    from guide_opt.explain import _refilter
    from guide_opt.plan import objective_value

    problem = small_problem(models=[
        {"id": "llama-3.1-8b", "workload": {"input_tokens": 512, "output_tokens": 128, "request_rate_per_s": 4}, "slo": {"ttft_ms": 800, "tpot_ms": 40}},
        {"id": "qwen2-7b", "workload": {"input_tokens": 1024, "output_tokens": 256, "request_rate_per_s": 2}, "slo": {"ttft_ms": 1500, "tpot_ms": 50}},
    ], hardware={"gpus": ["a100-80gb-sxm", "l40s"], "max_gpus": 8, "inventory": {"l40s": 1}})
    space = build_space(problem)
    result = get_solver("cpsat").best_plans(space, "min_cost", k=1, forbidden=frozenset(), deadline=30, seed=0)
    report = explain_binding(space, result.plans[0], get_solver("cpsat"), deadline=60)
    hardware = problem.hardware
    relaxations = {"budget_per_hour": {"budget_per_hour": None},
                   "hardware.max_gpus": {"hardware": hardware.model_copy(update={"max_gpus": None})},
                   "hardware.inventory": {"hardware": hardware.model_copy(update={"inventory": {}})}}
    assert {entry["constraint"] for entry in report} >= set(relaxations)  # each shared limit gets a verdict
    solved = {entry["constraint"]: entry for entry in report if "objective_if_relaxed" in entry and entry.get("proof") != "bound"}
    assert "hardware.inventory" in solved and solved["hardware.inventory"]["binding"]  # the short inventory binds
    for name, update in relaxations.items():
        if name not in solved:
            continue
        relaxed = problem.model_copy(update=update)
        relaxed_space = dataclasses.replace(space, problem=relaxed, models=[_refilter(ms, relaxed) for ms in space.models])
        best = get_solver("exhaustive").best_plans(relaxed_space, "min_cost", k=1, forbidden=frozenset(), deadline=60, seed=0)
        assert solved[name]["objective_if_relaxed"] == pytest.approx(objective_value("min_cost", best.plans[0]), rel=1e-9), name


def test_relaxations_a_bound_settles_are_not_solved_and_read_the_same(monkeypatch):
    """Two LLMs with slack shared limits and SLOs their cheapest options meet: dropping a constraint cannot lower the
    cost below the sum of each LLM's own cheapest option, which the plan already pays, so those relaxations are
    settled by that bound without a solve; with the bound switched off every one is solved, with the same verdicts."""
    import guide_opt.explain as explain

    problem = small_problem(models=[{"id": "llama-3.1-8b", "workload": {"input_tokens": 512, "output_tokens": 128, "request_rate_per_s": 2},
                                     "slo": {"ttft_ms": 5000, "tpot_ms": 200}},
                                    {"id": "llama-2-7b", "workload": {"input_tokens": 256, "output_tokens": 64, "request_rate_per_s": 1},
                                     "slo": {"ttft_ms": 5000, "tpot_ms": 200}}], budget_per_hour=100)
    space = build_space(problem)
    solver = get_solver("cpsat")
    plan = solver.best_plans(space, "min_cost", k=1, forbidden=frozenset(), deadline=30, seed=0).plans[0]
    calls = []
    real = type(solver).best_plans

    def counted(self, *args, **kwargs):
        calls.append(1)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(type(solver), "best_plans", counted)
    screened = explain_binding(space, plan, solver, deadline=60)
    solved_with_bound = len(calls)
    monkeypatch.setattr(explain, "separable_bound", lambda space, objective, memo=None: None)
    calls.clear()
    solved = explain_binding(space, plan, solver, deadline=60)
    assert len(calls) == len(solved) and solved_with_bound < len(calls)
    assert any(e.get("proof") == "bound" for e in screened)
    assert [(e["constraint"], e["binding"], e["objective_if_relaxed"]) for e in screened] == \
        [(e["constraint"], e["binding"], pytest.approx(e["objective_if_relaxed"], rel=1e-12)) for e in solved]


def test_binding_report_respects_its_time_budget():
    problem = small_problem()
    space = build_space(problem)
    result = get_solver("cpsat").best_plans(space, "min_cost", k=1, forbidden=frozenset(), deadline=5, seed=0)
    report = explain_binding(space, result.plans[0], get_solver("cpsat"), deadline=0.0)
    names = [b["constraint"] for b in report]
    assert names == ["budget_per_hour", "hardware.max_gpus", "models[0].slo.ttft_ms", "models[0].slo.tpot_ms"]
    assert all(b["binding"] is None and "not evaluated" in b["text"] for b in report)


def test_requests_longer_than_the_context_are_explained():
    problem = Problem.from_dict({
        "name": "too long", "models": [{"id": "llama-2-7b", "workload": {"input_tokens": 8000, "output_tokens": 500}}],
        "hardware": {"gpus": ["h100-sxm"]},
    })
    solution = get_solver("cpsat").solve(problem, alternatives=False)
    assert solution.status is Status.INFEASIBLE
    assert "exceed the context of llama-2-7b (4096 tokens)" in solution.explanation["reasons"][0]
