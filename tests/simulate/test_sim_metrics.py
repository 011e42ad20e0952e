"""Percentiles, SLOs and goodput as documented in guide_opt.simulate.metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from guide_opt.simulate.cluster import _goodput
from guide_opt.simulate.metrics import GoodputTargets, Percentiles, RequestRecords, weighted_percentile


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0, 1e3, allow_nan=False), min_size=1, max_size=40), st.lists(st.integers(1, 5), min_size=40, max_size=40),
       st.sampled_from([50, 90, 99]))
def test_weighted_percentile_equals_the_percentile_of_repeated_samples(values, counts, q):
    weights = np.array(counts[: len(values)], dtype=float)
    repeated = np.repeat(np.array(values), weights.astype(int))
    assert weighted_percentile(np.array(values), weights, q) == float(np.percentile(repeated, q, method="inverted_cdf"))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0, 1e3, allow_nan=False), min_size=1, max_size=40), st.lists(st.integers(1, 5), min_size=40, max_size=40),
       st.booleans())
def test_the_three_percentiles_read_from_one_sort_are_numpys_of_the_repeated_samples(values, counts, weighted):
    """Percentiles.of sorts its sample once for p50, p90 and p99: each equals numpy's inverted-CDF percentile of the
    samples repeated by their weights (or of the samples themselves, unweighted)."""
    weights = np.array(counts[: len(values)], dtype=float) if weighted else None
    repeated = np.repeat(np.array(values), weights.astype(int)) if weighted else np.array(values)
    p = Percentiles.of(np.array(values), weights)
    assert [p.p50_s, p.p90_s, p.p99_s] == [float(np.percentile(repeated, q, method="inverted_cdf")) for q in (50, 90, 99)]


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(2, 40), st.integers(100, 20_000))
def test_weighted_percentiles_of_many_equal_values_are_those_of_the_repeated_samples(seed, distinct, size):
    """The sort need not keep equal values in order (a simulation's gaps repeat a few step times thousands of times): with
    integer weights, zeros included, the percentiles are still numpy's inverted-CDF ones of the repeated samples."""
    rng = np.random.default_rng(seed)
    values = rng.integers(0, distinct, size) * 1e-3
    weights = rng.integers(0, 4, size).astype(float)
    weights[0] = 1.0  # some weight in all
    repeated = np.repeat(values, weights.astype(int))
    p = Percentiles.of(values, weights)
    assert [p.p50_s, p.p90_s, p.p99_s] == [float(np.percentile(repeated, q, method="inverted_cdf")) for q in (50, 90, 99)]


def test_percentiles_of_nothing_are_nan_and_ms_is_none():
    p = Percentiles.of(np.array([]))
    assert math.isnan(p.p50_s)
    assert p.as_ms() == {"p50": None, "p90": None, "p99": None, "mean": None}
    assert Percentiles.of(np.array([0.001, 0.003])).as_ms()["mean"] == pytest.approx(2.0)


def test_goodput_counts_rejected_requests_as_misses():
    records = RequestRecords(
        input_tokens=np.array([10, 10, 10, 10]), output_tokens=np.array([11, 11, 1, 11]),
        arrival_s=np.array([0.0, 0.0, 1.0, 2.0]),
        first_token_s=np.array([0.1, 0.5, 1.1, math.nan]),
        finish_s=np.array([1.1, 3.5, 1.1, math.nan]),  # TPOT 0.1 s, 0.3 s, 0 (one token), rejected
        replica=np.array([0, 0, 0, -1]), rejected=np.array([False, False, False, True]),
    )
    assert records.tpot_s[:3] == pytest.approx([0.1, 0.3, 0.0])
    goodput = _goodput(GoodputTargets(ttft_ms=200, tpot_ms=150), records, duration_s=4.0)
    assert goodput.fraction == 0.5  # requests 0 and 2 meet both targets; the rejected one counts as a miss
    assert goodput.requests_per_s == 0.5 and goodput.tokens_per_s == 3.0
    assert _goodput(GoodputTargets(tpot_ms=400), records, 4.0).fraction == 0.75
    assert _goodput(None, records, 4.0) is None


def test_slo_targets_must_be_positive():
    with pytest.raises(ValueError, match="ttft_ms"):
        GoodputTargets(ttft_ms=0)
