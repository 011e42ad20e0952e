"""The serving simulator: the nonlinear objective that Optuna refines.

- ``workloads``       -- token-length distributions (fixed, presets, histograms) and arrivals
                         (:class:`Workload`: Poisson open loop, closed loop of U users, burst);
- ``trace_generator`` -- LLM-Pilot's joint multi-dimensional binned generator fitted to a trace.
- ``workload_spec``   -- :func:`workload_from_spec`: a problem file's workload block.
- ``step_cost``       -- exact, memoised :func:`guide_opt.perf.step.step_time` for many steps.
- ``engine``          -- one replica: continuous batching, chunked prefill / SplitFuse / whole
                         prefill, paged KV blocks, preemption by recompute.
- ``compiled``        -- which engine runs: the one compiled with mypyc at install, while it matches engine.py.
- ``cluster``         -- replicas behind a load balancer and :func:`simulate`, the entry point.
- ``metrics``         -- :class:`SimulationResult`, percentiles, :class:`GoodputTargets` and goodput.

Typical use::

    from guide_opt.simulate import Workload, FixedLengths, GoodputTargets, simulate
    result = simulate(config, Workload.open_loop(FixedLengths(512, 128), 10.0),
                      max_num_seqs=128, num_requests=2000, seed=0, slo=GoodputTargets(ttft_ms=500, tpot_ms=50))
    result.ttft_s.p90_s, result.throughput_tokens_per_s, result.goodput.fraction
"""

from __future__ import annotations

from guide_opt.simulate.compiled import choose_engine

choose_engine()  # before anything imports the engine: a stale compiled engine gives way to engine.py

from guide_opt.simulate.cluster import BALANCERS, kv_capacity_blocks, simulate
from guide_opt.simulate.engine import POLICIES
from guide_opt.simulate.metrics import Goodput, GoodputTargets, Percentiles, RequestRecords, SimulationResult
from guide_opt.simulate.trace_generator import JointBinnedLengths, read_trace_csv
from guide_opt.simulate.workloads import (
    CLOSED_LOOP_RANGE_RATIO,
    PRESET_SOURCES,
    PRESETS,
    FixedLengths,
    HistogramLengths,
    LengthDistribution,
    RangeLengths,
    Workload,
    closed_loop_range_ratio,
    preset_lengths,
    users_lengths,
)
from guide_opt.simulate.workload_spec import workload_from_spec

__all__ = [
    "BALANCERS",
    "CLOSED_LOOP_RANGE_RATIO",
    "POLICIES",
    "PRESETS",
    "PRESET_SOURCES",
    "FixedLengths",
    "Goodput",
    "GoodputTargets",
    "HistogramLengths",
    "JointBinnedLengths",
    "LengthDistribution",
    "Percentiles",
    "RangeLengths",
    "RequestRecords",
    "SimulationResult",
    "Workload",
    "closed_loop_range_ratio",
    "kv_capacity_blocks",
    "preset_lengths",
    "read_trace_csv",
    "simulate",
    "users_lengths",
    "workload_from_spec",
]
