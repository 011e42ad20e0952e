"""Calibration: efficiency factors fitted to measurements, the calibration file, prediction intervals.

Fitting (:func:`fit_factors`): for the rows of one (GPU, framework) group, find the
:class:`~guide_opt.frameworks.EfficiencyFactors` that minimize the log errors
``ln(predicted / measured)`` of every measured metric (except report-only ones), with
``scipy.optimize.least_squares`` (trust-region reflective, bounded, ``soft_l1`` loss so a
few rows the static model cannot represent do not dominate). Bounds: efficiencies in
[0.05, 1.0], step overhead in [0, 20] ms. A weak prior pulls each factor towards the
framework's documented default, so a factor the data cannot see (communication efficiency
when every row has TP = 1) stays at its default instead of drifting.

Scoring (:func:`leave_one_llm_out`): each LLM in turn is held out, factors are fitted on the
other LLMs' rows of the same group, and the held-out rows are predicted with them. Groups
with no training rows fall back to the defaults (counted).

The calibration file (:class:`Calibration`, YAML) maps (GPU id, framework id) to fitted
factors and stores quantiles of the log-ratio residuals ``ln(measured / predicted)`` per
metric -- from held-out predictions when at least two LLMs were measured, else in-sample --
for :func:`interval` and :func:`margin_factor`::

    format: guide-opt-calibration/1
    created_utc: '2025-01-01T00:00:00Z'
    data: [my_benchmarks.csv]
    entries:
      - gpu: h100-sxm
        framework: vllm
        efficiency: {compute_efficiency: 0.52, memory_efficiency: 0.71, communication_efficiency: 0.7, step_overhead_ms: 3.1}
        rows: 24
        llms: [llama-2-7b, llama-3.1-8b]
        mape_before: {ttft_ms: 41.0, tpot_ms: 22.5}
        mape_after: {ttft_ms: 12.3, tpot_ms: 6.1}
    residual_kind: leave-one-llm-out
    residual_counts: {ttft_ms: 24, tpot_ms: 24}
    residual_quantiles:
      ttft_ms: {0.05: -0.31, 0.1: -0.22, 0.25: -0.08, 0.5: 0.01, 0.75: 0.09, 0.9: 0.2, 0.95: 0.27}
"""

from __future__ import annotations

import datetime as _dt
import math
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterable, Literal

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, ValidationError

from guide_opt.catalog import Catalog, read_yaml, validation_error_to_input_error
from guide_opt.errors import InputError
from guide_opt.frameworks import EfficiencyFactors
from guide_opt.perf import ServingConfig, estimate
from guide_opt.validation.accuracy import NOT_FITTING, Comparison, error_stats, evaluate, measurement_config, predicted_metrics
from guide_opt.validation.datasets import METRICS, Measurement, finite_positive

CALIBRATION_FORMAT = "guide-opt-calibration/1"
#: Lower / upper bounds of the fitted efficiency fractions.
EFFICIENCY_BOUNDS: tuple[float, float] = (0.05, 1.0)
#: Lower / upper bounds of the fitted per-step overhead (ms).
STEP_OVERHEAD_BOUNDS_MS: tuple[float, float] = (0.0, 20.0)
#: Weight of the pull towards the framework defaults (per factor, in log-residual units).
PRIOR_WEIGHT = 0.05
#: Step overhead (ms) that counts as one log unit in the prior.
PRIOR_OVERHEAD_SCALE_MS = 5.0
#: ``soft_l1`` scale: log errors beyond about this size grow linearly, not quadratically.
LOSS_SCALE = 0.3
#: Quantiles of ``ln(measured / predicted)`` stored in a calibration file.
QUANTILE_GRID: tuple[float, ...] = (0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95)


