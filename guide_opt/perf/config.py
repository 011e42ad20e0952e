"""The one configuration the performance model evaluates (:class:`ServingConfig`)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from guide_opt.frameworks import EfficiencyFactors, FrameworkProfile
from guide_opt.hardware import GpuSpec
from guide_opt.llm import LlmSpec
from guide_opt.quantization import KV_CACHE_DTYPE_BYTES, QuantizationSpec

#: Attention math always runs on the 16-bit tensor path (no FP8 attention assumed).
ATTENTION_COMPUTE_DTYPE = "bf16"
#: Bytes per element of activations exchanged by tensor-parallel all-reduces.
ALL_REDUCE_ELEMENT_BYTES = 2.0
#: Logits are produced in fp32.
LOGIT_ELEMENT_BYTES = 4.0


@dataclass(frozen=True)
class ServingConfig:
    """One replica of one LLM on ``tp x pp`` GPUs of one type, served by one engine.

    batch: concurrent sequences (static batch, or max-num-seqs under continuous batching).
    input_tokens / output_tokens: prompt and generated lengths per request.
    kv_cache_dtype: ``fp16`` or ``fp8``.
    flash_attention: fused attention (no materialized score matrix).
    h2o_kept_fraction: fraction of KV entries kept by H2O eviction (1.0 = no eviction).
    efficiency: overrides the framework's default efficiency factors (e.g. from calibration).
    max_num_batched_tokens: overrides the framework's per-step token budget.
    gpu_memory_utilization: overrides the framework's usable memory fraction.
    """

    llm: LlmSpec
    gpu: GpuSpec
    framework: FrameworkProfile
    quantization: QuantizationSpec
    tp: int = 1
    pp: int = 1
    batch: int = 1
    input_tokens: int = 512
    output_tokens: int = 128
    kv_cache_dtype: str = "fp16"
    flash_attention: bool = True
    h2o_kept_fraction: float = 1.0
    efficiency: EfficiencyFactors | None = None
    max_num_batched_tokens: int | None = None
    gpu_memory_utilization: float | None = None

    # ---- resolved engine settings -----------------------------------------------------------
    @property
    def factors(self) -> EfficiencyFactors:
        """Efficiency factors in force: the override, else the framework's defaults."""
        return self.efficiency or self.framework.efficiency

    @property
    def step_token_budget(self) -> int:
        """Maximum tokens processed in one engine step (chunk size / SplitFuse budget)."""
        return self.max_num_batched_tokens or self.framework.max_num_batched_tokens

    @property
    def memory_fraction(self) -> float:
        """Fraction of device memory the engine may use."""
        return self.gpu_memory_utilization or self.framework.gpu_memory_utilization

    @property
    def num_gpus(self) -> int:
        """GPUs in one replica (tp x pp)."""
        return self.tp * self.pp

    # ---- per-GPU shard sizes ------------------------------------------------------------------
    @property
    def layers_per_stage(self) -> int:
        """Decoder layers on the most loaded pipeline stage."""
        return math.ceil(self.llm.num_layers / self.pp)

    @property
    def heads_per_gpu(self) -> int:
        """Query heads on one GPU."""
        return math.ceil(self.llm.num_attention_heads / self.tp)

    @property
    def kv_heads_per_gpu(self) -> int:
        """KV heads on one GPU (replicated when there are fewer KV heads than GPUs)."""
        return math.ceil(self.llm.num_kv_heads / self.tp)

    @property
    def kv_bytes_per_token_per_layer(self) -> float:
        """KV-cache bytes one token adds to one layer on one GPU (K and V)."""
        return 2 * self.kv_heads_per_gpu * self.llm.head_dim * KV_CACHE_DTYPE_BYTES[self.kv_cache_dtype]

    @property
    def kv_bytes_per_token(self) -> float:
        """KV-cache bytes one token adds on one GPU of the most loaded stage."""
        return self.layers_per_stage * self.kv_bytes_per_token_per_layer

    def unsupported_reason(self) -> str | None:
        """Why this configuration cannot run at all (None when it can).

        Checks: TP divides the attention heads, TP fits in one node, PP does not exceed the
        layer count, the engine runs on this GPU's architecture and runs the quantization there
        (``hardware_db/frameworks``), the GPU has the tensor path the quantization needs,
        positive sizes.
        The LLM's context length is a separate question (:meth:`context_reason`): hardware can
        run longer sequences, so benchmarks that did are still evaluated.
        """
        llm, gpu = self.llm, self.gpu
        if self.tp < 1 or self.pp < 1 or self.batch < 1 or self.input_tokens < 1 or self.output_tokens < 1:
            return "tp, pp, batch, input_tokens and output_tokens must all be at least 1"
        if llm.num_attention_heads % self.tp:
            return f"TP={self.tp} does not divide the {llm.num_attention_heads} attention heads of {llm.id}"
        if self.llm.num_kv_heads >= self.tp and llm.num_kv_heads % self.tp:
            return f"TP={self.tp} does not divide the {llm.num_kv_heads} KV heads of {llm.id}"
        if self.tp > gpu.gpus_per_node:
            return f"TP={self.tp} exceeds the {gpu.gpus_per_node} GPUs of one {gpu.id} node"
        if self.pp > llm.num_layers:
            return f"PP={self.pp} exceeds the {llm.num_layers} layers of {llm.id}"
        if gpu.peak_flops_per_s(self.quantization.compute_dtype) is None:
            return f"{gpu.id} has no {self.quantization.compute_dtype} tensor cores needed by {self.quantization.id}"
        if self.kv_cache_dtype == "fp8" and gpu.fp8_dense_tflops is None:
            return f"{gpu.id} has no FP8 support for an fp8 KV cache"
        engine = self.framework.unsupported_reason(gpu.id, gpu.architecture, self.quantization.id)
        if engine:
            return engine
        if not 0 < self.h2o_kept_fraction <= 1:
            return "h2o_kept_fraction must be in (0, 1]"
        return None

    def context_reason(self) -> str | None:
        """Why a request of ``input_tokens + output_tokens`` is beyond the LLM's context (None when it fits).

        Planning and the CLI refuse such requests; the performance model itself would still
        evaluate them (public benchmarks sometimes run past the nominal context).
        """
        total = self.input_tokens + self.output_tokens
        if total > self.llm.max_position_embeddings:
            return (f"{self.input_tokens} input + {self.output_tokens} output tokens exceed the context of {self.llm.id} "
                    f"({self.llm.max_position_embeddings} tokens)")
        return None
