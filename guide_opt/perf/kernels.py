"""Kernel times from fitted efficiency curves (:class:`~guide_opt.kernel_profile.KernelProfile`).

Each function keeps the roofline structure -- ``max(compute time, memory time)`` -- but the
achieved fractions of the peaks come from curves fitted to measured kernels instead of one
scalar per engine:

- :func:`gemm_time`: compute efficiency ``peak_fraction x m / (m + half_tokens)`` (small-M
  decode GEMMs cannot fill the tensor cores) ``x nk / (nk + half_weight_elements)`` (nor can
  small matrices), memory time ``kernels x latency + bytes /
  (bandwidth_fraction x HBM peak)``, plus a serialized input pass (FP8 input quantization).
- :func:`attention_time`: compute efficiency by context length (short prompts are
  inefficient), memory time of the KV-cache traffic after a fixed latency and a per-sequence cost.
- :func:`elementwise_time`: the memory-bound normalization, rotary and activation kernels
  between the GEMMs, at the GEMM curve's HBM fraction and kernel latency.
- :func:`all_reduce_time_s`: alpha-beta with the measured latency and bus bandwidth of the
  TP degree.

The engine's :class:`~guide_opt.frameworks.EfficiencyFactors` multiply the fitted fractions
(1.0 = the kernels as measured; the product is capped at the peak) and
``collective_latency_scale`` multiplies the all-reduce latency, so calibration still fits
per engine. Without a profile (a hand-built :class:`~guide_opt.hardware.GpuSpec`) the
fractions are 1, latencies 0 and the all-reduce is the ring formula with the GPU's
``link_latency_us``: the engine factors alone then set the rates, as absolute fractions.

The curves are fitted by :mod:`guide_opt.validation.kernel_fit`, shipped in
``hardware_db/kernels/`` and used by every step of :mod:`guide_opt.perf.step`.
"""

from __future__ import annotations

from guide_opt.kernel_profile import KernelProfile
from guide_opt.perf.communication import ring_all_reduce_time_s
from guide_opt.perf.roofline import RooflineTime, choose, larger, smaller

US = 1e-6


def saturating_fraction(peak_fraction: float, half: float, size: float) -> float:
    """``peak_fraction x size / (size + half)``: an efficiency that saturates in ``size`` (tokens, rows)."""
    size = larger(size, 1.0)
    return peak_fraction * size / (size + half)


def _capped(fraction: float, scale: float) -> float:
    """An engine multiplier applied to a fitted fraction, never above the peak."""
    return smaller(1.0, fraction * scale)


def gemm_time(flops: float, weight_bytes: float, input_bytes: float, output_bytes: float, tokens: float, weight_elements: float,
              compute_dtype: str, peak_flops_per_s: float, hbm_bytes_per_s: float, profile: KernelProfile | None, compute_scale: float,
              memory_scale: float, kernels: int = 1, weight_only_quantized: bool = False) -> RooflineTime:
    """Roofline time of ``kernels`` GEMMs with ``tokens`` rows doing ``flops`` in total.

    ``weight_elements``: ``n x k`` of one of the GEMMs (their mean when ``kernels > 1``).
    ``weight_only_quantized``: the weights are narrower than the compute dtype (AWQ/GPTQ
    W4A16). Those kernels were not measured, and the small-M part of the bf16 curve (a
    16-bit GEMM pads ``m`` to a tile) does not describe them, so they run at the curve's
    asymptotic fraction for every ``m``.
    ``weight_bytes`` / ``input_bytes`` / ``output_bytes``: HBM bytes of weights, inputs and outputs.
    ``peak_flops_per_s`` is the dense peak of ``compute_dtype`` (already divided by any
    dequantization factor); ``compute_scale`` / ``memory_scale`` are the engine multipliers.
    ``time_s`` is ``max(compute, memory)`` plus the serialized input pass of the curve
    (``activation_bytes_scale x input_bytes`` at the same bandwidth; the on-the-fly
    quantization of FP8 inputs), which is also counted in ``memory_time_s``.
    """
    if profile is None:
        compute_frac, memory_frac, latency_s, input_pass = _capped(1.0, compute_scale), _capped(1.0, memory_scale), 0.0, 0.0
    else:
        curve = profile.gemm_curve(compute_dtype)
        half = 0.0 if weight_only_quantized else curve.half_tokens
        by_size = choose(weight_elements > 0, weight_elements / (weight_elements + curve.half_weight_elements), 1.0)
        compute_frac = _capped(saturating_fraction(curve.peak_fraction, half, tokens) * by_size, compute_scale)
        memory_frac = _capped(curve.bandwidth_fraction, memory_scale)
        latency_s, input_pass = kernels * curve.latency_us * US, curve.activation_bytes_scale
    rate = hbm_bytes_per_s * memory_frac
    compute_s = flops / (peak_flops_per_s * compute_frac)
    memory_s = latency_s + (weight_bytes + input_bytes + output_bytes) / rate
    extra_s = input_pass * input_bytes / rate
    return RooflineTime(larger(compute_s, memory_s) + extra_s, compute_s, memory_s + extra_s)


