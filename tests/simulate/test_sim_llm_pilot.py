"""LLM-Pilot's closed-loop observation (Sec. V-B, Fig. 7), reproduced by the simulator.

"ITL typically remains stable as the number of concurrent users and throughput increase, until
the memory capacity is saturated. As the number of concurrent users increases further, the ITL
increases rapidly, while throughput does not improve anymore."

Setting: Llama-2-13B on one A100-40GB (one of LLM-Pilot's own pairs) under vLLM, users sending
LLM-Pilot-like requests (the joint-bin generator fitted to the synthesised trace of
conftest.py), 1 to 128 users as in the paper's load tests.
"""

from __future__ import annotations

import pytest

from guide_opt.simulate import JointBinnedLengths, Workload, simulate

USERS = (1, 4, 16, 128)


@pytest.fixture(scope="module")
def sweep(make_config, pilot_trace):
    config = make_config("llama-2-13b", "a100-40gb", "vllm")
    lengths = JointBinnedLengths.fit(pilot_trace)
    return {u: simulate(config, Workload.closed_loop(lengths, u), num_requests=max(400, 8 * u), seed=0) for u in USERS}


def test_itl_is_flat_while_kv_has_room(sweep):
    base = sweep[1].itl_s.p50_s
    for users in (4, 16):
        assert sweep[users].kv_utilization_peak < 0.8
        assert sweep[users].preemptions == 0
        assert sweep[users].itl_s.p50_s < 1.2 * base


def test_itl_rises_and_throughput_stalls_once_kv_saturates(sweep):
    saturated, below = sweep[128], sweep[16]
    assert saturated.kv_utilization_peak > 0.99
    assert saturated.itl_s.p50_s > 1.8 * below.itl_s.p50_s
    assert saturated.throughput_tokens_per_s < 2 * below.throughput_tokens_per_s  # 8x the users, far from 8x the tokens
    assert saturated.ttft_s.p50_s > 10 * below.ttft_s.p50_s  # requests now queue for KV blocks
