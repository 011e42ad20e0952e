"""Several replicas behind a load balancer, and the public entry point :func:`simulate`.

Events are processed in time order across replicas: an arrival is dispatched before any step
that starts at or after it, and a replica never runs a step that starts after the next event
that could change what it sees (an arrival; under a closed loop, another replica's earliest
possible completion, since that creates an arrival). An open loop behind a balancer that does not
look at the replicas (``random``, ``round_robin``) has replicas that never interact, so each one is
run through its own arrivals in turn (:func:`_run_apart`): the same steps, far fewer calls. Balancers:

- ``random``: request ``k`` (in dispatch order) goes to a replica drawn uniformly at random (the
  seeded generator, after the lengths and arrival gaps): what a Kubernetes Service does in
  kube-proxy's default iptables or nftables mode, and the planner's steady-state model assumes
  (each replica sees a Poisson stream at rate / R).
- ``round_robin``: request ``k`` (in dispatch order) goes to replica ``k mod R``.
- ``least_loaded``: the replica with the fewest queued + running requests (lowest index on ties).
  A replica is seen as of the end of the step it is running when the request arrives (the
  balancer learns a step's completions when the step is scheduled, not when it ends).

Requests that can never be served -- prompt + output longer than the LLM's context
(``max_position_embeddings``) or than one replica's whole KV cache -- are *rejected* at arrival
(as vLLM rejects over-long requests): they count against goodput, and under a closed loop the
user immediately sends the next one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from types import ModuleType
from typing import Iterator

import numpy as np

from guide_opt.perf.config import ServingConfig
from guide_opt.perf.memory import kv_budget_bytes
from guide_opt.simulate.engine import POLICIES, ReplicaEngine, RequestTable, default_policy, fixed_replica, run_events
from guide_opt.simulate.metrics import Goodput, GoodputTargets, Percentiles, RequestRecords, SimulationResult
from guide_opt.simulate.step_cost import shared_step_cost_model
from guide_opt.simulate.workloads import Workload

BALANCERS = ("random", "round_robin", "least_loaded")


def kv_capacity_blocks(config: ServingConfig) -> int:
    """KV blocks one replica holds: ``floor(kv_budget_bytes / bytes per block)`` (0 when weights do not fit).

    A block is ``kv_block_size_tokens`` tokens on the most loaded GPU. H2O eviction keeping a
    fraction ``f`` of the entries is modelled as blocks costing ``f`` of their bytes (the engine
    still counts logical tokens). Sliding-window layers are charged their full context here (the
    simulator does not free out-of-window blocks), so its capacity is conservative for them.
    """
    budget = kv_budget_bytes(config)
    block_bytes = config.framework.kv_block_size_tokens * config.kv_bytes_per_token * config.h2o_kept_fraction
    return max(0, math.floor(budget / block_bytes)) if budget > 0 else 0


def simulate(config: ServingConfig, workload: Workload, *, max_num_seqs: int | None = None, max_num_batched_tokens: int | None = None,
             num_requests: int = 1000, seed: int = 0, replicas: int = 1, balancer: str = "round_robin", slo: GoodputTargets | None = None,
             policy: str | None = None, num_kv_blocks: int | None = None) -> SimulationResult:
    """Simulate ``num_requests`` requests of ``workload`` on ``replicas`` copies of ``config``.

    max_num_seqs: concurrent sequences per replica (default: the framework's ``max_num_seqs``).
    max_num_batched_tokens: token budget per engine step (default: ``config.step_token_budget``);
        must be at least ``max_num_seqs``.
    seed: seeds one ``numpy.random.Generator`` that draws the lengths, then the arrival gaps, then
        (``random`` balancer) the replicas; the same arguments always give the same result.
    balancer: ``random``, ``round_robin`` or ``least_loaded`` (see module doc).
    slo: per-request targets for goodput (None: no goodput).
    policy: ``decode_first`` (default) or ``prefill_first`` (see
        :mod:`guide_opt.simulate.engine`).
    num_kv_blocks: KV blocks per replica, of the framework's ``kv_block_size_tokens`` (default:
        what the memory holds, :func:`kv_capacity_blocks`): an engine started with a fixed cache
        size (TurboMind's ``cache_max_entry_count`` given as a block count, vLLM's
        ``--num-gpu-blocks-override``).

    The replica's KV capacity is ``num_kv_blocks`` if given, else :func:`kv_capacity_blocks` of
    ``config`` with ``batch = max_num_seqs`` and the step budget applied (activation memory
    depends on both). Raises
    ``ValueError`` for arguments that cannot describe a run (and for a configuration that cannot
    run at all, see :meth:`ServingConfig.unsupported_reason`); a configuration whose memory holds
    no request returns a result with ``fits=False``.
    """
    if not isinstance(workload, Workload):
        raise TypeError(f"workload must be a Workload (lengths + arrivals), got {type(workload).__name__}")
    # Counts as Python ints: the engine compiled with mypyc (guide_opt.simulate.compiled) takes no numpy integers.
    max_num_seqs = int(config.framework.max_num_seqs if max_num_seqs is None else max_num_seqs)
    budget = int(config.step_token_budget if max_num_batched_tokens is None else max_num_batched_tokens)
    num_requests, replicas = int(num_requests), int(replicas)
    num_kv_blocks = None if num_kv_blocks is None else int(num_kv_blocks)
    policy = default_policy(config.framework.prefill_mode) if policy is None else policy
    if num_requests < 1 or replicas < 1 or max_num_seqs < 1 or budget < 1:
        raise ValueError("num_requests, replicas, max_num_seqs and max_num_batched_tokens must all be at least 1")
    if num_kv_blocks is not None and num_kv_blocks < 1:
        raise ValueError(f"num_kv_blocks must be at least 1 (or None for what the memory holds), got {num_kv_blocks}")
    if budget < max_num_seqs:
        raise ValueError(f"max_num_batched_tokens ({budget}) must be at least max_num_seqs ({max_num_seqs}), as in vLLM")
    if balancer not in BALANCERS:
        raise ValueError(f"balancer must be one of {', '.join(BALANCERS)}, got {balancer!r}")
    if policy not in POLICIES:
        raise ValueError(f"policy must be one of {', '.join(POLICIES)}, got {policy!r}")

    rng = np.random.default_rng(seed)
    inputs, outputs = workload.lengths.sample(rng, num_requests)
    inputs = np.asarray(inputs, dtype=np.int64)
    outputs = np.asarray(outputs, dtype=np.int64)
    if inputs.shape != (num_requests,) or outputs.shape != (num_requests,) or inputs.min() < 1 or outputs.min() < 1:
        raise ValueError("the workload must give num_requests input and output lengths of at least 1 token")
    arrivals = None
    if workload.arrival == "poisson":
        arrivals = np.cumsum(rng.exponential(1.0 / workload.request_rate_per_s, num_requests))
    elif workload.arrival == "burst":
        arrivals = np.zeros(num_requests)
    drawn_replicas = rng.integers(0, replicas, size=num_requests).tolist() if balancer == "random" else None

    engine_config = dataclasses.replace(config, batch=max_num_seqs, max_num_batched_tokens=budget,
                                        input_tokens=int(inputs.max()), output_tokens=int(outputs.max()))
    reason = engine_config.unsupported_reason()
    if reason:
        raise ValueError(reason)
    block = int(config.framework.kv_block_size_tokens)
    num_blocks = int(kv_capacity_blocks(engine_config) if num_kv_blocks is None else num_kv_blocks)
    capacity_tokens = num_blocks * block
    context_tokens = config.llm.max_position_embeddings
    rejected = (inputs + outputs > context_tokens) | (inputs + outputs - 1 > capacity_tokens)

    table = RequestTable(inputs.tolist(), outputs.tolist())
    common = dict(num_requests=num_requests, replicas=replicas, balancer=balancer, policy=policy, prefill_mode=config.framework.prefill_mode,
                  max_num_seqs=max_num_seqs, max_num_batched_tokens=budget, seed=seed, kv_capacity_tokens=capacity_tokens,
                  kv_block_size_tokens=block)
    if num_blocks == 0 or rejected.all():
        why = ("the weights, activations and reserve leave no memory for the KV cache" if num_blocks == 0 else
               f"no request fits: the longest needs {int((inputs + outputs).max())} tokens but the context is {context_tokens} "
               f"and one replica's KV cache holds {capacity_tokens} tokens")
        return _empty_result(why, table, inputs, outputs, rejected, slo, common)

    cost = shared_step_cost_model(engine_config)
    engines = [ReplicaEngine(r, cost, table, prefill_mode=config.framework.prefill_mode, policy=policy, max_num_seqs=max_num_seqs,
                             max_num_batched_tokens=budget, num_blocks=num_blocks, block_tokens=block) for r in range(replicas)]
    if _replicas_apart(arrivals, balancer):
        _run_apart(engines, table, arrivals, rejected.tolist(), balancer, drawn_replicas)
    else:
        _run(engines, table, workload, arrivals, rejected.tolist(), balancer, drawn_replicas)
    return _result(engines, table, inputs, outputs, rejected, slo, num_blocks, common)


def _replicas_apart(arrivals: np.ndarray | None, balancer: str) -> bool:
    """Whether the replicas never interact: an open loop (arrival times fixed in advance) whose balancer picks each
    request's replica without looking at the replicas (``random``, ``round_robin``)."""
    return arrivals is not None and balancer != "least_loaded"


