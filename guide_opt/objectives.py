"""The objectives: one :class:`ObjectiveKind` entry per objective in :data:`OBJECTIVES`.

Everything a layer needs to know about an objective is in its entry, so adding one is one
entry (:func:`register_objective`): the problem file accepts its name, the fleet solvers
build its CP-SAT expression from its integer ``coefficient`` (:mod:`guide_opt.formulation`),
break its ties with ``tie_break`` (:mod:`guide_opt.solvers.cpsat`, the exhaustive solver
alike), report its bound in its ``unit`` through its ``quantum``, prune dominated candidates
by its ``dominance`` signature (:mod:`guide_opt.pruning`), print it with ``format`` and
phrase a binding constraint's gain with ``gain_words`` (:mod:`guide_opt.explain`).

Candidates and plans are read by attribute only (a candidate's ``shape``, ``fits``,
``replicas_min``, ...; a plan's picks), so this module sits below the space and the plan
it describes and imports neither.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from guide_opt.quanta import (COST_QUANTUM_USD_PER_H, SERVED_QUANTUM, SERVED_SCALE, THROUGHPUT_QUANTUM_TOKENS_PER_S, TIME_QUANTUM_US,
                              to_quanta)

#: A candidate (:class:`guide_opt.space.Candidate`) and a plan (:data:`guide_opt.plan.Plan`), read by attribute.
Candidate = Any
Plan = Any
#: (group, vector) of a candidate: within one group a candidate whose vector is smaller or equal everywhere dominates.
Signature = tuple[tuple, tuple[float, ...]]


@dataclass(frozen=True)
class ObjectiveKind:
    """One objective, as every layer needs it.

    name: the ``objective`` of a problem file. sense: +1 minimized, -1 maximized.
    unit: the reporting unit (``$/h``, ``tokens/s``, ...); prefix / suffix / decimals: how a
        value is printed (``$5.98/h``).
    stack: which solve answers a problem with this objective: ``fleet`` (one pick per LLM,
        :mod:`guide_opt.solvers`), ``pareto`` (:mod:`guide_opt.pareto`), ``schedule``
        (:mod:`guide_opt.scheduling`); None: a reporting-only objective, not a problem's.
    tie_break: the objective that decides between plans equal in this one (None: none).
    value: the objective of a fleet plan in ``unit``.
    coefficient: the integer coefficient (quanta) of a candidate in the CP-SAT expression;
        multiplied by the replica count (``per_replica``) or by the candidate's use literal.
    quantum: one coefficient quantum in ``unit`` (how a CP-SAT bound is reported).
    formulated_as: the objective whose CP-SAT model is built (``pareto`` builds min_cost's).
    replicas: which replica counts an optimum may use: ``fewest`` (the demand's floor; more
        replicas only add to the objective), ``any`` (floor to the limit) or ``share`` (1 up to
        the floor: part of the demand may go unserved; the value is a mean over LLMs).
    grows_with_replicas: every replica added improves it (unbounded without a budget or GPU
        limit; each replica runs at full load).
    dominance: the candidate's :data:`Signature` (None: the objective has no dominance rule
        and nothing is pruned). Exact only when swapping a dominated candidate for its
        dominator keeps every shared limit and never worsens the objective or its tie-break.
    simulated: plans under it are checked in the serving simulator and can be refined.
    gain_words: what relaxing a binding constraint gains, with ``{gain}`` (None: a generic phrase).
    """

    name: str
    sense: int
    unit: str
    prefix: str = ""
    suffix: str = ""
    decimals: int = 1
    stack: Literal["fleet", "pareto", "schedule"] | None = "fleet"
    tie_break: str | None = None
    value: Callable[[Plan], float] | None = None
    coefficient: Callable[[Candidate], int] | None = None
    per_replica: bool = True
    quantum: float | None = None
    formulated_as: str | None = None
    replicas: Literal["fewest", "any", "share"] = "fewest"
    grows_with_replicas: bool = False
    dominance: Callable[[Candidate], Signature] | None = None
    simulated: bool = False
    gain_words: str | None = None

    @property
    def minimized(self) -> bool:
        """True when smaller is better."""
        return self.sense > 0

    @property
    def model_objective(self) -> str:
        """The objective whose CP-SAT model answers this one (``formulated_as``, else itself)."""
        return self.formulated_as or self.name

    def format(self, value: float | None) -> str:
        """``value`` with its unit, e.g. ``$5.98/h`` or ``42,218.0 tokens/s``; '-' for None."""
        return "-" if value is None else f"{self.prefix}{value:,.{self.decimals}f}{self.suffix}"

    def gain_text(self, gain: float) -> str:
        """What relaxing a binding constraint would gain, e.g. ``save $1.20/h``."""
        if self.gain_words is not None:
            return self.gain_words.format(gain=gain)
        return f"{'lower' if self.minimized else 'raise'} {self.name} by {gain:,.{self.decimals}f} {self.unit}"

    def bound_in_unit(self, quanta: float, llm_count: int) -> float:
        """A CP-SAT value of this objective's expression (quanta) in ``unit``."""
        bound = quanta * self.quantum
        return bound / max(1, llm_count) if self.replicas == "share" else bound


