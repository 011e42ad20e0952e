"""End-to-end fit of one GPU's kernel curves from measured serving latencies, for a GPU without kernel tables.

A GPU's kernel curves (:class:`~guide_opt.kernel_profile.KernelProfile`) are normally fitted to
measured kernel timings (:mod:`guide_opt.validation.kernel_fit`). A GPU without such tables gets
the NVIDIA-pooled ``generic-<link kind>`` curves, scaled by its datasheet peaks; where its
serving stack behaves unlike those kernels (AMD MI300X under vLLM on ROCm, LLM-Inference-Bench:
measured about twice as slow as the generic curves predict), a few curve parameters can be
fitted end to end instead, on measured static-batch latencies, through the same step model the
planner uses. The fitted parameters (:class:`EndToEndParams`) change the generic curves so:

- ``compute_scale`` multiplies the GEMM (every dtype) and prefill-attention peak fractions;
- ``half_tokens``: the GEMM tokens at half compute efficiency (every dtype);
- ``hbm_fraction``: the HBM fraction of the GEMMs, the elementwise kernels and decode
  attention (one figure: all of them stream HBM);
- ``kernel_latency_us``: the fixed time of every GEMM, elementwise and attention kernel
  (launch and ramp; an engine that launches kernels one by one, without graphs, pays it on
  every kernel of every layer);
- ``all_reduce_latency_us`` / ``all_reduce_bus_fraction``: one alpha-beta all-reduce for
  every GPU count.

Fit (:func:`fit_end_to_end`): robust least squares of ``ln(predicted / measured)`` (soft-L1 at
the scale of :mod:`guide_opt.validation.calibration`) over rows prepared by
:func:`~guide_opt.validation.calibration.prepare_rows` (physically impossible rows refused).
Started from the generic curves, one joint fit settles in a local minimum where a low HBM
fraction stands in for the kernel latencies; three steps avoid it: (1) the batch-1 rows alone
-- weight streaming, kernel and all-reduce latencies; compute is idle there -- fit
``hbm_fraction``, ``kernel_latency_us`` and ``all_reduce_latency_us``; (2) ``compute_scale``
starts at the best of a power-of-two scan (:data:`COMPUTE_SCALE_SCAN`); (3) all rows fit all
six (``all_reduce=False``: the first four, the generic all-reduce kept). Held out
(:func:`leave_one_llm_out`): each LLM's rows are predicted by the fit on the other LLMs' rows. :func:`end_to_end_profile` builds the ``scope: gpu`` profile to ship, whose
``source`` says it is an end-to-end fit, not kernel tables.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from guide_opt.catalog import Catalog
from guide_opt.kernel_profile import CollectiveFit, FitQuality, KernelProfile
from guide_opt.perf import ServingConfig
from guide_opt.validation.accuracy import Comparison, error_stats, evaluate
from guide_opt.validation.calibration import LOSS_SCALE, PreparedRow, config_log_residuals

#: The metric the fit reads (a static batch's end-to-end latency).
FITTED_METRIC = "batch_latency_s"
#: Fitted parameters, in the order of :meth:`EndToEndParams.vector`.
PARAMETER_NAMES = ("compute_scale", "half_tokens", "hbm_fraction", "kernel_latency_us", "all_reduce_latency_us", "all_reduce_bus_fraction")
#: Lower / upper bounds (the compute scale's upper bound is further limited so no fraction exceeds 1).
LOWER = np.array([0.01, 0.0, 0.05, 0.0, 0.0, 0.05])
UPPER = np.array([1.0, 20000.0, 1.0, 1000.0, 1000.0, 2.0])
#: Parameters the batch-1 rows fit first (step 1): hbm_fraction, kernel_latency_us, all_reduce_latency_us.
BATCH_ONE_PARAMETERS = (2, 3, 4)
#: Starting values of compute_scale tried in step 2 (with step 1's values; the best starts step 3).
COMPUTE_SCALE_SCAN = tuple(2.0 ** -k for k in range(8))
#: Finite-difference step, relative: the step model's times are piecewise (roofline maxima).
DIFF_STEP = 1e-2


@dataclass(frozen=True)
class EndToEndParams:
    """The parameters an end-to-end fit changes on the generic curves (see the module docstring)."""

    compute_scale: float
    half_tokens: float
    hbm_fraction: float
    kernel_latency_us: float
    all_reduce_latency_us: float | None = None
    all_reduce_bus_fraction: float | None = None

    @property
    def fits_all_reduce(self) -> bool:
        """Whether the all-reduce is fitted (else the generic curves' all-reduce is kept)."""
        return self.all_reduce_latency_us is not None

    def vector(self) -> np.ndarray:
        """The parameters as an array in :data:`PARAMETER_NAMES` order (NaN for an all-reduce not fitted)."""
        return np.array([math.nan if getattr(self, name) is None else getattr(self, name) for name in PARAMETER_NAMES], dtype=float)

    @classmethod
    def from_vector(cls, x: np.ndarray, all_reduce: bool = True) -> "EndToEndParams":
        """The parameters of array ``x`` (:data:`PARAMETER_NAMES` order); ``all_reduce=False`` leaves the all-reduce out."""
        values = [float(v) for v in x]
        return cls(*values) if all_reduce else cls(*values[:4])

    @classmethod
    def start(cls, base: KernelProfile) -> "EndToEndParams":
        """The parameters that reproduce ``base``'s bf16 GEMM curve and its 2-GPU all-reduce (scale 1)."""
        gemm, pair = base.gemm["bf16"], base.all_reduce_fit(2)
        return cls(1.0, gemm.half_tokens, gemm.bandwidth_fraction, gemm.latency_us, pair.latency_us, pair.bus_bandwidth_fraction)


def upper_bounds(base: KernelProfile) -> np.ndarray:
    """:data:`UPPER`, with the compute scale capped so that no scaled peak fraction of ``base`` exceeds 1."""
    largest = max([c.peak_fraction for c in base.gemm.values()] + [base.attention.prefill_peak_fraction])
    upper = UPPER.copy()
    upper[0] = min(upper[0], 1.0 / largest)
    return upper


def apply_params(base: KernelProfile, params: EndToEndParams) -> KernelProfile:
    """``base`` with ``params`` applied (same id and metadata; :func:`end_to_end_profile` sets those).

    One fitted HBM fraction serves every stream: weights and either KV-cache dtype (the
    serving rows do not separate an FP8 cache's rate).
    """
    p = params
    gemm = {dtype: curve.model_copy(update={"peak_fraction": curve.peak_fraction * p.compute_scale, "half_tokens": p.half_tokens,
                                            "bandwidth_fraction": p.hbm_fraction, "latency_us": p.kernel_latency_us})
            for dtype, curve in base.gemm.items()}
    attention = base.attention.model_copy(update={"prefill_peak_fraction": base.attention.prefill_peak_fraction * p.compute_scale,
                                                  "decode_bandwidth_fraction": p.hbm_fraction, "fp8_kv_decode_bandwidth_fraction": None,
                                                  "latency_us": p.kernel_latency_us})
    all_reduce = base.all_reduce if not p.fits_all_reduce else [
        CollectiveFit(num_gpus=c.num_gpus, latency_us=p.all_reduce_latency_us, bus_bandwidth_fraction=p.all_reduce_bus_fraction)
        for c in base.all_reduce]
    return base.model_copy(update={"gemm": gemm, "attention": attention, "all_reduce": all_reduce})


def with_kernels(config: ServingConfig, profile: KernelProfile) -> ServingConfig:
    """``config`` on the same GPU with ``profile`` as its kernel curves."""
    return dataclasses.replace(config, gpu=config.gpu.model_copy(update={"kernels": profile}))


def with_gpu_kernels(catalog: Catalog, gpu_id: str, profile: KernelProfile) -> Catalog:
    """A copy of ``catalog`` whose GPU ``gpu_id`` has ``profile`` as its kernel curves."""
    gpus = dict(catalog.gpus)
    gpus[gpu_id] = gpus[gpu_id].model_copy(update={"kernels": profile})
    return dataclasses.replace(catalog, gpus=gpus)


def profile_log_residuals(prepared: list[PreparedRow], profile: KernelProfile) -> np.ndarray:
    """``ln(predicted / measured)`` of every fitted (row, metric) pair with the rows' GPU on ``profile``."""
    return config_log_residuals(prepared, lambda config: with_kernels(config, profile))


def soft_l1_cost(residuals: np.ndarray) -> float:
    """The soft-L1 cost ``least_squares`` minimizes at scale :data:`~guide_opt.validation.calibration.LOSS_SCALE`."""
    z = (residuals / LOSS_SCALE) ** 2
    return float(0.5 * LOSS_SCALE ** 2 * np.sum(2.0 * (np.sqrt(1.0 + z) - 1.0)))


def _fit(prepared: list[PreparedRow], base: KernelProfile, x: np.ndarray, free: list[int], upper: np.ndarray, all_reduce: bool) -> np.ndarray:
    """``x`` with its ``free`` entries fitted to ``prepared`` (robust least squares on log errors, bounded)."""
    from scipy.optimize import least_squares

    free_idx = list(free)

    def residuals(z: np.ndarray) -> np.ndarray:
        full = x.copy()
        full[free_idx] = z
        return profile_log_residuals(prepared, apply_params(base, EndToEndParams.from_vector(full, all_reduce)))

    lo, hi = LOWER[free_idx], upper[free_idx]
    start = np.clip(x[free_idx], lo, hi)
    result = least_squares(residuals, start, bounds=(lo, hi), loss="soft_l1", f_scale=LOSS_SCALE, x_scale=np.abs(start) + 1e-2,
                           diff_step=DIFF_STEP, max_nfev=200)
    out = x.copy()
    out[free_idx] = np.clip(result.x, lo, hi)
    return out


@dataclass(frozen=True)
class EndToEndFit:
    """Fitted parameters, the rows and (row, metric) pairs they were fitted on, and the final soft-L1 cost."""

    params: EndToEndParams
    rows: int
    pairs: int
    cost: float


def fit_end_to_end(prepared: list[PreparedRow], base: KernelProfile, *, all_reduce: bool = True) -> EndToEndFit:
    """Fit :class:`EndToEndParams` to ``prepared`` rows of one GPU, starting from ``base`` (its generic curves).

    Three steps (module docstring): batch-1 rows fit the memory and latency parameters, a
    power-of-two scan picks the compute scale to start from, then all rows fit all parameters.
    ``all_reduce=False`` keeps ``base``'s all-reduce and fits the other four.
    """
    if not prepared:
        raise ValueError("no rows to fit")
    upper = upper_bounds(base)
    x = np.clip(EndToEndParams.start(base).vector(), LOWER, upper)
    fitted = [i for i in range(len(PARAMETER_NAMES)) if all_reduce or i < 4]
    batch_one = [r for r in prepared if r.measurement.batch == 1]
    if batch_one:
        x = _fit(batch_one, base, x, [i for i in BATCH_ONE_PARAMETERS if i in fitted], upper, all_reduce)

    def cost_at(scale: float) -> float:
        trial = x.copy()
        trial[0] = scale
        return soft_l1_cost(profile_log_residuals(prepared, apply_params(base, EndToEndParams.from_vector(trial, all_reduce))))

    x[0] = min((s for s in COMPUTE_SCALE_SCAN if s <= upper[0]), key=cost_at)
    x = _fit(prepared, base, x, fitted, upper, all_reduce)
    params = EndToEndParams.from_vector(x, all_reduce)
    residuals = profile_log_residuals(prepared, apply_params(base, params))
    return EndToEndFit(params, len(prepared), len(residuals), soft_l1_cost(residuals))


def rounded(params: EndToEndParams) -> EndToEndParams:
    """``params`` rounded as shipped: scale and fractions to 4 decimals, tokens and microseconds to 0.01."""
    p = params
    return EndToEndParams(round(p.compute_scale, 4), round(p.half_tokens, 2), round(p.hbm_fraction, 4), round(p.kernel_latency_us, 2),
                          None if p.all_reduce_latency_us is None else round(p.all_reduce_latency_us, 2),
                          None if p.all_reduce_bus_fraction is None else round(p.all_reduce_bus_fraction, 4))


def end_to_end_profile(base: KernelProfile, params: EndToEndParams, gpu_id: str, *, source: str, data_version: str, fitted_utc: str,
                       fitted_on: list[str], quality: dict[str, FitQuality]) -> KernelProfile:
    """The ``scope: gpu`` profile of ``gpu_id``: ``base`` with ``params`` applied, fractions rounded to 4 decimals, validated."""
    fitted = apply_params(base, params)
    payload = fitted.model_dump(mode="json")
    for curve in payload["gemm"].values():
        curve["peak_fraction"] = round(curve["peak_fraction"], 4)
    payload["attention"]["prefill_peak_fraction"] = round(payload["attention"]["prefill_peak_fraction"], 4)
    payload.update(id=gpu_id, scope="gpu", source=source, data_version=data_version, fitted_utc=fitted_utc, fitted_on=fitted_on,
                   quality={k: q.model_dump() for k, q in quality.items()})
    return KernelProfile.model_validate(payload)


def batch_latency_quality(comparisons: list[Comparison]) -> FitQuality:
    """MAPE and bias (percent, 2 decimals) of the batch-latency comparisons among ``comparisons``."""
    chosen = [c for c in comparisons if c.metric == FITTED_METRIC]
    mape, _, bias = error_stats(chosen)
    return FitQuality(rows=len(chosen), mape_pct=round(mape, 2), bias_pct=round(bias, 2))


@dataclass
class HeldOutFits:
    """Leave-one-LLM-out: the held-out comparisons (each LLM predicted by the fit on the others) and those fits (LLM -> fit)."""

    comparisons: list[Comparison]
    fits: dict[str, EndToEndFit]


def leave_one_llm_out(prepared: list[PreparedRow], base: KernelProfile, catalog: Catalog, gpu_id: str, *, all_reduce: bool = True) -> HeldOutFits:
    """Hold out each LLM in turn: fit on the other LLMs' rows, predict the held-out rows on ``gpu_id`` with that fit (rounded as shipped)."""
    comparisons, fits = [], {}
    for llm in sorted({r.measurement.llm for r in prepared}):
        train = [r for r in prepared if r.measurement.llm != llm]
        fit = fit_end_to_end(train, base, all_reduce=all_reduce)
        fits[llm] = fit
        patched = with_gpu_kernels(catalog, gpu_id, apply_params(base, rounded(fit.params)))
        comparisons += evaluate([r.measurement for r in prepared if r.measurement.llm == llm], patched).comparisons
    return HeldOutFits(comparisons, fits)
