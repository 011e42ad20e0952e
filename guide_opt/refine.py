"""Optuna refinement of a solver's incumbent against the serving simulator.

The CP-SAT solver optimizes the *static* performance model exactly; the discrete-event
simulator (:func:`guide_opt.simulate.simulate`) is the truer, nonlinear objective (queueing,
continuous batching, chunked prefill, paged-KV preemption). :func:`refine_solution` starts an
Optuna study at the incumbent and searches its neighbourhood with the simulator as judge:

- :class:`EngineSettings` -- the knobs refined per LLM: serving engine (among
  ``problem.frameworks``), TP (the incumbent's and the neighbouring degrees of
  ``search.tp`` that divide the heads and fit a node), replicas (incumbent +-2, >= 1),
  max-num-seqs (the incumbent's batch and two steps either way on ``search.batch_sizes``),
  max-num-batched-tokens (the chunk / step token budget) and gpu-memory-utilization
  (0.80-0.95, widened to include the engines' own defaults). GPU type, PP, quantization and
  KV dtype stay the incumbent's.
- :class:`SimulatedMetrics` -- what one simulation of one LLM's deployment reports.
- Named constraints, one Optuna constraint each (``trial.set_constraint``; a value <= 0 is
  met): ``models[i].ttft_pXX_ms`` / ``models[i].tpot_pXX_ms`` at the SLO's percentile,
  ``models[i].demand``, ``models[i].memory``, ``models[i].rejected``, and the shared
  ``budget_per_hour``, ``max_gpus``, ``inventory.<gpu>``. Values are relative excesses
  (``p90 / limit - 1``), so Optuna's infeasibility score compares like with like.
- :class:`Refinement` -- the frozen report: incumbent vs refined side by side, what changed,
  trial counts; :meth:`Refinement.to_json` and :func:`print_refinement`.
- :func:`guide_opt.solvers.optuna_solver.run_worker` -- one worker of a study shared through an RDB storage (scale-out).

Objectives: ``min_cost`` minimizes $/h (ties: lower mean end-to-end latency);
``max_throughput`` maximizes simulated output tokens/s of all LLMs under a saturating closed
loop (replicas x max-num-seqs users), the simulated counterpart of the static model's
full-batch throughput (ties: cheaper); ``min_latency`` minimizes the summed mean end-to-end
latency (ms) of the LLMs under their own workloads (ties: cheaper). Every objective is
subject to all named constraints.

Simulated load: a ``request_rate_per_s`` workload runs open loop (Poisson) at that rate, a
``concurrent_users`` one as a closed loop of that many users, a batch job (``requests`` +
``deadline_h``) as a burst whose throughput projects the job's duration; max_throughput and
demand-free workloads run saturated. Demand is a constraint: the open loop must keep up with
the rate (:func:`open_loop_served_share`), the closed loop must hold every user in a batch
(replicas x max-num-seqs >= users) under the burst serving model -- under the steady-state model
users beyond the slots queue and the SLOs judge the wait --, the job must finish by its deadline.

Search: TPE (``optuna.samplers.TPESampler(seed=...)``), warm-started with ``enqueue_trial``:
the incumbent as trial 0, then its one-knob moves. Optuna 5 reads the constraints that each
trial sets with ``trial.set_constraint`` (the sampler's ``constraints_func`` is deprecated
there and is used only on Optuna < 5). ``study.optimize(..., catch=(Exception,))`` turns a
simulator failure into a failed trial. Every trial sees the same simulated stream (common
random numbers); a plan feasible on it is simulated again on independent *confirmation*
streams and its constraints are the worst over all, so the search cannot settle on a plan
that was merely lucky with one stream. In memory with ``n_jobs=1`` the whole run is
deterministic under the seed.

The incumbent is simulated first (and enqueued as trial 0); the refined plan is never worse
than a simulator-feasible incumbent. When the incumbent itself misses a simulated
constraint, the report says so -- the static model was optimistic -- and the best feasible
trial, if any, is returned even when it costs more.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import socket
import time
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import numpy as np
import optuna

from guide_opt.catalog import Catalog, load_catalog
from guide_opt.errors import InputError
from guide_opt.perf import ServingConfig
from guide_opt.plan import better
from guide_opt.prediction import calibrated_efficiency, slo_margins
from guide_opt.problem import LlmRequirement, Problem
from guide_opt.simulate import PRESETS, FixedLengths, Slo, Workload, simulate
from guide_opt.simulate.workload_spec import workload_from_spec
from guide_opt.simulate.workloads import LengthDistribution
from guide_opt.solution import Deployment, Solution
from guide_opt.space import empty_model_space, evaluate_candidate, make_shape, resolve_prices

#: Requests simulated per LLM per trial (the simulator's own default).
DEFAULT_NUM_REQUESTS = 1000
#: Seed of the simulated request stream; every trial sees the same stream (common random numbers).
DEFAULT_SIMULATION_SEED = 0
#: Objectives the refinement handles.
SUPPORTED_OBJECTIVES = ("min_cost", "max_throughput", "min_latency")
#: Replicas searched either side of the incumbent's.
REPLICA_RADIUS = 2
#: Closed loops simulate at least this many requests per user (``num_requests`` is raised when needed).
CLOSED_LOOP_MIN_ROUNDS = 4
#: Steps of ``search.batch_sizes`` searched either side of the incumbent's max-num-seqs.
BATCH_RADIUS_STEPS = 2
#: Steps of ``search.tp`` searched either side of the incumbent's TP.
TP_RADIUS_STEPS = 1
#: Per-step token budgets searched (plus every allowed engine's default).
TOKEN_BUDGETS = (512, 1024, 2048, 4096, 8192, 16384)
#: gpu-memory-utilization range searched (widened to include the engines' defaults).
MEMORY_FRACTION_RANGE = (0.80, 0.95)
#: gpu-memory-utilization grid step.
MEMORY_FRACTION_STEP = 0.01
#: Open loop: share of the arrivals skipped as warm-up before measuring the served share.
DEMAND_WARMUP_SHARE = 0.25
#: Open loop: the served share (:func:`open_loop_served_share`) must reach this. Below 1.0
#: because a finite stream makes a stable plan's estimate dip slightly (>= 0.97 seen at 300
#: requests); an overload of 5 % or more fails it, and its queueing also breaks a TTFT SLO.
OPEN_LOOP_SERVED_SHARE_MIN = 0.95
#: A simulated figure must improve by this much (relative) to replace the incumbent: the
#: simulated objective (throughput, latency), or for min_cost at equal cost the mean latency.
#: Smaller differences are within the simulator's sampling noise and would only churn the plan.
MIN_SIMULATED_GAIN = 0.01
#: Independent simulated streams on which a plan feasible on the search stream must also be
#: feasible (see :meth:`_Refiner.evaluate_confirmed`).
DEFAULT_CONFIRMATIONS = 2
#: Best-ranked feasible trial plans simulated again (memoised) and compared with the incumbent
#: before it is kept.
MAX_RECHECKED_PLANS = 10
#: Share of the trials spent on the incumbent's one-knob moves (:meth:`_Refiner.warm_starts`), enqueued after it.
WARM_START_SHARE = 1 / 3
#: Seconds between a running trial's heartbeats on a PostgreSQL / MySQL storage (a trial silent for
#: twice this is failed by the next worker that starts a trial); ``$GUIDE_OPT_HEARTBEAT_S`` overrides it.
HEARTBEAT_INTERVAL_S = 60
#: Environment variable overriding :data:`HEARTBEAT_INTERVAL_S` (whole seconds, at least 1).
HEARTBEAT_ENV = "GUIDE_OPT_HEARTBEAT_S"
#: Distinct failure messages kept in the report.
MAX_ERRORS_REPORTED = 5
#: Fallback objective value (ms) of a plan whose latency could not be measured.
UNMEASURED_LATENCY_MS = 1e9

_ATTR_FINGERPRINT = "guide_opt.fingerprint"
_ATTR_EVALUATION = "guide_opt.evaluation"
_ATTR_CONSTRAINTS = "guide_opt.constraints"
_ATTR_WORKER = "guide_opt.worker"
#: One id per refine_solution call, on every trial that call ran: a report counts its own trials even
#: when other workers of a shared study finish theirs at the same time.
_ATTR_RUN = "guide_opt.run"
_ATTR_ERROR = "guide_opt.error"
_ATTR_PRUNED = "guide_opt.pruned_reason"
_SETTINGS_FIELDS = ("framework", "tp", "replicas", "max_num_seqs", "max_num_batched_tokens", "gpu_memory_utilization")


# ---- records -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class EngineSettings:
    """The refined knobs of one LLM's deployment.

    framework: serving engine id. tp: tensor-parallel degree. replicas: identical replicas
    behind a least-loaded balancer. max_num_seqs: concurrent sequences per replica (the
    deployment's ``max_batch``). max_num_batched_tokens: token budget of one engine step (the
    chunked-prefill chunk size / SplitFuse budget; at least ``max_num_seqs``).
    gpu_memory_utilization: fraction of each GPU's memory the engine may use.
    """

    framework: str
    tp: int
    replicas: int
    max_num_seqs: int
    max_num_batched_tokens: int
    gpu_memory_utilization: float

    def to_json(self) -> dict[str, Any]:
        """The settings as a dict (engine flag names without dashes)."""
        return dataclasses.asdict(self)


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
        return {k: _finite(v) for k, v in dataclasses.asdict(self).items()}



@dataclass(frozen=True)
class PlanEvaluation:
    """One simulated plan: settings and metrics per LLM, named constraints, objective values.

    constraints: name -> relative excess (<= 0 met); the worst over the search and
    confirmation streams once confirmed. violations: the unmet ones in words. confirmed: None
    when the confirmation streams were not simulated (infeasible on the search stream, or no
    confirmation streams), else whether they all agreed.
    objective: the refinement objective ($/h, tokens/s or ms, see the module doc).
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


