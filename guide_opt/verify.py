"""Never trust the solver: re-evaluate returned deployments with the full model.

:func:`verify` rebuilds every deployment of a solution from its ids alone (catalog lookup,
fresh :func:`~guide_opt.perf.estimate` call and, under the steady-state serving model, the same
:func:`~guide_opt.space.steady_state_figures` the planner used), checks memory, SLOs, the replicas
the demand needs (and the SLOs at the load a deployment with fewer replicas would carry), the
reported metrics and cost, and the shared limits (budget, inventory, max_gpus).
It returns the violations as sentences; an empty list means the solution is sound.
Like python-mip's ``check_optimization_results``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from guide_opt.catalog import Catalog, load_catalog
from guide_opt.parallel import forked_map
from guide_opt.perf.steady_state import StepTable
from guide_opt.plan import Pick, shared_limit_violations
from guide_opt.problem import Problem
from guide_opt.solution import Deployment, Solution
from guide_opt.space import (Candidate, ModelSpace, SearchSpace, Shape, SteadyFigures, empty_model_space, evaluate_candidate, make_shape,
                             resolve_prices, shape_config, steady_state_figures)

#: Relative tolerance when comparing reported metrics with the re-evaluation.
METRIC_TOLERANCE = 1e-6


@dataclass(frozen=True)
class Violation:
    """One problem found by :func:`verify`; ``model_index`` is None for shared limits."""

    model_index: int | None
    text: str


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=METRIC_TOLERANCE, abs_tol=1e-9)


def verify(problem: Problem, solution: Solution, catalog: Catalog | None = None) -> list[Violation]:
    """Re-evaluate ``solution``'s deployments for ``problem`` and list every violated constraint."""
    return verify_deployments(problem, list(solution.deployments), catalog)


#: Distinct step tables (LLM, lengths and shape) from which :func:`verify_deployments` spreads its evaluations over
#: processes: each table's evaluations take tens of milliseconds, a fork about as much.
PARALLEL_MIN_TABLES = 16

#: One deployment's evaluation: its LLM's space, shape, max-num-seqs and replicas.
_Evaluation = tuple[ModelSpace, Shape, int, int]


def _evaluate_group(group: list[_Evaluation], max_replicas: int) -> list[tuple[Candidate, SteadyFigures | None]]:
    """Evaluate deployments of one LLM at the same lengths on one shape, sharing one fresh step table: each one's candidate
    and, when it has fewer replicas than its demand needs, the steady-state figures at the load those replicas carry."""
    table: StepTable | None = None
    out: list[tuple[Candidate, SteadyFigures | None]] = []
    for ms, shape, batch, replicas in group:
        config = shape_config(ms.llm, ms.input_tokens, ms.output_tokens, shape, batch)
        if ms.serving_model == "steady_state" and table is None:
            table = StepTable(config)
        c = evaluate_candidate(ms, shape, batch, max_replicas, table)
        short = c.replicas_min is not None and replicas < c.replicas_min and c.serving_model == "steady_state"
        out.append((c, steady_state_figures(ms, config, table, replicas=replicas) if short else None))
    return out