# ---- the calibration file ---------------------------------------------------------------------
class CalibrationEntry(BaseModel):
    """Fitted factors of one (GPU, framework) group and how well they fit (MAPE in percent per metric)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    gpu: str
    framework: str
    efficiency: EfficiencyFactors
    rows: NonNegativeInt
    llms: list[str] = []
    mape_before: dict[str, float] = {}
    mape_after: dict[str, float] = {}


class Calibration(BaseModel):
    """A calibration file: fitted factors per (GPU id, framework id) and residual quantiles per metric.

    residual_quantiles: metric -> {quantile in (0, 1): quantile of ln(measured / predicted)}.
    residual_kind: ``leave-one-llm-out`` (held-out predictions) or ``in-sample``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    format: Literal["guide-opt-calibration/1"] = CALIBRATION_FORMAT
    created_utc: str = ""
    data: list[str] = []
    entries: list[CalibrationEntry] = []
    residual_kind: Literal["leave-one-llm-out", "in-sample", "none"] = "none"
    residual_counts: dict[str, NonNegativeInt] = {}
    residual_quantiles: dict[str, dict[float, float]] = Field(default_factory=dict)

    def factors_for(self, gpu: str, framework: str) -> EfficiencyFactors | None:
        """Fitted factors for (``gpu``, ``framework``), or None when this file has no such entry."""
        for entry in self.entries:
            if entry.gpu == gpu and entry.framework == framework:
                return entry.efficiency
        return None

    def factors_map(self) -> dict[tuple[str, str], EfficiencyFactors]:
        """All entries as ``(gpu id, framework id) -> EfficiencyFactors``."""
        return {(e.gpu, e.framework): e.efficiency for e in self.entries}

    def log_ratio_quantile(self, metric: str, quantile: float) -> float:
        """Quantile ``quantile`` of ln(measured / predicted) for ``metric`` (linear between stored quantiles).

        Raises ``ValueError`` when the file has no residuals for ``metric`` or ``quantile`` lies
        outside the stored range (extrapolating tails from few residuals would be a guess).
        """
        table = self.residual_quantiles.get(metric)
        if not table:
            raise ValueError(f"the calibration has no residuals for {metric} (it has {', '.join(sorted(self.residual_quantiles)) or 'none'})")
        qs = sorted(table)
        if not qs[0] <= quantile <= qs[-1]:
            raise ValueError(f"quantile {quantile} is outside the stored range [{qs[0]}, {qs[-1]}]")
        return float(np.interp(quantile, qs, [table[q] for q in qs]))

    def interval(self, metric: str, predicted: float, quantile: float) -> float:
        """The value ``metric`` stays below with probability ``quantile``, given guide-opt predicted ``predicted``.

        ``predicted x exp(q)`` with ``q`` the residual quantile; e.g. ``interval("ttft_ms", 200, 0.9)``
        is the 90th-percentile TTFT (ms) the calibration data suggests for a 200 ms prediction.
        """
        return predicted * math.exp(self.log_ratio_quantile(metric, quantile))


def interval(calibration: Calibration, metric: str, predicted: float, quantile: float) -> float:
    """Module-level form of :meth:`Calibration.interval` (value of ``metric`` at ``quantile``)."""
    return calibration.interval(metric, predicted, quantile)


def margin_factor(calibration: Calibration | None, metric: str, quantile: float) -> float:
    """Factor multiplying a prediction of ``metric`` to reach its ``quantile`` (e.g. 0.9) of measured values.

    ``> 1`` when measurements tend to exceed predictions at that quantile. Without a
    calibration (None) there are no residuals to learn from and the factor is 1.0. A solver
    meeting a TTFT SLO at the 90th percentile can require
    ``predicted_ttft_ms * margin_factor(cal, "ttft_ms", 0.9) <= slo_ms``.
    """
    if calibration is None:
        return 1.0
    return math.exp(calibration.log_ratio_quantile(metric, quantile))


def load_calibration(path: str | Path) -> Calibration:
    """Read and validate a calibration YAML file; problems raise :class:`InputError` naming the file and field."""
    path = Path(path)
    if not path.is_file():
        raise InputError("--calibration", f"file '{path}' not found", "give the YAML written by 'guide-opt calibrate'")
    data = read_yaml(path)
    try:
        return Calibration.model_validate(data)
    except ValidationError as exc:
        raise validation_error_to_input_error(str(path), exc) from None


def save_calibration(calibration: Calibration, path: str | Path) -> None:
    """Write ``calibration`` as YAML to ``path``."""
    payload = calibration.model_dump(mode="python")
    Path(path).write_text(yaml.safe_dump(payload, sort_keys=False, default_flow_style=None, width=140))


# ---- fitting ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class PreparedRow:
    """A row ready for the fit: its config (default factors) and the (metric, measured value) pairs fitted."""

    measurement: Measurement
    config: ServingConfig
    targets: tuple[tuple[str, float], ...]
    running: int | None = None


def prepare_rows(rows: Iterable[Measurement], catalog: Catalog, skipped: Counter | None = None) -> list[PreparedRow]:
    """Configs of the rows guide-opt can predict (supported and fitting in memory) with their fitted metrics."""
    skipped = skipped if skipped is not None else Counter()
    prepared = []
    for m in rows:
        config = measurement_config(m, catalog)
        reason = config.unsupported_reason()
        if reason:
            skipped[f"unsupported configuration: {reason}"] += 1
            continue
        est = estimate(config)
        if not est.runs:
            skipped[NOT_FITTING] += 1
            continue
        targets = tuple((k, v) for k, v in m.measured.items() if k not in m.report_only and finite_positive(v))
        if targets:
            prepared.append(PreparedRow(m, config, targets, None if est.fits else est.max_batch))
    return prepared


