"""The discrete search space of a problem, evaluated with the full performance model.

For each LLM of a :class:`~guide_opt.problem.Problem`, :func:`build_space` lists the replica
*shapes* (GPU type, TP, PP, engine, quantization, KV dtype) that can run at all, and why the
others cannot (data pre-checks: heads not divisible, weights too large, no price...). Each
shape crossed with each allowed batch size (max-num-seqs) is a :class:`Candidate`, evaluated
once with the full (non-linearized) model: memory, then -- under the default steady-state
serving model (``prediction.serving_model``) -- the fewest replicas whose per-replica load
meets the SLOs at their percentile within ``prediction.target_utilization`` of capacity, and
TTFT, TPOT and request latency at that load (:func:`steady_state_figures`). Solvers choose one
candidate and a replica count per LLM, so CP-SAT stays exact over this table;
:mod:`guide_opt.verify` re-evaluates the choice independently with the same functions.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Callable

from guide_opt.catalog import Catalog, load_catalog
from guide_opt.deadline import Deadline
from guide_opt.errors import InputError
from guide_opt.frameworks import EfficiencyFactors, FrameworkProfile
from guide_opt.hardware import GIB_BYTES, GpuSpec
from guide_opt.llm import LlmSpec
from guide_opt.parallel import default_workers, forked_map
from guide_opt.perf import ServingConfig, estimate, steady_state
from guide_opt.perf.memory import usable_bytes, weight_bytes_per_gpu
from guide_opt.prediction import calibrated_efficiency, slo_margins
from guide_opt.problem import LlmRequirement, Problem
from guide_opt.quanta import budget_quanta
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
    demand (None when it does not fit). ``served_share_per_replica`` is the share of the
    LLM's demand one replica serves (1.0 without demand; None when it does not fit), and
    ``demand_served_per_replica`` the same in the workload's unit (requests/s, users, job
    requests; None without demand).

    Under the steady-state serving model ``ttft_s`` / ``tpot_s`` are the SLO's percentile at
    the load of ``replicas_min`` replicas (``load_per_replica``: requests/s or users; its
    ``utilization`` of capacity), ``ttft_mean_s`` / ``tpot_mean_s`` the means there, and
    ``request_latency_s`` the mean end-to-end latency; ``batch_latency_s`` stays the static
    burst figure of a full batch. Under ``burst`` every latency is the static estimate.
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
    demand_served_per_replica: float | None = None
    serving_model: str = "steady_state"
    ttft_mean_s: float | None = None
    tpot_mean_s: float | None = None
    load_per_replica: float | None = None
    utilization: float | None = None

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
    serving_model: str = "steady_state"  # prediction.serving_model
    target_utilization: float = steady_state.DEFAULT_TARGET_UTILIZATION  # prediction.target_utilization

    @property
    def label(self) -> str:
        """``models[i] (id)`` for messages."""
        return f"models[{self.index}] ({self.llm.id})"


@dataclass
class SearchSpace:
    """All model spaces of a problem plus the prices and limits in force.

    excluded_combinations: no-goods found by checking plans: sets of candidate keys
    (:attr:`Candidate.key`) that no plan may use all together (empty for a fresh space).
    cost_limit_quanta: a cost (:data:`~guide_opt.quanta.COST_QUANTUM_USD_PER_H` quanta) above
    which no plan is wanted, set by a caller that asks only for plans no dearer than one it holds
    (the explanation's relaxed min-cost solves; the alternatives capped at the optimum's cost);
    None: no such limit. Unlike a budget it is no constraint of the problem and is never reported
    as one, and it is exact where a budget in $/h is rounded to quanta.
    """

    problem: Problem
    models: list[ModelSpace]
    prices_usd_per_gpu_hour: dict[str, float]
    gpu_ids: list[str]
    excluded_combinations: tuple[frozenset[tuple], ...] = ()
    cost_limit_quanta: int | None = None

    @property
    def plan_cost_limit_quanta(self) -> int | None:
        """What a plan's cost is held to, in :data:`~guide_opt.quanta.COST_QUANTUM_USD_PER_H` quanta: the smaller of the
        budget (rounded down, :func:`~guide_opt.quanta.budget_quanta`) and :attr:`cost_limit_quanta`; None when neither is set."""
        limits = [] if self.cost_limit_quanta is None else [self.cost_limit_quanta]
        if self.problem.budget_per_hour is not None:
            limits.append(budget_quanta(self.problem.budget_per_hour))
        return min(limits) if limits else None

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
    """Fewest replicas of ``batch`` concurrent sequences meeting the workload's demand (the ``burst`` serving model).

    rate R: Little's law at full load, each replica completes ``batch / latency`` requests/s.
    users U: each replica holds ``batch`` users. job N in D hours: each replica completes
    ``batch x D x 3600 / latency`` requests. No demand: one replica.
    """
    served = burst_demand_served_per_replica(requirement, batch, request_latency_s)
    return replicas_for(demand_of(requirement), served)


def replicas_for(demand: float | None, served_per_replica: float | None) -> int:
    """Fewest replicas serving ``demand`` when each serves ``served_per_replica`` (one without demand)."""
    if demand is None or not served_per_replica:
        return 1
    return max(1, math.ceil(demand / served_per_replica - 1e-9))


#: Full-model figures of one (LLM, lengths, shape, batch), independent of SLOs and demand:
#: (fits, memory used GiB, memory usable GiB, memory utilization, TTFT s, TPOT s, batch latency s)
#: -- the static burst estimate of a full batch.
Evaluation = tuple[bool, float, float, float, float | None, float | None, float | None]


def shape_config(llm: LlmSpec, input_tokens: int, output_tokens: int, shape: Shape, batch: int) -> ServingConfig:
    """The :class:`ServingConfig` of ``shape`` at max-num-seqs ``batch`` for one LLM and lengths."""
    return ServingConfig(
        llm=llm, gpu=shape.gpu, framework=shape.framework, quantization=shape.quantization, tp=shape.tp, pp=shape.pp,
        batch=batch, input_tokens=input_tokens, output_tokens=output_tokens, kv_cache_dtype=shape.kv_cache_dtype,
        efficiency=shape.efficiency,
    )


def evaluate_shape_batch(llm: LlmSpec, input_tokens: int, output_tokens: int, shape: Shape, batch: int) -> Evaluation:
    """The SLO- and demand-independent figures of ``shape`` at ``batch`` (one :func:`~guide_opt.perf.estimate` call)."""
    est = estimate(shape_config(llm, input_tokens, output_tokens, shape, batch))
    gib = est.memory.as_gib()
    if not est.fits:
        return (False, gib["used_gib"], gib["usable_gib"], est.memory.utilization, None, None, None)
    return (True, gib["used_gib"], gib["usable_gib"], est.memory.utilization, est.ttft_s, est.tpot_s, est.batch_latency_s)


@dataclass(frozen=True)
class SteadyFigures:
    """A candidate's steady-state figures at the load of its fewest sufficient replicas (see :func:`steady_state_figures`).

    ttft_s / tpot_s: at the SLO's percentile; *_mean_s: means; request_latency_s: mean end to
    end; throughput_per_replica_tokens_per_s: the output tokens/s one replica sustains within
    the SLOs and the target utilization; demand_served_per_replica: the demand it serves in
    the workload's unit (None without demand); load_per_replica: requests/s (open loop) or
    users (closed loop) of one replica; slo_violations: ``ttft_slo`` / ``tpot_slo`` missed at
    that load.
    """

    ttft_s: float
    tpot_s: float
    ttft_mean_s: float
    tpot_mean_s: float
    request_latency_s: float
    throughput_per_replica_tokens_per_s: float
    demand_served_per_replica: float | None
    replicas: int
    load_per_replica: float
    utilization: float | None
    slo_violations: tuple[str, ...]


def _slo_limits_s(ms: ModelSpace) -> tuple[float | None, float | None]:
    """The TTFT and TPOT limits (s) predictions are compared with: the SLO divided by its margin."""
    slo = ms.requirement.slo
    ttft = None if slo.ttft_ms is None else slo.ttft_ms / 1e3 / ms.ttft_margin
    tpot = None if slo.tpot_ms is None else slo.tpot_ms / 1e3 / ms.tpot_margin
    return ttft, tpot


def steady_state_figures(ms: ModelSpace, config: ServingConfig, table: steady_state.StepTable | None = None, *,
                         replicas: int | None = None) -> SteadyFigures:
    """Steady-state figures of ``config`` (max-num-seqs ``config.batch``) for the LLM of ``ms``.

    - ``request_rate_per_s`` R: the largest rate one replica takes with the SLOs met at their
      percentile and at most ``target_utilization`` of its capacity
      (:func:`~guide_opt.perf.steady_state.max_rate_within`) gives the replicas
      ``ceil(R / rate)``; metrics are those of the open loop at ``R / replicas``.
    - ``concurrent_users`` U: likewise with the most users per replica
      (:func:`~guide_opt.perf.steady_state.max_users_within`, closed loop, zero think time;
      no utilization bound: a closed loop slows down instead of overloading, and the SLOs bound
      that); metrics at ``ceil(U / replicas)`` users.
    - a batch job (N requests in D hours) or no demand: one replica kept full (a closed loop of
      ``batch`` users) -- its throughput ``X`` sets the replicas ``ceil(N / (X D 3600))``.

    When no load meets an SLO, the replicas are those that keep each within the target
    utilization (rate) or at ``batch`` users each, and the SLO is reported as missed.
    ``replicas`` imposes a replica count instead (the load and SLO checks follow from it): what a
    given deployment carries.
    """
    table = table or steady_state.StepTable(config)
    w, percentile = ms.requirement.workload, ms.requirement.slo.percentile
    ttft_limit_s, tpot_limit_s = _slo_limits_s(ms)
    # Capacity bounds an open loop's load and is reported beside a closed loop's; a full replica
    # (job, no demand) needs neither.
    demand_driven = w.request_rate_per_s is not None or w.concurrent_users is not None
    capacity = steady_state.capacity_request_rate_per_s(config, table) if demand_driven else 0.0
    limits = dict(target_utilization=ms.target_utilization, table=table, capacity_per_s=capacity)
    output = config.output_tokens
    if w.request_rate_per_s is not None:
        best = steady_state.max_rate_within(config, percentile, ttft_limit_s, tpot_limit_s, **limits)
        per_replica = best if best > 0 else ms.target_utilization * capacity
        replicas = replicas or replicas_for(w.request_rate_per_s, per_replica)
        load = w.request_rate_per_s / replicas
        state = steady_state.open_loop(config, load, table, capacity_per_s=capacity)
        served, throughput = best, best * output
    elif w.concurrent_users is not None:
        best = steady_state.max_users_within(config, percentile, ttft_limit_s, tpot_limit_s, w.concurrent_users, table=table)
        replicas = replicas or replicas_for(w.concurrent_users, best if best > 0 else min(w.concurrent_users, config.batch))
        load = math.ceil(w.concurrent_users / replicas)
        state = steady_state.closed_loop(config, load, table, capacity_per_s=capacity)
        at_best = state if best in (0, load) else steady_state.closed_loop(config, best, table, capacity_per_s=capacity)
        served, throughput = float(best), at_best.output_throughput_tokens_per_s
    else:
        load = config.batch
        state = steady_state.closed_loop(config, load, table, capacity_per_s=capacity)
        throughput = state.output_throughput_tokens_per_s
        served = None if w.requests is None else state.request_rate_per_s * w.deadline_h * 3600.0
        replicas = replicas or replicas_for(None if w.requests is None else float(w.requests), served)
    violations = []
    if ttft_limit_s is not None and not state.ttft.at(percentile) <= ttft_limit_s:
        violations.append("ttft_slo")
    if tpot_limit_s is not None and not state.tpot.at(percentile) <= tpot_limit_s:
        violations.append("tpot_slo")
    return SteadyFigures(
        ttft_s=state.ttft.at(percentile), tpot_s=state.tpot.at(percentile), ttft_mean_s=state.ttft.mean_s, tpot_mean_s=state.tpot.mean_s,
        request_latency_s=state.e2e_mean_s, throughput_per_replica_tokens_per_s=throughput, demand_served_per_replica=served,
        replicas=replicas, load_per_replica=float(load), utilization=None if math.isnan(state.utilization) else state.utilization,
        slo_violations=tuple(violations),
    )


def candidate_from_evaluation(ms: ModelSpace, shape: Shape, batch: int, evaluation: Evaluation, max_replicas: int,
                              table: steady_state.StepTable | None = None, figures: SteadyFigures | None = None) -> Candidate:
    """Apply the LLM's SLOs and demand to the figures of :func:`evaluate_shape_batch`.

    Under the steady-state serving model this runs :func:`steady_state_figures` (``table``: the
    shape's :class:`~guide_opt.perf.steady_state.StepTable`, shared by its batch sizes; built
    when None -- the figures are the same either way), unless ``figures`` brings them.
    """
    fits, used_gib, usable_gib, utilization, ttft_s, tpot_s, batch_latency_s = evaluation
    memory = dict(model_index=ms.index, shape=shape, batch=batch, fits=fits, memory_used_gib=used_gib, memory_usable_gib=usable_gib,
                  memory_utilization=utilization, batch_latency_s=batch_latency_s, serving_model=ms.serving_model)
    if not fits:
        return Candidate(ttft_s=ttft_s, tpot_s=tpot_s, request_latency_s=None, throughput_per_replica_tokens_per_s=None, replicas_min=None,
                         violations=("memory",), **memory)
    if ms.serving_model == "burst":
        return _burst_candidate(ms, ttft_s, tpot_s, batch, max_replicas, memory)
    if figures is None:
        figures = steady_state_figures(ms, shape_config(ms.llm, ms.input_tokens, ms.output_tokens, shape, batch), table)
    violations = list(figures.slo_violations)
    if figures.replicas > max_replicas:
        violations.append("demand")
    demand = demand_of(ms.requirement)
    share = 1.0 if demand is None or figures.demand_served_per_replica is None else figures.demand_served_per_replica / demand
    return Candidate(
        ttft_s=figures.ttft_s, tpot_s=figures.tpot_s, request_latency_s=figures.request_latency_s,
        throughput_per_replica_tokens_per_s=figures.throughput_per_replica_tokens_per_s, replicas_min=figures.replicas,
        violations=tuple(violations), served_share_per_replica=share, demand_served_per_replica=figures.demand_served_per_replica,
        ttft_mean_s=figures.ttft_mean_s, tpot_mean_s=figures.tpot_mean_s, load_per_replica=figures.load_per_replica,
        utilization=figures.utilization, **memory,
    )


def _burst_candidate(ms: ModelSpace, ttft_s: float, tpot_s: float, batch: int, max_replicas: int, memory: dict) -> Candidate:
    """The ``burst`` serving model: static latencies of a full batch, replicas by Little's law at full load."""
    latency_s = ttft_s + (ms.output_tokens - 1) * tpot_s
    slo = ms.requirement.slo
    violations = []
    if slo.ttft_ms is not None and ttft_s * 1e3 * ms.ttft_margin > slo.ttft_ms:
        violations.append("ttft_slo")
    if slo.tpot_ms is not None and tpot_s * 1e3 * ms.tpot_margin > slo.tpot_ms:
        violations.append("tpot_slo")
    replicas_min = replicas_needed(ms.requirement, batch, latency_s)
    if replicas_min > max_replicas:
        violations.append("demand")
    served = burst_demand_served_per_replica(ms.requirement, batch, latency_s)
    demand = demand_of(ms.requirement)
    return Candidate(
        ttft_s=ttft_s, tpot_s=tpot_s, request_latency_s=latency_s, throughput_per_replica_tokens_per_s=batch * ms.output_tokens / latency_s,
        replicas_min=replicas_min, violations=tuple(violations), served_share_per_replica=1.0 if demand is None else served / demand,
        demand_served_per_replica=served, ttft_mean_s=ttft_s, tpot_mean_s=tpot_s, load_per_replica=float(batch), **memory,
    )


