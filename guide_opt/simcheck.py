"""Plans that hold: every returned deployment is simulated at its own workload before it is returned.

The static model chooses; the serving simulator (:func:`guide_opt.refine.simulate_deployments`,
the judge of refinement trials) checks. Each deployment of a plan is simulated as deployed
(its engine's default knobs) on one seeded stream of at least :data:`SIMULATION_REQUESTS` requests
(more where an SLO names a tail percentile: :func:`check_requests`),
with the plan's calibrated efficiency and SLO margins, and its TTFT / TPOT at the SLO's
percentile, the demand it keeps up with, memory and KV rejections are compared with the
problem. :class:`DeploymentCheck` is the verdict of one deployment; :func:`check_plan` gives
one per LLM.

What a failure means for planning (:meth:`DeploymentCheck.more_replicas_may_help`): a latency
or demand miss under a stated demand (a request rate or a user count) may vanish with more
replicas -- each replica then carries a smaller share of the load -- so the no-good is "this
candidate with at most this many replicas"; a memory or KV-rejection miss, or a miss under a
saturating load (``max_throughput``, or no demand), does not depend on the replica count, so
the candidate itself is cut. :mod:`guide_opt.solvers.base` applies these no-goods and re-plans.

Checked objectives: ``min_cost``, ``max_throughput`` and ``min_latency`` (the ones the
simulator judges in refinement); ``max_served`` plans serve only part of the demand on
purpose and schedules run batch jobs, so they are not simulated here.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from guide_opt import table_cache
from guide_opt.catalog import Catalog
from guide_opt.objectives import OBJECTIVES
from guide_opt.problem import Problem
from guide_opt.solution import Deployment

if TYPE_CHECKING:
    from guide_opt.refine.evaluate import SimulationMemo

#: Requests simulated per LLM for the check, at least (closed loops: at least 4 per user).
SIMULATION_REQUESTS = 2000
#: Simulated requests expected beyond the SLO's percentile, at least. A p99 read from 2,000 requests rests
#: on 20 of them: for one plan it read 28.4-32.1 ms over four seeds where 16,000 requests read 29.7-33.1 ms.
TAIL_REQUESTS = 80
#: Seed of the checked request stream (the check is deterministic).
SIMULATION_SEED = 0
#: Simulated constraint kinds that more replicas can repair under a stated demand.
_LOAD_KINDS = ("ttft", "tpot", "demand")


def checks_apply(problem: Problem) -> bool:
    """True when ``problem``'s plans are checked by simulation (see the module doc)."""
    return OBJECTIVES[problem.objective].simulated and not problem.is_schedule


@dataclass(frozen=True)
class DeploymentCheck:
    """The simulator's verdict on one LLM's deployment.

    meets: every simulated constraint of this LLM holds (SLOs at ``percentile`` after the
    plan's margins, demand, memory, KV rejections). failed: the kinds that failed (``ttft``,
    ``tpot``, ``demand``, ``memory``, ``rejected``). violations: the failures in words.
    simulated: the simulated metrics (:meth:`guide_opt.refine.SimulatedMetrics.to_json`).
    saturating: the load was a saturating closed loop (no stated demand, or max_throughput).
    simulation_s: how long the plan's simulation took when it ran (wall seconds, the same when the
    verdict is read back from the cache): what checking a similar plan is expected to cost.
    """

    model_index: int
    meets: bool
    failed: tuple[str, ...]
    violations: tuple[str, ...]
    percentile: int
    ttft_ms: float | None
    tpot_ms: float | None
    ttft_factor: float
    tpot_factor: float
    saturating: bool
    num_requests: int
    seed: int
    simulated: dict[str, Any]
    simulation_s: float = 0.0

    def more_replicas_may_help(self) -> bool:
        """True when only load-dependent constraints failed under a stated demand (see the module doc)."""
        return bool(self.failed) and not self.saturating and all(kind in _LOAD_KINDS for kind in self.failed)

    def to_json(self) -> dict[str, Any]:
        """The ``simulated`` object of a deployment in ``solve --format json``."""
        s = self.simulated
        return {
            "meets_slo": self.meets,
            "percentile": self.percentile,
            "ttft_ms": self.ttft_ms,
            "tpot_ms": self.tpot_ms,
            "slo_factors": {"ttft": self.ttft_factor, "tpot": self.tpot_factor},
            "goodput_fraction": s.get("goodput_fraction"),
            "demand_served_share": s.get("demand_served_share"),
            "arrival": s.get("arrival"),
            "requests": self.num_requests,
            "seed": self.seed,
            "violations": list(self.violations),
        }


def check_requests(problem: Problem) -> int:
    """Requests the check simulates per LLM: :data:`SIMULATION_REQUESTS`, or enough that :data:`TAIL_REQUESTS` of them
    are expected beyond the highest SLO percentile of ``problem`` (8,000 for p99; p50 and p90 keep 2,000)."""
    highest = max(req.slo.percentile for req in problem.models)
    return max(SIMULATION_REQUESTS, math.ceil(TAIL_REQUESTS * 100 / (100 - highest) - 1e-9))


def kept_check(problem: Problem, deployments: Sequence[Deployment], *, num_requests: int | None = None,
               seed: int = SIMULATION_SEED) -> tuple[DeploymentCheck, ...] | None:
    """The :func:`check_plan` of a plan as the table cache keeps it (default requests and catalog); None when it is not
    kept or the cache is off. Reading it costs a file read, not a simulation."""
    path = table_cache.checks_path(problem, deployments, check_requests(problem) if num_requests is None else num_requests, seed)
    return None if path is None else table_cache.cached_checks(path)


