"""Why a problem is infeasible, and what binds a feasible one.

Two layers (STYLE.md rule 8):

1. Data pre-checks that are not the solver's job: shapes pruned before evaluation (heads
   not divisible by TP, weights larger than a GPU, no price, precision not tolerated) and,
   per LLM, which constraint family rules out each evaluated candidate, with the best
   value any candidate reaches ("best TPOT 24.1 ms on h100-sxm TP=4 > SLO 20 ms").
2. The CP-SAT model with every constraint family behind an enforcement literal, re-solved
   with those literals as assumptions: CP-SAT names a conflicting subset. For each family
   in it, dropping that family alone and optimizing the quantity it limits gives the
   smallest relaxation that makes the problem feasible ("budget_per_hour $52.40",
   "models[0].tpot_ms 62 ms"); the cheapest is the smallest relative change.

For a solved problem :func:`explain_binding` drops each relaxable family in turn and
reports what relaxing it would gain, re-solving with the solver it is given (any
:class:`PlanRanker`: the solvers sit above this module, which imports none of them).
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from guide_opt.cp_sat import cp_model
from guide_opt.deadline import Deadline
from guide_opt.families import Family
from guide_opt.formulation import build_formulation, objective_term, plan_quanta, run_cp_sat
from guide_opt.objectives import OBJECTIVES
from guide_opt.plan import Plan, objective_value
from guide_opt.quanta import TIME_QUANTUM_US, to_quanta
from guide_opt.presets import SolverPreset
from guide_opt.solution import Status
from guide_opt.space import ModelSpace, SearchSpace

def candidate_report(ms: ModelSpace) -> dict:
    """Per-LLM pre-check: pruned shapes, why candidates fail, and the best values reached."""
    counts = Counter(v for c in ms.candidates for v in c.violations)
    fitting = [c for c in ms.candidates if c.fits]
    report: dict = {
        "model": ms.label,
        "shapes_pruned": [{"reason": r, "count": n} for r, n in sorted(ms.pruned.items(), key=lambda kv: -kv[1])],
        "candidates": len(ms.candidates),
        "candidates_feasible": sum(c.feasible for c in ms.candidates),
        "candidates_failing": {family: counts[family] for family in FAMILY_KINDS if FAMILY_KINDS[family].failing and counts[family]},
    }
    if fitting:
        best_ttft = min(fitting, key=lambda c: c.ttft_s)
        best_tpot = min(fitting, key=lambda c: c.tpot_s)
        report["best_ttft_ms"] = {"value": best_ttft.ttft_s * 1e3, "at": f"{best_ttft.shape.label()} batch {best_ttft.batch}"}
        report["best_tpot_ms"] = {"value": best_tpot.tpot_s * 1e3, "at": f"{best_tpot.shape.label()} batch {best_tpot.batch}"}
    return report


def _precheck_reasons(space: SearchSpace) -> list[str]:
    reasons = []
    for ms in space.models:
        if not ms.shapes:
            pruned = "; ".join(f"{r} ({n} shapes)" for r, n in sorted(ms.pruned.items(), key=lambda kv: -kv[1])[:4])
            reasons.append(f"{ms.label}: no GPU/TP/PP/engine/precision combination can run it: {pruned}")
            continue
        if not any(c.feasible for c in ms.candidates):
            counts = Counter(v for c in ms.candidates for v in c.violations)
            parts = [f"{n} of {len(ms.candidates)} candidates {FAMILY_KINDS[f].failing}" for f, n in counts.most_common()]
            fitting = [c for c in ms.candidates if c.fits]
            slo = ms.requirement.slo
            if fitting and slo.tpot_ms is not None:
                best = min(fitting, key=lambda c: c.tpot_s)
                parts.append(f"the best TPOT is {best.tpot_s * 1e3:.1f} ms ({best.shape.label()}, batch {best.batch}) vs the SLO {slo.tpot_ms:g} ms")
            if fitting and slo.ttft_ms is not None:
                best = min(fitting, key=lambda c: c.ttft_s)
                parts.append(f"the best TTFT is {best.ttft_s * 1e3:.1f} ms ({best.shape.label()}, batch {best.batch}) vs the SLO {slo.ttft_ms:g} ms")
            reasons.append(f"{ms.label}: " + "; ".join(parts))
    return reasons


def explanation_deadline(preset: SolverPreset, deadline: Deadline | float | None) -> Deadline:
    """``deadline`` as a :class:`Deadline`; None: a budget of the preset's time limit for the whole explanation."""
    return Deadline.of(deadline if deadline is not None else preset.time_limit_s)