@dataclass(frozen=True)
class Refinement:
    """What :func:`refine_solution` found: incumbent vs refined plan under the simulator.

    incumbent / refined: the deployments (the refined ones carry the static model's metrics
    for their shape and batch, like any solver's). *_settings: the engine knobs per LLM.
    *_metrics: simulated metrics per LLM (None when the simulation failed).
    *_objective: the refinement objective ($/h, tokens/s or ms). *_cost_per_hour: $/h.
    *_feasible: every named constraint met in the simulator (None: could not be simulated).
    *_violations: the unmet constraints in words. changes: ``field: old -> new`` per changed
    knob. improved: the refined plan differs from the incumbent.
    trials_run: trials this call ran; trials_total / _complete / _failed / _pruned /
    _feasible: over the whole study (all workers). errors: distinct failure messages.
    notes: the verdict and caveats in words. seed: the sampler's seed. simulation_seed /
    confirmation_seeds: the search stream's and the confirmation streams' seeds. num_requests:
    requests per simulation. percentiles: each LLM's SLO percentile. wall_time_s: seconds
    this call took.
    """

    problem: str
    objective_name: str
    incumbent: tuple[Deployment, ...]
    refined: tuple[Deployment, ...]
    incumbent_settings: tuple[EngineSettings, ...]
    refined_settings: tuple[EngineSettings, ...]
    incumbent_metrics: tuple[SimulatedMetrics, ...] | None
    refined_metrics: tuple[SimulatedMetrics, ...] | None
    incumbent_objective: float | None
    refined_objective: float | None
    incumbent_cost_per_hour: float
    refined_cost_per_hour: float
    incumbent_feasible: bool | None
    refined_feasible: bool
    incumbent_violations: tuple[str, ...]
    refined_violations: tuple[str, ...]
    improved: bool
    changes: tuple[str, ...]
    trials_run: int
    trials_total: int
    trials_complete: int
    trials_failed: int
    trials_pruned: int
    trials_feasible: int
    best_trial_number: int | None
    errors: tuple[str, ...]
    notes: tuple[str, ...]
    seed: int
    simulation_seed: int
    confirmation_seeds: tuple[int, ...]
    num_requests: int
    study_name: str
    storage: str
    percentiles: tuple[int, ...]
    wall_time_s: float

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict: both plans side by side, what changed, trial counts, notes."""

        def side(deployments, settings, metrics, objective, cost, feasible, violations) -> dict:
            return {
                "objective": _finite(objective),
                "cost_per_hour": round(cost, 6),
                "simulator_feasible": feasible,
                "violations": list(violations),
                "deployments": [
                    {**d.to_json(), "engine": s.to_json(), "simulated": m.to_json() if m is not None else None}
                    for d, s, m in zip(deployments, settings, metrics or [None] * len(deployments))
                ],
            }

        return {
            "problem": self.problem,
            "objective_name": self.objective_name,
            "incumbent": side(self.incumbent, self.incumbent_settings, self.incumbent_metrics, self.incumbent_objective,
                              self.incumbent_cost_per_hour, self.incumbent_feasible, self.incumbent_violations),
            "refined": side(self.refined, self.refined_settings, self.refined_metrics, self.refined_objective,
                            self.refined_cost_per_hour, self.refined_feasible, self.refined_violations),
            "improved": self.improved,
            "changes": list(self.changes),
            "trials": {"run": self.trials_run, "total": self.trials_total, "complete": self.trials_complete, "failed": self.trials_failed,
                       "pruned": self.trials_pruned, "feasible": self.trials_feasible, "best_trial": self.best_trial_number},
            "errors": list(self.errors),
            "notes": list(self.notes),
            "seed": self.seed,
            "simulation_seed": self.simulation_seed,
            "confirmation_seeds": list(self.confirmation_seeds),
            "num_requests": self.num_requests,
            "slo_percentiles": list(self.percentiles),
            "study_name": self.study_name,
            "storage": self.storage,
            "wall_time_s": round(self.wall_time_s, 4),
        }


# ---- the refiner -------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Neighbourhood:
    """Choices searched for one LLM (all include the incumbent's value)."""

    frameworks: tuple[str, ...]
    tp: tuple[int, ...]
    replicas: tuple[int, int]
    max_num_seqs: tuple[int, ...]
    max_num_batched_tokens: tuple[int, ...]
    gpu_memory_utilization: tuple[float, float]


class _Refiner:
    """Holds the resolved problem, the incumbent's fixed choices and a simulation cache."""

    def __init__(self, problem: Problem, incumbent: tuple[Deployment, ...], num_requests: int, simulation_seed: int,
                 catalog: Catalog | None = None, confirmations: int = 0) -> None:
        self.problem = problem
        self.confirmation_seeds = tuple(simulation_seed + 1 + k for k in range(confirmations))
        self.catalog = catalog or load_catalog()
        self.incumbent = incumbent
        self.num_requests = num_requests
        self.simulation_seed = simulation_seed
        self.prices = resolve_prices(problem, self.catalog)
        self.llms = [self.catalog.llm(req.id, field=f"models[{i}].id") for i, req in enumerate(problem.models)]
        self.lengths = [_lengths(req, f"models[{i}].workload") for i, req in enumerate(problem.models)]
        self.mean_tokens = [req.workload.token_lengths() for req in problem.models]
        self.percentiles = tuple(req.slo.percentile for req in problem.models)
        # The plan's own SLO factors (calibration quantile x slo_margin): simulated latencies are
        # judged exactly as the planner judged its predictions.
        self.margins = tuple(slo_margins(problem, i) for i in range(len(problem.models)))
        self.cache: dict[tuple[int, EngineSettings, int], SimulatedMetrics] = {}
        self.incumbent_settings = tuple(self._incumbent_settings(d) for d in incumbent)
        self.neighbourhoods = tuple(self._neighbourhood(i, d, s) for i, (d, s) in enumerate(zip(incumbent, self.incumbent_settings)))

    # -- search space --
    def _incumbent_settings(self, d: Deployment) -> EngineSettings:
        fw = self.catalog.framework(d.framework)
        return EngineSettings(framework=d.framework, tp=d.tp, replicas=d.replicas, max_num_seqs=d.max_batch,
                              max_num_batched_tokens=max(fw.max_num_batched_tokens, d.max_batch),
                              gpu_memory_utilization=round(fw.gpu_memory_utilization, 2))

    def _neighbourhood(self, i: int, d: Deployment, s: EngineSettings) -> _Neighbourhood:
        search = self.problem.search
        tp_grid = sorted(set(search.tp) | {d.tp})
        k = tp_grid.index(d.tp)
        tps = tuple(t for t in tp_grid[max(0, k - TP_RADIUS_STEPS): k + TP_RADIUS_STEPS + 1]
                    if t == d.tp or self._config(i, dataclasses.replace(s, tp=t)).unsupported_reason() is None)
        batch_grid = sorted(set(search.batch_sizes) | {d.max_batch})
        k = batch_grid.index(d.max_batch)
        batches = tuple(batch_grid[max(0, k - BATCH_RADIUS_STEPS): k + BATCH_RADIUS_STEPS + 1])
        defaults = [self.catalog.framework(f, field=f"frameworks[{j}]") for j, f in enumerate(self.problem.frameworks)]
        budgets = sorted(set(TOKEN_BUDGETS) | {f.max_num_batched_tokens for f in defaults} | {s.max_num_batched_tokens})
        fractions = [round(f.gpu_memory_utilization, 2) for f in defaults] + [s.gpu_memory_utilization]
        frameworks = tuple(dict.fromkeys([*self.problem.frameworks, d.framework]))
        return _Neighbourhood(
            frameworks=frameworks, tp=tps,
            replicas=(max(1, d.replicas - REPLICA_RADIUS), max(d.replicas, min(d.replicas + REPLICA_RADIUS, search.max_replicas))),
            max_num_seqs=batches, max_num_batched_tokens=tuple(budgets),
            gpu_memory_utilization=(min(MEMORY_FRACTION_RANGE[0], *fractions), max(MEMORY_FRACTION_RANGE[1], *fractions)),
        )

    def params(self, settings: tuple[EngineSettings, ...]) -> dict[str, Any]:
        """Trial parameters (``models[i].<knob>``) of a plan, as enqueued."""
        return {f"models[{i}].{name}": getattr(s, name) for i, s in enumerate(settings) for name in _SETTINGS_FIELDS}

    def warm_starts(self) -> list[tuple[EngineSettings, ...]]:
        """The incumbent's one-knob moves, to enqueue after it: each changes one discrete knob of one LLM.

        Ordered so that a prefix covers every knob: the nearest alternative of each knob
        (max-num-seqs, max-num-batched-tokens, replicas, TP, engine) first, then the next
        nearest, and so on (nearness in log scale).
        """
        per_knob: list[list[tuple[EngineSettings, ...]]] = []
        for i, (s, n) in enumerate(zip(self.incumbent_settings, self.neighbourhoods)):
            replicas = range(n.replicas[0], n.replicas[1] + 1)
            for name, values in (("max_num_seqs", n.max_num_seqs), ("max_num_batched_tokens", n.max_num_batched_tokens),
                                 ("replicas", replicas), ("tp", n.tp), ("framework", n.frameworks)):
                current = getattr(s, name)
                others = [v for v in values if v != current]
                if name != "framework":
                    others.sort(key=lambda v: (abs(math.log(v / current)), v))
                moves = []
                for v in others:
                    changed = dataclasses.replace(s, **{name: v})  # the step budget is raised to max-num-seqs when the trial runs
                    moves.append(tuple(changed if j == i else o for j, o in enumerate(self.incumbent_settings)))
                per_knob.append(moves)
        out: list[tuple[EngineSettings, ...]] = []
        for rank in range(max((len(m) for m in per_knob), default=0)):
            out.extend(m[rank] for m in per_knob if rank < len(m))
        return list(dict.fromkeys(out))

    def suggest(self, trial: optuna.Trial, i: int) -> EngineSettings:
        """Sample one LLM's settings from its neighbourhood."""
        n = self.neighbourhoods[i]
        p = f"models[{i}]."
        framework = trial.suggest_categorical(p + "framework", n.frameworks)
        tp = trial.suggest_categorical(p + "tp", n.tp)
        replicas = trial.suggest_int(p + "replicas", *n.replicas)
        seqs = trial.suggest_categorical(p + "max_num_seqs", n.max_num_seqs)
        budget = trial.suggest_categorical(p + "max_num_batched_tokens", n.max_num_batched_tokens)
        fraction = trial.suggest_float(p + "gpu_memory_utilization", *n.gpu_memory_utilization, step=MEMORY_FRACTION_STEP)
        return EngineSettings(framework=framework, tp=tp, replicas=replicas, max_num_seqs=seqs,
                              max_num_batched_tokens=max(budget, seqs), gpu_memory_utilization=round(fraction, 2))

    def settings_from_params(self, params: dict[str, Any]) -> tuple[EngineSettings, ...]:
        """Inverse of :meth:`suggest` for a finished trial's parameters."""
        out = []
        for i in range(len(self.problem.models)):
            p = f"models[{i}]."
            seqs = int(params[p + "max_num_seqs"])
            out.append(EngineSettings(framework=params[p + "framework"], tp=int(params[p + "tp"]), replicas=int(params[p + "replicas"]),
                                      max_num_seqs=seqs, max_num_batched_tokens=max(int(params[p + "max_num_batched_tokens"]), seqs),
                                      gpu_memory_utilization=round(float(params[p + "gpu_memory_utilization"]), 2)))
        return tuple(out)

    # -- evaluation --
    def _config(self, i: int, s: EngineSettings) -> ServingConfig:
        d = self.incumbent[i]
        input_tokens, output_tokens = self.mean_tokens[i]
        return ServingConfig(llm=self.llms[i], gpu=self.catalog.gpu(d.gpu), framework=self.catalog.framework(s.framework),
                             quantization=self.catalog.quantization(d.quantization), tp=s.tp, pp=d.pp, batch=s.max_num_seqs,
                             input_tokens=input_tokens, output_tokens=output_tokens, kv_cache_dtype=d.kv_cache_dtype,
                             max_num_batched_tokens=s.max_num_batched_tokens, gpu_memory_utilization=s.gpu_memory_utilization,
                             efficiency=calibrated_efficiency(self.problem, d.gpu, s.framework))

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
        return self.problem.objective == "max_throughput" or no_demand

    def _workload(self, i: int, s: EngineSettings) -> Workload:
        w = self.problem.models[i].workload
        if self._saturating(i):
            return Workload.closed_loop(self.lengths[i], s.replicas * s.max_num_seqs)
        if w.request_rate_per_s is not None:
            return Workload.open_loop(self.lengths[i], w.request_rate_per_s)
        if w.concurrent_users is not None:
            return Workload.closed_loop(self.lengths[i], w.concurrent_users)
        return Workload.burst(self.lengths[i])

    def simulate_llm(self, i: int, s: EngineSettings, seed: int | None = None) -> SimulatedMetrics:
        """Simulate LLM ``i`` deployed with ``s`` on the stream of ``seed`` (default: the search stream); memoised."""
        seed = self.simulation_seed if seed is None else seed
        key = (i, s, seed)
        if key in self.cache:
            return self.cache[key]
        req = self.problem.models[i]
        workload = self._workload(i, s)
        slo = Slo(ttft_ms=req.slo.ttft_ms, tpot_ms=req.slo.tpot_ms) if (req.slo.ttft_ms or req.slo.tpot_ms) else None
        num_requests = self.num_requests
        if workload.arrival == "closed":  # enough requests for every user to send several, so the loop reaches steady state
            num_requests = max(num_requests, CLOSED_LOOP_MIN_ROUNDS * workload.concurrent_users)
        result = simulate(self._config(i, s), workload, max_num_seqs=s.max_num_seqs, max_num_batched_tokens=s.max_num_batched_tokens,
                          num_requests=num_requests, seed=seed, replicas=s.replicas, balancer="least_loaded", slo=slo)
        metrics = self._metrics(i, s, workload, result)
        self.cache[key] = metrics
        return metrics

    def _metrics(self, i: int, s: EngineSettings, workload: Workload, result) -> SimulatedMetrics:
        ms = {name: getattr(result, f"{name}_s").as_ms() for name in ("ttft", "tpot", "itl")}
        nan = math.nan
        pick = lambda name, q: nan if ms[name][q] is None else ms[name][q]  # noqa: E731
        e2e = result.e2e_s.mean_s * 1e3
        if workload.arrival == "poisson":
            arrival = f"Poisson {workload.request_rate_per_s:g} requests/s"
        elif workload.arrival == "closed":
            arrival = f"closed loop of {workload.concurrent_users} users"
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
            goodput_tokens_per_s=_finite(result.goodput.tokens_per_s) if result.goodput else None,
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

    def evaluate(self, settings: tuple[EngineSettings, ...], seed: int | None = None) -> PlanEvaluation:
        """Simulate every LLM of the plan on the stream of ``seed`` (default: the search stream) and score it."""
        metrics = tuple(self.simulate_llm(i, s, seed) for i, s in enumerate(settings))
        constraints: dict[str, float] = {}
        violations: list[str] = []
        for i, (req, s, m) in enumerate(zip(self.problem.models, settings, metrics)):
            self._llm_constraints(i, req, s, m, constraints, violations)
        self._shared_constraints(settings, constraints, violations)
        cost = math.fsum(m.cost_per_hour for m in metrics)
        latency = math.fsum(m.e2e_mean_ms if math.isfinite(m.e2e_mean_ms) else UNMEASURED_LATENCY_MS for m in metrics)
        objective = self.problem.objective
        if objective == "min_cost":
            value, secondary = cost, latency
        elif objective == "max_throughput":
            value, secondary = math.fsum(m.throughput_tokens_per_s if math.isfinite(m.throughput_tokens_per_s) else 0.0 for m in metrics), cost
        else:
            value, secondary = latency, cost
        return PlanEvaluation(settings, metrics, constraints, tuple(violations), value, secondary, cost)

    def _llm_constraints(self, i: int, req: LlmRequirement, s: EngineSettings, m: SimulatedMetrics,
                         constraints: dict[str, float], violations: list[str]) -> None:
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

    def deployments(self, settings: tuple[EngineSettings, ...]) -> tuple[Deployment, ...]:
        """Deployments of a plan with the static model's metrics for each shape and batch (as :func:`~guide_opt.verify.verify` recomputes them)."""
        out = []
        for i, (req, s) in enumerate(zip(self.problem.models, settings)):
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
            out.append(Deployment(model=d.model, gpu=d.gpu, tp=s.tp, pp=d.pp, replicas=s.replicas, framework=s.framework,
                                  quantization=d.quantization, max_batch=s.max_num_seqs, cost_per_hour=self.cost_per_hour(i, s),
                                  metrics=metrics, kv_cache_dtype=d.kv_cache_dtype))
        return tuple(out)

    def fingerprint(self) -> str:
        """Hash of everything that makes two trials comparable: problem, incumbent neighbourhood, simulated stream."""
        payload = {"version": 1, "problem": self.problem.model_dump(mode="json"),
                   "incumbent": [[d.gpu, d.pp, d.quantization, d.kv_cache_dtype, s.to_json()] for d, s in zip(self.incumbent, self.incumbent_settings)],
                   "num_requests": self.num_requests, "simulation_seed": self.simulation_seed}
        return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


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
    """The simulator's token-length distribution of one LLM's workload."""
    w = req.workload
    if w.input_tokens is not None and w.output_tokens is not None:
        return FixedLengths(w.input_tokens, w.output_tokens)
    if w.preset is not None and w.preset in PRESETS:
        return PRESETS[w.preset]
    spec = {k: v for k, v in (("preset", w.preset), ("histogram", w.histogram), ("trace", w.trace)) if v is not None}
    return workload_from_spec(spec, field=field).lengths


def _demand_words(req: LlmRequirement) -> str:
    w = req.workload
    if w.request_rate_per_s is not None:
        return f"{w.request_rate_per_s:g} requests/s"
    if w.concurrent_users is not None:
        return f"{w.concurrent_users} concurrent users"
    return f"{w.requests} requests within {w.deadline_h:g} h"


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# ---- storage -----------------------------------------------------------------------------------
def redact_storage_url(storage: Any) -> str:
    """A storage URL safe to print (password hidden); ``in-memory`` for None."""
    if storage is None:
        return "in-memory"
    if isinstance(storage, optuna.storages.BaseStorage):
        return type(storage).__name__
    try:
        from sqlalchemy.engine import make_url

        return make_url(str(storage)).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 -- a URL SQLAlchemy cannot parse is reported as given, minus credentials
        text = str(storage)
        return text.split("@", 1)[-1] if "@" in text else text


def open_storage(storage: "str | optuna.storages.BaseStorage | None") -> optuna.storages.BaseStorage:
    """Optuna storage for ``storage``: in memory for None, an RDB storage for an ``sqlite:///`` or ``postgresql://`` URL.

    SQLite connections wait up to 60 s on a locked database and take the write lock at the
    start of each transaction (:func:`_serialize_sqlite_transactions`), so several local
    processes can share one file safely. Raises :class:`InputError` for an unsupported or unreachable URL.
    """
    if storage is None:
        return optuna.storages.InMemoryStorage()
    if isinstance(storage, optuna.storages.BaseStorage):
        return storage
    url = str(storage)
    scheme = url.split(":", 1)[0].split("+", 1)[0].lower()
    if scheme not in ("sqlite", "postgresql", "postgres", "mysql"):
        raise InputError("--storage", f"unsupported storage URL '{redact_storage_url(url)}'",
                         "use sqlite:///path/to/study.db or postgresql://user:password@host:5432/dbname")
    if scheme == "sqlite" and url.split("://", 1)[-1].strip("/") in ("", ":memory:"):
        # an in-memory SQLite database lives per connection: the study's tables vanish between transactions
        raise InputError("--storage", f"'{url}' names no database file", "use sqlite:///path/to/study.db, or leave --storage out for in-memory")
    if url.split(":", 1)[0].lower() in ("postgres", "postgresql"):
        # No driver named: psycopg 3 (the `postgres` extra), whatever SQLAlchemy's own default is.
        url = "postgresql+psycopg" + url[url.index(":"):]
    # SQLite: pysqlite's own BEGIN is switched off (isolation_level None) so that every
    # transaction can start with BEGIN IMMEDIATE, below.
    engine_kwargs = {"connect_args": {"timeout": 60, "isolation_level": None}} if scheme == "sqlite" else {"pool_pre_ping": True}
    # Server databases serve several machines: a heartbeat lets Optuna mark the trials of a
    # machine that died as FAIL instead of leaving them RUNNING forever.
    interval_s = heartbeat_interval_s()
    heartbeat = {} if scheme == "sqlite" else {"heartbeat_interval": interval_s, "grace_period": 2 * interval_s}
    try:
        with warnings.catch_warnings():  # heartbeat_interval is marked experimental in Optuna 5
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            rdb = optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, **heartbeat)
        if scheme == "sqlite":
            _serialize_sqlite_transactions(rdb.engine)
        return rdb
    except ModuleNotFoundError as exc:
        raise InputError("--storage", f"the database driver for '{scheme}' is not installed ({exc.name})",
                         "pip install 'guide-opt[postgres]' (PostgreSQL) or use sqlite:///study.db") from None
    except Exception as exc:  # noqa: BLE001 -- any connection failure is the user's URL or server
        raise InputError("--storage", f"cannot open '{redact_storage_url(url)}' ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})",
                         "check the URL, that the database exists and that this machine can reach it") from None


