"""Simulating a plan at its workload and scoring it: metrics, named constraints, objective.

- :class:`SimulatedMetrics` -- what one simulation of one LLM's deployment reports.
- :class:`PlanEvaluation` -- one simulated plan: settings and metrics per LLM, the named
  constraints, the objective and its tie-break key.
- :class:`Evaluator` -- the resolved problem, the incumbent and the neighbourhood searched
  around it (:mod:`~guide_opt.refine.knobs`), and a memoised simulation per (LLM, settings,
  stream): :meth:`Evaluator.evaluate` on one stream, :meth:`Evaluator.evaluate_confirmed` on
  the search stream and then the confirmation streams.
- :func:`simulate_deployments` -- the incumbent as it would run, judged like a trial.

Named constraints, one Optuna constraint each (a value <= 0 is met): ``models[i].ttft_pXX_ms``
/ ``models[i].tpot_pXX_ms`` at the SLO's percentile, ``models[i].demand``,
``models[i].memory``, ``models[i].rejected``, and the shared ``budget_per_hour``,
``max_gpus``, ``inventory.<gpu>``. Values are relative excesses (``p90 / limit - 1``), so
Optuna's infeasibility score compares like with like.

Simulated load: a ``request_rate_per_s`` workload runs open loop (Poisson) at that rate, a
``concurrent_users`` one as a closed loop of that many users, a batch job (``requests`` +
``deadline_h``) as a burst whose throughput projects the job's duration; max_throughput and
demand-free workloads run saturated (replicas x max-num-seqs users). Demand is a constraint:
the open loop must keep up with the rate (:func:`open_loop_served_share`), the closed loop must
hold every user in a batch (replicas x max-num-seqs >= users) under the burst serving model --
under the steady-state model users beyond the slots queue and the SLOs judge the wait --, the
job must finish by its deadline.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from guide_opt.catalog import Catalog, load_catalog
from guide_opt.objectives import OBJECTIVES
from guide_opt.perf import ServingConfig
from guide_opt.prediction import calibrated_efficiency, slo_margins
from guide_opt.problem import LlmRequirement, Problem
from guide_opt.refine import knobs
from guide_opt.refine.knobs import EngineSettings
from guide_opt.simulate import GoodputTargets, RangeLengths, Workload, simulate, users_lengths
from guide_opt.simulate.workload_spec import workload_from_spec
from guide_opt.simulate.workloads import LengthDistribution
from guide_opt.solution import Deployment
from guide_opt.space import empty_model_space, evaluate_candidate, make_shape, resolve_prices

#: Requests simulated per LLM per trial (the simulator's own default).
DEFAULT_NUM_REQUESTS = 1000
#: Seed of the simulated request stream; every trial sees the same stream (common random numbers).
DEFAULT_SIMULATION_SEED = 0
#: Independent simulated streams on which a plan feasible on the search stream must also be
#: feasible (see :meth:`Evaluator.evaluate_confirmed`).
DEFAULT_CONFIRMATIONS = 2
#: How simulated replicas share the load: as the Service of the emitted deployment does (kube-proxy sends each
#: connection to a backend drawn at random in its default iptables and nftables modes) and as the steady-state
#: model assumes (each replica a Poisson stream at rate / replicas). A least-loaded balancer would smooth the
#: replicas' loads: for two vLLM replicas of Llama-3.1-8B at 15.5 requests/s (2048 / 256 tokens) it read a p99
#: TPOT of 30-32 ms where random balancing read 34-41 ms (three seeds of 8,000 requests each).
DEPLOYED_BALANCER = "random"
#: Closed loops simulate at least this many requests per user (``num_requests`` is raised when needed).
CLOSED_LOOP_MIN_ROUNDS = 4
#: Open loop: share of the arrivals skipped as warm-up before measuring the served share.
DEMAND_WARMUP_SHARE = 0.25
#: Open loop: the served share (:func:`open_loop_served_share`) must reach this. Below 1.0
#: because a finite stream makes a stable plan's estimate dip slightly (>= 0.97 seen at 300
#: requests); an overload of 5 % or more fails it, and its queueing also breaks a TTFT SLO.
OPEN_LOOP_SERVED_SHARE_MIN = 0.95
#: Fallback objective value (ms) of a plan whose latency could not be measured.
UNMEASURED_LATENCY_MS = 1e9


def finite_or_none(value: Any) -> Any:
    """``value``, or None when it is a non-finite float (for JSON)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


