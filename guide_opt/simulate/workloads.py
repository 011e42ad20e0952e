"""Request streams for the simulator: token lengths (:class:`LengthDistribution`) and arrivals (:class:`Workload`).

Lengths (``input_tokens`` = prompt, ``output_tokens`` = generated tokens per request):

- :class:`FixedLengths` -- every request the same.
- :data:`PRESETS` -- ``short``, ``long``, ``conversational`` (GUIDE's web form offers these three
  names without numbers; the numbers are guide-opt's, sourced in :data:`PRESET_SOURCES`).
- :class:`HistogramLengths` -- independent input and output histograms of ``(tokens, weight)``.
- :class:`~guide_opt.simulate.trace_generator.JointBinnedLengths` -- LLM-Pilot's generator:
  joint multi-dimensional bins fitted to a trace, preserving the input/output correlation.

Arrivals (:class:`Workload`): open loop (Poisson, ``request_rate_per_s``), closed loop
(``concurrent_users`` users, each sending its next request the moment the previous one
completes, no think time, as in LLM-Pilot's load tests), or a burst (every request present at
t = 0, an offline batch job).

The problem-file form of a workload is parsed by :mod:`guide_opt.simulate.workload_spec`.
"""

from __future__ import annotations

import abc
import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from guide_opt.errors import InputError, closest_ids


