"""Offline batch jobs scheduled on a limited GPU pool (``objective: min_makespan``, or ``min_cost``
with ``scheduling.enabled: true``).

Every LLM of the problem is one *job*: ``requests`` requests of its token lengths, due
``deadline_h`` hours after the schedule starts (time 0). A job runs once, on one replica shape
(a :class:`~guide_opt.space.Candidate`: GPU type, TP/PP, engine, precision, batch size) with
``r`` replicas, from its start to its end; jobs share the pool over time.

**Duration.** A replica holds ``b`` (the candidate's batch) requests at a time and completes a
request every ``L / b`` seconds on average, where ``L = TTFT + (output_tokens - 1) x TPOT`` is the
candidate's mean request latency -- the capacity the fleet plan uses (Little's law, see
:func:`~guide_opt.space.replicas_needed`). The job is planned in *waves* of ``r x b`` requests,
each taking ``L``::

    duration_s = ceil(requests / (r x b)) x L

which is never shorter than ``requests x L / (r x b)``, so a job that meets its deadline here
also meets the fleet plan's demand check. In the CP-SAT model time is an integer number of
quanta of ``scheduling.time_quantum_s`` seconds (:func:`~guide_opt.quanta.to_quanta`):
durations round *up*, deadlines round *down*, so every slot the model reserves covers the
real duration and ends by the real deadline.

**Model.** Per job, one Boolean per option (candidate x replica count) and one start time;
each option is an optional fixed-size interval on the job's start. Capacity: a cumulative
constraint per GPU type (``hardware.inventory``), one over all GPUs (``hardware.max_gpus``) and
one over $/h (``budget_per_hour`` is a cap on the spend rate at every instant). Deadlines bound
each job's end. Objectives: ``min_makespan`` (hours until the last job ends; ties go to the
cheaper schedule) or ``min_cost`` (total $ = sum of GPUs x $/GPU-hour x real duration; ties go
to the earlier finish).

**Options and pruning.** Options of a job are the candidates meeting memory and SLOs, with 1
to :func:`~guide_opt.space.replica_limit` replicas, whose slot fits before the deadline. An
option is dropped when another option of the same job on the same GPU type has a slot no
longer, no more GPUs and no higher cost: putting it at the same start occupies a sub-interval
with less of the same resources, so every capacity, deadline and objective is no worse --
the pruning is exact.

:func:`verify_schedule` re-checks a returned schedule with the full model: each job's
deployment (memory, SLOs, metrics, cost), its real duration inside its slot and before its
deadline, and the capacity per GPU type, in all and in $/h at every start time.
:func:`brute_force_schedule` enumerates option combinations and job orders (serial schedule
generation; exact for these regular objectives) for the cross-checks.
"""

from __future__ import annotations

import dataclasses

import itertools
import math
import time
from collections import defaultdict
from dataclasses import dataclass, field

from guide_opt.cp_sat import cp_model
from guide_opt.deadline import Deadline
from guide_opt.errors import InputError
from guide_opt.explain import candidate_report, explanation_deadline, infeasibility_report, minimal_conflict
from guide_opt.families import Family, gpu_family, llm_family, shared_family
from guide_opt.objectives import OBJECTIVES, schedule_reporting
from guide_opt.formulation import run_cp_sat
from guide_opt.quanta import COST_QUANTUM_USD_PER_H, budget_quanta, to_quanta

#: Longest job duration represented in the model, in time quanta (2**40: millennia at 1-minute quanta).
MAX_JOB_QUANTA = 2**40
from guide_opt.plan import Pick, to_deployment
from guide_opt.presets import SolverPreset, load_preset
from guide_opt.problem import Problem
from guide_opt.solution import Deployment, Solution, Status
from guide_opt.space import Candidate, SearchSpace, build_space, replica_limit, searched_space
from guide_opt.verify import Violation, verify_deployments

#: One quantum of total cost ($) in a min_cost schedule.
SCHEDULE_COST_QUANTUM_USD = 1e-4
#: Verification rounds before giving up (each round cuts at least one candidate).
MAX_VERIFICATION_ROUNDS = 10



def job_duration_s(requests: int, batch: int, replicas: int, request_latency_s: float) -> float:
    """Seconds ``replicas`` replicas of batch ``batch`` need for ``requests`` requests: ``ceil(requests / (replicas x batch)) x latency``."""
    return math.ceil(requests / (replicas * batch)) * request_latency_s