def minimal_conflict(model: cp_model.CpModel, family_literals: dict[Family, cp_model.IntVar], preset: SolverPreset,
                     deadline: Deadline | float | None = None) -> list[Family]:
    """A minimal set of the named families whose literals, assumed true, make ``model`` infeasible.

    CP-SAT's sufficient assumptions give a conflicting subset; deletion filtering then drops
    every family whose removal keeps the rest infeasible, so each name returned is necessary
    to the conflict (in name order). Empty when the model is feasible with every family enforced. Every
    re-solve draws on ``deadline`` (see :func:`explanation_deadline`); a deletion step that
    runs out of time keeps its family (the set stays a conflict, perhaps not a minimal one).
    """
    deadline = explanation_deadline(preset, deadline)
    by_index = {v.Index(): f for f, v in family_literals.items()}

    def by_name(families) -> list[Family]:
        return sorted(families, key=lambda f: f.name)

    def infeasible_under(names: list[Family]) -> tuple[bool, list[Family]]:
        model.ClearAssumptions()
        model.AddAssumptions([family_literals[n] for n in names])
        # one worker: cores are reported by the single-thread search
        status, solver = run_cp_sat(model, preset, deadline, num_workers=1)
        if status is not Status.INFEASIBLE:
            return False, []
        return True, by_name(by_index[i] for i in solver.SufficientAssumptionsForInfeasibility() if i in by_index)

    infeasible, core = infeasible_under(by_name(family_literals))
    if infeasible:
        for name in list(core):
            still, smaller = infeasible_under([n for n in core if n != name])
            if still:
                core = smaller or [n for n in core if n != name]
    model.ClearAssumptions()
    return core if infeasible else []


def conflicting_families(space: SearchSpace, preset: SolverPreset, deadline: Deadline | float | None = None) -> list[Family]:
    """A minimal set of constraint families that together make the problem infeasible (see :func:`minimal_conflict`)."""
    form = build_formulation(space, "min_cost", explain=True)
    return minimal_conflict(form.model, form.family_literals, preset, deadline)


def _relaxed_optimum(space: SearchSpace, dropped: Family, preset: SolverPreset, deadline: Deadline) -> Plan | None:
    """Optimize the quantity limited by ``dropped`` with every other family enforced (None: not relaxable, or no plan)."""
    form = build_formulation(space, "min_cost", explain=True)
    for family, lit in form.family_literals.items():
        form.model.Add(lit == (0 if family == dropped else 1))
    if not FAMILY_KINDS[dropped.kind].relax(form, dropped):
        return None
    status, solver = run_cp_sat(form.model, preset, deadline)
    return form.decode(solver) if status.found else None


#: Demand quantum for the "largest servable demand" relaxation (requests/s, users or requests).
DEMAND_QUANTUM = 1e-3


def _served_quanta(c) -> int:
    """Demand one replica of candidate ``c`` serves, in DEMAND_QUANTUM units (rate, users or job requests)."""
    served = c.demand_served_per_replica
    return to_quanta(served if served is not None else 1.0, DEMAND_QUANTUM, "down")


# ---- what each kind of family means to the explanation ------------------------------------------
# relax(form, family): with ``family`` dropped, set the model's objective to the quantity it limits
# (False: a physical limit, nothing to relax). relaxation(space, family, plan): what ``plan`` (that
# optimum) needs of it. label(space, family): its readable name with its current value.

