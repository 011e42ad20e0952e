"""Decision quality on measured data: what a choice made on predictions is worth in measurements.

Accuracy tables say how far each prediction is from its measurement; a planner is judged by
its choices. Here the measured rows are grouped so that the rows of a group differ only in
what a planner chooses (TP degree, precision, engine) and share everything the user fixes
(LLM, GPU type, request lengths, batch). In each group the option the predictions rank first
is *picked*, and scored by its measured value against the measured best of the group:

- ``share``: measured value of the pick / measured best, for a figure where more is better
  (throughput per GPU); measured best / measured value of the pick where less is better
  (latency). 1.0 when the pick is the measured best.

Two references put the shares in scale: the expected share of a pick drawn uniformly among
the group's options (:attr:`Choice.random_share`), and the share of its worst option
(:attr:`Choice.worst_share`).
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from dataclasses import dataclass
from typing import Callable, Hashable, Iterable

from guide_opt.validation.datasets import Measurement


@dataclass(frozen=True)
class Option:
    """One measured row of a group with the figure a planner ranks it by: predicted and measured."""

    measurement: Measurement
    predicted: float
    measured: float


@dataclass(frozen=True)
class Choice:
    """The pick of one group and what it is worth in measurements (see the module doc)."""

    group: Hashable
    options: tuple[Option, ...]
    picked: Option
    best: Option
    higher_is_better: bool

    def _share(self, option: Option) -> float:
        if self.higher_is_better:
            return option.measured / self.best.measured
        return self.best.measured / option.measured

    @property
    def share(self) -> float:
        """The pick's measured value relative to the measured best (1.0: the best was picked)."""
        return self._share(self.picked)

    @property
    def random_share(self) -> float:
        """Expected share of an option drawn uniformly from the group."""
        return statistics.fmean(self._share(o) for o in self.options)

    @property
    def worst_share(self) -> float:
        """Share of the group's worst option."""
        return min(self._share(o) for o in self.options)


def choose(options: Iterable[Option], group_of: Callable[[Measurement], Hashable], *, higher_is_better: bool) -> list[Choice]:
    """One :class:`Choice` per group of at least two options: the best predicted option against the best measured one.

    Groups are keyed by ``group_of(measurement)``. Ties in the prediction go to the option met
    first (the order of ``options``), so the pick does not depend on the measurements.
    """
    groups: dict[Hashable, list[Option]] = defaultdict(list)
    for option in options:
        groups[group_of(option.measurement)].append(option)
    sign = 1.0 if higher_is_better else -1.0
    choices = []
    for group, members in groups.items():
        if len(members) < 2:
            continue
        picked = max(members, key=lambda o: sign * o.predicted)
        best = max(members, key=lambda o: sign * o.measured)
        choices.append(Choice(group, tuple(members), picked, best, higher_is_better))
    return choices


@dataclass(frozen=True)
class ChoiceSummary:
    """Shares of a set of choices: count, best picked, mean and worst share of the picks, and the references."""

    groups: int
    best_picked: int
    mean_share: float
    worst_share: float
    mean_random_share: float
    mean_worst_option_share: float


def summarize_choices(choices: list[Choice]) -> ChoiceSummary:
    """Summary of ``choices`` (at least one)."""
    if not choices:
        raise ValueError("no choices to summarize")
    shares = [c.share for c in choices]
    return ChoiceSummary(
        groups=len(choices), best_picked=sum(c.share >= 1.0 for c in choices), mean_share=statistics.fmean(shares),
        worst_share=min(shares), mean_random_share=statistics.fmean(c.random_share for c in choices),
        mean_worst_option_share=statistics.fmean(c.worst_share for c in choices),
    )