@dataclass(frozen=True)
class JobOption:
    """One way to run job ``job`` (an LLM index): ``replicas`` x ``candidate`` for ``duration_s`` seconds.

    ``duration_quanta``: the slot in time quanta (rounded up). ``cost_usd``: GPUs x $/GPU-hour
    x the real duration.
    """

    job: int
    candidate: Candidate
    replicas: int
    duration_s: float
    duration_quanta: int

    @property
    def gpus(self) -> int:
        """GPUs the job holds while it runs."""
        return self.replicas * self.candidate.shape.gpus_per_replica

    @property
    def gpu_id(self) -> str:
        """GPU type."""
        return self.candidate.shape.gpu.id

    @property
    def usd_per_hour(self) -> float:
        """$/h while the job runs."""
        return self.replicas * self.candidate.shape.usd_per_replica_hour

    @property
    def cost_usd(self) -> float:
        """$ of the whole job."""
        return self.usd_per_hour * self.duration_s / 3600.0

    @property
    def cost_quanta(self) -> int:
        """``cost_usd`` in :data:`SCHEDULE_COST_QUANTUM_USD` units."""
        return to_quanta(self.cost_usd, SCHEDULE_COST_QUANTUM_USD)


@dataclass(frozen=True)
class ScheduledJob:
    """A job placed in the schedule: its option, slot ``[start, end)`` in quanta, and times in hours."""

    option: JobOption
    start_quanta: int
    quantum_s: int
    model: str

    @property
    def end_quanta(self) -> int:
        """End of the reserved slot (quanta)."""
        return self.start_quanta + self.option.duration_quanta

    @property
    def start_h(self) -> float:
        """Start (hours after time 0)."""
        return self.start_quanta * self.quantum_s / 3600.0

    @property
    def end_h(self) -> float:
        """End of the reserved slot (hours)."""
        return self.end_quanta * self.quantum_s / 3600.0

    @property
    def finish_h(self) -> float:
        """When the work itself finishes (start + real duration, hours; <= ``end_h``)."""
        return self.start_h + self.option.duration_s / 3600.0

    def to_json(self) -> dict:
        """The contract's schedule row: job, model, shape, start, end, GPUs (plus details)."""
        o = self.option
        return {
            "job": o.job,
            "model": self.model,
            "shape": o.candidate.shape.label(),
            "gpu": o.gpu_id,
            "replicas": o.replicas,
            "max_batch": o.candidate.batch,
            "gpus": o.gpus,
            "start_h": round(self.start_h, 6),
            "end_h": round(self.end_h, 6),
            "finish_h": round(self.finish_h, 6),
            "duration_h": round(o.duration_s / 3600.0, 6),
            "cost_usd": round(o.cost_usd, 4),
        }


@dataclass(frozen=True)
class Schedule:
    """A batch-job plan: one :class:`ScheduledJob` per LLM (in problem order) or none.

    objective: hours until the last slot ends (min_makespan) or total $ (min_cost); bound in
    the same unit.
    """

    status: Status
    objective_name: str
    objective: float | None
    bound: float | None
    jobs: tuple[ScheduledJob, ...]
    quantum_s: int
    stats: dict = field(default_factory=dict)
    explanation: dict | None = None

    @property
    def makespan_h(self) -> float:
        """Hours until the last slot ends."""
        return max((j.end_h for j in self.jobs), default=0.0)

    @property
    def cost_usd(self) -> float:
        """Total $ of all jobs."""
        return math.fsum(j.option.cost_usd for j in self.jobs)


# ---- options ------------------------------------------------------------------------------

def _minimal(options: list[JobOption]) -> list[JobOption]:
    """Options of one job no other option on the same GPU type beats in (slot, GPUs, cost).

    Two passes: per (GPU type, GPU count) a sort-and-sweep over (slot, cost), then across GPU
    counts of one type on the few survivors.
    """
    by_count: dict[tuple[str, int], list[JobOption]] = defaultdict(list)
    for o in options:
        by_count[o.gpu_id, o.gpus].append(o)
    by_type: dict[str, list[JobOption]] = defaultdict(list)
    key = lambda o: (o.duration_quanta, o.gpus, o.cost_quanta, o.candidate.shape.key, o.candidate.batch)  # noqa: E731
    for (gpu_id, _), group in by_count.items():
        group.sort(key=key)
        best_cost = None
        for o in group:  # same GPUs: kept when cheaper than every option with a slot no longer
            if best_cost is None or o.cost_quanta < best_cost:
                by_type[gpu_id].append(o)
                best_cost = o.cost_quanta
    kept_all = []
    for group in by_type.values():
        group.sort(key=key)
        kept: list[JobOption] = []
        for o in group:  # a dominating option sorts first
            if not any(k.duration_quanta <= o.duration_quanta and k.gpus <= o.gpus and k.cost_quanta <= o.cost_quanta for k in kept):
                kept.append(o)
        kept_all.extend(kept)
    return kept_all


