"""The one orchestrator: :func:`solve` answers a problem for every front-end.

``guide-opt solve`` and the web planner (:mod:`guide_opt.web`) both call :func:`solve`, so a
web session and the CLI run of its downloaded problem file answer with the same JSON
(``solve --format json``). It runs the stages in turn, on one
:class:`~guide_opt.deadline.Deadline` (``--time-limit-s`` bounds them all, the build included, from
``started_s`` -- the command's start on the command line):

1. build: the candidates of every LLM, evaluated with the performance model (:mod:`guide_opt.space`);
2. solve: the stack the objective's registry entry names (:attr:`~guide_opt.objectives.ObjectiveKind.stack`):
   ``fleet`` -- the chosen solver (:mod:`guide_opt.solvers`: optimum, plan checks in the
   simulator, alternatives; an infeasible answer carries its explanation); ``pareto`` -- the
   exact frontier (:mod:`guide_opt.pareto`); ``schedule`` -- batch jobs on the GPU pool
   (:mod:`guide_opt.scheduling`), also whenever ``scheduling.enabled`` is true;
3. verify: the answer re-checked with the full model (:mod:`guide_opt.verify`);
4. explain: which constraints bind and what relaxing each gains (:mod:`guide_opt.explain`);
5. refine (when asked): Optuna against the serving simulator (:mod:`guide_opt.refine`);
6. the payload, with each deployment's launch artifacts (:mod:`guide_opt.answer`).

Front-ends only parse their input and render the :class:`Answer` (tables, charts, files).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from guide_opt.answer import solved_payload, with_artifacts
from guide_opt.deadline import Deadline
from guide_opt.objectives import OBJECTIVES, schedule_reporting
from guide_opt.plan import Pick, served_percent, verification_problem
from guide_opt.presets import SolverPreset
from guide_opt.problem import Problem
from guide_opt.solution import Solution
from guide_opt.space import SearchSpace, build_space
from guide_opt.disk_cache import switched_off
from guide_opt.table_cache import cached_build

if TYPE_CHECKING:
    from guide_opt.pareto import Frontier
    from guide_opt.refine import Refinement
    from guide_opt.scheduling import Schedule

#: A progress sink: receives one short sentence per stage of a solve.
Progress = Callable[[str], None]


def _silent(_message: str) -> None:
    """The default :data:`Progress` sink: says nothing."""


@dataclass(frozen=True)
class RefineRequest:
    """Stage 5's settings (``solve --refine``): Optuna trials, an optional shared storage and study, a progress bar."""

    trials: int
    storage: str | None = None
    study_name: str | None = None
    progress_bar: bool = False


@dataclass
class Answer:
    """A solved problem: the :class:`Solution`, the JSON payload, and what renderers need.

    payload: the object ``solve --format json`` prints (front-ends may add keys such as
        ``plot`` or ``emitted``).
    space: the evaluated search space (None when the solver built its own and did not return it).
    frontier / schedule: the Pareto frontier or batch-job schedule, for those objectives.
    refinement: the refinement, when one was asked for and a plan was found.
    """

    solution: Solution
    payload: dict[str, Any]
    space: SearchSpace | None = None
    frontier: "Frontier | None" = None
    schedule: "Schedule | None" = None
    refinement: "Refinement | None" = None

    @property
    def exit_code(self) -> int:
        """0 when an answer was found, 2 otherwise (the CLI's exit codes)."""
        return 0 if self.solution.status.found else 2


def refinable(problem: Problem) -> bool:
    """True when ``problem``'s plans can be refined in the simulator (:attr:`~guide_opt.objectives.ObjectiveKind.simulated`, not a schedule)."""
    return OBJECTIVES[problem.objective].simulated and not problem.is_schedule