def burst_demand_served_per_replica(requirement: LlmRequirement, batch: int, request_latency_s: float) -> float | None:
    """Demand one replica of ``batch`` concurrent sequences serves under the ``burst`` model, in the workload's own unit.

    ``batch / latency`` requests/s (rate), ``batch`` users, or ``batch x D x 3600 / latency``
    requests of a job due in D hours. None when the workload states no demand.
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


def evaluate_candidate(ms: ModelSpace, shape: Shape, batch: int, max_replicas: int,
                       table: steady_state.StepTable | None = None) -> Candidate:
    """Evaluate ``shape`` at ``batch`` for the LLM of ``ms`` with the full performance model.

    ``table``: a :class:`~guide_opt.perf.steady_state.StepTable` of the same LLM, lengths and shape
    (any batch) to share with other evaluations of them; the figures are the same with or without.
    """
    evaluation = evaluate_shape_batch(ms.llm, ms.input_tokens, ms.output_tokens, shape, batch)
    return candidate_from_evaluation(ms, shape, batch, evaluation, max_replicas, table)


def empty_model_space(problem: Problem, index: int, catalog: Catalog) -> ModelSpace:
    """The :class:`ModelSpace` of LLM ``index`` without shapes or candidates: lengths and SLO margins resolved."""
    req = problem.models[index]
    llm = catalog.llm(req.id, field=f"models[{index}].id")
    input_tokens, output_tokens = req.workload.token_lengths()
    ttft_margin, tpot_margin = slo_margins(problem, index)
    return ModelSpace(index=index, requirement=req, llm=llm, input_tokens=input_tokens, output_tokens=output_tokens, shapes=[],
                      candidates=[], ttft_margin=ttft_margin, tpot_margin=tpot_margin,
                      serving_model=problem.prediction.serving_model, target_utilization=problem.prediction.target_utilization)


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
#: Steady-state figures (each tens of milliseconds, a hundred times an evaluation) above which
#: :func:`build_space` spreads the work over processes.
PARALLEL_MIN_STEADY_FIGURES = 64

#: What one shape of one evaluation group yields: its evaluation at every batch size and, under
#: the steady-state model, each LLM's figures at every batch size (None where it does not fit).
ShapeWork = tuple[list[Evaluation], list[list["SteadyFigures | None"]]]


#: Step tables an earlier build computed, by :func:`~guide_opt.perf.steady_state.table_identity`: a build starts
#: each of its tables from the one of the same identity (:meth:`~guide_opt.perf.steady_state.StepTable.start_from`).
StepMemories = dict[str, steady_state.TableMemory]


def _evaluate_shape(task: tuple, models: list[ModelSpace], k: int,
                    known: StepMemories | None = None) -> tuple[ShapeWork, tuple[str, steady_state.TableMemory] | None]:
    """Evaluate shape ``k`` of ``task`` at every batch size, then the steady-state figures of each of ``models`` there.

    One :class:`~guide_opt.perf.steady_state.StepTable` serves the shape's batch sizes and all
    of ``models`` (the LLMs of the group: same LLM, lengths and shapes); it memoises capacities
    and SLO-limited loads, so LLMs with the same SLOs compute them once. It starts from
    ``known``'s table of its identity, if any, and, when ``known`` is given, what it holds
    afterwards is returned beside the work (None without it or without a steady-state figure).
    """
    llm, input_tokens, output_tokens, shapes, batches = task
    shape = shapes[k]
    evaluations = [evaluate_shape_batch(llm, input_tokens, output_tokens, shape, b) for b in batches]
    figures: list[list[SteadyFigures | None]] = [[None] * len(batches) for _ in models]
    steady = [i for i, ms in enumerate(models) if ms.serving_model == "steady_state"]
    if not (steady and any(ev[0] for ev in evaluations)):
        return (evaluations, figures), None
    table_config = shape_config(llm, input_tokens, output_tokens, shape, max(batches))
    table = steady_state.StepTable(table_config)
    identity = None if known is None else steady_state.table_identity(table_config)
    if identity in (known or {}):
        table.start_from(known[identity])
    for j, (b, ev) in enumerate(zip(batches, evaluations)):
        if ev[0]:
            config = shape_config(llm, input_tokens, output_tokens, shape, b)
            for i in steady:
                figures[i][j] = steady_state_figures(models[i], config, table)
    return (evaluations, figures), None if identity is None else (identity, table.kept())


#: A build progress sink: called with (shapes evaluated so far, shapes in all) as each shape is done.
BuildProgress = Callable[[int, int], None]


def _evaluate_all(tasks: list[tuple], models: list[list[ModelSpace]], workers: int,
                  on_shape: BuildProgress | None = None, memories: StepMemories | None = None) -> list[list[ShapeWork]]:
    """:func:`_evaluate_shape` of every shape of every task (LLMs: ``models[t]``), serially or over ``workers`` forked
    processes (same results either way); ``on_shape`` hears of each shape done. With ``memories``, each step table
    starts from the one it holds of its identity, and ``memories`` then holds the tables of this build."""
    items = [(t, k) for t, task in enumerate(tasks) for k in range(len(task[3]))]
    size = sum(len(t[3]) * len(t[4]) for t in tasks)
    steady = sum(len(t[3]) * len(t[4]) * sum(ms.serving_model == "steady_state" for ms in group) for t, group in zip(tasks, models))
    if size < PARALLEL_MIN_EVALUATIONS and steady < PARALLEL_MIN_STEADY_FIGURES:
        workers = 1
    # Shapes with steady-state figures take 10-400 ms each and vary 30-fold, so they are handed out one at a time (a
    # worker that is done takes the next); static evaluations alone are ~1 ms and go in chunks to save the hand-offs.
    chunksize = 1 if steady else len(items) // (4 * max(1, workers))
    flat = forked_map(lambda item: _evaluate_shape(tasks[item[0]], models[item[0]], item[1], memories), items, workers, chunksize=chunksize,
                      on_done=None if on_shape is None else lambda done: on_shape(done, len(items)))
    out: list[list[ShapeWork]] = [[] for _ in tasks]
    for (t, _), (work, memory) in zip(items, flat):
        out[t].append(work)
        if memory is not None:
            memories[memory[0]] = memory[1]
    return out


def resolve_search(problem: Problem, catalog: Catalog) -> tuple[list[ModelSpace], dict[str, float], list[GpuSpec]]:
    """The input checks of :func:`build_space` and what they resolve, without evaluating a candidate.

    Returns each LLM's :class:`ModelSpace` with its runnable shapes (no candidates yet), the
    prices per GPU-hour and the GPUs. Raises :class:`~guide_opt.errors.InputError` for an unknown
    id, a GPU without a price or an objective that needs a limit the problem does not set.
    """
    prices = resolve_prices(problem, catalog)
    gpus = resolve_gpus(problem, catalog)
    for gpu_id in problem.hardware.inventory:
        catalog.gpu(gpu_id, field=f"hardware.inventory.{gpu_id}")
    if problem.objective == "max_throughput" and problem.budget_per_hour is None and problem.hardware.max_gpus is None and not problem.hardware.inventory:
        raise InputError("budget_per_hour", "max_throughput needs a limit, otherwise more GPUs always give more throughput",
                         "set budget_per_hour, hardware.max_gpus or hardware.inventory")
    models = []
    for i in range(len(problem.models)):
        ms = empty_model_space(problem, i, catalog)
        ms.shapes = _shapes_for(ms, problem, catalog, gpus, prices)
        models.append(ms)
    return models, prices, gpus


def build_space(problem: Problem, catalog: Catalog | None = None, *, workers: int | None = None) -> SearchSpace:
    """Resolve ids, run the data pre-checks, and evaluate every candidate of every LLM.

    Candidate evaluation (the full performance model) dominates the cost of large fleets,
    so it is shared and spread without changing any result:

    - LLMs of the problem with the same architecture and token lengths share one evaluation
      of each (shape, batch) -- only the SLO and demand checks are per LLM
      (:func:`candidate_from_evaluation`) -- and, under the steady-state model, one step table
      per shape that memoises capacities and SLO-limited loads (:func:`_evaluate_shape`);
    - above :data:`PARALLEL_MIN_EVALUATIONS` evaluations or :data:`PARALLEL_MIN_STEADY_FIGURES`
      steady-state figures the work is spread, shape by shape, over ``workers`` forked
      processes (:func:`guide_opt.parallel.forked_map`; default: the machine's cores; 1 keeps
      it in this process, and so does a process that may not fork, see :mod:`guide_opt.parallel`).
      Each evaluation is a pure function of its inputs, so the candidates are identical.
    """
    return evaluate_search(problem, resolve_search(problem, catalog or load_catalog()), workers=workers)


def evaluate_search(problem: Problem, resolved: tuple[list[ModelSpace], dict[str, float], list[GpuSpec]], *,
                    workers: int | None = None, on_shape: BuildProgress | None = None,
                    step_memories: StepMemories | None = None) -> SearchSpace:
    """:func:`build_space` after its input checks: evaluate every candidate of ``resolved`` (:func:`resolve_search`'s answer).

    ``on_shape(done, total)`` is called as each shape (all its batch sizes, every LLM that shares it) is evaluated.
    ``step_memories``: step tables of earlier builds, by identity. Each step table of this build starts from the one of
    its identity (the answers it memoises do not depend on the demand, so a problem that differs in its request rate,
    users or SLOs reuses most of them), and ``step_memories`` afterwards also holds this build's tables. The
    candidates are the same either way.
    """
    models, prices, gpus = resolved
    batches = sorted(set(problem.search.batch_sizes))
    # One evaluation task per distinct (LLM, lengths, shapes): the shapes depend on the LLM's
    # precision tolerance too, so they are part of the key.
    groups: dict[tuple, int] = {}
    tasks: list[tuple] = []
    members: list[list[ModelSpace]] = []
    for ms in models:
        key = (ms.llm, ms.input_tokens, ms.output_tokens, tuple(s.key for s in ms.shapes))
        if key not in groups:
            groups[key] = len(tasks)
            tasks.append((ms.llm, ms.input_tokens, ms.output_tokens, ms.shapes, batches))
            members.append([])
        members[groups[key]].append(ms)
    workers = default_workers() if workers is None else workers
    work = _evaluate_all(tasks, members, workers, on_shape, step_memories)
    for t, group in enumerate(members):
        for i, ms in enumerate(group):
            ms.candidates = [candidate_from_evaluation(ms, shape, b, evaluations[j], problem.search.max_replicas, figures=figures[i][j])
                             for shape, (evaluations, figures) in zip(ms.shapes, work[t]) for j, b in enumerate(batches)]
    return SearchSpace(problem=problem, models=models, prices_usd_per_gpu_hour=prices, gpu_ids=[g.id for g in gpus])


def build_space_under(deadline: Deadline, problem: Problem, *, workers: int | None = None) -> SearchSpace:
    """:func:`build_space`, its time charged to ``deadline``'s ``space_build`` phase (the time limit counts the build)."""
    deadline.phase("space_build")
    return build_space(problem, workers=workers)


def searched_space(problem: Problem, space: SearchSpace | None, deadline: Deadline | None, limit_s: float) -> tuple[Deadline, SearchSpace]:
    """What every solve stack starts with: its deadline (a new one of ``limit_s`` when None), the space (built under it
    when None, :func:`build_space_under`) and the search's share of the limit started (:meth:`Deadline.start_search`)."""
    if deadline is None:
        deadline = Deadline(limit_s)
    if space is None:
        space = build_space_under(deadline, problem)
    deadline.start_search()
    return deadline, space


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
