"""The fast evaluation of the steady-state model gives the scalar model's figures.

Three things make candidate evaluation fast (:mod:`guide_opt.perf.steady_state`): correctly
rounded sums with their terms ordered by magnitude (:func:`~guide_opt.perf.steady_state._fsum`),
cached Poisson supports, and step tables that memoise their answers and are shared by the batch
sizes of a shape and by the LLMs of a fleet. The references here are independent of those
paths: :func:`math.fsum` over the terms as given, the Poisson probabilities written out with
:func:`scipy.special.gammaln`, and a fresh table per question (nothing memoised, nothing shared).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.special import gammaln

from guide_opt.perf import ServingConfig
from guide_opt.perf import steady_state as ss

#: Relative tolerance of the fast path against the scalar reference.
REL = 1e-9

# Wide exponent ranges are what make math.fsum slow and what ordering must not change.
terms = st.lists(st.floats(min_value=-1e290, max_value=1e290, allow_nan=False, allow_infinity=False)
                 | st.floats(min_value=-1e-200, max_value=1e-200, allow_nan=False), min_size=0, max_size=300)


@given(terms)
@settings(max_examples=300, deadline=None)
def test_ordered_fsum_is_math_fsum(values):
    # math.fsum returns the exact sum rounded once, whatever the order of the terms.
    assert ss._fsum(np.array(values, dtype=float)) == math.fsum(values)


@given(st.floats(min_value=1e-6, max_value=3000.0))
@settings(max_examples=200, deadline=None)
def test_poisson_pmf_on_cached_supports_is_the_formula(mean):
    limit = int(math.ceil(mean + 6.0 * math.sqrt(mean) + 6.0))
    k = np.arange(limit + 1, dtype=float)
    expected = np.exp(k * math.log(mean) - mean - gammaln(k + 1.0))
    expected[-1] += max(0.0, 1.0 - math.fsum(expected.tolist()))
    got_k, got_pmf = ss._prompt_counts(mean)
    assert np.array_equal(got_k, np.arange(limit + 1)) and np.array_equal(got_pmf, expected)
    with pytest.raises(ValueError):  # the shared supports cannot be changed by a caller
        got_k[0] = 1


# Small LLMs on small GPUs keep each example to seconds; lengths and loads vary widely.
LLMS = ["llama-3.2-1b", "qwen2-7b", "llama-3.1-8b", "opt-6.7b"]
GPUS = ["h100-sxm", "a100-80gb-sxm", "l40s"]


def _config(catalog, llm, gpu, engine, tp, input_tokens, output_tokens, batch) -> ServingConfig:
    return ServingConfig(llm=catalog.llms[llm], gpu=catalog.gpus[gpu], framework=catalog.frameworks[engine],
                         quantization=catalog.quantization("bf16"), tp=tp, batch=batch, input_tokens=input_tokens, output_tokens=output_tokens)


def _close(a: float, b: float) -> bool:
    return a == b or (math.isinf(a) and math.isinf(b)) or abs(a - b) <= REL * max(abs(a), abs(b))


def _figures(state: ss.SteadyState) -> list[float]:
    return [state.request_rate_per_s, state.e2e_mean_s, *(getattr(d, f) for d in (state.ttft, state.tpot, state.itl)
                                                          for f in ("mean_s", "p50_s", "p90_s", "p99_s"))]


@given(llm=st.sampled_from(LLMS), gpu=st.sampled_from(GPUS), engine=st.sampled_from(["vllm", "sglang"]), tp=st.sampled_from([1, 2]),
       input_tokens=st.integers(16, 4096), output_tokens=st.integers(2, 1024), batch=st.sampled_from([1, 3, 8, 24, 64, 200]),
       other_batch=st.sampled_from([2, 16, 96, 256]), load=st.floats(0.05, 0.95), users=st.integers(1, 300),
       ttft_ms=st.floats(20, 5000), tpot_ms=st.floats(5, 200), percentile=st.sampled_from([50, 90, 99]))
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_shared_memoising_table_matches_a_fresh_one(catalog, llm, gpu, engine, tp, input_tokens, output_tokens, batch, other_batch,
                                                    load, users, ttft_ms, tpot_ms, percentile):
    config = _config(catalog, llm, gpu, engine, tp, input_tokens, output_tokens, batch)
    if config.unsupported_reason() or config.context_reason():
        return
    other = dataclasses.replace(config, batch=other_batch)
    shared = ss.StepTable(dataclasses.replace(config, batch=256))
    # Fill the shared table with another max-num-seqs and other questions first, as a fleet does.
    other_capacity = ss.capacity_request_rate_per_s(other, shared)
    ss.open_loop(other, load * other_capacity, shared, capacity_per_s=other_capacity)
    ss.closed_loop(other, users, shared, capacity_per_s=other_capacity)

    capacity = ss.capacity_request_rate_per_s(config, shared)
    assert _close(capacity, ss.capacity_request_rate_per_s(config, ss.StepTable(config)))
    limits = (percentile, ttft_ms / 1e3, tpot_ms / 1e3)
    best = ss.max_rate_within(config, *limits, table=shared, capacity_per_s=capacity)
    assert _close(best, ss.max_rate_within(config, *limits, table=ss.StepTable(config), capacity_per_s=capacity))
    rate = load * capacity
    fast, scalar = ss.open_loop(config, rate, shared, capacity_per_s=capacity), ss.open_loop(config, rate, ss.StepTable(config), capacity_per_s=capacity)
    assert fast.stable == scalar.stable and all(map(_close, _figures(fast), _figures(scalar)))
    cap = min(users, 64)
    assert ss.max_users_within(config, *limits, cap, table=shared) == ss.max_users_within(config, *limits, cap, table=ss.StepTable(config))
    fast, scalar = ss.closed_loop(config, users, shared, capacity_per_s=0.0), ss.closed_loop(config, users, ss.StepTable(config), capacity_per_s=0.0)
    assert all(map(_close, _figures(fast), _figures(scalar)))