@dataclass(frozen=True)
class SimulatedMetrics:
    """What the simulator reports for one LLM's deployment (all replicas together).

    Latencies in ms at p50/p90/p99 (NaN when nothing completed): ``ttft`` (time to first
    token, queueing included), ``tpot`` (per-request time per output token), ``itl``
    (inter-token gaps pooled over requests). ``e2e_mean_ms``: mean end-to-end latency.
    throughput_tokens_per_s: output tokens of completed requests per second of makespan.
    goodput_fraction / goodput_tokens_per_s: requests meeting both SLOs, share and output
    tokens/s (None without an SLO). demand_served_share: how much of the stated demand the
    deployment serves (>= 1 serves it; open loop: capacity / rate from the latency trend, see
    :func:`open_loop_served_share`, capped at 1; closed loop: replicas x max-num-seqs / users (1 under the
    steady-state serving model, where extra users queue); batch job:
    deadline / projected job time; saturating runs with a rate: completed requests/s / rate);
    None without a demand. arrival: the simulated arrival process in words.
    """

    fits: bool
    reason: str | None
    arrival: str
    num_requests: int
    completed_requests: int
    rejected_requests: int
    ttft_p50_ms: float
    ttft_p90_ms: float
    ttft_p99_ms: float
    tpot_p50_ms: float
    tpot_p90_ms: float
    tpot_p99_ms: float
    itl_p50_ms: float
    itl_p90_ms: float
    itl_p99_ms: float
    e2e_mean_ms: float
    throughput_tokens_per_s: float
    request_throughput_per_s: float
    goodput_fraction: float | None
    goodput_tokens_per_s: float | None
    demand_served_share: float | None
    preemptions: int
    cost_per_hour: float

    def latency_ms(self, metric: str, percentile: int) -> float:
        """``ttft``, ``tpot`` or ``itl`` at percentile 50, 90 or 99 (ms)."""
        return getattr(self, f"{metric}_p{percentile}_ms")

    def to_json(self) -> dict[str, Any]:
        """The metrics as a dict (NaN becomes None)."""
        return {k: finite_or_none(v) for k, v in dataclasses.asdict(self).items()}


@dataclass(frozen=True)
class PlanEvaluation:
    """One simulated plan: settings and metrics per LLM, named constraints, objective values.

    constraints: name -> relative excess (<= 0 met); the worst over the search and
    confirmation streams once confirmed. violations: the unmet ones in words. confirmed: None
    when the confirmation streams were not simulated (infeasible on the search stream, or no
    confirmation streams), else whether they all agreed.
    objective: the refinement objective ($/h for min_cost, simulated tokens/s for
    max_throughput, summed simulated mean end-to-end ms for min_latency).
    secondary: the tie-break key (mean E2E ms for min_cost, $/h otherwise; lower is better).
    """

    settings: tuple[EngineSettings, ...]
    metrics: tuple[SimulatedMetrics, ...]
    constraints: dict[str, float]
    violations: tuple[str, ...]
    objective: float
    secondary: float
    cost_per_hour: float
    confirmed: bool | None = None

    @property
    def feasible(self) -> bool:
        """True when every named constraint is met."""
        return all(v <= 0 for v in self.constraints.values())


#: Simulations of single LLMs shared by the plans of one problem (one solve): each key is an LLM's
#: identity (:meth:`Evaluator.identity`: the first LLM of the problem with the same specification,
#: workload, SLOs and SLO margins), its engine settings, the seed, its deployment's GPU,
#: quantization, PP degree and KV dtype, and the requests simulated -- everything a simulation of
#: one LLM depends on within a problem. The LLMs of a plan never share replicas, so an LLM deployed
#: the same way in two plans, or two services of one fleet with the same LLM, workload and SLOs
#: deployed the same way, are the same simulation.
SimulationMemo = dict[tuple, "SimulatedMetrics"]


