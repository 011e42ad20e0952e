"""The CP-SAT model of a deployment problem (:class:`Formulation`) and its decoder.

The reduction, in the manner of CVXPY's ``apply`` / ``invert``:

- :func:`build_formulation` turns a :class:`~guide_opt.space.SearchSpace` into a ``CpModel``.
  Every candidate ``c`` (a shape at one batch size) was evaluated once, in Python, with the
  full performance model (:mod:`guide_opt.space`); the model only chooses among them. Per LLM
  and candidate there is a Boolean ``use[c]`` and an integer ``replicas[c]``; exactly one
  candidate per LLM is used. Candidates that break a per-LLM constraint (memory, SLOs) are
  left out; cost, GPUs, throughput and latency enter as integer coefficients of ``use`` and
  ``replicas``, so the model is exact on the table of candidates (no linearization, no
  interpolation between batch sizes) and CP-SAT handles only the choice and the shared limits
  (budget, inventory, max_gpus).
- :meth:`Formulation.decode` maps solver values back to a :class:`~guide_opt.plan.Plan`.
- Before the variables are made, candidates dominated for the objective may be pruned
  (``prune=True``; exact, see :mod:`guide_opt.pruning`).
- ``max_served`` drops the demand floor (1 to the limit replicas per LLM) and maximizes the
  served share of each LLM's demand, capped at the whole demand (:data:`SERVED_QUANTUM`);
  ``pareto`` builds the min-cost model whose cost / latency / throughput expressions
  :mod:`guide_opt.pareto` bounds in turn.

Every float becomes an integer (:func:`guide_opt.quanta.to_quanta`), with the named quanta
of :mod:`guide_opt.quanta`; CP-SAT accepts integer coefficients only. Each objective's
expression is built from its registry entry (:data:`guide_opt.objectives.OBJECTIVES`: its
integer ``coefficient`` times the replica count or the use literal), so a new objective
needs no change here. Costs are quantized by rounding
(exact for prices with up to six decimals); times and throughputs are only objective
coefficients and are re-evaluated exactly when the plan is decoded.

Constraint families (:class:`guide_opt.families.Family`) carry enforcement literals
(``memory``, ``ttft_slo``, ``tpot_slo``, ``demand`` per LLM; ``budget``, ``inventory[gpu]``,
``max_gpus`` shared) so that
:mod:`guide_opt.explain` can re-solve with assumptions and name a conflict.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from guide_opt.cp_sat import cp_model
from guide_opt.deadline import Deadline
from guide_opt.families import Family, gpu_family, llm_family, shared_family
from guide_opt.objectives import OBJECTIVES, cost_coefficient
from guide_opt.plan import Pick, Plan
from guide_opt.presets import SolverPreset, apply_cp_sat_parameters
from guide_opt.solution import Status, status_from_cp_sat
from guide_opt.quanta import SERVED_SCALE, budget_quanta
from guide_opt.space import Candidate, SearchSpace, replica_limit

def run_cp_sat(model: cp_model.CpModel, preset: SolverPreset, deadline: Deadline, *, seed: int | None = None,
               cap_s: float | None = None, num_workers: int | None = None) -> tuple[Status, cp_model.CpSolver]:
    """Solve ``model`` once: the one place every CP-SAT call of a solve goes through.

    The call gets what is left of ``deadline`` (at most ``cap_s``) and is counted in it; the
    preset's parameters apply, with ``num_workers`` (if given) overriding the preset's. The
    search is deterministic (``interleave_search``: the workers' work is interleaved in fixed
    batches, independent of thread timing), so a solve that finishes within its limit returns
    the same solution on every run with the same seed, even among equal-objective optima.
    """
    solver = cp_model.CpSolver()
    apply_cp_sat_parameters(solver, preset, time_limit_s=deadline.call_limit_s(cap_s), seed=seed)
    if num_workers is not None:
        solver.parameters.num_workers = num_workers
    solver.parameters.interleave_search = True
    code = solver.Solve(model)
    deadline.add_cp_sat_call(solver.WallTime())
    return status_from_cp_sat(code), solver


@dataclass
class Formulation:
    """A CP-SAT model over a search space, with the handles needed to decode and explain it.

    ``expressions`` holds each registered objective's expression in its quanta (``min_cost``:
    $/h, ``min_latency``: summed request latency, ``max_throughput``: tokens/s, ...);
    ``cost_expr`` is the cost the budget limits and, for an objective that serves a share of
    the demand (``max_served``), ``served_expr`` the summed served share
    (:data:`~guide_opt.quanta.SERVED_QUANTUM` units). Objectives and epsilon constraints are
    built from them. ``pruned`` counts the candidates removed by dominance
    (:mod:`guide_opt.pruning`) before the model was built. ``cost_terms``: each candidate's
    cost expression (quanta); ``cheapest_costs`` / ``dearest_costs``: its cost at the fewest /
    most replicas it may run (:meth:`hold_cost_shares`).
    """

    model: cp_model.CpModel
    space: SearchSpace
    objective: str
    candidates: list[Candidate]
    use: list[cp_model.IntVar]
    replicas: list[cp_model.IntVar]
    by_model: list[list[int]]
    family_literals: dict[Family, cp_model.IntVar] = field(default_factory=dict)
    cost_expr: cp_model.LinearExpr | None = None
    objective_expr: cp_model.LinearExpr | None = None
    expressions: dict[str, cp_model.LinearExpr] = field(default_factory=dict)
    served_expr: cp_model.LinearExpr | None = None
    pruned: int = 0
    cost_terms: list = field(default_factory=list)
    cheapest_costs: list[int] = field(default_factory=list)
    dearest_costs: list[int] = field(default_factory=list)

    @property
    def latency_expr(self) -> cp_model.LinearExpr:
        """Summed mean request latency (time quanta): the Pareto frontier's latency axis."""
        return self.expressions["min_latency"]

    @property
    def throughput_expr(self) -> cp_model.LinearExpr:
        """Generated tokens/s of all replicas (throughput quanta): the Pareto frontier's throughput axis."""
        return self.expressions["max_throughput"]

    def expression(self, objective: str) -> cp_model.LinearExpr:
        """The expression (quanta) of ``objective``: the served share for a ``share`` objective, else its coefficient sum."""
        if OBJECTIVES[objective].replicas == "share":
            return self.served_expr
        return self.expressions[OBJECTIVES[objective].model_objective]

    def decode(self, solver: cp_model.CpSolver) -> Plan:
        """The plan of the solver's current solution: one pick per LLM."""
        picks = []
        for indices in self.by_model:
            chosen = [i for i in indices if solver.Value(self.use[i])]
            assert len(chosen) == 1, "exactly one candidate per LLM"
            i = chosen[0]
            picks.append(Pick(self.candidates[i], int(solver.Value(self.replicas[i]))))
        return tuple(picks)

    def hold_cost_shares(self, model: cp_model.CpModel, limit_quanta: int) -> None:
        """Add to ``model`` (this formulation's model or a clone) each LLM's cost at most ``limit_quanta`` less the other
        LLMs' cheapest options: ``cost_s <= L - sum_{t != s} min_t``, where the plans' cost is held to ``L``.

        Every plan pays each LLM at least ``min_t`` (its cheapest candidate at its floor), so every
        plan within ``L`` meets these constraints: the plans are the same, and so are the optimum's
        value and its tie-break (of two plans equal in both, CP-SAT may return either). They only
        tell CP-SAT per LLM what the limit implies for the whole fleet: under a limit the cheapest
        plan nearly exhausts (the alternatives capped at the optimum's cost, the tie-break of a
        min-cost optimum) its relaxation otherwise trades cost between LLMs that no integer plan
        can. A constraint that its LLM's dearest option already meets is left out.
        """
        least = [min((self.cheapest_costs[i] for i in indices), default=0) for indices in self.by_model]
        total = sum(least)
        for indices, own in zip(self.by_model, least):
            allowed = limit_quanta - (total - own)
            if indices and allowed < max(self.dearest_costs[i] for i in indices):
                model.Add(sum(self.cost_terms[i] for i in indices) <= allowed)

    def forbid_plan_shapes(self, plan: Plan) -> None:
        """Exclude the combination of shapes used by ``plan`` (for alternatives)."""
        chosen = {(p.candidate.model_index, p.candidate.shape) for p in plan}
        same_shape = [self.use[i] for i, c in enumerate(self.candidates) if (c.model_index, c.shape) in chosen]
        self.model.Add(sum(same_shape) <= len(self.by_model) - 1)  # at least one LLM changes shape