def job_options(space: SearchSpace, job: int, *, respect_limits: bool = True, forbidden: frozenset[int] = frozenset(),
                prune: bool = True) -> tuple[list[JobOption], int]:
    """The options of ``job`` and how many were pruned as dominated.

    With ``respect_limits`` (the schedule itself) replica counts stop at
    :func:`~guide_opt.space.replica_limit` and slots must end by the deadline; without (the
    explanation, which may relax those limits) counts go to ``search.max_replicas`` and any
    deadline is allowed.
    """
    problem = space.problem
    ms = space.models[job]
    w = ms.requirement.workload
    quantum_s = problem.scheduling.time_quantum_s
    deadline_q = to_quanta(w.deadline_h * 3600.0, quantum_s, "down")
    options = []
    for c in ms.candidates:
        if not c.usable_for("max_served") or id(c) in forbidden:  # memory and SLOs hold; the demand is the job's deadline here
            continue
        r_max = replica_limit(space, c) if respect_limits else problem.search.max_replicas
        for r in range(1, r_max + 1):
            duration_s = job_duration_s(w.requests, c.batch, r, c.request_latency_s)
            # clamped far beyond any deadline (a year is ~5e5 minutes) so that the model's integers stay 64-bit safe
            quanta = max(1, to_quanta(min(duration_s, MAX_JOB_QUANTA * quantum_s), quantum_s, "up"))
            if respect_limits and quanta > deadline_q:
                continue
            options.append(JobOption(job, c, r, duration_s, quanta))
    if not prune:
        return options, 0
    kept = _minimal(options)
    return kept, len(options) - len(kept)


# ---- the CP-SAT model ------------------------------------------------------------------------

@dataclass
class ScheduleModel:
    """The CP-SAT schedule model and its handles."""

    model: cp_model.CpModel
    options: list[list[JobOption]]
    present: list[list[cp_model.IntVar]]
    starts: list[cp_model.IntVar]
    ends: list[cp_model.IntVar]
    makespan: cp_model.IntVar
    cost_expr: cp_model.LinearExpr
    family_literals: dict[Family, cp_model.IntVar]
    capacities: dict[Family, cp_model.IntVar]
    deadline_quanta: list[int]

    def decode(self, solver: cp_model.CpSolver, space: SearchSpace) -> tuple[ScheduledJob, ...]:
        """The scheduled jobs of the solver's solution."""
        quantum_s = space.problem.scheduling.time_quantum_s
        jobs = []
        for j, (opts, lits) in enumerate(zip(self.options, self.present)):
            chosen = [o for o, x in zip(opts, lits) if solver.Value(x)]
            jobs.append(ScheduledJob(chosen[0], int(solver.Value(self.starts[j])), quantum_s, space.models[j].llm.id))
        return tuple(jobs)


