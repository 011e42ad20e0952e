"""Fitted kernel efficiencies of one GPU (:class:`KernelProfile`), one YAML per GPU in ``hardware_db/kernels/``.

A profile replaces single efficiency scalars by small curves fitted to measured kernel
timings (``guide_opt.validation.kernel_fit`` writes them; the performance model evaluates them
in :mod:`guide_opt.perf.kernels`):

- GEMM, per compute dtype (``bf16``, ``fp8``): the achieved fraction of the dense tensor peak
  saturates in the number of tokens ``m`` and in the weight matrix size ``n x k``
  (``peak_fraction x m / (m + half_tokens) x nk / (nk + half_weight_elements)``); the
  memory side streams weights and activations at ``bandwidth_fraction`` of the HBM peak after a
  fixed ``latency_us`` (so small-M decode GEMMs are memory and latency bound).
- Attention: prefill compute at ``prefill_peak_fraction x q / (q + prefill_half_tokens)`` of the
  16-bit peak, with ``q`` the query tokens per sequence times the GQA group size (queries that
  share one KV head fill one tile); KV-cache traffic at ``decode_bandwidth_fraction`` of the HBM
  peak after ``latency_us`` -- for an FP8 cache at ``fp8_kv_decode_bandwidth_fraction`` where the
  GPU's FP8-cache kernels were measured (they dequantize while they read, which costs rate).
- All-reduce per number of GPUs (alpha-beta): ``latency_us + 2(n-1)/n x bytes / (bus_bandwidth_fraction
  x link bandwidth)``.

Which profile a GPU gets (:func:`guide_opt.catalog.kernel_profile_for`): its own file
``<gpu-id>.yaml`` when its kernels were measured, or when its curves were fitted end to end on
measured serving latencies (``mi300x.yaml``: no kernel tables exist for it, see
:mod:`guide_opt.validation.profile_fit`; its ``source`` says so); else ``generic-<link kind>.yaml`` (GEMM and
attention pooled over every measured GPU, collectives pooled over the measured GPUs with that
link kind -- on PCIe a GPU count keeps its own bus bandwidth only where two or more measured
systems support it, else the 2-GPU one, see
:func:`guide_opt.validation.kernel_fit.generic_all_reduce`); else ``generic-nvlink.yaml``. Efficiencies are fractions of the GPU's own datasheet
peaks and link bandwidth, so a pooled curve transfers to a GPU by its specs; latencies are
absolute.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, NonNegativeFloat, PositiveInt, model_validator

Fraction = Field(gt=0, le=1)


class GemmFit(BaseModel):
    """GEMM efficiency curve of one compute dtype.

    peak_fraction: asymptotic achieved / dense tensor peak FLOP/s at large ``m`` (0-1].
    half_tokens: tokens ``m`` at which the compute efficiency is half of ``peak_fraction``.
    bandwidth_fraction: achieved / peak HBM bandwidth when streaming weights and activations (0-1].
    latency_us: fixed time of one GEMM kernel (microseconds), added to its memory time.
    half_weight_elements: weight elements ``n x k`` of one GEMM at which the compute
        efficiency is half of its large-matrix value (small matrices leave SMs idle).
    activation_bytes_scale: extra HBM traffic per byte of GEMM input, in a pass serialized
        before the GEMM: large when the kernel quantizes its input on the fly (a per-tensor
        FP8 linear reads the bf16 input, finds its scale and writes it in FP8 first).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    peak_fraction: float = Fraction
    half_tokens: NonNegativeFloat
    bandwidth_fraction: float = Fraction
    latency_us: NonNegativeFloat
    activation_bytes_scale: NonNegativeFloat = 0.0
    half_weight_elements: NonNegativeFloat = 0.0