def _cost(plan: Plan) -> float:
    return math.fsum(p.cost_per_hour for p in plan)


def _throughput(plan: Plan) -> float:
    return math.fsum(p.throughput_tokens_per_s for p in plan)


def _latency(plan: Plan) -> float:
    return math.fsum(p.candidate.request_latency_s * 1e3 for p in plan)


def _served(plan: Plan) -> float:
    return 100.0 * math.fsum(p.served_share for p in plan) / max(1, len(plan))


def _fitting(coefficient: Callable[[Candidate], int]) -> Callable[[Candidate], int]:
    """``coefficient`` that is 0 for a candidate that does not fit (never usable: the memory family guards it in explain mode)."""
    def guarded(c: Candidate) -> int:
        return coefficient(c) if c.fits else 0
    guarded.__doc__ = coefficient.__doc__
    return guarded


def cost_coefficient(c: Candidate) -> int:
    """$/h of one replica, in :data:`~guide_opt.quanta.COST_QUANTUM_USD_PER_H` (rounded: exact for prices up to 6 decimals)."""
    return to_quanta(c.shape.usd_per_replica_hour, COST_QUANTUM_USD_PER_H)


def throughput_coefficient(c: Candidate) -> int:
    """Generated tokens/s of one replica, in :data:`~guide_opt.quanta.THROUGHPUT_QUANTUM_TOKENS_PER_S` (rounded down)."""
    return to_quanta(c.throughput_per_replica_tokens_per_s, THROUGHPUT_QUANTUM_TOKENS_PER_S, "down")


def latency_coefficient(c: Candidate) -> int:
    """Mean request latency of the candidate, in :data:`~guide_opt.quanta.TIME_QUANTUM_US`."""
    return to_quanta(c.request_latency_s * 1e6, TIME_QUANTUM_US, "nearest")


def served_coefficient(c: Candidate) -> int:
    """Share of demand one replica of ``c`` serves, in :data:`~guide_opt.quanta.SERVED_QUANTUM` units (rounded down, capped at one LLM)."""
    # share x SCALE rather than share / QUANTUM: a whole LLM (1.0) must be exactly SCALE (1.0 / 1e-9 is 999999999.99...).
    return min(SERVED_SCALE, to_quanta((c.served_share_per_replica or 0.0) * SERVED_SCALE, 1.0, "down"))


# Dominance signatures; :mod:`guide_opt.pruning` says why each makes pruning exact. The group
# always holds the LLM index and the GPU type (so a swap keeps the per-type inventory); where
# the replica count is free (max_throughput, max_served, pareto) it also holds the GPUs per replica.

