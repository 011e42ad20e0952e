"""The solver interface and registry.

Every solver is one class in one file with ``solve(problem, *, time_limit_s, seed) ->
Solution``. It never raises on infeasibility (status INFEASIBLE with an explanation);
exceptions mean bad input (:class:`~guide_opt.errors.InputError`) or a bug. Capabilities
are class attributes; :data:`SOLVERS` maps names to classes for the CLI.

A subclass implements one primitive, :meth:`Solver.best_plans` (the k best plans with
distinct shapes for an objective, avoiding forbidden candidates). The base class turns it
into GUIDE's outputs -- the optimum, the top-3, the best-throughput and minimum-latency
picks within budget -- and re-verifies the optimum with the full model, cutting off and
re-solving any plan that fails verification.
"""

from __future__ import annotations

import abc
import dataclasses
import time
from dataclasses import dataclass
from typing import ClassVar

from guide_opt.errors import InputError
from guide_opt.plan import Plan, objective_value, to_deployment, verification_problem
from guide_opt.presets import SolverPreset, load_preset
from guide_opt.problem import Problem
from guide_opt.solution import Solution, Status
from guide_opt.space import Candidate, SearchSpace, build_space
from guide_opt.verify import verify_deployments

SOLVERS: dict[str, type["Solver"]] = {}

#: Verification rounds before giving up (each round cuts at least one candidate).
MAX_VERIFICATION_ROUNDS = 20


def register(cls: type["Solver"]) -> type["Solver"]:
    """Class decorator adding a solver to :data:`SOLVERS` under ``cls.name``."""
    SOLVERS[cls.name] = cls
    return cls


@dataclass(frozen=True)
class PlanResult:
    """What :meth:`Solver.best_plans` found: status, plans best first, proven bound."""

    status: Status
    plans: tuple[Plan, ...] = ()
    bound: float | None = None
    stats: dict = dataclasses.field(default_factory=dict)


