"""A plan: one (candidate, replicas) pick per LLM, its objective value and shared limits.

Both the CP-SAT and the exhaustive solver produce plans; these functions are the single
definition of what a plan costs, what it scores, and which shared limits (budget, per-type
inventory, ``max_gpus``) it breaks, so the two solvers cannot disagree on semantics.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

from guide_opt.solution import Deployment
from guide_opt.space import Candidate, SearchSpace

#: Objectives that are minimized (the rest are maximized).
MINIMIZED = frozenset({"min_cost", "min_latency", "min_makespan"})


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


Plan = tuple[Pick, ...]


def objective_value(objective: str, plan: Plan) -> float:
    """Value of ``objective`` for ``plan``: $/h, tokens/s, or ms of summed mean request latency."""
    if objective == "max_throughput":
        return math.fsum(p.throughput_tokens_per_s for p in plan)
    if objective == "min_latency":
        return math.fsum(p.candidate.request_latency_s * 1e3 for p in plan)
    return math.fsum(p.cost_per_hour for p in plan)


def better(objective: str, a: float, b: float, tolerance: float = 1e-9) -> bool:
    """True when objective value ``a`` is strictly better than ``b``."""
    scale = max(abs(a), abs(b), 1.0) * tolerance
    if objective in MINIMIZED:
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


def to_deployment(space: SearchSpace, pick: Pick) -> Deployment:
    """The contract's :class:`Deployment` for one pick."""
    c, s = pick.candidate, pick.candidate.shape
    ms = space.models[c.model_index]
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
        },
    )
