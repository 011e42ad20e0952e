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
import os
from collections import defaultdict
from dataclasses import dataclass, field

from guide_opt.catalog import Catalog, load_catalog
from guide_opt.errors import InputError
from guide_opt.frameworks import EfficiencyFactors, FrameworkProfile
from guide_opt.hardware import GIB_BYTES, GpuSpec
from guide_opt.llm import LlmSpec
from guide_opt.perf import ServingConfig, estimate
from guide_opt.perf.memory import usable_bytes, weight_bytes_per_gpu
from guide_opt.prediction import calibrated_efficiency, slo_margins
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
    efficiency: EfficiencyFactors | None = None  # calibrated factors for (gpu, engine); None: the engine's defaults

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
    demand (None when it cannot be met). ``served_share_per_replica`` is the share of the
    LLM's demand one replica serves (1.0 without demand; None when it does not fit).
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
    served_share_per_replica: float | None = None

    @property
    def feasible(self) -> bool:
        """True when no candidate-level constraint is violated."""
        return not self.violations

    @property
    def key(self) -> tuple:
        """(LLM index, shape, batch): what identifies the candidate across copies of a space."""
        return (self.model_index, self.shape, self.batch)

    def usable_for(self, objective: str) -> bool:
        """True when the candidate may be deployed under ``objective``.

        Every objective needs memory and SLOs to hold; only ``max_served`` may deploy fewer
        replicas than the demand needs (it serves a share of it), so a ``demand`` violation
        does not exclude a candidate there.
        """
        if objective == "max_served":
            return self.fits and set(self.violations) <= {"demand"}
        return self.feasible


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
    ttft_margin: float = 1.0  # predicted TTFT x this is compared with the SLO (see guide_opt.prediction)
    tpot_margin: float = 1.0  # predicted TPOT x this is compared with the SLO

    @property
    def label(self) -> str:
        """``models[i] (id)`` for messages."""
        return f"models[{self.index}] ({self.llm.id})"


@dataclass
class SearchSpace:
    """All model spaces of a problem plus the prices and limits in force.

    excluded_combinations: no-goods found by checking plans: sets of candidate keys
    (:attr:`Candidate.key`) that no plan may use all together (empty for a fresh space).
    """

    problem: Problem
    models: list[ModelSpace]
    prices_usd_per_gpu_hour: dict[str, float]
    gpu_ids: list[str]
    excluded_combinations: tuple[frozenset[tuple], ...] = ()

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


#: Full-model figures of one (LLM, lengths, shape, batch), independent of SLOs and demand:
#: (fits, memory used GiB, memory usable GiB, memory utilization, TTFT s, TPOT s, batch latency s).
Evaluation = tuple[bool, float, float, float, float | None, float | None, float | None]


def evaluate_shape_batch(llm: LlmSpec, input_tokens: int, output_tokens: int, shape: Shape, batch: int) -> Evaluation:
    """The SLO- and demand-independent figures of ``shape`` at ``batch`` (one :func:`~guide_opt.perf.estimate` call)."""
    config = ServingConfig(
        llm=llm, gpu=shape.gpu, framework=shape.framework, quantization=shape.quantization, tp=shape.tp, pp=shape.pp,
        batch=batch, input_tokens=input_tokens, output_tokens=output_tokens, kv_cache_dtype=shape.kv_cache_dtype,
        efficiency=shape.efficiency,
    )
    est = estimate(config)
    gib = est.memory.as_gib()
    if not est.fits:
        return (False, gib["used_gib"], gib["usable_gib"], est.memory.utilization, None, None, None)
    return (True, gib["used_gib"], gib["usable_gib"], est.memory.utilization, est.ttft_s, est.tpot_s, est.batch_latency_s)


def candidate_from_evaluation(ms: ModelSpace, shape: Shape, batch: int, evaluation: Evaluation, max_replicas: int) -> Candidate:
    """Apply the LLM's SLOs and demand to the figures of :func:`evaluate_shape_batch`."""
    fits, used_gib, usable_gib, utilization, ttft_s, tpot_s, batch_latency_s = evaluation
    violations: list[str] = []
    latency_s = throughput = share = None
    replicas_min = None
    if not fits:
        violations.append("memory")
    else:
        latency_s = ttft_s + (ms.output_tokens - 1) * tpot_s
        throughput = batch * ms.output_tokens / latency_s
        slo = ms.requirement.slo
        if slo.ttft_ms is not None and ttft_s * 1e3 * ms.ttft_margin > slo.ttft_ms:
            violations.append("ttft_slo")
        if slo.tpot_ms is not None and tpot_s * 1e3 * ms.tpot_margin > slo.tpot_ms:
            violations.append("tpot_slo")
        replicas_min = replicas_needed(ms.requirement, batch, latency_s)
        share = demand_share_per_replica(ms.requirement, batch, latency_s)
        if replicas_min > max_replicas:
            violations.append("demand")
    return Candidate(
        model_index=ms.index, shape=shape, batch=batch, fits=fits, memory_used_gib=used_gib,
        memory_usable_gib=usable_gib, memory_utilization=utilization, ttft_s=ttft_s, tpot_s=tpot_s,
        batch_latency_s=batch_latency_s, request_latency_s=latency_s, throughput_per_replica_tokens_per_s=throughput,
        replicas_min=replicas_min, violations=tuple(violations), served_share_per_replica=share,
    )