class Evaluator:
    """Judges plans around one incumbent with the serving simulator.

    Holds the resolved problem, the incumbent's fixed choices (GPU, PP, quantization, KV
    dtype), its :attr:`incumbent_settings` and the :attr:`neighbourhoods` searched per LLM
    (:mod:`~guide_opt.refine.knobs`), and a simulation cache per (LLM, settings, seed).
    num_requests: requests simulated per LLM (closed loops: at least
    :data:`CLOSED_LOOP_MIN_ROUNDS` per user). simulation_seed: the search stream's seed;
    confirmations: how many confirmation streams (seeds ``simulation_seed + 1 ...``).
    simulations: a memo shared with other evaluators of the same problem (:data:`SimulationMemo`),
    e.g. the plans one solve checks: an LLM deployed the same way in two plans is simulated once.
    """

    def __init__(self, problem: Problem, incumbent: tuple[Deployment, ...], num_requests: int, simulation_seed: int,
                 catalog: Catalog | None = None, confirmations: int = 0, simulations: "SimulationMemo | None" = None) -> None:
        self.problem = problem
        self.confirmation_seeds = tuple(simulation_seed + 1 + k for k in range(confirmations))
        self.catalog = catalog or load_catalog()
        self.incumbent = incumbent
        self.num_requests = num_requests
        self.simulation_seed = simulation_seed
        self.prices = resolve_prices(problem, self.catalog)
        self.llms = [self.catalog.llm(req.id, field=f"models[{i}].id") for i, req in enumerate(problem.models)]
        self.lengths = [_lengths(req, field=f"models[{i}].workload") for i, req in enumerate(problem.models)]
        self.mean_tokens = [req.workload.token_lengths() for req in problem.models]
        self.percentiles = tuple(req.slo.percentile for req in problem.models)
        # The plan's own SLO factors (calibration quantile x slo_margin): simulated latencies are
        # judged exactly as the planner judged its predictions.
        self.margins = tuple(slo_margins(problem, i) for i in range(len(problem.models)))
        self.identities = self._identities()
        self.cache: dict[tuple[int, EngineSettings, int], SimulatedMetrics] = {}
        self.shared: SimulationMemo = {} if simulations is None else simulations
        self.incumbent_settings = tuple(knobs.incumbent_settings(d, self.catalog.framework(d.framework)) for d in incumbent)
        self.neighbourhoods = tuple(self._neighbourhood(i, s) for i, s in enumerate(self.incumbent_settings))

    def _identities(self) -> tuple[int, ...]:
        """Per LLM of the problem, the index of the first one whose simulations are the same as its own.

        A simulation reads the LLM's specification, its workload (lengths and load) and SLOs, and the
        SLO margins its metrics are judged with; the rest (deployment, settings, seed, requests) is
        in the memo's key beside the identity.
        """
        first: dict[tuple, int] = {}
        identities = []
        for i, req in enumerate(self.problem.models):
            content = (self.llms[i].model_dump_json(), req.workload.model_dump_json(), req.slo.model_dump_json(), self.margins[i])
            identities.append(first.setdefault(content, i))
        return tuple(identities)

    def identity(self, i: int) -> int:
        """The first LLM of the problem simulated exactly as LLM ``i`` (the same specification, workload, SLOs and margins)."""
        return self.identities[i]

    def _neighbourhood(self, i: int, s: EngineSettings) -> knobs.Neighbourhood:
        engines = tuple(self.catalog.framework(f, field=f"frameworks[{j}]") for j, f in enumerate(self.problem.frameworks))
        return knobs.neighbourhood(knobs.KnobContext(problem=self.problem, current=s, engines=engines,
                                                     supports=lambda other: self._config(i, other).unsupported_reason() is None))

    # -- the simulated serving config and load --
    def _config(self, i: int, s: EngineSettings) -> ServingConfig:
        d = self.incumbent[i]
        input_tokens, output_tokens = self.mean_tokens[i]
        return ServingConfig(llm=self.llms[i], gpu=self.catalog.gpu(d.gpu), quantization=self.catalog.quantization(d.quantization),
                             pp=d.pp, input_tokens=input_tokens, output_tokens=output_tokens, kv_cache_dtype=d.kv_cache_dtype,
                             efficiency=calibrated_efficiency(self.problem, d.gpu, s.framework),
                             **knobs.serving_config_fields(s, self.catalog))

    def unsupported(self, settings: tuple[EngineSettings, ...]) -> str | None:
        """Why a plan cannot run at all (None when every replica shape can)."""
        for i, s in enumerate(settings):
            reason = self._config(i, s).unsupported_reason()
            if reason:
                return f"models[{i}]: {reason}"
        return None

    def cost_per_hour(self, i: int, s: EngineSettings) -> float:
        """$/h of one LLM's replicas."""
        d = self.incumbent[i]
        return s.replicas * s.tp * d.pp * self.prices[d.gpu]

    def _saturating(self, i: int) -> bool:
        w = self.problem.models[i].workload
        no_demand = w.request_rate_per_s is None and w.concurrent_users is None and w.requests is None
        return OBJECTIVES[self.problem.objective].grows_with_replicas or no_demand

    def _workload(self, i: int, s: EngineSettings) -> Workload:
        w = self.problem.models[i].workload
        if self._saturating(i):
            return Workload.closed_loop(self._closed_loop_lengths(i), s.replicas * s.max_num_seqs)
        if w.request_rate_per_s is not None:
            return Workload.open_loop(self.lengths[i], w.request_rate_per_s)
        if w.concurrent_users is not None:
            return Workload.closed_loop(self._closed_loop_lengths(i), w.concurrent_users)
        return Workload.burst(self.lengths[i])

    def _closed_loop_lengths(self, i: int) -> LengthDistribution:
        """Users' lengths as the emitted load test gives them (:func:`~guide_opt.simulate.users_lengths`), so that
        users drift apart as real ones do instead of staying in lock-step."""
        return users_lengths(self.lengths[i], self.llms[i].max_position_embeddings)

    # -- simulation --
    def simulate_llm(self, i: int, s: EngineSettings, seed: int | None = None) -> SimulatedMetrics:
        """Simulate LLM ``i`` deployed with ``s`` on the stream of ``seed`` (default: the search stream); memoised."""
        seed = self.simulation_seed if seed is None else seed
        key = (i, s, seed)
        if key in self.cache:
            return self.cache[key]
        if (known := self.shared.get(self._shared_key(key))) is not None:
            self.cache[key] = known
            return known
        req = self.problem.models[i]
        workload = self._workload(i, s)
        slo = GoodputTargets(ttft_ms=req.slo.ttft_ms, tpot_ms=req.slo.tpot_ms) if (req.slo.ttft_ms or req.slo.tpot_ms) else None
        num_requests = self.num_requests
        if workload.arrival == "closed":  # enough requests for every user to send several, so the loop reaches steady state
            num_requests = max(num_requests, CLOSED_LOOP_MIN_ROUNDS * workload.concurrent_users)
        result = simulate(self._config(i, s), workload, num_requests=num_requests, seed=seed, balancer=DEPLOYED_BALANCER, slo=slo,
                          **knobs.simulator_arguments(s))
        metrics = self._metrics(i, s, workload, result)
        self._remember(key, metrics)
        return metrics

    def _shared_key(self, key: tuple[int, EngineSettings, int]) -> tuple:
        """``key`` (LLM, settings, seed) as the shared memo keeps it: the LLM's :meth:`identity` in place of its index, with
        what else the simulation depends on (the deployment's fixed choices and the requests)."""
        i, s, seed = key
        d = self.incumbent[i]
        return (self.identity(i), s, seed, d.gpu, d.quantization, d.pp, d.kv_cache_dtype, self.num_requests)

    def _remember(self, key: tuple[int, EngineSettings, int], metrics: SimulatedMetrics) -> None:
        self.cache[key] = metrics
        self.shared[self._shared_key(key)] = metrics

    def simulate_side_by_side(self, settings: tuple[EngineSettings, ...], seed: int | None = None) -> None:
        """:meth:`simulate_llm` of every LLM of a plan at once, one forked worker each (:func:`guide_opt.parallel.forked_map`;
        the same figures as one after another); memoised like it, so :meth:`evaluate` then reads them."""
        seed = self.simulation_seed if seed is None else seed
        _simulate_missing([(self, i, s) for i, s in enumerate(settings)], seed)

    def _metrics(self, i: int, s: EngineSettings, workload: Workload, result) -> SimulatedMetrics:
        ms = {name: getattr(result, f"{name}_s").as_ms() for name in ("ttft", "tpot", "itl")}
        nan = math.nan
        pick = lambda name, q: nan if ms[name][q] is None else ms[name][q]  # noqa: E731
        e2e = result.e2e_s.mean_s * 1e3
        if workload.arrival == "poisson":
            arrival = f"Poisson {workload.request_rate_per_s:g} requests/s"
        elif workload.arrival == "closed":
            arrival = f"closed loop of {workload.concurrent_users} users"
            if isinstance(workload.lengths, RangeLengths) and workload.lengths.range_ratio > 0:
                arrival += f", lengths within +-{workload.lengths.range_ratio:.0%} of the stated ones"
        else:
            arrival = f"burst of {result.num_requests} requests"
        return SimulatedMetrics(
            fits=result.fits, reason=result.reason, arrival=arrival, num_requests=result.num_requests,
            completed_requests=result.completed_requests, rejected_requests=self._kv_rejections(i, result),
            ttft_p50_ms=pick("ttft", "p50"), ttft_p90_ms=pick("ttft", "p90"), ttft_p99_ms=pick("ttft", "p99"),
            tpot_p50_ms=pick("tpot", "p50"), tpot_p90_ms=pick("tpot", "p90"), tpot_p99_ms=pick("tpot", "p99"),
            itl_p50_ms=pick("itl", "p50"), itl_p90_ms=pick("itl", "p90"), itl_p99_ms=pick("itl", "p99"),
            e2e_mean_ms=e2e, throughput_tokens_per_s=float(result.throughput_tokens_per_s) if result.fits else 0.0,
            request_throughput_per_s=float(result.request_throughput_per_s) if result.fits else 0.0,
            goodput_fraction=result.goodput.fraction if result.goodput else None,
            goodput_tokens_per_s=finite_or_none(result.goodput.tokens_per_s) if result.goodput else None,
            demand_served_share=self._served_share(i, s, workload, result), preemptions=result.preemptions,
            cost_per_hour=self.cost_per_hour(i, s),
        )

    def _kv_rejections(self, i: int, result) -> int:
        """Requests rejected because they do not fit one replica's KV cache (over-context ones would be rejected by any plan)."""
        rec = result.requests
        over_context = (rec.input_tokens + rec.output_tokens) > self.llms[i].max_position_embeddings
        return int((np.asarray(rec.rejected, dtype=bool) & ~over_context).sum())

    def _served_share(self, i: int, s: EngineSettings, workload: Workload, result) -> float | None:
        w = self.problem.models[i].workload
        if not result.fits:
            return 0.0 if (w.request_rate_per_s or w.concurrent_users or w.requests) else None
        rps = result.request_throughput_per_s if math.isfinite(result.request_throughput_per_s) else 0.0
        if w.concurrent_users is not None:
            if self.problem.prediction.serving_model == "steady_state":
                # Users beyond the sequence slots queue for one, as in a running server; the SLO
                # percentiles judge that wait, so every user is served.
                return 1.0
            return s.replicas * s.max_num_seqs / w.concurrent_users
        if w.requests is not None and w.deadline_h is not None:
            return w.deadline_h * 3600.0 * rps / w.requests if rps > 0 else 0.0
        if w.request_rate_per_s is not None:
            if workload.arrival != "poisson":
                return rps / w.request_rate_per_s
            return open_loop_served_share(result.requests.arrival_s, result.requests.finish_s)
        return None

    # -- scoring --
    def evaluate(self, settings: tuple[EngineSettings, ...], seed: int | None = None) -> PlanEvaluation:
        """Simulate every LLM of the plan on the stream of ``seed`` (default: the search stream) and score it."""
        metrics = tuple(self.simulate_llm(i, s, seed) for i, s in enumerate(settings))
        constraints: dict[str, float] = {}
        violations: list[str] = []
        for i, (req, m) in enumerate(zip(self.problem.models, metrics)):
            self._llm_constraints(i, req, m, constraints, violations)
        self._shared_constraints(settings, constraints, violations)
        cost = math.fsum(m.cost_per_hour for m in metrics)
        latency = math.fsum(m.e2e_mean_ms if math.isfinite(m.e2e_mean_ms) else UNMEASURED_LATENCY_MS for m in metrics)
        throughput = math.fsum(m.throughput_tokens_per_s if math.isfinite(m.throughput_tokens_per_s) else 0.0 for m in metrics)
        # The simulated value of each refinable objective; the secondary is the objective's tie-break.
        simulated = {"min_cost": cost, "max_throughput": throughput, "min_latency": latency}
        kind = OBJECTIVES[self.problem.objective]
        return PlanEvaluation(settings, metrics, constraints, tuple(violations), simulated[kind.name], simulated[kind.tie_break], cost)

    def _llm_constraints(self, i: int, req: LlmRequirement, m: SimulatedMetrics, constraints: dict[str, float],
                         violations: list[str]) -> None:
        label = f"models[{i}]"
        pct = req.slo.percentile
        constraints[f"{label}.memory"] = 0.0 if m.fits else 1.0
        if not m.fits:
            violations.append(f"{label}.memory: {m.reason}")
        for metric, limit, factor in (("ttft", req.slo.ttft_ms, self.margins[i][0]), ("tpot", req.slo.tpot_ms, self.margins[i][1])):
            if limit is None:
                continue
            value = m.latency_ms(metric, pct)
            excess = value * factor / limit - 1.0 if m.fits and math.isfinite(value) else 1.0
            constraints[f"{label}.{metric}_p{pct}_ms"] = excess
            if excess > 0 and m.fits:
                widened = "" if factor == 1.0 else f" (x margin {factor:.3f} = {value * factor:,.1f} ms)"
                violations.append(f"{label}.{metric}_p{pct}_ms: {value:,.1f} ms{widened} > SLO {limit:g} ms")
        if m.demand_served_share is not None:
            required = OPEN_LOOP_SERVED_SHARE_MIN if m.arrival.startswith("Poisson") else 1.0
            excess = required - m.demand_served_share
            constraints[f"{label}.demand"] = excess
            if excess > 0 and m.fits:
                violations.append(f"{label}.demand: serves {m.demand_served_share:.1%} of {_demand_words(req)} (needs {required:.0%})")
        share = m.rejected_requests / max(1, m.num_requests)
        constraints[f"{label}.rejected"] = share if m.fits else 1.0
        if share > 0 and m.fits:
            violations.append(f"{label}.rejected: {m.rejected_requests} of {m.num_requests} requests do not fit one replica's KV cache")

    def _shared_constraints(self, settings: tuple[EngineSettings, ...], constraints: dict[str, float], violations: list[str]) -> None:
        problem = self.problem
        cost = math.fsum(self.cost_per_hour(i, s) for i, s in enumerate(settings))
        if problem.budget_per_hour is not None:
            constraints["budget_per_hour"] = cost / problem.budget_per_hour - 1.0
            if cost > problem.budget_per_hour * (1 + 1e-9):
                violations.append(f"budget_per_hour: ${cost:,.2f}/h > ${problem.budget_per_hour:,.2f}/h")
        used: dict[str, int] = {}
        for i, s in enumerate(settings):
            gpu = self.incumbent[i].gpu
            used[gpu] = used.get(gpu, 0) + s.replicas * s.tp * self.incumbent[i].pp
        if problem.hardware.max_gpus is not None:
            total = sum(used.values())
            constraints["max_gpus"] = total / problem.hardware.max_gpus - 1.0
            if total > problem.hardware.max_gpus:
                violations.append(f"max_gpus: uses {total} GPUs > {problem.hardware.max_gpus}")
        for gpu, count in sorted(used.items()):
            limit = problem.hardware.inventory.get(gpu)
            if limit is not None:
                constraints[f"inventory.{gpu}"] = count / max(limit, 1e-9) - 1.0
                if count > limit:
                    violations.append(f"inventory.{gpu}: uses {count} > {limit}")

    def evaluate_confirmed(self, settings: tuple[EngineSettings, ...]) -> PlanEvaluation:
        """:meth:`evaluate` on the search stream, then -- when the plan meets every constraint there -- on each confirmation stream.

        Every trial is judged on the same search stream (common random numbers), so on its
        own the search favours plans that were merely lucky with it (an overloaded plan whose
        queue had not built up yet). A plan feasible on the search stream is therefore also
        simulated on :attr:`confirmation_seeds`; its constraint values become the worst over
        all streams, and the other streams' violations are added. Metrics and the objective
        stay those of the search stream.
        """
        evaluation = self.evaluate(settings)
        if not evaluation.feasible or not self.confirmation_seeds:
            return evaluation
        constraints = dict(evaluation.constraints)
        extra: list[str] = []
        for seed in self.confirmation_seeds:
            other = self.evaluate(settings, seed)
            for name, value in other.constraints.items():
                constraints[name] = max(constraints.get(name, value), value)
            extra += [f"{v} (confirmation stream, simulation seed {seed})" for v in other.violations]
        return dataclasses.replace(evaluation, constraints=constraints, violations=evaluation.violations + tuple(extra), confirmed=not extra)

    # -- the plan as deployments --
    def deployments(self, settings: tuple[EngineSettings, ...]) -> tuple[Deployment, ...]:
        """Deployments of a plan with the static model's metrics for each shape and batch (as :func:`~guide_opt.verify.verify` recomputes them)."""
        out = []
        for i, s in enumerate(settings):
            if s == self.incumbent_settings[i]:
                out.append(self.incumbent[i])
                continue
            d = self.incumbent[i]
            # the plan's own model: calibrated efficiency of (GPU, engine) and the SLO margins, as the space builder uses them
            ms = empty_model_space(self.problem, i, self.catalog)
            shape = make_shape(self.problem, self.catalog.gpu(d.gpu), s.tp, d.pp, self.catalog.framework(s.framework),
                               self.catalog.quantization(d.quantization), d.kv_cache_dtype, self.prices[d.gpu])
            c = evaluate_candidate(ms, shape, s.max_num_seqs, self.problem.search.max_replicas)
            nan = math.nan
            metrics = {
                "ttft_ms": c.ttft_s * 1e3 if c.fits else nan,
                "tpot_ms": c.tpot_s * 1e3 if c.fits else nan,
                "batch_latency_s": c.batch_latency_s if c.fits else nan,
                "request_latency_ms": c.request_latency_s * 1e3 if c.fits else nan,
                "throughput_tokens_per_s": s.replicas * c.throughput_per_replica_tokens_per_s if c.fits else nan,
                "memory_utilization": c.memory_utilization,
            }
            out.append(Deployment(model=d.model, gpu=d.gpu, pp=d.pp, quantization=d.quantization, cost_per_hour=self.cost_per_hour(i, s),
                                  metrics=metrics, kv_cache_dtype=d.kv_cache_dtype, **knobs.deployment_fields(s)))
        return tuple(out)


