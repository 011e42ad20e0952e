"""Brute-force enumeration of the same discrete space: the cross-check of the CP-SAT solver.

Enumerates every combination of one feasible candidate per LLM with every useful replica
count (the fewest meeting demand for min_cost / min_latency; every count up to the limits
for max_throughput; for max_served every count from 1 up to the fewest serving the whole
demand, since more can only cost more), pruning partial plans that already break the budget or the space's exact
cost limit (:attr:`~guide_opt.space.SearchSpace.plan_cost_limit_quanta`), inventory or
max_gpus. Cost is summed in the CP-SAT model's own integers (each replica's $/h in quanta, the budget rounded down:
:func:`~guide_opt.quanta.budget_quanta`), so the two solvers hold plans to the same limit to the last quantum and a
disagreement between them is one of search, never of rounding. Exponential in the number of LLMs: meant for checking, not for fleets.
"""

from __future__ import annotations

from collections import Counter

from guide_opt.deadline import Deadline
from guide_opt.objectives import OBJECTIVES, cost_coefficient
from guide_opt.plan import Pick, Plan, objective_value
from guide_opt.solution import Status
from guide_opt.solvers.base import PlanResult, Solver, register
from guide_opt.space import SearchSpace, replica_limit


@register
class ExhaustiveSolver(Solver):
    """Evaluates every plan; OPTIMAL by completeness unless the time limit cuts it short."""

    name = "exhaustive"
    proves_optimality = True

    def best_plans(self, space: SearchSpace, objective: str, *, k: int, forbidden: frozenset[int],
                   deadline: Deadline | float, seed: int, tie_break: bool = True) -> PlanResult:
        deadline = Deadline.of(deadline)
        problem = space.problem
        kind = OBJECTIVES[objective]
        options: list[list[tuple[Pick, int]]] = []  # per LLM: each pick and its cost in the model's quanta
        for ms in space.models:
            picks = []
            for c in ms.candidates:
                if not c.usable_for(objective) or id(c) in forbidden:
                    continue
                r_max = replica_limit(space, c)
                replica_counts = _replica_counts(kind.replicas, c.replicas_min, r_max)
                picks.extend((Pick(c, r), cost_coefficient(c) * r) for r in replica_counts)
            options.append(picks)

        best_by_shapes: dict[tuple, tuple[tuple, Plan]] = {}
        sign = float(kind.sense)
        tie_breaker = kind.tie_break  # the CP-SAT solver's rule too
        cost_limit = space.plan_cost_limit_quanta  # exact, in the model's cost quanta
        inventory = problem.hardware.inventory
        max_gpus = problem.hardware.max_gpus
        examined = 0
        timed_out = False

        def visit(depth: int, chosen: list[Pick], gpus: Counter, cost_quanta: int) -> None:
            nonlocal examined, timed_out
            if timed_out:
                return
            if depth == len(options):
                keys = {p.candidate.key for p in chosen}
                if any(combination <= keys for combination in space.excluded_combinations):
                    return
                examined += 1
                if examined % 4096 == 0 and deadline.expired:
                    timed_out = True
                plan = tuple(chosen)
                key = tuple(p.candidate.shape for p in plan)
                rank = (sign * objective_value(objective, plan), objective_value(tie_breaker, plan), sum(p.gpus for p in plan),
                        tuple(p.candidate.shape.label() for p in plan), tuple(p.candidate.batch for p in plan))
                if key not in best_by_shapes or rank < best_by_shapes[key][0]:
                    best_by_shapes[key] = (rank, plan)
                return
            for pick, pick_quanta in options[depth]:
                new_quanta = cost_quanta + pick_quanta
                if cost_limit is not None and new_quanta > cost_limit:
                    continue
                gpu_id = pick.candidate.shape.gpu.id
                if gpu_id in inventory and gpus[gpu_id] + pick.gpus > inventory[gpu_id]:
                    continue
                if max_gpus is not None and sum(gpus.values()) + pick.gpus > max_gpus:
                    continue
                gpus[gpu_id] += pick.gpus
                chosen.append(pick)
                visit(depth + 1, chosen, gpus, new_quanta)
                chosen.pop()
                gpus[gpu_id] -= pick.gpus

        visit(0, [], Counter(), 0)
        ranked = sorted(best_by_shapes.values(), key=lambda item: item[0])
        plans = tuple(plan for _, plan in ranked[:k])
        stats = {"plans_examined": examined}
        if not plans:
            return PlanResult(Status.UNKNOWN if timed_out else Status.INFEASIBLE, (), None, stats)
        status = Status.FEASIBLE if timed_out else Status.OPTIMAL
        return PlanResult(status, plans, None if timed_out else objective_value(objective, plans[0]), stats)


def _replica_counts(rule: str, floor: int, limit: int) -> range:
    """The replica counts an optimum may use (:attr:`~guide_opt.objectives.ObjectiveKind.replicas`): ``share`` 1 up to the
    demand's ``floor``, ``any`` the floor up to ``limit``, ``fewest`` the floor alone; none above ``limit``."""
    if rule == "share":
        return range(1, min(limit, floor) + 1)
    if rule == "any":
        return range(floor, limit + 1)
    return range(floor, floor + 1) if floor <= limit else range(0)
