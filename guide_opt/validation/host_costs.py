"""Fitting the engines' host costs per step from measured static-batch rows, with held-out scores.

A decode step of a serving engine waits for host work the kernels do not show: the scheduler,
the per-request input tensors, sampling and detokenization (a cost per running sequence), and,
on a replica spanning several GPUs, handing the step to the other ranks (a cost per step).
:class:`~guide_opt.frameworks.EfficiencyFactors` carries them as ``sequence_overhead_us`` and
``tp_step_overhead_ms``; this module fits both per engine from measured batch latencies:

1. predict every row with the host costs set to zero (:func:`without_host_costs`);
2. read the measured excess per decode step, ``(measured - predicted batch latency) /
   (output tokens - 1)`` (:func:`step_residuals`), on rows whose batch was resident at once
   (a batch that overflows the KV cache runs in waves and preempts: another regime);
3. fit ``excess_ms = sequences x us / 1000 + [TP > 1] x ms`` by robust least squares
   (:func:`fit_host_costs`, soft-L1 loss, so a few odd rows do not steer it).

With the host costs the same fit chooses how the engine's decode attention reads a
grouped-query KV cache (``gqa_kv_reread_exponent``, :class:`~guide_opt.frameworks.EfficiencyFactors`):
steps 1-3 are repeated with each exponent of :data:`REREAD_EXPONENTS` in the model, and the
exponent whose residuals the two costs fit best (lowest soft-L1 cost) is kept. A kernel that
re-reads the cache per query head makes the excess grow with the context as well as the
sequences; a cost per sequence alone cannot follow that.

:func:`held_out_comparisons` scores the fit on rows it never saw: each GPU (or LLM) in turn is
predicted with the costs fitted on the others.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Iterable

import numpy as np

from guide_opt.catalog import Catalog
from guide_opt.validation.accuracy import Comparison, evaluate, measurement_config
from guide_opt.validation.datasets import Measurement

#: The metric the fit reads (a static batch's end-to-end latency).
FITTED_METRIC = "batch_latency_s"
#: Soft-L1 scale of the fit, ms per step: residuals beyond it count linearly, not squared.
LOSS_SCALE_MS = 0.5
#: Upper bounds of the fitted costs (us per sequence, ms per step).
MAX_SEQUENCE_US, MAX_TP_STEP_MS = 1000.0, 5.0
#: The ``gqa_kv_reread_exponent`` values tried (0: each KV head read once per query group; 1: once per query head).
REREAD_EXPONENTS = tuple(i / 8 for i in range(9))
#: LLM-Inference-Bench GPUs and engines the shipped host costs are fitted on (MI300X's rows fit its own curves instead,
#: ``hardware_db/kernels/mi300x.yaml``).
FITTED_GPUS, FITTED_FRAMEWORKS = ("a100-40gb-sxm", "h100-sxm"), ("vllm", "tensorrt-llm")
#: How finely the fitted costs are rounded when shipped (``hardware_db/frameworks``): half the step of each.
SHIPPED_ROUNDING = {"sequence_overhead_us": 0.5, "tp_step_overhead_ms": 0.025, "gqa_kv_reread_exponent": 0.0}


@dataclass(frozen=True)
class HostCosts:
    """Fitted host costs of one engine: per running sequence per step (us) and per multi-GPU step (ms).

    ``gqa_kv_reread_exponent``: the KV re-read exponent the costs were fitted with; ``loss``: the
    fit's soft-L1 cost (comparable between fits over the same rows).
    """

    sequence_overhead_us: float
    tp_step_overhead_ms: float
    rows: int
    gqa_kv_reread_exponent: float = 0.0
    loss: float = 0.0

    def factor_updates(self) -> dict[str, float]:
        """The efficiency-factor fields these costs set."""
        return {"sequence_overhead_us": self.sequence_overhead_us, "tp_step_overhead_ms": self.tp_step_overhead_ms,
                "gqa_kv_reread_exponent": self.gqa_kv_reread_exponent}


@dataclass(frozen=True)
class StepResidual:
    """The measured excess per decode step of one row over the model without host costs."""

    measurement: Measurement
    excess_ms: float


def with_factors(catalog: Catalog, updates: dict[str, dict[str, float]]) -> Catalog:
    """A copy of ``catalog`` whose engines in ``updates`` (id -> efficiency field -> value) carry those efficiency factors."""
    frameworks = dict(catalog.frameworks)
    for framework_id, fields in updates.items():
        profile = frameworks[framework_id]
        frameworks[framework_id] = profile.model_copy(update={"efficiency": profile.efficiency.model_copy(update=fields)})
    return dataclasses.replace(catalog, frameworks=frameworks)


def with_host_costs(catalog: Catalog, costs: dict[str, tuple[float, float]]) -> Catalog:
    """A copy of ``catalog`` whose engines in ``costs`` (id -> (us per sequence, ms per multi-GPU step)) carry those host costs."""
    return with_factors(catalog, {f: {"sequence_overhead_us": us, "tp_step_overhead_ms": ms} for f, (us, ms) in costs.items()})


def without_host_costs(catalog: Catalog, framework_ids: Iterable[str], gqa_kv_reread_exponent: float | None = None) -> Catalog:
    """A copy of ``catalog`` with the host costs of ``framework_ids`` set to zero (and their re-read exponent set, when given)."""
    fields: dict[str, float] = {"sequence_overhead_us": 0.0, "tp_step_overhead_ms": 0.0}
    if gqa_kv_reread_exponent is not None:
        fields["gqa_kv_reread_exponent"] = gqa_kv_reread_exponent
    return with_factors(catalog, {f: fields for f in framework_ids})


def _resident(m: Measurement, catalog: Catalog) -> bool:
    from guide_opt.perf.estimator import estimate

    return estimate(measurement_config(m, catalog)).waves == 1


def step_residuals(comparisons: Iterable[Comparison], catalog: Catalog) -> list[StepResidual]:
    """Measured minus predicted batch latency per decode step (ms) of the resident-batch rows of ``comparisons``."""
    out = []
    for c in comparisons:
        m = c.measurement
        if c.metric == FITTED_METRIC and m.output_tokens > 1 and _resident(m, catalog):
            out.append(StepResidual(m, (c.measured - c.predicted) / (m.output_tokens - 1) * 1e3))
    return out


def fit_host_costs(residuals: list[StepResidual]) -> HostCosts:
    """Robust least squares of ``excess_ms = batch x us / 1000 + [TP x PP > 1] x ms`` over ``residuals`` (one engine)."""
    if not residuals:
        raise ValueError("no rows to fit host costs on")
    from scipy.optimize import least_squares

    design = np.array([[r.measurement.batch * 1e-3, 1.0 if r.measurement.tp > 1 else 0.0] for r in residuals])
    excess = np.array([r.excess_ms for r in residuals])
    result = least_squares(lambda x: design @ x - excess, np.array([50.0, 0.5]), loss="soft_l1", f_scale=LOSS_SCALE_MS,
                           bounds=([0.0, 0.0], [MAX_SEQUENCE_US, MAX_TP_STEP_MS]))
    return HostCosts(float(result.x[0]), float(result.x[1]), len(residuals), loss=float(result.cost))


def residuals_by_exponent(rows: list[Measurement], catalog: Catalog) -> dict[float, list[StepResidual]]:
    """The step residuals of ``rows`` under the model without host costs, for each exponent of :data:`REREAD_EXPONENTS`.

    The costly part of a fit (every row predicted once per exponent): compute it once and pass it to
    :func:`fit_per_framework` and :func:`held_out_comparisons` over the same rows.
    """
    frameworks = sorted({m.framework for m in rows})
    out = {}
    for exponent in REREAD_EXPONENTS:
        bare = without_host_costs(catalog, frameworks, exponent)
        out[exponent] = step_residuals(evaluate(rows, bare).comparisons, bare)
    return out


def _best_fits(residuals: dict[float, list[StepResidual]], keep) -> dict[str, HostCosts]:
    """Per engine, the host costs and re-read exponent fitting the residuals that ``keep`` accepts best."""
    fits: dict[str, HostCosts] = {}
    for exponent, values in residuals.items():
        kept = [r for r in values if keep(r.measurement)]
        for framework in sorted({r.measurement.framework for r in kept}):
            fit = fit_host_costs([r for r in kept if r.measurement.framework == framework])
            if framework not in fits or fit.loss < fits[framework].loss:
                fits[framework] = dataclasses.replace(fit, gqa_kv_reread_exponent=exponent)
    return fits


def fit_per_framework(rows: list[Measurement], catalog: Catalog,
                      residuals: dict[float, list[StepResidual]] | None = None) -> dict[str, HostCosts]:
    """Host costs and KV re-read exponent per engine of ``rows``, fitted on their residuals under the model without host costs
    (``residuals``: :func:`residuals_by_exponent` of the same rows, when already computed)."""
    return _best_fits(residuals if residuals is not None else residuals_by_exponent(rows, catalog), lambda m: True)


def fitted_rows(rows: Iterable[Measurement]) -> list[Measurement]:
    """The LLM-Inference-Bench rows the shipped host costs are fitted on (:data:`FITTED_GPUS`, :data:`FITTED_FRAMEWORKS`)."""
    return [m for m in rows if m.gpu in FITTED_GPUS and m.framework in FITTED_FRAMEWORKS]


def shipped_differences(catalog: Catalog, fits: dict[str, HostCosts]) -> dict[str, list[tuple[str, float, float]]]:
    """Per engine of ``fits``, the host costs whose value in ``catalog`` differs from the fit by more than its shipped
    rounding (:data:`SHIPPED_ROUNDING`): (factor name, shipped, fitted); engines that carry their fit are left out."""
    out = {}
    for framework, fit in fits.items():
        shipped = catalog.framework(framework).efficiency
        found = [(name, getattr(shipped, name), getattr(fit, name)) for name, rounding in SHIPPED_ROUNDING.items()
                 if abs(getattr(shipped, name) - getattr(fit, name)) > rounding]
        if found:
            out[framework] = found
    return out


def held_out_comparisons(rows: list[Measurement], catalog: Catalog, key: str,
                         residuals: dict[float, list[StepResidual]] | None = None) -> tuple[list[Comparison], dict[str, dict[str, HostCosts]]]:
    """Each value of ``key`` (``gpu`` or ``llm``) held out in turn: its rows predicted with the host costs and re-read
    exponent fitted on the other rows (``residuals`` as for :func:`fit_per_framework`).

    Returns the held-out comparisons and the fits (held-out value -> engine -> costs).
    """
    residuals = residuals if residuals is not None else residuals_by_exponent(rows, catalog)
    comparisons, fits = [], {}
    for value in sorted({getattr(m, key) for m in rows}):
        fitted = _best_fits(residuals, lambda m: getattr(m, key) != value)
        fits[value] = fitted
        patched = with_factors(catalog, {f: c.factor_updates() for f, c in fitted.items()})
        comparisons += evaluate([m for m in rows if getattr(m, key) == value], patched).comparisons
    return comparisons, fits
