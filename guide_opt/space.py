"""The discrete search space of a problem, evaluated with the full performance model.

For each LLM of a :class:`~guide_opt.problem.Problem`, :func:`build_space` lists the replica
*shapes* (GPU type, TP, PP, engine, quantization, KV dtype) that can run at all, and why the
others cannot (data pre-checks: heads not divisible, weights too large, no price...). Each
shape crossed with each allowed batch size is a :class:`Candidate`, evaluated once with the
full (non-linearized) model: memory, TTFT, TPOT, request latency, and the replicas its
demand needs. Solvers choose among candidates; :mod:`guide_opt.verify` re-evaluates the
choice independently.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field

from guide_opt.catalog import Catalog, load_catalog
from guide_opt.errors import InputError
from guide_opt.frameworks import FrameworkProfile
from guide_opt.hardware import GIB_BYTES, GpuSpec
from guide_opt.llm import LlmSpec
from guide_opt.perf import ServingConfig, estimate
from guide_opt.perf.memory import weight_bytes_per_gpu
from guide_opt.problem import LlmRequirement, Problem
from guide_opt.quantization import QuantizationSpec, allowed_by_tolerance

#: Constraint families a candidate can violate on its own (each has an enforcement literal).
CANDIDATE_FAMILIES = ("memory", "ttft_slo", "tpot_slo", "demand")


@dataclass(frozen=True, eq=False)
class Shape:
    """One replica shape of one LLM: ``tp x pp`` GPUs of one type, one engine, one precision.

    Shapes compare and hash by :attr:`key` (the ids), not by the specs they hold.
    """

    gpu: GpuSpec
    tp: int
    pp: int
    framework: FrameworkProfile
    quantization: QuantizationSpec
    kv_cache_dtype: str
    usd_per_gpu_hour: float

    @property
    def key(self) -> tuple[str, int, int, str, str, str]:
        """(gpu id, tp, pp, framework id, quantization id, KV dtype)."""
        return (self.gpu.id, self.tp, self.pp, self.framework.id, self.quantization.id, self.kv_cache_dtype)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Shape) and self.key == other.key

    def __hash__(self) -> int:
        return hash(self.key)

    @property
    def gpus_per_replica(self) -> int:
        """GPUs in one replica."""
        return self.tp * self.pp

    @property
    def usd_per_replica_hour(self) -> float:
        """$/h of one replica."""
        return self.gpus_per_replica * self.usd_per_gpu_hour

    def label(self) -> str:
        """Short human-readable name, e.g. ``h100-sxm TP=4 vllm fp8``."""
        pp = f" PP={self.pp}" if self.pp > 1 else ""
        kv = " kv-fp8" if self.kv_cache_dtype == "fp8" else ""
        return f"{self.gpu.id} TP={self.tp}{pp} {self.framework.id} {self.quantization.id}{kv}"


@dataclass(frozen=True)
class Candidate:
    """A shape at one batch size, evaluated with the full model for one LLM.

    violations: the constraint families this candidate breaks by itself (memory, SLOs,
    demand beyond ``max_replicas``). ``replicas_min`` is the fewest replicas meeting the
    demand (None when it cannot be met).
    """

    model_index: int
    shape: Shape
    batch: int
    fits: bool
    memory_used_gib: float
    memory_usable_gib: float
    memory_utilization: float
    ttft_s: float | None
    tpot_s: float | None
    batch_latency_s: float | None
    request_latency_s: float | None
    throughput_per_replica_tokens_per_s: float | None
    replicas_min: int | None
    violations: tuple[str, ...]

    @property
    def feasible(self) -> bool:
        """True when no candidate-level constraint is violated."""
        return not self.violations


@dataclass
class ModelSpace:
    """The candidates of one LLM and the shapes pruned before evaluation (with reasons)."""

    index: int
    requirement: LlmRequirement
    llm: LlmSpec
    input_tokens: int
    output_tokens: int
    shapes: list[Shape]
    candidates: list[Candidate]
    pruned: dict[str, int] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """``models[i] (id)`` for messages."""
        return f"models[{self.index}] ({self.llm.id})"


@dataclass
class SearchSpace:
    """All model spaces of a problem plus the prices and limits in force."""

    problem: Problem
    models: list[ModelSpace]
    prices_usd_per_gpu_hour: dict[str, float]
    gpu_ids: list[str]

    @property
    def candidate_count(self) -> int:
        """Evaluated candidates over all LLMs."""
        return sum(len(m.candidates) for m in self.models)


def resolve_prices(problem: Problem, catalog: Catalog) -> dict[str, float]:
    """$/GPU-hour per GPU id: the problem's price table, then its overrides."""
    prices = catalog.price_table(problem.hardware.price_table, field="hardware.price_table").usd_per_gpu_hour()
    for gpu_id in problem.hardware.prices:
        catalog.gpu(gpu_id, field=f"hardware.prices.{gpu_id}")
    prices.update(problem.hardware.prices)
    return prices


