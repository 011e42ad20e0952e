"""The solver interface and registry.

Every solver is one class in one file with ``solve(problem, *, time_limit_s, seed) ->
Solution``. It never raises on infeasibility (status INFEASIBLE with an explanation);
exceptions mean bad input (:class:`~guide_opt.errors.InputError`) or a bug. Capabilities
are class attributes; :data:`SOLVERS` maps names to classes for the CLI.

A subclass implements one primitive, :meth:`Solver.best_plans` (the k best plans with
distinct shapes for an objective, avoiding forbidden candidates). The base class turns it
into GUIDE's outputs -- the optimum, the top-3, the best-throughput and minimum-latency
picks within budget -- and checks the optimum before returning it: re-evaluated with the
full model and simulated at its own workload (:mod:`guide_opt.simcheck`); a plan that fails
becomes a no-good and the problem is solved again (:meth:`Solver.check_plan`,
:func:`with_nogoods`).
"""

from __future__ import annotations

import abc
import dataclasses
import time
from dataclasses import dataclass
from typing import ClassVar

from guide_opt.deadline import Deadline
from guide_opt.errors import InputError
from guide_opt.explain import explain_infeasible
from guide_opt.formulation import plan_quanta
from guide_opt.objectives import fleet_objectives
from guide_opt.plan import Plan, objective_value, to_deployment, verification_problem
from guide_opt.presets import SolverPreset, load_preset
from guide_opt.problem import Problem
from guide_opt.solution import Deployment, Solution, Status
from guide_opt.simcheck import DeploymentCheck, checks_apply
from guide_opt.space import SearchSpace, searched_space
from guide_opt.verify import verify_deployments

SOLVERS: dict[str, type["Solver"]] = {}

#: Plan-check rounds before giving up (each round adds at least one no-good).
MAX_VERIFICATION_ROUNDS = 20
#: Refuted plans listed in a note or an explanation.
MAX_REFUTED_REPORTED = 5


def register(cls: type["Solver"]) -> type["Solver"]:
    """Class decorator adding a solver to :data:`SOLVERS` under ``cls.name``."""
    SOLVERS[cls.name] = cls
    return cls


@dataclass(frozen=True)
class PlanResult:
    """What :meth:`Solver.best_plans` found: status, plans best first, proven bound.

    statuses: the status of each plan (empty: all have ``status``). unfinished: the status of
    each rank that was asked for but not found before the deadline (UNKNOWN) -- reported, not
    dropped; a rank that provably does not exist is simply absent.
    """

    status: Status
    plans: tuple[Plan, ...] = ()
    bound: float | None = None
    stats: dict = dataclasses.field(default_factory=dict)
    statuses: tuple[Status, ...] = ()
    unfinished: tuple[Status, ...] = ()

    def status_of(self, rank: int) -> Status:
        """The status of ``plans[rank]``."""
        return self.statuses[rank] if rank < len(self.statuses) else self.status