def heartbeat_interval_s() -> int:
    """Seconds between heartbeats of a running trial on a server database: ``$GUIDE_OPT_HEARTBEAT_S`` or :data:`HEARTBEAT_INTERVAL_S`."""
    value = os.environ.get(HEARTBEAT_ENV)
    if value is None:
        return HEARTBEAT_INTERVAL_S
    if not value.isdigit() or int(value) < 1:
        raise InputError(HEARTBEAT_ENV, f"'{value}' is not a whole number of seconds >= 1", f"unset {HEARTBEAT_ENV} or set it to e.g. 60")
    return int(value)


def _serialize_sqlite_transactions(engine) -> None:
    """Start every SQLite transaction with ``BEGIN IMMEDIATE`` (SQLAlchemy's pysqlite recipe).

    Optuna pops an enqueued (WAITING) trial by reading its state and writing RUNNING under
    ``SELECT ... FOR UPDATE``, which SQLite ignores: two processes can both read WAITING and
    both run the same trial (optuna/optuna#4621). Taking SQLite's write lock at the start of
    each transaction serializes those read-then-write steps across processes; PostgreSQL
    needs nothing, its row locks already do this.
    """
    from sqlalchemy import event

    event.listen(engine, "begin", lambda connection: connection.exec_driver_sql("BEGIN IMMEDIATE"))
    engine.dispose()  # connections opened while the storage set itself up start afresh


