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
from guide_opt.perf.steady_state import StepTable
from guide_opt.plan import Pick, shared_limit_violations
from guide_opt.problem import Problem
from guide_opt.solution import Deployment, Solution
from guide_opt.space import (ModelSpace, SearchSpace, Shape, empty_model_space, evaluate_candidate, make_shape, resolve_prices, shape_config,
                             steady_state_figures)

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


def verify_deployments(problem: Problem, deployments: list[Deployment], catalog: Catalog | None = None) -> list[Violation]:
    """Check one deployment per LLM of ``problem`` (in order) with a fresh full-model evaluation."""
    catalog = catalog or load_catalog()
    if len(deployments) != len(problem.models):
        return [Violation(None, f"expected {len(problem.models)} deployments, got {len(deployments)}")]
    prices = resolve_prices(problem, catalog)
    violations: list[Violation] = []
    picks = []
    # Deployments of the same LLM at the same lengths on the same shape share one step table (built here, not the
    # planner's): a fleet that repeats services is re-evaluated at the cost of its distinct ones, with the same figures.
    tables: dict[tuple, StepTable] = {}
    for i, (req, dep) in enumerate(zip(problem.models, deployments)):
        ms = empty_model_space(problem, i, catalog)
        llm = ms.llm
        shape = make_shape(problem, catalog.gpu(dep.gpu), dep.tp, dep.pp, catalog.framework(dep.framework),
                           catalog.quantization(dep.quantization), dep.kv_cache_dtype, prices[dep.gpu])
        if dep.model != llm.id:
            violations.append(Violation(i, f"deployment {i} serves {dep.model}, the problem asks for {llm.id}"))
        reason = _shape_reason(ms, shape)
        if reason:
            violations.append(Violation(i, f"{ms.label}: {reason}"))
            continue
        config = shape_config(llm, ms.input_tokens, ms.output_tokens, shape, dep.max_batch)
        table = None
        if ms.serving_model == "steady_state":
            key = (llm.id, ms.input_tokens, ms.output_tokens, dep.gpu, dep.tp, dep.pp, dep.framework, dep.quantization, dep.kv_cache_dtype)
            if (table := tables.get(key)) is None:
                table = tables[key] = StepTable(config)
        c = evaluate_candidate(ms, shape, dep.max_batch, problem.search.max_replicas, table)
        for family in c.violations:
            violations.append(Violation(i, f"{ms.label}: {_describe(family, c, ms)}"))
        if c.replicas_min is not None and dep.replicas < c.replicas_min:
            violations.append(Violation(i, f"{ms.label}: demand needs {c.replicas_min} replicas, deployment has {dep.replicas}"))
            if c.serving_model == "steady_state":  # and the SLOs its replicas miss at the load they would carry
                at = steady_state_figures(ms, config, table, replicas=dep.replicas)
                violations.extend(Violation(i, f"{ms.label}: at {at.load_per_replica:.4g} per replica, {_describe(family, at, ms)}")
                                  for family in at.slo_violations)
        if not _close(dep.cost_per_hour, dep.replicas * shape.usd_per_replica_hour):
            violations.append(Violation(i, f"{ms.label}: cost_per_hour {dep.cost_per_hour} != {dep.replicas * shape.usd_per_replica_hour}"))
        if c.fits:
            for key, fresh in (("ttft_ms", c.ttft_s * 1e3), ("tpot_ms", c.tpot_s * 1e3)):
                if not _close(dep.metrics[key], fresh):
                    violations.append(Violation(i, f"{ms.label}: reported {key} {dep.metrics[key]:.4f} but the model gives {fresh:.4f}"))
        picks.append(Pick(c, dep.replicas))
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