class Solver(abc.ABC):
    """Base class of all solvers.

    Class attributes:
        name: registry key (``--solver`` value).
        proves_optimality: True when an OPTIMAL status is a proof.
        objectives: the problem objectives it handles.
    """

    name: ClassVar[str]
    proves_optimality: ClassVar[bool]
    objectives: ClassVar[frozenset[str]] = frozenset({"min_cost", "max_throughput", "min_latency"})

    def __init__(self, preset: SolverPreset | None = None) -> None:
        self.preset = preset or load_preset()

    @abc.abstractmethod
    def best_plans(self, space: SearchSpace, objective: str, *, k: int, forbidden: frozenset[int],
                   time_limit_s: float, seed: int) -> PlanResult:
        """Up to ``k`` best plans with pairwise different shapes, never using a candidate whose id() is in ``forbidden``."""

    def solve(self, problem: Problem, *, time_limit_s: float | None = None, seed: int | None = None,
              space: SearchSpace | None = None, alternatives: bool = True) -> Solution:
        """Find the best deployment(s) for ``problem``; never raises on infeasibility."""
        started = time.perf_counter()
        if problem.objective not in self.objectives:
            raise InputError("objective", f"solver '{self.name}' does not handle '{problem.objective}'",
                             f"use one of {', '.join(sorted(self.objectives))}")
        time_limit_s = time_limit_s if time_limit_s is not None else self.preset.time_limit_s
        seed = seed if seed is not None else self.preset.seed
        space = space or build_space(problem)
        build_s = time.perf_counter() - started
        forbidden: set[int] = set()
        rounds = 0
        while True:
            rounds += 1
            result = self.best_plans(space, problem.objective, k=3 if alternatives else 1, forbidden=frozenset(forbidden),
                                     time_limit_s=time_limit_s, seed=seed)
            if not result.plans:
                break
            bad = self._failed_candidates(space, result.plans[0])
            if not bad or rounds >= MAX_VERIFICATION_ROUNDS:
                break
            forbidden.update(id(c) for c in bad)
        stats = {"space_build_s": round(build_s, 4), "candidates": space.candidate_count,
                 "pruned_shapes": sum(sum(m.pruned.values()) for m in space.models),
                 "verification_rounds": rounds, "cuts": len(forbidden), **result.stats}
        if not result.plans:
            explanation = None
            if result.status is Status.INFEASIBLE:
                from guide_opt.explain import explain_infeasible

                explanation = explain_infeasible(space, self.preset)
            return Solution(result.status, None, result.bound, time.perf_counter() - started, self.name,
                            explanation=explanation, stats=stats, objective_name=problem.objective)
        best = result.plans[0]
        objective = objective_value(problem.objective, best)
        bound = objective if result.status is Status.OPTIMAL else result.bound
        alts = self._alternatives(space, result.plans, time_limit_s, seed, frozenset(forbidden)) if alternatives else ()
        return Solution(
            status=result.status, objective=objective, bound=bound, wall_time_s=time.perf_counter() - started, solver=self.name,
            deployments=tuple(to_deployment(space, p) for p in best), alternatives=alts, stats=stats,
            objective_name=problem.objective,
        )

    def _failed_candidates(self, space: SearchSpace, plan: Plan) -> list[Candidate]:
        """Candidates of ``plan`` that fail full-model verification (to be cut off)."""
        deployments = [to_deployment(space, p) for p in plan]
        violations = verify_deployments(verification_problem(space.problem, deployments), deployments)
        if any(v.model_index is None for v in violations) and not any(v.model_index is not None for v in violations):
            return [p.candidate for p in plan]  # a shared limit broken by rounding: cut the whole combination
        return [plan[v.model_index].candidate for v in violations if v.model_index is not None]

    def _alternatives(self, space: SearchSpace, ranked: tuple[Plan, ...], time_limit_s: float, seed: int,
                      forbidden: frozenset[int]) -> tuple[dict, ...]:
        """GUIDE's outputs: top-3 plans, and the best-throughput / minimum-latency picks within budget.

        Without a budget the picks are limited to the optimum's cost, so they answer "what
        else could the same money buy". Each pick gets a quarter of the time limit (at least
        1 s): it is a side answer, and its ``status`` says whether it was proven.
        """
        problem = space.problem
        out = [_alternative(space, f"top-{i + 1}", problem.objective, plan) for i, plan in enumerate(ranked)]
        pick_limit_s = max(1.0, time_limit_s / 4)
        limit = problem.budget_per_hour if problem.budget_per_hour is not None else objective_value("min_cost", ranked[0])
        capped = dataclasses.replace(space, problem=problem.model_copy(update={"budget_per_hour": limit}))
        for kind, objective in (("best-throughput", "max_throughput"), ("min-latency", "min_latency")):
            if objective == problem.objective:
                continue
            pick = self.best_plans(capped, objective, k=1, forbidden=forbidden, time_limit_s=pick_limit_s, seed=seed)
            if pick.plans:
                out.append(_alternative(space, kind, objective, pick.plans[0], pick.status))
        return tuple(out)


def _alternative(space: SearchSpace, kind: str, objective: str, plan: Plan, status: Status = Status.OPTIMAL) -> dict:
    return {
        "kind": kind,
        "status": status.value,
        "objective_name": objective,
        "objective": objective_value(objective, plan),
        "cost_per_hour": objective_value("min_cost", plan),
        "deployments": [to_deployment(space, p).to_json() for p in plan],
    }


def get_solver(name: str, preset: SolverPreset | None = None) -> Solver:
    """Instantiate the solver registered as ``name``."""
    from guide_opt.solvers import load_all

    load_all()
    if name not in SOLVERS:
        raise InputError("--solver", f"unknown solver '{name}'", f"use one of {', '.join(sorted(SOLVERS))}")
    return SOLVERS[name](preset)