def _run_apart(engines: list[ReplicaEngine], table: RequestTable, arrivals: np.ndarray, rejected: list[bool], balancer: str,
               drawn_replicas: list[int] | None) -> None:
    """:func:`_run` for replicas that never interact (:func:`_replicas_apart`): each replica in turn, through its own arrivals.

    The replica of every request is known before the run (the dispatch order is the arrival order, rejected requests
    skipped), so each replica runs to each of its own arrivals instead of to every arrival of the cluster: the same
    steps at the same times (runs of decode steps cut at other replicas' arrivals sum their step times in another
    order, a difference of rounding only; ``tests/simulate/test_sim_engine.py`` compares the two loops), with about
    ``R`` times fewer calls into the engines for ``R`` replicas.
    """
    own_requests: list[list[int]] = [[] for _ in engines]
    own_arrivals_s: list[list[float]] = [[] for _ in engines]
    dispatched = 0
    for rid, arrival_s in enumerate(arrivals.tolist()):
        table.arrival_s[rid] = arrival_s
        if rejected[rid]:
            continue
        replica = fixed_replica(balancer, dispatched, drawn_replicas, len(engines))
        own_requests[replica].append(rid)
        own_arrivals_s[replica].append(arrival_s)
        dispatched += 1
    for engine, requests, arrivals_s in zip(engines, own_requests, own_arrivals_s):
        engine.serve(requests, arrivals_s)