def _keep_min_cost(form, family: Family) -> bool:
    return True  # the budget: the cheapest plan (the formulation's own objective) is the right measure


def _not_relaxable(form, family: Family) -> bool:
    return False


def _minimize_time(key: str):
    def relax(form, family: Family) -> bool:
        m = family.model_index
        form.model.Minimize(sum(form.use[i] * to_quanta(getattr(c, key) * 1e6, TIME_QUANTUM_US, "up")
                                for i, c in enumerate(form.candidates) if c.model_index == m and c.fits))
        for i, c in enumerate(form.candidates):
            if c.model_index == m and not c.fits:
                form.model.Add(form.use[i] == 0)
        return True
    return relax


def _minimize_gpus(form, family: Family) -> bool:
    form.model.Minimize(sum(form.replicas[i] * c.shape.gpus_per_replica for i, c in enumerate(form.candidates)
                            if family.gpu_id is None or c.shape.gpu.id == family.gpu_id))
    return True


def _maximize_served(form, family: Family) -> bool:
    m = family.model_index
    form.model.Maximize(sum(form.replicas[i] * _served_quanta(c) for i, c in enumerate(form.candidates) if c.model_index == m and c.fits))
    return True


def _budget_relaxation(space: SearchSpace, family: Family, plan: Plan) -> dict:
    needed, current = objective_value("min_cost", plan), space.problem.budget_per_hour
    return {"constraint": "budget_per_hour", "current": current, "needed": needed,
            "text": f"raise budget_per_hour from ${current:.2f} to ${needed:.2f}/h (+${needed - current:.2f}/h)"}


def _max_gpus_relaxation(space: SearchSpace, family: Family, plan: Plan) -> dict:
    needed, current = sum(p.gpus for p in plan), space.problem.hardware.max_gpus
    return {"constraint": "hardware.max_gpus", "current": current, "needed": needed, "text": f"raise hardware.max_gpus from {current} to {needed}"}


def _inventory_relaxation(space: SearchSpace, family: Family, plan: Plan) -> dict:
    gpu_id = family.gpu_id
    needed = sum(p.gpus for p in plan if p.candidate.shape.gpu.id == gpu_id)
    current = space.problem.hardware.inventory[gpu_id]
    return {"constraint": f"hardware.inventory.{gpu_id}", "current": current, "needed": needed,
            "text": f"have {needed} x {gpu_id} instead of {current}"}


def _slo_relaxation(key: str, digits: int):
    def relaxation(space: SearchSpace, family: Family, plan: Plan) -> dict:
        m = family.model_index
        needed = getattr(plan[m].candidate, f"{key}_s") * 1e3
        current = getattr(space.problem.models[m].slo, f"{key}_ms")
        return {"constraint": f"models[{m}].slo.{key}_ms", "current": current, "needed": needed,
                "text": f"relax models[{m}].slo.{key}_ms from {current:g} to {needed:.{digits}f} ms"}
    return relaxation


def _demand_unit(w) -> str:
    """The workload key that states the demand: request_rate_per_s, concurrent_users or requests."""
    return "request_rate_per_s" if w.request_rate_per_s is not None else "concurrent_users" if w.concurrent_users is not None else "requests"


def _demand_relaxation(space: SearchSpace, family: Family, plan: Plan) -> dict:
    m = family.model_index
    pick, w = plan[m], space.problem.models[m].workload
    needed = pick.replicas * (pick.candidate.demand_served_per_replica or 0.0)
    unit = _demand_unit(w)
    current = getattr(w, unit)
    return {"constraint": f"models[{m}].workload.{unit}", "current": current, "needed": needed,
            "text": f"lower models[{m}].workload.{unit} from {current:g} to {needed:.4g}"}


def _slo_label(key: str):
    def label(space: SearchSpace, family: Family) -> str:
        m = family.model_index
        limit = getattr(space.problem.models[m].slo, f"{key}_ms")
        return f"models[{m}].slo.{key}_ms ({limit:g} ms)" if limit else f"models[{m}].slo.{key}_ms"
    return label


