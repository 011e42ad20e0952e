"""Pooled simulator runs of an open loop, shared by the steady-state model and planning tests.

A module of its own (like ``problem_fixtures.py``) so that ``from simulator_runs import ...``
resolves to this file from any test folder (``tests/`` is on sys.path through its conftest.py).
The number of requests in the system has a long memory, so one run of a few thousand requests
understates the spread of what it drives (slot waits, TPOT tails); several seeds pooled do not.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from guide_opt.perf import ServingConfig
from guide_opt.simulate import FixedLengths, Workload, simulate


@dataclass(frozen=True)
class PooledRuns:
    """Per request, in order of arrival within each run, after each run's warm-up (its first 10% of requests).

    held: requests in the system (holding a sequence slot or waiting for one) as it arrives, itself not
    counted; ttft_s / tpot_s: its time to first token and time per output token.
    """

    held: np.ndarray
    ttft_s: np.ndarray
    tpot_s: np.ndarray


def pooled_open_loop(config: ServingConfig, rate: float, seeds: int = 4, requests: int = 3000) -> PooledRuns:
    """``seeds`` simulator runs (seeds 0, 1, ...) of ``requests`` Poisson arrivals at ``rate`` requests/s with the lengths and
    max-num-seqs of ``config``, each after its warm-up, pooled."""
    held, ttft, tpot = [], [], []
    for seed in range(seeds):
        sim = simulate(config, Workload.open_loop(FixedLengths(config.input_tokens, config.output_tokens), rate), max_num_seqs=config.batch,
                       num_requests=requests, seed=seed)
        order = np.argsort(sim.requests.arrival_s, kind="stable")
        held.append(sim.requests.in_system_at_arrival()[requests // 10:])
        ttft.append(sim.requests.ttft_s[order][requests // 10:])
        tpot.append(sim.requests.tpot_s[order][requests // 10:])
    return PooledRuns(np.concatenate(held), np.concatenate(ttft), np.concatenate(tpot))