def _run(engines: list[ReplicaEngine], table: RequestTable, workload: Workload, arrivals: np.ndarray | None,
         rejected: list[bool], balancer: str, drawn_replicas: list[int] | None) -> None:
    """The event loop: dispatch arrivals in time order and advance replicas between them (:func:`run_events`, which the
    install compiles with the engine).

    drawn_replicas: the ``random`` balancer's replica for each dispatch, in dispatch order.
    """
    users = 0 if workload.concurrent_users is None else workload.concurrent_users
    run_events(engines, table, None if arrivals is None else arrivals.tolist(), users, rejected, balancer, drawn_replicas)


@contextlib.contextmanager
def using_engine(module: ModuleType) -> Iterator[None]:
    """Simulate with ``module``'s engine (a copy of :mod:`guide_opt.simulate.engine`, such as ``engine.py`` loaded as
    Python where the install compiled it: :func:`guide_opt.simulate.compiled.load_source_engine`) while in the block."""
    names = ("ReplicaEngine", "RequestTable", "run_events")
    here = globals()
    originals = {name: here[name] for name in names}
    here.update({name: getattr(module, name) for name in names})
    try:
        yield
    finally:
        here.update(originals)


def _records(table: RequestTable, inputs: np.ndarray, outputs: np.ndarray, rejected: np.ndarray) -> RequestRecords:
    return RequestRecords(input_tokens=inputs, output_tokens=outputs, arrival_s=np.array(table.arrival_s, dtype=float),
                          first_token_s=np.array(table.first_token_s, dtype=float), finish_s=np.array(table.finish_s, dtype=float),
                          replica=np.array(table.replica, dtype=np.int64), rejected=rejected)


