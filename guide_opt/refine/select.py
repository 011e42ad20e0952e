"""Choosing the refined plan: the best feasible trial against the incumbent, then its incidental changes reverted.

:func:`choose` ranks the study's feasible trials (objective, tie-break key, earliest trial),
simulates the best few again here and keeps the first that clearly beats a simulator-feasible
incumbent (:func:`beats`; any feasible one when the incumbent is not). :func:`simplify` then
walks the winner back towards the incumbent knob by knob while nothing is lost. So the refined
plan is never worse than a simulator-feasible incumbent, and the changes it reports matter.
"""

from __future__ import annotations

import dataclasses

import optuna

from guide_opt.plan import better
from guide_opt.refine import knobs
from guide_opt.refine.evaluate import Evaluator, PlanEvaluation
from guide_opt.refine.knobs import EngineSettings
from guide_opt.refine.study import ATTR_EVALUATION

#: A simulated figure must improve by this much (relative) to replace the incumbent: the
#: simulated objective (throughput, latency), or for min_cost at equal cost the mean latency.
#: Smaller differences are within the simulator's sampling noise and would only churn the plan.
MIN_SIMULATED_GAIN = 0.01
#: Best-ranked feasible trial plans simulated again (memoised) and compared with the incumbent
#: before it is kept.
MAX_RECHECKED_PLANS = 10


def ranked_plans(evaluator: Evaluator, feasible: tuple[optuna.trial.FrozenTrial, ...], direction: str) -> list[tuple[int, tuple[EngineSettings, ...]]]:
    """Distinct plans of the feasible trials, best first: objective, then the secondary key, then the earliest trial."""
    sign = -1.0 if direction == "maximize" else 1.0

    def key(t: optuna.trial.FrozenTrial):
        secondary = t.user_attrs.get(ATTR_EVALUATION, {}).get("secondary")
        return (sign * t.value, secondary if secondary is not None else float("inf"), t.number)

    out: dict[tuple[EngineSettings, ...], int] = {}
    for t in sorted(feasible, key=key):
        out.setdefault(knobs.settings_from_params(t.params, len(evaluator.problem.models)), t.number)
    return [(number, settings) for settings, number in out.items()]


def beats(objective: str, a: PlanEvaluation, b: PlanEvaluation) -> bool:
    """True when plan ``a`` is clearly better than ``b``.

    min_cost: cheaper, or as cheap with a mean latency at least :data:`MIN_SIMULATED_GAIN`
    lower. Simulated objectives (throughput, latency) carry the simulator's sampling noise,
    so ``a`` must be better by at least :data:`MIN_SIMULATED_GAIN` (relative), or within it
    and cheaper.
    """
    if objective == "min_cost":
        if better(objective, a.objective, b.objective):
            return True
        if better(objective, b.objective, a.objective):
            return False
        return a.secondary < b.secondary * (1.0 - MIN_SIMULATED_GAIN)
    if better(objective, a.objective, b.objective, tolerance=MIN_SIMULATED_GAIN):
        return True
    if better(objective, b.objective, a.objective, tolerance=MIN_SIMULATED_GAIN):
        return False
    return a.secondary < b.secondary - 1e-9


def _reevaluate(evaluator: Evaluator, number: int, settings: tuple[EngineSettings, ...], notes: list[str]) -> PlanEvaluation | None:
    """Simulate a trial's plan again here (deterministic and memoised; gives the figures reported for it)."""
    try:
        return evaluator.evaluate_confirmed(settings)
    except Exception as exc:  # noqa: BLE001
        notes.append(f"trial {number} could not be simulated again ({type(exc).__name__}: {exc}); skipped")
        return None


def simplify(evaluator: Evaluator, objective: str, best: PlanEvaluation, inc: PlanEvaluation | None, notes: list[str]) -> PlanEvaluation:
    """Revert the winner's incidental changes: knob by knob, back to the incumbent's value while nothing is lost.

    A revert is kept when the plan stays feasible (on every stream), still beats the
    incumbent (if that is feasible), its objective is not worse than ``best``'s and its
    secondary key is within :data:`MIN_SIMULATED_GAIN` of ``best``'s. So the reported changes
    are the ones that matter, not the sampler's random walk in knobs that do not.
    """
    current = best
    reverted = []
    for i, old in enumerate(evaluator.incumbent_settings):
        for name in knobs.KNOB_NAMES:
            if getattr(old, name) == getattr(current.settings[i], name):
                continue
            changed = knobs.normalized(dataclasses.replace(current.settings[i], **{name: getattr(old, name)}))
            plan = tuple(changed if j == i else s for j, s in enumerate(current.settings))
            if evaluator.unsupported(plan):
                continue
            try:
                candidate = evaluator.evaluate_confirmed(plan)
            except Exception:  # noqa: BLE001 -- keep the change when the revert cannot be simulated
                continue
            tolerance = 1e-9 if objective == "min_cost" else MIN_SIMULATED_GAIN
            if (candidate.feasible and not better(objective, best.objective, candidate.objective, tolerance=tolerance)
                    and candidate.secondary <= best.secondary * (1.0 + MIN_SIMULATED_GAIN)
                    and (inc is None or not inc.feasible or beats(objective, candidate, inc))):
                current = candidate
                reverted.append(f"{'models[%d].' % i if len(best.settings) > 1 else ''}{name}")
    if reverted:
        notes.append(f"kept at the incumbent's value because changing them gained less than {MIN_SIMULATED_GAIN:.0%}: {', '.join(reverted)}")
    return current


def choose(evaluator: Evaluator, inc: PlanEvaluation | None, feasible: tuple[optuna.trial.FrozenTrial, ...], direction: str,
           notes: list[str]) -> tuple[PlanEvaluation | None, int | None]:
    """The refined plan and the trial that found it: the incumbent unless a feasible trial beats it (then simplified).

    ``inc`` is the incumbent's evaluation (None when it could not be simulated); ``feasible``
    the study's feasible trials. Caveats are appended to ``notes``. The trial number is the
    incumbent's own trial when the incumbent is kept and feasible.
    """
    objective = evaluator.problem.objective
    chosen, best_number = inc, None
    for number, settings in ranked_plans(evaluator, feasible, direction)[:MAX_RECHECKED_PLANS]:
        if settings == evaluator.incumbent_settings:
            continue
        candidate = _reevaluate(evaluator, number, settings, notes)
        if candidate is None or not candidate.feasible:
            continue
        if inc is None or not inc.feasible or beats(objective, candidate, inc):
            chosen, best_number = candidate, number
            break
    if chosen is not None and chosen is not inc:
        chosen = simplify(evaluator, objective, chosen, inc, notes)
    if inc is not None and chosen is inc and inc.feasible:
        llms = len(evaluator.problem.models)
        best_number = next((t.number for t in feasible if knobs.settings_from_params(t.params, llms) == evaluator.incumbent_settings), None)
    return chosen, best_number
