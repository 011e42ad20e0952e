"""Fast, exact engine-step times for the simulator (:class:`StepCostModel`).

The simulator runs tens of thousands of engine steps per simulation, so calling
:func:`guide_opt.perf.step.step_time` (about 15 us) for every step would dominate. This
module evaluates the *same* function faster by using its structure:

For a fixed ``(new_tokens, sequences, pipeline_fill)`` only the attention operator depends on
``attended_tokens`` (A) and ``kv_read_tokens`` (R), and it is a roofline
``max(alpha * A' + c, gamma + beta * R' + delta * A')`` of the per-micro-batch shares
``A' = A / m``, ``R' = R / m`` (``m`` micro-batches under pipeline parallelism), counted
``rounds x layers_per_stage`` times (``c``: the fitted attention efficiency curve makes the
compute time affine in A for a fixed token count; ``gamma``: the memory time at A = R = 0,
kernel latencies included). So::

    step_time(nt, seq, A, R) = base(nt, seq) + rounds * layers * (attention(A', R') - attention(0, 0))

where ``base`` is ``step_time`` itself at ``A = R = 0``; ``alpha``, ``c`` and ``gamma`` are read
off :func:`guide_opt.perf.step.layer_operator_times` per key (memoised), ``beta`` and ``delta``
once.

Without pipeline parallelism a key costs no step-model call at all. At ``A = R = 0`` nothing
couples the token count to the sequence count: the GEMMs, elementwise kernels, all-reduces and
the attention's own bytes follow ``nt``; the LM head, the attention's per-sequence latency and
the host costs follow ``seq``. So ``base(nt, seq) = base(nt, 1) + base(1, seq) - base(1, 1)``
and likewise ``gamma``, while ``alpha`` and ``c`` (the attention's compute at ``A = nt`` and
``2 nt``, where the efficiency curve sits at a fixed context per token) follow ``nt`` alone.
Those one-dimensional parts are timed for every token count up to the largest seen, and every
sequence count likewise, in a few calls of the step model on arrays (it takes a
:class:`~guide_opt.perf.step.StepShape` of arrays, each element the same IEEE operations as a
call of its own); a simulation that meets a thousand step shapes makes a handful of such calls
instead of four thousand scalar ones. The decomposition is *checked* against
``step_time`` on probe shapes (compute- and memory-bound, every pipeline mode) when the model is
built; if the performance model ever stops having this structure, :attr:`exact_shortcut` is
False and every call goes straight to ``step_time`` (slower, still exact).
"""

from __future__ import annotations

import dataclasses
import math
import threading
from array import array
from collections import OrderedDict

import numpy as np

from guide_opt.perf.config import ServingConfig
from guide_opt.perf.step import StepShape, layer_operator_times, step_time

#: Relative tolerance of the self-check against ``step_time`` (float rounding only).
SHORTCUT_RELATIVE_TOLERANCE = 1e-9
_PROBE = 1.0e6
#: Token and sequence counts the one-dimensional parts are first timed for (the tables double beyond).
_FIRST_TABLE_SIZE = 256
#: The :class:`ServingConfig` fields :func:`~guide_opt.perf.step.step_time` never reads, at the values
#: :func:`shared_step_cost_model` sets them to: configurations that differ only in these (max-num-seqs, the token budget,
#: the request lengths, the memory fraction) have the same step times (``tests/simulate/test_sim_step_cost.py``).
STEP_INDEPENDENT_FIELDS = {"batch": 1, "input_tokens": 1, "output_tokens": 1, "max_num_batched_tokens": None, "gpu_memory_utilization": None}
#: Step-cost models each thread keeps for :func:`shared_step_cost_model` (the least recently used goes first).
SHARED_MODELS = 32
#: The kept models, per thread: a model grows its tables as it is used, so two threads must not share one (the web
#: planner solves in several threads).
_kept = threading.local()


def _shared_models() -> OrderedDict[str, "StepCostModel"]:
    models = getattr(_kept, "models", None)
    if models is None:
        models = _kept.models = OrderedDict()
    return models