class LengthDistribution(abc.ABC):
    """A distribution of (input_tokens, output_tokens) pairs, sampled with a numpy Generator."""

    @abc.abstractmethod
    def sample(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Draw ``n`` requests: (input_tokens, output_tokens), two int64 arrays of values >= 1."""

    @property
    @abc.abstractmethod
    def mean_input_tokens(self) -> float:
        """Expected prompt tokens per request."""

    @property
    @abc.abstractmethod
    def mean_output_tokens(self) -> float:
        """Expected generated tokens per request."""

    @abc.abstractmethod
    def spec(self) -> dict[str, Any]:
        """A JSON-able description (the workload-spec form where one exists)."""


@dataclass(frozen=True)
class FixedLengths(LengthDistribution):
    """Every request has ``input_tokens`` prompt tokens and ``output_tokens`` generated tokens."""

    input_tokens: int
    output_tokens: int

    def __post_init__(self) -> None:
        if self.input_tokens < 1 or self.output_tokens < 1:
            raise ValueError("input_tokens and output_tokens must be at least 1")

    def sample(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        """``n`` copies of the fixed pair (the generator is not advanced)."""
        return np.full(n, self.input_tokens, dtype=np.int64), np.full(n, self.output_tokens, dtype=np.int64)

    @property
    def mean_input_tokens(self) -> float:
        """The fixed prompt length."""
        return float(self.input_tokens)

    @property
    def mean_output_tokens(self) -> float:
        """The fixed output length."""
        return float(self.output_tokens)

    def spec(self) -> dict[str, Any]:
        """``{"input_tokens": ..., "output_tokens": ...}``."""
        return {"input_tokens": self.input_tokens, "output_tokens": self.output_tokens}


#: ``vllm bench serve --random-range-ratio`` of a closed-loop load test, and the spread the plan check
#: simulates users' lengths with (:class:`RangeLengths`). Users of equal lengths with zero think time
#: stay in lock-step forever -- they start together, finish in the same step and send their next
#: prompts together, a burst repeated, not a steady state (a 64-user Qwen3-32B plan: median TTFT 369 ms
#: in lock-step, 63 ms spread) -- while real users' lengths differ and drift apart. Lengths uniform
#: within +-50% of the stated ones let a load test and the simulator reach the steady state the
#: serving model predicts (given their means).
CLOSED_LOOP_RANGE_RATIO = 0.5


def closed_loop_range_ratio(input_tokens: int, output_tokens: int, context_tokens: int) -> float:
    """:data:`CLOSED_LOOP_RANGE_RATIO`, or less where the longest spread request would pass the LLM's context."""
    return max(0.0, min(CLOSED_LOOP_RANGE_RATIO, context_tokens / (input_tokens + output_tokens) - 1.0))


def users_lengths(lengths: "LengthDistribution", context_tokens: int) -> "LengthDistribution":
    """The lengths closed-loop users are simulated and load-tested with: stated (fixed) lengths spread by
    :func:`closed_loop_range_ratio` (:class:`RangeLengths`), a preset, histogram or trace as it is."""
    if isinstance(lengths, FixedLengths):
        return RangeLengths(lengths.input_tokens, lengths.output_tokens,
                            closed_loop_range_ratio(lengths.input_tokens, lengths.output_tokens, context_tokens))
    return lengths


@dataclass(frozen=True)
class RangeLengths(LengthDistribution):
    """Lengths uniform around stated ones, as ``vllm bench serve``'s random dataset draws them.

    Each input is uniform on the integers ``floor(I (1 - r)) .. floor(I (1 + r))`` and each output on
    ``floor(O (1 - r)) .. floor(O (1 + r))`` (at least 1), independently (``RandomDataset`` of
    vLLM's ``benchmarks/datasets.py``).
    """

    input_tokens: int
    output_tokens: int
    range_ratio: float

    def __post_init__(self) -> None:
        if self.input_tokens < 1 or self.output_tokens < 1:
            raise ValueError("input_tokens and output_tokens must be at least 1")
        if not 0 <= self.range_ratio < 1:
            raise ValueError("range_ratio must be in [0, 1)")

    def _bounds(self, tokens: int) -> tuple[int, int]:
        return max(1, int(tokens * (1 - self.range_ratio))), max(1, int(tokens * (1 + self.range_ratio)))

    def sample(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Inputs then outputs, each uniform on its integer range."""
        (i_low, i_high), (o_low, o_high) = self._bounds(self.input_tokens), self._bounds(self.output_tokens)
        return rng.integers(i_low, i_high + 1, size=n, dtype=np.int64), rng.integers(o_low, o_high + 1, size=n, dtype=np.int64)

    @property
    def longest_tokens(self) -> int:
        """The longest request drawn: the top of both ranges."""
        return self._bounds(self.input_tokens)[1] + self._bounds(self.output_tokens)[1]

    @property
    def mean_input_tokens(self) -> float:
        """The middle of the input range."""
        return sum(self._bounds(self.input_tokens)) / 2

    @property
    def mean_output_tokens(self) -> float:
        """The middle of the output range."""
        return sum(self._bounds(self.output_tokens)) / 2

    def spec(self) -> dict[str, Any]:
        """``{"input_tokens": ..., "output_tokens": ..., "range_ratio": ...}``."""
        return {"input_tokens": self.input_tokens, "output_tokens": self.output_tokens, "range_ratio": self.range_ratio}


def _normalise_bins(bins: Any, name: str) -> tuple[tuple[int, float], ...]:
    pairs = tuple((int(tokens), float(weight)) for tokens, weight in bins)
    if not pairs:
        raise ValueError(f"{name} histogram is empty")
    if any(tokens < 1 for tokens, _ in pairs) or any(not (weight >= 0 and math.isfinite(weight)) for _, weight in pairs):
        raise ValueError(f"{name} histogram needs tokens >= 1 and finite weights >= 0")
    if sum(weight for _, weight in pairs) <= 0:
        raise ValueError(f"{name} histogram weights sum to zero")
    return pairs


@dataclass(frozen=True)
class HistogramLengths(LengthDistribution):
    """Independent input and output lengths, each drawn from ``(tokens, weight)`` bins.

    A bin is a point mass: a draw returns exactly its ``tokens``. Weights need not sum to 1.
    Input and output are independent (use :class:`~guide_opt.simulate.trace_generator.JointBinnedLengths`
    to keep their correlation).
    """

    input_bins: tuple[tuple[int, float], ...]
    output_bins: tuple[tuple[int, float], ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "input_bins", _normalise_bins(self.input_bins, "input"))
        object.__setattr__(self, "output_bins", _normalise_bins(self.output_bins, "output"))

    @staticmethod
    def _draw(rng: np.random.Generator, bins: tuple[tuple[int, float], ...], n: int) -> np.ndarray:
        tokens = np.array([t for t, _ in bins], dtype=np.int64)
        weights = np.array([w for _, w in bins], dtype=float)
        return tokens[rng.choice(tokens.size, size=n, p=weights / weights.sum())]

    def sample(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Draw inputs then outputs, each bin with probability proportional to its weight."""
        return self._draw(rng, self.input_bins, n), self._draw(rng, self.output_bins, n)

    @staticmethod
    def _mean(bins: tuple[tuple[int, float], ...]) -> float:
        return sum(t * w for t, w in bins) / sum(w for _, w in bins)

    @property
    def mean_input_tokens(self) -> float:
        """Weighted mean of the input bins."""
        return self._mean(self.input_bins)

    @property
    def mean_output_tokens(self) -> float:
        """Weighted mean of the output bins."""
        return self._mean(self.output_bins)

    def spec(self) -> dict[str, Any]:
        """``{"histogram": {"input": [[tokens, weight], ...], "output": [...]}}``."""
        return {"histogram": {"input": [list(b) for b in self.input_bins], "output": [list(b) for b in self.output_bins]}}


# ---- presets ---------------------------------------------------------------------------------
#: ShareGPT-like conversational lengths: 16 equal-weight bins per side, each the conditional mean
#: of one sixteenth of a lognormal with the ShareGPT means (input 161, output 338 tokens) and
#: guide-opt's chosen log-space spreads (sigma 1.0 input, 0.8 output). Independent sides.
_CONVERSATIONAL_INPUT = (15, 26, 36, 45, 55, 65, 77, 90, 106, 124, 146, 175, 213, 270, 370, 764)
_CONVERSATIONAL_OUTPUT = (53, 85, 109, 132, 154, 178, 203, 231, 262, 297, 339, 391, 458, 553, 712, 1252)

#: Preset name -> length distribution. GUIDE's form (Figure 12) offers "Short / Long /
#: Conversational" without numbers; these numbers are guide-opt's choices, sourced below.
PRESETS: dict[str, LengthDistribution] = {
    "short": FixedLengths(128, 256),
    "long": FixedLengths(1024, 256),
    "conversational": HistogramLengths(tuple((t, 1.0) for t in _CONVERSATIONAL_INPUT), tuple((t, 1.0) for t in _CONVERSATIONAL_OUTPUT)),
}

#: Where each preset's numbers come from (and what is guide-opt's own choice).
PRESET_SOURCES: dict[str, str] = {
    "short": "128 prompt / 256 output tokens: the shortest prompt and the fixed output length of GUIDE's evaluation "
             "(arXiv 2412.04788 Sec. 5.1: prompts 128-1024, outputs fixed at 256); choosing them as 'short' is guide-opt's",
    "long": "1024 prompt / 256 output tokens: the longest prompt and the fixed output of GUIDE's evaluation (Sec. 5.1); "
            "choosing them as 'long' is guide-opt's",
    "conversational": "ShareGPT means as reported by the vLLM paper (Kwon et al., SOSP 2023, Fig. 11: mean input 161.31, "
                      "mean output 337.99 tokens; not re-measured here); the lognormal shape (sigma 1.0 / 0.8), the 16-bin "
                      "discretisation and independence of input and output are guide-opt choices",
}


# ---- arrivals --------------------------------------------------------------------------------
Arrival = Literal["poisson", "closed", "burst"]


@dataclass(frozen=True)
class Workload:
    """Token lengths plus an arrival process.

    request_rate_per_s: open loop, Poisson arrivals at this mean rate (requests/s).
    concurrent_users: closed loop, this many users each with one request in flight.
    Neither: a burst, every request present at t = 0 (an offline batch job). Not both.
    """

    lengths: LengthDistribution
    request_rate_per_s: float | None = None
    concurrent_users: int | None = None

    def __post_init__(self) -> None:
        if self.request_rate_per_s is not None and self.concurrent_users is not None:
            raise ValueError("give request_rate_per_s or concurrent_users, not both")
        if self.request_rate_per_s is not None and not (self.request_rate_per_s > 0 and math.isfinite(self.request_rate_per_s)):
            raise ValueError(f"request_rate_per_s must be positive and finite, got {self.request_rate_per_s}")
        if self.concurrent_users is not None and self.concurrent_users < 1:
            raise ValueError(f"concurrent_users must be at least 1, got {self.concurrent_users}")

    @property
    def arrival(self) -> Arrival:
        """``poisson`` (open loop), ``closed`` (closed loop) or ``burst``."""
        if self.request_rate_per_s is not None:
            return "poisson"
        return "closed" if self.concurrent_users is not None else "burst"

    @staticmethod
    def open_loop(lengths: LengthDistribution, request_rate_per_s: float) -> "Workload":
        """Poisson arrivals at ``request_rate_per_s``."""
        return Workload(lengths, request_rate_per_s=request_rate_per_s)

    @staticmethod
    def closed_loop(lengths: LengthDistribution, concurrent_users: int) -> "Workload":
        """``concurrent_users`` users, each sending its next request when the previous completes."""
        return Workload(lengths, concurrent_users=concurrent_users)

    @staticmethod
    def burst(lengths: LengthDistribution) -> "Workload":
        """Every request arrives at t = 0."""
        return Workload(lengths)

    def mean_token_lengths(self) -> tuple[int, int]:
        """Mean (input_tokens, output_tokens) per request rounded to whole tokens (>= 1): the static model's inputs."""
        return max(1, round(self.lengths.mean_input_tokens)), max(1, round(self.lengths.mean_output_tokens))

    def spec(self) -> dict[str, Any]:
        """JSON-able description: the lengths' spec plus the arrival keys."""
        out = dict(self.lengths.spec())
        if self.request_rate_per_s is not None:
            out["request_rate_per_s"] = self.request_rate_per_s
        if self.concurrent_users is not None:
            out["concurrent_users"] = self.concurrent_users
        return out


def preset_lengths(name: str, *, field: str = "preset") -> LengthDistribution:
    """The preset ``name`` (see :data:`PRESETS`), or an :class:`InputError` naming ``field``."""
    try:
        return PRESETS[name]
    except KeyError:
        near = closest_ids(name, list(PRESETS))
        hint = f"did you mean {', '.join(near)}?" if near else f"use one of {', '.join(PRESETS)}"
        raise InputError(field, f"unknown preset '{name}'", hint) from None