def _factors(x: np.ndarray) -> EfficiencyFactors:
    return EfficiencyFactors.model_construct(
        compute_efficiency=float(x[0]), memory_efficiency=float(x[1]), communication_efficiency=float(x[2]), step_overhead_ms=float(x[3])
    )


def _vector(f: EfficiencyFactors) -> np.ndarray:
    return np.array([f.compute_efficiency, f.memory_efficiency, f.communication_efficiency, f.step_overhead_ms], dtype=float)


def log_residuals(prepared: list[PreparedRow], factors: EfficiencyFactors) -> np.ndarray:
    """``ln(predicted / measured)`` of every fitted (row, metric) pair under ``factors``."""
    out = []
    for row in prepared:
        predicted = predicted_metrics(replace(row.config, efficiency=factors), check_memory=False, closed_loop=row.measurement.closed_loop,
                                      running=row.running)
        out.extend(math.log(predicted[metric] / value) for metric, value in row.targets)
    return np.array(out, dtype=float)


@dataclass(frozen=True)
class FitResult:
    """Factors fitted to one group, the starting (default) factors, and the rows used."""

    factors: EfficiencyFactors
    default: EfficiencyFactors
    rows: int
    pairs: int
    cost: float
    success: bool


def fit_factors(prepared: list[PreparedRow], default: EfficiencyFactors | None = None) -> FitResult:
    """Least-squares fit of the four efficiency factors to ``prepared`` rows (one GPU and framework).

    ``default`` (else the rows' framework defaults) is the starting point and the prior's centre.
    """
    if not prepared:
        raise ValueError("no rows to fit")
    from scipy.optimize import least_squares

    default = default or prepared[0].config.framework.efficiency
    lo = np.array([EFFICIENCY_BOUNDS[0]] * 3 + [STEP_OVERHEAD_BOUNDS_MS[0]])
    hi = np.array([EFFICIENCY_BOUNDS[1]] * 3 + [STEP_OVERHEAD_BOUNDS_MS[1]])
    centre = np.clip(_vector(default), lo, hi)
    prior_w = math.sqrt(PRIOR_WEIGHT)

    def residuals(x: np.ndarray) -> np.ndarray:
        data = log_residuals(prepared, _factors(x))
        prior = np.concatenate([prior_w * (np.log(x[:3]) - np.log(centre[:3])), [prior_w * (x[3] - centre[3]) / PRIOR_OVERHEAD_SCALE_MS]])
        return np.concatenate([data, prior])

    result = least_squares(residuals, centre, bounds=(lo, hi), loss="soft_l1", f_scale=LOSS_SCALE,
                           x_scale=np.array([0.1, 0.1, 0.1, 1.0]), diff_step=1e-3, max_nfev=400)
    x = np.clip(result.x, lo, hi)
    fitted = EfficiencyFactors(compute_efficiency=round(float(x[0]), 4), memory_efficiency=round(float(x[1]), 4),
                               communication_efficiency=round(float(x[2]), 4), step_overhead_ms=round(float(x[3]), 4))
    pairs = sum(len(r.targets) for r in prepared)
    return FitResult(fitted, default, len(prepared), pairs, float(result.cost), bool(result.success))


def group_rows(prepared: Iterable[PreparedRow]) -> dict[tuple[str, str], list[PreparedRow]]:
    """Prepared rows per (GPU id, framework id)."""
    groups: dict[tuple[str, str], list[PreparedRow]] = {}
    for row in prepared:
        groups.setdefault(row.measurement.group, []).append(row)
    return groups


def fit_groups(prepared: list[PreparedRow]) -> dict[tuple[str, str], FitResult]:
    """Fit every (GPU, framework) group of ``prepared`` independently."""
    return {group: fit_factors(rows) for group, rows in sorted(group_rows(prepared).items())}


@dataclass
class HeldOut:
    """Leave-one-LLM-out comparisons with default and with calibrated factors, and what had no training data."""

    default: list[Comparison] = field(default_factory=list)
    calibrated: list[Comparison] = field(default_factory=list)
    no_training_rows: Counter = field(default_factory=Counter)
    fits: dict[tuple[str, tuple[str, str]], FitResult] = field(default_factory=dict)