def _dominance_fewest(c: Candidate) -> Signature:
    return (c.model_index, c.shape.gpu.id), (float(c.replicas_min * c.shape.gpus_per_replica), c.request_latency_s)


def _dominance_throughput(c: Candidate) -> Signature:
    return (c.model_index, c.shape.gpu.id, c.shape.gpus_per_replica), (float(c.replicas_min), -c.throughput_per_replica_tokens_per_s)


def _dominance_served(c: Candidate) -> Signature:
    return (c.model_index, c.shape.gpu.id, c.shape.gpus_per_replica), (-c.served_share_per_replica,)


def _dominance_pareto(c: Candidate) -> Signature:
    return ((c.model_index, c.shape.gpu.id, c.shape.gpus_per_replica),
            (float(c.replicas_min), c.request_latency_s, -c.throughput_per_replica_tokens_per_s))


#: Every objective by name, in the order a problem file lists them. Ties on cost go to the
#: fastest plan; ties on anything else to the cheapest.
OBJECTIVES: dict[str, ObjectiveKind] = {}


def register_objective(kind: ObjectiveKind) -> ObjectiveKind:
    """Add ``kind`` to :data:`OBJECTIVES` (replacing one of the same name); returns it."""
    OBJECTIVES[kind.name] = kind
    return kind


for _kind in (
    ObjectiveKind("min_cost", 1, "$/h", "$", "/h", 2, tie_break="min_latency", value=_cost, coefficient=cost_coefficient,
                  quantum=COST_QUANTUM_USD_PER_H, dominance=_dominance_fewest, simulated=True, gain_words="save ${gain:.2f}/h"),
    ObjectiveKind("max_throughput", -1, "tokens/s", "", " tokens/s", 1, tie_break="min_cost", value=_throughput,
                  coefficient=_fitting(throughput_coefficient), quantum=THROUGHPUT_QUANTUM_TOKENS_PER_S, replicas="any",
                  grows_with_replicas=True, dominance=_dominance_throughput, simulated=True, gain_words="add {gain:,.0f} tokens/s"),
    ObjectiveKind("min_latency", 1, "ms", "", " ms", 1, tie_break="min_cost", value=_latency, coefficient=_fitting(latency_coefficient),
                  per_replica=False, quantum=TIME_QUANTUM_US / 1000.0, dominance=_dominance_fewest, simulated=True,
                  gain_words="cut latency by {gain:.1f} ms"),
    ObjectiveKind("pareto", 1, "$/h", "$", "/h (cheapest point)", 2, stack="pareto", value=_cost, formulated_as="min_cost",
                  dominance=_dominance_pareto),
    ObjectiveKind("min_makespan", 1, "h", "", " h", 2, stack="schedule", tie_break="schedule_cost"),
    ObjectiveKind("max_served", -1, "% of demand served", "", "% of demand served", 2, tie_break="min_cost", value=_served,
                  coefficient=_fitting(served_coefficient), quantum=SERVED_QUANTUM * 100.0, replicas="share",
                  dominance=_dominance_served, gain_words="serve {gain:.1f} percentage points more of the demand"),
    ObjectiveKind("schedule_cost", 1, "$", "$", " total", 2, stack=None),
):
    register_objective(_kind)


def schedule_reporting(objective: str) -> str:
    """The entry a batch-job schedule solved for ``objective`` is reported in: its own (``min_makespan``, h), else ``schedule_cost`` ($)."""
    return objective if OBJECTIVES[objective].stack == "schedule" else "schedule_cost"


def problem_objectives() -> tuple[str, ...]:
    """Names a problem file's ``objective`` may take, in registry order."""
    return tuple(name for name, o in OBJECTIVES.items() if o.stack is not None)


def fleet_objectives(*, simulated_only: bool = False) -> frozenset[str]:
    """Objectives the fleet solvers answer (``simulated_only``: those the simulator checks and refinement handles)."""
    return frozenset(name for name, o in OBJECTIVES.items() if o.stack == "fleet" and (o.simulated or not simulated_only))
