"""The answer: :class:`Status`, :class:`Deployment` and the frozen :class:`Solution` record."""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field
from typing import Any


class Status(str, enum.Enum):
    """Outcome of a solve."""

    OPTIMAL = "OPTIMAL"
    """A deployment was found and proven optimal (gap 0 within the objective's quantum)."""
    FEASIBLE = "FEASIBLE"
    """A deployment was found, but optimality was not proven (time limit, heuristic solver)."""
    INFEASIBLE = "INFEASIBLE"
    """No deployment satisfies all constraints; ``explanation`` says which ones conflict."""
    UNKNOWN = "UNKNOWN"
    """The solver stopped before finding any deployment or proving that none exists."""
    MODEL_INVALID = "MODEL_INVALID"
    """The solver rejected the model it was given: a bug in guide-opt, please report it."""

    @property
    def found(self) -> bool:
        """True when the solution holds deployments."""
        return self in (Status.OPTIMAL, Status.FEASIBLE)


def status_from_cp_sat(code: int) -> Status:
    """The :class:`Status` of a CP-SAT solve status code."""
    from guide_opt.cp_sat import cp_model

    return {cp_model.OPTIMAL: Status.OPTIMAL, cp_model.FEASIBLE: Status.FEASIBLE, cp_model.INFEASIBLE: Status.INFEASIBLE,
            cp_model.UNKNOWN: Status.UNKNOWN, cp_model.MODEL_INVALID: Status.MODEL_INVALID}[code]


@dataclass(frozen=True)
class Deployment:
    """How to run one LLM: ``replicas`` x (``tp`` x ``pp`` GPUs of type ``gpu``) with one engine.

    metrics: ``ttft_ms``, ``tpot_ms`` (per replica; under the steady-state serving model the
    ``slo_percentile`` of each at the replica's planned load, with ``ttft_mean_ms`` /
    ``tpot_mean_ms`` the means, ``load_per_replica`` in requests/s or users, its
    ``utilization`` of capacity and ``demand_served_per_replica`` the most it serves within the
    SLOs), ``request_latency_ms`` (mean end to end), ``batch_latency_s`` (static burst of a full
    ``max_batch``), ``throughput_tokens_per_s`` (all replicas together, generated tokens),
    ``memory_utilization`` (fraction of one GPU's memory).
    slo_margin: when predictions were widened before the SLO check (a calibration's percentile
    or ``prediction.slo_margin``): the factors, the planned TTFT/TPOT and the headroom left.
    simulated: the serving simulator's verdict on this deployment at its own workload
    (:meth:`guide_opt.simcheck.DeploymentCheck.to_json`: ``meets_slo``, TTFT / TPOT at the SLO
    percentile, goodput, demand served, requests, seed, violations); None when not simulated.
    """

    model: str
    gpu: str
    tp: int
    pp: int
    replicas: int
    framework: str
    quantization: str
    max_batch: int
    cost_per_hour: float
    metrics: dict[str, float]
    kv_cache_dtype: str = "fp16"
    slo_margin: dict[str, float] | None = None
    simulated: dict[str, Any] | None = None

    @property
    def gpu_count(self) -> int:
        """GPUs used by all replicas."""
        return self.replicas * self.tp * self.pp

    def describe(self) -> str:
        """The deployment as a user would run it, e.g. ``2 x (4 x h100-sxm, TP=4) vllm, max-num-seqs 64, fp8``."""
        parallel = f"TP={self.tp}" + (f", PP={self.pp}" if self.pp > 1 else "")
        kv = ", fp8 KV cache" if self.kv_cache_dtype == "fp8" else ""
        return (f"{self.replicas} x ({self.tp * self.pp} x {self.gpu}, {parallel}) {self.framework}, "
                f"max-num-seqs {self.max_batch}, {self.quantization}{kv}")

    def to_json(self) -> dict[str, Any]:
        """The contract's deployment object."""
        return {
            "model": self.model,
            "gpu": self.gpu,
            "gpu_count": self.gpu_count,
            "tp": self.tp,
            "pp": self.pp,
            "replicas": self.replicas,
            "framework": self.framework,
            "quantization": self.quantization,
            "kv_cache_dtype": self.kv_cache_dtype,
            "max_batch": self.max_batch,
            "cost_per_hour": round(self.cost_per_hour, 6),
            "metrics": dict(self.metrics),
            "slo_margin": self.slo_margin,
            "simulated": self.simulated,
            "summary": self.describe(),
        }


@dataclass(frozen=True)
class Solution:
    """A solver's answer.

    objective: value of the problem's objective for ``deployments``: $/h (min_cost), generated
        tokens/s (max_throughput), ms of mean request latency summed over LLMs (min_latency),
        mean % of demand served (max_served), hours (min_makespan), total $ (a min_cost
        schedule), $/h of the cheapest point (pareto); None when nothing was found.
    bound: the best proven bound on the objective (equal to ``objective`` when OPTIMAL).
    gap: relative gap ``|objective - bound| / max(|objective|, 1e-9)``; 0.0 when OPTIMAL,
        None when nothing was found or no bound is known (heuristic solvers).
    notes: caveats in words that qualify the status (e.g. plans cut because they missed an SLO
        in simulation, or verification rounds that ran out).
    """

    status: Status
    objective: float | None
    bound: float | None
    wall_time_s: float
    solver: str
    deployments: tuple[Deployment, ...] = ()
    alternatives: tuple[dict, ...] = ()
    explanation: dict | None = None
    stats: dict = field(default_factory=dict)
    objective_name: str = "min_cost"
    notes: tuple[str, ...] = ()

    @property
    def gap(self) -> float | None:
        """Relative optimality gap (see the class docstring for edge cases)."""
        if self.objective is None or self.bound is None:
            return None
        if self.status is Status.OPTIMAL:
            return 0.0
        return abs(self.objective - self.bound) / max(abs(self.objective), 1e-9)

    @property
    def total_cost_per_hour(self) -> float:
        """Sum of the deployments' $/h."""
        return math.fsum(d.cost_per_hour for d in self.deployments)

    def to_json(self) -> dict[str, Any]:
        """The contract's solution object."""
        payload = {
            "status": self.status.value,
            "objective_name": self.objective_name,
            "objective": self.objective,
            "bound": self.bound,
            "gap": self.gap,
            "wall_time_s": round(self.wall_time_s, 4),
            "solver": self.solver,
            "total_cost_per_hour": round(self.total_cost_per_hour, 6),
            "deployments": [d.to_json() for d in self.deployments],
            "alternatives": list(self.alternatives),
            "stats": dict(self.stats),
            "notes": list(self.notes),
        }
        if self.explanation is not None:
            payload["explanation"] = self.explanation
        return payload
