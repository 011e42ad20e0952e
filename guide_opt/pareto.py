"""The exact Pareto frontier of cost, latency and throughput (``objective: pareto``).

Three objectives of a plan (one pick per LLM, as in :mod:`guide_opt.plan`):

- **cost** -- $/h of all replicas (minimized);
- **latency** -- the *mean request latency* ``TTFT + (output_tokens - 1) x TPOT`` (ms) at the
  chosen batch size, as the static performance model predicts it -- the same figure the
  ``min_latency`` objective uses (summed over LLMs when there are several). The SLOs
  (``ttft_ms``, ``tpot_ms`` at the problem's ``slo.percentile``) stay hard constraints on
  every point; the static model's predictions are median-like, so the percentile is the one
  the SLO checks refer to and is reported with the frontier (``slo_percentile``);
- **throughput** -- generated tokens/s of all replicas (maximized; capacity, as in
  ``max_throughput``).

:func:`pareto_frontier` computes every non-dominated point exactly with CP-SAT by the
epsilon-constraint method, on the integer quanta of :mod:`guide_opt.formulation`
(cost ``COST_QUANTUM_USD_PER_H``, latency ``TIME_QUANTUM_US``, throughput
``THROUGHPUT_QUANTUM_TOKENS_PER_S``; two plans equal in all three quanta are one point):

``lexmin(eL, eT)`` minimizes cost subject to ``latency <= eL`` and ``throughput >= eT``, then
latency at that cost, then maximizes throughput at that cost and latency. A lexicographic
optimum is non-dominated (anything dominating it would satisfy the same bounds and be
lexicographically better). For a throughput floor ``theta`` the inner loop is the classic
bi-objective epsilon-constraint sweep: ``eL = +inf``, then ``eL = latency(z) - 1`` after each
point ``z``, until infeasible; it lists every (cost, latency)-non-dominated point among plans
with throughput ``>= theta``. The outer loop starts at ``theta = 0`` and moves to ``theta = 1 +``
the smallest throughput on the last sweep: for every floor in between, the sweep would be the
same, and every non-dominated point ``z`` is found by the sweep at ``theta = throughput(z)``.
So the union of the sweeps is the whole frontier, each point optimal for its bounds.

A solve whose bounds lie inside an earlier solve's bounds and whose earlier optimum satisfies
them is answered from that optimum (it is optimal for the smaller box too); an earlier
infeasible box makes every box inside it infeasible. This removes most repeated solves.

:func:`brute_force_frontier` enumerates every plan instead (the cross-check of the tests and
of ``--solver exhaustive``).
"""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass, field

from guide_opt.cp_sat import cp_model
from guide_opt.deadline import Deadline
from guide_opt.errors import InputError
from guide_opt.formulation import Formulation, build_formulation, objective_coefficient, run_cp_sat
from guide_opt.quanta import COST_QUANTUM_USD_PER_H, to_quanta
from guide_opt.plan import Pick, Plan, objective_value, shared_limit_violations, to_deployment
from guide_opt.presets import SolverPreset, load_preset
from guide_opt.problem import Problem
from guide_opt.solution import Solution, Status
from guide_opt.space import SearchSpace, replica_limit, searched_space
from guide_opt.verify import verify_deployments

#: Which latency the frontier trades (see the module docstring).
LATENCY_KIND = "mean_request_latency_ms"
#: Safety cap on frontier points; a frontier cut there is reported as not proven complete.
MAX_POINTS = 2000
#: Verification rounds before giving up (each round cuts at least one candidate).
MAX_VERIFICATION_ROUNDS = 10
_INT_MIN, _INT_MAX = -(2**62), 2**62



def plan_quanta(plan: Plan) -> tuple[int, int, int]:
    """(cost, latency, throughput) of ``plan`` in the integer quanta the CP-SAT model uses."""
    cost = sum(p.replicas * to_quanta(p.candidate.shape.usd_per_replica_hour, COST_QUANTUM_USD_PER_H) for p in plan)
    latency = sum(objective_coefficient("min_latency", p.candidate) for p in plan)
    throughput = sum(p.replicas * objective_coefficient("max_throughput", p.candidate) for p in plan)
    return cost, latency, throughput