# ---- public API --------------------------------------------------------------------------------
def simulate_deployments(problem: Problem, deployments: tuple[Deployment, ...], *, num_requests: int = DEFAULT_NUM_REQUESTS,
                         seed: int = DEFAULT_SIMULATION_SEED, catalog: Catalog | None = None) -> PlanEvaluation:
    """Simulate each deployment as it would run (its engine's default knobs) at its own workload, on one seeded stream.

    The same judge as a refinement trial: the plan's calibrated efficiency and SLO margins,
    latencies at each LLM's SLO percentile, the demand, memory and KV rejections as named
    constraints (<= 0 met). Deterministic under ``seed``; closed loops simulate at least
    :data:`CLOSED_LOOP_MIN_ROUNDS` requests per user.
    """
    refiner = _Refiner(problem, tuple(deployments), num_requests, seed, catalog)
    return refiner.evaluate(refiner.incumbent_settings)


def refine_solution(problem: Problem, solution: Solution, *, trials: int, seed: int = 0,
                    storage: "str | optuna.storages.BaseStorage | None" = None, study_name: str | None = None, progress: bool = False,
                    num_requests: int = DEFAULT_NUM_REQUESTS, simulation_seed: int = DEFAULT_SIMULATION_SEED,
                    timeout_s: float | None = None, confirmations: int = DEFAULT_CONFIRMATIONS, catalog: Catalog | None = None) -> Refinement:
    """Refine ``solution``'s deployments with Optuna, judged by the serving simulator.

    trials: trials this call runs (0 only creates the study and enqueues the incumbent).
    seed: the TPE sampler's seed (with a shared storage, the sampler seed is ``seed`` plus
        the trials already in the study, and each machine should still get its own seed).
    storage: None (in memory, deterministic under ``seed``), an Optuna storage object, or an
        RDB URL (``sqlite:///refine.db``, ``postgresql://user:pw@host/db``) shared by workers.
    study_name: with a storage, workers sharing this name share trials; default
        ``guide-opt-refine-<hash>`` of the problem, incumbent and simulated stream.
    progress: Optuna's progress bar on the terminal.
    num_requests: requests simulated per LLM per trial (closed loops: at least
        :data:`CLOSED_LOOP_MIN_ROUNDS` per user). simulation_seed: the search stream's seed.
    timeout_s: stop starting trials after this many seconds (None: run all ``trials``).
    confirmations: independent streams (simulation seeds ``simulation_seed + 1 ...``) on
        which every plan that is feasible on the search stream must also meet every
        constraint, so that the search cannot pick a plan that was only lucky with one stream.

    Raises :class:`InputError` when the solution holds no deployment, the objective is not
    one of :data:`SUPPORTED_OBJECTIVES`, or the named study holds another problem's trials.
    A simulator failure inside a trial is recorded as a failed trial, never raised.
    """
    started = time.perf_counter()
    if problem.objective not in SUPPORTED_OBJECTIVES or problem.is_schedule:
        raise InputError("objective", f"refinement handles {', '.join(SUPPORTED_OBJECTIVES)} steady deployments, not '{problem.objective}'"
                         + (" schedules" if problem.is_schedule else ""), "solve without --refine")
    if not solution.status.found or len(solution.deployments) != len(problem.models):
        raise InputError("--refine", f"nothing to refine: the solver returned {solution.status.value} without a deployment per LLM",
                         "relax the problem until it has a solution, then refine it")
    if trials < 0 or num_requests < 1:
        raise InputError("--trials", "trials must be >= 0 and num_requests >= 1", "give a non-negative number of trials")
    refiner = _Refiner(problem, tuple(solution.deployments), num_requests, simulation_seed, catalog, confirmations)
    fingerprint = refiner.fingerprint()
    study_name = study_name or f"guide-opt-refine-{fingerprint[:12]}"
    direction = "maximize" if problem.objective == "max_throughput" else "minimize"
    notes: list[str] = []

    # The incumbent first, outside the study: its simulated figures are the baseline.
    incumbent_eval: PlanEvaluation | None = None
    incumbent_error: str | None = None
    try:
        incumbent_eval = refiner.evaluate_confirmed(refiner.incumbent_settings)
    except Exception as exc:  # noqa: BLE001 -- a simulator failure is reported, not raised
        incumbent_error = f"{type(exc).__name__}: {exc}"

    study_storage = open_storage(storage)
    previous_verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = _open_study(study_storage, study_name, direction, fingerprint, seed, trials)
        study.enqueue_trial(refiner.params(refiner.incumbent_settings), user_attrs={"guide_opt.incumbent": True}, skip_if_exists=True)
        for plan in refiner.warm_starts()[:int(trials * WARM_START_SHARE)]:
            study.enqueue_trial(refiner.params(plan), user_attrs={"guide_opt.warm_start": True}, skip_if_exists=True)
        run_id = uuid.uuid4().hex
        if trials > 0:
            study.optimize(_objective(refiner, run_id), n_trials=trials, timeout=timeout_s, n_jobs=1, catch=(Exception,),
                           show_progress_bar=progress)
        all_trials = study.get_trials(deepcopy=False)
    finally:
        optuna.logging.set_verbosity(previous_verbosity)

    states = optuna.trial.TrialState
    finished = [t for t in all_trials if t.state in (states.COMPLETE, states.FAIL, states.PRUNED)]
    run_now = [t for t in finished if t.user_attrs.get(_ATTR_RUN) == run_id]
    complete = [t for t in finished if t.state == states.COMPLETE]
    feasible = [t for t in complete if t.value is not None and math.isfinite(t.value) and all(v <= 0 for v in _trial_constraints(t).values())]
    errors = tuple(dict.fromkeys(t.user_attrs.get(_ATTR_ERROR, "unknown error") for t in finished if t.state == states.FAIL))[:MAX_ERRORS_REPORTED]

    inc = incumbent_eval
    chosen, best_number = inc, None
    for number, settings in _ranked_plans(refiner, feasible, direction)[:MAX_RECHECKED_PLANS]:
        if settings == refiner.incumbent_settings:
            continue
        candidate = _reevaluate(refiner, number, settings, notes)
        if candidate is None or not candidate.feasible:
            continue
        if inc is None or not inc.feasible or _beats(problem.objective, candidate, inc):
            chosen, best_number = candidate, number
            break
    if chosen is not None and chosen is not inc:
        chosen = _simplify(refiner, problem.objective, chosen, inc, notes)
    if inc is not None and chosen is inc and inc.feasible:
        best_number = next((t.number for t in feasible if refiner.settings_from_params(t.params) == refiner.incumbent_settings), None)
    rejected = sum(1 for t in complete if t.user_attrs.get(_ATTR_EVALUATION, {}).get("confirmed") is False)
    if rejected:
        notes.append(f"{rejected} trial(s) met every constraint on the search stream but not on the confirmation streams "
                     f"(simulation seeds {', '.join(map(str, refiner.confirmation_seeds))}) and count as infeasible")

    refined_settings = chosen.settings if chosen is not None else refiner.incumbent_settings
    refined_feasible = bool(chosen is not None and chosen.feasible)
    improved = refined_settings != refiner.incumbent_settings
    changes = _changes(refiner.incumbent_settings, refined_settings)
    _verdict(notes, problem, inc, incumbent_error, chosen, improved, len(run_now), len(feasible))

    return Refinement(
        problem=problem.name, objective_name=problem.objective,
        incumbent=refiner.incumbent, refined=refiner.deployments(refined_settings),
        incumbent_settings=refiner.incumbent_settings, refined_settings=refined_settings,
        incumbent_metrics=inc.metrics if inc else None,
        refined_metrics=chosen.metrics if chosen else None,
        incumbent_objective=inc.objective if inc else None,
        refined_objective=chosen.objective if chosen else None,
        incumbent_cost_per_hour=math.fsum(refiner.cost_per_hour(i, s) for i, s in enumerate(refiner.incumbent_settings)),
        refined_cost_per_hour=math.fsum(refiner.cost_per_hour(i, s) for i, s in enumerate(refined_settings)),
        incumbent_feasible=inc.feasible if inc else None, refined_feasible=refined_feasible,
        incumbent_violations=inc.violations if inc else (f"simulation failed: {incumbent_error}",),
        refined_violations=chosen.violations if chosen else (f"simulation failed: {incumbent_error}",),
        improved=improved, changes=changes,
        trials_run=len(run_now), trials_total=len(finished), trials_complete=len(complete),
        trials_failed=sum(t.state == states.FAIL for t in finished), trials_pruned=sum(t.state == states.PRUNED for t in finished),
        trials_feasible=len(feasible), best_trial_number=best_number, errors=errors, notes=tuple(notes),
        seed=seed, simulation_seed=simulation_seed, confirmation_seeds=refiner.confirmation_seeds, num_requests=num_requests,
        study_name=study_name,
        storage=redact_storage_url(storage), percentiles=refiner.percentiles, wall_time_s=time.perf_counter() - started,
    )