def build_schedule_model(space: SearchSpace, options: list[list[JobOption]], *, explain: bool = False) -> ScheduleModel:
    """Build the CP-SAT model over ``options`` (per job). With ``explain`` every limit is behind a literal.

    In explain mode each capacity is an integer variable, at most the limit when its literal
    holds, so that the explanation can also minimize it; deadlines likewise.
    """
    problem = space.problem
    quantum_s = problem.scheduling.time_quantum_s
    model = cp_model.CpModel()
    deadlines = [to_quanta(ms.requirement.workload.deadline_h * 3600.0, quantum_s, "down") for ms in space.models]
    if explain:
        horizon = sum(max((o.duration_quanta for o in opts), default=0) for opts in options) + max(deadlines, default=0)
    else:
        horizon = max(deadlines, default=0)
    literals: dict[Family, cp_model.IntVar] = {}
    capacities: dict[Family, cp_model.IntVar] = {}

    def family(f: Family):
        if f not in literals:
            literals[f] = model.NewBoolVar(f.name)
        return literals[f]

    present, starts, ends = [], [], []
    intervals: list[tuple[cp_model.IntervalVar, JobOption]] = []
    makespan = model.NewIntVar(0, max(horizon, 0), "makespan")
    for j, opts in enumerate(options):
        start = model.NewIntVar(0, max(horizon, 0), f"start[{j}]")
        end = model.NewIntVar(0, max(horizon, 0), f"end[{j}]")
        lits = []
        for k, o in enumerate(opts):
            x = model.NewBoolVar(f"x[{j},{k}]")
            intervals.append((model.NewOptionalFixedSizeIntervalVar(start, o.duration_quanta, x, f"run[{j},{k}]"), o))
            model.Add(end == start + o.duration_quanta).OnlyEnforceIf(x)
            lits.append(x)
        if lits:
            model.AddExactlyOne(lits)
        else:
            model.AddBoolOr([])  # no option for this job
        deadline = model.Add(end <= deadlines[j])
        if explain:
            deadline.OnlyEnforceIf(family(llm_family("deadline_h", space.models[j])))
        model.Add(makespan >= end)
        present.append(lits)
        starts.append(start)
        ends.append(end)

    def cumulative(name: Family, members: list[tuple[cp_model.IntervalVar, int]], limit: int) -> None:
        if not members:
            return
        if explain:
            cap = model.NewIntVar(0, max(limit, sum(d for _, d in members)), f"capacity[{name.name}]")
            model.Add(cap <= limit).OnlyEnforceIf(family(name))
            capacities[name] = cap
            model.AddCumulative([iv for iv, _ in members], [d for _, d in members], cap)
        elif sum(d for _, d in members) > limit:  # otherwise it can never bind
            model.AddCumulative([iv for iv, _ in members], [d for _, d in members], limit)

    for gpu_id in sorted({o.gpu_id for _, o in intervals}):
        limit = problem.hardware.inventory.get(gpu_id)
        if limit is not None:
            cumulative(gpu_family("inventory", gpu_id), [(iv, o.gpus) for iv, o in intervals if o.gpu_id == gpu_id], limit)
            if not explain:  # redundant energy bound: GPU-quanta used on the type <= capacity x makespan
                model.Add(sum(x * (o.gpus * o.duration_quanta) for lits, opts in zip(present, options) for x, o in zip(lits, opts)
                              if o.gpu_id == gpu_id) <= limit * makespan)
    if problem.hardware.max_gpus is not None:
        cumulative(shared_family("max_gpus"), [(iv, o.gpus) for iv, o in intervals], problem.hardware.max_gpus)
        if not explain:
            model.Add(sum(x * (o.gpus * o.duration_quanta) for lits, opts in zip(present, options) for x, o in zip(lits, opts))
                      <= problem.hardware.max_gpus * makespan)
    if problem.budget_per_hour is not None:
        cumulative(shared_family("budget"), [(iv, to_quanta(o.usd_per_hour, COST_QUANTUM_USD_PER_H)) for iv, o in intervals],
                   budget_quanta(problem.budget_per_hour))
    cost_expr = sum(x * o.cost_quanta for lits, opts in zip(present, options) for x, o in zip(lits, opts))
    return ScheduleModel(model, options, present, starts, ends, makespan, cost_expr, literals, capacities, deadlines)


def _optimize(space: SearchSpace, options: list[list[JobOption]], objective: str, preset: SolverPreset, deadline: Deadline,
              seed: int) -> tuple[Status, tuple[ScheduledJob, ...], float | None, dict]:
    """Solve for ``objective`` and break ties (min_makespan -> cheaper, min_cost -> earlier). Returns status, jobs, bound, stats.

    The tie-break re-solves the same model, hinted with the first answer; both draw on ``deadline``.
    """
    sm = build_schedule_model(space, options)
    model = sm.model
    primary, secondary = (sm.makespan, sm.cost_expr) if objective == "min_makespan" else (sm.cost_expr, sm.makespan)
    model.Minimize(primary)
    status, solver = run_cp_sat(model, preset, deadline, seed=seed)
    stats = {"variables": len(model.Proto().variables), "constraints": len(model.Proto().constraints)}
    if not status.found:
        return status, (), None, stats
    bound_quanta = solver.BestObjectiveBound()
    jobs = sm.decode(solver, space)
    model.Add(primary <= round(solver.ObjectiveValue()))
    model.Minimize(secondary)
    for j, lits in enumerate(sm.present):  # start the tie-break from the first answer
        model.AddHint(sm.starts[j], solver.Value(sm.starts[j]))
        for x in lits:
            model.AddHint(x, solver.Value(x))
    second_status, second = run_cp_sat(model, preset, deadline, seed=seed)
    if second_status.found:
        jobs = sm.decode(second, space)
    stats["tie_break_proven"] = second_status is Status.OPTIMAL
    return status, jobs, bound_quanta, stats