def solve(problem: Problem, *, solver_name: str = "cpsat", preset: SolverPreset, time_limit_s: float | None = None,
          seed: int | None = None, explain: bool = True, refine: RefineRequest | None = None, workers: int | None = None,
          progress: Progress = _silent, started_s: float | None = None, use_cache: bool = True) -> Answer:
    """Answer ``problem``: build, solve, verify, explain, refine (see the module docstring); the JSON of ``solve --format json``.

    ``time_limit_s`` (else the preset's) counts from ``started_s``, a :func:`time.perf_counter`
    reading (None: now): the command line passes its own start, so that loading modules and
    reading the problem count too (``stats.timing.startup_s``).

    ``workers`` bounds the processes that evaluate candidates (None: the machine's cores;
    a server running several solves at once passes 1). ``progress`` receives a sentence at
    each stage. ``use_cache``: read and store the candidate table and the plan checks' simulations in
    the table cache (:mod:`guide_opt.table_cache`; ``stats.timing.candidate_table`` says where the
    table came from).
    Bad input raises :class:`~guide_opt.errors.InputError`; infeasibility does not raise (the
    payload carries the explanation).
    """
    limit = _Limit(time_limit_s if time_limit_s is not None else preset.time_limit_s, started_s)
    with switched_off(not use_cache):
        if problem.is_schedule:
            answer = _schedule_answer(problem, solver_name, preset, limit, seed, workers, progress)
        elif OBJECTIVES[problem.objective].stack == "pareto":
            answer = _pareto_answer(problem, solver_name, preset, limit, seed, workers, progress)
        else:
            answer = _fleet_answer(problem, solver_name, preset, limit, seed, explain, workers, progress)
    if refine is not None and answer.solution.status.found:
        answer = _refined(problem, answer, refine, seed if seed is not None else preset.seed)
    return with_artifacts(problem, answer)


@dataclass(frozen=True)
class _Limit:
    """The time limit of one answer (s) and the :func:`time.perf_counter` reading it counts from (None: the build's start)."""

    seconds: float
    started_s: float | None


@dataclass(frozen=True)
class _Built:
    """The answer's :class:`~guide_opt.deadline.Deadline`, its candidate table and where the table came from
    (:func:`~guide_opt.table_cache.cached_build`: ``cached``, ``built`` or ``built, not cached``)."""

    deadline: Deadline
    space: SearchSpace
    source: str

    def record(self, payload: dict[str, Any]) -> None:
        """Say where the candidate table came from, beside the build's time (``payload["stats"]["timing"]``: like the
        times, it may differ between two solves of one problem whose answers are the same)."""
        payload.setdefault("stats", {}).setdefault("timing", {})["candidate_table"] = self.source


#: A long build reports its progress every this many seconds, starting this long after it began (a quick build says nothing more).
BUILD_PROGRESS_EVERY_S = 5.0


class _BuildReporter:
    """Turns the build's (shapes done, shapes in all) into a :data:`Progress` line every :data:`BUILD_PROGRESS_EVERY_S` seconds,
    with the time left at the rate so far."""

    def __init__(self, progress: Progress, clock: Callable[[], float] = time.perf_counter) -> None:
        self.progress, self.clock = progress, clock
        self.started = self.last = clock()

    def __call__(self, done: int, total: int) -> None:
        now = self.clock()
        if now - self.last < BUILD_PROGRESS_EVERY_S or done >= total:
            return
        self.last = now
        left_s = (now - self.started) * (total - done) / done
        self.progress(f"evaluated {done:,} of {total:,} shapes ({100 * done / total:.0f}%), about {left_s:,.0f} s left ...")


def _build_under_limit(problem: Problem, limit: _Limit, workers: int | None, progress: Progress, what: str) -> _Built:
    """Start the answer's one :class:`~guide_opt.deadline.Deadline` and evaluate the candidates under it (phase
    ``space_build``; through the table cache, unless :func:`solve` switched it off); ``what`` names the problem's
    entries in the progress line."""
    deadline = Deadline(limit.seconds, started=limit.started_s)
    progress(f"evaluating the candidates of {len(problem.models)} {what} with the performance model ...")
    deadline.phase("space_build")
    space, source = cached_build(problem, workers=workers, on_shape=_BuildReporter(progress))
    return _Built(deadline, space, source)