def demand_served_per_replica(requirement: LlmRequirement, batch: int, request_latency_s: float) -> float | None:
    """Demand one replica of ``batch`` concurrent sequences serves, in the workload's own unit.

    The capacity behind :func:`replicas_needed`: ``batch / latency`` requests/s (rate),
    ``batch`` users, or ``batch x D x 3600 / latency`` requests of a job due in D hours. None
    when the workload states no demand.
    """
    w = requirement.workload
    if w.request_rate_per_s is not None:
        return batch / request_latency_s
    if w.concurrent_users is not None:
        return float(batch)
    if w.requests is not None and w.deadline_h is not None:
        return batch * w.deadline_h * 3600.0 / request_latency_s
    return None


def demand_of(requirement: LlmRequirement) -> float | None:
    """The workload's demand in its own unit (requests/s, users or job requests); None when none is stated."""
    w = requirement.workload
    for value in (w.request_rate_per_s, w.concurrent_users, w.requests):
        if value is not None:
            return float(value)
    return None


def demand_share_per_replica(requirement: LlmRequirement, batch: int, request_latency_s: float) -> float:
    """Share of the LLM's demand one replica serves (1.0 when the workload states no demand)."""
    demand = demand_of(requirement)
    if demand is None:
        return 1.0
    return demand_served_per_replica(requirement, batch, request_latency_s) / demand


def evaluate_candidate(ms: ModelSpace, shape: Shape, batch: int, max_replicas: int) -> Candidate:
    """Evaluate ``shape`` at ``batch`` for the LLM of ``ms`` with the full performance model."""
    evaluation = evaluate_shape_batch(ms.llm, ms.input_tokens, ms.output_tokens, shape, batch)
    return candidate_from_evaluation(ms, shape, batch, evaluation, max_replicas)


def empty_model_space(problem: Problem, index: int, catalog: Catalog) -> ModelSpace:
    """The :class:`ModelSpace` of LLM ``index`` without shapes or candidates: lengths and SLO margins resolved."""
    req = problem.models[index]
    llm = catalog.llm(req.id, field=f"models[{index}].id")
    input_tokens, output_tokens = req.workload.token_lengths()
    ttft_margin, tpot_margin = slo_margins(problem, index)
    return ModelSpace(index=index, requirement=req, llm=llm, input_tokens=input_tokens, output_tokens=output_tokens, shapes=[],
                      candidates=[], ttft_margin=ttft_margin, tpot_margin=tpot_margin)


def make_shape(problem: Problem, gpu: GpuSpec, tp: int, pp: int, framework: FrameworkProfile, quantization: QuantizationSpec,
               kv_cache_dtype: str, usd_per_gpu_hour: float) -> Shape:
    """A :class:`Shape` carrying the problem's calibrated efficiency for (GPU, engine), if any."""
    return Shape(gpu, tp, pp, framework, quantization, kv_cache_dtype, usd_per_gpu_hour,
                 calibrated_efficiency(problem, gpu.id, framework.id))


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
        checkpoint = ms.llm.checkpoint_quantization
        for quant in quants:
            # A pre-quantized checkpoint (DeepSeek-V3's FP8, an AWQ model) is served in its own format:
            # that is the LLM the user chose, so the tolerance does not apply to it.
            native = checkpoint is not None and quant.id == checkpoint.scheme_id
            if not native and not allowed_by_tolerance(quant, req.precision_tolerance):
                pruned[f"{quant.id} needs precision_tolerance >= {quant.quality_loss_class}% (the model allows {req.precision_tolerance})"] += 1
                continue
            for fw in frameworks:
                for kv in problem.search.kv_cache_dtypes:
                    for tp in problem.search.tp:
                        for pp in problem.search.pp:
                            shape = make_shape(problem, gpu, tp, pp, fw, quant, kv, prices[gpu.id])
                            config = ServingConfig(llm=ms.llm, gpu=gpu, framework=fw, quantization=quant, tp=tp, pp=pp,
                                                   input_tokens=ms.input_tokens, output_tokens=ms.output_tokens, kv_cache_dtype=kv)
                            reason = config.unsupported_reason() or config.context_reason()
                            if reason:
                                pruned[reason] += 1
                                continue
                            weights_bytes = weight_bytes_per_gpu(config)
                            weights_gib = weights_bytes / GIB_BYTES
                            usable_gib = usable_bytes(config, weights_bytes, 0.0) / GIB_BYTES  # the engine's rule, before workspace
                            if weights_gib > usable_gib:
                                pruned[f"weights need {weights_gib:.1f} GiB per GPU at TP={tp} PP={pp} {quant.id} but {gpu.id} has {usable_gib:.1f} GiB usable"] += 1
                                continue
                            shapes.append(shape)
    ms.pruned = dict(pruned)
    return shapes




