"""Dominance pruning: drop candidates that can never be needed, before a CP-SAT model is built.

A fleet of many LLMs on many GPU types has thousands of candidates (shape x batch size) per
LLM, but for a given objective most of them are beaten by a sibling on the same GPU type.
:func:`prune_dominated` keeps, per LLM and GPU type, only the candidates no sibling
dominates; each objective's registry entry (:data:`guide_opt.objectives.OBJECTIVES`, its
``dominance``) says what "dominates" means for it, and an objective without one is not pruned.

Why pruning is exact
--------------------
Let ``A`` and ``B`` be usable candidates of the same LLM on the same GPU type, and say ``A``
dominates ``B`` (``A`` no worse than ``B`` in every component of the signature below). Take
any feasible plan that uses ``B`` with ``r_B`` replicas. Replace that pick by ``A`` with the
replica count given below. Every other LLM's pick is unchanged, and:

1. *Shared limits still hold.* Both candidates run on the same GPU type, so the new pick uses
   no more GPUs of that type (per-type inventory), no more GPUs in all (``max_gpus``), and --
   as cost per GPU is the type's price -- no more $/h (budget).
2. *Candidate-level limits still hold.* ``A`` is usable (memory and SLOs hold, it is among
   the candidates the model may use), and its replica count is at least ``A``'s demand floor
   and at most its own limit (the limit depends only on GPUs per replica, price, and the
   shared limits, all checked in 1).
3. *The objective and its tie-breaker are no worse*, component by component:

   - ``min_cost`` / ``min_latency`` -- signature ``(n, L)`` with ``n = replicas_min x GPUs per
     replica`` (the GPUs a cheapest use of the candidate needs) and ``L`` the mean request
     latency. ``A`` is used with ``replicas_min(A)`` replicas: ``n_A <= n_B <= r_B x GPUs(B)``
     GPUs and $/h, latency ``L_A <= L_B``. Extra replicas never help either objective, so the
     cheapest use is the only one that matters; cost and latency are both objective and
     tie-breaker here.
   - ``max_throughput`` -- same GPUs per replica, signature ``(replicas_min, -tokens/s per
     replica)``. ``A`` with ``r_B`` replicas: the same GPUs and $/h, ``r_B >= replicas_min(B)
     >= replicas_min(A)``, throughput ``r_B x t_A >= r_B x t_B``.
   - ``max_served`` -- same GPUs per replica, signature ``(-share of demand per replica)``.
     ``A`` with ``r_B`` replicas serves ``min(1, r_B x s_A) >= min(1, r_B x s_B)`` at the same
     $/h.
   - ``pareto`` -- same GPUs per replica, signature ``(replicas_min, L, -tokens/s per
     replica)``. ``A`` with ``r_B`` replicas: the same $/h, latency ``<=``, throughput ``>=``:
     every point of the frontier stays reachable.

Hence for every plan using ``B`` there is a plan using ``A`` that is feasible and no worse in
the objective and its tie-breaker; removing ``B`` leaves the optimal value (and the Pareto
frontier) unchanged. Dominance is transitive and a candidate is only removed by a kept one
(the scan goes in signature order, and of equal signatures the first is kept), so the result
does not depend on the order of removals.

The comparisons use the candidates' floats; the model's integer coefficients are monotone
roundings of them (:func:`guide_opt.quanta.to_quanta`), so dominance also holds for what
CP-SAT sees.

Two uses need a weaker rule, chosen by ``same_shape_only``: a solve that must avoid given
*shape combinations* (the top-k alternatives, :meth:`Formulation.forbid_plan_shapes`) may
only prune among candidates of the same shape (other batch sizes), since a forbidden shape
cannot stand in for an allowed one. Candidates cut by verification are removed *before*
pruning (``build_formulation(forbidden=...)``), so a cut never leaves a dominated sibling
pruned.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from guide_opt.objectives import OBJECTIVES
from guide_opt.space import Candidate

def dominance_signature(c: Candidate, objective: str) -> tuple[tuple, tuple[float, ...]]:
    """(group, vector) of ``c`` for ``objective``: within a group, a smaller-or-equal vector dominates.

    The objective's registry entry defines it (:attr:`guide_opt.objectives.ObjectiveKind.dominance`);
    see the module docstring for why each vector makes pruning exact.
    """
    rule = OBJECTIVES[objective].dominance
    if rule is None:
        raise ValueError(f"no dominance rule for objective {objective!r}")
    return rule(c)


def _dominates(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    return all(x <= y for x, y in zip(a, b))


def prune_dominated(candidates: Sequence[Candidate], objective: str, *, same_shape_only: bool = False) -> tuple[list[Candidate], int]:
    """The candidates no sibling dominates for ``objective`` (in their original order) and how many were pruned.

    ``candidates`` must be the ones the model may use (usable, within their replica limits);
    a candidate is only ever pruned by one of them. With ``same_shape_only`` only candidates
    of the same shape (other batch sizes) are compared. Objectives outside
    without a dominance rule (:attr:`~guide_opt.objectives.ObjectiveKind.dominance` None) return the input unchanged.
    """
    if OBJECTIVES[objective].dominance is None:
        return list(candidates), 0
    groups: dict[tuple, list[tuple[tuple[float, ...], int]]] = defaultdict(list)
    for i, c in enumerate(candidates):
        group, vector = dominance_signature(c, objective)
        if same_shape_only:
            group = (*group, c.shape.key)
        groups[group].append((vector, i))
    keep: set[int] = set()
    for members in groups.values():
        keep.update(undominated(members))
    return [c for i, c in enumerate(candidates) if i in keep], len(candidates) - len(keep)


def undominated(members: list[tuple[tuple[float, ...], int]]) -> list[int]:
    """The indices of ``members`` ((vector, index) pairs, sorted here) that no other member dominates: a vector is
    dropped when another is no larger in every component, and of equal vectors the one of the lowest index is kept.

    Scanned in lexicographic order, every vector kept before ``v`` is no larger than ``v`` in its first component,
    so ``v`` is dominated when a kept one is no larger in the others; with two components that is the running
    minimum of the second one (the signatures of ``min_cost``, ``min_latency`` and ``max_throughput``), a constant
    time per member instead of a scan of the kept ones.
    """
    members.sort()
    kept: list[int] = []
    if members and len(members[0][0]) == 2 and not any(x != x for vector, _ in members for x in vector):  # (NaN: the scan below)
        lowest: float | None = None  # the least second component kept so far
        for (_, second), i in members:
            if lowest is None or not lowest <= second:
                lowest = second
                kept.append(i)
        return kept
    kept_vectors: list[tuple[float, ...]] = []
    for vector, i in members:
        if not any(_dominates(k, vector) for k in kept_vectors):
            kept_vectors.append(vector)
            kept.append(i)
    return kept
