"""The discrete-event replica: step composition, KV paging, preemption, invariants, determinism."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from guide_opt.perf.step import StepShape, step_time
from guide_opt.simulate import (
    PRESETS,
    FixedLengths,
    GoodputTargets,
    HistogramLengths,
    Workload,
    kv_capacity_blocks,
    simulate,
)
from guide_opt.simulate import cluster, engine, step_cost

MODES = ("chunked", "split_fuse", "whole")


@pytest.fixture(scope="module")
def config(make_config):
    return make_config("llama-2-7b", "a100-80gb-sxm", "vllm")


def with_mode(config, mode: str):
    return dataclasses.replace(config, framework=config.framework.model_copy(update={"prefill_mode": mode}))


def with_kv_tokens(config, tokens: int):
    """``config`` with the smallest memory fraction whose KV cache holds at least ``tokens`` tokens."""
    for permille in range(150, 1000):
        candidate = dataclasses.replace(config, gpu_memory_utilization=permille / 1000)
        if kv_capacity_blocks(candidate) * config.framework.kv_block_size_tokens >= tokens:
            return candidate
    raise AssertionError("no memory fraction gives that much KV cache")


@pytest.fixture
def recorded_steps(monkeypatch):
    """Every step's (new_tokens, sequences, attended, kv_read, pipeline_fill) as the engine asks for it.

    The engine is handed no step-cost columns, so it calls ``time_s`` for every step instead of evaluating its
    expression itself (``tests/simulate/test_sim_step_cost.py`` holds that evaluation to ``time_s`` bit for bit).
    """
    shapes = []
    real = step_cost.StepCostModel.time_s

    def spy(self, *shape):
        shapes.append(shape)
        return real(self, *shape)

    real_init = step_cost.StepCostModel.__init__

    def init(self, config):
        real_init(self, config)
        shapes.clear()  # drop the model's own self-check probes

    monkeypatch.setattr(step_cost.StepCostModel, "time_s", spy)
    monkeypatch.setattr(step_cost.StepCostModel, "separable_columns", lambda self: None)
    monkeypatch.setattr(step_cost.StepCostModel, "__init__", init)
    monkeypatch.setattr(engine, "MACRO_MIN_STEPS", 10**9)  # one step at a time, all recorded
    return shapes


@pytest.fixture
def engines_after_run(monkeypatch):
    """The replica engines of the last simulation, for invariants on their final state."""
    seen = []
    for name in ("_run", "_run_apart"):
        real = getattr(cluster, name)

        def run(engines, *args, real=real):
            seen[:] = engines
            return real(engines, *args)

        monkeypatch.setattr(cluster, name, run)
    return seen


def test_one_request_by_hand(config, recorded_steps):
    r = simulate(config, Workload.burst(FixedLengths(20, 3)), num_requests=1)
    prefill = step_time(config, StepShape(20, 1, 20 * 21 / 2, 0), pipeline_fill=True).time_s
    decode1 = step_time(config, StepShape(1, 1, 21, 20)).time_s
    decode2 = step_time(config, StepShape(1, 1, 22, 21)).time_s
    assert recorded_steps == [(20, 1, 210.0, 0, True), (1, 1, 21, 20, False), (1, 1, 22, 21, False)]
    assert r.ttft_s.mean_s == pytest.approx(prefill, rel=1e-12)
    assert r.e2e_s.mean_s == pytest.approx(prefill + decode1 + decode2, rel=1e-12)
    assert r.itl_gaps == 2 and r.itl_s.p99_s == pytest.approx(decode2, rel=1e-12)
    assert r.tpot_s.mean_s == pytest.approx((decode1 + decode2) / 2, rel=1e-12)
    assert r.throughput_tokens_per_s == pytest.approx(3 / r.e2e_s.mean_s)


def test_decodes_first_then_prompt_chunks_fill_the_budget(config, recorded_steps):
    lengths = HistogramLengths(((3000, 1.0),), ((4, 1.0),))
    simulate(config, Workload.burst(lengths), num_requests=2, max_num_batched_tokens=2048, max_num_seqs=8)
    # 6000 prompt tokens in 2048-token steps; request 0 finishes its prompt in step 2 and decodes from step 3 on.
    assert [s[:2] for s in recorded_steps[:4]] == [
        (2048, 1),  # 2048 of request 0
        (2048, 2),  # its last 952 + the first 1096 of request 1
        (1905, 2),  # 1 decode token of request 0 + the last 1904 of request 1
        (2, 2),  # both decode
    ]
    assert [s[3] for s in recorded_steps[:4]] == [0, 2048, 3000 + 1096, 3001 + 3000]  # KV read: chunk priors + decode contexts
    assert recorded_steps[2][2] == 3000 + 1 + 1904 * 1096 + 1904 * 1905 / 2  # attended: decode context + itself, chunk over its prior


def test_whole_prefill_never_splits_a_prompt(config, recorded_steps):
    simulate(with_mode(config, "whole"), Workload.burst(FixedLengths(3000, 2)), num_requests=3, max_num_batched_tokens=2048)
    prefill_tokens = [s[0] - (s[1] - 1 if s[4] else 0) for s in recorded_steps if s[4]]
    assert prefill_tokens == [3000, 3000, 3000]  # one over-budget prompt per step, never cut


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("policy", ["decode_first", "prefill_first"])
def test_every_token_is_accounted_for_and_every_block_freed(config, engines_after_run, mode, policy):
    tight = with_kv_tokens(with_mode(config, mode), 6000)
    r = simulate(tight, Workload.open_loop(PRESETS["conversational"], 20.0), num_requests=250, seed=4, replicas=2,
                 balancer="least_loaded", policy=policy, max_num_batched_tokens=1024)
    assert r.preemptions > 0  # the tight cache forces recomputes
    assert r.completed_requests + r.rejected_requests == 250
    done = np.isfinite(r.requests.finish_s)
    assert r.itl_gaps == int((r.requests.output_tokens[done] - 1).sum())
    assert all(e.used == 0 and not e.running and not e.waiting for e in engines_after_run)
    assert r.kv_utilization_peak <= 1.0
    assert np.all(r.requests.first_token_s[done] > r.requests.arrival_s[done])
    assert np.all(r.requests.finish_s[done] >= r.requests.first_token_s[done])


def test_preemption_keeps_the_oldest_running_and_recomputes(config):
    tight = with_kv_tokens(config, 4 * 1024)
    r = simulate(tight, Workload.burst(FixedLengths(512, 1200)), num_requests=6, max_num_seqs=6)
    assert r.preemptions > 0 and r.completed_requests == 6
    finish = r.requests.finish_s
    assert finish[0] == finish.min()  # FCFS: the newest is evicted, so the first request is never set back
    assert r.itl_s.mean_s > 1.3 * r.itl_s.p50_s  # each recompute shows up as one long gap


def test_a_fixed_block_count_replaces_what_the_memory_holds(config):
    # num_kv_blocks = 256 blocks of the profile's block size (vLLM: 16 tokens), whatever the memory: 4096 tokens
    # reported, and a burst of 6 requests of 512 + 1200 tokens (6 x 107 blocks) runs with preemptions where the
    # memory's own cache (thousands of blocks) needs none.
    block = config.framework.kv_block_size_tokens
    workload = Workload.burst(FixedLengths(512, 1200))
    fixed = simulate(config, workload, num_requests=6, max_num_seqs=6, num_kv_blocks=256)
    assert fixed.kv_capacity_tokens == 256 * block == 4096
    assert 6 * -(-1712 // block) > 256 and fixed.preemptions > 0 and fixed.completed_requests == 6
    own = simulate(config, workload, num_requests=6, max_num_seqs=6)
    assert own.kv_capacity_tokens == kv_capacity_blocks(dataclasses.replace(config, batch=6, input_tokens=512, output_tokens=1200,
                                                                           max_num_batched_tokens=own.max_num_batched_tokens)) * block
    assert own.preemptions == 0
    with pytest.raises(ValueError, match="num_kv_blocks"):
        simulate(config, workload, num_kv_blocks=0)


def test_max_num_seqs_bounds_concurrency(config):
    r = simulate(config, Workload.burst(FixedLengths(100, 50)), num_requests=16, max_num_seqs=4)
    first, finish = r.requests.first_token_s, r.requests.finish_s
    times = np.concatenate([first, finish])
    concurrent = [np.sum((first <= t) & (finish > t)) for t in times]
    assert max(concurrent) == 4
    assert r.mean_batch_sequences <= 4


def test_deterministic_under_a_seed(config):
    workload = Workload.open_loop(PRESETS["conversational"], 8.0)
    a = simulate(config, workload, num_requests=300, seed=11)
    b = simulate(config, workload, num_requests=300, seed=11)
    c = simulate(config, workload, num_requests=300, seed=12)
    assert a.metrics() == b.metrics()
    assert np.array_equal(a.requests.finish_s, b.requests.finish_s)
    assert a.metrics() != c.metrics()


@pytest.mark.parametrize("workload, replicas", [
    (Workload.closed_loop(PRESETS["conversational"], 3), 1),
    (Workload.open_loop(PRESETS["conversational"], 6.0), 2),
    (Workload.burst(FixedLengths(700, 300)), 1),
])
def test_batched_decode_runs_equal_step_by_step(config, monkeypatch, workload, replicas):
    fast = simulate(config, workload, num_requests=200, seed=2, replicas=replicas)
    monkeypatch.setattr(engine, "MACRO_MIN_STEPS", 10**9)
    slow = simulate(config, workload, num_requests=200, seed=2, replicas=replicas)
    assert np.allclose(fast.requests.finish_s, slow.requests.finish_s, rtol=1e-9)
    assert fast.steps == slow.steps and fast.itl_gaps == slow.itl_gaps
    assert fast.itl_s.p90_s == pytest.approx(slow.itl_s.p90_s, rel=1e-9)
    assert fast.kv_utilization_mean == pytest.approx(slow.kv_utilization_mean, rel=1e-9)


@pytest.mark.parametrize("workload, replicas", [
    (Workload.closed_loop(PRESETS["conversational"], 24), 1),
    (Workload.open_loop(PRESETS["conversational"], 6.0), 2),
    (Workload.burst(FixedLengths(700, 300)), 1),
])
def test_decode_runs_in_python_and_on_arrays_are_bit_identical(config, monkeypatch, workload, replicas):
    # A run of decode steps evaluated one step at a time (short runs) or with numpy (long ones) does the same IEEE
    # operations in the same order, so every time, count and statistic must be equal, not merely close.
    runs = []
    for short_steps in (0, 10**9):  # 0: every run on arrays; 10**9: every run step by step in Python
        monkeypatch.setattr(engine, "SHORT_RUN_STEPS", short_steps)
        runs.append(simulate(config, workload, num_requests=300, seed=3, replicas=replicas))
    arrays, in_turn = runs
    assert arrays.metrics() == in_turn.metrics()
    assert np.array_equal(arrays.requests.finish_s, in_turn.requests.finish_s, equal_nan=True)
    assert np.array_equal(arrays.requests.first_token_s, in_turn.requests.first_token_s, equal_nan=True)
    assert arrays.kv_utilization_mean == in_turn.kv_utilization_mean and arrays.steps == in_turn.steps


def test_over_long_requests_are_rejected_and_count_against_goodput(config):
    lengths = HistogramLengths(((1000, 1.0), (4000, 1.0)), ((200, 1.0),))  # 4000 + 200 > the 4096-token context
    r = simulate(config, Workload.closed_loop(lengths, 4), num_requests=200, seed=1, slo=GoodputTargets(ttft_ms=10_000))
    long = r.requests.input_tokens == 4000
    assert r.rejected_requests == long.sum() > 0
    assert np.all(np.isnan(r.requests.finish_s[long])) and np.all(np.isfinite(r.requests.finish_s[~long]))
    assert r.goodput.fraction == pytest.approx(1 - long.mean())


def test_configurations_without_room_say_so(make_config, config):
    no_room = simulate(make_config("llama-2-70b", "a10"), Workload.burst(FixedLengths(10, 10)), num_requests=5)
    assert not no_room.fits and "no memory for the KV cache" in no_room.reason
    too_long = simulate(config, Workload.burst(FixedLengths(4000, 500)), num_requests=5)
    assert not too_long.fits and too_long.rejected_requests == 5 and "context is 4096" in too_long.reason


def test_round_robin_and_least_loaded(config):
    workload = Workload.open_loop(PRESETS["conversational"], 10.0)
    rr = simulate(config, workload, num_requests=90, replicas=3)
    assert rr.requests.replica.tolist() == [i % 3 for i in range(90)]
    ll = simulate(config, workload, num_requests=300, replicas=3, balancer="least_loaded")
    assert np.bincount(ll.requests.replica).min() > 60


def test_random_balancing_gives_each_replica_a_poisson_stream(config):
    # Thinning a Poisson stream at random leaves a Poisson stream (rate / R): a replica's gaps between arrivals
    # are exponential, coefficient of variation 1, while round robin hands it every R-th arrival, an Erlang-R gap
    # with coefficient of variation 1 / sqrt(R) = 0.5 for R = 4 (hand computation from the gamma distribution).
    workload = Workload.open_loop(FixedLengths(16, 4), 4.0)
    for balancer, expected_cv in (("random", 1.0), ("round_robin", 0.5)):
        run = simulate(config, workload, num_requests=8000, replicas=4, balancer=balancer, seed=5)
        assert set(run.requests.replica.tolist()) == {0, 1, 2, 3}
        for r in range(4):
            gaps = np.diff(np.sort(run.requests.arrival_s[run.requests.replica == r]))
            assert gaps.std() / gaps.mean() == pytest.approx(expected_cv, rel=0.06)
            assert gaps.mean() == pytest.approx(1.0, rel=0.06)  # rate / R = 1 request/s per replica
    same = simulate(config, workload, num_requests=200, replicas=4, balancer="random", seed=5)
    assert same.requests.replica.tolist() == simulate(config, workload, num_requests=200, replicas=4, balancer="random", seed=5).requests.replica.tolist()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("balancer", ["random", "round_robin"])
def test_replicas_run_apart_as_in_the_cluster_event_loop(config, monkeypatch, mode, balancer):
    # An open loop with a balancer that does not look at the replicas runs each replica through its own arrivals
    # (cluster._run_apart). The reference is the cluster-wide event loop (cluster._run), which advances every
    # replica to every arrival: the same steps, so the same times up to the rounding of step-time sums.
    tight = with_kv_tokens(with_mode(config, mode), 12000)  # preemptions included
    workload = Workload.open_loop(PRESETS["conversational"], 24.0)
    args = dict(num_requests=600, seed=9, replicas=3, balancer=balancer, max_num_batched_tokens=1024)
    apart = simulate(tight, workload, **args)
    monkeypatch.setattr(cluster, "_replicas_apart", lambda arrivals, balancer: False)
    together = simulate(tight, workload, **args)
    assert apart.preemptions == together.preemptions > 0
    assert apart.steps == together.steps
    assert apart.requests.replica.tolist() == together.requests.replica.tolist()
    for field in ("arrival_s", "first_token_s", "finish_s"):
        np.testing.assert_allclose(getattr(apart.requests, field), getattr(together.requests, field), rtol=1e-9, atol=0)
    assert apart.ttft_s.p99_s == pytest.approx(together.ttft_s.p99_s, rel=1e-9)
    assert apart.kv_utilization_mean == pytest.approx(together.kv_utilization_mean, rel=1e-9)


def test_replicas_scale_throughput_as_llm_pilot_table_1(config):
    lengths = PRESETS["conversational"]
    one = simulate(config, Workload.closed_loop(lengths, 16), num_requests=400, seed=3)
    two = simulate(config, Workload.closed_loop(lengths, 32), num_requests=800, seed=3, replicas=2)
    four = simulate(config, Workload.closed_loop(lengths, 64), num_requests=1600, seed=3, replicas=4, balancer="least_loaded")
    assert two.throughput_tokens_per_s / one.throughput_tokens_per_s == pytest.approx(2, rel=0.1)
    assert four.throughput_tokens_per_s / one.throughput_tokens_per_s == pytest.approx(4, rel=0.1)


def test_arguments_are_checked(config):
    workload = Workload.burst(FixedLengths(10, 10))
    with pytest.raises(ValueError, match="at least max_num_seqs"):
        simulate(config, workload, max_num_seqs=64, max_num_batched_tokens=32)
    with pytest.raises(ValueError, match="balancer"):
        simulate(config, workload, balancer="fastest")
    with pytest.raises(TypeError, match="Workload"):
        simulate(config, FixedLengths(10, 10))
    with pytest.raises(ValueError, match="TP=3"):
        simulate(dataclasses.replace(config, tp=3), workload)