def verify_deployments(problem: Problem, deployments: list[Deployment], catalog: Catalog | None = None) -> list[Violation]:
    """Check one deployment per LLM of ``problem`` (in order) with a fresh full-model evaluation.

    Deployments of the same LLM at the same lengths on the same shape share one step table (built here, not the
    planner's): a fleet that repeats services is re-evaluated at the cost of its distinct ones, with the same figures.
    With :data:`PARALLEL_MIN_TABLES` tables or more, the tables' evaluations are spread over forked processes
    (:func:`~guide_opt.parallel.forked_map`); each is a pure function of its deployments, so the verdict is the same.
    """
    catalog = catalog or load_catalog()
    if len(deployments) != len(problem.models):
        return [Violation(None, f"expected {len(problem.models)} deployments, got {len(deployments)}")]
    prices = resolve_prices(problem, catalog)
    found: list[list[Violation]] = [[] for _ in deployments]  # each deployment's violations, reported in deployment order
    groups: dict[tuple, list[int]] = {}  # step-table key -> indices of the deployments evaluated on it
    evaluations: dict[int, _Evaluation] = {}
    for i, (req, dep) in enumerate(zip(problem.models, deployments)):
        ms = empty_model_space(problem, i, catalog)
        llm = ms.llm
        shape = make_shape(problem, catalog.gpu(dep.gpu), dep.tp, dep.pp, catalog.framework(dep.framework),
                           catalog.quantization(dep.quantization), dep.kv_cache_dtype, prices[dep.gpu])
        if dep.model != llm.id:
            found[i].append(Violation(i, f"deployment {i} serves {dep.model}, the problem asks for {llm.id}"))
        reason = _shape_reason(ms, shape)
        if reason:
            found[i].append(Violation(i, f"{ms.label}: {reason}"))
            continue
        evaluations[i] = (ms, shape, dep.max_batch, dep.replicas)
        key = (llm.id, ms.input_tokens, ms.output_tokens, dep.gpu, dep.tp, dep.pp, dep.framework, dep.quantization, dep.kv_cache_dtype,
               ms.serving_model)
        groups.setdefault(key, []).append(i)
    members = list(groups.values())
    workers = None if len(members) >= PARALLEL_MIN_TABLES else 1
    evaluated = forked_map(lambda indices: _evaluate_group([evaluations[i] for i in indices], problem.search.max_replicas), members, workers)
    results = {i: result for indices, group in zip(members, evaluated) for i, result in zip(indices, group)}
    picks = []
    for i, dep in enumerate(deployments):
        if i not in results:
            continue
        own = found[i]
        ms, shape, _, _ = evaluations[i]
        c, at = results[i]
        for family in c.violations:
            own.append(Violation(i, f"{ms.label}: {_describe(family, c, ms)}"))
        if c.replicas_min is not None and dep.replicas < c.replicas_min:
            own.append(Violation(i, f"{ms.label}: demand needs {c.replicas_min} replicas, deployment has {dep.replicas}"))
            if at is not None:  # and the SLOs its replicas miss at the load they would carry
                own.extend(Violation(i, f"{ms.label}: at {at.load_per_replica:.4g} per replica, {_describe(family, at, ms)}")
                           for family in at.slo_violations)
        if not _close(dep.cost_per_hour, dep.replicas * shape.usd_per_replica_hour):
            own.append(Violation(i, f"{ms.label}: cost_per_hour {dep.cost_per_hour} != {dep.replicas * shape.usd_per_replica_hour}"))
        if c.fits:
            for key, fresh in (("ttft_ms", c.ttft_s * 1e3), ("tpot_ms", c.tpot_s * 1e3)):
                if not _close(dep.metrics[key], fresh):
                    own.append(Violation(i, f"{ms.label}: reported {key} {dep.metrics[key]:.4f} but the model gives {fresh:.4f}"))
        picks.append(Pick(c, dep.replicas))
    violations = [v for per_deployment in found for v in per_deployment]
    if len(picks) == len(problem.models):
        space = SearchSpace(problem=problem, models=[], prices_usd_per_gpu_hour=prices, gpu_ids=[])
        violations.extend(Violation(None, text) for text in shared_limit_violations(space, tuple(picks)))
    return violations


def _shape_reason(ms: ModelSpace, shape: Shape) -> str | None:
    from guide_opt.perf import ServingConfig

    config = ServingConfig(llm=ms.llm, gpu=shape.gpu, framework=shape.framework, quantization=shape.quantization, tp=shape.tp,
                           pp=shape.pp, kv_cache_dtype=shape.kv_cache_dtype)
    return config.unsupported_reason()


def _describe(family: str, c, ms: ModelSpace) -> str:
    slo = ms.requirement.slo
    if family == "memory":
        return f"needs {c.memory_used_gib:.1f} GiB per GPU, {c.memory_usable_gib:.1f} GiB usable"
    if family == "ttft_slo":
        return f"TTFT {c.ttft_s * 1e3:.1f} ms{_margin_text(ms.ttft_margin, c.ttft_s * 1e3)} exceeds the SLO {slo.ttft_ms:g} ms"
    if family == "tpot_slo":
        return f"TPOT {c.tpot_s * 1e3:.2f} ms{_margin_text(ms.tpot_margin, c.tpot_s * 1e3)} exceeds the SLO {slo.tpot_ms:g} ms"
    return f"demand needs {c.replicas_min} replicas, more than search.max_replicas"


def _margin_text(factor: float, predicted_ms: float) -> str:
    return "" if factor == 1.0 else f" (x margin {factor:.3f} = {predicted_ms * factor:.2f} ms)"
