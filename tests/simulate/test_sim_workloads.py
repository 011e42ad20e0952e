"""Workloads: fixed lengths, presets, histograms, arrivals, and the problem-file form with its errors."""

from __future__ import annotations

import numpy as np
import pytest

from guide_opt.errors import InputError
from guide_opt.simulate import PRESET_SOURCES, PRESETS, FixedLengths, HistogramLengths, Workload, preset_lengths, workload_from_spec


def test_presets_are_sourced_and_have_the_documented_means():
    assert set(PRESETS) == {"short", "long", "conversational"} == set(PRESET_SOURCES)
    assert PRESETS["short"] == FixedLengths(128, 256)
    assert PRESETS["long"] == FixedLengths(1024, 256)
    conversational = PRESETS["conversational"]
    assert conversational.mean_input_tokens == pytest.approx(161.31, rel=0.01)  # ShareGPT, vLLM paper Fig. 11
    assert conversational.mean_output_tokens == pytest.approx(337.99, rel=0.01)
    assert "vLLM" in PRESET_SOURCES["conversational"] and "GUIDE" in PRESET_SOURCES["short"]


def test_histogram_draws_bins_in_proportion_to_their_weights():
    lengths = HistogramLengths(((100, 1.0), (300, 3.0)), ((10, 2.0), (50, 2.0)))
    inputs, outputs = lengths.sample(np.random.default_rng(0), 40000)
    assert set(np.unique(inputs)) == {100, 300} and set(np.unique(outputs)) == {10, 50}
    assert np.mean(inputs == 300) == pytest.approx(0.75, abs=0.01)
    assert np.mean(outputs == 50) == pytest.approx(0.5, abs=0.01)
    assert lengths.mean_input_tokens == 250 and lengths.mean_output_tokens == 30
    with pytest.raises(ValueError, match="zero"):
        HistogramLengths(((100, 0.0),), ((10, 1.0),))


def test_arrival_kinds():
    lengths = FixedLengths(10, 5)
    assert Workload.open_loop(lengths, 2.0).arrival == "poisson"
    assert Workload.closed_loop(lengths, 3).arrival == "closed"
    assert Workload.burst(lengths).arrival == "burst"
    with pytest.raises(ValueError, match="not both"):
        Workload(lengths, request_rate_per_s=1.0, concurrent_users=2)
    with pytest.raises(ValueError):
        Workload(lengths, request_rate_per_s=0.0)


@pytest.mark.parametrize("spec, expected", [
    ({"input_tokens": 1024, "output_tokens": 256, "request_rate_per_s": 20}, FixedLengths(1024, 256)),
    ({"preset": "long", "concurrent_users": 16}, PRESETS["long"]),
])
def test_spec_forms(spec, expected):
    workload = workload_from_spec(spec)
    assert workload.lengths == expected
    assert workload.mean_token_lengths() == (expected.input_tokens, expected.output_tokens)


def test_histogram_spec_round_trips():
    spec = {"histogram": {"input": [[128, 1], [2048, 0.5]], "output": [[64, 2]]}}
    workload = workload_from_spec(spec)
    assert workload.arrival == "burst"
    assert workload.spec() == {"histogram": {"input": [[128, 1.0], [2048, 0.5]], "output": [[64, 2.0]]}}
    assert workload.mean_token_lengths() == (768, 64)


@pytest.mark.parametrize("spec, field, message", [
    ({"input_tokens": 10}, r"w\.output_tokens", "required with the other"),
    ({"preset": "shrot"}, r"w\.preset", "did you mean short"),
    ({"preset": "short", "input_tokens": 5, "output_tokens": 5}, "w", "several length forms"),
    ({"request_rate_per_s": 3}, "w", "no token lengths"),
    ({"preset": "short", "request_rate_per_s": 3, "concurrent_users": 2}, r"w\.concurrent_users", "both"),
    ({"histogram": {"input": [[128, -1]], "output": [[64, 1]]}}, r"w\.histogram\.input\[0\]\[1\]", "greater than 0"),
    ({"histogram": {"input": [], "output": [[64, 1]]}}, r"w\.histogram\.input", "no bins"),
    ({"preset": "short", "rate": 3}, r"w\.rate", "unknown key"),
    ({"input_tokens": 0, "output_tokens": 5}, r"w\.input_tokens", "greater than 0"),
    ({"preset": "short", "trace_bins": 8}, r"w\.trace_bins", "only to a trace"),
    ("short", "w", "expected a mapping"),
])
def test_spec_errors_name_the_field(spec, field, message):
    with pytest.raises(InputError, match=f"^{field}: .*{message}"):
        workload_from_spec(spec, field="w")


def test_unknown_preset_lists_the_choices():
    with pytest.raises(InputError, match="use one of short, long, conversational"):
        preset_lengths("zzz")


def test_range_lengths_are_vllm_random_dataset_lengths():
    # vLLM's RandomDataset: input uniform on int(1024 x 0.5) .. int(1024 x 1.5) = 512 .. 1536, output on
    # 128 .. 384 for 256 tokens; the means are the middles (1024, 256), the longest request 1536 + 384.
    from guide_opt.simulate import RangeLengths

    lengths = RangeLengths(1024, 256, 0.5)
    inputs, outputs = lengths.sample(np.random.default_rng(0), 20_000)
    assert inputs.min() == 512 and inputs.max() == 1536 and outputs.min() == 128 and outputs.max() == 384
    assert lengths.mean_input_tokens == 1024 and lengths.mean_output_tokens == 256 and lengths.longest_tokens == 1536 + 384
    assert abs(inputs.mean() - 1024) < 5 and abs(outputs.mean() - 256) < 2


def test_the_closed_loop_spread_stays_within_the_context():
    # 1024 + 512 tokens: +-50% fits a 40,960-token context; a 2,048-token context leaves room for
    # 2048 / 1536 - 1 = 1/3 (the longest request then 1365 + 682 = 2047 tokens); a full context none.
    from guide_opt.simulate import RangeLengths, closed_loop_range_ratio

    assert closed_loop_range_ratio(1024, 512, 40_960) == 0.5
    ratio = closed_loop_range_ratio(1024, 512, 2048)
    assert ratio == pytest.approx(1 / 3)
    assert RangeLengths(1024, 512, ratio).longest_tokens <= 2048
    assert closed_loop_range_ratio(1024, 1024, 2048) == 0.0