def schedule_objective(objective: str, jobs: tuple[ScheduledJob, ...]) -> float:
    """The schedule's objective: hours until the last slot ends (min_makespan) or total $ (min_cost)."""
    if objective == "min_makespan":
        return max((j.end_h for j in jobs), default=0.0)
    return math.fsum(j.option.cost_usd for j in jobs)


def _bound_in_units(objective: str, bound_quanta: float, quantum_s: int) -> float:
    if objective == "min_makespan":
        return bound_quanta * quantum_s / 3600.0
    return bound_quanta * SCHEDULE_COST_QUANTUM_USD


# ---- verification ----------------------------------------------------------------------------

def job_deployment(space: SearchSpace, job: ScheduledJob) -> Deployment:
    """The contract's deployment of a scheduled job ($/h while it runs)."""
    return to_deployment(space, Pick(job.option.candidate, job.option.replicas))


def verify_schedule(problem: Problem, schedule: Schedule, space: SearchSpace | None = None) -> list[Violation]:
    """Re-check ``schedule`` with the full model and list every violated constraint.

    Each job's deployment is verified alone (:func:`~guide_opt.verify.verify_deployments` on
    the problem restricted to that LLM: memory, SLOs, metrics, cost, and the pool limits for
    that job by itself); its duration is recomputed from a fresh evaluation and must fit in its
    slot and end by its deadline; and at every job's start time the running jobs must respect
    the inventory of each GPU type, ``max_gpus`` and ``budget_per_hour``.
    """
    space = space or build_space(problem)
    violations: list[Violation] = []
    if len(schedule.jobs) != len(problem.models):
        return [Violation(None, f"expected {len(problem.models)} jobs, got {len(schedule.jobs)}")]
    from guide_opt.space import evaluate_candidate

    for i, (req, job) in enumerate(zip(problem.models, schedule.jobs)):
        deployment = job_deployment(space, job)
        single = problem.model_copy(update={"models": [req]})
        violations.extend(Violation(i, v.text) for v in verify_deployments(single, [deployment]))
        ms = space.models[i]
        fresh_ms = dataclasses.replace(ms, shapes=[], candidates=[])
        fresh = evaluate_candidate(fresh_ms, job.option.candidate.shape, job.option.candidate.batch, problem.search.max_replicas)
        if not fresh.fits:
            continue  # already reported as a memory violation
        duration_s = job_duration_s(req.workload.requests, fresh.batch, job.option.replicas, fresh.request_latency_s)
        start_s = job.start_quanta * job.quantum_s
        if start_s + duration_s > job.end_quanta * job.quantum_s * (1 + 1e-12):
            violations.append(Violation(i, f"{ms.label}: runs {duration_s / 3600:.4f} h, longer than its slot"))
        if start_s + duration_s > req.workload.deadline_h * 3600.0 * (1 + 1e-12):
            violations.append(Violation(i, f"{ms.label}: ends at {(start_s + duration_s) / 3600:.3f} h, after deadline_h {req.workload.deadline_h:g}"))
    for t in sorted({j.start_quanta for j in schedule.jobs}):
        running = [j for j in schedule.jobs if j.start_quanta <= t < j.end_quanta]
        by_type: dict[str, int] = defaultdict(int)
        for j in running:
            by_type[j.option.gpu_id] += j.option.gpus
        hours = t * schedule.quantum_s / 3600.0
        for gpu_id, used in sorted(by_type.items()):
            limit = problem.hardware.inventory.get(gpu_id)
            if limit is not None and used > limit:
                violations.append(Violation(None, f"inventory[{gpu_id}]: {used} GPUs in use at {hours:.2f} h, inventory has {limit}"))
        total = sum(by_type.values())
        if problem.hardware.max_gpus is not None and total > problem.hardware.max_gpus:
            violations.append(Violation(None, f"max_gpus: {total} GPUs in use at {hours:.2f} h, max_gpus is {problem.hardware.max_gpus}"))
        rate = math.fsum(j.option.usd_per_hour for j in running)
        if problem.budget_per_hour is not None and rate > problem.budget_per_hour * (1 + 1e-9):
            violations.append(Violation(None, f"budget: ${rate:.2f}/h at {hours:.2f} h, budget_per_hour is ${problem.budget_per_hour:.2f}"))
    return violations


# ---- explanations ----------------------------------------------------------------------------

