"""Predicted vs measured: per-row comparisons and GUIDE-style error tables.

:func:`evaluate` predicts every :class:`~guide_opt.validation.datasets.Measurement` with the
static estimator (:func:`guide_opt.perf.estimate`) and pairs each measured metric with its
prediction (:class:`Comparison`). :func:`summarize` groups comparisons, by default per
(source, GPU, metric), into :class:`AccuracyRow` s:

- ``mape``       -- mean absolute percentage error, ``mean(|pred - meas| / meas) x 100``;
- ``median_ape`` -- median of the same absolute percentage errors;
- ``bias``       -- mean signed percentage error, ``mean((pred - meas) / meas) x 100``
  (positive: guide-opt predicts too high -- too slow for latencies, too fast for throughput);
- ``count``      -- compared (row, metric) pairs.

Rows guide-opt cannot evaluate (configuration unsupported, or its engine cannot serve one
request in guide-opt's memory model) are counted in :attr:`Evaluation.skipped` with the reason.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any, Iterable, Mapping

from guide_opt.catalog import Catalog
from guide_opt.frameworks import EfficiencyFactors
from guide_opt.perf import ServingConfig
from guide_opt.perf.estimator import estimate, phase_times
from guide_opt.validation import preemption, turbomind
from guide_opt.validation.datasets import METRICS, Measurement, finite_positive, measurement_config  # noqa: F401 (re-exported)
from guide_opt.validation.datasets import SEQUENTIAL_PREFILL, TURBOMIND_PROFILE_GENERATION

#: Skip reason for rows whose engine cannot serve one request in memory by guide-opt's model.
NOT_FITTING = "cannot serve one request in memory by guide-opt's memory model"


def resolve_factors(calibration: Any, gpu: str, framework: str) -> EfficiencyFactors | None:
    """Efficiency factors for (``gpu``, ``framework``) from ``calibration``, or None for the framework defaults.

    ``calibration`` may be None, an object with ``factors_for(gpu, framework)`` (a
    :class:`~guide_opt.validation.calibration.Calibration`) or a mapping
    ``(gpu id, framework id) -> EfficiencyFactors``.
    """
    if calibration is None:
        return None
    if hasattr(calibration, "factors_for"):
        return calibration.factors_for(gpu, framework)
    if isinstance(calibration, Mapping):
        return calibration.get((gpu, framework))
    raise TypeError(f"calibration must be a Calibration, a mapping or None, not {type(calibration).__name__}")


#: How a closed-loop row is predicted: ``static`` (a batch of the users, the cycle time per token),
#: ``steady_state`` (:func:`guide_opt.perf.steady_state.closed_loop`) or ``tgis`` (TGIS's batching
#: rule played step by step, :func:`guide_opt.validation.tgis.tgis_closed_loop`, default settings).
SERVING_MODELS = ("static", "steady_state", "tgis")
#: Requests measured per closed-loop row by the ``tgis`` serving model (and per user, the larger applies).
TGIS_ROW_REQUESTS = 80
TGIS_ROW_REQUESTS_PER_USER = 3


def steady_closed_loop_metrics(config: ServingConfig, statistic: str = "mean") -> dict[str, float]:
    """Steady-state metrics of ``config.batch`` users with zero think time (max-num-seqs = users).

    ``statistic``: ``mean`` gives mean TTFT and mean TPOT; ``median`` the median TTFT and the
    median inter-token latency. Throughput: generated tokens/s; batch latency: the mean end to end.
    """
    from guide_opt.perf import steady_state

    state = steady_state.closed_loop(config, config.batch, capacity_per_s=0.0)
    ttft = state.ttft.p50_s if statistic == "median" else state.ttft.mean_s
    tpot = state.itl.p50_s if statistic == "median" else state.tpot.mean_s
    return {"ttft_ms": ttft * 1e3, "tpot_ms": tpot * 1e3, "batch_latency_s": state.e2e_mean_s,
            "throughput_tokens_per_s": state.output_throughput_tokens_per_s}


def tgis_closed_loop_metrics(config: ServingConfig, *, median_lengths: tuple[int, int] | None = None,
                             prefill_host_ms: float | None = None, sequence_host_ms: float | None = None) -> dict[str, float]:
    """Median TTFT and median ITL (ms) of ``config.batch`` users on TGIS (:mod:`guide_opt.validation.tgis`).

    Request lengths: with ``median_lengths`` (median input, median output tokens), each side is
    log-normal with ``config``'s lengths as its mean and that median
    (:func:`~guide_opt.validation.pilot_predictors.lognormal_lengths`), as LLM-Pilot's requests
    varied. Users then fall out of step, and TGIS's add-on rule decides how long a returning
    request waits for its prefill pass. Without, every request has the mean lengths: while the
    batch holds every user they move in lockstep -- all finish in the same step and are
    prefilled together -- and the add-on rule does not run. The batch limit is the engine's
    max-num-seqs with flash attention, fmperf's 12 for padded (non-flash) LLMs; TGIS's host costs
    per prefill pass and per running sequence are the engine defaults
    (:func:`~guide_opt.validation.tgis.default_settings`) unless given. Throughput and batch
    latency follow from the medians.
    """
    from guide_opt.simulate.workloads import HistogramLengths
    from guide_opt.validation.pilot_predictors import PADDED_MAX_BATCH, lognormal_lengths
    from guide_opt.validation.tgis import default_settings, tgis_closed_loop

    users = config.batch
    settings = default_settings(config.framework.max_num_seqs if config.flash_attention else PADDED_MAX_BATCH, padded=not config.flash_attention,
                                prefill_host_ms=prefill_host_ms, sequence_host_ms=sequence_host_ms)
    if median_lengths is None:
        lengths = HistogramLengths(input_bins=((config.input_tokens, 1.0),), output_bins=((config.output_tokens, 1.0),))
    else:
        lengths = lognormal_lengths(config.input_tokens, median_lengths[0], config.output_tokens, median_lengths[1])
    level = tgis_closed_loop(replace(config, batch=1), users, lengths, settings,
                             num_requests=max(TGIS_ROW_REQUESTS, TGIS_ROW_REQUESTS_PER_USER * users))
    e2e_s = (level.median_ttft_ms + (config.output_tokens - 1) * level.median_itl_ms) * 1e-3
    return {"ttft_ms": level.median_ttft_ms, "tpot_ms": level.median_itl_ms, "batch_latency_s": e2e_s,
            "throughput_tokens_per_s": min(users, settings.max_batch_size) * config.output_tokens / e2e_s}


def offline_throughput_metrics(config: ServingConfig, *, steady: bool) -> dict[str, float] | None:
    """Output tokens/s of an offline max-throughput run of ``config`` (every request queued at once); None when none fits.

    The engine keeps ``running = min(config.batch, max_batch(config))`` requests at once: its max
    batch size, or fewer when the KV cache cannot hold that many to their last token (a
    TensorRT-LLM runtime scheduling ``GUARANTEED_NO_EVICT`` admits a request only then). With
    ``steady`` each finished request is replaced at once, a closed loop of ``running`` users
    with zero think time (:func:`guide_opt.perf.steady_state.closed_loop`); without, the run is
    read as the static model reads it: waves of ``running`` prompts arriving together, the
    throughput of one such batch. The time to fill and drain the engine at the run's start and
    end is left out of both (the runs hold 1,000-30,000 requests).
    """
    from guide_opt.perf import steady_state
    from guide_opt.perf.memory import max_batch

    running = min(config.batch, max_batch(config))
    if running < 1:
        return None
    config = replace(config, batch=running)
    if steady:
        return {"throughput_tokens_per_s": steady_state.closed_loop(config, running, capacity_per_s=0.0).output_throughput_tokens_per_s}
    est = estimate(config)
    if not est.runs:
        return None
    return {"throughput_tokens_per_s": running * config.output_tokens / est.phases.batch_latency_s}


def predicted_metrics(config: ServingConfig, *, check_memory: bool = True, closed_loop: bool = False,
                      running: int | None = None, serving: str = "static", statistic: str = "mean",
                      offline: bool = False, median_lengths: tuple[int, int] | None = None,
                      first_token_rule: str = SEQUENTIAL_PREFILL, cache_block_wait_s: float | None = None,
                      wave_slowdown: float | None = None) -> dict[str, float] | None:
    """Predicted :data:`~guide_opt.validation.datasets.METRICS` of ``config``; None when the engine cannot serve one request.

    ``closed_loop``: ``config.batch`` users each sending their next request as soon as the last
    one finished. The static estimator still predicts one batch, but the time per output token
    a user sees is the batch's whole cycle (every prompt's prefill plus the decode steps)
    divided by the output tokens, ``batch_latency_s / output_tokens``, instead of the bare
    decode step: in steady state the prefills of returning users interleave with everyone's
    decoding. ``check_memory=False`` skips the memory model (for fitting loops over rows
    already known to run); ``running`` then gives the most sequences resident at once (the
    estimate's ``max_batch`` when the batch runs in waves; None: all of it).
    ``serving="steady_state"`` predicts a closed-loop row with the steady-state model instead
    (:func:`steady_closed_loop_metrics`, reading ``statistic``), ``serving="tgis"`` with TGIS's
    batching rule (:func:`tgis_closed_loop_metrics`, medians, with the row's ``median_lengths``); static-batch rows are predicted
    statically either way. ``offline``: an offline max-throughput run, throughput only
    (:func:`offline_throughput_metrics`: steady state unless ``serving`` is ``static``).
    ``first_token_rule``: a static row's TTFT as the measuring harness produced it
    (:attr:`~guide_opt.validation.datasets.Measurement.first_token_rule`; TurboMind's rule,
    :func:`~guide_opt.validation.turbomind.first_token_latency_s`, for LMDeploy's rows);
    ``cache_block_wait_s``: that rule's wait for KV-cache blocks when the caller already has it
    (a fit holds it at its starting factors); None: simulated.
    A static batch run in waves on an engine that preempts by recompute (vLLM) takes the batch latency of its requests
    served together by the simulator (:mod:`~guide_opt.validation.preemption`): the waves estimate times
    ``wave_slowdown`` when the caller holds it (a fit), else simulated. Its TTFT and TPOT keep the waves reading.
    """
    if offline:
        return offline_throughput_metrics(config, steady=serving != "static")
    if closed_loop and serving == "tgis":  # its own memory check: the batch TGIS runs, not all the users
        metrics = tgis_closed_loop_metrics(config, median_lengths=median_lengths)
        return metrics if math.isfinite(metrics["ttft_ms"]) else None
    if check_memory:
        est = estimate(config)
        if not est.runs:  # a batch the KV cache cannot hold at once still ran: it is estimated in waves
            return None
        p, in_waves = est.phases, not est.fits
    else:
        p, in_waves = phase_times(config, running), running is not None
    if closed_loop and serving == "steady_state":
        return steady_closed_loop_metrics(config, statistic)

    ttft_s = (turbomind.first_token_latency_s(config, cache_block_wait_s=cache_block_wait_s)
              if first_token_rule == TURBOMIND_PROFILE_GENERATION else p.ttft_s)
    batch_latency_s = p.batch_latency_s
    if preemption.read_as_preempted(config, in_waves=in_waves, closed_loop=closed_loop):
        batch_latency_s *= preemption.wave_slowdown(config, batch_latency_s) if wave_slowdown is None else wave_slowdown
    return {
        "ttft_ms": ttft_s * 1e3,
        "tpot_ms": (batch_latency_s / config.output_tokens if closed_loop else p.tpot_s) * 1e3,
        "batch_latency_s": batch_latency_s,
        "throughput_tokens_per_s": config.batch * config.output_tokens / batch_latency_s,
    }


@dataclass(frozen=True)
class Comparison:
    """One measured metric of one row next to its prediction (both in the metric's unit)."""

    measurement: Measurement
    metric: str
    predicted: float
    measured: float

    @property
    def signed_error_percent(self) -> float:
        """(predicted - measured) / measured x 100."""
        return (self.predicted - self.measured) / self.measured * 100.0

    @property
    def ape_percent(self) -> float:
        """Absolute percentage error."""
        return abs(self.signed_error_percent)


@dataclass
class Evaluation:
    """All comparisons of an evaluation and the rows it could not evaluate (reason -> count)."""

    comparisons: list[Comparison] = field(default_factory=list)
    skipped: Counter = field(default_factory=Counter)


def evaluate(rows: Iterable[Measurement], catalog: Catalog, calibration: Any = None, *, serving: str = "static",
             closed_loop_framework: str | None = None) -> Evaluation:
    """Predict every row (with ``calibration``'s factors where it has them) and compare with what was measured.

    ``serving``: how closed-loop rows are predicted (:data:`SERVING_MODELS`).
    ``closed_loop_framework``: an engine profile that replaces the row's for closed-loop rows
    (LLM-Pilot's TGIS rows: ``tgis``); None keeps the row's.
    """
    if serving not in SERVING_MODELS:
        raise ValueError(f"serving must be one of {SERVING_MODELS}, not {serving!r}")
    result = Evaluation()
    for m in rows:
        if closed_loop_framework and m.closed_loop:
            m = replace(m, framework=closed_loop_framework)
        try:
            config = measurement_config(m, catalog, resolve_factors(calibration, m.gpu, m.framework))
        except KeyError as exc:
            result.skipped[f"unknown catalog id {exc}"] += 1
            continue
        reason = config.unsupported_reason()
        if reason:
            result.skipped[f"unsupported configuration: {reason}"] += 1
            continue
        predicted = predicted_metrics(config, closed_loop=m.closed_loop, serving=serving, statistic=m.statistic, offline=m.offline,
                                      median_lengths=m.median_lengths, first_token_rule=m.first_token_rule)
        if predicted is None:
            result.skipped[NOT_FITTING] += 1
            continue
        for metric, value in m.measured.items():
            if finite_positive(value) and finite_positive(predicted[metric]):
                result.comparisons.append(Comparison(m, metric, predicted[metric], value))
    return result


@dataclass(frozen=True)
class AccuracyRow:
    """Error statistics of one group of comparisons (percentages; ``count`` pairs)."""

    source: str
    gpu: str
    metric: str
    mape: float
    median_ape: float
    bias: float
    count: int

    def as_dict(self) -> dict[str, Any]:
        """The JSON object of ``validate --format json``."""
        return {"source": self.source, "gpu": self.gpu, "metric": self.metric, "mape": round(self.mape, 2),
                "median_ape": round(self.median_ape, 2), "bias": round(self.bias, 2), "count": self.count}


def error_stats(comparisons: list[Comparison]) -> tuple[float, float, float]:
    """(MAPE, median APE, mean signed error) of ``comparisons``, in percent."""
    apes = [c.ape_percent for c in comparisons]
    return statistics.fmean(apes), statistics.median(apes), statistics.fmean(c.signed_error_percent for c in comparisons)


def summarize(comparisons: Iterable[Comparison], *, by_gpu: bool = True, label: str | None = None) -> list[AccuracyRow]:
    """Group comparisons per (source, GPU, metric) -- or per (source, metric) with ``by_gpu=False`` -- into rows.

    ``label`` replaces the source name (e.g. ``"lmdeploy (calibrated)"``). Rows come sorted by
    source, GPU and the order of :data:`METRICS`.
    """
    groups: dict[tuple[str, str, str], list[Comparison]] = {}
    for c in comparisons:
        key = (label or c.measurement.source, c.measurement.gpu if by_gpu else "all", c.metric)
        groups.setdefault(key, []).append(c)
    rows = []
    for (source, gpu, metric), group in groups.items():
        mape, median_ape, bias = error_stats(group)
        rows.append(AccuracyRow(source, gpu, metric, mape, median_ape, bias, len(group)))
    return sorted(rows, key=lambda r: (r.source, r.gpu, METRICS.index(r.metric)))
