"""TGIS's host time with default factors: fitted on LLM-Pilot, scored held out.

TGIS runs its forward passes eagerly from Python (no CUDA graphs), so its steps carry host
work the GPU-time step model does not (:mod:`guide_opt.validation.tgis`):

1. **Launch floor** (:class:`~guide_opt.frameworks.EagerLaunch` of ``tgis.yaml``): a pass
   takes ``max(GPU work, layers x (kernels x launch_us + [TP > 1] x 2 x rank_sync_us))``.
   Fitted by :func:`fit_launch` on the one-user median ITL (a single running sequence: the
   decode step alone), where a fast GPU at TP > 1 stops getting faster.
2. **Compute efficiency** (``efficiency.compute_efficiency`` of ``tgis.yaml``, the value for
   architectures without their own): the multiplier
   on the GPU's measured GEMM and attention compute curves. It sets what an add-on prefill pass
   of many prompts costs, and so how long the loaded levels' returning requests wait, and what
   a large decode batch costs: the value on a grid that minimizes the mean |log error| of every
   level's median TTFT plus that of its median ITL, each level played by the TGIS batcher with
   the rows' own length spread, and at each grid value the host time per prefill pass re-fitted
   (stage 3) on the one-user levels (:func:`fit_compute_efficiency`). Then each GPU
   architecture of the rows gets its own value, fitted the same way on its rows alone with the
   host times so far (``efficiency_by_architecture`` of ``tgis.yaml``;
   :func:`fit_efficiency_by_architecture`): TGIS's kernels fall much further short of the
   H100's measured curves than of the Ampere GPUs'.
3. **Host time per prefill pass** (:data:`~guide_opt.validation.tgis.PREFILL_HOST_MS`): the
   one-user median TTFT minus the predicted prefill pass, their median (:func:`fit_prefill_host_ms`).
4. **Host time per running sequence per decode step**
   (:data:`~guide_opt.validation.tgis.SEQUENCE_HOST_MS`): the value on a grid that minimizes
   the mean |log error| of the median ITL of the loaded levels (more than one user), each level
   played by the TGIS batcher (:func:`fit_sequence_host_ms`).

The stages run in that order, each with the values of the stages before (stage 3 inside stage
2, the per-architecture values after it). Stage 1 predicts the one-user decode steps with the
profile's shipped efficiencies: at a low compute efficiency a one-token GEMM, which fills a
whole tile, is no longer far below its weight streaming (Hopper at 0.2), so the launch fit
depends on them. The shipped values are a fixed point of the stages: fitted once from the
profile's earlier values (23.5 us / 10 us, efficiency 0.4 everywhere), then again from the
result, which the next round reproduced. :func:`fit_all` fits them on some rows;
:func:`held_out` scores each LLM (or GPU) with the fit on the others. Rows are LLM-Pilot's
closed-loop rows
(:func:`guide_opt.validation.datasets.load_source`); a loaded level is played with the row's
median lengths (:attr:`~guide_opt.validation.datasets.Measurement.median_lengths`). The grids
are searched coarse to fine (:func:`grid_minimum`).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np

from guide_opt.catalog import Catalog
from guide_opt.frameworks import EagerLaunch
from guide_opt.parallel import forked_map
from guide_opt.perf import ServingConfig
from guide_opt.perf.step import StepShape, step_time
from guide_opt.validation.accuracy import Comparison, measurement_config, tgis_closed_loop_metrics
from guide_opt.validation.datasets import Measurement
from guide_opt.validation.tgis import SEQUENCE_HOST_MS, eager_step_s

TGIS_FRAMEWORK = "tgis"
#: Grids of the launch fit (us): per-kernel launch time and per-all-reduce rank synchronisation.
LAUNCH_US_GRID = tuple(np.round(np.arange(10.0, 45.001, 0.5), 2))
RANK_SYNC_US_GRID = tuple(np.round(np.arange(0.0, 80.001, 2.5), 2))
#: Per-sequence fit (ms per running sequence per decode step): range and the coarse and fine steps of its search.
SEQUENCE_HOST_MS_RANGE = (0.0, 1.5)
SEQUENCE_HOST_MS_STEPS = (0.1, 0.05)
#: Compute-efficiency fits: range and the coarse and fine steps of their search.
COMPUTE_EFFICIENCY_RANGE = (0.1, 1.0)
COMPUTE_EFFICIENCY_STEPS = (0.1, 0.05)


@dataclass(frozen=True)
class TgisHostFit:
    """Fitted TGIS host time -- launch floor (us), host time per prefill pass and per running sequence per step (ms) --
    and compute efficiency: ``compute_efficiency`` on every GPU (None: the profile's), except the architectures of
    ``compute_efficiency_by_architecture`` ((architecture, efficiency) pairs)."""

    launch_us: float
    rank_sync_us: float
    prefill_host_ms: float
    sequence_host_ms: float
    compute_efficiency: float | None = None
    compute_efficiency_by_architecture: tuple[tuple[str, float], ...] = ()

    def efficiency_on(self, architecture: str) -> float | None:
        """The compute efficiency this fit gives GPUs of ``architecture`` (None: the profile's)."""
        return dict(self.compute_efficiency_by_architecture).get(architecture, self.compute_efficiency)


def tgis_row_config(m: Measurement, catalog: Catalog, launch: EagerLaunch | None = None,
                    compute_efficiency: float | None = None) -> ServingConfig:
    """The ``tgis`` configuration of LLM-Pilot row ``m`` (default factors), with ``launch`` replacing the profile's launch
    floor and ``compute_efficiency`` its compute efficiency (None: the profile's)."""
    efficiency = None
    if compute_efficiency is not None:
        base = catalog.framework(TGIS_FRAMEWORK).efficiency_on(catalog.gpus[m.gpu].architecture)
        efficiency = base.model_copy(update={"compute_efficiency": compute_efficiency})
    config = measurement_config(replace(m, framework=TGIS_FRAMEWORK), catalog, efficiency)
    if launch is None:
        return config
    return replace(config, framework=config.framework.model_copy(update={"eager_launch": launch}))


def grid_minimum(score: Callable[[float], float], low: float, high: float, coarse: float, fine: float) -> float:
    """The grid value with the lowest ``score``: every ``coarse`` step from ``low`` to ``high``, then the ``fine`` steps
    around the best of those (within one coarse step, inside the range). Ties go to the smallest value."""
    def values(start: float, stop: float, step: float) -> list[float]:
        return [float(v) for v in np.round(np.arange(start, stop + step / 2, step), 6) if low - 1e-9 <= v <= high + 1e-9]

    scored: dict[float, float] = {}

    def best() -> float:
        return min(scored, key=lambda v: (round(scored[v], 12), v))

    for value in values(low, high, coarse):
        scored[value] = score(value)
    centre = best()
    for value in values(centre - coarse + fine, centre + coarse - fine, fine):
        if value not in scored:
            scored[value] = score(value)
    return best()


def _launch(catalog: Catalog, launch_us: float, rank_sync_us: float) -> EagerLaunch:
    """The profile's launch block with these two times (its kernel count kept)."""
    base = catalog.framework(TGIS_FRAMEWORK).eager_launch
    assert base is not None, "the tgis profile states eager_launch"
    return base.model_copy(update={"launch_us": launch_us, "rank_sync_us": rank_sync_us})


def _mean_abs_log(pairs: list[tuple[float, float]]) -> float:
    """Mean |log(predicted / measured)| over (predicted, measured) pairs."""
    return statistics.fmean(abs(math.log(p / m)) for p, m in pairs)


def _one_user_decode(m: Measurement, catalog: Catalog) -> tuple[int, float, float, float]:
    """(layers per stage, host overhead ms, GPU work ms, measured ITL ms) of the one-user decode step of row ``m``.

    The step's context is the prompt plus half the output, the middle of the gaps the median ITL reads.
    """
    config = tgis_row_config(m, catalog)
    step = step_time(config, StepShape.decode(1, m.input_tokens + m.output_tokens / 2))
    return config.layers_per_stage, step.overhead_s * 1e3, (step.time_s - step.overhead_s) * 1e3, m.measured["tpot_ms"]


def fit_launch(rows: list[Measurement], catalog: Catalog) -> tuple[float, float]:
    """(launch_us, rank_sync_us) on the grids minimizing the mean |log error| of the one-user median ITL of ``rows``.

    Predicted ITL = host overhead + max(GPU work, launch floor), the kernel count of the
    ``tgis`` profile. Ties go to the smallest times (the first on the grids).
    """
    kernels = catalog.framework(TGIS_FRAMEWORK).eager_launch.kernels_per_layer
    steps = [(_one_user_decode(m, catalog), m.tp > 1) for m in rows if m.batch == 1]
    if not steps:
        raise ValueError("fit_launch needs one-user rows")
    best = None
    for launch_us in LAUNCH_US_GRID:
        for sync_us in RANK_SYNC_US_GRID:
            pairs = [(overhead + max(gpu, layers * (kernels * launch_us + (2 * sync_us if multi else 0.0)) * 1e-3), measured)
                     for (layers, overhead, gpu, measured), multi in steps]
            score = _mean_abs_log(pairs)
            if best is None or score < best[0] - 1e-12:
                best = (score, float(launch_us), float(sync_us))
    return best[1], best[2]


def fit_prefill_host_ms(rows: list[Measurement], catalog: Catalog, launch: EagerLaunch, compute_efficiency: float | None = None) -> float:
    """Median over the one-user rows of (measured median TTFT - predicted prefill pass), at least 0, rounded to 0.5 ms.

    The pass is predicted at the rows' median prompt (their mean without one), the length a median TTFT belongs to.
    """
    gaps = []
    for m in rows:
        if m.batch == 1:
            config = tgis_row_config(m, catalog, launch, compute_efficiency)
            prompt = m.input_tokens if m.median_lengths is None else m.median_lengths[0]
            pass_ms = eager_step_s(config, StepShape.prefill_chunk(1, prompt), pipeline_fill=True) * 1e3
            gaps.append(m.measured["ttft_ms"] - pass_ms)
    if not gaps:
        raise ValueError("fit_prefill_host_ms needs one-user rows")
    return max(0.0, round(2 * statistics.median(gaps)) / 2)


def predict_rows(rows: list[Measurement], catalog: Catalog, fit: TgisHostFit | None = None) -> list[Comparison]:
    """Median TTFT and ITL of ``rows`` on the TGIS batcher with ``fit``'s host time and compute efficiency (None: the engine defaults)."""
    launch = None if fit is None else _launch(catalog, fit.launch_us, fit.rank_sync_us)
    host = {} if fit is None else {"prefill_host_ms": fit.prefill_host_ms, "sequence_host_ms": fit.sequence_host_ms}
    out = []
    for m in rows:
        config = tgis_row_config(m, catalog, launch, None if fit is None else fit.efficiency_on(catalog.gpus[m.gpu].architecture))
        if config.unsupported_reason():
            continue
        metrics = tgis_closed_loop_metrics(replace(config, batch=m.batch), median_lengths=m.median_lengths, **host)
        if not math.isfinite(metrics["ttft_ms"]):
            continue
        out += [Comparison(m, metric, metrics[metric], m.measured[metric]) for metric in ("ttft_ms", "tpot_ms")]
    return out


def _loaded(rows: list[Measurement], stage: str) -> list[Measurement]:
    loaded = [m for m in rows if m.batch > 1]
    if not loaded:
        raise ValueError(f"{stage} needs rows with more than one user")
    return loaded


def _metric_score(comparisons: list[Comparison], metric: str) -> float:
    return _mean_abs_log([(c.predicted, c.measured) for c in comparisons if c.metric == metric])


def _latency_score(comparisons: list[Comparison]) -> float:
    """What the compute-efficiency stages minimize: the median TTFT's mean |log error| plus the median ITL's."""
    return _metric_score(comparisons, "ttft_ms") + _metric_score(comparisons, "tpot_ms")


def fit_sequence_host_ms(rows: list[Measurement], catalog: Catalog, base: TgisHostFit) -> float:
    """The per-sequence host time (grid :data:`SEQUENCE_HOST_MS_RANGE`, :data:`SEQUENCE_HOST_MS_STEPS`) minimizing the mean
    |log error| of the loaded rows' median ITL, with ``base``'s other values."""
    loaded = _loaded(rows, "fit_sequence_host_ms")

    def score(seq_ms: float) -> float:
        return _metric_score(predict_rows(loaded, catalog, replace(base, sequence_host_ms=seq_ms)), "tpot_ms")

    return grid_minimum(score, *SEQUENCE_HOST_MS_RANGE, *SEQUENCE_HOST_MS_STEPS)


def fit_compute_efficiency(rows: list[Measurement], catalog: Catalog, launch_us: float, rank_sync_us: float,
                           sequence_host_ms: float) -> tuple[float, float]:
    """(compute efficiency, host time per prefill pass ms): the efficiency (grid :data:`COMPUTE_EFFICIENCY_RANGE`,
    :data:`COMPUTE_EFFICIENCY_STEPS`) minimizing the mean |log error| of the rows' median TTFT plus that of their median
    ITL, each value with the prefill host time :func:`fit_prefill_host_ms` gives at it. Needs one-user and loaded rows."""
    _loaded(rows, "fit_compute_efficiency")
    launch = _launch(catalog, launch_us, rank_sync_us)

    def score(efficiency: float) -> float:
        prefill_ms = fit_prefill_host_ms(rows, catalog, launch, efficiency)
        return _latency_score(predict_rows(rows, catalog, TgisHostFit(launch_us, rank_sync_us, prefill_ms, sequence_host_ms, efficiency)))

    efficiency = grid_minimum(score, *COMPUTE_EFFICIENCY_RANGE, *COMPUTE_EFFICIENCY_STEPS)
    return efficiency, fit_prefill_host_ms(rows, catalog, launch, efficiency)


def fit_efficiency_by_architecture(rows: list[Measurement], catalog: Catalog, base: TgisHostFit) -> tuple[tuple[str, float], ...]:
    """(architecture, compute efficiency) for each GPU architecture of ``rows``: the efficiency (same grid as
    :func:`fit_compute_efficiency`) minimizing the sum of the TTFT and ITL mean |log errors| of that architecture's rows,
    with ``base``'s host times."""
    found = []
    for architecture in sorted({catalog.gpus[m.gpu].architecture for m in rows}):
        own = [m for m in rows if catalog.gpus[m.gpu].architecture == architecture]

        def score(efficiency: float, own=own) -> float:
            return _latency_score(predict_rows(own, catalog, replace(base, compute_efficiency=efficiency, compute_efficiency_by_architecture=())))

        found.append((architecture, grid_minimum(score, *COMPUTE_EFFICIENCY_RANGE, *COMPUTE_EFFICIENCY_STEPS)))
    return tuple(found)


def fit_all(rows: list[Measurement], catalog: Catalog) -> TgisHostFit:
    """The stages on ``rows`` (see the module docstring). Stage 2 plays the levels with the engine's default
    per-sequence host time; stage 4 then fits it at the fitted efficiencies."""
    launch_us, sync_us = fit_launch(rows, catalog)
    efficiency, prefill_ms = fit_compute_efficiency(rows, catalog, launch_us, sync_us, SEQUENCE_HOST_MS)
    shared = TgisHostFit(launch_us, sync_us, prefill_ms, SEQUENCE_HOST_MS, efficiency)
    with_architectures = replace(shared, compute_efficiency_by_architecture=fit_efficiency_by_architecture(rows, catalog, shared))
    return replace(with_architectures, sequence_host_ms=fit_sequence_host_ms(rows, catalog, with_architectures))


def held_out(rows: list[Measurement], catalog: Catalog, by: str) -> tuple[list[Comparison], dict[str, TgisHostFit]]:
    """Each group of ``rows`` (``by``: ``llm`` or ``gpu``) predicted with the fit on the other groups; the comparisons and the fits."""
    if by not in ("llm", "gpu"):
        raise ValueError("by must be 'llm' or 'gpu'")
    groups = sorted({getattr(m, by) for m in rows})

    def fold(group: str) -> tuple[TgisHostFit, list[Comparison]]:
        fit = fit_all([m for m in rows if getattr(m, by) != group], catalog)
        return fit, predict_rows([m for m in rows if getattr(m, by) == group], catalog, fit)

    folds = forked_map(fold, groups)
    return [c for _, comparisons in folds for c in comparisons], {group: fit for group, (fit, _) in zip(groups, folds)}
