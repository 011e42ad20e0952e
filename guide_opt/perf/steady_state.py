"""Steady-state serving of one replica under continuous batching (:func:`open_loop`, :func:`closed_loop`).

The static estimator (:mod:`guide_opt.perf.estimator`) answers "a batch of prompts arrives at
once, then decodes together". A running server sees something else: requests arrive one by
one, and each engine step (decode-first, chunked) carries one decode token of every running
request *plus* the prompt tokens of the requests that just arrived. This module predicts the
metrics a load test of such a server reports (``vllm bench serve``: mean / median / p90 / p99
TTFT, TPOT, ITL, output throughput) from :func:`guide_opt.perf.step.step_time` alone, with a
mean-value queueing model. The simulator (:mod:`guide_opt.simulate`) is the reference it is
compared with (``benchmarks/bench_steady_state.py``).

Notation: prompt ``P`` tokens, output ``O`` tokens, ``B`` = ``config.batch`` (max-num-seqs),
``T`` = the engine's token budget per step, ``n`` sequences decoding in a step.

- **Windows.** Prompts that arrive while the engine runs one *window* of steps are prefilled in
  the next window, decode-first: each step carries the ``n`` decodes and up to ``T - n`` prompt
  tokens (``whole`` engines: whole prompts), exactly the estimator's prefill schedule
  (:func:`guide_opt.perf.estimator.prefill_schedule`) with the decodes added to every step. A
  window with no prompt is one pure decode step. :class:`StepTable` times windows of ``k``
  prompts next to ``n`` decodes with :func:`~guide_opt.perf.step.step_time`, exactly on grids of
  ``n`` and ``k`` and linearly in between.
- **TPOT** (mean-value fixed point): with ``K ~ Poisson(lambda W)`` prompts per window, the mean
  window ``W = E[time(n, K)]`` and a decoding request's mean step ``TPOT = E[time] / E[steps]``;
  the decoders it sees are ``n = 1 + lambda (O - 1) TPOT`` (itself plus the others, Little's
  law; Poisson arrivals see time averages), at most ``B``. Iterated from below to the smallest
  fixed point, accelerated where the iteration creeps (Aitken's step, regula falsi once the
  window is bracketed, steps of doubling length while the map expands); none below
  :data:`MAX_PROMPTS_PER_WINDOW` prompts per window means the load is beyond capacity.
- **TTFT** = the rest of the window in progress at arrival + the prompt's first-token time in
  the next window among the prompts that arrived with it (FCFS) + waiting for a free sequence
  slot when ``B`` binds: the requests in the system are negative binomial, over-dispersed by
  the prefill stalls every running request shares and by the slowdown of each step with more
  decoders (:func:`slot_dispersion`), an arrival waits when it finds ``B`` of them, and then for
  the M/D/c wait at the rate full slots drain, scaled by that dispersion (:func:`slot_waiting`).
  The windows an arrival finds (next to the ``lambda (O - 1) TPOT`` decoders it finds) follow
  the Markov chain of their prompt counts, ``K' ~ Poisson(lambda time(n, K))``: an arrival
  finds a window of ``k`` prompts in proportion to its stationary probability times its length,
  and a long window also means many companions in the next one, so the first two parts are
  mixed over ``k`` rather than drawn apart (:func:`_arrival_ttft`).
- **Percentiles** come from the distributions of those parts (window lengths and positions,
  the Poisson counts, the slot wait: none with the probability of finding a free slot, else
  Erlang of shape 2). Per-request TPOT is the mean of ``O - 1`` step times (percentiles by
  Cornish-Fisher from the step-time distribution) plus, in an open loop, the variance the load
  a request meets adds: the decoders and prompts around it slow its steps together and lengthen
  the lives of the requests that do so (:func:`tpot_load_variance_s2`, a linear response with
  the gains of :func:`slot_gains`); ITL is one step time.
- **Closed loop** (``U`` users, zero think time): the interactive response-time law
  ``X = min(U, B) / (first token + (O - 1) TPOT)`` solved self-consistently with TPOT (regula
  falsi); users beyond ``B`` wait ``(U - B) / X`` for a slot. A request arrives when its user's
  previous one finishes, at a step boundary: no residual, it shares its first window with the
  requests of the users whose answers finished in the same step. ``X`` cannot exceed the rate
  at which prompt windows grow without bound (the steps' token budget, taken by the decodes
  first, admits only so many prompts): beyond it the loop is prefill-bound, ``X`` is that rate,
  TPOT that of its steps, and the prompts queue for their prefill.
- **Capacity** (:func:`capacity_request_rate_per_s`): the smaller of the rate at which windows
  grow without bound (each extra prompt's time ``s(n)`` times the rate reaches 1) and the rate at
  which the slots fill (found to :data:`CAPACITY_TOLERANCE`, each try's holding time bounding
  it from the other side); plans keep the load within ``target_utilization`` of it.

With equal lengths, at vanishing load every figure reduces to the static estimate of a single
request (its prefill step, then decode steps of one sequence), and a closed loop of one user is
exactly that request end to end. ``benchmarks/bench_steady_state.py`` compares the model with the
simulator (``benchmarks/RESULTS.md`` section 11).
"""

from __future__ import annotations

import bisect
import dataclasses
import functools
import hashlib
import json
import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from guide_opt.perf.config import ServingConfig
from guide_opt.perf.estimator import prefill_steps
from guide_opt.perf.step import StepShape, step_time

#: Decode counts at which step times are evaluated exactly (interpolated in between).
DECODE_GRID = (0, 1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048, 3072, 4096)
#: Support points kept per discrete distribution when composing percentiles.
DISTRIBUTION_POINTS = 96
#: Percentiles reported (the SLO may name 50, 90 or 99).
PERCENTILES = (50, 90, 99)
#: Fixed-point iterations before a load is declared beyond capacity.
MAX_ITERATIONS = 300
#: Relative change of TPOT at which the fixed point has converged.
CONVERGENCE = 1e-4
#: A queue whose utilization reaches this is unstable (its waiting time is unbounded).
STABILITY_LIMIT = 0.999
#: Steps from which a window counts as long: windows are evaluated exactly up to this many full steps.
LINEAR_WINDOW_STEPS = 4
#: Rounds of the closed loop's first-token time around its TPOT root.
CLOSED_LOOP_ROUNDS = 20
#: Most prompts one window may receive on average before the load counts as beyond capacity.
MAX_PROMPTS_PER_WINDOW = 2048
#: Relative precision of capacity and SLO-limited rates.
CAPACITY_TOLERANCE = 1e-2
#: Default target utilization of planned replicas (open loop): load / capacity.
DEFAULT_TARGET_UTILIZATION = 0.8


@dataclass(frozen=True)
class LatencyDistribution:
    """Mean and percentiles of one latency (s)."""

    mean_s: float
    p50_s: float
    p90_s: float
    p99_s: float

    def at(self, percentile: int) -> float:
        """The ``percentile`` (50, 90 or 99) in seconds."""
        return {50: self.p50_s, 90: self.p90_s, 99: self.p99_s}[percentile]

    def as_ms(self) -> dict[str, float]:
        """``{mean, p50, p90, p99}`` in milliseconds."""
        return {"mean": self.mean_s * 1e3, "p50": self.p50_s * 1e3, "p90": self.p90_s * 1e3, "p99": self.p99_s * 1e3}


@dataclass(frozen=True)
class SteadyState:
    """Steady-state metrics of one replica at one load.

    mode: ``open_loop`` (Poisson arrivals at ``request_rate_per_s``) or ``closed_loop``
    (``concurrent_users`` users, zero think time). stable: False when the load is beyond
    capacity (then every latency is ``inf``). request_rate_per_s: requests completed per second
    (the offered rate in an open loop, the response-time law's throughput in a closed one).
    utilization: ``request_rate_per_s`` / the replica's capacity (NaN when a capacity of 0 was
    passed: not computed). decode_sequences: mean sequences decoding in a step, as a decoding
    request sees it (itself included). slot_dispersion / slot_wait_probability (open loop): the
    variance / mean of the requests in the system (:func:`slot_dispersion`) and the share of
    arrivals that find every sequence slot held and wait (:func:`slot_waiting`); NaN / 0 for a
    closed loop, whose users beyond the slots wait by the response-time law instead.
    """

    mode: str
    stable: bool
    request_rate_per_s: float
    concurrent_users: float | None
    utilization: float
    ttft: LatencyDistribution
    tpot: LatencyDistribution
    itl: LatencyDistribution
    e2e_mean_s: float
    decode_sequences: float
    output_tokens: int
    slot_dispersion: float = math.nan
    slot_wait_probability: float = 0.0

    @property
    def output_throughput_tokens_per_s(self) -> float:
        """Generated tokens per second of the replica."""
        return self.request_rate_per_s * self.output_tokens

    def metrics(self) -> dict[str, object]:
        """A ``vllm bench serve``-style summary in ms and tokens/s."""
        return {
            "mode": self.mode, "stable": self.stable, "request_rate_per_s": self.request_rate_per_s,
            "concurrent_users": self.concurrent_users, "utilization": self.utilization,
            "ttft_ms": self.ttft.as_ms(), "tpot_ms": self.tpot.as_ms(), "itl_ms": self.itl.as_ms(),
            "e2e_mean_ms": self.e2e_mean_s * 1e3, "output_throughput_tokens_per_s": self.output_throughput_tokens_per_s,
        }


#: The latencies of a load beyond capacity.
UNSTABLE = LatencyDistribution(math.inf, math.inf, math.inf, math.inf)


# ---- step times on a grid of decode counts ----------------------------------------------------
@dataclass(frozen=True)
class Window:
    """The engine steps that prefill ``k`` prompts arriving together next to ``n`` running decodes.

    time_s: the steps' total time; step_s: each step's time; finish_s: each prompt's first-token
    time from the window's start (FCFS, as :func:`guide_opt.perf.estimator.prefill_schedule`
    orders them). With no prompt, a window is one pure decode step (none when ``n = 0``).
    """

    time_s: float
    step_s: tuple[float, ...]
    finish_s: tuple[float, ...]

    @property
    def steps(self) -> int:
        """Engine steps in the window."""
        return len(self.step_s)


def prompt_grid(top: int) -> np.ndarray:
    """Prompt counts at which windows are evaluated exactly: 0..8, then steps of about 25% up to at least ``top``."""
    points = list(range(9))
    while points[-1] < top:
        points.append(math.ceil(points[-1] * 1.25))
    return np.array(points, dtype=int)


@dataclass(frozen=True)
class TableMemory:
    """A :class:`StepTable`'s memoised answers and step times (:meth:`StepTable.kept`), to start another table of
    the same :func:`table_identity` from (:meth:`StepTable.start_from`)."""

    answers: dict[tuple, object]
    step_times: dict[StepShape, float]


def table_identity(config: ServingConfig) -> str:
    """What a :class:`StepTable` of ``config`` depends on, as a digest: the configuration less its ``batch``
    (one table serves every max-num-seqs of a shape). Tables of equal identity compute equal answers."""
    fields = {f.name: getattr(config, f.name) for f in dataclasses.fields(config) if f.name != "batch"}
    plain = {k: v.model_dump(mode="json") if hasattr(v, "model_dump") else v for k, v in fields.items()}
    return hashlib.sha256(json.dumps(plain, sort_keys=True, default=repr).encode()).hexdigest()