def _served_options(space: SearchSpace, eligible: list[Candidate], objective: str) -> list[tuple[Candidate, int, int]]:
    """(candidate, replicas, served quanta) for every useful replica count: 1 up to the limit, or
    up to the count that serves the whole demand (more can only cost more)."""
    options = []
    for c in eligible:
        k = objective_coefficient(objective, c)
        cap = replica_limit(space, c) if k == 0 else min(replica_limit(space, c), math.ceil(SERVED_SCALE / k))
        options.extend((c, r, min(SERVED_SCALE, r * k)) for r in range(1, max(cap, 1) + 1))
    return options


def _prune_served_options(options: list[tuple[Candidate, int, int]]) -> tuple[list[tuple[Candidate, int, int]], int]:
    """Drop options another option on the same GPU type beats: no more GPUs (hence $/h) and at least the same share.

    Exact for the same reason as :mod:`guide_opt.pruning`: swapping in the better option keeps
    every shared limit and serves no less for no more money.
    """
    by_type: dict[str, list[tuple[int, int, int]]] = {}
    for n, (c, r, served) in enumerate(options):
        by_type.setdefault(c.shape.gpu.id, []).append((r * c.shape.gpus_per_replica, -served, n))
    keep = set()
    for members in by_type.values():
        members.sort()
        best = -1
        for gpus, neg_served, n in members:  # fewer GPUs first; of equal GPUs, more served first
            if -neg_served > best:
                keep.add(n)
                best = -neg_served
    return [o for n, o in enumerate(options) if n in keep], len(options) - len(keep)