def shared_step_cost_model(config: ServingConfig) -> "StepCostModel":
    """The :class:`StepCostModel` of ``config``'s step times, built once per thread for all the configurations that
    differ only in :data:`STEP_INDEPENDENT_FIELDS`: the simulations of one plan check or refinement (other max-num-seqs,
    budgets, lengths) share its self-check and its per-count tables instead of building them again each time. The
    model's times are the same either way (each table entry is a pure function of its count)."""
    models = _shared_models()
    shared_config = dataclasses.replace(config, **STEP_INDEPENDENT_FIELDS)
    key = repr(shared_config)
    model = models.get(key)
    if model is None:
        model = models[key] = StepCostModel(shared_config)
        while len(models) > SHARED_MODELS:
            models.popitem(last=False)
    else:
        models.move_to_end(key)
    return model


def clear_shared_step_cost_models() -> None:
    """Forget the models :func:`shared_step_cost_model` keeps in this thread (for a caller that changes how models are built)."""
    _shared_models().clear()


class StepCostModel:
    """Seconds of one engine step of ``config``, equal to ``step_time(config, shape).time_s``.

    Call :meth:`time_s` with the step's shape fields; :meth:`decode_times_s` evaluates a run
    of pure-decode steps at once (numpy). Not thread-safe (it memoises).
    """

    def __init__(self, config: ServingConfig) -> None:
        self.config = config
        self._layers = config.layers_per_stage
        self._pp = config.pp
        self._cache: dict[tuple[int, int, bool], tuple[float, ...]] = {}
        # pp == 1: the parts of an entry by token count (index nt) and by sequence count (index seq), grown on demand
        # (float64 arrays of the standard library: 8 bytes a count, read back as Python floats)
        self._by_tokens: tuple[array, array, array, array] = (array("d"), array("d"), array("d"), array("d"))  # base, gamma, alpha, c
        self._by_sequences: tuple[array, array] = (array("d"), array("d"))  # base and gamma minus their values at one sequence
        self._one_sequence: tuple[float, float] | None = None  # base and gamma at one sequence (set by the first growth)
        zero = layer_operator_times(config, StepShape(1, 1, 0.0, 0.0))["attention"]
        by_attended = layer_operator_times(config, StepShape(1, 1, _PROBE, 0.0))["attention"]
        by_read = layer_operator_times(config, StepShape(1, 1, 0.0, _PROBE))["attention"]
        self._delta = (by_attended.memory_time_s - zero.memory_time_s) / _PROBE
        self._beta = (by_read.memory_time_s - zero.memory_time_s) / _PROBE
        self.exact_shortcut = self._self_check()
        self.min_step_s = self.time_s(1, 1, 1.0, 0.0, False)
        """Lower bound of any step's duration (one decode token, empty context), s."""

    # ---- the decomposition ------------------------------------------------------------------
    @staticmethod
    def _new_counts(columns: tuple[array, ...], count: int) -> np.ndarray:
        """The counts ``columns`` (index = count) must add to hold ``count``, their size at least doubling."""
        if not columns[0]:  # no step has zero new tokens or sequences: index 0 holds a placeholder
            for column in columns:
                column.append(math.nan)
        start = len(columns[0])
        return np.arange(start, max(count + 1, 2 * start, _FIRST_TABLE_SIZE), dtype=float)

    @staticmethod
    def _extend(columns: tuple[array, ...], parts: tuple, counts: np.ndarray) -> None:
        """Append each of ``parts`` (arrays over ``counts``, or scalars) to its column."""
        for column, values in zip(columns, parts):
            column.frombytes(np.ascontiguousarray(np.broadcast_to(values, counts.shape), dtype=np.float64).tobytes())

    def _grow_tokens(self, new_tokens: int) -> None:
        """Time the token-count parts of :meth:`_separable_entry` for every count up to at least ``new_tokens``."""
        nt = self._new_counts(self._by_tokens, new_tokens)
        ones, zeros = np.ones_like(nt), np.zeros_like(nt)
        base_s = step_time(self.config, StepShape(nt, ones, zeros, zeros)).time_s
        gamma_s = layer_operator_times(self.config, StepShape(nt, ones, zeros, zeros))["attention"].memory_time_s
        one = layer_operator_times(self.config, StepShape(nt, ones, nt, zeros))["attention"].compute_time_s
        two = layer_operator_times(self.config, StepShape(nt, ones, 2.0 * nt, zeros))["attention"].compute_time_s
        slope = (two - one) / nt
        self._extend(self._by_tokens, (base_s, gamma_s, slope, one - slope * nt), nt)

    def _grow_sequences(self, sequences: int) -> None:
        """Time the sequence-count parts of :meth:`_separable_entry` for every count up to at least ``sequences``."""
        seq = self._new_counts(self._by_sequences, sequences)
        ones, zeros = np.ones_like(seq), np.zeros_like(seq)
        base_s = np.broadcast_to(step_time(self.config, StepShape(ones, seq, zeros, zeros)).time_s, seq.shape)
        gamma_s = np.broadcast_to(layer_operator_times(self.config, StepShape(ones, seq, zeros, zeros))["attention"].memory_time_s, seq.shape)
        if self._one_sequence is None:  # the first counts start at one sequence: the reference both parts are taken from
            self._one_sequence = (float(base_s[0]), float(gamma_s[0]))
        self._extend(self._by_sequences, (base_s - self._one_sequence[0], gamma_s - self._one_sequence[1]), seq)

    def reserve(self, new_tokens: int, sequences: int) -> None:
        """Time the one-dimensional parts (see the module docstring) for every count up to ``new_tokens`` and
        ``sequences`` at least; the columns of :meth:`separable_columns` grow in place."""
        if new_tokens >= len(self._by_tokens[0]):
            self._grow_tokens(new_tokens)
        if sequences >= len(self._by_sequences[0]):
            self._grow_sequences(sequences)

    def separable_columns(self) -> tuple[array[float], array[float], array[float], array[float], array[float], array[float]] | None:
        """The one-dimensional parts by count, for a caller that evaluates :meth:`time_s`' expression itself (the
        simulator's compiled engine); None under pipeline parallelism or without the exact shortcut.

        ``(base, gamma, alpha, intercept)`` by token count and ``(base, gamma)`` by sequence count less their values at
        one sequence (index: the count). A step of ``nt`` tokens and ``seq`` sequences attending ``A`` tokens and
        reading ``R`` takes ``b + layers x (max(alpha[nt] A + intercept[nt] (0 when A = 0), g + beta R + delta A) - g)``
        with ``b = base[nt] + seq_base[seq]`` and ``g = gamma[nt] + seq_gamma[seq]`` (:attr:`layers`, :attr:`beta`,
        :attr:`delta`). Counts beyond the columns' length need :meth:`reserve` first; the columns grow in place.
        """
        if not self.exact_shortcut or self._pp != 1:
            return None
        return (*self._by_tokens, *self._by_sequences)

    @property
    def layers(self) -> int:
        """Layers per pipeline stage: how many times a step runs the attention."""
        return self._layers

    @property
    def beta(self) -> float:
        """Seconds of attention memory time per KV token read (the roofline's ``beta``, see the module docstring)."""
        return self._beta

    @property
    def delta(self) -> float:
        """Seconds of attention memory time per attended token (the roofline's ``delta``)."""
        return self._delta

    def _separable_entry(self, new_tokens: int, sequences: int) -> tuple[float, float, float, float, float, float]:
        """:meth:`_entry` without pipeline parallelism, from the one-dimensional parts (see the module docstring)."""
        self.reserve(new_tokens, sequences)
        base, gamma, alpha, intercept = self._by_tokens
        seq_base, seq_gamma = self._by_sequences
        return (base[new_tokens] + seq_base[sequences], self._layers, 1.0, gamma[new_tokens] + seq_gamma[sequences], alpha[new_tokens],
                intercept[new_tokens])

    def _entry(self, new_tokens: int, sequences: int, fill: bool) -> tuple[float, float, float, float]:
        if self._pp == 1:
            micro, rounds = 1, 1
        else:
            micro = max(1, min(self._pp, sequences))
            rounds = micro + self._pp - 1 if fill else self._pp
        base = step_time(self.config, StepShape(new_tokens, sequences, 0.0, 0.0), pipeline_fill=fill).time_s
        nt, seq = math.ceil(new_tokens / micro), math.ceil(sequences / micro)
        gamma = layer_operator_times(self.config, StepShape(nt, seq, 0.0, 0.0))["attention"].memory_time_s
        # compute time at two attended counts (both >= nt / 2, where the efficiency curve is unclamped)
        # (small probes: the intercept is read off without cancellation)
        one = layer_operator_times(self.config, StepShape(nt, seq, float(nt), 0.0))["attention"].compute_time_s
        two = layer_operator_times(self.config, StepShape(nt, seq, 2.0 * nt, 0.0))["attention"].compute_time_s
        alpha = (two - one) / nt
        entry = (base, float(rounds * self._layers), 1.0 / micro, gamma, alpha, one - alpha * nt)
        self._cache[(new_tokens, sequences, fill)] = entry
        return entry

    def time_s(self, new_tokens: int, sequences: int, attended_tokens: float, kv_read_tokens: float, pipeline_fill: bool) -> float:
        """Seconds of a step of this shape (see :class:`guide_opt.perf.step.StepShape`)."""
        if not self.exact_shortcut:
            shape = StepShape(new_tokens, sequences, attended_tokens, kv_read_tokens)
            return step_time(self.config, shape, pipeline_fill=pipeline_fill).time_s
        if self._pp == 1:
            base, scale, inv_micro, gamma, alpha, intercept = self._separable_entry(new_tokens, sequences)
        else:
            entry = self._cache.get((new_tokens, sequences, pipeline_fill))
            if entry is None:
                entry = self._entry(new_tokens, sequences, pipeline_fill)
            base, scale, inv_micro, gamma, alpha, intercept = entry
        a = attended_tokens * inv_micro
        compute = alpha * a + intercept if a > 0 else 0.0
        memory = gamma + self._beta * kv_read_tokens * inv_micro + self._delta * a
        return base + scale * ((compute if compute > memory else memory) - gamma)

    def decode_times_s(self, sequences: int, kv_read_tokens: np.ndarray) -> np.ndarray:
        """Seconds of pure-decode steps of ``sequences`` sequences reading ``kv_read_tokens`` (array) of KV.

        Each sequence attends to its cached tokens plus itself: ``attended = kv_read + sequences``.
        """
        kv_read_tokens = np.asarray(kv_read_tokens, dtype=float)
        entry = self.decode_entry(sequences)
        if entry is None:
            return np.array([self.time_s(sequences, sequences, r + sequences, r, False) for r in kv_read_tokens])
        base, scale, inv_micro, gamma, alpha, intercept, beta, delta = entry
        a = (kv_read_tokens + sequences) * inv_micro
        attention = np.maximum(alpha * a + intercept, gamma + beta * kv_read_tokens * inv_micro + delta * a)
        return base + scale * (attention - gamma)

    def decode_entry(self, sequences: int) -> tuple[float, float, float, float, float, float, float, float] | None:
        """The constants of a pure-decode step of ``sequences`` sequences: ``(base, scale, inv_micro, gamma, alpha,
        intercept, beta, delta)``, of which a step reading ``R`` KV tokens takes, with ``a = (R + sequences) x inv_micro``,
        ``base + scale x (max(alpha a + intercept, gamma + beta R inv_micro + delta a) - gamma)`` seconds (the
        expression of :meth:`decode_times_s`, one step at a time: the same operations on the same floats).
        None without the exact shortcut."""
        if not self.exact_shortcut:
            return None
        if self._pp == 1:
            entry = self._separable_entry(sequences, sequences)
        else:
            entry = self._cache.get((sequences, sequences, False)) or self._entry(sequences, sequences, False)
        return (*entry, self._beta, self._delta)

    # ---- self-check ---------------------------------------------------------------------------
    def _self_check(self) -> bool:
        self.exact_shortcut = True
        probes = []
        for new_tokens, sequences in ((1, 1), (7, 7), (256, 256), (4096, 2), (8192, 40), (513, 1)):
            for context in (0.0, 100.0, 4000.0, 32000.0):
                kv_read = context * sequences
                attended = kv_read + new_tokens * (new_tokens + 1) / 2 / max(1, sequences)
                probes.append((new_tokens, sequences, attended, kv_read))
        for fill in (False, True):  # step_time of every probe in one call on arrays (each element its own scalar call's operations)
            expected_s = np.broadcast_to(step_time(self.config, StepShape.stack([StepShape(*shape) for shape in probes]),
                                                   pipeline_fill=fill).time_s, (len(probes),)).tolist()
            for shape, expected in zip(probes, expected_s):
                got = self.time_s(*shape, fill)
                if not abs(got - expected) <= SHORTCUT_RELATIVE_TOLERANCE * abs(expected):
                    self._cache.clear()
                    for column in (*self._by_tokens, *self._by_sequences):
                        del column[:]
                    self._one_sequence = None
                    return False
        return True