class Solver(abc.ABC):
    """Base class of all solvers.

    Class attributes:
        name: registry key (``--solver`` value).
        proves_optimality: True when an OPTIMAL status is a proof.
        simulated_only: True when it handles only the objectives the serving simulator checks
            (:attr:`~guide_opt.objectives.ObjectiveKind.simulated`); else every fleet objective.
    """

    name: ClassVar[str]
    proves_optimality: ClassVar[bool]
    simulated_only: ClassVar[bool] = False

    def __init__(self, preset: SolverPreset | None = None) -> None:
        self.preset = preset or load_preset()

    @property
    def objectives(self) -> frozenset[str]:
        """The problem objectives it handles, read from the registry (:func:`guide_opt.objectives.fleet_objectives`)."""
        return fleet_objectives(simulated_only=self.simulated_only)

    @abc.abstractmethod
    def best_plans(self, space: SearchSpace, objective: str, *, k: int, forbidden: frozenset[int],
                   deadline: Deadline | float, seed: int, tie_break: bool = True) -> PlanResult:
        """Up to ``k`` best plans with pairwise different shapes, never using a candidate whose id() is in ``forbidden``.

        ``deadline``: the budget every search step of this call draws on (seconds: a new one).
        ``tie_break``: break ties on the objective by its tie-break (cost or latency); False when
        only the objective's value is wanted (the binding-constraint explanation), which a
        solver may then skip.
        """

    def solve(self, problem: Problem, *, time_limit_s: float | None = None, seed: int | None = None,
              space: SearchSpace | None = None, alternatives: bool = True, check_by_simulation: bool = True,
              deadline: Deadline | None = None) -> Solution:
        """Find the best deployment(s) for ``problem``; never raises on infeasibility.

        ``time_limit_s`` (default: the preset's) bounds the whole call: the space build (when
        ``space`` is not given), the solves, plan checks and alternatives share one
        :class:`~guide_opt.deadline.Deadline` (pass ``deadline`` to share it further, e.g. with
        a build done before and the explanation after). ``stats["timing"]`` is the breakdown
        (:meth:`~guide_opt.deadline.Deadline.timing`).

        Each optimum is checked before it is returned (:meth:`check_plan`): re-evaluated from
        its ids with the full model (:mod:`guide_opt.verify`) and, with ``check_by_simulation``
        and an objective :mod:`guide_opt.simcheck` covers, simulated at its own workload. A
        plan that fails adds a no-good to a private copy of the space (:func:`with_nogoods`)
        and the problem is solved again, up to :data:`MAX_VERIFICATION_ROUNDS` times. Rounds
        that run out return the last plan as FEASIBLE with a note saying what it misses, never
        OPTIMAL; when the no-goods leave no plan the answer is INFEASIBLE and its explanation
        lists the plans the simulator refuted.
        """
        started = time.perf_counter()
        if problem.objective not in self.objectives:
            raise InputError("objective", f"solver '{self.name}' does not handle '{problem.objective}'",
                             f"use one of {', '.join(sorted(self.objectives))}")
        seed = seed if seed is not None else self.preset.seed
        deadline, space = searched_space(problem, space, deadline, time_limit_s if time_limit_s is not None else self.preset.time_limit_s)
        simulate = check_by_simulation and checks_apply(problem)
        working = with_nogoods(space)
        refuted: list[str] = []
        cuts = rounds = 0
        check: PlanCheck | None = None
        check_s = 0.0
        simulations: dict = {}  # every plan this solve simulates shares it: an LLM deployed as before is not simulated again
        exhausted = out_of_time = False
        while True:
            rounds += 1
            result = self.best_plans(working, problem.objective, k=3 if alternatives else 1, forbidden=frozenset(), deadline=deadline,
                                     seed=seed)
            if not result.plans:
                break
            check_started = time.perf_counter()
            check = self.check_plan(working, result.plans[0], simulate=simulate, simulations=simulations)
            # what simulating a plan costs: this check's time, or the simulation's own when its verdict came from the cache
            check_s = max([time.perf_counter() - check_started] + [v.simulation_s for v in check.simulated or ()])
            if check.ok:
                break
            refuted.append(_plan_words(working, result.plans[0]) + ": " + "; ".join(check.failures))
            out_of_time = deadline.expired
            if rounds >= MAX_VERIFICATION_ROUNDS or out_of_time:
                exhausted = True
                break
            cuts += check.nogood_count
            working = with_nogoods(working, check)
        stats = {"candidates": space.candidate_count,
                 "pruned_shapes": sum(sum(m.pruned.values()) for m in space.models),
                 "verification_rounds": rounds, "cuts": cuts, "simulation_checked": simulate, **result.stats}
        notes = []
        if refuted and not exhausted:
            notes.append(f"{len(refuted)} plan(s) that the static model preferred failed the check and were excluded before re-planning: "
                         + " | ".join(refuted[:MAX_REFUTED_REPORTED]) + (" | ..." if len(refuted) > MAX_REFUTED_REPORTED else ""))
        if not result.plans:
            explanation = None
            if refuted and result.status is Status.INFEASIBLE:
                explanation = _refuted_explanation(working, refuted)
            elif result.status is Status.INFEASIBLE:
                deadline.phase("explanation")
                explanation = explain_infeasible(space, self.preset, deadline)
            deadline.phase(None)
            stats["timing"] = deadline.timing()
            return Solution(result.status, None, result.bound, time.perf_counter() - started, self.name,
                            explanation=explanation, stats=stats, objective_name=problem.objective, notes=tuple(notes))
        best = result.plans[0]
        objective = objective_value(problem.objective, best)
        status, bound = result.status, (objective if result.status is Status.OPTIMAL else result.bound)
        if exhausted:
            status, bound = Status.FEASIBLE, None
            if out_of_time:
                build_s = deadline.phase_s("space_build")
                ran_out = f"the time limit ({deadline.limit_s:g} s) was spent" + (
                    f" (the candidate build took {build_s:.0f} s of it)" if build_s >= 0.5 * deadline.limit_s else "")
                fixes = "raise --time-limit-s so that the plan can be re-planned without what failed, relax the SLOs"
            else:
                ran_out, fixes = f"the plan check ran out after {rounds} rounds", "relax the SLOs"
            notes.append(f"{ran_out}; the returned plan FAILS the check ("
                         + "; ".join(check.failures) + f"): it is not vouched for -- {fixes}, allow more GPUs or "
                         "replicas, or run solve --refine")
        deployments = _with_simulated(tuple(to_deployment(working, p) for p in best), check.simulated if check else None)
        deadline.phase("alternatives")
        alts = (self._alternatives(working, result, deadline, seed, simulate, check.simulated if check else None, simulation_s=check_s,
                                   simulations=simulations) if alternatives else ())
        deadline.phase(None)
        stats["timing"] = deadline.timing()
        return Solution(
            status=status, objective=objective, bound=bound, wall_time_s=time.perf_counter() - started, solver=self.name,
            deployments=deployments, alternatives=alts, stats=stats, objective_name=problem.objective, notes=tuple(notes),
        )

    def check_plan(self, space: SearchSpace, plan: Plan, *, simulate: bool, simulations: dict | None = None) -> "PlanCheck":
        """Check one plan: full-model re-evaluation, then (``simulate``) the serving simulator at each LLM's workload.

        ``simulations``: the memo of LLM simulations shared by the plans of one solve
        (:data:`guide_opt.refine.evaluate.SimulationMemo`).

        Returns the no-goods that exclude what failed: a candidate that fails the full model
        is cut; a shared limit broken alone cuts the plan's combination of candidates (each of
        them may still be right with other partners); a simulated miss that more replicas may
        repair raises the candidate's replica floor above the plan's count, any other simulated
        miss cuts the candidate (see :mod:`guide_opt.simcheck`).
        """
        deployments = [to_deployment(space, p) for p in plan]
        violations = verify_deployments(verification_problem(space.problem, deployments), deployments)
        if violations:
            words = tuple(v.text for v in violations)
            per_llm = [v.model_index for v in violations if v.model_index is not None]
            if not per_llm:
                return PlanCheck(combinations=(frozenset(p.candidate.key for p in plan),), failures=words)
            return PlanCheck(cut=tuple(dict.fromkeys(plan[i].candidate.key for i in per_llm)), failures=words)
        if not simulate:
            return PlanCheck()
        from guide_opt.simcheck import check_plan as simulate_plan

        simulated = simulate_plan(space.problem, deployments, simulations=simulations)
        cut, floors, failures = [], [], []
        for pick, verdict in zip(plan, simulated):
            if verdict.meets:
                continue
            failures.append("in simulation " + "; ".join(verdict.violations or verdict.failed))
            if verdict.more_replicas_may_help():
                floors.append((pick.candidate.key, pick.replicas + 1))
            else:
                cut.append(pick.candidate.key)
        return PlanCheck(cut=tuple(cut), replica_floors=tuple(floors), failures=tuple(failures), simulated=simulated)

    def _alternatives(self, space: SearchSpace, ranked: PlanResult, deadline: Deadline, seed: int, simulate: bool = False,
                      optimum_simulated: "tuple[DeploymentCheck, ...] | None" = None, *, simulation_s: float = 0.0,
                      simulations: dict | None = None) -> tuple[dict, ...]:
        """GUIDE's outputs: top-3 plans, and the best-throughput / minimum-latency picks within budget.

        Without a budget the picks are limited to the optimum's cost, so they answer "what
        else could the same money buy". Every pick draws on the solve's ``deadline``; each one
        carries its ``status`` (OPTIMAL, FEASIBLE when not proven, UNKNOWN with no plan when the
        time limit was spent first) -- none is dropped. With ``simulate`` each alternative is
        simulated too (``meets_slo_in_simulation`` and each deployment's ``simulated``), but not
        re-planned: only the optimum is. ``ranked``: the optimum and the next plans of other
        shapes (one :meth:`best_plans` call); the optimum's simulation is reused, and so is each
        LLM simulated before in the same way (``simulations``). The other picks are found first,
        then simulated together (:func:`_simulate_alternatives`).
        """
        problem = space.problem
        found: list[dict | _Pick] = [_Pick.of(space, f"top-{i + 1}", problem.objective, plan, ranked.status_of(i),
                                              optimum_simulated if i == 0 else None)
                                     for i, plan in enumerate(ranked.plans)]
        found += [_unfinished(f"top-{len(ranked.plans) + i + 1}", problem.objective, status) for i, status in enumerate(ranked.unfinished)]
        # Without a budget the picks cost at most the optimum, held in the model's own integers: its cost in $/h is a sum
        # of floats, which read back in quanta could fall one short and leave out the optimum itself.
        capped = space if problem.budget_per_hour is not None else dataclasses.replace(
            space, cost_limit_quanta=plan_quanta("min_cost", ranked.plans[0]))
        for kind, objective in (("best-throughput", "max_throughput"), ("min-latency", "min_latency")):
            if objective == problem.objective:
                continue
            if deadline.expired:
                found.append(_unfinished(kind, objective, Status.UNKNOWN))
                continue
            pick = self.best_plans(capped, objective, k=1, forbidden=frozenset(), deadline=deadline, seed=seed)
            if pick.plans:
                found.append(_Pick.of(space, kind, objective, pick.plans[0], pick.status))
            elif pick.status is not Status.INFEASIBLE:
                found.append(_unfinished(kind, objective, pick.status))
        picks = [f for f in found if isinstance(f, _Pick)]
        simulated = _simulate_alternatives(space, picks, deadline, simulation_s, simulations) if simulate else {}
        return tuple(f if isinstance(f, dict) else _alternative(space, f, simulate, simulated.get(id(f), f.simulated)) for f in found)


