"""The steady-state serving model (:mod:`guide_opt.perf.steady_state`).

Expected values come from outside the model: the static estimate of a single request (what a
server with no other work does), closed forms of queueing theory (M/D/1, Erlang's shape-2
quantiles), scipy's distributions, and the discrete-event simulator (an independent
implementation of the same engine rules).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from guide_opt.perf import estimate
from guide_opt.perf import steady_state as ss
from guide_opt.simulate import FixedLengths, HistogramLengths, Workload, simulate

from simulator_runs import pooled_open_loop


@pytest.fixture(scope="module")
def chat(catalog):
    """Llama-3.1-8B on one H100 with vLLM, 1024 prompt / 256 output tokens, max-num-seqs 256."""
    from guide_opt.perf import ServingConfig

    return ServingConfig(llm=catalog.llms["llama-3.1-8b"], gpu=catalog.gpus["h100-sxm"], framework=catalog.frameworks["vllm"],
                         quantization=catalog.quantization("bf16"), batch=256, input_tokens=1024, output_tokens=256)


@pytest.fixture(scope="module")
def chat_table(chat):
    return ss.StepTable(chat)


def _single_request(config):
    """The static estimate of one request alone: its prefill, then its decode steps."""
    import dataclasses

    return estimate(dataclasses.replace(config, batch=1))


# ---- reductions to one request ------------------------------------------------------------------
def test_vanishing_open_loop_load_is_one_request_alone(chat, chat_table):
    # With arrivals 1000 s apart every request finds an idle server: its TTFT is its own
    # prefill and its TPOT a decode step of one sequence -- the static estimate at batch 1.
    alone = _single_request(chat)
    state = ss.open_loop(chat, 1e-3, chat_table)
    assert state.stable
    assert state.ttft.mean_s == pytest.approx(alone.ttft_s, rel=1e-3)
    assert state.tpot.mean_s == pytest.approx(alone.tpot_s, rel=1e-3)
    assert state.e2e_mean_s == pytest.approx(alone.batch_latency_s, rel=1e-3)


def test_closed_loop_of_one_user_is_one_request_end_to_end(chat, chat_table):
    # One user with zero think time sends the next request when the last finishes: every
    # request runs alone, so E2E is the single-request latency and throughput its inverse,
    # with no spread at all.
    alone = _single_request(chat)
    state = ss.closed_loop(chat, 1, chat_table)
    assert state.e2e_mean_s == pytest.approx(alone.batch_latency_s, rel=1e-9)
    assert state.ttft.mean_s == pytest.approx(alone.ttft_s, rel=1e-9)
    assert state.request_rate_per_s == pytest.approx(1.0 / alone.batch_latency_s, rel=1e-9)
    assert state.ttft.p50_s == state.ttft.p99_s == pytest.approx(alone.ttft_s, rel=1e-9)
    assert state.tpot.p50_s == state.tpot.p99_s == pytest.approx(alone.tpot_s, rel=1e-9)


# ---- queueing pieces ----------------------------------------------------------------------------
@pytest.mark.parametrize("mean, dispersion, count", [(19.8, 2.47, 32), (19.8, 1.0, 32), (100.0, 1.5, 10), (300.0, 1.0, 200),
                                                     (2.0, 3.0, 256), (87.0, 1.3, 128), (1000.0, 1.2, 1024), (5.0, 1.0, 0)])
def test_negative_binomial_tail_is_scipys(mean, dispersion, count):
    # Expected: scipy.stats (an independent implementation); negative binomial with n = mean /
    # (dispersion - 1), p = 1 / dispersion has that mean and variance dispersion x mean.
    from scipy import stats

    if dispersion == 1.0:
        expected = stats.poisson.sf(count - 1, mean)
    else:
        expected = stats.nbinom.sf(count - 1, mean / (dispersion - 1.0), 1.0 / dispersion)
    assert ss.negative_binomial_tail(mean, dispersion, count) == pytest.approx(expected, rel=1e-9, abs=1e-300)


def test_the_slot_wait_is_its_fixed_point_by_hand():
    # One slot, rate 0.5/s, held 1 s, Poisson count: the mean wait given a wait is the M/D/1 one,
    # 1 s / (2 x (1 - 0.5)) = 1 s, so W = P, and the count (holders and waiters) has mean
    # 0.5 (1 + W): P = P(N >= 1) = 1 - exp(-(1 + P) / 2). Its root, by bisection here.
    low, high = 0.0, 1.0
    for _ in range(200):
        mid = (low + high) / 2
        low, high = (mid, high) if mid < 1.0 - math.exp(-(1.0 + mid) / 2) else (low, mid)
    probability, wait_s = ss.slot_waiting(0.5, 1.0, 1, 1.0)
    assert probability == pytest.approx(low, rel=1e-3)  # the iteration stops within CONVERGENCE (1e-4) of its step
    assert wait_s == pytest.approx(low, rel=1e-3)
    # Twice the dispersion doubles the wait given a wait.
    p2, w2 = ss.slot_waiting(0.5, 1.0, 1, 2.0)
    assert w2 / p2 == pytest.approx(2.0)
    assert ss.slot_waiting(1.0, 1.0, 1, 1.0) == (1.0, math.inf)  # the offered load fills the slot


def test_a_wait_drains_at_the_rate_of_full_slots_by_hand():
    # One slot, rate 0.5/s, held 1 s on average but 1.5 s while the slot is held and others wait:
    # the queue drains at 1 / 1.5 - 0.5 = 1/6 per s, so the wait given a wait is 1.5 / (2 x (1 - 0.75))
    # = 3 s, W = 3 P, and P = 1 - exp(-(1 + W) / 2) (bisection here).
    low, high = 0.0, 1.0
    for _ in range(200):
        mid = (low + high) / 2
        low, high = (mid, high) if mid < 1.0 - math.exp(-(1.0 + 3.0 * mid) / 2) else (low, mid)
    probability, wait_s = ss.slot_waiting(0.5, 1.0, 1, 1.0, lambda: 1.5)
    assert probability == pytest.approx(low, rel=1e-3)
    assert wait_s == pytest.approx(3.0 * low, rel=1e-3)
    assert ss.slot_waiting(0.5, 1.0, 1, 1.0, lambda: 2.0) == (1.0, math.inf)  # full slots cannot drain: 0.5 x 2 s fills the slot

    def never() -> float:
        raise AssertionError("the drain is not timed when hardly anyone waits")

    probability, _ = ss.slot_waiting(1e-3, 1.0, 8, 1.0, never)  # P(Poisson(0.001) >= 8) ~ 2.5e-29
    assert probability < ss.NEGLIGIBLE_WAIT_PROBABILITY


def test_a_slot_wait_given_a_wait_is_erlang_of_shape_2():
    # The median of the Erlang distribution of shape 2 (rate 1) is 1.678346990016661 (the root of
    # 1 - e^-x (1 + x) = 1/2, a table value). One window TTFT of 20 ms, every arrival waiting 0.6 s on average:
    # the p50 TTFT is 20 ms + 0.3 s x 1.678...; with 30% waiting the median is the 20 ms atom itself.
    atom = (np.array([0.02]), np.array([1.0]))
    assert ss._with_slot_wait(atom, 1.0, 0.6, 0.62).p50_s == pytest.approx(0.02 + 0.3 * 1.678346990016661, rel=1e-9)
    assert ss._with_slot_wait(atom, 0.3, 0.18, 0.2).p50_s == 0.02
    # no wait: the window TTFT's own percentiles
    assert ss._with_slot_wait(atom, 0.0, 0.0, 0.02).p99_s == 0.02


def test_slot_wait_percentiles_match_a_brute_force_cdf_and_grow_continuously():
    """Against the CDF tabulated on a 12.5 us grid (independent of the root finding), for many window atoms and
    wait probabilities around 1 - q, where a discretized wait made the percentile jump."""
    rng = np.random.default_rng(0)
    values = np.sort(rng.uniform(0.01, 0.05, 40))
    weights = rng.uniform(0.1, 1.0, 40)
    weights /= weights.sum()
    grid = np.linspace(0.0, 5.0, 400_001)
    p50s = []
    for probability in (0.3, 0.49, 0.5, 0.51, 0.6, 0.9):
        theta = 0.5 / 2  # a conditional mean wait of 0.5 s
        got = ss._with_slot_wait((values, weights), probability, 0.5 * probability, 0.1)
        x = np.maximum(grid[:, None] - values[None, :], 0.0) / theta
        cdf = (weights[None, :] * ((values[None, :] <= grid[:, None]) * (1 - probability) + probability * (1 - np.exp(-x) * (1 + x)))).sum(axis=1)
        for q, value in ((0.5, got.p50_s), (0.9, got.p90_s), (0.99, got.p99_s)):
            assert value == pytest.approx(grid[np.searchsorted(cdf, q)], abs=2e-5)
        p50s.append(got.p50_s)
    assert p50s == sorted(p50s) and p50s[3] - p50s[1] < 0.05  # through P(wait) = 0.5 without a jump of a support point


# ---- agreement with the simulator ---------------------------------------------------------------
def _steady_records(result, warmup_fraction=0.1):
    """TTFT and TPOT arrays of the requests after the warm-up (the first 10% by arrival)."""
    r = result.requests
    keep = np.argsort(r.arrival_s)[int(len(r.arrival_s) * warmup_fraction):]
    return r.ttft_s[keep], r.tpot_s[keep]


def test_open_loop_agrees_with_the_simulator(chat, chat_table):
    capacity = ss.capacity_request_rate_per_s(chat, chat_table)
    rate = 0.5 * capacity
    state = ss.open_loop(chat, rate, chat_table)
    sim = simulate(chat, Workload.open_loop(FixedLengths(1024, 256), rate), max_num_seqs=256, num_requests=1500, seed=3)
    ttft, tpot = _steady_records(sim)
    assert state.ttft.mean_s == pytest.approx(ttft.mean(), rel=0.10)
    assert state.tpot.mean_s == pytest.approx(tpot.mean(), rel=0.10)
    assert state.ttft.p90_s == pytest.approx(np.percentile(ttft, 90), rel=0.20)
    assert state.tpot.p90_s == pytest.approx(np.percentile(tpot, 90), rel=0.20)


def test_closed_loop_agrees_with_the_simulator(chat, chat_table):
    # Output lengths spread around 256 so that the users do not stay in lock-step (equal
    # lengths keep a closed loop synchronized forever, a burst repeated, not a steady state).
    lengths = HistogramLengths(((1024, 1),), tuple((round(256 * x), 1) for x in (0.53, 0.77, 1.0, 1.19, 1.51)))
    mean_output = round(lengths.mean_output_tokens)
    import dataclasses

    config = dataclasses.replace(chat, output_tokens=mean_output)
    state = ss.closed_loop(config, 32)
    sim = simulate(chat, Workload.closed_loop(lengths, 32), max_num_seqs=256, num_requests=1500, seed=1)
    ttft, tpot = _steady_records(sim)
    assert state.tpot.mean_s == pytest.approx(tpot.mean(), rel=0.10)
    assert state.ttft.mean_s == pytest.approx(ttft.mean(), rel=0.15)
    assert state.request_rate_per_s == pytest.approx(sim.request_throughput_per_s, rel=0.10)


def test_open_loop_tail_at_high_load_agrees_with_the_simulator(catalog):
    # Qwen3-32B on two H200 with SGLang, 2048 / 256 tokens, at 80% of capacity (the planner's
    # default target utilization): long prompts make long windows gather many prompts, so windows
    # come in runs and the TTFT tail is heavy. Expected: the simulator's p90 and p99 TTFT (an
    # independent implementation of the engine rules). A model that draws one window around the
    # mean window instead of following the window chain gave -25% (p90) and -38% (p99) here.
    from guide_opt.perf import ServingConfig

    config = ServingConfig(llm=catalog.llms["qwen3-32b"], gpu=catalog.gpus["h200"], framework=catalog.frameworks["sglang"],
                           quantization=catalog.quantization("bf16"), tp=2, batch=256, input_tokens=2048, output_tokens=256)
    table = ss.StepTable(config)
    rate = 0.8 * ss.capacity_request_rate_per_s(config, table)
    state = ss.open_loop(config, rate, table)
    sim = simulate(config, Workload.open_loop(FixedLengths(2048, 256), rate), max_num_seqs=256, num_requests=3000, seed=0)
    ttft, _ = _steady_records(sim)
    assert state.ttft.mean_s == pytest.approx(ttft.mean(), rel=0.10)
    assert state.ttft.p90_s == pytest.approx(np.percentile(ttft, 90), rel=0.20)
    assert state.ttft.p99_s == pytest.approx(np.percentile(ttft, 99), rel=0.20)


def _trtllm_32_slots(catalog):
    """Llama-3.1-8B on one A100 with TensorRT-LLM, 32 sequence slots, 2048 / 256 tokens: whole-prompt steps."""
    from guide_opt.perf import ServingConfig

    return ServingConfig(llm=catalog.llms["llama-3.1-8b"], gpu=catalog.gpus["a100-80gb-sxm"], framework=catalog.frameworks["tensorrt-llm"],
                         quantization=catalog.quantization("bf16"), batch=32, input_tokens=2048, output_tokens=256)


def _model_and_pooled_runs(config, share: float):
    """The model's open loop at ``share`` of the model's capacity and 4 pooled simulator runs at that rate."""
    table = ss.StepTable(config)
    rate = share * ss.capacity_request_rate_per_s(config, table)
    return ss.open_loop(config, rate, table), pooled_open_loop(config, rate)


def test_the_count_in_the_system_is_as_dispersed_as_the_simulators(catalog):
    # Below the slot limit (50% of capacity): every prompt's whole-prompt step stalls all 32
    # running requests, so the requests in the system come in clumps. Expected: the simulator's
    # variance / mean of that count (4 pooled runs: 2.02; the model 1.83). A Poisson count (1.0) is half of it.
    config = _trtllm_32_slots(catalog)
    state, runs = _model_and_pooled_runs(config, 0.5)
    held = runs.held
    assert (held >= config.batch).mean() < 0.01  # below the limit: it hardly truncates the count
    assert state.slot_dispersion == pytest.approx(held.var() / held.mean(), rel=0.15)


def test_a_slot_bound_open_loop_waits_as_the_simulator_does(catalog):
    # At 80% of capacity (the planner's target utilization) the 32 slots bind: arrivals that
    # find them all held wait. Expected: the simulator's TTFT (4 pooled runs: mean 284 ms, p90
    # 416 ms). Counting the requests in the system as Poisson (M/D/c) gave 181 / 292 ms (-36% /
    # -30%): too few arrivals find the slots full; draining the queue at the average holding time
    # instead of the full slots' gave 236 ms (-17%).
    state, runs = _model_and_pooled_runs(_trtllm_32_slots(catalog), 0.8)
    ttft = runs.ttft_s
    assert state.ttft.mean_s == pytest.approx(ttft.mean(), rel=0.10)
    assert state.ttft.p90_s == pytest.approx(np.percentile(ttft, 90), rel=0.20)


# ---- TPOT under the load a request meets -----------------------------------------------------
def test_load_feedback_without_decode_feedback_is_an_amplified_poisson_count():
    # g_d = 0: the life grows by t_p per stall, the stalls are Poisson over the life and
    # stretch it in turn, so Var(L) = (L / rate) g_p^2 / (1 - g_p)^2 (hand derivation in the
    # docstring of load_feedback_gain; the integral of sin^2 u / u^2 over (0, inf) is pi / 2).
    for prompt_gain in (0.1, 0.5, 0.8):
        assert ss.load_feedback_gain(prompt_gain, 0.0) == pytest.approx(prompt_gain ** 2 / (1.0 - prompt_gain) ** 2, rel=1e-6)
    assert ss.load_feedback_gain(0.0, 0.0) == 0.0
    assert math.isinf(ss.load_feedback_gain(0.5, 0.5)) and math.isinf(ss.load_feedback_gain(0.7, 0.4))


def test_weak_decode_feedback_is_a_time_average_of_a_poisson_count():
    # g_p = 0 and g_d -> 0: the decoders met are the M/D/inf count averaged over one life, a
    # triangle-weighted Poisson sum of variance (2/3) rate L (hand computation: the integral of
    # sin^4 u / u^4 over (0, inf) is pi / 3), so J -> (2/3) g_d^2.
    assert ss.load_feedback_gain(0.0, 1e-4) / 1e-8 == pytest.approx(2.0 / 3.0, rel=1e-3)


def test_load_feedback_agrees_with_a_fine_trapezoid():
    # The same integral by a 2-million-point trapezoid on (0, 2000] (an independent quadrature).
    u = np.linspace(1e-9, 2000.0, 2_000_001)
    k = np.exp(-1j * u) * np.sin(u) / u
    for prompt_gain, decode_gain in ((0.07, 0.1), (0.3, 0.6), (0.6, 0.35), (0.05, 0.9)):
        values = np.abs(k) ** 2 * np.abs(decode_gain * k + prompt_gain) ** 2 / np.abs(1 - prompt_gain - decode_gain * k) ** 2
        expected = 2 / np.pi * (np.trapezoid(values, u) + (prompt_gain / (1 - prompt_gain)) ** 2 / 4000.0)
        assert ss.load_feedback_gain(prompt_gain, decode_gain) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize(("prompt", "output"), [(128, 512), (2048, 256)])
def test_tpot_tail_at_the_target_utilization_agrees_with_the_simulator(chat, prompt, output):
    # Llama-3.1-8B on one H100 with vLLM at 80% of capacity. A request's TPOT is the mean of its
    # steps, but the steps it meets are not independent: more decoders or more prompts around it
    # slow all of them, and lengthen the lives of the requests that cause it. Expected: the
    # simulator's p90 / p99 (4 pooled runs; the model is within 1.5% of both). With independent steps
    # the model gave -11% / -17% (128/512: decoders dominate) and -21% / -31% (2048/256: prefill stalls dominate).
    import dataclasses

    state, runs = _model_and_pooled_runs(dataclasses.replace(chat, input_tokens=prompt, output_tokens=output), 0.8)
    tpot = runs.tpot_s
    assert state.tpot.mean_s == pytest.approx(tpot.mean(), rel=0.10)
    assert state.tpot.p90_s == pytest.approx(np.percentile(tpot, 90), rel=0.10)
    assert state.tpot.p99_s == pytest.approx(np.percentile(tpot, 99), rel=0.10)


@pytest.mark.parametrize("load", [0.5, 0.8])
def test_open_loop_of_prompts_alone_agrees_with_the_simulator(chat, load):
    # One output token: a request ends with its prefill, nothing decodes, and between windows
    # the server sits idle until the next arrival, which starts a window of its own. Expected:
    # the simulator's mean and p90 TTFT (Llama-3.1-8B, one H100, vLLM, 2048-token prompts). A
    # window chain that took an empty window for a step of no length gave +72% / +79% here.
    import dataclasses

    config = dataclasses.replace(chat, input_tokens=2048, output_tokens=1)
    table = ss.StepTable(config)
    rate = load * ss.capacity_request_rate_per_s(config, table)
    state = ss.open_loop(config, rate, table)
    sim = simulate(config, Workload.open_loop(FixedLengths(2048, 1), rate), max_num_seqs=256, num_requests=3000, seed=0)
    ttft, _ = _steady_records(sim)
    assert state.ttft.mean_s == pytest.approx(ttft.mean(), rel=0.10)
    assert state.ttft.p90_s == pytest.approx(np.percentile(ttft, 90), rel=0.20)


def test_open_loop_of_prompts_alone_never_waits_less_under_more_load(chat):
    # Queueing is monotone: more arrivals per second never shorten the mean wait. Prompts alone (one output token)
    # near capacity once fell back to a single prefill (45.7 ms at 90% of capacity, below the 77 ms at 50%), and a
    # slot wait that asked for 256 decoders that never exist made 80% unstable; past the load where the windows'
    # chain settles the state is unstable (inf), never faster.
    import dataclasses

    config = dataclasses.replace(chat, input_tokens=2048, output_tokens=1)
    table = ss.StepTable(config)
    capacity = ss.capacity_request_rate_per_s(config, table)
    means = [ss.open_loop(config, load * capacity, table).ttft.mean_s for load in (0.5, 0.7, 0.8, 0.85, 0.9, 0.95)]
    assert all(b >= a for a, b in zip(means, means[1:])), means
    assert np.isfinite(means[2])  # 80%: the simulator's mean TTFT is finite there (test above)


def test_open_loop_of_prompts_alone_at_low_load_is_one_prefill(chat):
    # One output token at 2% of capacity: nothing decodes and nearly every arrival finds the server idle, so
    # the TTFT is one prompt's prefill, the static estimate at batch 1 (an M/D/1 queue at 2% load waits about
    # 1% of a service on average, within the tolerance). This load once divided by zero: with no decodes the
    # mean window shrinks towards the idle server's 0, and the iteration reached it as 0 / 0.
    import dataclasses

    config = dataclasses.replace(chat, input_tokens=512, output_tokens=1)
    table = ss.StepTable(config)
    state = ss.open_loop(config, 0.02 * ss.capacity_request_rate_per_s(config, table), table)
    assert state.stable
    assert state.ttft.mean_s == pytest.approx(_single_request(config).ttft_s, rel=0.03)
    assert state.tpot.mean_s == 0.0


class _LinearWindows:
    """A step table whose window of ``k`` prompts takes ``a + s k`` seconds (one step per prompt)."""

    def __init__(self, a_s: float, s_s: float) -> None:
        self.a_s, self.s_s = a_s, s_s

    def windows(self, decodes, slots, prompts):
        prompts = np.asarray(prompts, dtype=float)
        return self.a_s + self.s_s * prompts, np.maximum(prompts, 1.0)


@pytest.mark.parametrize("immigration, offspring", [(0.3, 0.2), (1.5, 0.6), (4.0, 0.85)])
def test_the_window_chain_is_the_branching_process_of_its_closed_form(immigration, offspring):
    # With windows of a + s k seconds, K' ~ Poisson(rate (a + s K)) is a Galton-Watson process
    # with Poisson(mu = rate a) immigration and Poisson(m = rate s) offspring. By hand:
    # E[K] = mu + m E[K], so E[K] = mu / (1 - m); Var[K] = E[Var | K] + Var[E | K]
    # = (mu + m E[K]) + m^2 Var[K], so Var[K] = E[K] / (1 - m^2).
    rate = 10.0
    table = _LinearWindows(immigration / rate, offspring / rate)
    _, _, stationary = ss._window_chain(table, 1, 0.0, rate, immigration / rate)
    counts = np.arange(len(stationary))
    mean = float(np.dot(counts, stationary))
    variance = float(np.dot((counts - mean) ** 2, stationary))
    assert stationary.sum() == pytest.approx(1.0, abs=1e-12)
    assert mean == pytest.approx(immigration / (1 - offspring), rel=1e-6)
    assert variance == pytest.approx(mean / (1 - offspring**2), rel=1e-5)


# ---- load ---------------------------------------------------------------------------------------
@settings(max_examples=12, deadline=None)
@given(low=st.floats(0.02, 0.9), step=st.floats(0.01, 0.09))
def test_latency_grows_with_the_arrival_rate(chat, chat_table, low, step):
    capacity = ss.capacity_request_rate_per_s(chat, chat_table)
    a = ss.open_loop(chat, low * capacity, chat_table, capacity_per_s=capacity)
    b = ss.open_loop(chat, (low + step) * capacity, chat_table, capacity_per_s=capacity)
    assert a.stable and b.stable
    assert b.ttft.mean_s >= a.ttft.mean_s * (1 - 1e-6)
    assert b.tpot.mean_s >= a.tpot.mean_s * (1 - 1e-6)
    assert b.utilization > a.utilization


@settings(max_examples=8, deadline=None)
@given(users=st.integers(1, 200))
def test_more_users_mean_more_throughput_and_slower_tokens(chat, chat_table, users):
    a, b = ss.closed_loop(chat, users, chat_table, capacity_per_s=0.0), ss.closed_loop(chat, users + 8, chat_table, capacity_per_s=0.0)
    assert b.request_rate_per_s >= a.request_rate_per_s * (1 - 1e-6)
    assert b.tpot.mean_s >= a.tpot.mean_s * (1 - 1e-6)


def test_beyond_capacity_is_unstable(chat, chat_table):
    capacity = ss.capacity_request_rate_per_s(chat, chat_table)
    assert ss.open_loop(chat, 0.95 * capacity, chat_table, capacity_per_s=capacity).stable
    over = ss.open_loop(chat, 1.1 * capacity, chat_table, capacity_per_s=capacity)
    assert not over.stable and math.isinf(over.ttft.mean_s)


def test_the_simulator_overloads_beyond_the_capacity(chat, chat_table):
    # Above capacity the simulator's queue grows: late requests wait far longer than early ones.
    capacity = ss.capacity_request_rate_per_s(chat, chat_table)
    sim = simulate(chat, Workload.open_loop(FixedLengths(1024, 256), 1.3 * capacity), max_num_seqs=256, num_requests=1200, seed=0)
    ttft = sim.requests.ttft_s[np.argsort(sim.requests.arrival_s)]
    assert np.mean(ttft[-200:]) > 5 * np.mean(ttft[:200])


def test_max_rate_within_meets_the_slo_and_the_target(chat, chat_table):
    capacity = ss.capacity_request_rate_per_s(chat, chat_table)
    rate = ss.max_rate_within(chat, 90, 0.5, 0.015, target_utilization=0.8, table=chat_table, capacity_per_s=capacity)
    assert 0 < rate <= 0.8 * capacity
    at = ss.open_loop(chat, rate, chat_table, capacity_per_s=capacity)
    assert at.tpot.p90_s <= 0.015 and at.ttft.p90_s <= 0.5
    beyond = ss.open_loop(chat, rate * 1.05, chat_table, capacity_per_s=capacity)
    assert beyond.tpot.p90_s > 0.015 or rate * 1.05 > 0.8 * capacity
    # A TPOT target below a lone decode step cannot be met at any load.
    assert ss.max_rate_within(chat, 50, None, 0.5 * _single_request(chat).tpot_s, table=chat_table, capacity_per_s=capacity) == 0.0


def test_max_users_within_meets_the_slo(chat, chat_table):
    users = ss.max_users_within(chat, 50, None, 0.012, 500, table=chat_table)
    assert 1 <= users < 500
    assert ss.closed_loop(chat, users, chat_table, capacity_per_s=0.0).tpot.p50_s <= 0.012
    assert ss.closed_loop(chat, users + 1, chat_table, capacity_per_s=0.0).tpot.p50_s > 0.012


def test_a_shared_table_gives_the_same_answer(chat):
    # The planner builds one table per shape for all its max-num-seqs; a fresh table must agree.
    import dataclasses

    small = dataclasses.replace(chat, batch=32)
    shared = ss.StepTable(chat)
    ss.open_loop(chat, 3.0, shared)  # fill the shared table at other decode counts first
    assert ss.open_loop(small, 3.0, shared).ttft.mean_s == pytest.approx(ss.open_loop(small, 3.0).ttft.mean_s, rel=1e-12)


def _one_prompt_per_step(catalog):
    """Llama-3.1-8B on one H100 with TensorRT-LLM (whole prompts), 212 slots, 2048 / 128 tokens, 4,096 tokens per step."""
    from guide_opt.perf import ServingConfig

    return ServingConfig(llm=catalog.llms["llama-3.1-8b"], gpu=catalog.gpus["h100-sxm"], framework=catalog.frameworks["tensorrt-llm"],
                         quantization=catalog.quantization("bf16"), batch=212, input_tokens=2048, output_tokens=128,
                         max_num_batched_tokens=4096)


def test_saturation_when_each_step_takes_one_whole_prompt(catalog):
    # By hand: the decodes go first, so beside n >= 1 of them a 4,096-token step holds one 2,048-token
    # prompt, never two; a window of k prompts is k steps. At saturation every step carries one prompt,
    # so a request decodes for 127 steps with 127 others: n = 1 + 127 = 128 decoders (below the 212
    # slots), and prompts enter at one per step: rate = 1 / (time of one prompt beside 128 decodes).
    # The windows' slopes were once divided by twice the prompts between the two probes, which
    # doubled this rate (and put n at the slots).
    config = _one_prompt_per_step(catalog)
    table = ss.StepTable(config)
    point = ss._saturation(table, 212, 127)
    assert point.decodes == pytest.approx(128.0, rel=1e-3)
    assert point.rate_per_s == pytest.approx(1.0 / table.window(128, 1).time_s, rel=0.01)
    assert point.tpot_s == pytest.approx(table.window(128, 1).time_s, rel=0.01)


def test_a_prefill_bound_closed_loop_runs_at_the_saturation_rate(catalog):
    # 212 users with zero think time would return prompts at 212 / (first token + 127 steps), about
    # 1.7 per step, but the steps take one each (previous test): the loop runs at the saturation
    # rate and the prompts queue. Expected: the simulator serving 3,000 requests queued at once
    # (offline, TensorRT-LLM's max-throughput protocol), an independent implementation of the
    # engine rules. The fixed point alone gave 21.9 requests/s here against the simulator's 16.0.
    config = _one_prompt_per_step(catalog)
    table = ss.StepTable(config)
    state = ss.closed_loop(config, 212, table, capacity_per_s=0.0)
    sim = simulate(config, Workload.burst(FixedLengths(2048, 128)), max_num_seqs=212, max_num_batched_tokens=4096, num_requests=3000)
    assert state.request_rate_per_s == pytest.approx(sim.request_throughput_per_s, rel=0.02)
    assert state.tpot.mean_s == pytest.approx(float(np.mean(sim.requests.tpot_s)), rel=0.03)
    assert state.decode_sequences == pytest.approx(128.0, rel=1e-3)


def test_a_table_started_from_another_answers_as_a_fresh_one_without_computing_again(chat, monkeypatch):
    import dataclasses

    first = ss.StepTable(chat)
    capacity = ss.capacity_request_rate_per_s(chat, first)
    best = ss.max_rate_within(chat, 90, 0.5, 0.04, table=first, capacity_per_s=capacity)
    other_batch = dataclasses.replace(chat, batch=64)
    assert ss.table_identity(other_batch) == ss.table_identity(chat)  # one table serves every max-num-seqs of a shape
    assert ss.table_identity(dataclasses.replace(chat, input_tokens=512)) != ss.table_identity(chat)
    started = ss.StepTable(chat)
    started.start_from(first.kept())
    monkeypatch.setattr(ss, "_capacity", lambda *a: pytest.fail("computed again"))
    monkeypatch.setattr(ss, "_max_rate_within", lambda *a: pytest.fail("computed again"))
    assert ss.capacity_request_rate_per_s(chat, started) == capacity
    assert ss.max_rate_within(chat, 90, 0.5, 0.04, table=started, capacity_per_s=capacity) == best
    monkeypatch.undo()
    fresh = ss.StepTable(chat)  # independent: nothing given
    assert ss.max_rate_within(chat, 90, 0.5, 0.04, table=fresh, capacity_per_s=ss.capacity_request_rate_per_s(chat, fresh)) == best