class StepTable:
    """Engine-step windows of one configuration as functions of the decode count ``n`` and prompts ``k``.

    Windows are evaluated exactly (:func:`~guide_opt.perf.step.step_time`) at the decode counts
    of :data:`DECODE_GRID` plus the max-num-seqs, and interpolated linearly in between. The
    table depends on the configuration's LLM, hardware, engine and lengths but not on its
    ``batch``: one table serves every max-num-seqs of a shape (pass it to :func:`open_loop`,
    :func:`closed_loop` and :func:`capacity_request_rate_per_s`; the max-num-seqs they use is
    their ``config.batch``). Evaluations are memoised per integer decode count.

    The table also memoises the answers of the functions it is passed to, keyed by their
    arguments (max-num-seqs, load, SLO limits; :meth:`memo`): they are pure functions of the
    table and those arguments, so a table shared by the batch sizes of a shape and by the LLMs
    of a fleet that serve the same LLM at the same lengths answers each question once, with
    exactly the figures a fresh table gives. A closed loop's core is keyed by the slots that
    stand for its max-num-seqs (:func:`grid_slots`), so the batch sizes at or above its users
    share it too.
    """

    def __init__(self, config: ServingConfig) -> None:
        self.config = config
        self.context_tokens = config.input_tokens + (config.output_tokens - 1) / 2
        self._windows: dict[tuple[int, int], Window] = {}
        self._arrays: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self._dense_rows: dict[int, np.ndarray] = {}
        self._step_times: dict[StepShape, float] = {}
        self._answers: dict[tuple, object] = {}
        self._finish_atoms: dict[tuple[int, int], tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self._schedules: dict[tuple[int, int], list[tuple[StepShape, int]]] = {}

    def kept(self) -> "TableMemory":
        """What this table has computed that a later table of the same :func:`table_identity` may start from:
        the memoised answers (:meth:`memo`) and the step times. Both are pure functions of the
        configuration (less its ``batch``) and their keys, so a table given them
        (:meth:`start_from`) answers exactly as it would have computed them."""
        return TableMemory(dict(self._answers), dict(self._step_times))

    def start_from(self, memory: "TableMemory") -> None:
        """Take ``memory`` (:meth:`kept` of a table with this table's :func:`table_identity`) as computed."""
        self._answers.update(memory.answers)
        self._step_times.update(memory.step_times)

    def memo(self, key: tuple, compute):
        """``compute()`` the first time ``key`` is asked for, the stored answer afterwards.

        ``key`` must name the function and every argument its answer depends on besides this
        table (whose LLM, hardware, engine and lengths are fixed).
        """
        try:
            return self._answers[key]
        except KeyError:
            found = self._answers[key] = compute()
            return found

    def window(self, decodes: int, prompts: int) -> Window:
        """The :class:`Window` of ``prompts`` prompts next to exactly ``decodes`` decodes (memoised)."""
        key = (decodes, prompts)
        found = self._windows.get(key)
        if found is None:
            found = self._windows[key] = self._evaluate(decodes, prompts)
        return found

    def _evaluate(self, decodes: int, prompts: int) -> Window:
        if prompts == 0:
            if not decodes:
                return Window(0.0, (), ())
            t = step_time(self.config, StepShape.decode(decodes, self.context_tokens)).time_s
            return Window(t, (t,), ())
        elapsed, steps, finish = 0.0, [], []
        schedule = self._schedules.pop((decodes, prompts), None) or self._prefill_steps(decodes, prompts)
        for shape, finished in schedule:
            t = self._step_s(shape)
            elapsed += t
            steps.append(t)
            finish.extend([elapsed] * finished)
        return Window(elapsed, tuple(steps), tuple(finish))

    def _prefill_steps(self, decodes: int, prompts: int) -> list[tuple[StepShape, int]]:
        """The steps of a window of ``prompts`` prompts next to ``decodes`` decodes, and the prompts each one completes.

        They are the estimator's prefill schedule of a batch of ``prompts`` with the budget left by
        the decodes (decode-first), each step also carrying the decodes.
        """
        config = self.config
        room = max(1, config.step_token_budget - decodes)
        schedule = prefill_steps(config.framework.prefill_mode, room, config.input_tokens, prompts)
        if not decodes:
            return list(schedule)
        d = StepShape.decode(decodes, self.context_tokens)
        return [(StepShape(s.new_tokens + d.new_tokens, s.sequences + d.sequences, s.attended_tokens + d.attended_tokens,
                           s.kv_read_tokens + d.kv_read_tokens), finished) for s, finished in schedule]

    def _time_steps(self, decodes: int, prompts: np.ndarray) -> None:
        """Time every step of the windows of ``prompts`` (next to ``decodes`` decodes) not timed yet, in one call of the
        step model on arrays (:mod:`guide_opt.perf.step` takes a :class:`StepShape` of arrays; same figures as one by one)."""
        missing: dict[StepShape, None] = {}
        for k in prompts.tolist():
            if k and (decodes, k) not in self._windows:
                schedule = self._schedules[(decodes, k)] = self._prefill_steps(decodes, k)  # kept for _evaluate
                for shape, _ in schedule:
                    if shape not in self._step_times:
                        missing[shape] = None
        if not missing:
            return
        shapes = list(missing)
        times = np.broadcast_to(step_time(self.config, StepShape.stack(shapes), pipeline_fill=True).time_s, (len(shapes),))
        self._step_times.update(zip(shapes, times.tolist()))

    def _step_s(self, shape: StepShape) -> float:
        """:func:`~guide_opt.perf.step.step_time` of a prefill step of this configuration (pipeline fill
        included), memoised: the windows of neighbouring prompt counts repeat many steps (a third of
        a quickstart build's steps)."""
        found = self._step_times.get(shape)
        if found is None:
            found = self._step_times[shape] = step_time(self.config, shape, pipeline_fill=True).time_s
        return found

    def _exact(self, decodes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The exact windows at ``decodes`` on :func:`prompt_grid` up to :meth:`linear_from_prompts`:
        (prompt counts, values, slopes) with value rows (time s, steps, mean first-token s) and
        each segment's slope per prompt (the last one also extends beyond the grid)."""
        found = self._arrays.get(decodes)
        if found is None:
            grid = prompt_grid(self.linear_from_prompts(decodes))
            self._time_steps(decodes, grid)
            windows = [self.window(decodes, int(k)) for k in grid]
            values = np.array([[w.time_s for w in windows], [float(w.steps) for w in windows],
                               [sum(w.finish_s) / len(w.finish_s) if w.finish_s else 0.0 for w in windows]])
            found = self._arrays[decodes] = (grid, values, np.diff(values, axis=1) / np.diff(grid))
        return found

    def linear_from_prompts(self, decodes: int) -> int:
        """Prompts from which a window is several full steps long, so that each further prompt adds the same time."""
        room = max(1, self.config.step_token_budget - decodes)
        return max(16, math.ceil(LINEAR_WINDOW_STEPS * room / self.config.input_tokens))

    def _at_grid(self, decodes: int, prompts: np.ndarray) -> np.ndarray:
        """Rows (time s, steps, mean first-token s) of windows of each of ``prompts`` at a grid decode count.

        Windows are evaluated exactly at the prompt counts of :func:`prompt_grid` and
        interpolated linearly in between (a window's time is a staircase in its prompt tokens;
        the expectation over Poisson counts smooths it); beyond :meth:`linear_from_prompts`
        they are extended linearly with the slope of the last two exact windows.
        """
        if len(prompts) and prompts[-1] - prompts[0] == len(prompts) - 1:  # Poisson supports: from the memoised rows
            start = int(prompts[0])
            return self._dense(decodes, start + len(prompts))[:, start:]
        return self._interpolate(decodes, prompts)

    def _interpolate(self, decodes: int, prompts: np.ndarray) -> np.ndarray:
        """The rows of :meth:`_at_grid`, computed: the exact windows' values plus each segment's slope."""
        grid, values, slopes = self._exact(decodes)
        i = np.minimum(np.searchsorted(grid, prompts, side="right") - 1, len(grid) - 2)
        return values[:, i] + (prompts - grid[i]) * slopes[:, i]

    def _dense(self, decodes: int, size: int) -> np.ndarray:
        """:meth:`_at_grid` of the prompt counts 0..``size - 1`` at a grid decode count, from a memoised
        table grown in powers of two (each entry is the same expression of its own prompt count)."""
        found = self._dense_rows.get(decodes)
        if found is None or found.shape[1] < size:
            found = self._dense_rows[decodes] = self._interpolate(decodes, np.arange(max(64, 1 << (size - 1).bit_length())))
        return found[:, :size]

    def _rows(self, decodes: float, slots: int, prompts: np.ndarray, rows: int = 3) -> np.ndarray:
        """The first ``rows`` rows of :meth:`_at_grid` interpolated between the grid decode counts around ``decodes``."""
        lo, hi, w = self._neighbours(decodes, slots)
        low = self._at_grid(lo, prompts)[:rows]
        return low if w == 0 else (1 - w) * low + w * self._at_grid(hi, prompts)[:rows]

    def poisson_window(self, decodes: float, slots: int, mean: float) -> tuple[float, float]:
        """Mean (time s, steps) of a window next to ``decodes`` decodes whose prompt count is Poisson(``mean``)
        (:func:`_prompt_counts`): the correctly rounded sums of the probabilities times :meth:`windows`,
        straight from the memoised rows (the fixed points' inner loop)."""
        if mean > 0:
            size = _support_limit(mean) + 1
            first, pmf = _poisson_terms(mean, size - 1)
        else:
            first, size, pmf = 0, 1, _CERTAIN
        lo, hi, w = self._neighbours(decodes, slots)
        rows = self._dense(lo, size)[:2, first:]
        if w != 0:
            rows = (1 - w) * rows + w * self._dense(hi, size)[:2, first:]
        weighted = rows * pmf
        if len(pmf) < FSUM_ORDER_FROM:  # _fsum's own choice, without its call
            return math.fsum(weighted[0].tolist()), math.fsum(weighted[1].tolist())
        weighted.sort(axis=1)
        return math.fsum(weighted[0, ::-1].tolist()), math.fsum(weighted[1, ::-1].tolist())

    def finish_atoms(self, decodes: float, slots: int, top: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every prompt's first-token time in the windows of 1..``top + 1`` prompts that :meth:`shapes` stands for, as a
        fraction of its window's time: (fractions, companions = prompts - 1, weight within its window), memoised per
        grid decode count and ``top``."""
        grid = self._nearer_grid(decodes, slots)
        found = self._finish_atoms.get((grid, top))
        if found is None:
            windows = self.shapes(float(grid), slots, np.arange(1, top + 2))
            sizes = [len(window.finish_s) for window in windows]
            found = self._finish_atoms[(grid, top)] = (
                np.concatenate([np.asarray(window.finish_s) / window.time_s for window in windows]),
                np.repeat(np.arange(top + 1), sizes), np.concatenate([np.full(size, 1.0 / size) for size in sizes]))
        return found

    def first_token_mean_s(self, decodes: float, slots: int, prompts: np.ndarray) -> np.ndarray:
        """Mean first-token time (from the window's start) over the prompts of a window of each of ``prompts`` (>= 1)."""
        return self._rows(decodes, slots, prompts)[2]

    @staticmethod
    def _neighbours(decodes: float, slots: int) -> tuple[int, int, float]:
        """Grid decode counts around ``decodes`` (grid: :data:`DECODE_GRID` up to ``slots``, and ``slots``) and the upper weight."""
        n = min(max(decodes, 0.0), float(slots))
        i = bisect.bisect_right(DECODE_GRID, n) - 1
        lo = DECODE_GRID[i]
        hi = DECODE_GRID[i + 1] if i + 1 < len(DECODE_GRID) else slots
        hi = min(hi, slots)
        if lo >= hi:
            return hi, hi, 0.0
        return lo, hi, (n - lo) / (hi - lo)

    def _nearer_grid(self, decodes: float, slots: int) -> int:
        """The grid decode count nearer ``decodes`` (:meth:`_neighbours`): the one whose exact windows stand for it."""
        lo, hi, w = self._neighbours(decodes, slots)
        return hi if w >= 0.5 else lo

    def decode_step_s(self, decodes: float, slots: int) -> float:
        """A pure decode step of ``decodes`` sequences (interpolated; 0 for none)."""
        lo, hi, w = self._neighbours(decodes, slots)
        return (1 - w) * self.window(lo, 0).time_s + w * self.window(hi, 0).time_s

    def windows(self, decodes: float, slots: int, prompts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(time s, steps) of a window of each prompt count in ``prompts`` next to ``decodes`` decodes (interpolated)."""
        rows = self._rows(decodes, slots, prompts, 2)
        return rows[0], rows[1]

    def shapes(self, decodes: float, slots: int, prompts: np.ndarray) -> list[Window]:
        """The exact windows (nearer grid decode count, next prompt count of :func:`prompt_grid`) whose shape stands for each of ``prompts``."""
        grid = self._nearer_grid(decodes, slots)
        points = self._exact(grid)[0]
        nearest = points[np.minimum(np.searchsorted(points, prompts), len(points) - 1)]
        return [self.window(grid, int(k)) for k in nearest]


# ---- queueing formulas --------------------------------------------------------------------------
def erlang_b(servers: int, offered_load: float) -> float:
    """Probability that all ``servers`` are busy (Erlang B) at ``offered_load = lambda / mu``; 1 with no server."""
    blocking = 1.0  # the stable recursion B(k) = a B(k-1) / (k + a B(k-1)), B(0) = 1
    for k in range(1, servers + 1):
        blocking = offered_load * blocking / (k + offered_load * blocking)
    return blocking


#: Prompts over which :func:`slot_gains` measures what one more prompt adds to a window.
DISPERSION_PROMPTS = 8


def slot_dispersion(prompt_gain: float, decode_gain: float) -> float:
    """Index of dispersion (variance / mean) of the number of requests in an open loop's system; inf past its validity.

    A request stays in the system for its first token and ``O - 1`` steps, so the requests in
    the system are the arrivals of the last such stretch -- Poisson given its length -- and the
    stretch is longer when more requests are in the system, which feeds back on the count in
    two ways, each measured by its gain at the decoders an arrival finds (:func:`slot_gains`):

    - every request's prompt stalls *all* the running requests for its prefill (``t_p``, the
      window time one more prompt adds): ``g_p = rate x t_p``. A shock common to every request
      in the system makes the count a mixed Poisson whose mixing length carries the gain:
      variance x ``1 / (1 - g_p)^2``;
    - every request decoding lengthens each step by ``d step / d n``, a smooth slowdown of every
      departure: ``g_d = rate x (O - 1) x d step / d n``. A birth-death count whose holding time
      grows linearly with it is negative binomial with ``variance / mean = 1 / (1 - g_d)``.

    So ``variance / mean = 1 / ((1 - g_p)^2 (1 - g_d))``. On 18 open loops of the simulator below
    the slot limit (vLLM, SGLang and TensorRT-LLM; 16-256 slots; 30-80% of capacity; prompt-heavy
    to decode-heavy; 8 runs of 3,000 requests each, pooled: the count has a long memory, and
    single runs understate its spread), a free exponent on each gain comes out 2.12 on ``g_p``
    and 0.88 on ``g_d``; with 2 and 1 the ratio is within 10% of the simulated one in 17 of the
    18 (median 2.5%, worst 10.8%), where a Poisson count (1) is off by up to 72%.
    """
    if prompt_gain >= 1.0 or decode_gain >= 1.0:
        return math.inf
    return 1.0 / ((1.0 - prompt_gain) ** 2 * (1.0 - decode_gain))


def slot_gains(table: "StepTable", slots: int, steps: int, rate: float, decodes: float) -> tuple[float, float]:
    """The gains ``(g_p, g_d)`` of :func:`slot_dispersion` and :func:`load_feedback_gain` at ``decodes`` decoders: ``rate x`` the window time one more prompt
    adds (over :data:`DISPERSION_PROMPTS` prompts), and ``rate x steps x`` the decode step's slope per decoder."""
    times, _ = table.windows(decodes, slots, np.array([0, DISPERSION_PROMPTS]))
    prompt_gain = rate * float(times[1] - times[0]) / DISPERSION_PROMPTS
    high, low = min(decodes + 1.0, float(slots)), max(decodes - 1.0, 1.0)
    slope_s = (table.decode_step_s(high, slots) - table.decode_step_s(low, slots)) / (high - low) if high > low else 0.0
    return prompt_gain, rate * steps * max(0.0, slope_s)


#: Periods of ``sin(u) / u`` integrated numerically by :func:`load_feedback_gain`; the rest by its mean.
FEEDBACK_PERIODS = 48
#: The first period is split at ``pi / 4^k`` for k up to this: the integrand's peak at ``u = 0`` is resolved down to
#: a width of about ``pi / 4^k`` (a margin ``1 - g_p - g_d`` of 3e-6 x ``g_d``), far nearer to instability than a planned load.
FEEDBACK_FIRST_SPLITS = 10


def _feedback_quadrature() -> tuple[np.ndarray, np.ndarray, float]:
    """Weights, ``K(u) = exp(-iu) sin(u) / u`` at the nodes and the last interval's end for :func:`load_feedback_gain`
    (Gauss-Legendre, 16 nodes per interval; they do not depend on the gains, so they are computed once)."""
    nodes, gauss_weights = np.polynomial.legendre.leggauss(16)
    edges = np.array([0.0] + [math.pi / 4.0 ** k for k in range(FEEDBACK_FIRST_SPLITS, 0, -1)]
                     + [math.pi * k for k in range(1, FEEDBACK_PERIODS + 1)])
    half = np.diff(edges)[:, None] / 2.0
    u = ((edges[:-1, None] + edges[1:, None]) / 2.0 + half * nodes[None, :]).ravel()
    return (half * gauss_weights[None, :]).ravel(), np.exp(-1j * u) * np.sin(u) / u, float(edges[-1])


_FEEDBACK_WEIGHTS, _FEEDBACK_K, _FEEDBACK_END = _feedback_quadrature()
_FEEDBACK_RE, _FEEDBACK_IM2, _FEEDBACK_K2 = _FEEDBACK_K.real, _FEEDBACK_K.imag ** 2, np.abs(_FEEDBACK_K) ** 2


def load_feedback_gain(prompt_gain: float, decode_gain: float) -> float:
    """``J(g_p, g_d)``: a decoding request's life varies by ``Var(L) = (L / rate) J`` through the load it meets; inf when ``g_p + g_d >= 1``.

    A request decodes for ``L = (O - 1) TPOT``. Its life grows by ``t_p`` for each prompt that
    arrives while it decodes (their prefills stall it) and by ``d step / d n`` per step for each
    extra request decoding beside it; those requests' lives grow the same way, so the decoders
    it meets are themselves longer-lived when the load runs high. Linearised around the fixed
    point (gains ``g_p = rate x t_p`` and ``g_d = rate x (O - 1) x d step / d n``, as
    :func:`slot_gains`), with the Poisson arrivals as the only noise, the deviation ``x`` of a
    life started at ``a`` obeys

        ``x(a) (1 - g_p) = (g_d / rate) x mean of dn over [a, a + L] + t_p x (arrivals in [a, a + L] - rate L)``
        ``dn(t) = (arrivals in [t - L, t] - rate L) + rate x(t - L)``

    (the decoders present at ``t`` are the arrivals of the last life, plus those whose lives
    were stretched). In the frequency domain, with ``K(u) = exp(-iu) sin(u) / u`` the transfer
    of a mean over one life (``u = omega L / 2``),

        ``J = (2 / pi) int_0^inf |K|^2 |g_d K + g_p|^2 / |1 - g_p - g_d K|^2 du``.

    Without decode feedback (``g_d = 0``) ``J = g_p^2 / (1 - g_p)^2``: a Poisson count of
    stalls, amplified by the stalls' own stretch; without any gain ``J = 0``. Integrated by
    Gauss-Legendre over :data:`FEEDBACK_PERIODS` periods of ``sin u`` (the first split
    geometrically towards the peak at ``u = 0``, of width ``(1 - g_p - g_d) / g_d``), the rest
    by the mean of ``sin^2`` (within 1e-7 of a 4-million-point trapezoid up to ``g_p + g_d = 0.99``).
    """
    margin = 1.0 - prompt_gain - decode_gain
    if margin <= 0.0:
        return math.inf
    if prompt_gain <= 0.0 and decode_gain <= 0.0:
        return 0.0
    real, imag2 = decode_gain * _FEEDBACK_RE, decode_gain ** 2 * _FEEDBACK_IM2  # g_d K = real + i imag
    values = _FEEDBACK_K2 * ((real + prompt_gain) ** 2 + imag2) / ((1.0 - prompt_gain - real) ** 2 + imag2)
    # Beyond the last period K -> 0: the integrand tends to sin^2(u) / u^2 x g_p^2 / (1 - g_p)^2, of mean 1 / (2 u^2).
    tail = (prompt_gain / (1.0 - prompt_gain)) ** 2 / (2.0 * _FEEDBACK_END)
    return 2.0 / math.pi * (_dot(_FEEDBACK_WEIGHTS, values) + tail)


def tpot_load_variance_s2(rate: float, life_s: float, steps: int, prompt_gain: float, decode_gain: float) -> float:
    """Variance (s^2) a request's TPOT gains from the load it meets, beyond independent step times (inf past stability).

    ``Var(L) / (O - 1)^2`` with ``Var(L) = (L / rate) J`` (:func:`load_feedback_gain`), less the
    part independent steps already carry: the Poisson count of stalls without feedback,
    ``(L / rate) g_p^2``.
    """
    if rate <= 0.0 or steps <= 0:
        return 0.0
    gain = load_feedback_gain(prompt_gain, decode_gain)
    if math.isinf(gain):
        return math.inf
    return max(0.0, life_s / rate * (gain - prompt_gain ** 2)) / steps ** 2


def negative_binomial_tail(mean: float, dispersion: float, count: int) -> float:
    """``P(N >= count)`` for ``N`` with ``mean`` and ``variance = dispersion x mean``: negative binomial (Poisson at 1).

    Terms from their ratios ``P(k + 1) / P(k)`` in logarithms (no underflow at large means): the
    upper tail summed directly when ``count`` lies above the mean (it may be tiny), else one
    minus the terms below ``count``.
    """
    if count <= 0:
        return 1.0
    if mean <= 0:
        return 0.0
    poisson = dispersion <= 1.0 + 1e-9
    size = 0.0 if poisson else mean / (dispersion - 1.0)  # N ~ NB(size, 1 / dispersion)
    failure = 0.0 if poisson else 1.0 - 1.0 / dispersion

    def terms(first: int, last: int) -> np.ndarray:
        """The probabilities of ``first`` .. ``last - 1``: the first from its logarithm, the others by their ratios (in logarithms)."""
        if poisson:
            log_first = first * math.log(mean) - mean - math.lgamma(first + 1.0)
        else:
            log_first = (math.lgamma(first + size) - math.lgamma(size) - math.lgamma(first + 1.0)
                         + size * math.log1p(-failure) + first * math.log(failure))
        k = np.arange(first, last - 1, dtype=float)
        ratios = (mean if poisson else (k + size) * failure) / (k + 1.0)
        logs = np.empty(last - first)
        logs[0] = 0.0
        np.cumsum(np.log(ratios), out=logs[1:])
        return np.exp(logs + log_first)

    with np.errstate(under="ignore", divide="ignore"):
        if count > mean:  # the terms fall at least as fast as (1 - 1/dispersion) per count beyond the mean
            last = count + 1 + math.ceil(12.0 * math.sqrt(dispersion * mean) + 60.0 * dispersion)
            return min(1.0, float(terms(count, last).sum()))
        return min(1.0, max(0.0, 1.0 - float(terms(0, count).sum())))


#: Rounds of :func:`slot_waiting`'s fixed point at most (it converges monotonically, in a few).
SLOT_WAIT_ROUNDS = 100


#: Below this probability of waiting the wait is too small to matter (its mean under 1e-9 of the wait given a
#: wait, no percentile reaches it), and :func:`slot_waiting` does not time the slots' drain.
NEGLIGIBLE_WAIT_PROBABILITY = 1e-9


def slot_waiting(arrival_rate_per_s: float, holding_s: float, slots: int, dispersion: float,
                 full_holding_s: Callable[[], float] | None = None) -> tuple[float, float]:
    """(probability of waiting, mean wait s) for one of ``slots`` sequence slots held ``holding_s`` on average.

    The requests in the system -- those holding a slot and those waiting for one -- are
    negative binomial with the open loop's ``dispersion`` (:func:`slot_dispersion`) and mean
    ``rate x (holding + wait)`` (Little's law). An arrival waits when it finds ``slots`` of them,
    ``P = P(N >= slots)``. While it waits every slot is held, so each holds its request for
    ``full_holding_s()`` (the holding time next to ``slots`` decoders; ``holding_s`` when None)
    and the queue drains at ``slots / full - rate``: the wait given a wait is the M/D/c one at
    that drain rate, ``full / (2 (slots - rate x full))`` (Allen-Cunneen's ``(1 + cs^2) / 2 = 1/2``),
    scaled by the dispersion of the count, as a heavy-traffic queue's wait scales with the
    variability of what enters it. The wait enters the count's mean, so the two are solved
    together: ``W = P(rate (holding + W)) x given`` is increasing in ``W`` and bounded, so iterating
    from no wait rises to its smallest fixed point (to :data:`CONVERGENCE`). Unstable (1, inf)
    once the offered load fills the slots, or the full slots cannot drain.
    """
    offered = arrival_rate_per_s * holding_s
    if offered >= slots or math.isinf(dispersion):
        return 1.0, math.inf
    waits = negative_binomial_tail(offered, dispersion, slots)
    full_s = holding_s if full_holding_s is None or waits < NEGLIGIBLE_WAIT_PROBABILITY else max(holding_s, full_holding_s())
    if arrival_rate_per_s * full_s >= slots:
        return 1.0, math.inf
    given_s = dispersion * full_s / (2.0 * (slots - arrival_rate_per_s * full_s))

    def wait_s(wait: float) -> float:
        return negative_binomial_tail(arrival_rate_per_s * (holding_s + wait), dispersion, slots) * given_s

    now = waits * given_s
    # The wait adds rate x W to the count's mean, which moves log P by about (slots - mean) / variance per
    # request (the tail's slope): when that is within CONVERGENCE, the first answer stands.
    slope = 1.0 + max(0.0, slots - offered) / (dispersion * offered) if offered > 0 else 1.0
    if arrival_rate_per_s * now * slope <= CONVERGENCE:
        return waits, now
    for _ in range(SLOT_WAIT_ROUNDS):
        after = wait_s(now)
        if after - now <= CONVERGENCE * after:
            return after / given_s, after
        now = after
    return now / given_s, now


# ---- discrete distributions ---------------------------------------------------------------------
#: Terms from which :func:`_fsum` orders them before summing (below, ordering costs more than it saves).
FSUM_ORDER_FROM = 64


def _fsum(values: np.ndarray, nonnegative: bool = False) -> float:
    """``sum(values)``, correctly rounded (:func:`math.fsum`).

    ``math.fsum`` returns the exact sum rounded once, so its answer does not depend on the order
    of the terms, but its cost does: a term below the rounding error of the running partials
    opens a new partial, and the far Poisson tails (terms down to 1e-300 next to terms near 1)
    make it quadratic. Largest magnitudes first keeps the partials few (18x faster at 600
    terms), with the same answer. ``nonnegative``: the caller knows no term is negative (a plain
    sort orders them).
    """
    x = np.asarray(values, dtype=float)
    if len(x) >= FSUM_ORDER_FROM:
        x = np.sort(x)[::-1] if nonnegative else x[np.argsort(-np.abs(x), kind="stable")]
    return math.fsum(x.tolist())


def _dot(a: np.ndarray, b: np.ndarray) -> float:
    """``sum(a x b)``, correctly rounded: BLAS dot products may round differently with memory
    alignment, and fixed points and bisections would carry that noise into the plan."""
    return _fsum(np.asarray(a) * np.asarray(b))

def _compress(values: np.ndarray, weights: np.ndarray, points: int = DISTRIBUTION_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """At most ``points`` support points with the same mean in each quantile bin."""
    order = np.argsort(values, kind="stable")
    values, weights = values[order], weights[order]
    if len(values) <= points:
        return values, weights
    cum = np.cumsum(weights)
    bins = np.minimum((cum - weights / 2) / cum[-1] * points, points - 1).astype(int)
    mass = np.bincount(bins, weights, points)
    mean = np.bincount(bins, weights * values, points)
    keep = mass > 0
    return mean[keep] / mass[keep], mass[keep]


def _compress_rows(values: np.ndarray, weights: np.ndarray, points: int = DISTRIBUTION_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_compress` of one distribution per row of ``weights`` over the same sorted ``values``.

    Returns (values, weights) arrays of ``points`` columns per row (mean value and mass of each
    quantile bin; bins without mass get weight 0).
    """
    rows = weights.shape[0]
    cum = np.cumsum(weights, axis=1)
    total = cum[:, -1:]
    bins = np.minimum((cum - weights / 2) / np.where(total > 0, total, 1.0) * points, points - 1).astype(int)
    flat = (bins + points * np.arange(rows)[:, None]).ravel()
    mass = np.bincount(flat, weights.ravel(), rows * points).reshape(rows, points)
    mean = np.bincount(flat, (weights * values[None, :]).ravel(), rows * points).reshape(rows, points)
    return np.divide(mean, mass, out=np.zeros_like(mean), where=mass > 0), mass


def _add(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Distribution of the sum of two independent discrete variables (compressed)."""
    values = (a[0][:, None] + b[0][None, :]).ravel()
    weights = (a[1][:, None] * b[1][None, :]).ravel()
    return _compress(values, weights)


def _quantile(dist: tuple[np.ndarray, np.ndarray], q: float) -> float:
    """The ``q``-quantile (0..1) of a discrete distribution (sorted support): the smallest value with CDF >= q."""
    values, weights = dist
    cum = np.cumsum(weights) / _fsum(weights)
    return float(values[min(int(np.searchsorted(cum, q - 1e-12)), len(values) - 1)])


def _with_slot_wait(window_ttft: tuple[np.ndarray, np.ndarray], probability: float, mean_wait_s: float, mean_s: float) -> LatencyDistribution:
    """Percentiles of ``X + B W``: ``X`` the discrete ``window_ttft``, ``B`` a wait with ``probability``, ``W`` the
    continuous Erlang of shape 2 and mean ``mean_wait_s / probability``.

    A wait for a slot spans the rest of a departure interval and the departures of the
    requests queued ahead: less variable than an exponential (coefficient of variation
    ``1/sqrt(2)``). Against the simulator's slot-bound open loops (80% of capacity, 16-32
    slots) the exponential put the p99 TTFT 30-70% high with the mean right; shape 2 keeps
    the mean and brings the p99 within about 20%.

    Read off the exact CDF ``sum_i w_i ((1 - p) [v_i <= t] + p F(t - v_i))``: an atom's percentile is the atom; inside
    a gap between atoms the CDF is continuous and Newton's method, kept in its bracket, finds the root. A percentile
    that falls in the wait therefore grows continuously with the load, as the continuous wait does. (24 points of
    the wait added to ``X`` made it hop between support points: a p50 TTFT of 27 ms jumped to 183 ms as the wait
    probability passed 0.5, and near an SLO the percentile fell and rose again within 0.4% of the rate, which made
    the planner's largest rate within the SLO depend on where its bisection probed.)
    """
    values, weights = window_ttft
    if probability <= 0 or mean_wait_s <= 0:
        return _distribution(window_ttft, mean_s)
    weights = weights / _fsum(weights)
    theta = mean_wait_s / probability / 2.0  # Erlang-2 scale: mean 2 theta

    def cdf_rows(t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each of ``t``'s terms of the CDF and of its density (the continuous part's, over ``theta``), one row per point."""
        x = np.maximum(t[:, None] - values[None, :], 0.0) / theta
        decay = np.exp(-x)
        return (values[None, :] <= t[:, None]) * (1.0 - probability) + probability * (1.0 - decay * (1.0 + x)), x * decay

    def cdf_and_density(t: np.ndarray) -> tuple[list[float], list[float]]:
        """The CDF and its density at each of ``t``: each point's row times ``weights`` on its own (a product over
        several rows may round differently from the same row alone, and a point's figures must not depend on
        which others are asked with it)."""
        cdf, density = cdf_rows(t)
        return ([float((cdf[i:i + 1] @ weights)[0]) for i in range(len(t))],
                [probability * float((density[i:i + 1] @ weights)[0]) / theta for i in range(len(t))])

    at_atoms = cdf_rows(values)[0] @ weights
    below_atoms = at_atoms - (1.0 - probability) * weights
    out: list[float] = []
    # Newton's method kept inside a shrinking bracket, for each percentile not at an atom; the
    # percentiles iterate side by side (one evaluation of the CDF per round for all of them).
    searches: dict[int, list[float]] = {}  # output index -> [q, low, high, t]
    for q in (p / 100 for p in PERCENTILES):
        j = int(np.searchsorted(at_atoms, q - 1e-12))
        if j < len(values) and below_atoms[j] < q - 1e-12:  # the atom at values[j] holds the q-quantile
            out.append(float(values[j]))
            continue
        low = float(values[j - 1]) if j > 0 else float(values[0])
        high = float(values[j]) if j < len(values) else float(values[-1]) + 40.0 * theta
        searches[len(out)] = [q, low, high, (low + high) / 2]
        out.append(math.nan)
    for _ in range(MAX_ITERATIONS):
        if not searches:
            break
        cdfs, densities = cdf_and_density(np.array([search[3] for search in searches.values()]))
        for (index, search), cdf, dens in zip(list(searches.items()), cdfs, densities):
            q, low, high, t = search
            if abs(cdf - q) <= 1e-10:
                out[index] = t
                del searches[index]
                continue
            if cdf < q:
                low = t
            else:
                high = t
            step = t - (cdf - q) / dens if dens > 0 else (low + high) / 2
            t = step if low < step < high else (low + high) / 2
            if high - low <= 1e-10 * high:
                out[index] = t
                del searches[index]
                continue
            search[1:] = [low, high, t]
    for index, search in searches.items():  # MAX_ITERATIONS reached
        out[index] = search[3]
    return LatencyDistribution(mean_s, *out)


def _uniform_dist(width_s: np.ndarray, weights: np.ndarray, points: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Mixture of uniforms on ``[0, width]`` with the given weights (the residual of the step in progress)."""
    q = (np.arange(points) + 0.5) / points
    values = (width_s[:, None] * q[None, :]).ravel()
    return values, np.repeat(weights / points, points)


#: Standard deviations below the mean where Poisson supports start: the mass below is at most
#: ``exp(-z^2 / 2) = 1e-30`` (the Chernoff bound of the Poisson lower tail), so leaving it out
#: moves no sum it would enter by more than 1e-30 relative (30 orders below a double's
#: resolution: a correctly rounded sum changes only if its exact value lies within 1e-30 of a
#: rounding boundary), and large means sum hundreds of terms fewer.
POISSON_LOWER_SIGMAS = math.sqrt(2.0 * math.log(1e30))


#: Poisson(0): no prompt, certainly (read-only).
_CERTAIN = np.ones(1)
_CERTAIN.setflags(write=False)


def _poisson_pmf(mean: float, limit: int) -> tuple[np.ndarray, np.ndarray]:
    """Poisson(mean) on first..limit, the tail above ``limit`` lumped onto it (first: :data:`POISSON_LOWER_SIGMAS` below the mean)."""
    if mean <= 0:
        return np.zeros(1), np.ones(1)
    first, pmf = _poisson_terms(mean, limit)
    return _support(limit)[0][first:], pmf


def _poisson_rows(means: np.ndarray, limit: int) -> np.ndarray:
    """Poisson(``means[i]``) on 0..``limit`` in row ``i``, the tail above ``limit`` lumped onto it (a mean of 0: all at 0)."""
    k, _, log_factorials = _support(limit)
    means = np.asarray(means, dtype=float)
    positive = means > 0
    logs = np.log(np.where(positive, means, 1.0))
    with np.errstate(under="ignore"):
        rows = np.exp(k[None, :] * logs[:, None] - means[:, None] - log_factorials[None, :])
    rows[~positive] = 0.0
    rows[~positive, 0] = 1.0
    rows[:, -1] += np.maximum(0.0, 1.0 - rows.sum(axis=1))
    return rows


def _poisson_terms(mean: float, limit: int) -> tuple[int, np.ndarray]:
    """The first count and the probabilities of :func:`_poisson_pmf` (``mean`` > 0)."""
    first = max(0, int(mean - POISSON_LOWER_SIGMAS * math.sqrt(mean)))
    k, _, log_factorials = _support(limit)
    pmf = np.exp(k[first:] * math.log(mean) - mean - log_factorials[first:])
    pmf[-1] += max(0.0, 1.0 - _fsum(pmf, nonnegative=True))
    return first, pmf


@functools.lru_cache(maxsize=4096)
def _support(limit: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """0..limit as floats and as integers, and their ``log(k!)``: read-only views of shared tables
    (the fixed points ask for the same supports again and again)."""
    floats, integers = _range_tables(_table_size(limit))
    out = (floats[: limit + 1], integers[: limit + 1], _log_factorials(limit))
    for a in out:
        a.setflags(write=False)
    return out


@functools.lru_cache(maxsize=None)
def _range_tables(size: int) -> tuple[np.ndarray, np.ndarray]:
    """0..size-1 as floats and as integers (read-only)."""
    out = (np.arange(size, dtype=float), np.arange(size))
    for a in out:
        a.setflags(write=False)
    return out


def _table_size(limit: int) -> int:
    """Length of the shared tables that hold 0..limit: a power of two, at least 1024."""
    return 1 << max(10, (limit + 1).bit_length())


@functools.lru_cache(maxsize=None)
def _log_factorial_table(size: int) -> np.ndarray:
    """``log(k!)`` for k = 0..size-1 (:func:`math.lgamma`: scipy.special would add 0.3 s to every start)."""
    return np.array([math.lgamma(k + 1.0) for k in range(size)])


def _log_factorials(limit: int) -> np.ndarray:
    """``log(k!)`` for k = 0..limit (from a table grown in powers of two)."""
    return _log_factorial_table(_table_size(limit))[: limit + 1]


def _distribution(dist: tuple[np.ndarray, np.ndarray], mean_s: float) -> LatencyDistribution:
    return LatencyDistribution(mean_s, *(_quantile(dist, p / 100) for p in PERCENTILES))


# ---- the models ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Solution:
    """The solved mean-value model at one load."""

    tpot_s: float
    window_s: float  # mean window (the steps that serve one window's arrivals)
    decodes_seen: float  # decoders a decoding request sees, itself included
    others_rate_per_s: float  # rate of the other requests' prompts during a decode phase


def _support_limit(mean: float) -> int:
    """Largest prompt count kept for Poisson(``mean``): six standard deviations and six counts above the mean."""
    return int(math.ceil(mean + 6.0 * math.sqrt(mean) + 6.0))


def _prompt_counts(mean: float) -> tuple[np.ndarray, np.ndarray]:
    """Poisson(mean) prompts per window (integers, probabilities), on a support covering all but a negligible mass."""
    limit = _support_limit(mean)
    k, pmf = _poisson_pmf(mean, limit)
    return (_support(limit)[1][limit + 1 - len(k):] if len(k) > 1 else k.astype(int)), pmf


def _decode_run(table: StepTable, slots: int, others_rate_per_s: float, decodes, start: tuple[float, float] | None = None) -> _Solution | None:
    """Smallest fixed point of ``TPOT = E[window time] / E[window steps]``, ``W = E[window time]``; None beyond capacity.

    Prompts arriving during one window (Poisson, mean ``others_rate_per_s x W``) are
    prefilled in the next, next to ``n = decodes(TPOT)`` decodes. Iterating from below
    converges monotonically to the smallest fixed point when one exists. Near capacity that
    iteration creeps (each step moves the window by a fraction of a percent), converging or
    diverging; at one decode count (:class:`_WindowBracket`) it is replaced by regula falsi
    once the window is bracketed -- a window whose next one is longer and one whose next one
    is shorter (an Aitken step usually lands beyond the fixed point) -- and by steps of
    doubling length while each step is longer than the one before (the window map is steeper
    than the identity: no fixed point ahead while it stays so), which reach either a window
    beyond the fixed point (a bracket) or :data:`MAX_PROMPTS_PER_WINDOW` in a few tries.
    """
    tpot_s = window_s = table.decode_step_s(1.0, slots)
    if start is not None:
        tpot_s, window_s = start
    if decodes(tpot_s) <= 0.0:
        # No decodes: a window is only the prefill of the prompts that arrived during the one before,
        # so a window of no time gathers none and the idle server (W = 0) is the smallest fixed point
        # (iterating towards it shrinks W by a constant factor, down to 0 / 0 in the last denormals).
        return _Solution(tpot_s, 0.0, 0.0, others_rate_per_s)
    history: list[tuple[float, float]] = []
    bracket = _WindowBracket()
    for _ in range(MAX_ITERATIONS):
        n = decodes(tpot_s)
        if not others_rate_per_s * window_s <= MAX_PROMPTS_PER_WINDOW:
            return None
        mean_time, mean_steps = table.poisson_window(n, slots, others_rate_per_s * window_s)
        new_tpot, new_window = mean_time / mean_steps, mean_time
        if abs(new_tpot - tpot_s) <= CONVERGENCE * new_tpot and abs(new_window - window_s) <= CONVERGENCE * new_window:
            return _Solution(new_tpot, new_window, n, others_rate_per_s)
        ahead = bracket.add(n, window_s, new_window - window_s)
        if ahead is not None:
            tpot_s, window_s = new_tpot, ahead
            history.clear()
            continue
        history.append((new_tpot, new_window))
        tpot_s, window_s = new_tpot, new_window
        if len(history) == 3:  # Aitken's delta-squared: the slow mode near capacity converges linearly
            tpot_s, window_s = _aitken([h[0] for h in history]), _aitken([h[1] for h in history])
            history.clear()
    return None


class _WindowBracket:
    """The window's fixed point at one decode count: regula falsi once it is bracketed, long steps while the map expands.

    ``g(W) = E[time of the window after one of length W] - W`` is positive below the fixed
    point and negative above it (the window map is increasing). With a window of each sign
    known at the same decode count, the next window to try is the Illinois variant of regula
    falsi between them, which converges superlinearly where the plain iteration creeps.
    Before that, while ``g`` grows from one window to the next longer one (the map is steeper
    than the identity: the iteration diverges, or converges only far ahead), the next window
    to try is ``W + 2^j g(W)`` at the ``j``-th such step. Like Aitken's step, a long step can
    pass over a stretch where the map barely touches the identity (window times are a
    staircase in prompts); ``tests/perf/test_steady_state_fast.py`` checks against brute
    force, on random shapes, that it passes over no fixed point the map crosses clearly. A
    change of the decode count (the decoders follow TPOT) starts over: brackets and steps
    carried across decode counts mix different maps, and the iteration then cycles.
    """

    def __init__(self) -> None:
        self._start(math.nan)

    def _start(self, decodes: float) -> None:
        self.decodes = decodes
        self.below: tuple[float, float] | None = None  # (window s, g > 0)
        self.above: tuple[float, float] | None = None  # (window s, g < 0)
        self.side = 0
        self.last: tuple[float, float] | None = None  # the window tried before, and its g
        self.stride = 1.0  # the multiple of g of the last long step (1: none)

    def add(self, decodes: float, window_s: float, g: float) -> float | None:
        """Record ``g(window_s)`` at ``decodes``; the next window to try (None: the plain iteration's)."""
        if decodes != self.decodes:
            self._start(decodes)
        last, self.last = self.last, (window_s, g)
        if g > 0 and (self.above is None or window_s < self.above[0]):
            self.below = (window_s, g)
            if self.side == 1 and self.above is not None:  # the same end moved twice: Illinois halves the other
                self.above = (self.above[0], self.above[1] / 2)
            self.side = 1
        elif g < 0 and (self.below is None or window_s > self.below[0]):
            self.above = (window_s, g)
            if self.side == -1 and self.below is not None:
                self.below = (self.below[0], self.below[1] / 2)
            self.side = -1
        if self.below is not None and self.above is not None:
            (low, g_low), (high, g_high) = self.below, self.above
            return low - g_low * (high - low) / (g_high - g_low)
        if g > 0 and last is not None and window_s > last[0] and g >= last[1]:
            self.stride *= 2
            return window_s + self.stride * g
        self.stride = 1.0
        return None


def _aitken(x: list[float]) -> float:
    """Aitken's extrapolation of three iterates of a linearly converging sequence (the last one if it cannot apply).

    It applies to monotone iterates whose steps shrink. Steps that grow mean the iteration
    diverges (the load is beyond capacity): extrapolating them points back at the repelling
    root below, and jumping there restarts the divergence, a cycle that ran to
    :data:`MAX_ITERATIONS` (half of all fixed-point iterations of a quickstart build); left
    alone, the window outgrows :data:`MAX_PROMPTS_PER_WINDOW` in a few steps.
    """
    d1, d2 = x[1] - x[0], x[2] - x[1]
    denominator = d2 - d1
    if denominator == 0 or d1 * d2 <= 0 or abs(d2) >= abs(d1):
        return x[2]
    extrapolated = x[2] - d2 * d2 / denominator
    return extrapolated if extrapolated > 0 else x[2]


def _step_distribution(table: StepTable, slots: int, solution: _Solution) -> tuple[np.ndarray, np.ndarray]:
    """Durations of the steps a decoding request sees (the ITL distribution), weighted by frequency."""
    k, pmf = _prompt_counts(solution.others_rate_per_s * solution.window_s)
    times, steps = table.windows(solution.decodes_seen, slots, k)
    values, weights = [], []
    for p, t, n, window in zip(pmf, times, steps, table.shapes(solution.decodes_seen, slots, k)):
        if not window.steps or p <= 0:
            continue
        scale = t / window.time_s
        values.extend(d * scale for d in window.step_s)
        weights.extend([p * n / window.steps] * window.steps)
    weights = np.array(weights)
    return _compress(np.array(values), weights / _fsum(weights))


def _mean_of_draws_quantiles(dist: tuple[np.ndarray, np.ndarray], draws: int, extra_variance: float = 0.0) -> tuple[float, float, float]:
    """p50, p90, p99 of the mean of ``draws`` independent draws of ``dist`` plus a centred term of variance ``extra_variance``
    (Cornish-Fisher to the skewness of the draws; inf tails when ``extra_variance`` is inf).

    Without the extra term the mean of draws stays within the draws' range and is clipped to it.
    """
    values, weights = dist
    weights = weights / _fsum(weights)
    mean = _dot(weights, values)
    if math.isinf(extra_variance):
        return mean, math.inf, math.inf
    central = max(0.0, _dot(weights, (values - mean) ** 2))
    variance = central / draws + extra_variance
    if variance == 0.0:
        return mean, mean, mean
    sd = math.sqrt(variance)
    skew = _dot(weights, (values - mean) ** 3) / draws ** 2 / sd ** 3  # third cumulant of the mean of draws / sd^3
    low, high = (float(values.min()), float(values.max())) if extra_variance == 0.0 else (0.0, math.inf)
    out = []
    for z in (0.0, 1.2815515655446004, 2.3263478740408408):  # standard normal p50, p90, p99
        corrected = z + (z * z - 1.0) * skew / 6.0
        out.append(max(low, min(high, mean + corrected * sd)))
    return out[0], out[1], out[2]


def _tpot_itl(table: StepTable, slots: int, solution: _Solution, output_tokens: int,
              load_variance_s2: float = 0.0) -> tuple[LatencyDistribution, LatencyDistribution]:
    """Per-request TPOT (mean of its ``O - 1`` step times, plus ``load_variance_s2`` from the load it meets,
    :func:`tpot_load_variance_s2`) and ITL (one step time) distributions."""
    steps = output_tokens - 1
    if steps <= 0:
        zero = LatencyDistribution(0.0, 0.0, 0.0, 0.0)
        return zero, zero
    itl = _step_distribution(table, slots, solution)
    return (LatencyDistribution(solution.tpot_s, *_mean_of_draws_quantiles(itl, steps, load_variance_s2)),
            _distribution(itl, solution.tpot_s))


def _first_token(table: StepTable, slots: int, decodes: float, companions_mean: float) -> tuple[tuple[np.ndarray, np.ndarray], float]:
    """Distribution and mean of the time from a window's start to a prompt's first token.

    The prompt shares its window with Poisson(``companions_mean``) others (FCFS, uniform position).
    """
    k, pmf = _prompt_counts(companions_mean)
    k = k + 1
    times, _ = table.windows(decodes, slots, k)
    values, weights, mean = [], [], 0.0
    for p, t, count, window in zip(pmf, times, k, table.shapes(decodes, slots, k)):
        scale = t / window.time_s
        finish = np.asarray(window.finish_s) * scale
        values.append(finish)
        weights.append(np.full(len(finish), p / len(finish)))
        mean += p * _fsum(finish) / len(finish)
    return _compress(np.concatenate(values), np.concatenate(weights)), mean


#: Largest change of any probability at which the window chain's power iteration stops.
CHAIN_TAIL = 1e-12
#: Share of the arrivals whose window the TTFT distribution follows (the rest is far below what
#: a p99 or a mean can show, and the windows that gather it long).
CHAIN_KEPT = 1e-6
#: Power iterations of the window chain at most (it mixes in tens of steps below capacity).
CHAIN_ITERATIONS = 2000
#: Points of the uniform rest of the window in progress an arrival waits for.
RESIDUAL_POINTS = 8
#: Support points of the first-token time given the window an arrival found (before the mixture
#: over windows, which is compressed to :data:`DISTRIBUTION_POINTS`).
FIRST_TOKEN_POINTS = 32


def _window_chain(table: StepTable, slots: int, decodes: float, rate: float,
                  mean_window_s: float) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """The windows of 0, 1, 2, ... prompts: their times, how long an arrival can find each state, and their
    stationary probabilities; None when the chain does not settle.

    The prompts of a window are those that arrived during the one before, so the prompt counts
    form a Markov chain: ``K' ~ Poisson(rate x time(n, K))``. With no decodes an empty window takes
    no time: the state is the server idle until the next arrival (lasting ``1 / rate``), which
    starts a window of one. A long window gathers many prompts
    and makes the next one long too, so windows come in runs, and an arrival that finds a long
    window also finds many companions in the next one: the TTFT tail is heavier than one
    ``Poisson(rate W)`` draw around the mean window gives (section 11 of
    ``benchmarks/RESULTS.md``). The chain is truncated at the first count (of a geometric
    sequence from the mean-value window's) whose next count stays within it by
    :func:`_support_limit` (the tail beyond is lumped onto it), and its stationary distribution
    found by power iteration from ``Poisson(rate x mean_window_s)`` until no probability moves
    by more than :data:`CHAIN_TAIL` (sums in C loops, not BLAS, so the result does not depend on
    memory alignment). None when no count below :data:`MAX_PROMPTS_PER_WINDOW` closes the chain.
    """
    tops = [_support_limit(rate * mean_window_s)]
    while tops[-1] < MAX_PROMPTS_PER_WINDOW:
        tops.append(min(MAX_PROMPTS_PER_WINDOW, math.ceil(tops[-1] * 1.25)))
    tops = np.array(tops)
    reach, _ = table.windows(decodes, slots, tops)
    closed = [top for top, t in zip(tops.tolist(), reach.tolist()) if _support_limit(rate * t) <= top]
    if not closed:
        return None
    top = closed[0]
    times, _ = table.windows(decodes, slots, np.arange(top + 1))
    transitions = _poisson_rows(rate * times, top)
    lasting = times.copy()
    if times[0] <= 0:  # no decodes: the server idle until the next arrival, whose window it starts
        transitions[0] = 0.0
        transitions[0, 1] = 1.0
        lasting[0] = 1.0 / rate
    start_k, start_pmf = _poisson_pmf(rate * mean_window_s, top)
    state = np.zeros(top + 1)
    state[start_k.astype(int)] = start_pmf
    for _ in range(CHAIN_ITERATIONS):
        following = np.einsum("i,ij->j", state, transitions)  # C loops, not BLAS
        if np.abs(following - state).max() <= CHAIN_TAIL:
            return times, lasting, following
        state = following
    return None


def _arrival_ttft(table: StepTable, slots: int, decodes: float, rate: float,
                  mean_window_s: float) -> tuple[tuple[np.ndarray, np.ndarray], float, float] | None:
    """TTFT of an arrival before any wait for a slot: its distribution, the mean rest of the window in progress and the mean first-token time.

    An arrival finds a window of ``k`` prompts with probability proportional to ``pi_k x
    time(k)`` (:func:`_window_chain`; length-biased), waits for the rest of it (uniform), and is
    prefilled in the next window with the ``Poisson(rate x time(k))`` others that arrived during
    it (FCFS, uniform position): both parts depend on ``k``, so the TTFT is their mixture over
    ``k``. Where the chain does not settle, the prompt counts are one ``Poisson(rate x
    mean_window_s)`` draw and the two parts independent; None when nothing decodes as well
    (``mean_window_s`` 0: the windows are the prompts' own queue, and a chain of windows that
    does not settle below :data:`MAX_PROMPTS_PER_WINDOW` is a queue too long to plan on).
    """
    chain = _window_chain(table, slots, decodes, rate, mean_window_s)
    if chain is None and mean_window_s <= 0:
        return None
    if chain is None:
        k, pmf = _prompt_counts(rate * mean_window_s)
        times, _ = table.windows(decodes, slots, k)
        busy_s = _dot(pmf, times)
        biased_s = _dot(pmf, times**2) / busy_s if busy_s > 0 else 0.0
        residual = _uniform_dist(times, pmf * times / busy_s) if busy_s > 0 else (np.zeros(1), np.ones(1))
        first, first_mean_s = _first_token(table, slots, decodes, rate * biased_s)
        return _add(residual, first), biased_s / 2, first_mean_s
    times, lasting, stationary = chain
    # An arrival finds each state in proportion to how long it lasts. One that finds the server idle
    # (times[0] = 0) is the arrival that ends it: no rest to wait for, no companions.
    found = stationary * lasting
    found = found / _fsum(found, nonnegative=True)
    order = np.argsort(-found, kind="stable")
    kept = np.sort(order[: int(np.searchsorted(np.cumsum(found[order]), 1.0 - CHAIN_KEPT)) + 1])
    window_s, share = times[kept], found[kept] / _fsum(found[kept], nonnegative=True)
    # The prompt's first-token time in a window with c companions, for every c the kept windows
    # may gather: one atom per position (value, companions, weight within its window), sorted.
    top = _support_limit(rate * float(window_s.max()))
    scaled, _ = table.windows(decodes, slots, np.arange(1, top + 2))
    fraction, of, within = table.finish_atoms(decodes, slots, top)
    values = fraction * scaled[of]
    order = np.argsort(values, kind="stable")
    likely = _poisson_rows(rate * window_s, top)  # P(c companions | the window found)
    first_values, first_weights = _compress_rows(values[order], likely[:, of[order]] * within[order], FIRST_TOKEN_POINTS)
    first_mean = (first_values * first_weights).sum(axis=1)
    residual_quantiles = (np.arange(RESIDUAL_POINTS) + 0.5) / RESIDUAL_POINTS
    ttft = (window_s[:, None, None] * residual_quantiles[None, :, None] + first_values[:, None, :]).ravel()
    weights = np.broadcast_to((share[:, None] * first_weights)[:, None, :] / RESIDUAL_POINTS, (len(kept), RESIDUAL_POINTS, first_values.shape[1])).ravel()
    keep = weights > 0
    return (_compress(ttft[keep], weights[keep] / _fsum(weights[keep], nonnegative=True)), _dot(share, window_s) / 2,
            _dot(share, first_mean))


def open_loop(config: ServingConfig, request_rate_per_s: float, table: StepTable | None = None, *,
              capacity_per_s: float | None = None) -> SteadyState:
    """Steady state of one replica of ``config`` (max-num-seqs ``config.batch``) under Poisson arrivals.

    ``request_rate_per_s`` > 0 is the replica's own arrival rate; ``capacity_per_s`` (computed
    when not given) only sets the reported utilization. Beyond capacity the result has
    ``stable=False`` and infinite latencies.
    """
    if request_rate_per_s <= 0:
        raise ValueError("request_rate_per_s must be positive")
    table = table or StepTable(config)
    return table.memo(("open_loop", config.batch, request_rate_per_s, capacity_per_s),
                      lambda: _open_loop(config, request_rate_per_s, table, capacity_per_s))


@dataclass(frozen=True)
class _OpenCore:
    """What an open loop's TPOT needs, before its TTFT: the fixed point, the decoders an arrival finds, the slot gains
    (:func:`slot_gains`) and the TPOT / ITL distributions."""

    solution: _Solution
    found: float
    gains: tuple[float, float]
    tpot: LatencyDistribution
    itl: LatencyDistribution


def _open_core(config: ServingConfig, rate: float, table: StepTable) -> _OpenCore | None:
    """The :class:`_OpenCore` of the open loop at ``rate`` (memoised in ``table``); None beyond capacity.

    :func:`max_rate_within` reads its TPOT first: a rate whose TPOT misses its limit misses the
    SLO whatever its TTFT, the larger part of the work (:func:`_open_loop`).
    """
    return table.memo(("open_core", config.batch, rate), lambda: _open_core_computed(config, rate, table))


def _open_core_computed(config: ServingConfig, rate: float, table: StepTable) -> _OpenCore | None:
    """:func:`_open_core` computed (not memoised)."""
    slots, steps = config.batch, config.output_tokens - 1
    solution = _open_solution(table, rate, slots, steps)
    if solution is None:
        return None
    # An arrival finds rate x (O - 1) x TPOT decoders (Poisson arrivals see time averages).
    found = min(float(slots), rate * steps * solution.tpot_s)
    gains = slot_gains(table, slots, steps, rate, found)
    tpot, itl = _tpot_itl(table, slots, solution, config.output_tokens, tpot_load_variance_s2(rate, steps * solution.tpot_s, steps, *gains))
    return _OpenCore(solution, found, gains, tpot, itl)


def _open_loop(config: ServingConfig, request_rate_per_s: float, table: StepTable, capacity_per_s: float | None) -> SteadyState:
    """:func:`open_loop` computed (not memoised)."""
    rate, slots, steps = request_rate_per_s, config.batch, config.output_tokens - 1
    capacity = capacity_request_rate_per_s(config, table) if capacity_per_s is None else capacity_per_s
    core = _open_core(config, rate, table)
    if core is None:
        return _unstable("open_loop", rate, None, capacity, config.output_tokens)
    solution, found = core.solution, core.found
    # An arrival finds a window in progress, length-biased; it is prefilled in the next window
    # with the prompts that arrived during the same one. The windows it sees hold the decoders
    # it finds (not counting itself): solve their length again at that count (at low load
    # mostly idle, zero-length windows).
    arrival = _decode_run(table, slots, rate, lambda t: found) or solution
    arrival_ttft = _arrival_ttft(table, slots, found, rate, arrival.window_s)
    if arrival_ttft is None:
        return _unstable("open_loop", rate, None, capacity, config.output_tokens)
    window_ttft, residual_mean_s, first_mean_s = arrival_ttft
    dispersion = slot_dispersion(*core.gains)
    first_token_s = residual_mean_s + first_mean_s

    def full_holding_s() -> float:
        """A request's time in its slot while every slot is held: its ``O - 1`` steps next to ``slots`` decoders
        (its first token alone when it has no decode steps: nobody decodes, whatever the slots)."""
        if steps == 0:
            return first_token_s
        full = _decode_run(table, slots, rate, lambda _t: float(slots))
        return math.inf if full is None else first_token_s + steps * full.tpot_s

    slot_p, slot_wait_s = slot_waiting(rate, first_token_s + steps * solution.tpot_s, slots, dispersion, full_holding_s)
    if slot_p >= 1.0:
        return _unstable("open_loop", rate, None, capacity, config.output_tokens)
    ttft_mean_s = first_token_s + slot_wait_s
    return SteadyState(
        mode="open_loop", stable=True, request_rate_per_s=rate, concurrent_users=None,
        utilization=rate / capacity if capacity > 0 else math.nan, ttft=_with_slot_wait(window_ttft, slot_p, slot_wait_s, ttft_mean_s),
        tpot=core.tpot,
        itl=core.itl, e2e_mean_s=ttft_mean_s + steps * solution.tpot_s, decode_sequences=solution.decodes_seen,
        output_tokens=config.output_tokens, slot_dispersion=dispersion, slot_wait_probability=slot_p,
    )


def _open_solution(table: StepTable, rate: float, slots: int, steps: int, start: tuple[float, float] | None = None) -> _Solution | None:
    """The open loop's fixed point at ``rate``.

    Every prompt is prefilled next to the requests decoding at that moment, but a prompt that
    finds all the other ``slots - 1`` sequence slots held waits for one to free, and then runs
    next to the other ``slots - 1`` only: a decoding request sees the prompts at ``rate x (1 -
    P(others full) / slots)`` (Erlang B over the other slots; none at all with a single slot).
    The slot occupancy needs TPOT: two passes.
    """
    solution, tpot_s = None, table.decode_step_s(1.0, slots)
    for _ in range(2):
        held = rate * (table.window(0, 1).time_s + steps * tpot_s)
        interleaved = rate * (1.0 - erlang_b(slots - 1, held * (slots - 1) / slots) / slots)
        solution = _decode_run(table, slots, interleaved, lambda t: min(float(slots), 1.0 + rate * steps * t), start)
        if solution is None:
            return None
        tpot_s, start = solution.tpot_s, (solution.tpot_s, solution.window_s)
    return solution


def _closed_loop_tpot(table: StepTable, slots: int, running: int, steps: int, first_s: float) -> tuple[float, _Solution]:
    """TPOT of ``running`` requests cycling through the slots with zero think time, and its solution.

    Given TPOT ``t``, the response-time law gives the throughput ``X = running / (first + (O - 1) t)``,
    the others' prompts arrive at ``X (running - 1) / running`` and ``1 + (running - 1) (O - 1) t / E2E``
    sequences decode; the windows then give a TPOT ``T(t)``. ``T(t) - t`` is positive at a
    lone decode step and negative for large ``t`` (no arrivals), so the root is bracketed and
    found by the Illinois variant of regula falsi.
    """
    last: list[_Solution] = []  # a nearby solution to start the window iteration from

    def residual(t: float) -> tuple[float, _Solution | None]:
        service = first_s + steps * t
        others = running / service * (running - 1) / running
        n = 1.0 + (running - 1) * steps * t / service
        solution = _decode_run(table, slots, others, lambda _: n, (last[0].tpot_s, last[0].window_s) if last else None)
        if solution is None:
            return math.inf, None
        last[:] = [solution]
        return solution.tpot_s - t, solution

    low = table.decode_step_s(1.0, slots)
    f_low, sol_low = residual(low)
    if f_low <= 0.0:  # a single user: no one else's prompts, its own decode step
        return sol_low.tpot_s, sol_low
    high = 2.0 * max(low, table.decode_step_s(float(running), slots))
    f_high, sol_high = residual(high)
    while f_high > 0.0:
        low, f_low, sol_low = high, f_high, sol_high
        high *= 2.0
        f_high, sol_high = residual(high)
    side = 0
    for _ in range(MAX_ITERATIONS):
        if math.isinf(f_low):
            mid = (low + high) / 2
        else:
            mid = high - f_high * (high - low) / (f_high - f_low)
        f_mid, sol_mid = residual(mid)
        if sol_mid is not None and abs(f_mid) <= CONVERGENCE * mid or high - low <= CONVERGENCE * high:
            break
        if f_mid > 0.0:
            low, f_low, sol_low = mid, f_mid, sol_mid
            if side == -1 and not math.isinf(f_high):
                f_high /= 2
            side = -1
        else:
            high, f_high, sol_high = mid, f_mid, sol_mid
            if side == 1 and not math.isinf(f_low):
                f_low /= 2
            side = 1
    if sol_mid is None:
        mid, sol_mid = high, sol_high
    return sol_mid.tpot_s, sol_mid


def closed_loop(config: ServingConfig, concurrent_users: int, table: StepTable | None = None, *,
                capacity_per_s: float | None = None) -> SteadyState:
    """Steady state of one replica of ``config`` serving ``concurrent_users`` users with zero think time.

    The interactive response-time law ``X = U / E2E`` is solved self-consistently;
    ``min(U, config.batch)`` requests hold sequence slots, the others wait ``(U - B) / X`` for
    one. A request arrives when its user's previous one finishes, at a step boundary, so it
    waits for no step in progress; it is prefilled in the next step with the requests of the
    users whose answers finished in the same step. ``capacity_per_s`` (computed when not
    given) only sets the reported utilization.
    """
    if concurrent_users < 1:
        raise ValueError("concurrent_users must be at least 1")
    table = table or StepTable(config)
    return table.memo(("closed_loop", config.batch, int(concurrent_users), capacity_per_s),
                      lambda: _closed_loop(config, concurrent_users, table, capacity_per_s))


def grid_slots(slots: int, decodes_at_most: float) -> int:
    """The sequence slots that stand for ``slots`` in a computation whose decode counts stay at most ``decodes_at_most``.

    Decode counts enter the model only through :meth:`StepTable._neighbours`, which interpolates
    between the :data:`DECODE_GRID` points around a count and clamps the upper one to the slots.
    Below the first grid point ``G`` at or above ``decodes_at_most`` the upper neighbour is a grid
    point no larger than ``G``, and at ``G`` itself the upper weight is 0; so every number of
    slots from ``G`` up gives the same neighbours, weights and figures, and ``G`` stands for them
    all. With fewer slots than ``G`` (or no grid point that large) the slots stand for
    themselves. A closed loop of ``U`` users keeps at most ``U`` decoding, so, e.g., 40 users give
    the same core at every max-num-seqs from 48 (the grid point above 40) up (:func:`_closed_core`).
    """
    i = bisect.bisect_left(DECODE_GRID, decodes_at_most)
    return DECODE_GRID[i] if i < len(DECODE_GRID) and DECODE_GRID[i] <= slots else slots


@dataclass(frozen=True)
class _ClosedCore:
    """What a closed loop of ``running`` requests in their slots gives before its slots' saturation is checked: the
    TPOT fixed point, the first-token distribution and mean, and the TPOT / ITL distributions."""

    tpot_s: float
    solution: _Solution
    first: tuple[np.ndarray, np.ndarray]
    first_mean_s: float
    tpot: LatencyDistribution
    itl: LatencyDistribution


def _closed_core(table: StepTable, running: int, slots: int, steps: int) -> _ClosedCore:
    """The :class:`_ClosedCore` of ``running`` requests cycling through ``slots`` (at least ``running``), memoised in
    ``table`` under the slots that stand for them (:func:`grid_slots`): the batch sizes of a shape from the grid
    point above ``running`` up share one computation, with the figures each would compute alone."""
    slots = grid_slots(slots, running)
    return table.memo(("closed_core", running, slots), lambda: _closed_core_computed(table, running, slots, steps))


def _closed_core_computed(table: StepTable, running: int, slots: int, steps: int) -> _ClosedCore:
    """:func:`_closed_core` computed (not memoised)."""
    first_mean_s = table.window(0, 1).time_s
    for _ in range(CLOSED_LOOP_ROUNDS):  # the first-token time depends weakly on TPOT: a few rounds
        tpot_s, solution = _closed_loop_tpot(table, slots, running, steps, first_mean_s)
        service_s = first_mean_s + steps * tpot_s
        others = running / service_s * (running - 1) / running
        decoding = steps * tpot_s / service_s
        k, pmf = _prompt_counts(others * tpot_s)
        new_first_s = _dot(pmf, table.first_token_mean_s((running - 1) * decoding, slots, k + 1))
        done = abs(new_first_s - first_mean_s) <= CONVERGENCE * new_first_s
        first_mean_s = new_first_s
        if done:
            break
    first, first_mean_s = _first_token(table, slots, (running - 1) * decoding, others * solution.tpot_s)
    tpot, itl = _tpot_itl(table, slots, solution, steps + 1)
    return _ClosedCore(tpot_s, solution, first, first_mean_s, tpot, itl)


def _closed_loop(config: ServingConfig, concurrent_users: int, table: StepTable, capacity_per_s: float | None) -> SteadyState:
    """:func:`closed_loop` computed (not memoised)."""
    users, slots, steps = int(concurrent_users), config.batch, config.output_tokens - 1
    running = min(users, slots)
    core = _closed_core(table, running, slots, steps)
    tpot_s, first, first_mean_s, tpot, itl = core.tpot_s, core.first, core.first_mean_s, core.tpot, core.itl
    capacity = capacity_request_rate_per_s(config, table) if capacity_per_s is None else capacity_per_s
    throughput = running / (first_mean_s + steps * tpot_s)
    decodes_seen = core.solution.decodes_seen
    saturation = _saturation(table, slots, steps) if steps > 0 else None
    if saturation is not None and throughput > saturation.rate_per_s:
        # Prefill-bound: the returning users' prompts arrive faster than the steps can take them in
        # (whole prompts, or chunks, beside the decodes fill each step's token budget), so the
        # engine admits them at its saturation rate and they queue for their prefill.
        throughput, tpot_s, decodes_seen = saturation.rate_per_s, saturation.tpot_s, saturation.decodes
        tpot = itl = LatencyDistribution(tpot_s, tpot_s, tpot_s, tpot_s)
        prefill_wait_s = max(0.0, running / throughput - steps * tpot_s - first_mean_s)
        first, first_mean_s = (first[0] + prefill_wait_s, first[1]), first_mean_s + prefill_wait_s
    slot_wait_s = (users - running) / throughput
    ttft_mean_s = first_mean_s + slot_wait_s
    return SteadyState(
        mode="closed_loop", stable=True, request_rate_per_s=throughput, concurrent_users=float(users),
        utilization=throughput / capacity if capacity > 0 else math.nan,
        ttft=_distribution((first[0] + slot_wait_s, first[1]), ttft_mean_s), tpot=tpot,
        itl=itl, e2e_mean_s=ttft_mean_s + steps * tpot_s, decode_sequences=decodes_seen, output_tokens=config.output_tokens,
    )


def _unstable(mode: str, rate: float, users: float | None, capacity: float, output_tokens: int) -> SteadyState:
    return SteadyState(mode=mode, stable=False, request_rate_per_s=rate, concurrent_users=users,
                       utilization=rate / capacity if capacity > 0 else math.nan, ttft=UNSTABLE, tpot=UNSTABLE, itl=UNSTABLE,
                       e2e_mean_s=math.inf, decode_sequences=math.nan, output_tokens=output_tokens)


@dataclass(frozen=True)
class _Saturation:
    """Where prompt windows start to grow without bound: the rate (requests/s), the decoders and their TPOT there."""

    rate_per_s: float
    decodes: float
    tpot_s: float


def _saturation(table: StepTable, slots: int, steps: int) -> _Saturation:
    """The rate (requests/s) at which prompt windows grow without bound (memoised in ``table``).

    Far into a long window every extra prompt adds ``s(n)`` seconds and ``sigma(n)`` steps
    (the slopes of :meth:`StepTable.windows`), so ``W = a + rate x W x s(n)`` diverges at
    ``rate = 1 / s(n)``; there the decoders ``n = 1 + rate (O - 1) TPOT`` see steps of
    ``TPOT = s(n) / sigma(n)``, i.e. ``n = 1 + (O - 1) / sigma(n)`` (at most ``slots``).
    More decoders leave less of each step's token budget to prompts, so ``sigma`` does not fall
    with ``n`` and ``1 + (O - 1) / sigma(n) - n`` falls: its root is found by bisection (iterating
    the map instead oscillates where the prompts per step drop, e.g. from two to one, between
    neighbouring decode counts).
    """
    return table.memo(("saturation", slots, steps), lambda: _saturation_point(table, slots, steps))


def _saturation_point(table: StepTable, slots: int, steps: int) -> _Saturation:
    """:func:`_saturation` computed (not memoised)."""

    def point(n: float) -> tuple[float, float, float]:
        """(decoders the slopes at ``n`` call for minus ``n``, time per prompt, steps per prompt)."""
        lo, hi, _ = table._neighbours(n, slots)
        probe = np.array([2, 3]) * max(table.linear_from_prompts(lo), table.linear_from_prompts(hi))
        times, steps_ = table.windows(n, slots, probe)
        extra = probe[1] - probe[0]  # the slopes: what the prompts between the two probes add
        per_prompt_s, per_prompt_steps = (times[1] - times[0]) / extra, (steps_[1] - steps_[0]) / extra
        return min(float(slots), 1.0 + steps / per_prompt_steps) - n, per_prompt_s, per_prompt_steps

    low, high = 1.0, float(slots)
    n = high
    excess, per_prompt_s, per_prompt_steps = point(high)
    if excess < 0.0:  # the decoders do not fill the slots: bisect on [1, slots]
        while high - low > CONVERGENCE * high:
            middle = (low + high) / 2
            if point(middle)[0] > 0.0:
                low = middle
            else:
                high = middle
        n = low
        _, per_prompt_s, per_prompt_steps = point(n)
    return _Saturation(float(1.0 / per_prompt_s), float(n), float(per_prompt_s / per_prompt_steps))


def capacity_request_rate_per_s(config: ServingConfig, table: StepTable | None = None) -> float:
    """Largest sustainable open-loop arrival rate (requests/s) of one replica of ``config``.

    The smaller of two limits: the rate at which prompt work saturates the steps
    (:func:`_saturation`) and the rate at which the ``config.batch`` sequence slots fill
    (``rate x (first token + (O - 1) TPOT) = slots``, solved with the model's TPOT at that rate).
    """
    table = table or StepTable(config)
    return table.memo(("capacity", config.batch), lambda: _capacity(config, table))


def _capacity(config: ServingConfig, table: StepTable) -> float:
    """:func:`capacity_request_rate_per_s` computed (not memoised)."""
    slots, steps = config.batch, config.output_tokens - 1

    best: list[_Solution] = []  # the solution at the largest rate known to be stable: a start from below

    def excess(rate: float) -> float:
        """Slot occupancy at ``rate`` minus the slots (inf when no steady state exists)."""
        start = (best[0].tpot_s, best[0].window_s) if best else None
        solution = _open_solution(table, rate, slots, steps, start)
        if solution is None:
            return math.inf
        found = min(float(slots), rate * steps * solution.tpot_s)
        first_s = float(table.windows(found, slots, np.array([1]))[0][0])
        value = rate * (first_s + steps * solution.tpot_s) - slots * STABILITY_LIMIT
        if value < 0:
            best[:] = [solution]
        return value

    saturated = _saturation(table, slots, steps).rate_per_s * STABILITY_LIMIT
    full = slots * STABILITY_LIMIT
    # Occupancy = rate x holding time (Little's law), and the holding time grows with the rate:
    # a try above the capacity bounds it from below by full / holding, a try below bounds it
    # from above the same way. Tries: a first guess (every slot decoding), then regula falsi
    # between the nearest tries on each side (bisection while no finite one is known above),
    # aimed at the middle of the accepted occupancies and kept strictly inside the bracket.
    # The guess keeps the first try away from saturation, where the windows' fixed point is
    # nearly critical and slow to find or refute, unless saturation binds.
    low, high = 0.0, saturated
    below, above = (0.0, -full), (saturated, math.inf)  # the nearest tries: (rate, excess)
    aim = -CAPACITY_TOLERANCE * slots / 2
    rate = min(saturated, full / (table.window(0, 1).time_s + steps * table.decode_step_s(float(slots), slots)))
    side, tried_saturated = 0, rate >= saturated
    while True:
        f = excess(rate)
        if -CAPACITY_TOLERANCE * slots <= f < 0 or (f < 0 and rate >= saturated):  # within tolerance of full
            return rate
        holding_s = (f + full) / rate
        if f < 0:
            low, below = rate, (rate, f)
            high = min(high, full / holding_s)
            if side == -1 and not math.isinf(above[1]):  # the same end moved twice: Illinois
                above = (above[0], above[1] / 2)
            side = -1
        else:
            high, above = rate, (rate, f)
            if not math.isinf(f):
                low = max(low, full / holding_s)
            if side == 1:
                below = (below[0], below[1] / 2)
            side = 1
        if high - low <= CAPACITY_TOLERANCE * high:
            return low
        if high >= saturated and not tried_saturated:  # the slots may never fill below saturation
            rate, tried_saturated = saturated, True
            continue
        (r_low, f_low), (r_high, f_high) = below, above
        rate = (low + high) / 2 if math.isinf(f_high) else r_high - (f_high - aim) * (r_high - r_low) / (f_high - f_low)
        rate = min(max(rate, low + 0.01 * (high - low)), high - 0.01 * (high - low))


def _within(state: SteadyState, percentile: int, ttft_limit_s: float | None, tpot_limit_s: float | None) -> bool:
    """Whether ``state`` is stable and meets both limits at ``percentile`` (None: no limit)."""
    return state.stable and (ttft_limit_s is None or state.ttft.at(percentile) <= ttft_limit_s) and \
        (tpot_limit_s is None or state.tpot.at(percentile) <= tpot_limit_s)


def max_rate_within(config: ServingConfig, percentile: int, ttft_limit_s: float | None, tpot_limit_s: float | None, *,
                    target_utilization: float = DEFAULT_TARGET_UTILIZATION, table: StepTable | None = None,
                    capacity_per_s: float | None = None) -> float:
    """Largest open-loop rate (requests/s) one replica takes at ``target_utilization`` of capacity with the SLOs met.

    The limits apply to the ``percentile`` (50, 90 or 99) of TTFT and per-request TPOT; None is
    no limit. Returns 0.0 when even a vanishing load misses a limit. Latency grows with load,
    so the largest rate is found by bisection (to :data:`CAPACITY_TOLERANCE`).
    """
    table = table or StepTable(config)
    capacity = capacity_request_rate_per_s(config, table) if capacity_per_s is None else capacity_per_s
    return table.memo(("max_rate_within", config.batch, percentile, ttft_limit_s, tpot_limit_s, target_utilization, capacity),
                      lambda: _max_rate_within(config, percentile, ttft_limit_s, tpot_limit_s, target_utilization, table, capacity))


def _max_rate_within(config: ServingConfig, percentile: int, ttft_limit_s: float | None, tpot_limit_s: float | None,
                     target_utilization: float, table: StepTable, capacity: float) -> float:
    """:func:`max_rate_within` computed (not memoised)."""
    high = target_utilization * capacity
    if high <= 0:
        return 0.0

    def meets(rate: float) -> bool:
        if tpot_limit_s is not None:  # a TPOT miss is a miss whatever the TTFT: skip the TTFT's work
            core = _open_core(config, rate, table)
            if core is None or not core.tpot.at(percentile) <= tpot_limit_s:
                return False
        return _within(open_loop(config, rate, table, capacity_per_s=capacity), percentile, ttft_limit_s, tpot_limit_s)

    if meets(high):
        return high
    low = 0.0
    if not meets(high * CAPACITY_TOLERANCE):
        return 0.0
    while high - low > CAPACITY_TOLERANCE * high:
        mid = (low + high) / 2
        if meets(mid):
            low = mid
        else:
            high = mid
    return low


def max_users_within(config: ServingConfig, percentile: int, ttft_limit_s: float | None, tpot_limit_s: float | None, users_cap: int, *,
                     table: StepTable | None = None) -> int:
    """Most closed-loop users (at most ``users_cap``) one replica serves with the SLOs met at ``percentile``; 0 when one user already misses.

    No utilization bound applies: users with zero think time wait for their answers, so a
    closed loop cannot push a replica past its capacity (its latency grows instead, which the
    SLOs bound). Latency grows with users, so the largest count is found by bisection.
    """
    table = table or StepTable(config)
    return table.memo(("max_users_within", config.batch, percentile, ttft_limit_s, tpot_limit_s, users_cap),
                      lambda: _max_users_within(config, percentile, ttft_limit_s, tpot_limit_s, users_cap, table))


def _max_users_within(config: ServingConfig, percentile: int, ttft_limit_s: float | None, tpot_limit_s: float | None, users_cap: int,
                      table: StepTable) -> int:
    """:func:`max_users_within` computed (not memoised)."""

    def meets(users: int) -> bool:
        return _within(closed_loop(config, users, table, capacity_per_s=0.0), percentile, ttft_limit_s, tpot_limit_s)

    if meets(users_cap):
        return users_cap
    low, high = 0, users_cap  # meets(low) (vacuously for 0), not meets(high)
    while high - low > 1:
        mid = (low + high) // 2
        if meets(mid):
            low = mid
        else:
            high = mid
    return low