def _precheck_reasons(space: SearchSpace, options: list[list[JobOption]]) -> list[str]:
    """Jobs that cannot run at all, or cannot meet their deadline even alone."""
    reasons = []
    quantum_s = space.problem.scheduling.time_quantum_s
    for ms, opts in zip(space.models, options):
        usable = [c for c in ms.candidates if c.usable_for("max_served")]
        if not usable:
            report = candidate_report(ms)
            parts = [f"{n} candidates {family.replace('_', ' ')}" for family, n in report["candidates_failing"].items() if family != "demand"]
            for key, slo in (("best_ttft_ms", ms.requirement.slo.ttft_ms), ("best_tpot_ms", ms.requirement.slo.tpot_ms)):
                if key in report and slo is not None:
                    parts.append(f"the {key[5:9].upper()} reaches {report[key]['value']:.1f} ms at best ({report[key]['at']}) vs the SLO {slo:g} ms")
            if not ms.shapes:
                parts = [f"{r} ({n} shapes)" for r, n in sorted(ms.pruned.items(), key=lambda kv: -kv[1])[:3]]
            reasons.append(f"{ms.label}: no replica shape meets memory and SLOs: " + "; ".join(parts))
            continue
        if not opts:
            fastest = min((job_duration_s(ms.requirement.workload.requests, c.batch, replica_limit(space, c), c.request_latency_s), c)
                          for c in usable if replica_limit(space, c) >= 1) if any(replica_limit(space, c) >= 1 for c in usable) else None
            if fastest is None:
                reasons.append(f"{ms.label}: no replica fits the pool limits (inventory, max_gpus, budget_per_hour)")
            else:
                duration_s, c = fastest
                reasons.append(f"{ms.label}: the job needs {duration_s / 3600:.2f} h even alone on its fastest option "
                               f"({replica_limit(space, c)} x {c.shape.label()}, batch {c.batch}) but deadline_h is "
                               f"{ms.requirement.workload.deadline_h:g} (time quantum {quantum_s} s)")
    return reasons


def _relaxation(space: SearchSpace, sm: ScheduleModel, family: Family, preset: SolverPreset, deadline: Deadline) -> dict | None:
    """The least relaxation of ``family`` alone that admits a schedule."""
    model = sm.model.Clone()
    for name, lit in sm.family_literals.items():
        model.Add(model.GetBoolVarFromProtoIndex(lit.Index()) == (0 if name == family else 1))
    problem = space.problem
    quantum_s = problem.scheduling.time_quantum_s
    if family.kind == "deadline_h":
        model.Minimize(model.GetIntVarFromProtoIndex(sm.ends[family.model_index].Index()))
    else:
        model.Minimize(model.GetIntVarFromProtoIndex(sm.capacities[family].Index()))
    status, solver = run_cp_sat(model, preset, deadline)
    if not status.found:
        return None
    value = round(solver.ObjectiveValue())
    if family.kind == "deadline_h":
        m = family.model_index
        current, needed = problem.models[m].workload.deadline_h, value * quantum_s / 3600.0
        return {"constraint": f"models[{m}].workload.deadline_h", "current": current, "needed": needed,
                "text": f"relax models[{m}].workload.deadline_h ({space.models[m].llm.id}) from {current:g} to {needed:.2f} h"}
    if family.kind == "inventory":
        gpu_id = family.gpu_id
        current = problem.hardware.inventory[gpu_id]
        return {"constraint": f"hardware.inventory.{gpu_id}", "current": current, "needed": value,
                "text": f"have {value} x {gpu_id} instead of {current}"}
    if family.kind == "max_gpus":
        current = problem.hardware.max_gpus
        return {"constraint": "hardware.max_gpus", "current": current, "needed": value, "text": f"raise hardware.max_gpus from {current} to {value}"}
    needed = value * COST_QUANTUM_USD_PER_H
    current = problem.budget_per_hour
    return {"constraint": "budget_per_hour", "current": current, "needed": needed,
            "text": f"raise budget_per_hour from ${current:.2f} to ${needed:.2f}/h"}


