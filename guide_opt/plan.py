"""A plan: one (candidate, replicas) pick per LLM, its objective value and shared limits.

Both the CP-SAT and the exhaustive solver produce plans; these functions are the single
definition of what a plan costs, what it scores (through the objective registry,
:mod:`guide_opt.objectives`), and which shared limits (budget, per-type inventory,
``max_gpus``) it breaks, so the two solvers cannot disagree on semantics.
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from guide_opt.objectives import OBJECTIVES
from guide_opt.problem import LlmRequirement, Problem
from guide_opt.solution import Deployment
from guide_opt.space import Candidate, SearchSpace, demand_of, evaluate_candidate

@dataclass(frozen=True)
class Pick:
    """One LLM's choice: a candidate and how many replicas of it."""

    candidate: Candidate
    replicas: int

    @property
    def cost_per_hour(self) -> float:
        """$/h of all replicas."""
        return self.replicas * self.candidate.shape.usd_per_replica_hour

    @property
    def gpus(self) -> int:
        """GPUs of all replicas."""
        return self.replicas * self.candidate.shape.gpus_per_replica

    @property
    def throughput_tokens_per_s(self) -> float:
        """Generated tokens/s of all replicas."""
        return self.replicas * (self.candidate.throughput_per_replica_tokens_per_s or 0.0)

    @property
    def served_share(self) -> float:
        """Share of the LLM's demand these replicas serve, capped at 1.0."""
        return min(1.0, self.replicas * (self.candidate.served_share_per_replica or 0.0))


Plan = tuple[Pick, ...]


def objective_value(objective: str, plan: Plan) -> float:
    """Value of ``objective`` for ``plan`` in its unit (:data:`guide_opt.objectives.OBJECTIVES`): $/h, tokens/s,
    ms of summed mean request latency, or (``max_served``) the mean over LLMs of the percent of demand served."""
    return OBJECTIVES[objective].value(plan)


def better(objective: str, a: float, b: float, tolerance: float = 1e-9) -> bool:
    """True when objective value ``a`` is strictly better than ``b``."""
    scale = max(abs(a), abs(b), 1.0) * tolerance
    if OBJECTIVES[objective].minimized:
        return a < b - scale
    return a > b + scale


def shared_limit_violations(space: SearchSpace, plan: Plan) -> list[str]:
    """Budget, per-type inventory and max_gpus violations of ``plan`` (empty when it respects them)."""
    problem = space.problem
    problems = []
    cost = math.fsum(p.cost_per_hour for p in plan)
    if problem.budget_per_hour is not None and cost > problem.budget_per_hour * (1 + 1e-9):
        problems.append(f"budget: costs ${cost:.2f}/h, budget_per_hour is ${problem.budget_per_hour:.2f}")
    used = Counter()
    for p in plan:
        used[p.candidate.shape.gpu.id] += p.gpus
    for gpu_id, count in sorted(used.items()):
        limit = problem.hardware.inventory.get(gpu_id)
        if limit is not None and count > limit:
            problems.append(f"inventory[{gpu_id}]: uses {count}, inventory has {limit}")
    total = sum(used.values())
    if problem.hardware.max_gpus is not None and total > problem.hardware.max_gpus:
        problems.append(f"max_gpus: uses {total}, max_gpus is {problem.hardware.max_gpus}")
    return problems


def demand_served(requirement: LlmRequirement, deployment: Deployment) -> float | None:
    """Demand ``deployment`` can serve, in the workload's unit (requests/s, users, job requests); None without demand."""
    if demand_of(requirement) is None:
        return None
    per_replica = deployment.metrics.get("demand_served_per_replica")
    return None if per_replica is None else deployment.replicas * per_replica


def served_percent(requirement: LlmRequirement, deployment: Deployment) -> float:
    """Percent of the LLM's demand ``deployment`` serves (capped at 100; 100 without demand)."""
    served, demand = demand_served(requirement, deployment), demand_of(requirement)
    if served is None or demand is None:
        return 100.0
    return 100.0 * min(1.0, served / demand)


def served_problem(problem: Problem, deployments: Sequence[Deployment]) -> Problem:
    """``problem`` with each LLM's demand lowered to what its deployment serves (``max_served``).

    A ``max_served`` plan may serve only a share of a demand; verifying it against this
    problem checks that each deployment really serves the share it claims, with the same
    full-model checks as any plan. Demand already met is left unchanged.
    """
    models = [served_requirement(req, demand_served(req, dep)) for req, dep in zip(problem.models, deployments)]
    return problem.model_copy(update={"models": models})


