"""Optuna refinement of a solver's incumbent against the serving simulator.

The CP-SAT solver optimizes the *static* performance model exactly; the discrete-event
simulator (:func:`guide_opt.simulate.simulate`) is the truer, nonlinear objective (queueing,
continuous batching, chunked prefill, paged-KV preemption). :func:`refine_solution` starts an
Optuna study at the incumbent and searches its neighbourhood with the simulator as judge.

The package, one job per module (each imports only the modules listed before it):

- :mod:`~guide_opt.refine.knobs` -- the knob table :data:`KNOBS`: per LLM the serving engine
  (among ``problem.frameworks``), TP (the incumbent's and the neighbouring degrees of
  ``search.tp`` that divide the heads and fit a node), replicas (incumbent +-2, >= 1),
  max-num-seqs (the incumbent's batch and two steps either way on ``search.batch_sizes``),
  max-num-batched-tokens (the chunk / step token budget) and gpu-memory-utilization
  (0.80-0.95, widened to include the engines' own defaults); :class:`EngineSettings` has a
  field per entry. GPU type, PP, quantization and KV dtype stay the incumbent's.
- :mod:`~guide_opt.refine.evaluate` -- a plan simulated at its workload: :class:`SimulatedMetrics`
  per LLM, the named constraints (SLO latencies at their percentile, demand, memory, KV
  rejections, budget, GPU count, inventory) and the objective, :func:`simulate_deployments`.
- :mod:`~guide_opt.refine.study` -- the Optuna study: storage (in memory, SQLite, PostgreSQL
  with heartbeats), fingerprint, warm start, trials.
- :mod:`~guide_opt.refine.select` -- the refined plan vs the incumbent.
- :mod:`~guide_opt.refine.report` -- :class:`Refinement`, the report as data
  (:meth:`Refinement.to_json`); the text is rendered by :mod:`guide_opt.cli.refine_output`.
- :mod:`~guide_opt.refine.refiner` -- :func:`refine_solution`, the steps in turn.

One worker of a study shared through an RDB storage (scale-out) is
:func:`guide_opt.solvers.optuna_solver.run_worker`: it solves first, and solvers sit above
refinement.

Objectives: ``min_cost`` minimizes $/h (ties: lower mean end-to-end latency);
``max_throughput`` maximizes simulated output tokens/s of all LLMs under a saturating closed
loop (replicas x max-num-seqs users), the simulated counterpart of the static model's
full-batch throughput (ties: cheaper); ``min_latency`` minimizes the summed mean end-to-end
latency (ms) of the LLMs under their own workloads (ties: cheaper). Every objective is
subject to all named constraints.

Every trial sees the same simulated stream (common random numbers); a plan feasible on it is
simulated again on independent *confirmation* streams and its constraints are the worst over
all, so the search cannot settle on a plan that was merely lucky with one stream. In memory
with ``n_jobs=1`` the whole run is deterministic under the seed.

The incumbent is simulated first (and enqueued as trial 0); the refined plan is never worse
than a simulator-feasible incumbent. When the incumbent itself misses a simulated
constraint, the report says so -- the static model was optimistic -- and the best feasible
trial, if any, is returned even when it costs more.
"""

import importlib
from typing import TYPE_CHECKING

#: Where each public name lives. The package loads its modules on first use (PEP 562): a plan
#: checked by simulation needs :mod:`~guide_opt.refine.evaluate` only, and importing Optuna
#: (what :mod:`~guide_opt.refine.study` and the refiner need) would add ~0.2 s to every solve.
_EXPORTS = {
    "CLOSED_LOOP_MIN_ROUNDS": "evaluate", "DEFAULT_CONFIRMATIONS": "evaluate", "DEFAULT_NUM_REQUESTS": "evaluate",
    "DEFAULT_SIMULATION_SEED": "evaluate", "Evaluator": "evaluate", "PlanEvaluation": "evaluate",
    "SimulatedMetrics": "evaluate", "open_loop_served_share": "evaluate", "simulate_deployments": "evaluate",
    "simulate_plans": "evaluate",
    "KNOBS": "knobs", "EngineSettings": "knobs", "Knob": "knobs",
    "SUPPORTED_OBJECTIVES": "refiner", "refine_solution": "refiner",
    "Refinement": "report",
    "HEARTBEAT_ENV": "study", "HEARTBEAT_INTERVAL_S": "study", "heartbeat_interval_s": "study", "open_storage": "study",
    "redact_storage_url": "study",
}

if TYPE_CHECKING:
    from guide_opt.refine.evaluate import (
        CLOSED_LOOP_MIN_ROUNDS,
        DEFAULT_CONFIRMATIONS,
        DEFAULT_NUM_REQUESTS,
        DEFAULT_SIMULATION_SEED,
        Evaluator,
        PlanEvaluation,
        SimulatedMetrics,
        open_loop_served_share,
        simulate_deployments,
        simulate_plans,
    )
    from guide_opt.refine.knobs import KNOBS, EngineSettings, Knob
    from guide_opt.refine.refiner import SUPPORTED_OBJECTIVES, refine_solution
    from guide_opt.refine.report import Refinement
    from guide_opt.refine.study import HEARTBEAT_ENV, HEARTBEAT_INTERVAL_S, heartbeat_interval_s, open_storage, redact_storage_url


def __getattr__(name: str):
    """The public name ``name``, imported from its module on first use."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'guide_opt.refine' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"guide_opt.refine.{module}"), name)
    globals()[name] = value
    return value


__all__ = sorted(_EXPORTS)
