"""Decision quality: picks on predictions scored by measurements, every expected share computed by hand."""

from __future__ import annotations

import pytest

from guide_opt.validation.datasets import Measurement
from guide_opt.validation.decisions import Option, choose, summarize_choices


def _option(llm: str, tp: int, predicted: float, measured: float) -> Option:
    return Option(Measurement("hand", llm, "h100-sxm", "vllm", "bf16", tp, 8, 128, 128, {}), predicted, measured)


def _by_llm(m: Measurement) -> str:
    return m.llm


def test_more_is_better_pick_is_scored_by_its_measurement():
    # Group a: predictions rank TP 2 first (90), measurements TP 1 (100): share 80 / 100 = 0.8.
    # Uniform pick: (100/100 + 80/100 + 40/100) / 3 = 0.7333...; worst option 0.4.
    # Group b: TP 4 predicted and measured best: share 1.
    options = [_option("a", 1, 70.0, 100.0), _option("a", 2, 90.0, 80.0), _option("a", 4, 10.0, 40.0),
               _option("b", 1, 5.0, 50.0), _option("b", 4, 9.0, 60.0)]
    choices = {c.group: c for c in choose(options, _by_llm, higher_is_better=True)}
    assert choices["a"].picked.measurement.tp == 2 and choices["a"].best.measurement.tp == 1
    assert choices["a"].share == pytest.approx(0.8)
    assert choices["a"].random_share == pytest.approx((1.0 + 0.8 + 0.4) / 3)
    assert choices["a"].worst_share == pytest.approx(0.4)
    assert choices["b"].share == 1.0
    summary = summarize_choices(list(choices.values()))
    assert (summary.groups, summary.best_picked) == (2, 1)
    assert summary.mean_share == pytest.approx(0.9)
    assert summary.worst_share == pytest.approx(0.8)
    assert summary.mean_random_share == pytest.approx(((1.0 + 0.8 + 0.4) / 3 + (50 / 60 + 1.0) / 2) / 2)


def test_less_is_better_share_is_best_over_pick():
    # Latencies: predicted fastest TP 4 (1.0 s), measured fastest TP 2 (2.0 s); the pick measured 2.5 s: share 2.0 / 2.5.
    options = [_option("a", 2, 1.5, 2.0), _option("a", 4, 1.0, 2.5)]
    (choice,) = choose(options, _by_llm, higher_is_better=False)
    assert choice.picked.measurement.tp == 4 and choice.best.measurement.tp == 2
    assert choice.share == pytest.approx(0.8)
    assert choice.worst_share == pytest.approx(0.8)


def test_groups_of_one_option_are_no_choice_and_ties_go_to_the_first():
    options = [_option("solo", 1, 1.0, 1.0), _option("tie", 1, 3.0, 30.0), _option("tie", 2, 3.0, 60.0)]
    (choice,) = choose(options, _by_llm, higher_is_better=True)
    assert choice.group == "tie"
    assert choice.picked.measurement.tp == 1  # equal predictions: the first option, whatever was measured
    assert choice.share == pytest.approx(0.5)


def test_measured_ties_count_as_the_best_picked():
    options = [_option("a", 1, 1.0, 50.0), _option("a", 2, 2.0, 50.0)]
    summary = summarize_choices(choose(options, _by_llm, higher_is_better=True))
    assert summary.best_picked == 1 and summary.mean_share == 1.0


def test_no_choices_is_an_error():
    with pytest.raises(ValueError):
        summarize_choices([])