def served_requirement(requirement: LlmRequirement, served: float | None) -> LlmRequirement:
    """``requirement`` with its demand lowered to ``served`` (in the workload's unit) when that is less; else unchanged."""
    w = requirement.workload
    update = {}
    if served is not None:
        if w.request_rate_per_s is not None and served < w.request_rate_per_s:
            update = {"request_rate_per_s": served}
        elif w.concurrent_users is not None and served < w.concurrent_users:
            update = {"concurrent_users": max(1, int(served))}
        elif w.requests is not None and served < w.requests:
            update = {"requests": max(1, math.floor(served))}
    return requirement.model_copy(update={"workload": w.model_copy(update=update)}) if update else requirement


def verification_problem(problem: Problem, deployments: Sequence[Deployment]) -> Problem:
    """The problem a plan's deployments are verified against: :func:`served_problem` for an objective that
    may serve a share of the demand (``max_served``), else ``problem``."""
    return served_problem(problem, deployments) if OBJECTIVES[problem.objective].replicas == "share" else problem


def to_deployment(space: SearchSpace, pick: Pick) -> Deployment:
    """The contract's :class:`Deployment` for one pick.

    A pick with fewer replicas than its demand needs (``max_served``) serves only part of the
    demand; under the steady-state model its metrics are those at the load it really carries
    (the demand lowered to what it serves, as :func:`served_problem` verifies it).
    """
    c, s = pick.candidate, pick.candidate.shape
    ms = space.models[c.model_index]
    if c.fits and c.serving_model == "steady_state" and c.replicas_min is not None and pick.replicas < c.replicas_min:
        lowered = served_requirement(ms.requirement, pick.replicas * (c.demand_served_per_replica or 0.0))
        if lowered is not ms.requirement:
            ms = dataclasses.replace(ms, requirement=lowered)
            c = evaluate_candidate(ms, s, c.batch, space.problem.search.max_replicas)
    return Deployment(
        model=ms.llm.id,
        gpu=s.gpu.id,
        tp=s.tp,
        pp=s.pp,
        replicas=pick.replicas,
        framework=s.framework.id,
        quantization=s.quantization.id,
        kv_cache_dtype=s.kv_cache_dtype,
        max_batch=c.batch,
        cost_per_hour=pick.cost_per_hour,
        metrics={
            "ttft_ms": c.ttft_s * 1e3,
            "tpot_ms": c.tpot_s * 1e3,
            "batch_latency_s": c.batch_latency_s,
            "request_latency_ms": c.request_latency_s * 1e3,
            "throughput_tokens_per_s": pick.throughput_tokens_per_s,
            "memory_utilization": c.memory_utilization,
            "ttft_mean_ms": c.ttft_mean_s * 1e3,
            "tpot_mean_ms": c.tpot_mean_s * 1e3,
            "slo_percentile": float(ms.requirement.slo.percentile),
            "load_per_replica": c.load_per_replica,
            "utilization": c.utilization,
            "demand_served_per_replica": c.demand_served_per_replica,
        },
        slo_margin=_slo_margin(ms, c),
    )


def _slo_margin(ms, c: Candidate) -> dict[str, float] | None:
    """How predictions were widened before the SLO check, and the headroom left (None when not widened)."""
    if ms.ttft_margin == 1.0 and ms.tpot_margin == 1.0:
        return None
    slo = ms.requirement.slo
    planned_ttft_ms, planned_tpot_ms = c.ttft_s * 1e3 * ms.ttft_margin, c.tpot_s * 1e3 * ms.tpot_margin
    return {
        "percentile": slo.percentile,
        "ttft_factor": ms.ttft_margin,
        "tpot_factor": ms.tpot_margin,
        "ttft_ms_planned": planned_ttft_ms,
        "tpot_ms_planned": planned_tpot_ms,
        "ttft_headroom_ms": None if slo.ttft_ms is None else slo.ttft_ms - planned_ttft_ms,
        "tpot_headroom_ms": None if slo.tpot_ms is None else slo.tpot_ms - planned_tpot_ms,
    }