def _demand_label(space: SearchSpace, family: Family) -> str:
    m = family.model_index
    w = space.problem.models[m].workload
    demand = next((f"{k} {getattr(w, k):g}" for k in ("request_rate_per_s", "concurrent_users", "requests") if getattr(w, k) is not None), "one replica")
    return f"models[{m}].workload demand ({demand})"


@dataclass(frozen=True)
class FamilyKind:
    """What the explanation knows of one kind of constraint family: one entry of :data:`FAMILY_KINDS`.

    failing: how a candidate breaks it (``misses the TPOT SLO``); None for a limit of the whole
    plan. relax / relaxation / label: see the comment above the entries.
    """

    kind: str
    label: Callable[[SearchSpace, Family], str]
    relax: Callable[..., bool] = _not_relaxable
    relaxation: Callable[[SearchSpace, Family, Plan], dict] | None = None
    failing: str | None = None


#: Every kind of constraint family of the fleet model (:mod:`guide_opt.formulation`); a new family is one entry.
FAMILY_KINDS: dict[str, FamilyKind] = {k.kind: k for k in (
    FamilyKind("memory", lambda space, f: f"models[{f.model_index}] GPU memory ({space.problem.models[f.model_index].id}; physical, not relaxable)",
               failing="does not fit in GPU memory"),
    FamilyKind("ttft_slo", _slo_label("ttft"), _minimize_time("ttft_s"), _slo_relaxation("ttft", 1), failing="misses the TTFT SLO"),
    FamilyKind("tpot_slo", _slo_label("tpot"), _minimize_time("tpot_s"), _slo_relaxation("tpot", 2), failing="misses the TPOT SLO"),
    FamilyKind("demand", _demand_label, _maximize_served, _demand_relaxation,
               failing="needs more than search.max_replicas replicas for the demand"),
    FamilyKind("budget", lambda space, f: f"budget_per_hour (${space.problem.budget_per_hour:g}/h)", _keep_min_cost, _budget_relaxation),
    FamilyKind("max_gpus", lambda space, f: f"hardware.max_gpus ({space.problem.hardware.max_gpus})", _minimize_gpus, _max_gpus_relaxation),
    FamilyKind("inventory", lambda space, f: f"hardware.inventory.{f.gpu_id} ({space.problem.hardware.inventory[f.gpu_id]})", _minimize_gpus,
               _inventory_relaxation),
)}


def family_label(space: SearchSpace, family: Family) -> str:
    """Readable name of a constraint family, e.g. ``models[0].slo.tpot_ms (20 ms)``."""
    return FAMILY_KINDS[family.kind].label(space, family)


def explain_infeasible(space: SearchSpace, preset: SolverPreset, deadline: Deadline | float | None = None) -> dict:
    """The explanation object of an infeasible problem: reasons, conflict, relaxations (all re-solves draw on ``deadline``)."""
    deadline = explanation_deadline(preset, deadline)
    reasons = _precheck_reasons(space)
    conflict = [] if any(not ms.shapes for ms in space.models) else conflicting_families(space, preset, deadline)
    relaxations = []
    for family in conflict:
        plan = _relaxed_optimum(space, family, preset, deadline)
        if plan is not None:
            relaxations.append(FAMILY_KINDS[family.kind].relaxation(space, family, plan))
    return infeasibility_report(space, reasons, conflict, relaxations,
                                "together these constraints admit no plan: " + ", ".join(family_label(space, f) for f in conflict))