#: How much longer a round of plan simulations side by side takes than one simulation alone (the
#: optimum's check): measured 1.3x for two at once on the 2-core CI-kind machine (fleet-mixed-inventory,
#: 0.77 s per round against 0.58 s alone); 1.5 leaves room for a busier machine.
SIDE_BY_SIDE_SLOWDOWN = 1.5


@dataclass(frozen=True)
class _Pick:
    """An alternative plan found, before it is simulated: its kind, objective, plan, status, deployments and (when known) simulation."""

    kind: str
    objective: str
    plan: Plan
    status: Status
    deployments: tuple[Deployment, ...]
    simulated: "tuple[DeploymentCheck, ...] | None" = None

    @classmethod
    def of(cls, space: SearchSpace, kind: str, objective: str, plan: Plan, status: Status,
           simulated: "tuple[DeploymentCheck, ...] | None" = None) -> "_Pick":
        """The pick of ``plan``, its deployments built once (for the simulation and the JSON)."""
        return cls(kind, objective, plan, status, tuple(to_deployment(space, p) for p in plan), simulated)


def _simulate_alternatives(space: SearchSpace, picks: list[_Pick], deadline: Deadline, simulation_s: float,
                           simulations: dict | None = None) -> dict[int, tuple]:
    """The simulator's verdicts on the ``picks`` not simulated yet, keyed by ``id(pick)``.

    The simulations are independent, so they run side by side (:func:`guide_opt.parallel.forked_map`).
    Each pick is expected to take :data:`SIDE_BY_SIDE_SLOWDOWN` x ``simulation_s`` (what the optimum's
    check took alone). When the ``deadline`` leaves room for all of them, the LLM simulations of
    every pick share one pool (:func:`guide_opt.simcheck.check_plans`: an LLM deployed alike in two
    picks is simulated once, and a fleet pick with hundreds of new deployments spreads them over
    the workers); otherwise the picks run in rounds of as many as there are workers, one pick per
    worker, in the picks' order, a round starting only while the time left covers the round
    before (the first: the expected time). The rest stay unsimulated. Each pick reads the
    LLMs ``simulations`` already holds (deployed as in a plan checked before) instead of
    simulating them again; the expected time stays that of a whole plan, an upper bound. A
    pick whose check the table cache keeps (an earlier solve simulated it) is read here first,
    so a solve whose picks were all checked before starts no worker.
    """
    from guide_opt.parallel import forked_map, workers_used
    from guide_opt.simcheck import check_plan as simulate_plan, check_plans, kept_check

    verdicts: dict[int, tuple] = {}
    pending = []
    for p in picks:  # plans checked by an earlier solve are read from the table cache here, without a worker
        if p.simulated is None:
            kept = kept_check(space.problem, p.deployments)
            if kept is None:
                pending.append(p)
            else:
                verdicts[id(p)] = kept
    workers = workers_used(None, len(pending))
    problem = space.problem
    expected_s = SIDE_BY_SIDE_SLOWDOWN * simulation_s
    rounds = -(-len(pending) // workers) if pending else 0
    if pending and deadline.remaining_s() >= rounds * expected_s:
        found = check_plans(problem, [p.deployments for p in pending], {} if simulations is None else simulations)
        return verdicts | {id(p): v for p, v in zip(pending, found)}
    while pending and deadline.remaining_s() >= expected_s:
        chosen, pending = pending[:workers], pending[workers:]
        started = time.perf_counter()
        found = forked_map(lambda p: simulate_plan(problem, p.deployments, simulations=simulations), chosen, workers)
        verdicts |= {id(p): v for p, v in zip(chosen, found)}
        expected_s = time.perf_counter() - started
    return verdicts


def _alternative(space: SearchSpace, pick: _Pick, simulate: bool, simulated: "tuple[DeploymentCheck, ...] | None") -> dict:
    """One alternative's JSON; with ``simulate``, its simulation (None: not run, the time limit was spent)."""
    plan, deployments = pick.plan, pick.deployments
    out = {
        "kind": pick.kind,
        "status": pick.status.value,
        "objective_name": pick.objective,
        "objective": objective_value(pick.objective, plan),
        "cost_per_hour": objective_value("min_cost", plan),
    }
    if simulate:
        if simulated is not None:
            deployments = _with_simulated(deployments, simulated)
            out["meets_slo_in_simulation"] = all(v.meets for v in simulated)
        else:
            out["meets_slo_in_simulation"] = None
            out["note"] = "not simulated: the time limit was spent"
    out["deployments"] = [d.to_json() for d in deployments]
    return out


def _unfinished(kind: str, objective: str, status: Status) -> dict:
    """An alternative that was asked for but not found: its status says why (UNKNOWN: the time limit was spent first)."""
    return {"kind": kind, "status": status.value, "objective_name": objective, "objective": None, "cost_per_hour": None,
            "deployments": [], "note": "not found within the time limit (raise --time-limit-s)"}


@dataclass(frozen=True)
class PlanCheck:
    """What :meth:`Solver.check_plan` found. Empty ``failures``: the plan holds.

    cut: candidate keys (:attr:`~guide_opt.space.Candidate.key`) to remove. replica_floors:
    (candidate key, fewest replicas now required). combinations: sets of candidate keys never
    to be used together. simulated: the simulator's verdict per LLM (None when not simulated).
    """

    cut: tuple[tuple, ...] = ()
    replica_floors: tuple[tuple[tuple, int], ...] = ()
    combinations: tuple[frozenset[tuple], ...] = ()
    failures: tuple[str, ...] = ()
    simulated: "tuple[DeploymentCheck, ...] | None" = None

    @property
    def ok(self) -> bool:
        """True when nothing failed."""
        return not self.failures

    @property
    def nogood_count(self) -> int:
        """No-goods this check adds."""
        return len(self.cut) + len(self.replica_floors) + len(self.combinations)


def with_nogoods(space: SearchSpace, check: PlanCheck | None = None) -> SearchSpace:
    """A copy of ``space`` (its own candidate lists) with ``check``'s no-goods applied; ``space`` is not changed.

    A replica floor replaces the candidate by a copy whose ``replicas_min`` is the floor, so
    every solver (and the dominance pruning, which reads ``replicas_min``) sees it exactly.
    """
    check = check or PlanCheck()
    cut, floors = set(check.cut), dict(check.replica_floors)
    models = []
    for ms in space.models:
        candidates = []
        for c in ms.candidates:
            if c.key in cut:
                continue
            if c.key in floors:
                c = dataclasses.replace(c, replicas_min=max(floors[c.key], c.replicas_min or 1))
            candidates.append(c)
        models.append(dataclasses.replace(ms, candidates=candidates))
    return dataclasses.replace(space, models=models, excluded_combinations=space.excluded_combinations + check.combinations)


def _with_simulated(deployments: tuple, verdicts) -> tuple:
    if verdicts is None:
        return deployments
    return tuple(dataclasses.replace(d, simulated=v.to_json()) for d, v in zip(deployments, verdicts))


def _plan_words(space: SearchSpace, plan: Plan) -> str:
    return " + ".join(to_deployment(space, p).describe() for p in plan)


def _refuted_explanation(space: SearchSpace, refuted: list[str]) -> dict:
    """The explanation of a problem whose every statically feasible plan failed the plan check."""
    reasons = [f"every plan the static model accepts failed the plan check ({len(refuted)} refuted); no other plan remains"]
    reasons += [f"refuted: {r}" for r in refuted[:MAX_REFUTED_REPORTED]]
    return {"reasons": reasons, "conflicting_constraints": [], "relaxations": [], "cheapest_relaxation": None,
            "refuted_plans": refuted}