def objective_coefficient(objective: str, c: Candidate) -> int:
    """Integer coefficient of ``c`` in ``objective``'s expression: per replica, or per use (``per_replica`` False, ``min_latency``)."""
    return OBJECTIVES[OBJECTIVES[objective].model_objective].coefficient(c)


def objective_term(objective: str, c: Candidate, replicas: int) -> int:
    """``c``'s share (quanta) of ``objective``'s expression when it runs ``replicas`` replicas: its coefficient times the
    replicas (``per_replica``), or once (per use)."""
    return objective_coefficient(objective, c) * (replicas if OBJECTIVES[objective].per_replica else 1)


def plan_quanta(objective: str, plan: Plan) -> int:
    """``objective``'s value of ``plan`` in the quanta of its CP-SAT expression (exact: the model's own integers, where
    :func:`~guide_opt.plan.objective_value` sums floats)."""
    return sum(objective_term(objective, p.candidate, p.replicas) for p in plan)


def add_excluded_combinations(model: cp_model.CpModel, space: SearchSpace, candidates: list[Candidate], use: list) -> None:
    """One no-good clause per excluded combination: at least one of its candidates stays unused.

    A combination with a candidate absent from the model (cut, ineligible) cannot occur and
    needs no clause.
    """
    index = {}
    for i, c in enumerate(candidates):
        index.setdefault(c.key, []).append(i)
    for combination in space.excluded_combinations:
        if all(key in index for key in combination):
            # one candidate per LLM is used, so the combination is used when all its len() keys are
            model.Add(sum(use[i] for key in combination for i in index[key]) <= len(combination) - 1)