def infeasibility_report(space: SearchSpace, reasons: list[str], conflict: list[Family], relaxations: list[dict],
                         conflict_reason: str) -> dict:
    """The ``explanation`` object: reasons, the conflicting families, relaxations ranked by relative change.

    ``conflict_reason`` is added as the reason when the data pre-checks found none.
    """
    for r in relaxations:
        current = r["current"] or 0
        r["relative_change"] = abs(r["needed"] - current) / max(abs(current), 1e-9)
    relaxations = sorted(relaxations, key=lambda r: r["relative_change"])
    if not reasons and conflict:
        reasons = [*reasons, conflict_reason]
    return {
        "reasons": reasons,
        "conflicting_constraints": [f.name for f in conflict],
        "relaxations": relaxations,
        "cheapest_relaxation": relaxations[0]["text"] if relaxations else None,
        "models": [candidate_report(ms) for ms in space.models],
    }


class PlanRanker(Protocol):
    """What :func:`explain_binding` needs of a solver: its preset and the k best plans of an objective
    (:meth:`guide_opt.solvers.base.Solver.best_plans`)."""

    preset: SolverPreset

    def best_plans(self, space: SearchSpace, objective: str, *, k: int, forbidden: frozenset[int],
                   deadline: Deadline | float, seed: int, tie_break: bool = True):
        """Up to ``k`` best plans of ``objective`` (a :class:`~guide_opt.solvers.base.PlanResult`)."""


def separable_bound(space: SearchSpace, objective: str, memo: dict | None = None) -> int | None:
    """The least value (quanta) ``objective`` can take in ``space`` with every shared limit dropped; None when not defined.

    Defined for a minimized objective that is a sum of per-LLM terms growing with the replica
    count (``min_cost``, ``min_latency``): each LLM alone takes its best usable candidate at
    its replica floor. Dropping the shared limits (budget, GPUs, inventory) and the cuts only
    adds plans, so no plan of ``space`` does better: a lower bound of its optimum. ``memo``
    keeps each LLM's term by its candidate list (relaxations share the lists they leave alone).
    """
    kind = OBJECTIVES[objective]
    if not kind.minimized or kind.replicas != "fewest" or kind.stack != "fleet":
        return None
    memo = {} if memo is None else memo
    total = 0
    for ms in space.models:
        key = id(ms.candidates)
        if key not in memo:
            values = [objective_term(objective, c, c.replicas_min or 1) for c in ms.candidates if c.usable_for(objective)]
            memo[key] = (ms.candidates, min(values) if values else None)  # the list is kept so that its id stays its own
        term = memo[key][1]
        if term is None:
            return None
        total += term
    return total