def open_loop_served_share(arrival_s: np.ndarray, finish_s: np.ndarray) -> float:
    """Share of an open-loop rate the replicas keep up with, from the trend of end-to-end latency (1.0 when they keep up).

    After a warm-up (the first :data:`DEMAND_WARMUP_SHARE` of arrivals), the E2E latency of
    completed requests is fitted against their arrival time. A stable system's latency does
    not trend; at rate / capacity = r > 1 the backlog, and with it every later request's
    latency, grows by about ``r - 1`` seconds per second of arrivals. So the slope ``b``
    gives capacity / rate = ``1 / (1 + b)`` (capped at 1). Unlike counting completions
    against arrivals, this is insensitive to the Poisson stream's bunching: stable plans
    score >= 0.97 even at 300 requests.
    """
    arrival = np.asarray(arrival_s, dtype=float)
    finish = np.asarray(finish_s, dtype=float)
    order = np.argsort(arrival, kind="stable")[int(arrival.size * DEMAND_WARMUP_SHARE):]
    arrival, finish = arrival[order], finish[order]
    done = np.isfinite(finish)
    if done.sum() < 3 or np.ptp(arrival[done]) <= 0:
        return 1.0 if done.all() and done.size else 0.0
    slope = float(np.polyfit(arrival[done], finish[done] - arrival[done], 1)[0])
    return 1.0 / (1.0 + max(slope, 0.0))


