"""LLM-Pilot's joint binned generator: it keeps the trace's marginals and its input/output correlation."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from guide_opt.errors import InputError
from guide_opt.simulate import HistogramLengths, JointBinnedLengths, read_trace_csv, workload_from_spec


def _sample(generator, n=20000, seed=1):
    inputs, outputs = generator.sample(np.random.default_rng(seed), n)
    return inputs, outputs


def test_marginals_match_the_trace(pilot_trace):
    generator = JointBinnedLengths.fit(pilot_trace)
    inputs, outputs = _sample(generator)
    for column, drawn in ((pilot_trace[:, 0], inputs), (pilot_trace[:, 1], outputs)):
        assert stats.ks_2samp(column, drawn).statistic < 0.05
        for q in (25, 50, 75, 90):
            source_q, drawn_q = np.percentile(column, q), np.percentile(drawn, q)
            assert abs(drawn_q - source_q) <= 0.15 * source_q + 2, (q, source_q, drawn_q)


def test_rank_correlation_is_preserved_and_independent_bins_lose_it(pilot_trace):
    source_rho = stats.spearmanr(pilot_trace[:, 0], pilot_trace[:, 1]).statistic
    assert source_rho > 0.5  # the fixture is strongly correlated, as LLM-Pilot's traces are
    joint_rho = stats.spearmanr(*_sample(JointBinnedLengths.fit(pilot_trace))).statistic
    assert abs(joint_rho - source_rho) < 0.05
    # Independent marginal histograms of the same trace (what LLM-Pilot warns against) lose it.
    histogram = HistogramLengths(
        tuple((int(v), float(c)) for v, c in zip(*np.unique(pilot_trace[:, 0], return_counts=True))),
        tuple((int(v), float(c)) for v, c in zip(*np.unique(pilot_trace[:, 1], return_counts=True))),
    )
    assert abs(stats.spearmanr(*_sample(histogram)).statistic) < 0.05


def test_bins_are_equal_count_bounded_and_sparse(pilot_trace):
    generator = JointBinnedLengths.fit(pilot_trace, max_bins_per_column=64)
    assert all(len(edges) <= 64 for edges in generator.lower_edges)
    assert generator.num_joint_bins < len(generator.lower_edges[0]) * len(generator.lower_edges[1])  # correlated: many empty
    assert generator.counts.sum() == len(pilot_trace)
    index = np.searchsorted(generator.lower_edges[0], pilot_trace[:, 0], side="right") - 1
    per_bin = np.bincount(index)
    assert per_bin.max() <= 4 * len(pilot_trace) / len(generator.lower_edges[0])  # about equal counts (ties allowed)
    assert generator.mean_input_tokens == pytest.approx(pilot_trace[:, 0].mean(), rel=0.1)


def test_values_are_interval_centers_and_few_distinct_values_get_their_own_bins():
    data = np.array([[1, 10], [1, 10], [2, 20], [3, 30], [3, 30], [3, 31]])
    generator = JointBinnedLengths.fit(data, max_bins_per_column=64)
    assert generator.values[0].tolist() == [1, 2, 3]
    assert generator.values[1].tolist() == [10, 20, 30, 31]
    inputs, outputs = _sample(generator, n=6000)
    assert set(zip(inputs.tolist(), outputs.tolist())) == {(1, 10), (2, 20), (3, 30), (3, 31)}
    assert np.mean(inputs == 3) == pytest.approx(0.5, abs=0.03)
    wide = JointBinnedLengths.fit(np.array([[v, 1] for v in range(1, 101)]), max_bins_per_column=4)
    assert wide.values[0].tolist() == [13, 38, 63, 88]  # centers of 1-25, 26-50, 51-75, 76-100
    mean_rep = JointBinnedLengths.fit(np.array([[v, 1] for v in range(1, 101)]), max_bins_per_column=4, representative="mean")
    assert mean_rep.mean_input_tokens == pytest.approx(50.5, abs=0.5)


def test_sampling_is_deterministic_under_a_seed(pilot_trace):
    generator = JointBinnedLengths.fit(pilot_trace)
    a, b = _sample(generator, n=100, seed=5), _sample(generator, n=100, seed=5)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[0], _sample(generator, n=100, seed=6)[0])


def test_csv_reading_and_workload_spec(pilot_trace_csv, pilot_trace):
    assert np.array_equal(read_trace_csv(pilot_trace_csv), pilot_trace)
    workload = workload_from_spec({"trace": pilot_trace_csv.name, "trace_bins": 32, "concurrent_users": 8}, base_dir=pilot_trace_csv.parent)
    assert isinstance(workload.lengths, JointBinnedLengths)
    assert all(len(edges) <= 32 for edges in workload.lengths.lower_edges)
    assert workload.arrival == "closed"
    assert workload.spec()["trace_bins"] == 32


def test_csv_errors_name_the_field_and_the_fix(tmp_path):
    with pytest.raises(InputError, match=r"models\[0\]\.workload\.trace: cannot read trace file"):
        workload_from_spec({"trace": str(tmp_path / "missing.csv")}, field="models[0].workload")
    bad = tmp_path / "bad.csv"
    bad.write_text("n_input_tokens,latency_ms\n5,100\n")
    with pytest.raises(InputError, match="no column n_output_tokens.*header row containing n_input_tokens, n_output_tokens"):
        read_trace_csv(bad)
    bad.write_text("n_input_tokens,n_output_tokens\n5,x\n")
    with pytest.raises(InputError, match="line 2: non-numeric"):
        read_trace_csv(bad)
    bad.write_text("n_input_tokens,n_output_tokens\n5,0\n")  # failed requests (no output) are dropped
    with pytest.raises(InputError, match="no row"):
        read_trace_csv(bad)