@dataclass(frozen=True)
class ParetoPoint:
    """One non-dominated plan: its cost ($/h), mean request latency (ms), throughput (tokens/s)."""

    cost_per_hour: float
    latency_ms: float
    throughput_tokens_per_s: float
    plan: Plan
    quanta: tuple[int, int, int]

    @classmethod
    def of(cls, plan: Plan) -> "ParetoPoint":
        """The point of ``plan`` (values re-computed from its candidates)."""
        return cls(objective_value("min_cost", plan), objective_value("min_latency", plan), objective_value("max_throughput", plan),
                   plan, plan_quanta(plan))

    def dominates(self, other: "ParetoPoint") -> bool:
        """True when this point is no worse in all three quanta and better in one."""
        (c1, l1, t1), (c2, l2, t2) = self.quanta, other.quanta
        return c1 <= c2 and l1 <= l2 and t1 >= t2 and self.quanta != other.quanta

    def to_json(self, space: SearchSpace) -> dict:
        """The contract's point: ``cost_per_hour``, latency, throughput and its ``deployments``."""
        return {
            "cost_per_hour": round(self.cost_per_hour, 6),
            "latency_ms": self.latency_ms,
            "throughput_tokens_per_s": self.throughput_tokens_per_s,
            "gpus": sum(p.gpus for p in self.plan),
            "deployments": [to_deployment(space, p).to_json() for p in self.plan],
        }


@dataclass(frozen=True)
class Frontier:
    """A Pareto frontier: points by increasing cost (then latency), and how it was found.

    status: OPTIMAL when every solve was proven (the frontier is exact and complete),
    FEASIBLE when a time limit or :data:`MAX_POINTS` cut it short, INFEASIBLE when the problem
    has no plan at all, UNKNOWN when nothing was found in time.
    slo_latency_ms: the request latency the SLOs imply, ``sum(ttft_ms + (output_tokens - 1)
    x tpot_ms)`` over LLMs (None unless every LLM sets both).
    """

    status: Status
    points: tuple[ParetoPoint, ...]
    wall_time_s: float
    solves: int = 0
    reused: int = 0
    slo_latency_ms: float | None = None
    slo_percentile: int = 50
    stats: dict = field(default_factory=dict)

    @property
    def cheapest(self) -> ParetoPoint | None:
        """The minimum-cost point (the lexicographic cost / latency / throughput optimum)."""
        return self.points[0] if self.points else None


def nondominated(points: list[ParetoPoint]) -> list[ParetoPoint]:
    """The points no other point dominates, one per distinct quanta vector, sorted by cost then latency."""
    unique: dict[tuple[int, int, int], ParetoPoint] = {}
    for p in points:
        unique.setdefault(p.quanta, p)
    ordered = sorted(unique.values(), key=lambda p: (p.quanta[0], p.quanta[1], -p.quanta[2]))
    kept: list[ParetoPoint] = []
    for p in ordered:  # a dominating point sorts first
        if not any(k.dominates(p) for k in kept):
            kept.append(p)
    return kept


def slo_latency_ms(space: SearchSpace) -> float | None:
    """The request latency (ms) implied by the SLOs, summed over LLMs; None unless every LLM sets TTFT and TPOT."""
    total = 0.0
    for ms in space.models:
        slo = ms.requirement.slo
        if slo.ttft_ms is None or slo.tpot_ms is None:
            return None
        total += slo.ttft_ms + (ms.output_tokens - 1) * slo.tpot_ms
    return total


def check_request(problem: Problem, solver: str) -> None:
    """Refuse, before any candidate is evaluated, a frontier that cannot be computed: a solver without
    frontiers, or a problem with no limit on cost or GPUs (:class:`~guide_opt.errors.InputError`)."""
    if solver not in ("cpsat", "exhaustive"):
        raise InputError("--solver", f"solver '{solver}' does not compute Pareto frontiers", "use cpsat (exact) or exhaustive (brute force)")
    if problem.budget_per_hour is None and problem.hardware.max_gpus is None and not problem.hardware.inventory:
        raise InputError("budget_per_hour", "pareto trades throughput against cost, so it needs a limit (more GPUs always add throughput)",
                         "set budget_per_hour, hardware.max_gpus or hardware.inventory")