def _goodput(slo: GoodputTargets | None, records: RequestRecords, duration_s: float) -> Goodput | None:
    if slo is None:
        return None
    met = slo.met(records.ttft_s, records.tpot_s, records.e2e_s) & ~records.rejected
    count = int(met.sum())
    rate = count / duration_s if duration_s > 0 else math.nan
    tokens = float(records.output_tokens[met].sum()) / duration_s if duration_s > 0 else math.nan
    return Goodput(slo=slo, fraction=count / records.input_tokens.size, requests_per_s=rate, tokens_per_s=tokens)


def _empty_result(reason: str, table: RequestTable, inputs: np.ndarray, outputs: np.ndarray, rejected: np.ndarray, slo: GoodputTargets | None,
                  common: dict) -> SimulationResult:
    records = _records(table, inputs, outputs, np.ones_like(rejected))
    nan = Percentiles(math.nan, math.nan, math.nan, math.nan)
    return SimulationResult(fits=False, reason=reason, completed_requests=0, rejected_requests=int(inputs.size), ttft_s=nan, itl_s=nan,
                            tpot_s=nan, e2e_s=nan, throughput_tokens_per_s=0.0, request_throughput_per_s=0.0, duration_s=0.0,
                            goodput=_goodput(slo, records, 0.0), kv_utilization_mean=math.nan, kv_utilization_peak=math.nan,
                            preemptions=0, steps=0, itl_gaps=0, mean_batch_sequences=math.nan, requests=records, **common)


def _result(engines: list[ReplicaEngine], table: RequestTable, inputs: np.ndarray, outputs: np.ndarray, rejected: np.ndarray,
            slo: GoodputTargets | None, num_blocks: int, common: dict) -> SimulationResult:
    records = _records(table, inputs, outputs, rejected)
    completed = np.isfinite(records.finish_s)
    if completed.any():
        duration_s = float(records.finish_s[completed].max() - records.arrival_s[completed].min())
    else:
        duration_s = 0.0
    # The gaps one step at a time, then the steps of the runs of decode steps (each gap weighted by its sequences).
    values = [np.asarray(e.itl_values, dtype=float) for e in engines] + [np.frombuffer(e.itl_run_values, dtype=float) for e in engines]
    weights = ([np.asarray(e.itl_weights, dtype=float) for e in engines]
               + [np.repeat(np.asarray(e.itl_run_sequences, dtype=float), e.itl_run_steps) for e in engines])
    itl_values = np.concatenate(values) if values else np.empty(0)
    itl_weights = np.concatenate(weights) if weights else np.empty(0)
    busy_s = sum(e.busy_s for e in engines)
    steps = sum(e.steps for e in engines)
    tokens = float(outputs[completed].sum())
    return SimulationResult(
        fits=True,
        reason=None,
        completed_requests=int(completed.sum()),
        rejected_requests=int(rejected.sum()),
        ttft_s=Percentiles.of(records.ttft_s[completed]),
        itl_s=Percentiles.of(itl_values, itl_weights),
        tpot_s=Percentiles.of(records.tpot_s[completed]),
        e2e_s=Percentiles.of(records.e2e_s[completed]),
        throughput_tokens_per_s=tokens / duration_s if duration_s > 0 else math.nan,
        request_throughput_per_s=float(completed.sum()) / duration_s if duration_s > 0 else math.nan,
        duration_s=duration_s,
        goodput=_goodput(slo, records, duration_s),
        kv_utilization_mean=sum(e.block_seconds for e in engines) / (num_blocks * busy_s) if busy_s > 0 else 0.0,
        kv_utilization_peak=max(e.peak_used for e in engines) / num_blocks,
        preemptions=sum(e.preemptions for e in engines),
        steps=steps,
        itl_gaps=int(round(itl_weights.sum())),
        mean_batch_sequences=sum(e.sequence_steps for e in engines) / steps if steps else math.nan,
        requests=records,
        **common,
    )