class AttentionFit(BaseModel):
    """Attention efficiency curves (FlashAttention-style fused kernels, 16-bit math).

    prefill_peak_fraction: asymptotic achieved / 16-bit tensor peak FLOP/s of long prefills (0-1].
    prefill_half_tokens: query rows per KV head and sequence (query tokens x GQA group) at which
        the compute efficiency is half of ``prefill_peak_fraction``.
    decode_bandwidth_fraction: achieved / peak HBM bandwidth reading a 16-bit KV cache (0-1].
    fp8_kv_decode_bandwidth_fraction: the same reading an FP8 KV cache, fitted where FP8-cache
        kernels were measured; ``None`` (GPUs whose tables have no FP8-cache rows, end-to-end
        fits): ``decode_bandwidth_fraction`` applies to both.
    latency_us: fixed time of one attention kernel (microseconds), added to its memory time.
    per_sequence_us: time per sequence in the batch (microseconds; page-table walks and
        per-sequence work items), added to the memory time.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    prefill_peak_fraction: float = Fraction
    prefill_half_tokens: NonNegativeFloat
    decode_bandwidth_fraction: float = Fraction
    fp8_kv_decode_bandwidth_fraction: float | None = Field(default=None, gt=0, le=1)
    latency_us: NonNegativeFloat
    per_sequence_us: NonNegativeFloat = 0.0

    def kv_bandwidth_fraction(self, fp8_kv_cache: bool) -> float:
        """The HBM fraction reading the KV cache: the FP8 one for an FP8 cache where fitted, else the 16-bit one."""
        if fp8_kv_cache and self.fp8_kv_decode_bandwidth_fraction is not None:
            return self.fp8_kv_decode_bandwidth_fraction
        return self.decode_bandwidth_fraction


class CollectiveFit(BaseModel):
    """Alpha-beta cost of an all-reduce over ``num_gpus`` GPUs of one node.

    latency_us: the fixed cost (alpha) of one all-reduce, microseconds.
    bus_bandwidth_fraction: achieved NCCL bus bandwidth / datasheet link bandwidth per direction,
        so the time of ``b`` bytes is ``latency + 2(n-1)/n x b / (fraction x link bandwidth)``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    num_gpus: PositiveInt
    latency_us: NonNegativeFloat
    bus_bandwidth_fraction: float = Field(gt=0, le=2)


class FitQuality(BaseModel):
    """How well a curve reproduces the rows it was fitted on: MAPE and bias of kernel time, percent."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    rows: PositiveInt
    mape_pct: float
    bias_pct: float


class KernelProfile(BaseModel):
    """Fitted kernel curves of one GPU (``scope: gpu``) or a pooled default (``scope: generic``).

    gemm: compute dtype (``bf16``, ``fp8``) -> curve; other dtypes (int8, int4) use ``fp8``'s
        curve when present for 8-bit and ``bf16``'s otherwise.
    all_reduce: one fit per measured GPU count; other counts use the nearest measured count.
    fitted_on: the data's GPU names the fit pooled (one for ``scope: gpu``).
    quality: in-sample fit quality per kernel kind (``gemm_bf16``, ``gemm_fp8``,
        ``attention_prefill``, ``attention_decode`` and its ``attention_decode_bf16_kv`` /
        ``attention_decode_fp8_kv`` parts, ``all_reduce``), or of the measured
        serving latency an end-to-end fit used (``end_to_end_batch_latency``).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9.\-]*$")
    scope: Literal["gpu", "generic"]
    source: str
    data_version: str
    fitted_utc: str
    fitted_on: list[str]
    gemm: dict[Literal["bf16", "fp8"], GemmFit]
    attention: AttentionFit
    all_reduce: list[CollectiveFit] = Field(min_length=1)
    quality: dict[str, FitQuality] = {}

    @model_validator(mode="after")
    def _has_bf16_and_distinct_counts(self) -> "KernelProfile":
        if "bf16" not in self.gemm:
            raise ValueError("gemm needs a bf16 curve (the fallback of every other dtype)")
        counts = [c.num_gpus for c in self.all_reduce]
        if len(set(counts)) != len(counts):
            raise ValueError(f"all_reduce lists a GPU count twice ({counts}); give one fit per count")
        return self

    def gemm_curve(self, compute_dtype: str) -> GemmFit:
        """The GEMM curve used for ``compute_dtype`` (bf16, fp8, int8, int4)."""
        if compute_dtype in ("fp8", "int8") and "fp8" in self.gemm:
            return self.gemm["fp8"]
        return self.gemm["bf16"]

    def all_reduce_fit(self, num_gpus: int) -> CollectiveFit:
        """The all-reduce fit for ``num_gpus`` GPUs: exact when measured, else the nearest measured count."""
        return min(self.all_reduce, key=lambda c: (abs(c.num_gpus - num_gpus), -c.num_gpus))