def leave_one_llm_out(prepared: list[PreparedRow], catalog: Catalog) -> HeldOut:
    """Hold out each LLM in turn, fit each (GPU, framework) group on the other LLMs, predict the held-out rows."""
    out = HeldOut()
    llms = sorted({r.measurement.llm for r in prepared})
    for llm in llms:
        train = [r for r in prepared if r.measurement.llm != llm]
        test = [r.measurement for r in prepared if r.measurement.llm == llm]
        fits = fit_groups(train) if train else {}
        for group, fit in fits.items():
            out.fits[(llm, group)] = fit
        factors = {g: f.factors for g, f in fits.items()}
        for m in test:
            if m.group not in factors:
                out.no_training_rows[f"{m.gpu}/{m.framework}: no other LLM measured"] += 1
        out.default.extend(evaluate(test, catalog).comparisons)
        out.calibrated.extend(evaluate(test, catalog, factors).comparisons)
    return out


def residual_quantiles(comparisons: Iterable[Comparison]) -> tuple[dict[str, dict[float, float]], dict[str, int]]:
    """Per metric: quantiles (:data:`QUANTILE_GRID`) of ln(measured / predicted), and the residual counts."""
    by_metric: dict[str, list[float]] = {}
    for c in comparisons:
        by_metric.setdefault(c.metric, []).append(math.log(c.measured / c.predicted))
    quantiles, counts = {}, {}
    for metric in sorted(by_metric, key=METRICS.index):
        values = np.array(by_metric[metric])
        quantiles[metric] = {q: round(float(np.quantile(values, q)), 4) for q in QUANTILE_GRID}
        counts[metric] = len(values)
    return quantiles, counts


def _mape_by_metric(comparisons: list[Comparison]) -> dict[str, float]:
    by_metric: dict[str, list[Comparison]] = {}
    for c in comparisons:
        by_metric.setdefault(c.metric, []).append(c)
    return {m: round(error_stats(cs)[0], 2) for m, cs in sorted(by_metric.items(), key=lambda kv: METRICS.index(kv[0]))}


@dataclass
class CalibrationRun:
    """What :func:`calibrate` produced: the file, the in-sample fits, the held-out scores and skipped rows."""

    calibration: Calibration
    fits: dict[tuple[str, str], FitResult]
    held_out: HeldOut | None
    skipped: Counter


def calibrate(rows: Iterable[Measurement], catalog: Catalog, *, data_labels: list[str] | None = None, cross_validate: bool = True) -> CalibrationRun:
    """Fit factors per (GPU, framework) on all ``rows`` and build a :class:`Calibration`.

    Residual quantiles come from leave-one-LLM-out predictions when ``cross_validate`` and at
    least two LLMs were measured, else from the in-sample fit (``residual_kind`` says which).
    """
    skipped: Counter = Counter()
    prepared = prepare_rows(rows, catalog, skipped)
    if not prepared:
        raise InputError("--data", "no row can be predicted (unknown ids, unsupported or not fitting in memory)", "check the rows' model, gpu and framework ids")
    fits = fit_groups(prepared)
    factors = {g: f.factors for g, f in fits.items()}
    measurements = [r.measurement for r in prepared]
    entries = []
    for group, fit in fits.items():
        group_rows_ = [m for m in measurements if m.group == group]
        fitted_metrics = lambda cs: [c for c in cs if c.metric not in c.measurement.report_only]  # noqa: E731
        before = fitted_metrics(evaluate(group_rows_, catalog).comparisons)
        after = fitted_metrics(evaluate(group_rows_, catalog, factors).comparisons)
        entries.append(CalibrationEntry(gpu=group[0], framework=group[1], efficiency=fit.factors, rows=fit.rows,
                                        llms=sorted({m.llm for m in group_rows_}), mape_before=_mape_by_metric(before), mape_after=_mape_by_metric(after)))
    held_out = None
    if cross_validate and len({m.llm for m in measurements}) >= 2:
        held_out = leave_one_llm_out(prepared, catalog)
        residual_source = [c for c in held_out.calibrated if c.metric not in c.measurement.report_only]
        kind = "leave-one-llm-out"
    else:
        residual_source = [c for c in evaluate(measurements, catalog, factors).comparisons if c.metric not in c.measurement.report_only]
        kind = "in-sample"
    quantiles, counts = residual_quantiles(residual_source)
    calibration = Calibration(
        created_utc=_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        data=list(data_labels or []),
        entries=entries,
        residual_kind=kind,
        residual_counts=counts,
        residual_quantiles=quantiles,
    )
    return CalibrationRun(calibration, fits, held_out, skipped)