def resolve_gpus(problem: Problem, catalog: Catalog) -> list[GpuSpec]:
    """GPU specs the problem allows, in catalog order."""
    if problem.hardware.gpus == "all":
        return [catalog.gpus[g] for g in sorted(catalog.gpus)]
    return [catalog.gpu(g, field=f"hardware.gpus[{i}]") for i, g in enumerate(problem.hardware.gpus)]


def replicas_needed(requirement: LlmRequirement, batch: int, request_latency_s: float) -> int:
    """Fewest replicas of ``batch`` concurrent sequences meeting the workload's demand.

    rate R: Little's law, each replica completes ``batch / latency`` requests/s.
    users U: each replica holds ``batch`` users. job N in D hours: each replica completes
    ``batch x D x 3600 / latency`` requests. No demand: one replica.
    """
    w = requirement.workload
    if w.request_rate_per_s is not None:
        need = w.request_rate_per_s * request_latency_s / batch
    elif w.concurrent_users is not None:
        need = w.concurrent_users / batch
    elif w.requests is not None and w.deadline_h is not None:
        need = w.requests * request_latency_s / (batch * w.deadline_h * 3600.0)
    else:
        need = 1.0
    return max(1, math.ceil(need - 1e-9))


def evaluate_candidate(ms: ModelSpace, shape: Shape, batch: int, max_replicas: int) -> Candidate:
    """Evaluate ``shape`` at ``batch`` for the LLM of ``ms`` with the full performance model."""
    config = ServingConfig(
        llm=ms.llm, gpu=shape.gpu, framework=shape.framework, quantization=shape.quantization, tp=shape.tp, pp=shape.pp,
        batch=batch, input_tokens=ms.input_tokens, output_tokens=ms.output_tokens, kv_cache_dtype=shape.kv_cache_dtype,
    )
    est = estimate(config)
    gib = est.memory.as_gib()
    violations: list[str] = []
    ttft_s = tpot_s = latency_s = batch_latency_s = throughput = None
    replicas_min = None
    if not est.fits:
        violations.append("memory")
    else:
        ttft_s, tpot_s, batch_latency_s = est.ttft_s, est.tpot_s, est.batch_latency_s
        latency_s = ttft_s + (ms.output_tokens - 1) * tpot_s
        throughput = batch * ms.output_tokens / latency_s
        slo = ms.requirement.slo
        if slo.ttft_ms is not None and ttft_s * 1e3 > slo.ttft_ms:
            violations.append("ttft_slo")
        if slo.tpot_ms is not None and tpot_s * 1e3 > slo.tpot_ms:
            violations.append("tpot_slo")
        replicas_min = replicas_needed(ms.requirement, batch, latency_s)
        if replicas_min > max_replicas:
            violations.append("demand")
    return Candidate(
        model_index=ms.index, shape=shape, batch=batch, fits=est.fits, memory_used_gib=gib["used_gib"],
        memory_usable_gib=gib["usable_gib"], memory_utilization=est.memory.utilization, ttft_s=ttft_s, tpot_s=tpot_s,
        batch_latency_s=batch_latency_s, request_latency_s=latency_s, throughput_per_replica_tokens_per_s=throughput,
        replicas_min=replicas_min, violations=tuple(violations),
    )


