"""The refinement's report: :class:`Refinement`, incumbent vs refined side by side, and its verdict in words.

Data only: :meth:`Refinement.to_json` is what ``--format json`` prints; the text rendering lives
with the command line (:func:`guide_opt.cli.refine_output.print_refinement`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from guide_opt.objectives import OBJECTIVES
from guide_opt.problem import Problem
from guide_opt.refine.evaluate import PlanEvaluation, SimulatedMetrics, finite_or_none
from guide_opt.refine.knobs import EngineSettings
from guide_opt.solution import Deployment


@dataclass(frozen=True)
class Refinement:
    """What :func:`~guide_opt.refine.refine_solution` found: incumbent vs refined plan under the simulator.

    incumbent / refined: the deployments (the refined ones carry the static model's metrics
    for their shape and batch, like any solver's). *_settings: the engine knobs per LLM.
    *_metrics: simulated metrics per LLM (None when the simulation failed).
    *_objective: the refinement objective ($/h, tokens/s or ms). *_cost_per_hour: $/h.
    *_feasible: every named constraint met in the simulator (None: could not be simulated).
    *_violations: the unmet constraints in words. changes: ``field: old -> new`` per changed
    knob. improved: the refined plan differs from the incumbent.
    trials_run: trials this call ran; trials_total / _complete / _failed / _pruned /
    _feasible: over the whole study (all workers). errors: distinct failure messages.
    notes: the verdict and caveats in words. seed: the sampler's seed. simulation_seed /
    confirmation_seeds: the search stream's and the confirmation streams' seeds. num_requests:
    requests per simulation. percentiles: each LLM's SLO percentile. wall_time_s: seconds
    this call took.
    """

    problem: str
    objective_name: str
    incumbent: tuple[Deployment, ...]
    refined: tuple[Deployment, ...]
    incumbent_settings: tuple[EngineSettings, ...]
    refined_settings: tuple[EngineSettings, ...]
    incumbent_metrics: tuple[SimulatedMetrics, ...] | None
    refined_metrics: tuple[SimulatedMetrics, ...] | None
    incumbent_objective: float | None
    refined_objective: float | None
    incumbent_cost_per_hour: float
    refined_cost_per_hour: float
    incumbent_feasible: bool | None
    refined_feasible: bool
    incumbent_violations: tuple[str, ...]
    refined_violations: tuple[str, ...]
    improved: bool
    changes: tuple[str, ...]
    trials_run: int
    trials_total: int
    trials_complete: int
    trials_failed: int
    trials_pruned: int
    trials_feasible: int
    best_trial_number: int | None
    errors: tuple[str, ...]
    notes: tuple[str, ...]
    seed: int
    simulation_seed: int
    confirmation_seeds: tuple[int, ...]
    num_requests: int
    study_name: str
    storage: str
    percentiles: tuple[int, ...]
    wall_time_s: float

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict: both plans side by side, what changed, trial counts, notes."""

        def side(deployments, settings, metrics, objective, cost, feasible, violations) -> dict:
            return {
                "objective": finite_or_none(objective),
                "cost_per_hour": round(cost, 6),
                "simulator_feasible": feasible,
                "violations": list(violations),
                "deployments": [
                    {**d.to_json(), "engine": s.to_json(), "simulated": m.to_json() if m is not None else None}
                    for d, s, m in zip(deployments, settings, metrics or [None] * len(deployments))
                ],
            }

        return {
            "problem": self.problem,
            "objective_name": self.objective_name,
            "incumbent": side(self.incumbent, self.incumbent_settings, self.incumbent_metrics, self.incumbent_objective,
                              self.incumbent_cost_per_hour, self.incumbent_feasible, self.incumbent_violations),
            "refined": side(self.refined, self.refined_settings, self.refined_metrics, self.refined_objective,
                            self.refined_cost_per_hour, self.refined_feasible, self.refined_violations),
            "improved": self.improved,
            "changes": list(self.changes),
            "trials": {"run": self.trials_run, "total": self.trials_total, "complete": self.trials_complete, "failed": self.trials_failed,
                       "pruned": self.trials_pruned, "feasible": self.trials_feasible, "best_trial": self.best_trial_number},
            "errors": list(self.errors),
            "notes": list(self.notes),
            "seed": self.seed,
            "simulation_seed": self.simulation_seed,
            "confirmation_seeds": list(self.confirmation_seeds),
            "num_requests": self.num_requests,
            "slo_percentiles": list(self.percentiles),
            "study_name": self.study_name,
            "storage": self.storage,
            "wall_time_s": round(self.wall_time_s, 4),
        }


#: Each refinable objective in words, for the verdict (its unit and format come from the registry).
OBJECTIVE_WORDS = {"min_cost": "cost", "max_throughput": "simulated throughput", "min_latency": "simulated mean latency"}


def verdict(notes: list[str], problem: Problem, inc: PlanEvaluation | None, inc_error: str | None, chosen: PlanEvaluation | None,
            improved: bool, run: int, feasible: int) -> None:
    """The report's verdict in words (appended to ``notes``)."""
    what, kind = OBJECTIVE_WORDS[problem.objective], OBJECTIVES[problem.objective]
    if inc is None:
        notes.append(f"the incumbent could not be simulated ({inc_error}); it is not vouched for by the simulator")
    elif not inc.feasible:
        notes.append("the static model was optimistic: under the simulator the CP-SAT incumbent misses "
                     + "; ".join(inc.violations))
    if chosen is None or not chosen.feasible:
        notes.append(f"no simulator-feasible plan was found in {run} trials ({feasible} feasible in the study); the incumbent is returned "
                     "unchanged and does NOT meet every simulated constraint -- run more trials, allow other GPUs or relax the SLOs")
        return
    if not improved:
        notes.append(f"the incumbent is simulator-feasible and no trial beat it ({run} trials run); it is kept")
        return
    if inc is not None and inc.feasible:
        delta = chosen.objective - inc.objective
        rel = abs(delta) / max(abs(inc.objective), 1e-9)
        if abs(delta) > 1e-9 * max(1.0, abs(inc.objective)):
            notes.append(f"refinement improves the {what} from {inc.objective:,.2f} to {chosen.objective:,.2f} {kind.unit} ({rel:.1%}), "
                         "simulator-checked")
        else:
            value = f"{kind.prefix}{chosen.objective:,.2f}{kind.suffix}"
            notes.append(f"same {what} ({value}); the refined plan wins the tie-break "
                         f"({'lower mean latency' if kind.tie_break == 'min_latency' else 'lower cost'})")
    else:
        cost_delta = chosen.cost_per_hour - (math.fsum(m.cost_per_hour for m in inc.metrics) if inc else chosen.cost_per_hour)
        versus = ("the same cost as the incumbent" if abs(cost_delta) < 1e-9 else
                  f"{'+' if cost_delta > 0 else '-'}${abs(cost_delta):,.2f}/h vs the incumbent")
        notes.append(f"refinement found a plan that meets every simulated constraint at ${chosen.cost_per_hour:,.2f}/h ({versus})")