class _EpsilonSolver:
    """The lexicographic epsilon-constraint oracle over one CP-SAT model (bounds changed in place)."""

    def __init__(self, form: Formulation, preset: SolverPreset, deadline: Deadline, seed: int) -> None:
        self.form, self.preset, self.deadline, self.seed = form, preset, deadline, seed
        model = form.model
        space = form.space
        cost_ub = lat_ub = thr_ub = 0
        for indices in form.by_model:
            cands = [form.candidates[i] for i in indices]
            if not cands:
                continue
            cost_ub += max(replica_limit(space, c) * to_quanta(c.shape.usd_per_replica_hour, COST_QUANTUM_USD_PER_H) for c in cands)
            lat_ub += max(objective_coefficient("min_latency", c) for c in cands)
            thr_ub += max(replica_limit(space, c) * objective_coefficient("max_throughput", c) for c in cands)
        self.cost = model.NewIntVar(0, max(cost_ub, 0), "pareto_cost")
        self.latency = model.NewIntVar(0, max(lat_ub, 0), "pareto_latency")
        self.throughput = model.NewIntVar(0, max(thr_ub, 0), "pareto_throughput")
        model.Add(self.cost == form.cost_expr)
        model.Add(self.latency == form.latency_expr)
        model.Add(self.throughput == form.throughput_expr)
        self._domains = {v.Index(): (0, ub) for v, ub in ((self.cost, cost_ub), (self.latency, lat_ub), (self.throughput, thr_ub))}
        # Latency then throughput in one solve when latency x weight stays exactly representable.
        self.weight = thr_ub + 1
        self.combined = lat_ub * self.weight + thr_ub < 2**53
        self.solves = 0
        self.all_proven = True

    def _bound(self, var: cp_model.IntVar, lo: int, hi: int) -> None:
        dom = self.form.model.Proto().variables[var.Index()].domain
        base_lo, base_hi = self._domains[var.Index()]
        dom[0], dom[1] = max(lo, base_lo), min(hi, base_hi)

    def _solve(self) -> tuple[Status, cp_model.CpSolver]:
        status, solver = run_cp_sat(self.form.model, self.preset, self.deadline, seed=self.seed)
        self.solves += 1
        if status is not Status.OPTIMAL and status is not Status.INFEASIBLE:
            self.all_proven = False
        return status, solver

    def lexmin(self, max_latency: int, min_throughput: int) -> tuple[Status, Plan | None]:
        """Lexicographic (cost, latency, -throughput) optimum with ``latency <= max_latency`` and ``throughput >= min_throughput`` (quanta)."""
        model = self.form.model
        lat_lo, lat_hi = self._domains[self.latency.Index()]
        thr_lo, thr_hi = self._domains[self.throughput.Index()]
        cost_lo, cost_hi = self._domains[self.cost.Index()]
        if max_latency < lat_lo or min_throughput > thr_hi:
            return Status.INFEASIBLE, None
        try:
            self._bound(self.latency, lat_lo, max_latency)
            self._bound(self.throughput, min_throughput, thr_hi)
            model.Minimize(self.cost)
            status, solver = self._solve()
            if not status.found:
                return status, None
            self._bound(self.cost, cost_lo, int(solver.Value(self.cost)))
            if self.combined:
                model.Minimize(self.latency * self.weight - self.throughput)
                status2, solver2 = self._solve()
            else:
                model.Minimize(self.latency)
                status2, solver2 = self._solve()
                if status2.found:
                    self._bound(self.latency, lat_lo, int(solver2.Value(self.latency)))
                    model.Maximize(self.throughput)
                    status2, solver2 = self._solve()
            if not status2.found:  # time ran out in a tie-break: keep the stage-1 plan
                return Status.FEASIBLE, self.form.decode(solver)
            return (Status.OPTIMAL if status is Status.OPTIMAL and status2 is Status.OPTIMAL else Status.FEASIBLE), self.form.decode(solver2)
        finally:
            self._bound(self.cost, cost_lo, cost_hi)
            self._bound(self.latency, lat_lo, lat_hi)
            self._bound(self.throughput, thr_lo, thr_hi)