def explain_schedule_infeasible(space: SearchSpace, preset: SolverPreset, options: list[list[JobOption]],
                                deadline: Deadline | float | None = None) -> dict:
    """Why no schedule exists: per-job pre-checks, the conflicting limits (named, assumptions + deletion filter), and
    single relaxations; every re-solve draws on ``deadline`` (see :func:`~guide_opt.explain.explanation_deadline`)."""
    deadline = explanation_deadline(preset, deadline)
    reasons = _precheck_reasons(space, options)
    conflict: list[Family] = []
    relaxations = []
    if all(any(c.usable_for("max_served") for c in ms.candidates) for ms in space.models):
        loose = [job_options(space, j, respect_limits=False)[0] for j in range(len(space.models))]
        sm = build_schedule_model(space, loose, explain=True)
        conflict = minimal_conflict(sm.model, sm.family_literals, preset, deadline)
        for family in conflict:
            r = _relaxation(space, sm, family, preset, deadline)
            if r:
                relaxations.append(r)
    return infeasibility_report(space, reasons, conflict, relaxations,
                                "together these constraints admit no schedule: " + ", ".join(f.name for f in conflict))


# ---- brute force -----------------------------------------------------------------------------

def _serial_schedule(order: list[JobOption], space: SearchSpace) -> list[int] | None:
    """Place jobs in ``order`` each at its earliest feasible start (quanta); None when a deadline is missed."""
    problem = space.problem
    deadlines = [to_quanta(ms.requirement.workload.deadline_h * 3600.0, problem.scheduling.time_quantum_s, "down") for ms in space.models]
    budget_q = budget_quanta(problem.budget_per_hour) if problem.budget_per_hour is not None else None
    placed: list[tuple[int, JobOption]] = []

    def fits(start: int, o: JobOption) -> bool:
        end = start + o.duration_quanta
        for t in {start} | {s for s, _ in placed if start < s < end}:
            running = [p for s, p in placed if s <= t < s + p.duration_quanta] + [o]
            inv = problem.hardware.inventory.get(o.gpu_id)
            if inv is not None and sum(p.gpus for p in running if p.gpu_id == o.gpu_id) > inv:
                return False
            if problem.hardware.max_gpus is not None and sum(p.gpus for p in running) > problem.hardware.max_gpus:
                return False
            if budget_q is not None and sum(to_quanta(p.usd_per_hour, COST_QUANTUM_USD_PER_H) for p in running) > budget_q:
                return False
        return True

    starts = {}
    for o in order:
        start = next(t for t in sorted({0} | {s + p.duration_quanta for s, p in placed}) if fits(t, o))
        if start + o.duration_quanta > deadlines[o.job]:
            return None
        placed.append((start, o))
        starts[o.job] = start
    return [starts[j] for j in range(len(order))]


def brute_force_schedule(space: SearchSpace, objective: str, *, max_combinations: int = 200_000) -> Schedule:
    """The optimal schedule by enumeration: every option combination x every job order, serial placement.

    For a regular objective (makespan, or cost, which timing does not change) the earliest-start
    placement over all orders reaches every *active* schedule, and some optimal schedule is
    active. Ties are broken as by the CP-SAT model. For small cases only.
    """
    started = time.perf_counter()
    quantum_s = space.problem.scheduling.time_quantum_s
    options = [job_options(space, j)[0] for j in range(len(space.models))]
    count = math.prod(len(o) for o in options) * math.factorial(len(options))
    if count > max_combinations:
        raise InputError("--solver", f"exhaustive scheduling would try {count:,} option combinations x orders", "use --solver cpsat")
    best: tuple | None = None
    for combo in itertools.product(*options):
        for order in itertools.permutations(combo):
            starts = _serial_schedule(list(order), space)
            if starts is None:
                continue
            makespan = max(s + o.duration_quanta for s, o in zip(starts, combo))
            cost = sum(o.cost_quanta for o in combo)
            rank = (makespan, cost) if objective == "min_makespan" else (cost, makespan)
            if best is None or rank < best[0]:
                best = (rank, combo, starts)
    if best is None:
        return Schedule(Status.INFEASIBLE, objective, None, None, (), quantum_s, {"wall_time_s": time.perf_counter() - started})
    _, combo, starts = best
    jobs = tuple(ScheduledJob(o, s, quantum_s, space.models[o.job].llm.id) for o, s in zip(combo, starts))
    value = schedule_objective(objective, jobs)
    return Schedule(Status.OPTIMAL, objective, value, value, jobs, quantum_s, {"combinations": count})


# ---- entry point -----------------------------------------------------------------------------

def check_request(problem: Problem, solver: str) -> None:
    """Refuse, before any candidate is evaluated, a schedule that cannot be solved: a solver that does not
    schedule, or an objective a schedule does not minimize (:class:`~guide_opt.errors.InputError`)."""
    if solver not in ("cpsat", "exhaustive"):
        raise InputError("--solver", f"solver '{solver}' does not schedule batch jobs", "use cpsat (exact) or exhaustive (brute force)")
    if problem.objective not in ("min_makespan", "min_cost"):
        raise InputError("objective", f"a batch-job schedule minimizes min_makespan or min_cost, not {problem.objective}", "change the objective")


