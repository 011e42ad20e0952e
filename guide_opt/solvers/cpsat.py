"""The exact solver: OR-Tools CP-SAT over the formulation of :mod:`guide_opt.formulation`."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from guide_opt.cp_sat import cp_model
from guide_opt.deadline import Deadline
from guide_opt.formulation import Formulation, build_formulation, objective_coefficient, run_cp_sat
from guide_opt.objectives import OBJECTIVES
from guide_opt.plan import Plan
from guide_opt.quanta import SERVED_SCALE
from guide_opt.presets import SolverPreset
from guide_opt.solution import Status
from guide_opt.solvers.base import PlanResult, Solver, register
from guide_opt.space import SearchSpace


@register
class CpSatSolver(Solver):
    """Proves the optimum with CP-SAT; ties on throughput/latency/served demand are broken by cost.

    Before each model is built, candidates dominated for the objective are pruned
    (:mod:`guide_opt.pruning`, exact); ``prune_dominated=False`` keeps them all (for checks).
    The count is reported as ``stats["dominated_pruned"]``.
    """

    name = "cpsat"
    proves_optimality = True
    def __init__(self, preset: SolverPreset | None = None, *, prune_dominated: bool = True) -> None:
        super().__init__(preset)
        self.prune_dominated = prune_dominated

    def best_plans(self, space: SearchSpace, objective: str, *, k: int, forbidden: frozenset[int],
                   deadline: Deadline | float, seed: int, tie_break: bool = True) -> PlanResult:
        """The optimum, then up to ``k - 1`` plans of other shapes, all within one ``deadline``.

        The optimum is solved on a model pruned across shapes; the other ranks share one second
        model (pruned among siblings of one shape only, as excluding shape combinations needs),
        each rank adding the no-good of the plan before it. Every solve optimizes the objective
        and (``tie_break``) its tie-break (:meth:`_solve`). A rank cut short by the deadline is
        reported with its status (UNKNOWN, plan None), never dropped.
        """
        deadline = Deadline.of(deadline)
        form = build_formulation(space, objective, forbidden=forbidden, prune=self.prune_dominated)
        status, plan, bound, stats = self._solve(form, deadline, seed, tie_break)
        plans: list[Plan] = [] if plan is None else [plan]
        statuses = [status] if plan is not None else []
        unfinished: list[Status] = []
        if k > 1 and plan is not None:
            others = build_formulation(space, objective, forbidden=forbidden, prune=self.prune_dominated, prune_across_shapes=False)
            for rank in range(1, k):
                if deadline.expired:
                    unfinished = [Status.UNKNOWN] * (k - rank)
                    break
                others.forbid_plan_shapes(plans[-1])
                rank_status, rank_plan, _, _ = self._solve(others, deadline, seed, tie_break)
                if rank_plan is None:
                    if rank_status is not Status.INFEASIBLE:  # INFEASIBLE: no plan of other shapes exists
                        unfinished = [rank_status] * (k - rank)
                    break
                statuses.append(rank_status)
                plans.append(rank_plan)
        return PlanResult(status, tuple(plans), bound, stats, statuses=tuple(statuses), unfinished=tuple(unfinished))

    def _solve(self, form: Formulation, deadline: Deadline, seed: int, tie_break: bool = True) -> tuple[Status, Plan | None, float | None, dict]:
        """One solve of ``form`` for its objective, ties broken in the same solve; (status, plan, bound in objective units, stats).

        Ties on throughput / latency / served demand go to the cheapest plan, ties on cost to
        the fastest: the objective is ``primary x W + secondary`` with ``W`` above any value of
        the secondary, the exact lexicographic order in one CP-SAT call (:func:`lexicographic`).
        When that product would leave the exactly representable integers, the primary is
        solved first and the tie-break second, on the same model, hinted with the first answer.
        The status is the primary's: OPTIMAL once the primary is proven, even if the tie-break
        is not (``stats["tie_break_proven"]`` says). Without ``tie_break`` only the primary is
        optimized (a plan of the optimal value, ties unbroken).
        """
        lex = lexicographic(form)
        if not tie_break:
            lex = dataclasses.replace(lex, weight=None)
        if lex.weight is not None:
            form.model.Minimize(lex.combined)
            status, solver = run_cp_sat(form.model, self.preset, deadline, seed=seed)
        else:
            form.model.Minimize(lex.sign * lex.primary)
            status, solver = run_cp_sat(form.model, self.preset, deadline, seed=seed)
        stats = {"cp_sat_branches": solver.NumBranches(), "variables": len(form.model.Proto().variables),
                 "constraints": len(form.model.Proto().constraints), "dominated_pruned": form.pruned}
        if not status.found:
            return status, None, None, stats
        primary = round(solver.Value(lex.primary))
        if lex.weight is not None:
            bound_quanta = lex.primary_bound(solver.BestObjectiveBound())
            tie_proven = status is Status.OPTIMAL
            plan = form.decode(solver)
        elif not tie_break:
            bound_quanta = lex.sign * solver.BestObjectiveBound()
            plan, tie_proven = form.decode(solver), False
        else:
            bound_quanta = lex.sign * solver.BestObjectiveBound()
            plan, tie_proven, primary = self._second_pass(form, lex, solver, primary, deadline, seed)
            tie_proven = tie_proven and status is Status.OPTIMAL
        proven = status is Status.OPTIMAL or (bound_quanta is not None and round(bound_quanta) == primary)
        stats["tie_break_proven"] = tie_proven
        bound = OBJECTIVES[form.objective].bound_in_unit(primary if proven else bound_quanta, len(form.space.models))
        return (Status.OPTIMAL if proven else Status.FEASIBLE), plan, bound, stats

    def _second_pass(self, form: Formulation, lex: "Lexicographic", first: cp_model.CpSolver, primary: int, deadline: Deadline,
                     seed: int) -> tuple[Plan, bool, int]:
        """The tie-break as a second solve on a copy of the model, hinted with the first answer (objective too large to combine).

        The primary is held at least as good as the first answer's (``sign x primary <= sign x
        value``), not equal to it: over the plans of a proven optimum the two are the same set,
        and CP-SAT proves the inequality far faster than an equality over large cost
        coefficients (a 64-service fleet: 1.5 s against 21 s). When the first answer was not
        proven, the second may improve the primary too. Returns (plan, tie-break proven, its
        primary value).
        """
        model = form.model.Clone()
        model.Add(lex.sign * lex.primary <= lex.sign * primary)
        if OBJECTIVES[form.objective].model_objective == "min_cost":  # the primary is the cost: held to the first answer's
            form.hold_cost_shares(model, primary)
        model.Minimize(lex.secondary)
        for v in (*form.use, *form.replicas):
            model.AddHint(v, first.Value(v))
        status, second = run_cp_sat(model, self.preset, deadline, seed=seed)
        if status.found:
            return form.decode(second), status is Status.OPTIMAL, round(second.Value(lex.primary))
        return form.decode(first), False, primary


@dataclass(frozen=True)
class Lexicographic:
    """The objective of a formulation and its tie-break as one integer objective to minimize.

    primary: the objective's expression (quanta), ``sign`` +1 to minimize it, -1 to maximize.
    secondary: the tie-break (cost quanta, or summed latency quanta for min_cost), to minimize,
    with values in ``[0, secondary_ub]``. weight: ``secondary_ub + 1`` when
    ``sign x primary x weight + secondary`` stays within 2**53 in size (exact in the doubles
    CP-SAT reports objectives in), else None (two solves).
    """

    primary: cp_model.LinearExpr
    sign: int
    secondary: cp_model.LinearExpr
    weight: int | None

    @property
    def combined(self) -> cp_model.LinearExpr:
        """``sign x primary x weight + secondary``."""
        return self.primary * (self.sign * self.weight) + self.secondary

    def primary_bound(self, combined_bound: float) -> int:
        """The best primary value (quanta) a bound on the combined objective proves.

        Every plan has ``sign x P x W + S >= B`` with ``0 <= S <= W - 1``, so
        ``sign x P >= (B - W + 1) / W``; rounded to the integers P takes.
        """
        least = math.ceil((combined_bound - self.weight + 1) / self.weight - 1e-9)
        return self.sign * least


def lexicographic(form: Formulation) -> Lexicographic:
    """The :class:`Lexicographic` objective of ``form`` (see :meth:`CpSatSolver._solve` for the tie-break rule)."""
    proto = form.model.Proto()

    def upper(var) -> int:
        domain = proto.variables[var.Index()].domain
        return int(domain[len(domain) - 1])  # the protobuf field does not take negative indices

    def upper_bound(objective: str) -> int:
        """The largest value (quanta) ``objective``'s expression takes in this model: per LLM, its largest term."""
        o = OBJECTIVES[objective]
        if o.replicas == "share":
            return SERVED_SCALE * len(form.by_model)  # each LLM's share is capped at its whole demand
        return sum(max(((upper(form.replicas[i]) if o.per_replica else 1) * objective_coefficient(objective, form.candidates[i])
                        for i in indices), default=0) for indices in form.by_model)

    kind = OBJECTIVES[form.objective]
    primary, primary_ub = form.expression(kind.name), upper_bound(kind.name)
    secondary, secondary_ub = form.expression(kind.tie_break), upper_bound(kind.tie_break)
    sign = kind.sense
    weight = secondary_ub + 1
    exact = primary_ub * weight + secondary_ub < 2**53
    return Lexicographic(primary, sign, secondary, weight if exact else None)
