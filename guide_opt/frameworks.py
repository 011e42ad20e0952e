"""Serving-engine profiles (:class:`FrameworkProfile`), one YAML per engine in ``hardware_db/frameworks/``.

A profile holds what the performance model needs to know about an engine: how much device
memory it lets the KV cache use, its KV block granularity, how it schedules prefill
(whole prompts, chunked prefill, or DeepSpeed-FastGen's dynamic SplitFuse), its per-step
scheduler overhead, its *default* efficiency factors, and where it runs: the GPU
architectures it supports (``architectures``) and, per quantization scheme, the
architectures on which it runs that scheme (``quantizations``), each with a source.
:meth:`FrameworkProfile.unsupported_reason` applies them; every verb reaches it through
:meth:`guide_opt.perf.ServingConfig.unsupported_reason`. The defaults are documented
starting points, not fitted values; calibration (``guide-opt calibrate``) replaces them.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, model_validator


class EfficiencyFactors(BaseModel):
    """How an engine departs from the GPU's measured kernels, and its fixed per-step costs.

    The achieved fractions of the peaks come from the GPU's fitted kernel curves
    (:mod:`guide_opt.perf.kernels`); these factors multiply them (1.0 = the kernels as
    measured; the product never exceeds the peak). For a GPU without curves they are the
    achieved fractions themselves.

    compute_efficiency: multiplier on the tensor-core efficiency of GEMMs and attention (0-1].
    memory_efficiency: multiplier on the HBM efficiency of weight and KV-cache streaming (0-1].
    communication_efficiency: multiplier on the measured all-reduce bus bandwidth (0-1].
    step_overhead_ms: CPU-side scheduling and launch time added to every engine step.
    collective_latency_scale: multiplier on the measured all-reduce latency (an engine with
        its own small-message all-reduce is below 1). Fitted by ``guide-opt calibrate`` where
        rows with TP > 1 were measured.
    sequence_overhead_us: host time per sequence in the step, every step: the engine's
        scheduler, the per-request input tensors (positions, block tables, sampling
        parameters), sampling and detokenizing each request's token run on the CPU between
        GPU steps, so a step of 64 sequences waits longer than one of 1 while the kernels
        barely change. Kept at the profile's value by ``guide-opt calibrate``.
    tp_step_overhead_ms: host time per step added when the replica spans several GPUs
        (TP > 1 or PP > 1): the driver process hands every step's batch to the other ranks'
        workers (vLLM broadcasts the step's inputs, TensorRT-LLM's ranks synchronise the
        step's requests) before the first kernel runs. Kept at the profile's value by
        ``guide-opt calibrate``.
    gqa_kv_reread_exponent: how often a decode step's attention reads each KV head's
        cache when several query heads share it (grouped-query attention, ``g`` query heads
        per KV head): ``g ** exponent`` times. 0 = once per group (FlashAttention, FlashInfer,
        TensorRT-LLM's XQA kernels load a KV head once for all its query heads); 1 = once per
        query head (a masked multi-head attention kernel, one thread block per query head,
        with no reuse through L2). Fitted with the host costs (:mod:`guide_opt.validation.host_costs`);
        kept at the profile's value by ``guide-opt calibrate``.
    gqa_kv_reread_fp8_cache: whether an FP8 cache is re-read like a 16-bit one. False where the
        engine runs every FP8 cache with a kernel that loads a KV head once per group
        (TensorRT-LLM always uses XQA for it: its masked MHA kernel does not take 16-bit
        queries over an FP8 cache).
    fp8_kv_cache_at_16bit_rate: whether the engine's decode attention streams an FP8 cache at
        the GPU's 16-bit-cache HBM fraction rather than at its measured FP8-cache fraction
        (:attr:`~guide_opt.kernel_profile.AttentionFit.fp8_kv_decode_bandwidth_fraction`, fitted
        on vLLM's kernels: on Hopper FlashAttention-3 with an FP8 cache also quantizes the
        queries and reads at 0.71 (H100) and 0.55 (H200) of the HBM peak against 0.92 and 0.88 for a
        16-bit cache). True
        where the engine reads FP8 K/V with 16-bit queries in a kernel of its own.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    compute_efficiency: float = Field(gt=0, le=1)
    memory_efficiency: float = Field(gt=0, le=1)
    communication_efficiency: float = Field(gt=0, le=1)
    step_overhead_ms: float = Field(ge=0)
    collective_latency_scale: float = Field(default=1.0, gt=0, le=10)
    sequence_overhead_us: float = Field(default=0.0, ge=0)
    tp_step_overhead_ms: float = Field(default=0.0, ge=0)
    gqa_kv_reread_exponent: float = Field(default=0.0, ge=0, le=1)
    gqa_kv_reread_fp8_cache: bool = True
    fp8_kv_cache_at_16bit_rate: bool = False


class EagerLaunch(BaseModel):
    """The host launch work of an engine that runs its forward pass eagerly (no CUDA graphs).

    Python issues every kernel of every layer from the host, one after another; the GPU runs
    them as they arrive. When the kernels are shorter than their launches the GPU waits, so a
    forward pass takes ``max(GPU time, launch time)``, never their sum (the host runs ahead of
    a busy GPU). Launch time per layer on one replica:
    ``kernels_per_layer x launch_us`` plus, on a multi-GPU replica, ``rank_sync_us`` for each of
    the layer's two tensor-parallel all-reduces (every rank launches its own kernels from its
    own process; an all-reduce starts only when the last rank has reached it).

    kernels_per_layer: kernels one decoder layer launches (count them in the engine's model code).
    launch_us: host time per kernel launch, the Python module and dispatcher time included (us).
    rank_sync_us: host time per all-reduce on a multi-GPU replica (us): the collective's own
        launch and the wait for the slowest rank.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    kernels_per_layer: PositiveInt
    launch_us: float = Field(ge=0)
    rank_sync_us: float = Field(default=0.0, ge=0)


class FrameworkProfile(BaseModel):
    """A serving engine as the performance model and simulator see it.

    prefill_mode: ``whole`` (each prompt prefilled in one step), ``chunked`` (prompts split
    into chunks of at most ``max_num_batched_tokens`` tokens per step, mixed with decodes) or
    ``split_fuse`` (DeepSpeed-FastGen: every step filled to a fixed token budget).
    ``memory_fraction_of``: what ``gpu_memory_utilization`` is a fraction of: the ``device``
    (vLLM: weights + activations + KV within it), the static pool of ``weights_and_kv`` (SGLang:
    activations outside it), or the memory ``free_after_weights`` and activations (TensorRT-LLM:
    the KV cache takes that share). Needs a ``sources`` entry unless ``device``.
    ``fp8_kv_cache_on_ampere``: the engine stores an fp8 KV cache on GPUs without FP8 tensor
    cores (Ampere) and dequantizes it inside attention (needs a ``sources`` entry when true).
    ``eager_launch``: the host launch floor of an engine without CUDA graphs (:class:`EagerLaunch`;
    needs a ``sources`` entry). Only the TGIS batcher (:mod:`guide_opt.validation.tgis`) applies
    it; the step model and the simulator leave it out.
    ``efficiency_by_architecture``: default factors that replace ``efficiency`` on the GPUs of an
    architecture, for an engine whose kernels fall short of one architecture's measured curves
    by more than of another's (:meth:`efficiency_on`; needs a ``sources`` entry).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9.\-]*$")
    name: str
    gpu_memory_utilization: float = Field(gt=0, le=1)
    kv_block_size_tokens: PositiveInt
    runtime_reserve_gib: float = Field(ge=0)
    prefill_mode: Literal["whole", "chunked", "split_fuse"]
    max_num_batched_tokens: PositiveInt
    max_num_seqs: PositiveInt
    cuda_graphs: bool
    eager_launch: EagerLaunch | None = None
    fp8_kv_cache_on_ampere: bool = False
    memory_fraction_of: Literal["device", "weights_and_kv", "free_after_weights"] = "device"
    efficiency: EfficiencyFactors
    efficiency_by_architecture: dict[str, EfficiencyFactors] = {}
    architectures: tuple[str, ...] = Field(min_length=1)
    quantizations: dict[str, tuple[str, ...]] = Field(min_length=1)
    sources: dict[str, str]

    def efficiency_on(self, architecture: str) -> EfficiencyFactors:
        """The default efficiency factors on a GPU of ``architecture``."""
        return self.efficiency_by_architecture.get(architecture, self.efficiency)

    def unsupported_reason(self, gpu_id: str, architecture: str, quantization_id: str) -> str | None:
        """Why this engine cannot serve ``quantization_id`` on a GPU of ``architecture`` (None when it can)."""
        if architecture not in self.architectures:
            return (f"{self.id} does not run on {gpu_id} ({architecture} architecture); it runs on "
                    f"{', '.join(self.architectures)}")
        runs_on = self.quantizations.get(quantization_id, ())
        if architecture not in runs_on:
            where = f"only on {', '.join(runs_on)}" if runs_on else "on no GPU"
            return f"{self.id} runs {quantization_id} {where}, not on {gpu_id} ({architecture})"
        return None

    @model_validator(mode="after")
    def _sourced(self) -> "FrameworkProfile":
        named = {"quantizations": {a for archs in self.quantizations.values() for a in archs},
                 "efficiency_by_architecture": set(self.efficiency_by_architecture)}
        for field, architectures in named.items():
            stray = sorted(architectures - set(self.architectures))
            if stray:
                raise ValueError(f"{field} names architectures {', '.join(stray)} missing from architectures")
        needed = {"gpu_memory_utilization", "kv_block_size_tokens", "prefill_mode", "max_num_batched_tokens", "max_num_seqs", "efficiency",
                  "architectures", "quantizations"}
        if self.fp8_kv_cache_on_ampere:
            needed.add("fp8_kv_cache_on_ampere")
        if self.memory_fraction_of != "device":
            needed.add("memory_fraction_of")
        if self.eager_launch is not None:
            needed.add("eager_launch")
        if self.efficiency_by_architecture:
            needed.add("efficiency_by_architecture")
        missing = sorted(needed - set(self.sources))
        if missing:
            raise ValueError(f"sources is missing {', '.join(missing)}; cite the engine documentation or say 'default chosen by guide-opt'")
        return self