def _lengths(req: LlmRequirement, field: str) -> LengthDistribution:
    """The simulator's token-length distribution of one LLM's workload (the length keys of its problem-file block)."""
    w = req.workload
    spec = {k: getattr(w, k) for k in ("input_tokens", "output_tokens", "preset", "histogram", "trace") if getattr(w, k) is not None}
    return workload_from_spec(spec, field=field).lengths


def _demand_words(req: LlmRequirement) -> str:
    w = req.workload
    if w.request_rate_per_s is not None:
        return f"{w.request_rate_per_s:g} requests/s"
    if w.concurrent_users is not None:
        return f"{w.concurrent_users} concurrent users"
    return f"{w.requests} requests within {w.deadline_h:g} h"


def simulate_deployments(problem: Problem, deployments: tuple[Deployment, ...], *, num_requests: int = DEFAULT_NUM_REQUESTS,
                         seed: int = DEFAULT_SIMULATION_SEED, catalog: Catalog | None = None,
                         simulations: "SimulationMemo | None" = None) -> PlanEvaluation:
    """Simulate each deployment as it would run (its engine's default knobs) at its own workload, on one seeded stream.

    The same judge as a refinement trial: the plan's calibrated efficiency and SLO margins,
    latencies at each LLM's SLO percentile, the demand, memory and KV rejections as named
    constraints (<= 0 met). Deterministic under ``seed``; closed loops simulate at least
    :data:`CLOSED_LOOP_MIN_ROUNDS` requests per user. The LLMs' simulations are independent and
    run side by side (:func:`guide_opt.parallel.forked_map`; the same figures as one after another).
    ``simulations``: a memo shared by the plans of one problem (:data:`SimulationMemo`): each LLM
    deployed as in a plan simulated before is read from it, and what is simulated here is added.
    """
    evaluator = Evaluator(problem, tuple(deployments), num_requests, seed, catalog, simulations=simulations)
    evaluator.simulate_side_by_side(evaluator.incumbent_settings)
    return evaluator.evaluate(evaluator.incumbent_settings)


