"""The ``optuna`` solver: the CP-SAT optimum of the static model, refined against the serving simulator.

``guide-opt solve PROBLEM --solver optuna`` runs :class:`~guide_opt.solvers.cpsat.CpSatSolver`
(the same plans, alternatives and verification rounds), then
:func:`guide_opt.refine.refine_solution` for ``preset.trials`` Optuna trials around the
incumbent. The returned :class:`~guide_opt.solution.Solution` holds the refined deployments;
``stats["refinement"]`` holds the whole :class:`~guide_opt.refine.Refinement` (incumbent vs
refined, simulated metrics, what changed, trial counts).

Status is FEASIBLE (a heuristic search proves nothing), ``bound`` and ``gap`` are None (the
CP-SAT bound holds for the static model, not the simulator), and ``objective`` is the
refinement objective: $/h for min_cost, *simulated* tokens/s for max_throughput and
*simulated* mean end-to-end latency (ms) for min_latency. The alternatives are CP-SAT's
(static model). Infeasible or unsolved problems are returned as CP-SAT answered them.
"""

from __future__ import annotations

import time

from guide_opt.deadline import Deadline
from guide_opt.presets import SolverPreset
from guide_opt.problem import Problem
from pathlib import Path

from guide_opt.refine import DEFAULT_NUM_REQUESTS, DEFAULT_SIMULATION_SEED, Refinement, refine_solution
from guide_opt.solution import Solution, Status
from guide_opt.solvers.base import PlanResult, Solver, register
from guide_opt.solvers.cpsat import CpSatSolver
from guide_opt.space import SearchSpace


@register
class OptunaSolver(Solver):
    """CP-SAT incumbent, then Optuna (TPE) refinement judged by the serving simulator.

    num_requests: requests simulated per LLM per trial. storage / study_name: see
    :func:`~guide_opt.refine.refine_solution` (None: in memory). progress: Optuna's progress bar.
    """

    name = "optuna"
    proves_optimality = False
    simulated_only = True

    def __init__(self, preset: SolverPreset | None = None, *, num_requests: int = DEFAULT_NUM_REQUESTS, storage: str | None = None,
                 study_name: str | None = None, progress: bool = False) -> None:
        super().__init__(preset)
        self.exact = CpSatSolver(self.preset)
        self.num_requests = num_requests
        self.storage = storage
        self.study_name = study_name
        self.progress = progress

    def best_plans(self, space: SearchSpace, objective: str, *, k: int, forbidden: frozenset[int],
                   deadline: Deadline | float, seed: int, tie_break: bool = True) -> PlanResult:
        """CP-SAT's plans (the incumbent and the alternatives)."""
        return self.exact.best_plans(space, objective, k=k, forbidden=forbidden, deadline=deadline, seed=seed, tie_break=tie_break)

    def solve(self, problem: Problem, *, time_limit_s: float | None = None, seed: int | None = None,
              space: SearchSpace | None = None, alternatives: bool = True, check_by_simulation: bool = True,
              deadline: Deadline | None = None) -> Solution:
        """Solve with CP-SAT (its plan checked by simulation unless told not to), then refine the incumbent for ``preset.trials`` trials."""
        started = time.perf_counter()
        seed = seed if seed is not None else self.preset.seed
        incumbent = super().solve(problem, time_limit_s=time_limit_s, seed=seed, space=space, alternatives=alternatives,
                                  check_by_simulation=check_by_simulation, deadline=deadline)
        if not incumbent.status.found:
            return incumbent
        refinement = refine_solution(problem, incumbent, trials=self.preset.trials, seed=seed, storage=self.storage,
                                     study_name=self.study_name, progress=self.progress, num_requests=self.num_requests)
        stats = {**incumbent.stats, "cp_sat_status": incumbent.status.value, "cp_sat_objective": incumbent.objective,
                 "cp_sat_bound": incumbent.bound, "refinement": refinement.to_json()}
        return Solution(
            status=Status.FEASIBLE, objective=refinement.refined_objective if refinement.refined_objective is not None else incumbent.objective,
            bound=None, wall_time_s=time.perf_counter() - started, solver=self.name, deployments=refinement.refined,
            alternatives=incumbent.alternatives, stats=stats, objective_name=problem.objective,
        )


def run_worker(storage: str, study_name: str, trials: int, *, problem: "Problem | str | Path", seed: int = 0,
               num_requests: int = DEFAULT_NUM_REQUESTS, simulation_seed: int = DEFAULT_SIMULATION_SEED,
               time_limit_s: float = 10.0) -> Refinement:
    """One worker of a shared study: solve ``problem`` with CP-SAT, then run ``trials`` refinement trials in ``study_name``.

    Every worker of one study must use the same problem, ``num_requests`` and
    ``simulation_seed`` (checked through the study's fingerprint) and should use its own
    ``seed``. This is what ``guide-opt solve PROBLEM --refine --storage URL --study-name X``
    does on each machine. (It lives with the solvers, not in :mod:`guide_opt.refine`, so that
    refinement imports no solver.)
    """
    if not isinstance(problem, Problem):
        problem = Problem.from_yaml(problem)
    solution = CpSatSolver().solve(problem, time_limit_s=time_limit_s, seed=0, alternatives=False)
    return refine_solution(problem, solution, trials=trials, seed=seed, storage=storage, study_name=study_name,
                           num_requests=num_requests, simulation_seed=simulation_seed)