def _shapes_for(ms: ModelSpace, problem: Problem, catalog: Catalog, gpus: list[GpuSpec], prices: dict[str, float]) -> list[Shape]:
    """Runnable shapes of one LLM; counts the reasons for every pruned one in ``ms.pruned``."""
    req = problem.models[ms.index]
    frameworks = [catalog.framework(f, field=f"frameworks[{i}]") for i, f in enumerate(problem.frameworks)]
    if problem.quantizations is not None:
        quants = [catalog.quantization(q, field=f"quantizations[{i}]") for i, q in enumerate(problem.quantizations)]
    else:
        quants = list(catalog.quantizations.values())
    pruned: dict[str, int] = defaultdict(int)
    shapes = []
    for gpu in gpus:
        if gpu.id not in prices:
            pruned[f"{gpu.id} has no price in table '{problem.hardware.price_table}' (add hardware.prices.{gpu.id})"] += 1
            continue
        if problem.hardware.inventory.get(gpu.id, 1) == 0:
            pruned[f"inventory has 0 x {gpu.id}"] += 1
            continue
        for quant in quants:
            if not allowed_by_tolerance(quant, req.precision_tolerance):
                pruned[f"{quant.id} needs precision_tolerance >= {quant.quality_loss_class}% (the model allows {req.precision_tolerance})"] += 1
                continue
            for fw in frameworks:
                for kv in problem.search.kv_cache_dtypes:
                    for tp in problem.search.tp:
                        for pp in problem.search.pp:
                            shape = Shape(gpu, tp, pp, fw, quant, kv, prices[gpu.id])
                            config = ServingConfig(llm=ms.llm, gpu=gpu, framework=fw, quantization=quant, tp=tp, pp=pp,
                                                   input_tokens=ms.input_tokens, output_tokens=ms.output_tokens, kv_cache_dtype=kv)
                            reason = config.unsupported_reason()
                            if reason:
                                pruned[reason] += 1
                                continue
                            weights_gib = weight_bytes_per_gpu(config) / GIB_BYTES
                            usable_gib = gpu.memory_gib * config.memory_fraction
                            if weights_gib > usable_gib:
                                pruned[f"weights need {weights_gib:.1f} GiB per GPU at TP={tp} PP={pp} {quant.id} but {gpu.id} has {usable_gib:.1f} GiB usable"] += 1
                                continue
                            shapes.append(shape)
    ms.pruned = dict(pruned)
    return shapes




def build_space(problem: Problem, catalog: Catalog | None = None) -> SearchSpace:
    """Resolve ids, run the data pre-checks, and evaluate every candidate of every LLM."""
    catalog = catalog or load_catalog()
    prices = resolve_prices(problem, catalog)
    gpus = resolve_gpus(problem, catalog)
    for gpu_id in problem.hardware.inventory:
        catalog.gpu(gpu_id, field=f"hardware.inventory.{gpu_id}")
    if problem.objective == "max_throughput" and problem.budget_per_hour is None and problem.hardware.max_gpus is None and not problem.hardware.inventory:
        raise InputError("budget_per_hour", "max_throughput needs a limit, otherwise more GPUs always give more throughput",
                         "set budget_per_hour, hardware.max_gpus or hardware.inventory")
    models = []
    for i, req in enumerate(problem.models):
        llm = catalog.llm(req.id, field=f"models[{i}].id")
        input_tokens, output_tokens = req.workload.token_lengths()
        ms = ModelSpace(index=i, requirement=req, llm=llm, input_tokens=input_tokens, output_tokens=output_tokens, shapes=[], candidates=[])
        ms.shapes = _shapes_for(ms, problem, catalog, gpus, prices)
        ms.candidates = [
            evaluate_candidate(ms, shape, batch, problem.search.max_replicas)
            for shape in ms.shapes
            for batch in sorted(set(problem.search.batch_sizes))
        ]
        models.append(ms)
    return SearchSpace(problem=problem, models=models, prices_usd_per_gpu_hour=prices, gpu_ids=[g.id for g in gpus])


def replica_limit(space: SearchSpace, candidate: Candidate) -> int:
    """Most replicas of ``candidate`` allowed by max_replicas, inventory, max_gpus and budget on its own."""
    problem = space.problem
    limit = problem.search.max_replicas
    gpus = candidate.shape.gpus_per_replica
    inv = problem.hardware.inventory.get(candidate.shape.gpu.id)
    if inv is not None:
        limit = min(limit, inv // gpus)
    if problem.hardware.max_gpus is not None:
        limit = min(limit, problem.hardware.max_gpus // gpus)
    if problem.budget_per_hour is not None:
        limit = min(limit, math.floor(problem.budget_per_hour / candidate.shape.usd_per_replica_hour + 1e-9))
    return max(0, limit)