def solve_schedule(problem: Problem, *, solver: str = "cpsat", preset: SolverPreset | None = None, time_limit_s: float | None = None,
                   seed: int | None = None, space: SearchSpace | None = None, prune: bool = True,
                   deadline: Deadline | None = None) -> tuple[Solution, Schedule, SearchSpace]:
    """Schedule ``problem``'s batch jobs; returns the :class:`Solution` (one deployment per job), the schedule and the space.

    ``time_limit_s`` bounds the whole call, the space build included (``deadline``: one started
    by the caller, who may have built ``space`` under it).

    The solution's objective is the schedule's (hours for min_makespan, total $ for
    min_cost). Every returned schedule is verified (:func:`verify_schedule`); a job option
    that fails is cut off and the schedule re-solved. Never raises on infeasibility.
    """
    check_request(problem, solver)
    objective = problem.objective
    started = time.perf_counter()
    preset = preset or load_preset()
    seed = seed if seed is not None else preset.seed
    deadline, space = searched_space(problem, space, deadline, time_limit_s if time_limit_s is not None else preset.time_limit_s)
    quantum_s = problem.scheduling.time_quantum_s
    forbidden: set[int] = set()
    rounds = 0
    while True:
        rounds += 1
        built = [job_options(space, j, forbidden=frozenset(forbidden), prune=prune) for j in range(len(space.models))]
        options = [o for o, _ in built]
        stats = {"candidates": space.candidate_count,
                 "pruned_shapes": sum(sum(m.pruned.values()) for m in space.models),
                 "job_options": sum(len(o) for o in options), "dominated_pruned": sum(n for _, n in built), "time_quantum_s": quantum_s}
        if solver == "exhaustive":
            schedule = brute_force_schedule(space, objective)
            status, jobs, bound = schedule.status, schedule.jobs, schedule.bound
        elif any(not o for o in options):
            status, jobs, bound = Status.INFEASIBLE, (), None
        else:
            status, jobs, bound_quanta, solve_stats = _optimize(space, options, objective, preset, deadline, seed)
            stats.update(solve_stats)
            bound = _bound_in_units(objective, bound_quanta, quantum_s) if bound_quanta is not None else None
        if not jobs:
            break
        schedule = Schedule(status, objective, schedule_objective(objective, jobs), bound, jobs, quantum_s)
        bad = [jobs[v.model_index].option.candidate for v in verify_schedule(problem, schedule, space) if v.model_index is not None]
        if not bad or rounds >= MAX_VERIFICATION_ROUNDS or solver == "exhaustive":
            break
        forbidden.update(id(c) for c in bad)
    stats.update({"verification_rounds": rounds, "cuts": len(forbidden)})
    if not jobs:
        deadline.phase("explanation")
        explanation = explain_schedule_infeasible(space, preset, options, deadline) if status is Status.INFEASIBLE else None
        deadline.phase(None)
        stats["timing"] = deadline.timing()
        schedule = Schedule(status, objective, None, None, (), quantum_s, stats, explanation)
        return (Solution(status, None, None, time.perf_counter() - started, solver, explanation=explanation, stats=stats,
                         objective_name=objective), schedule, space)
    value = schedule_objective(objective, jobs)
    bound = value if status is Status.OPTIMAL else bound
    schedule = Schedule(status, objective, value, bound, jobs, quantum_s, stats)
    stats.update({"makespan_h": schedule.makespan_h, "cost_usd": round(schedule.cost_usd, 4)})
    deadline.phase(None)
    stats["timing"] = deadline.timing()
    solution = Solution(status=status, objective=value, bound=bound, wall_time_s=time.perf_counter() - started, solver=solver,
                        deployments=tuple(job_deployment(space, j) for j in jobs), stats=stats, objective_name=objective)
    return solution, schedule, space


def schedule_json(schedule: Schedule) -> dict:
    """The batch-job additions to the solution JSON: ``schedule[]`` and its units."""
    return {
        "schedule": [j.to_json() for j in schedule.jobs],
        "schedule_summary": {"makespan_h": schedule.makespan_h, "cost_usd": round(schedule.cost_usd, 4),
                             "time_quantum_s": schedule.quantum_s,
                             "objective_unit": OBJECTIVES[schedule_reporting(schedule.objective_name)].unit},
    }