# ---- study helpers -----------------------------------------------------------------------------
def _open_study(storage: optuna.storages.BaseStorage, study_name: str, direction: str, fingerprint: str, seed: int,
                trials: int) -> optuna.Study:
    """Create or load the study, check it holds this problem's trials, and seed its TPE sampler."""
    study = optuna.create_study(storage=storage, study_name=study_name, direction=direction, load_if_exists=True)
    if study.direction.name.lower() != direction:
        raise InputError("--study-name", f"study '{study_name}' was created to {study.direction.name.lower()}, this refinement must {direction}",
                         "use another --study-name, or create the study with the matching --direction")
    stored = study.user_attrs.get(_ATTR_FINGERPRINT)
    if stored is None:
        study.set_user_attr(_ATTR_FINGERPRINT, fingerprint)
        stored = study.user_attrs.get(_ATTR_FINGERPRINT, fingerprint)
    if stored != fingerprint:
        raise InputError("--study-name", f"study '{study_name}' holds trials of another problem, incumbent, num_requests or simulation seed",
                         "give every worker the same problem file and settings, or use a new --study-name")
    existing = len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL,
                                                               optuna.trial.TrialState.PRUNED)))
    startup = max(3, min(10, trials // 3)) if trials else 10
    sampler_kwargs: dict[str, Any] = {"seed": seed + existing, "n_startup_trials": startup}
    if not hasattr(optuna.trial.Trial, "set_constraint"):  # Optuna < 5: named constraints travel as user attributes
        sampler_kwargs["constraints_func"] = lambda t: list(t.user_attrs.get(_ATTR_CONSTRAINTS, {}).values())
    study.sampler = optuna.samplers.TPESampler(**sampler_kwargs)
    return study


def _objective(refiner: _Refiner, run_id: str):
    worker = f"{socket.gethostname()}:{os.getpid()}"

    def objective(trial: optuna.Trial) -> float:
        trial.set_user_attr(_ATTR_WORKER, worker)
        trial.set_user_attr(_ATTR_RUN, run_id)
        settings = tuple(refiner.suggest(trial, i) for i in range(len(refiner.problem.models)))
        reason = refiner.unsupported(settings)
        if reason:
            trial.set_user_attr(_ATTR_PRUNED, reason)
            raise optuna.TrialPruned(reason)
        try:
            evaluation = refiner.evaluate_confirmed(settings)
        except Exception as exc:
            trial.set_user_attr(_ATTR_ERROR, f"{type(exc).__name__}: {exc}")
            raise
        if hasattr(trial, "set_constraint"):
            for name, value in evaluation.constraints.items():
                trial.set_constraint(name, value)
        trial.set_user_attr(_ATTR_CONSTRAINTS, evaluation.constraints)
        trial.set_user_attr(_ATTR_EVALUATION, {"feasible": evaluation.feasible, "confirmed": evaluation.confirmed,
                                               "secondary": _finite(evaluation.secondary),
                                               "cost_per_hour": evaluation.cost_per_hour, "violations": list(evaluation.violations),
                                               "metrics": [m.to_json() for m in evaluation.metrics]})
        return evaluation.objective

    return objective


def _trial_constraints(trial: optuna.trial.FrozenTrial) -> dict[str, float]:
    return dict(trial.constraints) if trial.constraints else dict(trial.user_attrs.get(_ATTR_CONSTRAINTS, {}))


def _ranked_plans(refiner: _Refiner, feasible: list[optuna.trial.FrozenTrial], direction: str) -> list[tuple[int, tuple[EngineSettings, ...]]]:
    """Distinct plans of the feasible trials, best first: objective, then the secondary key, then the earliest trial."""
    sign = -1.0 if direction == "maximize" else 1.0

    def key(t: optuna.trial.FrozenTrial):
        secondary = t.user_attrs.get(_ATTR_EVALUATION, {}).get("secondary")
        return (sign * t.value, secondary if secondary is not None else math.inf, t.number)

    out: dict[tuple[EngineSettings, ...], int] = {}
    for t in sorted(feasible, key=key):
        out.setdefault(refiner.settings_from_params(t.params), t.number)
    return [(number, settings) for settings, number in out.items()]


def _reevaluate(refiner: _Refiner, number: int, settings: tuple[EngineSettings, ...], notes: list[str]) -> PlanEvaluation | None:
    """Simulate a trial's plan again here (deterministic and memoised; gives the figures reported for it)."""
    try:
        return refiner.evaluate_confirmed(settings)
    except Exception as exc:  # noqa: BLE001
        notes.append(f"trial {number} could not be simulated again ({type(exc).__name__}: {exc}); skipped")
        return None


def _beats(objective: str, a: PlanEvaluation, b: PlanEvaluation) -> bool:
    """True when plan ``a`` is clearly better than ``b``.

    min_cost: cheaper, or as cheap with a mean latency at least :data:`MIN_SIMULATED_GAIN`
    lower. Simulated objectives (throughput, latency) carry the simulator's sampling noise,
    so ``a`` must be better by at least :data:`MIN_SIMULATED_GAIN` (relative), or within it
    and cheaper.
    """
    if objective == "min_cost":
        if better(objective, a.objective, b.objective):
            return True
        if better(objective, b.objective, a.objective):
            return False
        return a.secondary < b.secondary * (1.0 - MIN_SIMULATED_GAIN)
    if better(objective, a.objective, b.objective, tolerance=MIN_SIMULATED_GAIN):
        return True
    if better(objective, b.objective, a.objective, tolerance=MIN_SIMULATED_GAIN):
        return False
    return a.secondary < b.secondary - 1e-9


def _simplify(refiner: _Refiner, objective: str, best: PlanEvaluation, inc: PlanEvaluation | None, notes: list[str]) -> PlanEvaluation:
    """Revert the winner's incidental changes: knob by knob, back to the incumbent's value while nothing is lost.

    A revert is kept when the plan stays feasible (on every stream), still beats the
    incumbent (if that is feasible), its objective is not worse than ``best``'s and its
    secondary key is within :data:`MIN_SIMULATED_GAIN` of ``best``'s. So the reported changes
    are the ones that matter, not the sampler's random walk in knobs that do not.
    """
    current = best
    reverted = []
    for i, (old, new) in enumerate(zip(refiner.incumbent_settings, best.settings)):
        for name in _SETTINGS_FIELDS:
            if getattr(old, name) == getattr(current.settings[i], name):
                continue
            changed = dataclasses.replace(current.settings[i], **{name: getattr(old, name)})
            changed = dataclasses.replace(changed, max_num_batched_tokens=max(changed.max_num_batched_tokens, changed.max_num_seqs))
            plan = tuple(changed if j == i else s for j, s in enumerate(current.settings))
            if refiner.unsupported(plan):
                continue
            try:
                candidate = refiner.evaluate_confirmed(plan)
            except Exception:  # noqa: BLE001 -- keep the change when the revert cannot be simulated
                continue
            tolerance = 1e-9 if objective == "min_cost" else MIN_SIMULATED_GAIN
            if (candidate.feasible and not better(objective, best.objective, candidate.objective, tolerance=tolerance)
                    and candidate.secondary <= best.secondary * (1.0 + MIN_SIMULATED_GAIN)
                    and (inc is None or not inc.feasible or _beats(objective, candidate, inc))):
                current = candidate
                reverted.append(f"{'models[%d].' % i if len(best.settings) > 1 else ''}{name}")
    if reverted:
        notes.append(f"kept at the incumbent's value because changing them gained less than {MIN_SIMULATED_GAIN:.0%}: {', '.join(reverted)}")
    return current


def _changes(old: tuple[EngineSettings, ...], new: tuple[EngineSettings, ...]) -> tuple[str, ...]:
    out = []
    for i, (a, b) in enumerate(zip(old, new)):
        prefix = f"models[{i}]." if len(old) > 1 else ""
        for name in _SETTINGS_FIELDS:
            x, y = getattr(a, name), getattr(b, name)
            if x != y:
                out.append(f"{prefix}{name}: {x:.2f} -> {y:.2f}" if isinstance(x, float) else f"{prefix}{name}: {x} -> {y}")
    return tuple(out)


_OBJECTIVE_WORDS = {"min_cost": ("cost", "$/h"), "max_throughput": ("simulated throughput", "tokens/s"),
                    "min_latency": ("simulated mean latency", "ms")}


def _verdict(notes: list[str], problem: Problem, inc: PlanEvaluation | None, inc_error: str | None, chosen: PlanEvaluation | None,
             improved: bool, run: int, feasible: int) -> None:
    """The report's verdict in words (appended to ``notes``)."""
    what, unit = _OBJECTIVE_WORDS[problem.objective]
    if inc is None:
        notes.append(f"the incumbent could not be simulated ({inc_error}); it is not vouched for by the simulator")
    elif not inc.feasible:
        notes.append("the static model was optimistic: under the simulator the CP-SAT incumbent misses "
                     + "; ".join(inc.violations))
    if chosen is None or not chosen.feasible:
        notes.append(f"no simulator-feasible plan was found in {run} trials ({feasible} feasible in the study); the incumbent is returned "
                     "unchanged and does NOT meet every simulated constraint -- run more trials, allow other GPUs or relax the SLOs")
        return
    if not improved:
        notes.append(f"the incumbent is simulator-feasible and no trial beat it ({run} trials run); it is kept")
        return
    if inc is not None and inc.feasible:
        delta = chosen.objective - inc.objective
        rel = abs(delta) / max(abs(inc.objective), 1e-9)
        if abs(delta) > 1e-9 * max(1.0, abs(inc.objective)):
            notes.append(f"refinement improves the {what} from {inc.objective:,.2f} to {chosen.objective:,.2f} {unit} ({rel:.1%}), "
                         "simulator-checked")
        else:
            value = f"${chosen.objective:,.2f}/h" if problem.objective == "min_cost" else f"{chosen.objective:,.2f} {unit}"
            notes.append(f"same {what} ({value}); the refined plan wins the tie-break "
                         f"({'lower mean latency' if problem.objective == 'min_cost' else 'lower cost'})")
    else:
        cost_delta = chosen.cost_per_hour - (math.fsum(m.cost_per_hour for m in inc.metrics) if inc else chosen.cost_per_hour)
        versus = ("the same cost as the incumbent" if abs(cost_delta) < 1e-9 else
                  f"{'+' if cost_delta > 0 else '-'}${abs(cost_delta):,.2f}/h vs the incumbent")
        notes.append(f"refinement found a plan that meets every simulated constraint at ${chosen.cost_per_hour:,.2f}/h ({versus})")


# ---- text rendering ----------------------------------------------------------------------------
def _fmt(value: float | None, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.{digits}g}"


def _triple(m: SimulatedMetrics | None, metric: str) -> str:
    if m is None:
        return "-"
    return " / ".join(_fmt(m.latency_ms(metric, q)) for q in (50, 90, 99))


def print_refinement(refinement: Refinement) -> None:
    """Print the refinement as text: incumbent vs refined side by side per LLM, what changed, trials, verdict."""
    r = refinement
    click.echo(f"Refinement of '{r.problem}' ({r.objective_name}) with the serving simulator: {r.num_requests} requests per LLM, "
               f"simulation seed {r.simulation_seed}; Optuna TPE seed {r.seed}, study '{r.study_name}' ({r.storage})")
    click.echo(f"trials: {r.trials_run} run now; study total {r.trials_total} = {r.trials_complete} complete "
               f"({r.trials_feasible} feasible), {r.trials_failed} failed, {r.trials_pruned} pruned"
               + (f"; best is trial {r.best_trial_number}" if r.best_trial_number is not None else "") + f"; {r.wall_time_s:.1f} s")
    inc_metrics = r.incumbent_metrics or [None] * len(r.incumbent)
    ref_metrics = r.refined_metrics or [None] * len(r.refined)
    for i, (di, dr, si, sr, mi, mr) in enumerate(zip(r.incumbent, r.refined, r.incumbent_settings, r.refined_settings, inc_metrics, ref_metrics)):
        pct = r.percentiles[i]
        rows = [
            ("deployment", di.describe(), dr.describe()),
            ("max-num-batched-tokens", str(si.max_num_batched_tokens), str(sr.max_num_batched_tokens)),
            ("gpu-memory-utilization", f"{si.gpu_memory_utilization:.2f}", f"{sr.gpu_memory_utilization:.2f}"),
            ("simulated load", mi.arrival if mi else "-", mr.arrival if mr else "-"),
            ("TTFT p50/p90/p99 ms", _triple(mi, "ttft"), _triple(mr, "ttft")),
            ("TPOT p50/p90/p99 ms", _triple(mi, "tpot"), _triple(mr, "tpot")),
            ("ITL p50/p90/p99 ms", _triple(mi, "itl"), _triple(mr, "itl")),
            ("mean E2E ms", _fmt(mi.e2e_mean_ms) if mi else "-", _fmt(mr.e2e_mean_ms) if mr else "-"),
            ("throughput tokens/s", _fmt(mi.throughput_tokens_per_s) if mi else "-", _fmt(mr.throughput_tokens_per_s) if mr else "-"),
            ("goodput (both SLOs met)", _share(mi.goodput_fraction if mi else None), _share(mr.goodput_fraction if mr else None)),
            ("demand served", _share(mi.demand_served_share if mi else None), _share(mr.demand_served_share if mr else None)),
            ("cost $/h", f"{di.cost_per_hour:,.2f}", f"{dr.cost_per_hour:,.2f}"),
        ]
        click.echo("")
        click.echo(f"{di.model} (SLO percentile p{pct})")
        w0 = max(len(a) for a, _, _ in rows)
        w1 = max(len("incumbent (solver)"), *(len(b) for _, b, _ in rows))
        click.echo(f"  {'':{w0}}  {'incumbent (solver)':{w1}}  refined")
        for label, a, b in rows:
            click.echo(f"  {label:{w0}}  {a:{w1}}  {b}")
    click.echo("")
    click.echo(f"plan: incumbent ${r.incumbent_cost_per_hour:,.2f}/h, "
               f"{'meets' if r.incumbent_feasible else 'MISSES' if r.incumbent_feasible is False else 'not simulated:'} the simulated constraints"
               f"; refined ${r.refined_cost_per_hour:,.2f}/h, {'meets' if r.refined_feasible else 'MISSES'} them")
    for label, violations in (("incumbent", r.incumbent_violations), ("refined", r.refined_violations)):
        for v in violations:
            click.echo(f"  {label} violates {v}")
    click.echo("changes: " + ("; ".join(r.changes) if r.changes else "none"))
    for e in r.errors:
        click.echo(f"failed trial: {e}")
    for note in r.notes:
        click.echo(f"note: {note}")


def _share(value: float | None) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.1%}"
