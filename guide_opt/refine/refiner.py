""":func:`refine_solution`: the incumbent simulated, the study run, the refined plan chosen and reported.

The steps, one module each: the knobs and their neighbourhood (:mod:`~guide_opt.refine.knobs`),
the simulated judge (:mod:`~guide_opt.refine.evaluate`), the Optuna study
(:mod:`~guide_opt.refine.study`), the choice against the incumbent
(:mod:`~guide_opt.refine.select`) and the report (:mod:`~guide_opt.refine.report`).
"""

from __future__ import annotations

import math
import time

import optuna

from guide_opt.catalog import Catalog
from guide_opt.errors import InputError
from guide_opt.objectives import OBJECTIVES
from guide_opt.problem import Problem
from guide_opt.refine import knobs, select, study
from guide_opt.refine.evaluate import (DEFAULT_CONFIRMATIONS, DEFAULT_NUM_REQUESTS, DEFAULT_SIMULATION_SEED, Evaluator,
                                       PlanEvaluation)
from guide_opt.refine.report import Refinement, verdict
from guide_opt.solution import Solution

#: Objectives the refinement handles: the fleet objectives whose plans the simulator checks (registry order).
SUPPORTED_OBJECTIVES = tuple(name for name, kind in OBJECTIVES.items() if kind.stack == "fleet" and kind.simulated)


def refine_solution(problem: Problem, solution: Solution, *, trials: int, seed: int = 0,
                    storage: "str | optuna.storages.BaseStorage | None" = None, study_name: str | None = None, progress: bool = False,
                    num_requests: int = DEFAULT_NUM_REQUESTS, simulation_seed: int = DEFAULT_SIMULATION_SEED,
                    timeout_s: float | None = None, confirmations: int = DEFAULT_CONFIRMATIONS, catalog: Catalog | None = None) -> Refinement:
    """Refine ``solution``'s deployments with Optuna, judged by the serving simulator.

    trials: trials this call runs (0 only creates the study and enqueues the incumbent).
    seed: the TPE sampler's seed (with a shared storage, the sampler seed is ``seed`` plus
        the trials already in the study, and each machine should still get its own seed).
    storage: None (in memory, deterministic under ``seed``), an Optuna storage object, or an
        RDB URL (``sqlite:///refine.db``, ``postgresql://user:pw@host/db``) shared by workers.
    study_name: with a storage, workers sharing this name share trials; default
        ``guide-opt-refine-<hash>`` of the problem, incumbent and simulated stream.
    progress: Optuna's progress bar on the terminal.
    num_requests: requests simulated per LLM per trial (closed loops: at least
        :data:`~guide_opt.refine.evaluate.CLOSED_LOOP_MIN_ROUNDS` per user). simulation_seed: the search stream's seed.
    timeout_s: stop starting trials after this many seconds (None: run all ``trials``).
    confirmations: independent streams (simulation seeds ``simulation_seed + 1 ...``) on
        which every plan that is feasible on the search stream must also meet every
        constraint, so that the search cannot pick a plan that was only lucky with one stream.

    Raises :class:`InputError` when the solution holds no deployment, the objective is not
    one of :data:`SUPPORTED_OBJECTIVES`, or the named study holds another problem's trials.
    A simulator failure inside a trial is recorded as a failed trial, never raised.
    """
    started = time.perf_counter()
    if problem.objective not in SUPPORTED_OBJECTIVES or problem.is_schedule:
        raise InputError("objective", f"refinement handles {', '.join(SUPPORTED_OBJECTIVES)} steady deployments, not '{problem.objective}'"
                         + (" schedules" if problem.is_schedule else ""), "solve without --refine")
    if not solution.status.found or len(solution.deployments) != len(problem.models):
        raise InputError("--refine", f"nothing to refine: the solver returned {solution.status.value} without a deployment per LLM",
                         "relax the problem until it has a solution, then refine it")
    if trials < 0 or num_requests < 1:
        raise InputError("--trials", "trials must be >= 0 and num_requests >= 1", "give a non-negative number of trials")
    evaluator = Evaluator(problem, tuple(solution.deployments), num_requests, simulation_seed, catalog, confirmations)
    fingerprint = study.fingerprint(evaluator)
    study_name = study_name or f"guide-opt-refine-{fingerprint[:12]}"
    notes: list[str] = []

    # The incumbent first, outside the study: its simulated figures are the baseline.
    inc: PlanEvaluation | None = None
    incumbent_error: str | None = None
    try:
        inc = evaluator.evaluate_confirmed(evaluator.incumbent_settings)
    except Exception as exc:  # noqa: BLE001 -- a simulator failure is reported, not raised
        incumbent_error = f"{type(exc).__name__}: {exc}"

    counts = study.run_study(evaluator, study.open_storage(storage), study_name, fingerprint, seed=seed, trials=trials,
                             timeout_s=timeout_s, progress=progress)
    chosen, best_number = select.choose(evaluator, inc, counts.feasible, study.direction_of(problem.objective), notes)
    if counts.unconfirmed:
        notes.append(f"{counts.unconfirmed} trial(s) met every constraint on the search stream but not on the confirmation streams "
                     f"(simulation seeds {', '.join(map(str, evaluator.confirmation_seeds))}) and count as infeasible")

    refined_settings = chosen.settings if chosen is not None else evaluator.incumbent_settings
    improved = refined_settings != evaluator.incumbent_settings
    verdict(notes, problem, inc, incumbent_error, chosen, improved, len(counts.run_now), len(counts.feasible))

    return Refinement(
        problem=problem.name, objective_name=problem.objective,
        incumbent=evaluator.incumbent, refined=evaluator.deployments(refined_settings),
        incumbent_settings=evaluator.incumbent_settings, refined_settings=refined_settings,
        incumbent_metrics=inc.metrics if inc else None,
        refined_metrics=chosen.metrics if chosen else None,
        incumbent_objective=inc.objective if inc else None,
        refined_objective=chosen.objective if chosen else None,
        incumbent_cost_per_hour=math.fsum(evaluator.cost_per_hour(i, s) for i, s in enumerate(evaluator.incumbent_settings)),
        refined_cost_per_hour=math.fsum(evaluator.cost_per_hour(i, s) for i, s in enumerate(refined_settings)),
        incumbent_feasible=inc.feasible if inc else None, refined_feasible=bool(chosen is not None and chosen.feasible),
        incumbent_violations=inc.violations if inc else (f"simulation failed: {incumbent_error}",),
        refined_violations=chosen.violations if chosen else (f"simulation failed: {incumbent_error}",),
        improved=improved, changes=knobs.changes(evaluator.incumbent_settings, refined_settings),
        trials_run=len(counts.run_now), trials_total=len(counts.finished), trials_complete=len(counts.complete),
        trials_failed=counts.failed, trials_pruned=counts.pruned,
        trials_feasible=len(counts.feasible), best_trial_number=best_number, errors=counts.errors, notes=tuple(notes),
        seed=seed, simulation_seed=simulation_seed, confirmation_seeds=evaluator.confirmation_seeds, num_requests=num_requests,
        study_name=study_name, storage=study.redact_storage_url(storage), percentiles=evaluator.percentiles,
        wall_time_s=time.perf_counter() - started,
    )