def explain_binding(space: SearchSpace, plan: Plan, solver: PlanRanker, deadline: Deadline | float | None = None,
                    seed: int | None = None) -> list[dict]:
    """For a solved problem: each relaxable constraint and what dropping it would gain.

    One relaxed solve per constraint: shared limits first, then each LLM's SLOs, all drawing
    on ``deadline`` (the solve's own, so ``--time-limit-s`` bounds the whole answer; seconds
    or None: a budget of its own, see :func:`explanation_deadline`). Once it is spent the
    remaining constraints are listed as not evaluated (``binding`` None), so a large fleet
    still answers promptly. ``solver`` re-solves each relaxed problem (the front-ends pass
    CP-SAT); ``seed``: its seed (default: its preset's).

    A relaxation whose :func:`separable_bound` already equals the plan's value cannot gain
    (the relaxed optimum lies between the two), so it is reported as not binding without a
    solve (``"proof": "bound"``): in a fleet whose shared limits are slack, each LLM's SLO
    that its own cheapest option already meets costs nothing to check. A relaxed ``min_cost``
    solve looks only at plans no dearer than the plan (:attr:`SearchSpace.cost_limit_quanta`):
    dropping a constraint keeps the plan, so its optimum is among them.
    """
    problem = space.problem
    objective = problem.objective
    kind = OBJECTIVES[objective]
    base_value = objective_value(objective, plan)
    families = []
    if problem.budget_per_hour is not None:
        families.append(("budget_per_hour", {"budget_per_hour": None}))
    if problem.hardware.max_gpus is not None:
        families.append(("hardware.max_gpus", {"hardware": problem.hardware.model_copy(update={"max_gpus": None})}))
    if problem.hardware.inventory:
        families.append(("hardware.inventory", {"hardware": problem.hardware.model_copy(update={"inventory": {}})}))
    for m, req in enumerate(problem.models):
        for key in ("ttft_ms", "tpot_ms"):
            if getattr(req.slo, key) is not None:
                families.append((f"models[{m}].slo.{key}", {"models": [
                    r.model_copy(update={"slo": r.slo.model_copy(update={key: None})}) if j == m else r for j, r in enumerate(problem.models)]}))
    out = []
    preset = solver.preset
    deadline = explanation_deadline(preset, deadline)
    seed = seed if seed is not None else preset.seed
    terms: dict = {}
    plan_value_quanta = plan_quanta(objective, plan) if separable_bound(space, objective, terms) is not None else None
    # Dropping a constraint keeps the plan, so a relaxed min-cost optimum costs at most the plan: the relaxed solves look
    # only below it (each LLM within its share of it, Formulation.hold_cost_shares), which spares CP-SAT the plans above.
    cost_limit_quanta = plan_quanta("min_cost", plan) if kind.name == "min_cost" else None
    for name, update in families:
        if deadline.expired:
            out.append({"constraint": name, "binding": None,
                        "text": f"{name}: not evaluated (the {deadline.limit_s:g} s time limit was spent; --no-explain skips this report)"})
            continue
        relaxed_problem = problem.model_copy(update=update)
        if kind.grows_with_replicas and relaxed_problem.budget_per_hour is None and relaxed_problem.hardware.max_gpus is None and not relaxed_problem.hardware.inventory:
            out.append({"constraint": name, "binding": True, "text": f"{name} binds: without it throughput is unbounded"})
            continue
        relaxed_space = dataclasses.replace(space, problem=relaxed_problem, models=[_refilter(ms, relaxed_problem) for ms in space.models],
                                            cost_limit_quanta=cost_limit_quanta)
        if plan_value_quanta is not None and separable_bound(relaxed_space, objective, terms) == plan_value_quanta:
            out.append({"constraint": name, "binding": False, "status": Status.OPTIMAL.value, "objective_if_relaxed": base_value,
                        "gain": 0.0, "proof": "bound", "text": f"{name} does not bind"})
            continue
        # only the relaxed optimum's value is read: its tie-break would cost a second solve for nothing
        result = solver.best_plans(relaxed_space, objective, k=1, forbidden=frozenset(), deadline=deadline, seed=seed, tie_break=False)
        if not result.plans:
            if result.status is not Status.INFEASIBLE:
                out.append({"constraint": name, "binding": None, "status": result.status.value,
                            "text": f"{name}: not evaluated (no relaxed plan within the time limit)"})
            continue
        value = objective_value(objective, result.plans[0])
        gain = (base_value - value) if kind.minimized else (value - base_value)
        binding = gain > 1e-9 * max(1.0, abs(base_value))
        out.append({"constraint": name, "binding": binding, "status": result.status.value, "objective_if_relaxed": value, "gain": gain,
                    "text": f"{name} binds: relaxing it would {kind.gain_text(gain)}" if binding else f"{name} does not bind"})
    return out


def _refilter(ms: ModelSpace, problem) -> ModelSpace:
    """Re-derive candidate violations under a relaxed problem (same evaluations, new limits).

    ``ms`` itself when its requirement is unchanged; candidates whose violations do not change
    are kept as they are (the same objects, in the same list when none changes).
    """
    req = problem.models[ms.index]
    if req is ms.requirement:
        return ms
    dropped = {family for family, limit in (("ttft_slo", req.slo.ttft_ms), ("tpot_slo", req.slo.tpot_ms)) if limit is None}
    candidates = [dataclasses.replace(c, violations=tuple(v for v in c.violations if v not in dropped)) if dropped.intersection(c.violations)
                  else c for c in ms.candidates]
    if all(new is old for new, old in zip(candidates, ms.candidates)):
        candidates = ms.candidates
    return dataclasses.replace(ms, requirement=req, candidates=candidates)

