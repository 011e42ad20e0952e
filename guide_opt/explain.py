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
from typing import Protocol

from ortools.sat.python import cp_model

from guide_opt.deadline import Deadline
from guide_opt.formulation import build_formulation, run_cp_sat
from guide_opt.objectives import OBJECTIVES
from guide_opt.plan import Plan, objective_value
from guide_opt.quanta import TIME_QUANTUM_US, to_quanta
from guide_opt.presets import SolverPreset
from guide_opt.solution import Status
from guide_opt.space import ModelSpace, SearchSpace

_FAMILY_TEXT = {
    "memory": "does not fit in GPU memory",
    "ttft_slo": "misses the TTFT SLO",
    "tpot_slo": "misses the TPOT SLO",
    "demand": "needs more than search.max_replicas replicas for the demand",
}


def candidate_report(ms: ModelSpace) -> dict:
    """Per-LLM pre-check: pruned shapes, why candidates fail, and the best values reached."""
    counts = Counter(v for c in ms.candidates for v in c.violations)
    fitting = [c for c in ms.candidates if c.fits]
    report: dict = {
        "model": ms.label,
        "shapes_pruned": [{"reason": r, "count": n} for r, n in sorted(ms.pruned.items(), key=lambda kv: -kv[1])],
        "candidates": len(ms.candidates),
        "candidates_feasible": sum(c.feasible for c in ms.candidates),
        "candidates_failing": {family: counts[family] for family in _FAMILY_TEXT if counts[family]},
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
            parts = [f"{n} of {len(ms.candidates)} candidates {_FAMILY_TEXT[f]}" for f, n in counts.most_common()]
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


def minimal_conflict(model: cp_model.CpModel, family_literals: dict[str, cp_model.IntVar], preset: SolverPreset,
                     deadline: Deadline | float | None = None) -> list[str]:
    """A minimal set of the named families whose literals, assumed true, make ``model`` infeasible.

    CP-SAT's sufficient assumptions give a conflicting subset; deletion filtering then drops
    every family whose removal keeps the rest infeasible, so each name returned is necessary
    to the conflict. Empty when the model is feasible with every family enforced. Every
    re-solve draws on ``deadline`` (see :func:`explanation_deadline`); a deletion step that
    runs out of time keeps its family (the set stays a conflict, perhaps not a minimal one).
    """
    deadline = explanation_deadline(preset, deadline)
    by_index = {v.Index(): name for name, v in family_literals.items()}

    def infeasible_under(names: list[str]) -> tuple[bool, list[str]]:
        model.ClearAssumptions()
        model.AddAssumptions([family_literals[n] for n in names])
        # one worker: cores are reported by the single-thread search
        status, solver = run_cp_sat(model, preset, deadline, num_workers=1)
        if status is not Status.INFEASIBLE:
            return False, []
        return True, sorted(by_index[i] for i in solver.SufficientAssumptionsForInfeasibility() if i in by_index)

    infeasible, core = infeasible_under(sorted(family_literals))
    if infeasible:
        for name in list(core):
            still, smaller = infeasible_under([n for n in core if n != name])
            if still:
                core = smaller or [n for n in core if n != name]
    model.ClearAssumptions()
    return core if infeasible else []


def conflicting_families(space: SearchSpace, preset: SolverPreset, deadline: Deadline | float | None = None) -> list[str]:
    """A minimal set of constraint families that together make the problem infeasible (see :func:`minimal_conflict`)."""
    form = build_formulation(space, "min_cost", explain=True)
    return minimal_conflict(form.model, form.family_literals, preset, deadline)


def _relaxed_optimum(space: SearchSpace, dropped: str, preset: SolverPreset, deadline: Deadline) -> Plan | None:
    """Optimize the quantity limited by ``dropped`` with every other family enforced."""
    form = build_formulation(space, "min_cost", explain=True)
    model = form.model
    for name, lit in form.family_literals.items():
        model.Add(lit == (0 if name == dropped else 1))
    family = dropped.rsplit(".", 1)[-1]
    if family in ("ttft_slo", "tpot_slo"):
        m = int(dropped.split("[", 1)[1].split("]", 1)[0])
        key = "ttft_s" if family == "ttft_slo" else "tpot_s"
        model.Minimize(sum(form.use[i] * to_quanta(getattr(c, key) * 1e6, TIME_QUANTUM_US, "up")
                           for i, c in enumerate(form.candidates) if c.model_index == m and c.fits))
        for i, c in enumerate(form.candidates):
            if c.model_index == m and not c.fits:
                model.Add(form.use[i] == 0)
    elif dropped.startswith("inventory["):
        gpu_id = dropped[len("inventory["):-1]
        model.Minimize(sum(form.replicas[i] * c.shape.gpus_per_replica for i, c in enumerate(form.candidates) if c.shape.gpu.id == gpu_id))
    elif dropped == "max_gpus":
        model.Minimize(sum(form.replicas[i] * c.shape.gpus_per_replica for i, c in enumerate(form.candidates)))
    elif family == "memory":
        return None  # physical: no relaxation to offer
    elif family == "demand":
        m = int(dropped.split("[", 1)[1].split("]", 1)[0])
        model.Maximize(sum(form.replicas[i] * _served_quanta(space, c) for i, c in enumerate(form.candidates) if c.model_index == m and c.fits))
    # budget: the cheapest plan (min cost, the formulation's objective) is the right measure
    status, solver = run_cp_sat(model, preset, deadline)
    return form.decode(solver) if status.found else None


#: Demand quantum for the "largest servable demand" relaxation (requests/s, users or requests).
DEMAND_QUANTUM = 1e-3


def _served_quanta(space: SearchSpace, c) -> int:
    """Demand one replica of candidate ``c`` serves, in DEMAND_QUANTUM units (rate, users or job requests)."""
    served = c.demand_served_per_replica
    return to_quanta(served if served is not None else 1.0, DEMAND_QUANTUM, "down")


def _relaxation(space: SearchSpace, family: str, plan: Plan) -> dict | None:
    """Describe the relaxation of ``family`` that ``plan`` needs."""
    problem = space.problem
    kind = family.rsplit(".", 1)[-1]
    if family == "budget":
        needed = objective_value("min_cost", plan)
        current = problem.budget_per_hour
        return {"constraint": "budget_per_hour", "current": current, "needed": needed,
                "text": f"raise budget_per_hour from ${current:.2f} to ${needed:.2f}/h (+${needed - current:.2f}/h)"}
    if family == "max_gpus":
        needed = sum(p.gpus for p in plan)
        current = problem.hardware.max_gpus
        return {"constraint": "hardware.max_gpus", "current": current, "needed": needed, "text": f"raise hardware.max_gpus from {current} to {needed}"}
    if family.startswith("inventory["):
        gpu_id = family[len("inventory["):-1]
        needed = sum(p.gpus for p in plan if p.candidate.shape.gpu.id == gpu_id)
        current = problem.hardware.inventory[gpu_id]
        return {"constraint": f"hardware.inventory.{gpu_id}", "current": current, "needed": needed,
                "text": f"have {needed} x {gpu_id} instead of {current}"}
    m = int(family.split("[", 1)[1].split("]", 1)[0])
    pick = plan[m]
    slo = problem.models[m].slo
    if kind == "ttft_slo":
        needed = pick.candidate.ttft_s * 1e3
        return {"constraint": f"models[{m}].slo.ttft_ms", "current": slo.ttft_ms, "needed": needed,
                "text": f"relax models[{m}].slo.ttft_ms from {slo.ttft_ms:g} to {needed:.1f} ms"}
    if kind == "tpot_slo":
        needed = pick.candidate.tpot_s * 1e3
        return {"constraint": f"models[{m}].slo.tpot_ms", "current": slo.tpot_ms, "needed": needed,
                "text": f"relax models[{m}].slo.tpot_ms from {slo.tpot_ms:g} to {needed:.2f} ms"}
    if kind == "demand":
        w = problem.models[m].workload
        needed = pick.replicas * (pick.candidate.demand_served_per_replica or 0.0)
        if w.request_rate_per_s is not None:
            current, unit = w.request_rate_per_s, "request_rate_per_s"
        elif w.concurrent_users is not None:
            current, unit = w.concurrent_users, "concurrent_users"
        else:
            current, unit = w.requests, "requests"
        return {"constraint": f"models[{m}].workload.{unit}", "current": current, "needed": needed,
                "text": f"lower models[{m}].workload.{unit} from {current:g} to {needed:.4g}"}
    return None


def family_label(space: SearchSpace, family: str) -> str:
    """Readable name of a constraint family, e.g. ``models[0].slo.tpot_ms (llama-3.1-70b)``."""
    if family == "budget":
        return f"budget_per_hour (${space.problem.budget_per_hour:g}/h)"
    if family == "max_gpus":
        return f"hardware.max_gpus ({space.problem.hardware.max_gpus})"
    if family.startswith("inventory["):
        gpu_id = family[len("inventory["):-1]
        return f"hardware.inventory.{gpu_id} ({space.problem.hardware.inventory[gpu_id]})"
    m = int(family.split("[", 1)[1].split("]", 1)[0])
    req = space.problem.models[m]
    kind = family.rsplit(".", 1)[-1]
    w = req.workload
    demand = next((f"{k} {getattr(w, k):g}" for k in ("request_rate_per_s", "concurrent_users", "requests") if getattr(w, k) is not None), "one replica")
    return {
        "memory": f"models[{m}] GPU memory ({req.id}; physical, not relaxable)",
        "ttft_slo": f"models[{m}].slo.ttft_ms ({req.slo.ttft_ms:g} ms)" if req.slo.ttft_ms else f"models[{m}].slo.ttft_ms",
        "tpot_slo": f"models[{m}].slo.tpot_ms ({req.slo.tpot_ms:g} ms)" if req.slo.tpot_ms else f"models[{m}].slo.tpot_ms",
        "demand": f"models[{m}].workload demand ({demand})",
    }[kind]


def explain_infeasible(space: SearchSpace, preset: SolverPreset, deadline: Deadline | float | None = None) -> dict:
    """The explanation object of an infeasible problem: reasons, conflict, relaxations (all re-solves draw on ``deadline``)."""
    deadline = explanation_deadline(preset, deadline)
    reasons = _precheck_reasons(space)
    conflict = [] if any(not ms.shapes for ms in space.models) else conflicting_families(space, preset, deadline)
    relaxations = []
    for family in conflict:
        plan = _relaxed_optimum(space, family, preset, deadline)
        if plan is not None:
            relaxation = _relaxation(space, family, plan)
            if relaxation:
                relaxations.append(relaxation)
    return infeasibility_report(space, reasons, conflict, relaxations,
                                "together these constraints admit no plan: " + ", ".join(family_label(space, f) for f in conflict))


def infeasibility_report(space: SearchSpace, reasons: list[str], conflict: list[str], relaxations: list[dict],
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
        "conflicting_constraints": conflict,
        "relaxations": relaxations,
        "cheapest_relaxation": relaxations[0]["text"] if relaxations else None,
        "models": [candidate_report(ms) for ms in space.models],
    }


class PlanRanker(Protocol):
    """What :func:`explain_binding` needs of a solver: its preset and the k best plans of an objective
    (:meth:`guide_opt.solvers.base.Solver.best_plans`)."""

    preset: SolverPreset

    def best_plans(self, space: SearchSpace, objective: str, *, k: int, forbidden: frozenset[int],
                   deadline: Deadline | float, seed: int):
        """Up to ``k`` best plans of ``objective`` (a :class:`~guide_opt.solvers.base.PlanResult`)."""


def explain_binding(space: SearchSpace, plan: Plan, solver: PlanRanker, deadline: Deadline | float | None = None,
                    seed: int | None = None) -> list[dict]:
    """For a solved problem: each relaxable constraint and what dropping it would gain.

    One relaxed solve per constraint: shared limits first, then each LLM's SLOs, all drawing
    on ``deadline`` (the solve's own, so ``--time-limit-s`` bounds the whole answer; seconds
    or None: a budget of its own, see :func:`explanation_deadline`). Once it is spent the
    remaining constraints are listed as not evaluated (``binding`` None), so a large fleet
    still answers promptly. ``solver`` re-solves each relaxed problem (the front-ends pass
    CP-SAT); ``seed``: its seed (default: its preset's).
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
    for name, update in families:
        if deadline.expired:
            out.append({"constraint": name, "binding": None,
                        "text": f"{name}: not evaluated (the {deadline.total_s:g} s time limit was spent; --no-explain skips this report)"})
            continue
        relaxed_problem = problem.model_copy(update=update)
        if kind.grows_with_replicas and relaxed_problem.budget_per_hour is None and relaxed_problem.hardware.max_gpus is None and not relaxed_problem.hardware.inventory:
            out.append({"constraint": name, "binding": True, "text": f"{name} binds: without it throughput is unbounded"})
            continue
        relaxed_space = dataclasses.replace(space, problem=relaxed_problem, models=[_refilter(ms, relaxed_problem) for ms in space.models])
        result = solver.best_plans(relaxed_space, objective, k=1, forbidden=frozenset(), deadline=deadline, seed=seed)
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
    """Re-derive candidate violations under a relaxed problem (same evaluations, new limits)."""
    req = problem.models[ms.index]
    candidates = []
    for c in ms.candidates:
        violations = tuple(v for v in c.violations
                           if not (v == "ttft_slo" and req.slo.ttft_ms is None) and not (v == "tpot_slo" and req.slo.tpot_ms is None))
        candidates.append(dataclasses.replace(c, violations=violations))
    return dataclasses.replace(ms, requirement=req, candidates=candidates)