def _sweep(oracle: _EpsilonSolver, max_points: int) -> tuple[list[ParetoPoint], Status, int, bool]:
    """Run the two nested epsilon-constraint loops; returns points, status of the first solve, reused answers, truncated."""
    boxes: list[tuple[int, int, ParetoPoint | None]] = []  # (max latency, min throughput, optimum or None if infeasible)
    reused = 0

    def lexmin(max_latency: int, min_throughput: int) -> tuple[Status, ParetoPoint | None]:
        nonlocal reused
        for lat0, thr0, z in boxes:
            if max_latency <= lat0 and min_throughput >= thr0:  # this box lies inside an earlier one
                if z is None or (z.quanta[1] <= max_latency and z.quanta[2] >= min_throughput):
                    reused += 1
                    return (Status.INFEASIBLE if z is None else Status.OPTIMAL), z
        status, plan = oracle.lexmin(max_latency, min_throughput)
        point = ParetoPoint.of(plan) if plan is not None else None
        if status is Status.OPTIMAL or status is Status.INFEASIBLE:
            boxes.append((max_latency, min_throughput, point))
        return status, point

    found: dict[tuple[int, int, int], ParetoPoint] = {}
    first_status: Status | None = None
    theta = 0
    truncated = False
    while True:
        sweep: list[ParetoPoint] = []
        max_latency = _INT_MAX
        while True:
            status, z = lexmin(max_latency, theta)
            if first_status is None:
                first_status = status
            if z is None:
                break
            sweep.append(z)
            found.setdefault(z.quanta, z)
            if len(found) >= max_points:
                truncated = True
                break
            max_latency = z.quanta[1] - 1
        if not sweep or truncated:
            break
        theta = min(z.quanta[2] for z in sweep) + 1
    return list(found.values()), first_status or Status.UNKNOWN, reused, truncated


def pareto_frontier(space: SearchSpace, preset: SolverPreset | None = None, *, time_limit_s: float | None = None, seed: int | None = None,
                    max_points: int = MAX_POINTS, forbidden: frozenset[int] = frozenset(), prune_dominated: bool = True,
                    deadline: Deadline | None = None) -> Frontier:
    """The exact (cost, latency, throughput) Pareto frontier of ``space`` by epsilon-constraint over CP-SAT.

    Every CP-SAT solve of the sweep draws on one ``deadline`` (default: a new one of
    ``time_limit_s``, else the preset's limit); a sweep cut short by it is FEASIBLE, not
    OPTIMAL. Candidates whose id() is in ``forbidden`` are left out; dominated candidates are
    pruned first (exact, :mod:`guide_opt.pruning`) unless ``prune_dominated`` is False.
    """
    started = time.perf_counter()
    preset = preset or load_preset()
    if deadline is None:
        deadline = Deadline(time_limit_s if time_limit_s is not None else preset.time_limit_s)
    seed = seed if seed is not None else preset.seed
    form = build_formulation(space, "pareto", forbidden=forbidden, prune=prune_dominated)
    oracle = _EpsilonSolver(form, preset, deadline, seed)
    points, first_status, reused, truncated = _sweep(oracle, max_points)
    points = nondominated(points)  # a no-op on an exact run; guards a time-limited one
    if points:
        status = Status.OPTIMAL if oracle.all_proven and not truncated else Status.FEASIBLE
    else:
        status = Status.INFEASIBLE if first_status is Status.INFEASIBLE else first_status
    percentiles = {ms.requirement.slo.percentile for ms in space.models}
    return Frontier(status=status, points=tuple(points), wall_time_s=time.perf_counter() - started, solves=oracle.solves, reused=reused,
                    slo_latency_ms=slo_latency_ms(space), slo_percentile=max(percentiles),
                    stats={"solves": oracle.solves, "reused_answers": reused, "points": len(points), "truncated": truncated,
                           "dominated_pruned": form.pruned, "candidates_in_model": len(form.candidates)})


def brute_force_frontier(space: SearchSpace, *, max_plans: int = 2_000_000) -> Frontier:
    """The frontier by enumerating every plan (every candidate x every replica count within the limits).

    Meant for small problems (tests, ``--solver exhaustive``); raises :class:`InputError`
    beyond ``max_plans`` plans.
    """
    started = time.perf_counter()
    options: list[list[Pick]] = []
    for ms in space.models:
        picks = []
        for c in ms.candidates:
            if not c.feasible:
                continue
            picks.extend(Pick(c, r) for r in range(c.replicas_min, replica_limit(space, c) + 1))
        options.append(picks)
    total = math.prod(len(o) for o in options)
    if total > max_plans:
        raise InputError("--solver", f"exhaustive enumeration of the frontier would visit {total:,} plans", "use --solver cpsat")
    points = []
    for plan in itertools.product(*options):
        if not shared_limit_violations(space, plan):
            points.append(ParetoPoint.of(tuple(plan)))
    points = nondominated(points)
    status = Status.OPTIMAL if points else Status.INFEASIBLE
    return Frontier(status=status, points=tuple(points), wall_time_s=time.perf_counter() - started, slo_latency_ms=slo_latency_ms(space),
                    slo_percentile=max(ms.requirement.slo.percentile for ms in space.models), stats={"plans_examined": total, "points": len(points)})