#: Evaluations above which :func:`build_space` spreads the work over processes (when it may).
PARALLEL_MIN_EVALUATIONS = 6000


def _evaluate_group(task: tuple) -> list[Evaluation]:
    """Evaluate every (shape, batch) of one (LLM, lengths) group."""
    llm, input_tokens, output_tokens, shapes, batches = task
    return [evaluate_shape_batch(llm, input_tokens, output_tokens, shape, b) for shape in shapes for b in batches]


#: The tasks of the parallel evaluation in progress (inherited by the forked workers, so
#: only indices and result tuples cross the process boundary).
_FORKED_TASKS: list[tuple] = []


def _evaluate_forked(item: tuple[int, int]) -> list[Evaluation]:
    """Worker body: evaluate shape ``item[1]`` of task ``item[0]`` of :data:`_FORKED_TASKS` at every batch."""
    llm, input_tokens, output_tokens, shapes, batches = _FORKED_TASKS[item[0]]
    shape = shapes[item[1]]
    return [evaluate_shape_batch(llm, input_tokens, output_tokens, shape, b) for b in batches]


def _evaluate_all(tasks: list[tuple], workers: int) -> list[list[Evaluation]]:
    """Evaluate ``tasks`` serially, or over ``workers`` forked processes (same results either way)."""
    import threading

    size = sum(len(t[3]) * len(t[4]) for t in tasks)
    # Forking is only safe from a single-threaded process (a web server's worker thread stays serial).
    if workers > 1 and size >= PARALLEL_MIN_EVALUATIONS and threading.active_count() == 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        if "fork" in multiprocessing.get_all_start_methods():
            items = [(t, k) for t, task in enumerate(tasks) for k in range(len(task[3]))]
            _FORKED_TASKS[:] = tasks
            try:
                with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("fork")) as pool:
                    flat = list(pool.map(_evaluate_forked, items, chunksize=max(1, len(items) // (4 * workers))))
            finally:
                _FORKED_TASKS.clear()
            out: list[list[Evaluation]] = [[] for _ in tasks]
            for (t, _), evaluations in zip(items, flat):
                out[t].extend(evaluations)
            return out
    return [_evaluate_group(t) for t in tasks]


def build_space(problem: Problem, catalog: Catalog | None = None, *, workers: int | None = None) -> SearchSpace:
    """Resolve ids, run the data pre-checks, and evaluate every candidate of every LLM.

    Candidate evaluation (the full performance model) dominates the cost of large fleets,
    so it is shared and spread without changing any result:

    - LLMs of the problem with the same architecture and token lengths share one evaluation
      of each (shape, batch) -- only the SLO and demand checks are per LLM
      (:func:`candidate_from_evaluation`);
    - above :data:`PARALLEL_MIN_EVALUATIONS` evaluations the work is spread over ``workers``
      forked processes (default: the machine's cores; 1 keeps it in this process; never from
      a multi-threaded process or where ``fork`` is unavailable). Each evaluation is a pure
      function of its inputs, so the candidates are identical.
    """
    catalog = catalog or load_catalog()
    prices = resolve_prices(problem, catalog)
    gpus = resolve_gpus(problem, catalog)
    for gpu_id in problem.hardware.inventory:
        catalog.gpu(gpu_id, field=f"hardware.inventory.{gpu_id}")
    if problem.objective == "max_throughput" and problem.budget_per_hour is None and problem.hardware.max_gpus is None and not problem.hardware.inventory:
        raise InputError("budget_per_hour", "max_throughput needs a limit, otherwise more GPUs always give more throughput",
                         "set budget_per_hour, hardware.max_gpus or hardware.inventory")
    batches = sorted(set(problem.search.batch_sizes))
    models = []
    for i, req in enumerate(problem.models):
        ms = empty_model_space(problem, i, catalog)
        ms.shapes = _shapes_for(ms, problem, catalog, gpus, prices)
        models.append(ms)
    # One evaluation task per distinct (LLM, lengths, shapes): the shapes depend on the LLM's
    # precision tolerance too, so they are part of the key.
    groups: dict[tuple, int] = {}
    tasks: list[tuple] = []
    for ms in models:
        key = (ms.llm, ms.input_tokens, ms.output_tokens, tuple(s.key for s in ms.shapes))
        if key not in groups:
            groups[key] = len(tasks)
            tasks.append((ms.llm, ms.input_tokens, ms.output_tokens, ms.shapes, batches))
    workers = (os.cpu_count() or 1) if workers is None else workers
    evaluations = _evaluate_all(tasks, workers)
    for ms in models:
        group = evaluations[groups[(ms.llm, ms.input_tokens, ms.output_tokens, tuple(s.key for s in ms.shapes))]]
        pairs = [(shape, b) for shape in ms.shapes for b in batches]
        ms.candidates = [candidate_from_evaluation(ms, shape, b, ev, problem.search.max_replicas) for (shape, b), ev in zip(pairs, group)]
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
