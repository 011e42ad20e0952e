"""Quanta: every float of a plan becomes an integer here, in named units, before CP-SAT sees it.

CP-SAT accepts integer coefficients only. :func:`to_quanta` is the one conversion; the
objective registry (:mod:`guide_opt.objectives`) and the model builders
(:mod:`guide_opt.formulation`, :mod:`guide_opt.pareto`, :mod:`guide_opt.scheduling`) use
the quanta below. No solver library is imported here.
"""

from __future__ import annotations

import math

from guide_opt.errors import InputError
from guide_opt.limits import MAX_MODEL_INTEGER

#: One quantum of time (µs) for latency objective coefficients.
TIME_QUANTUM_US = 10
#: One quantum of cost ($/h).
COST_QUANTUM_USD_PER_H = 1e-6
#: One quantum of throughput (generated tokens/s).
THROUGHPUT_QUANTUM_TOKENS_PER_S = 1e-3
#: One quantum of served demand share (fraction of one LLM's demand) for ``max_served``.
SERVED_QUANTUM = 1e-9
#: A fully served LLM, in :data:`SERVED_QUANTUM` units.
SERVED_SCALE = round(1 / SERVED_QUANTUM)


def to_quanta(value: float, quantum: float, rounding: str = "nearest", field: str = "a figure of the plan") -> int:
    """Express ``value`` in integer multiples of ``quantum`` (rounding: nearest, down or up).

    The result is at most :data:`~guide_opt.limits.MAX_MODEL_INTEGER` in size, so sums over every
    candidate stay inside CP-SAT's 64-bit integers; a value beyond that (or not finite) raises
    :class:`~guide_opt.errors.InputError` naming ``field`` instead of overflowing. The problem's
    own limits (:mod:`guide_opt.limits`) keep valid inputs far below it.
    """
    ratio = value / quantum
    if not math.isfinite(ratio) or abs(ratio) > MAX_MODEL_INTEGER:
        raise InputError(field, f"{value:g} is beyond what the CP-SAT model can represent in units of {quantum:g}",
                         "give values within the limits of problems/README.md")
    if rounding == "down":
        return math.floor(ratio + 1e-9)
    if rounding == "up":
        return math.ceil(ratio - 1e-9)
    return round(ratio)


def budget_quanta(budget_per_hour: float) -> int:
    """A $/h budget in :data:`COST_QUANTUM_USD_PER_H`, rounded down: the cost limit every CP-SAT model and brute force
    holds plans to (a plan's cost, a sum of per-replica quanta, stays within the budget exactly when it stays within this)."""
    return to_quanta(budget_per_hour, COST_QUANTUM_USD_PER_H, "down", field="budget_per_hour")
