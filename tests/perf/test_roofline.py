"""Roofline times and the bound they report; ring all-reduce and pipeline-hop formulas."""

from __future__ import annotations

import dataclasses

import pytest

from guide_opt.perf import Bound, StepShape, estimate, step_time
from guide_opt.perf.communication import point_to_point_time_s, ring_all_reduce_time_s
from guide_opt.perf.roofline import roofline_time


# ---- roofline_time -----------------------------------------------------------------------------
def test_compute_bound_work():
    t = roofline_time(flops=1e12, bytes_moved=4e9, peak_flops_per_s=100e12, bandwidth_bytes_per_s=2e12)
    assert t.compute_time_s == pytest.approx(0.01) and t.memory_time_s == pytest.approx(0.002)
    assert t.time_s == pytest.approx(0.01) and t.bound is Bound.COMPUTE


def test_memory_bound_work():
    t = roofline_time(flops=1e9, bytes_moved=2e9, peak_flops_per_s=100e12, bandwidth_bytes_per_s=1e12)
    assert t.time_s == pytest.approx(2e-3) and t.memory_time_s == pytest.approx(2e-3) and t.bound is Bound.MEMORY


def test_tie_counts_as_compute_bound():
    t = roofline_time(flops=2.0, bytes_moved=1.0, peak_flops_per_s=2.0, bandwidth_bytes_per_s=1.0)
    assert t.time_s == 1.0 and t.bound is Bound.COMPUTE


def test_ridge_point_switches_bound():
    # A100-like rates: ridge at 312e12 / 2.039e12 = 153 FLOP/byte.
    peak, bw = 312e12, 2.039e12
    assert roofline_time(150 * 1e6, 1e6, peak, bw).bound is Bound.MEMORY
    assert roofline_time(160 * 1e6, 1e6, peak, bw).bound is Bound.COMPUTE


def test_bound_values_are_the_json_strings():
    assert [b.value for b in Bound] == ["compute", "memory", "network", "overhead"]


# ---- communication -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("message", "n", "bw", "latency", "expected"),
    [
        (1e6, 1, 1e9, 1e-6, 0.0),  # one GPU: nothing to reduce
        (1e6, 2, 1e9, 0.0, 1e-3),  # 2(n-1)/n = 1
        (1e6, 4, 1e9, 1e-6, 1.5e-3 + 6e-6),  # 2*3/4 = 1.5 of the message, 6 latency steps
        (8e6, 8, 100e9, 5e-6, 14 / 8 * 8e6 / 100e9 + 14 * 5e-6),
    ],
)
def test_ring_all_reduce_formula(message, n, bw, latency, expected):
    assert ring_all_reduce_time_s(message, n, bw, latency) == pytest.approx(expected, rel=1e-12, abs=0)


def test_ring_all_reduce_bandwidth_term_approaches_twice_the_message():
    t = ring_all_reduce_time_s(1e9, 1024, 1e9, 0.0)
    assert 1.99 < t < 2.0


def test_point_to_point_formula():
    assert point_to_point_time_s(1e6, 1e9, 5e-6) == pytest.approx(1e-3 + 5e-6)


# ---- bounds reported by the step model and the estimator ---------------------------------------
def test_decode_at_batch_one_is_memory_bound(make_config):
    est = estimate(make_config(batch=1, input_tokens=512, output_tokens=128))
    assert est.phases.decode_bound is Bound.MEMORY


def test_long_prefill_is_compute_bound(make_config):
    est = estimate(make_config(batch=4, input_tokens=4000, output_tokens=16))
    assert est.phases.prefill_bound is Bound.COMPUTE


def test_slow_link_makes_tensor_parallel_decode_network_bound(make_config, catalog):
    gpu = catalog.gpu("a100-80gb-sxm")
    slow = gpu.model_copy(update={"link_bandwidth_gbps": 0.01, "link_latency_us": 1000.0})
    est = estimate(make_config(gpu=slow, tp=4, batch=8, input_tokens=128, output_tokens=8))
    assert est.phases.decode_bound is Bound.NETWORK and est.phases.prefill_bound is Bound.NETWORK


def test_large_step_overhead_is_overhead_bound(make_config):
    config = make_config(batch=1, input_tokens=16, output_tokens=8)
    slow_scheduler = dataclasses.replace(config, efficiency=config.factors.model_copy(update={"step_overhead_ms": 1000.0}))
    assert estimate(slow_scheduler).phases.decode_bound is Bound.OVERHEAD


def test_step_time_components_sum_to_total(make_config):
    config = make_config(tp=2, pp=2, batch=8)
    t = step_time(config, StepShape.decode(8, 600))
    assert t.time_s == pytest.approx(t.compute_s + t.memory_s + t.network_s + t.overhead_s)
    assert min(t.compute_s, t.memory_s, t.network_s, t.overhead_s) >= 0 and t.network_s > 0


def test_step_bound_is_the_largest_share():
    from guide_opt.perf import StepTime

    assert StepTime(10, 1, 2, 3, 4).bound is Bound.OVERHEAD
    assert StepTime(10, 5, 2, 2, 1).bound is Bound.COMPUTE
    assert StepTime(10, 1, 6, 2, 1).bound is Bound.MEMORY
    assert StepTime(10, 1, 2, 6, 1).bound is Bound.NETWORK


def test_efficiency_override_is_used(make_config, flat_gpu):
    config = make_config(gpu=flat_gpu("a100-80gb-sxm"), batch=1)
    half_bandwidth = dataclasses.replace(config, efficiency=config.factors.model_copy(
        update={"memory_efficiency": config.factors.memory_efficiency / 2}))
    base, slow = step_time(config, StepShape.decode(1, 512)), step_time(half_bandwidth, StepShape.decode(1, 512))
    assert base.compute_s == slow.compute_s == 0  # decode at batch 1: every operator is memory-bound
    assert slow.memory_s == pytest.approx(2 * base.memory_s, rel=1e-12)