def simulate_plans(problem: Problem, plans: Sequence[tuple[Deployment, ...]], simulations: SimulationMemo, *,
                   num_requests: int = DEFAULT_NUM_REQUESTS, seed: int = DEFAULT_SIMULATION_SEED, catalog: Catalog | None = None) -> None:
    """Simulate into ``simulations`` each LLM deployment of ``plans`` it does not hold yet, all side by side.

    What :func:`simulate_deployments` of each plan would simulate, as one pool of LLM simulations
    (:func:`guide_opt.parallel.forked_map`): an LLM deployed alike in several plans is simulated once,
    and the new LLMs of one plan do not wait while the workers run another plan's. Each plan's
    :func:`simulate_deployments` with the same memo, requests, seed and catalog then reads its
    figures (the same figures: every simulation is seeded and independent of the others).
    """
    tasks = []
    for deployments in plans:
        evaluator = Evaluator(problem, tuple(deployments), num_requests, seed, catalog, simulations=simulations)
        tasks += [(evaluator, i, s) for i, s in enumerate(evaluator.incumbent_settings)]
    _simulate_missing(tasks, seed)


def _simulate_missing(tasks: list[tuple[Evaluator, int, EngineSettings]], seed: int) -> None:
    """Run :meth:`Evaluator.simulate_llm` of each (evaluator, LLM, settings) whose simulation the evaluators' shared memo
    lacks, each distinct simulation once, side by side, and remember the results."""
    runs: dict[tuple, tuple[Evaluator, int, EngineSettings]] = {}
    for evaluator, i, s in tasks:
        if (i, s, seed) not in evaluator.cache and (key := evaluator._shared_key((i, s, seed))) not in evaluator.shared:
            runs.setdefault(key, (evaluator, i, s))
    if not runs:
        return
    from guide_opt.parallel import forked_map  # a single run stays in this process

    found = forked_map(lambda task: task[0].simulate_llm(task[1], task[2], seed), list(runs.values()))
    for (evaluator, i, s), metrics in zip(runs.values(), found):
        evaluator._remember((i, s, seed), metrics)