def check_plan(problem: Problem, deployments: Sequence[Deployment], *, num_requests: int | None = None,
               seed: int = SIMULATION_SEED, catalog: Catalog | None = None,
               simulations: "SimulationMemo | None" = None) -> tuple[DeploymentCheck, ...]:
    """Simulate every deployment of a plan (one per LLM of ``problem``, in order) and judge each one.

    num_requests: requests per LLM; by default :func:`check_requests`. The simulation is seeded, so
    its verdict is a pure function of the problem, the plan, the requests and the seed: it is kept
    in the table cache and read back when the same plan is checked again (a later solve of the
    problem; :mod:`guide_opt.table_cache`), unless a ``catalog`` of the caller's is given.
    ``simulations``: the memo of the plans checked before for the same problem
    (:data:`guide_opt.refine.evaluate.SimulationMemo`; one solve keeps one): an LLM deployed as in
    one of them is not simulated again.
    """
    if num_requests is None:
        num_requests = check_requests(problem)
    kept = None if catalog is not None else table_cache.checks_path(problem, deployments, num_requests, seed)
    if kept is not None and (found := table_cache.cached_checks(kept)) is not None:
        return found
    return _simulated_checks(problem, deployments, num_requests, seed, catalog, simulations, kept)


def check_plans(problem: Problem, plans: Sequence[Sequence[Deployment]], simulations: "SimulationMemo") -> list[tuple[DeploymentCheck, ...]]:
    """:func:`check_plan` of each of several plans of ``problem`` (default requests and seed), their simulations side by side.

    Every LLM simulation the plans need and neither the table cache nor ``simulations`` holds runs
    in one pool (:func:`guide_opt.refine.simulate_plans`): an LLM deployed alike in two plans is
    simulated once, and a plan with many new LLMs spreads them over the workers instead of
    holding one worker while the others finish short plans. The verdicts are those of
    :func:`check_plan` plan by plan; each simulated one's ``simulation_s`` is the pool's time.
    """
    from guide_opt.refine import simulate_plans

    num_requests = check_requests(problem)
    paths = [table_cache.checks_path(problem, d, num_requests, SIMULATION_SEED) for d in plans]
    found = [None if path is None else table_cache.cached_checks(path) for path in paths]
    started = time.perf_counter()
    simulate_plans(problem, [tuple(d) for d, f in zip(plans, found) if f is None], simulations, num_requests=num_requests,
                   seed=SIMULATION_SEED)
    pooled_s = time.perf_counter() - started
    return [f if f is not None else _simulated_checks(problem, d, num_requests, SIMULATION_SEED, None, simulations, path, pooled_s)
            for d, f, path in zip(plans, found, paths)]


def _simulated_checks(problem: Problem, deployments: Sequence[Deployment], num_requests: int, seed: int, catalog: Catalog | None,
                      simulations: "SimulationMemo | None", kept: Path | None, simulated_before_s: float = 0.0) -> tuple[DeploymentCheck, ...]:
    """:func:`check_plan` of a plan the table cache does not hold: simulated (or read from ``simulations``), judged and
    stored at ``kept`` (None: not stored). ``simulated_before_s``: the time its simulations took when they ran beforehand
    (:func:`check_plans`), added to each verdict's ``simulation_s``."""
    from guide_opt.refine import simulate_deployments
    from guide_opt.prediction import slo_margins

    started = time.perf_counter()
    evaluation = simulate_deployments(problem, tuple(deployments), num_requests=num_requests, seed=seed, catalog=catalog,
                                      simulations=simulations)
    simulation_s = simulated_before_s + time.perf_counter() - started
    per_llm: dict[str, dict[str, float]] = {}  # "models[i]" -> its constraints by their names after "models[i]."
    for name, value in evaluation.constraints.items():
        owner, _, own_name = name.partition(".")
        per_llm.setdefault(owner, {})[own_name] = value
    out = []
    for i, (req, metrics) in enumerate(zip(problem.models, evaluation.metrics)):
        prefix = f"models[{i}]."
        mine = per_llm.get(prefix[:-1], {})
        failed = tuple(dict.fromkeys(name.split("_p")[0] for name, value in mine.items() if value > 0))
        pct = req.slo.percentile
        ttft_factor, tpot_factor = slo_margins(problem, i)
        saturating = OBJECTIVES[problem.objective].grows_with_replicas or not (req.workload.request_rate_per_s or req.workload.concurrent_users)
        json_metrics = metrics.to_json()
        out.append(DeploymentCheck(
            model_index=i, meets=not failed, failed=failed,
            violations=tuple(v for v in evaluation.violations if v.startswith(prefix)) or
            tuple(f"{prefix}{kind}: {metrics.reason}" for kind in failed if kind == "memory"),
            percentile=pct, ttft_ms=json_metrics.get(f"ttft_p{pct}_ms"), tpot_ms=json_metrics.get(f"tpot_p{pct}_ms"),
            ttft_factor=ttft_factor, tpot_factor=tpot_factor, saturating=saturating,
            num_requests=metrics.num_requests, seed=seed, simulated=json_metrics, simulation_s=simulation_s,
        ))
    if kept is not None:
        table_cache.store_checks(kept, tuple(out))
    return tuple(out)
