"""The exact solver: OR-Tools CP-SAT over the formulation of :mod:`guide_opt.formulation`."""

from __future__ import annotations

from ortools.sat.python import cp_model

from guide_opt.formulation import (COST_QUANTUM_USD_PER_H, SERVED_QUANTUM, THROUGHPUT_QUANTUM_TOKENS_PER_S, TIME_QUANTUM_US, Formulation,
                                   build_formulation)
from guide_opt.plan import Plan
from guide_opt.presets import SolverPreset, apply_cp_sat_parameters
from guide_opt.solution import Status, status_from_cp_sat
from guide_opt.solvers.base import PlanResult, Solver, register
from guide_opt.space import SearchSpace


#: Objective quantum of each objective in its reporting unit ($/h, tokens/s, ms; for
#: max_served percent of one LLM's demand, to be divided by the number of LLMs).
OBJECTIVE_QUANTUM = {
    "min_cost": COST_QUANTUM_USD_PER_H,
    "max_throughput": THROUGHPUT_QUANTUM_TOKENS_PER_S,
    "min_latency": TIME_QUANTUM_US / 1000.0,
    "max_served": SERVED_QUANTUM * 100.0,
}
#: Objectives CP-SAT maximizes.
MAXIMIZED = frozenset({"max_throughput", "max_served"})


@register
class CpSatSolver(Solver):
    """Proves the optimum with CP-SAT; ties on throughput/latency/served demand are broken by cost.

    Before each model is built, candidates dominated for the objective are pruned
    (:mod:`guide_opt.pruning`, exact); ``prune_dominated=False`` keeps them all (for checks).
    The count is reported as ``stats["dominated_pruned"]``.
    """

    name = "cpsat"
    proves_optimality = True
    objectives = frozenset({"min_cost", "max_throughput", "min_latency", "max_served"})

    def __init__(self, preset: SolverPreset | None = None, *, prune_dominated: bool = True) -> None:
        super().__init__(preset)
        self.prune_dominated = prune_dominated

    def best_plans(self, space: SearchSpace, objective: str, *, k: int, forbidden: frozenset[int],
                   time_limit_s: float, seed: int) -> PlanResult:
        plans: list[Plan] = []
        first_status, bound, stats = Status.UNKNOWN, None, {}
        for rank in range(k):
            status, plan, bound_quanta, solve_stats = self._solve_once(space, objective, forbidden, plans, time_limit_s, seed)
            if rank == 0:
                first_status, stats = status, solve_stats
                if bound_quanta is not None:
                    bound = bound_quanta * OBJECTIVE_QUANTUM[objective]
                    if objective == "max_served":
                        bound /= max(1, len(space.models))
            if plan is None:
                break
            plans.append(plan)
        return PlanResult(first_status, tuple(plans), bound, stats)

    def _solve_once(self, space: SearchSpace, objective: str, forbidden: frozenset[int], excluded: list[Plan],
                    time_limit_s: float, seed: int):
        # Shape combinations to avoid (alternatives) limit pruning to siblings of one shape.
        form = build_formulation(space, objective, forbidden=forbidden, prune=self.prune_dominated, prune_across_shapes=not excluded)
        for plan in excluded:
            form.forbid_plan_shapes(plan)
        solver = cp_model.CpSolver()
        apply_cp_sat_parameters(solver, self.preset, time_limit_s=time_limit_s, seed=seed)
        code = solver.Solve(form.model)
        status = status_from_cp_sat(code)
        stats = {"cp_sat_wall_s": round(solver.WallTime(), 4), "cp_sat_branches": solver.NumBranches(),
                 "variables": len(form.model.Proto().variables), "constraints": len(form.model.Proto().constraints),
                 "dominated_pruned": form.pruned}
        if not status.found:
            return status, None, None, stats
        bound = solver.BestObjectiveBound()
        plan = self._break_ties(form, solver, time_limit_s, seed) or form.decode(solver)
        return status, plan, bound, stats

    def _break_ties(self, form: Formulation, solver: cp_model.CpSolver, time_limit_s: float, seed: int) -> Plan | None:
        """Second pass among the optima: the cheapest one (min_latency, max_throughput, max_served) or the fastest one (min_cost)."""
        value = round(solver.ObjectiveValue())
        model = form.model
        if form.objective in MAXIMIZED:
            model.Add(form.objective_expr >= value)
        else:
            model.Add(form.objective_expr <= value)
        model.Minimize(form.latency_expr if form.objective == "min_cost" else form.cost_expr)
        second = cp_model.CpSolver()
        apply_cp_sat_parameters(second, self.preset, time_limit_s=time_limit_s, seed=seed)
        if second.Solve(model) in (cp_model.OPTIMAL, cp_model.FEASIBLE):
            return form.decode(second)
        return None