def build_formulation(space: SearchSpace, objective: str, *, explain: bool = False, forbidden: frozenset[int] = frozenset(),
                      prune: bool = False, prune_across_shapes: bool = True) -> Formulation:
    """Build the CP-SAT model of ``space`` for ``objective``.

    Objectives: min_cost, max_throughput, min_latency, max_served; ``pareto`` builds the
    min_cost model with every expression an epsilon-constraint needs (:mod:`guide_opt.pareto`).

    With ``explain=False`` candidates that break a candidate-level constraint are left out
    and replica domains are tightened by the shared limits (a smaller, faster model). With
    ``explain=True`` every evaluated candidate is kept and every constraint family is
    guarded by an enforcement literal, to be passed as assumptions.

    ``forbidden``: id()s of candidates to leave out (cut by verification); the space's
    ``excluded_combinations`` become no-good clauses (not all of a set's candidates used).
    ``prune``: remove dominated candidates first (:func:`guide_opt.pruning.prune_dominated`;
    never in explain mode, nor with excluded combinations, where a dominated candidate may be
    what replaces a cut combination); ``prune_across_shapes=False`` restricts pruning to candidates of one shape, as a
    solve that forbids shape combinations needs.

    Under a budget each LLM's cost is also held to the budget less the other LLMs' cheapest
    options (:meth:`Formulation.hold_cost_shares`; implied by the budget, so the plans are the same);
    likewise under the space's ``cost_limit_quanta``, which also holds the plans' cost.

    ``max_served``: each LLM uses one (candidate, replica count) option, 1 to the limit
    replicas (no demand floor), serving ``min(SERVED_SCALE, replicas x coefficient)``;
    the objective maximizes the sum over LLMs. With ``prune`` an option is also dropped when
    another on the same GPU type serves as much with no more GPUs (:func:`_prune_served_options`).
    """
    from guide_opt.pruning import prune_dominated

    problem = space.problem
    prune = prune and not space.excluded_combinations
    model = cp_model.CpModel()
    literals: dict[Family, cp_model.IntVar] = {}
    kind = OBJECTIVES[objective]
    served_mode = kind.replicas == "share" and not explain

    def family(f: Family):
        if not explain:
            return None
        if f not in literals:
            literals[f] = model.NewBoolVar(f.name)
        return literals[f]

    candidates, use, replicas, by_model = [], [], [], []
    floors, ceilings = [], []  # per candidate: its replicas when used, at least and at most
    pruned_total = 0
    served_vars = []
    for ms in space.models:
        eligible = []
        for c in ms.candidates:
            if id(c) in forbidden:
                continue
            if not explain:
                if not c.usable_for(objective):
                    continue
                r_floor = 1 if served_mode else (c.replicas_min if c.replicas_min is not None else 1)
                if replica_limit(space, c) < r_floor:
                    continue
            eligible.append(c)
        if prune and not explain:
            eligible, pruned = prune_dominated(eligible, objective, same_shape_only=not prune_across_shapes)
            pruned_total += pruned
        indices = []
        if served_mode:
            # One Boolean per (candidate, replica count): the served share of each option is
            # exact (capped at the whole demand), which gives CP-SAT a much tighter bound than
            # a replica count times a capped share.
            options = _served_options(space, eligible, objective)
            if prune:
                options, pruned = _prune_served_options(options)
                pruned_total += pruned
            terms = []
            for c, count, served in options:
                i = len(candidates)
                candidates.append(c)
                u = model.NewBoolVar(f"use[{i}]")
                r = model.NewIntVar(0, count, f"replicas[{i}]")
                model.Add(r == count * u)
                use.append(u)
                replicas.append(r)
                floors.append(count)
                ceilings.append(count)
                indices.append(i)
                terms.append(u * served)
            served_vars.append(sum(terms) if terms else 0)
        for c in eligible if not served_mode else ():
            r_max = problem.search.max_replicas if explain else replica_limit(space, c)
            i = len(candidates)
            candidates.append(c)
            u = model.NewBoolVar(f"use[{i}]")
            r = model.NewIntVar(0, max(r_max, 1), f"replicas[{i}]")
            model.Add(r >= 1).OnlyEnforceIf(u)
            model.Add(r == 0).OnlyEnforceIf(u.Not())
            if c.replicas_min is not None and c.replicas_min > 1:
                lit = family(llm_family("demand", ms))
                model.Add(r >= c.replicas_min).OnlyEnforceIf([u] if lit is None else [u, lit])
            for violated in c.violations if explain else ():
                lit = family(llm_family(violated, ms))
                model.Add(u == 0).OnlyEnforceIf(lit)
            use.append(u)
            replicas.append(r)
            floors.append(1 if explain else max(1, c.replicas_min or 1))
            ceilings.append(max(r_max, 1))
            indices.append(i)
        by_model.append(indices)
        if indices:
            model.AddExactlyOne(use[i] for i in indices)
        else:
            model.AddBoolOr([])  # no candidate left for this LLM: the model is infeasible

    add_excluded_combinations(model, space, candidates, use)
    cost_per_replica = [cost_coefficient(c) for c in candidates]  # quanta
    cost_terms = [replicas[i] * cost for i, cost in enumerate(cost_per_replica)]
    cost_expr = sum(cost_terms) if cost_terms else 0
    if problem.budget_per_hour is not None:
        ct = model.Add(cost_expr <= budget_quanta(problem.budget_per_hour))
        if explain:
            ct.OnlyEnforceIf(family(shared_family("budget")))
    gpu_ids = sorted({c.shape.gpu.id for c in candidates})
    for gpu_id in gpu_ids:
        limit = problem.hardware.inventory.get(gpu_id)
        if limit is None:
            continue
        used = sum(replicas[i] * c.shape.gpus_per_replica for i, c in enumerate(candidates) if c.shape.gpu.id == gpu_id)
        ct = model.Add(used <= limit)
        if explain:
            ct.OnlyEnforceIf(family(gpu_family("inventory", gpu_id)))
    if problem.hardware.max_gpus is not None:
        ct = model.Add(sum(replicas[i] * c.shape.gpus_per_replica for i, c in enumerate(candidates)) <= problem.hardware.max_gpus)
        if explain:
            ct.OnlyEnforceIf(family(shared_family("max_gpus")))

    expressions = {name: _objective_expression(o, candidates, use, replicas) for name, o in OBJECTIVES.items()
                   if o.coefficient is not None and o.replicas != "share"}
    served_expr = sum(served_vars) if served_vars else None
    objective_expr = served_expr if served_mode else expressions[kind.model_objective]
    if OBJECTIVES[kind.model_objective].minimized:
        model.Minimize(objective_expr)
    else:
        model.Maximize(objective_expr)
    form = Formulation(model, space, objective, candidates, use, replicas, by_model, literals, cost_expr, objective_expr, expressions,
                       served_expr, pruned_total, cost_terms, [cost * f for cost, f in zip(cost_per_replica, floors)],
                       [cost * u for cost, u in zip(cost_per_replica, ceilings)])
    if not explain:
        if space.cost_limit_quanta is not None:  # the budget's constraint is above, with its family
            model.Add(cost_expr <= space.cost_limit_quanta)
        limit = space.plan_cost_limit_quanta
        if limit is not None:
            form.hold_cost_shares(model, limit)
    return form


def _objective_expression(kind, candidates: list[Candidate], use: list, replicas: list) -> cp_model.LinearExpr:
    """``kind``'s coefficient of each candidate times its replica count (``per_replica``) or its use literal, summed."""
    if not candidates:
        return 0
    variables = replicas if kind.per_replica else use
    return sum(variables[i] * kind.coefficient(c) for i, c in enumerate(candidates))