def _fleet_answer(problem: Problem, solver_name: str, preset: SolverPreset, limit: _Limit, seed: int | None,
                  explain: bool, workers: int | None, progress: Progress) -> Answer:
    """One pick per LLM: the solver's optimum and alternatives, verified, with the binding-constraint report."""
    from guide_opt.solvers import get_solver, solver_module
    from guide_opt.verify import verify

    solver_module(solver_name)  # a bad name is refused before the build, without loading the solvers (OR-Tools)
    started = time.perf_counter()
    built = _build_under_limit(problem, limit, workers, progress, "LLM(s)")
    deadline, space = built.deadline, built.space
    deadline.phase("startup")  # loading the solver (OR-Tools) is start-up, not the candidate build
    solver = get_solver(solver_name, preset)
    progress(f"{space.candidate_count:,} candidates ({built.source}) in {time.perf_counter() - started:.1f} s; solving with {solver_name} "
             "(then the top-3 and the best-throughput / minimum-latency picks) ...")
    solution = solver.solve(problem, seed=seed, space=space, deadline=deadline)
    deadline.phase("verification")
    violations = verify(verification_problem(problem, solution.deployments), solution) if solution.status.found else []
    binding = []
    if explain and solution.status.found:
        progress("explaining which constraints bind (one relaxed solve each; --no-explain skips this) ...")
        deadline.phase("explanation")
        binding = binding_constraints(problem, solution, preset, space, deadline=deadline, seed=seed)
    deadline.phase("report")
    payload = solved_payload(problem, solution, violations)
    payload["stats"]["timing"] = deadline.timing() | {"total_s": round(deadline.elapsed_s(), 4)}
    built.record(payload)
    if binding:
        payload["binding_constraints"] = binding
    if OBJECTIVES[problem.objective].replicas == "share" and solution.status.found:
        payload["served_percent"] = [served_percent(req, d) for req, d in zip(problem.models, solution.deployments)]
    return Answer(solution, payload, space=space)


def binding_constraints(problem: Problem, solution: Solution, preset: SolverPreset, space: SearchSpace | None = None, *,
                        deadline: Deadline | float | None = None, seed: int | None = None) -> list[dict]:
    """Which constraints bind at ``solution`` and what relaxing each would gain (:func:`~guide_opt.explain.explain_binding`,
    re-solving with CP-SAT whichever solver found the plan).

    ``deadline``: the solve's, so that the report shares ``--time-limit-s`` (None: a budget of its own).
    """
    from guide_opt.explain import explain_binding
    from guide_opt.solvers.cpsat import CpSatSolver

    space = space or build_space(problem)
    plan = []
    for ms, dep in zip(space.models, solution.deployments):
        match = next(c for c in ms.candidates if c.shape.key == (dep.gpu, dep.tp, dep.pp, dep.framework, dep.quantization, dep.kv_cache_dtype) and c.batch == dep.max_batch)
        plan.append(Pick(match, dep.replicas))
    return explain_binding(space, tuple(plan), CpSatSolver(preset), deadline, seed=seed)


def _pareto_answer(problem: Problem, solver_name: str, preset: SolverPreset, limit: _Limit, seed, workers, progress: Progress) -> Answer:
    """``objective: pareto``: the exact frontier, its points and the cheapest point as the solution."""
    from guide_opt.pareto import check_request, frontier_json, solve_pareto

    check_request(problem, solver_name)
    built = _build_under_limit(problem, limit, workers, progress, "LLM(s)")
    progress("computing the exact Pareto frontier (one CP-SAT solve per point) ...")
    solution, frontier, space = solve_pareto(problem, solver=solver_name, preset=preset, seed=seed, space=built.space, deadline=built.deadline)
    payload = solved_payload(problem, solution)
    built.record(payload)
    payload.update(frontier_json(space, frontier))
    return Answer(solution, payload, space=space, frontier=frontier)


def _schedule_answer(problem: Problem, solver_name: str, preset: SolverPreset, limit: _Limit, seed, workers, progress: Progress) -> Answer:
    """Batch jobs scheduled on the GPU pool: the schedule, verified."""
    from guide_opt.scheduling import check_request, schedule_json, solve_schedule, verify_schedule

    check_request(problem, solver_name)
    built = _build_under_limit(problem, limit, workers, progress, "batch job(s)")
    progress("scheduling the jobs on the GPU pool with CP-SAT ...")
    solution, schedule, space = solve_schedule(problem, solver=solver_name, preset=preset, seed=seed, space=built.space, deadline=built.deadline)
    violations = verify_schedule(problem, schedule, space) if solution.status.found else []
    payload = solved_payload(problem, solution, violations)
    built.record(payload)
    payload["objective_unit"] = OBJECTIVES[schedule_reporting(problem.objective)].unit
    payload.update(schedule_json(schedule))
    return Answer(solution, payload, space=space, schedule=schedule)


def _refined(problem: Problem, answer: Answer, request: RefineRequest, seed: int) -> Answer:
    """``answer`` with its plan refined against the serving simulator (``payload["refinement"]``)."""
    from guide_opt.refine import refine_solution

    refinement = refine_solution(problem, answer.solution, trials=request.trials, seed=seed, storage=request.storage,
                                 study_name=request.study_name, progress=request.progress_bar)
    answer.payload["refinement"] = refinement.to_json()
    answer.refinement = refinement
    return answer