def solve_pareto(problem: Problem, *, solver: str = "cpsat", preset: SolverPreset | None = None, time_limit_s: float | None = None,
                 seed: int | None = None, space: SearchSpace | None = None,
                 deadline: Deadline | None = None) -> tuple[Solution, Frontier, SearchSpace]:
    """Compute the frontier of ``problem`` and the :class:`Solution` of its cheapest point.

    ``time_limit_s`` bounds the whole call, the space build included (``deadline``: one started
    by the caller, who may have built ``space`` under it).

    Every point is verified with the full model (:func:`~guide_opt.verify.verify_deployments`);
    a point that fails is cut off and the frontier recomputed. The solution's ``objective``
    is the cheapest point's $/h; ``stats`` holds the frontier statistics. Infeasible problems
    carry the same explanation as the other objectives.
    """
    check_request(problem, solver)
    started = time.perf_counter()
    preset = preset or load_preset()
    deadline, space = searched_space(problem, space, deadline, time_limit_s if time_limit_s is not None else preset.time_limit_s)
    forbidden: set[int] = set()
    failures: list[str] = []
    for _ in range(MAX_VERIFICATION_ROUNDS):
        if solver == "exhaustive":
            frontier = brute_force_frontier(space)
        else:
            frontier = pareto_frontier(space, preset, seed=seed, forbidden=frozenset(forbidden), deadline=deadline)
        bad = set()
        failures = []
        for point in frontier.points:
            deployments = [to_deployment(space, p) for p in point.plan]
            for v in verify_deployments(problem, deployments):
                failures.append(v.text)
                bad.update(id(p.candidate) for p in (point.plan if v.model_index is None else [point.plan[v.model_index]]))
        if not bad or solver == "exhaustive":
            break
        forbidden |= bad
    stats = {"candidates": space.candidate_count,
             "pruned_shapes": sum(sum(m.pruned.values()) for m in space.models), "cuts": len(forbidden), **frontier.stats,
             "latency_kind": LATENCY_KIND}
    if failures:
        stats["verification_failures"] = failures
    cheapest = frontier.cheapest
    if cheapest is None:
        explanation = None
        if frontier.status is Status.INFEASIBLE:
            from guide_opt.explain import explain_infeasible

            deadline.phase("explanation")
            explanation = explain_infeasible(space, preset, deadline)
        deadline.phase(None)
        stats["timing"] = deadline.timing()
        solution = Solution(frontier.status, None, None, time.perf_counter() - started, solver, explanation=explanation, stats=stats,
                            objective_name="pareto")
        return solution, frontier, space
    bound = cheapest.cost_per_hour if frontier.status is Status.OPTIMAL else None
    deadline.phase(None)
    stats["timing"] = deadline.timing()
    solution = Solution(status=frontier.status, objective=cheapest.cost_per_hour, bound=bound, wall_time_s=time.perf_counter() - started,
                        solver=solver, deployments=tuple(to_deployment(space, p) for p in cheapest.plan), stats=stats, objective_name="pareto")
    return solution, frontier, space


def frontier_json(space: SearchSpace, frontier: Frontier) -> dict:
    """The ``pareto`` additions to the solution JSON: ``points[]`` and what the axes mean."""
    return {
        "points": [p.to_json(space) for p in frontier.points],
        "pareto": {"latency": LATENCY_KIND, "slo_percentile": frontier.slo_percentile, "slo_latency_ms": frontier.slo_latency_ms,
                   "status": frontier.status.value, "solves": frontier.solves, "reused_answers": frontier.reused,
                   "wall_time_s": round(frontier.wall_time_s, 4)},
    }