def attention_time(flops: float, bytes_moved: float, mean_context_tokens: float, sequences: int, peak_flops_per_s: float, hbm_bytes_per_s: float,
                   profile: KernelProfile | None, compute_scale: float, memory_scale: float, fp8_kv_cache: bool = False) -> RooflineTime:
    """Roofline time of one fused attention kernel over ``sequences`` sequences.

    ``mean_context_tokens``: keys each new token attends to, on average. The compute curve is
    evaluated at twice that -- ``s + 1`` for a causal prefill of ``s`` tokens, ``2 x context``
    for a decode -- the size in which the fit was made: short prompts cannot fill the tensor
    cores, decodes stay memory bound. The memory side pays a fixed kernel latency and a cost
    per sequence, and streams at the profile's HBM fraction for the cache's dtype
    (``fp8_kv_cache``: :meth:`~guide_opt.kernel_profile.AttentionFit.kv_bandwidth_fraction`).
    """
    if profile is None:
        compute_frac, memory_frac, latency_s = _capped(1.0, compute_scale), _capped(1.0, memory_scale), 0.0
    else:
        fit = profile.attention
        # Not clamped at one token (unlike GEMM rows): the compute time stays affine in the attended
        # tokens for a fixed step, which the simulator's fast step-cost model relies on.
        size = 2.0 * mean_context_tokens
        compute_frac = choose(size > 0, _capped(fit.prefill_peak_fraction * size / (size + fit.prefill_half_tokens), compute_scale), 1.0)
        memory_frac = _capped(fit.kv_bandwidth_fraction(fp8_kv_cache), memory_scale)
        latency_s = (fit.latency_us + fit.per_sequence_us * sequences) * US
    compute_s = choose(flops > 0, flops / (peak_flops_per_s * compute_frac), 0.0)
    memory_s = latency_s + bytes_moved / (hbm_bytes_per_s * memory_frac)
    return RooflineTime(larger(compute_s, memory_s), compute_s, memory_s)


def elementwise_time(bytes_moved: float, kernels: int, hbm_bytes_per_s: float, profile: KernelProfile | None,
                     memory_scale: float) -> RooflineTime:
    """Roofline time of ``kernels`` memory-bound elementwise kernels moving ``bytes_moved`` in all.

    RMSNorm (with its fused residual add), rotary embedding and the gated activation do a few
    FLOPs per byte, so their time is a kernel floor plus streaming their tensors once. Neither
    kind of kernel was profiled on its own in the aiconfigurator tables, so they take the
    GPU's measured GEMM memory side (its HBM fraction and per-kernel latency): the same
    streaming rate and launch floor as a weight-bound GEMM.
    """
    if profile is None:
        memory_frac, latency_s = _capped(1.0, memory_scale), 0.0
    else:
        curve = profile.gemm_curve("bf16")
        memory_frac, latency_s = _capped(curve.bandwidth_fraction, memory_scale), kernels * curve.latency_us * US
    memory_s = latency_s + bytes_moved / (hbm_bytes_per_s * memory_frac)
    return RooflineTime(memory_s, 0.0, memory_s)


def all_reduce_time_s(message_bytes: float, num_gpus: int, link_bandwidth_bytes_per_s: float, default_latency_s: float,
                      profile: KernelProfile | None, bandwidth_scale: float, latency_scale: float) -> float:
    """Seconds of one all-reduce of ``message_bytes`` over ``num_gpus`` GPUs (0 for one GPU).

    With a profile: ``latency x latency_scale + 2(n-1)/n x bytes / (bus fraction x bandwidth_scale
    x link bandwidth)`` from the fit of ``num_gpus``. Without: the ring formula with
    ``default_latency_s`` per step.
    """
    if num_gpus <= 1:
        return 0.0
    if profile is None:
        return ring_all_reduce_time_s(message_bytes, num_gpus, link_bandwidth_bytes_per_s * bandwidth_scale, default_latency_s * latency_scale)
    fit = profile.all_reduce_fit(num_gpus)
    bus_rate = link_bandwidth_bytes_per_s * fit.bus_bandwidth_fraction * bandwidth_scale
    return fit.latency_us * US * latency_scale + 2 * (num_gpus - 1) / num_gpus * message_bytes / bus_rate


def point_to_point_latency_s(default_latency_s: float, profile: KernelProfile | None) -> float:
    """Latency of one pipeline hop: half the measured 2-GPU all-reduce latency (one send instead of a
    send and a receive), else ``default_latency_s``."""
    if profile is None:
        return default_latency_s
    return profile.all_reduce_fit(2).latency_us * US / 2
