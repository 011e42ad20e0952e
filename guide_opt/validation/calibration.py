"""Calibration: efficiency factors fitted to measurements, the calibration file, prediction intervals.

Fitting (:func:`fit_factors`): for the rows of one (GPU, framework) group, find the
:class:`~guide_opt.frameworks.EfficiencyFactors` that minimize the log errors
``ln(predicted / measured)`` of every measured metric (except report-only ones), with
``scipy.optimize.least_squares`` (trust-region reflective, bounded, ``soft_l1`` loss so a
few rows the static model cannot represent do not dominate). The factors multiply the GPU's
fitted kernel curves (``hardware_db/kernels``). Five are fitted: compute, memory and
communication efficiency in [0.05, 1.0], and the two latency terms -- the per-step overhead
in [0, 20] ms and ``collective_latency_scale`` in [0.05, 10] (multiplying the measured
all-reduce latency; engines with their own small-message all-reduce sit below 1). A weak
prior pulls each factor towards the framework's documented default, so a factor the data
cannot see (communication efficiency and collective latency when every row has TP = 1) stays
at its default instead of drifting.

Physics (:func:`physics_violation`): before fitting, rows faster than streaming the weights
(and a static batch's KV cache) once per output token at peak bandwidth, or more than :data:`MAX_SLOWDOWN` times slower than
the default model, are refused and counted with an example -- they are unit mistakes or
broken runs, and a fit would otherwise bend the factors to them.

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
        efficiency: {compute_efficiency: 0.92, memory_efficiency: 0.88, communication_efficiency: 1.0, step_overhead_ms: 3.1,
                     collective_latency_scale: 0.4}
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
from typing import Callable, Iterable, Literal

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, ValidationError

from guide_opt.catalog import Catalog, read_yaml, validation_error_to_input_error
from guide_opt.errors import InputError
from guide_opt.frameworks import EfficiencyFactors
from guide_opt.perf import ServingConfig, estimate
from guide_opt.validation.accuracy import NOT_FITTING, Comparison, error_stats, evaluate, measurement_config, predicted_metrics
from guide_opt.validation import preemption, turbomind
from guide_opt.validation.datasets import METRICS, TURBOMIND_PROFILE_GENERATION, Measurement, finite_positive
from guide_opt.validation.physics import batch_latency_floor_s, weight_stream_time_s

CALIBRATION_FORMAT = "guide-opt-calibration/1"
#: Lower / upper bounds of the fitted efficiency fractions.
EFFICIENCY_BOUNDS: tuple[float, float] = (0.05, 1.0)
#: Lower / upper bounds of the fitted per-step overhead (ms).
STEP_OVERHEAD_BOUNDS_MS: tuple[float, float] = (0.0, 20.0)
#: Lower / upper bounds of the fitted multiplier on the measured all-reduce latency.
COLLECTIVE_LATENCY_BOUNDS: tuple[float, float] = (0.05, 10.0)
#: The efficiency factors calibration fits, in the order of its parameter vector; the others keep the profile's values.
FITTED_FIELDS = ("compute_efficiency", "memory_efficiency", "communication_efficiency", "step_overhead_ms", "collective_latency_scale")
#: Weight of the pull towards the framework defaults (per factor, in log-residual units).
PRIOR_WEIGHT = 0.05
#: The same for ``collective_latency_scale``: much weaker, because engines' own small-message
#: all-reduces are several times faster than the measured NCCL default and the rows see this
#: factor only through the TP scaling (a stronger pull let the step overhead and memory
#: efficiency absorb it); a factor the rows cannot see at all (all TP = 1) has a zero
#: gradient and stays at its default anyway.
PRIOR_WEIGHT_COLLECTIVE_LATENCY = 0.0005
#: Step overhead (ms) that counts as one log unit in the prior.
PRIOR_OVERHEAD_SCALE_MS = 5.0
#: ``soft_l1`` scale: log errors beyond about this size grow linearly, not quadratically.
LOSS_SCALE = 0.3
#: A measured metric this many times worse than the default model's prediction is refused.
MAX_SLOWDOWN = 100.0
#: Reasons of refused rows (see :func:`physics_violation`).
PHYSICS_TOO_FAST = "faster than streaming the weights (and a static batch's KV cache) once per output token at peak HBM bandwidth"
PHYSICS_TOO_SLOW = f"more than {MAX_SLOWDOWN:g}x slower than the model predicts"
#: Reason of a row skipped because none of its fitted metrics is a finite positive number.
NO_USABLE_METRIC = "no fitted metric is a finite positive number"
#: Reason of an offline max-throughput row left out of calibration.
OFFLINE_RUN = "offline max-throughput run (a steady-state figure: calibration fits static batches)"
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
    """A row ready for the fit: its config (default factors) and the (metric, measured value) pairs fitted.

    cache_block_wait_s: a TurboMind row's wait for KV-cache blocks
    (:func:`~guide_opt.validation.turbomind.block_wait_s`), simulated once at the default
    factors and held while the factors move: two simulations per row at every evaluation of a
    fit would make it ~15x slower, and the wait is a queueing effect of the harness that the
    factors scale only through the step times. None for other rows.
    wave_slowdown: a static batch run in waves on an engine that preempts by recompute: its
    simulated batch latency over the waves estimate's (:mod:`~guide_opt.validation.preemption`), at
    the default factors and held the same way. None for other rows.
    """

    measurement: Measurement
    config: ServingConfig
    targets: tuple[tuple[str, float], ...]
    running: int | None = None
    cache_block_wait_s: float | None = None
    wave_slowdown: float | None = None


def physics_violation(m: Measurement, config: ServingConfig, predicted: dict[str, float]) -> tuple[str, str] | None:
    """(kind, example) when a row cannot be a real measurement of ``config``; None when it can.

    Refused: a latency below the weight-streaming floor (:func:`~guide_opt.validation.physics.weight_stream_time_s`: TTFT
    and TPOT at least one floor; batch latency :func:`~guide_opt.validation.physics.batch_latency_floor_s`, which adds a static
    batch's KV-cache reads), a throughput above ``batch / floor`` tokens/s, or any metric more
    than :data:`MAX_SLOWDOWN` times worse than ``predicted`` (the default model's metrics for the row).
    """
    floor_s = weight_stream_time_s(config)
    batch_floor_s = batch_latency_floor_s(config, static_batch=not (m.closed_loop or m.offline))
    floors = {"ttft_ms": floor_s * 1e3, "tpot_ms": floor_s * 1e3, "batch_latency_s": batch_floor_s}
    where = f"{m.llm} on {m.gpu} TP={m.tp} batch {m.batch}{' [' + m.key + ']' if m.key else ''}"
    for metric, value in m.measured.items():
        if not finite_positive(value):
            continue
        unit = "tokens/s" if metric == "throughput_tokens_per_s" else metric.rsplit("_", 1)[-1]
        if metric in floors and value < floors[metric]:
            return (PHYSICS_TOO_FAST, f"{where}: {metric} {value:g} {unit} < {floors[metric]:.4g} {unit}")
        if metric == "throughput_tokens_per_s" and value > m.batch / floor_s:
            return (PHYSICS_TOO_FAST, f"{where}: {metric} {value:g} {unit} > {m.batch / floor_s:.4g} {unit}")
        model = predicted.get(metric)
        if model is None or not finite_positive(model):
            continue
        slowdown = model / value if metric == "throughput_tokens_per_s" else value / model
        if slowdown > MAX_SLOWDOWN:
            return (PHYSICS_TOO_SLOW, f"{where}: {metric} {value:g} {unit}, {slowdown:,.0f}x the model's {model:.4g} {unit}")
    return None


def prepare_rows(rows: Iterable[Measurement], catalog: Catalog, skipped: Counter | None = None) -> list[PreparedRow]:
    """Configs of the rows guide-opt can predict (supported and fitting in memory) with their fitted metrics.

    Physically impossible rows (:func:`physics_violation`) are refused: counted in ``skipped``
    under one reason per kind that quotes the first such row as an example.
    """
    skipped = skipped if skipped is not None else Counter()
    prepared = []
    refused: Counter = Counter()
    examples: dict[str, str] = {}
    for m in rows:
        if m.offline:
            skipped[OFFLINE_RUN] += 1
            continue
        config = measurement_config(m, catalog)
        reason = config.unsupported_reason()
        if reason:
            skipped[f"unsupported configuration: {reason}"] += 1
            continue
        est = estimate(config)
        if not est.runs:
            skipped[NOT_FITTING] += 1
            continue
        running = None if est.fits else est.max_batch
        wait_s = (turbomind.block_wait_s(config, turbomind.cache_blocks_of(config))
                  if m.first_token_rule == TURBOMIND_PROFILE_GENERATION else None)
        slowdown = (preemption.wave_slowdown(config, est.phases.batch_latency_s)
                    if preemption.read_as_preempted(config, in_waves=running is not None, closed_loop=m.closed_loop) else None)
        predicted = predicted_metrics(config, check_memory=False, closed_loop=m.closed_loop, running=running, first_token_rule=m.first_token_rule,
                                      cache_block_wait_s=wait_s, wave_slowdown=slowdown)
        violation = physics_violation(m, config, predicted)
        if violation:
            refused[violation[0]] += 1
            examples.setdefault(violation[0], violation[1])
            continue
        targets = tuple((k, v) for k, v in m.measured.items() if k not in m.report_only and finite_positive(v))
        if not targets:
            skipped[NO_USABLE_METRIC] += 1
            continue
        prepared.append(PreparedRow(m, config, targets, running, wait_s, slowdown))
    for kind, count in refused.items():
        skipped[f"refused, {kind} (e.g. {examples[kind]})"] += count
    return prepared


def _factors(x: np.ndarray, default: EfficiencyFactors) -> EfficiencyFactors:
    """The fitted five factors ``x``; the host costs and KV re-read exponent, which are not fitted, keep ``default``'s values."""
    return default.model_copy(update=dict(zip(FITTED_FIELDS, (float(v) for v in x))))


def _vector(f: EfficiencyFactors) -> np.ndarray:
    return np.array([f.compute_efficiency, f.memory_efficiency, f.communication_efficiency, f.step_overhead_ms, f.collective_latency_scale], dtype=float)


def config_log_residuals(prepared: list[PreparedRow], configure: Callable[[ServingConfig], ServingConfig]) -> np.ndarray:
    """``ln(predicted / measured)`` of every fitted (row, metric) pair, each row predicted with ``configure(row.config)``.

    What a fit varies goes in ``configure``: the engine factors (:func:`log_residuals`) or a
    GPU's kernel curves (:mod:`guide_opt.validation.profile_fit`).
    """
    out = []
    for row in prepared:
        predicted = predicted_metrics(configure(row.config), check_memory=False, closed_loop=row.measurement.closed_loop, running=row.running,
                                      first_token_rule=row.measurement.first_token_rule, cache_block_wait_s=row.cache_block_wait_s,
                                      wave_slowdown=row.wave_slowdown)
        out.extend(math.log(predicted[metric] / value) for metric, value in row.targets)
    return np.array(out, dtype=float)


def log_residuals(prepared: list[PreparedRow], factors: EfficiencyFactors) -> np.ndarray:
    """``ln(predicted / measured)`` of every fitted (row, metric) pair under ``factors``."""
    return config_log_residuals(prepared, lambda config: replace(config, efficiency=factors))


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
    """Least-squares fit of the five factors to ``prepared`` rows (one GPU and framework).

    ``default`` (else the rows' framework defaults) is the starting point and the prior's centre.
    """
    if not prepared:
        raise ValueError("no rows to fit")
    from scipy.optimize import least_squares

    default = default or prepared[0].config.factors
    lo = np.array([EFFICIENCY_BOUNDS[0]] * 3 + [STEP_OVERHEAD_BOUNDS_MS[0], COLLECTIVE_LATENCY_BOUNDS[0]])
    hi = np.array([EFFICIENCY_BOUNDS[1]] * 3 + [STEP_OVERHEAD_BOUNDS_MS[1], COLLECTIVE_LATENCY_BOUNDS[1]])
    centre = np.clip(_vector(default), lo, hi)
    prior_w = math.sqrt(PRIOR_WEIGHT)
    ratio = [0, 1, 2, 4]  # factors whose prior is on the log scale (the overhead's is linear, in ms)
    ratio_w = np.array([prior_w] * 3 + [math.sqrt(PRIOR_WEIGHT_COLLECTIVE_LATENCY)])

    def residuals(x: np.ndarray) -> np.ndarray:
        data = log_residuals(prepared, _factors(x, default))
        prior = np.concatenate([ratio_w * (np.log(x[ratio]) - np.log(centre[ratio])), [prior_w * (x[3] - centre[3]) / PRIOR_OVERHEAD_SCALE_MS]])
        return np.concatenate([data, prior])

    result = least_squares(residuals, centre, bounds=(lo, hi), loss="soft_l1", f_scale=LOSS_SCALE,
                           x_scale=np.array([0.1, 0.1, 0.1, 1.0, 0.2]), diff_step=1e-3, max_nfev=400)
    x = np.clip(result.x, lo, hi)
    fitted = EfficiencyFactors(**{**default.model_dump(), **{name: round(float(v), 4) for name, v in zip(FITTED_FIELDS, x)}})
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
        refused = sum(n for reason, n in skipped.items() if reason.startswith("refused"))
        raise InputError("--data", f"no row can be used (unknown ids, unsupported, not fitting in memory, or {refused} refused as physically "
                         "impossible)", "check the rows' model, gpu and framework ids and their units (ms, s, tokens/s)")
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
