"""The one configuration the performance model evaluates (:class:`ServingConfig`).

Besides the engine settings, it resolves the per-GPU shards the memory and step models share:
attention parameters and KV heads per GPU (TP shards heads; MLA's latent KV is replicated),
experts per GPU (TP shards every expert's columns; expert parallelism places whole experts),
and the bytes of one stored weight (a pre-quantized checkpoint's own format wins over the
serving scheme's nominal width).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from guide_opt.frameworks import EfficiencyFactors, FrameworkProfile
from guide_opt.hardware import GpuSpec
from guide_opt.llm import UNQUANTIZED_WEIGHT_BYTES, LlmSpec
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
    expert_parallel: MoE experts are placed whole, ``num_experts / tp`` per GPU (EP = TP, as
        vLLM's ``--enable-expert-parallel`` and SGLang's ``--ep-size`` equal to ``--tp``), instead
        of every expert's columns being split over the TP GPUs. Attention stays tensor-parallel.
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
    expert_parallel: bool = False

    # ---- resolved engine settings -----------------------------------------------------------
    @property
    def factors(self) -> EfficiencyFactors:
        """Efficiency factors in force: the override, else the framework's defaults on this GPU's architecture."""
        return self.efficiency or self.framework.efficiency_on(self.gpu.architecture)

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
    def attention_params_per_gpu(self) -> int:
        """Attention projection parameters of one layer on one GPU."""
        return self.llm.attention_params(self.heads_per_gpu, self.kv_heads_per_gpu)

    @property
    def output_projection_params_per_gpu(self) -> int:
        """Parameters of one layer's output projection on one GPU (its heads' values -> hidden)."""
        return self.heads_per_gpu * self.llm.value_head_dim * self.llm.hidden_size

    @property
    def routed_experts_per_gpu(self) -> float:
        """Routed experts' worth of weights on one GPU: whole experts under expert parallelism, else a 1/tp slice of each."""
        experts = self.llm.num_experts
        return math.ceil(experts / self.tp) if self.expert_parallel else experts / self.tp

    @property
    def weight_bytes_per_param(self) -> float:
        """Bytes of one quantized weight: the checkpoint's own format when pre-quantized, else the scheme's."""
        checkpoint = self.llm.checkpoint_quantization
        return checkpoint.weight_bytes_per_param if checkpoint else self.quantization.weight_bytes_per_param

    @property
    def unquantized_weight_bytes_per_param(self) -> float:
        """Bytes of one weight that stays 16-bit under any scheme (embedding, LM head, routers)."""
        return UNQUANTIZED_WEIGHT_BYTES

    @property
    def kv_bytes_per_token_per_layer(self) -> float:
        """KV-cache bytes one token adds to one layer on one GPU.

        K and V of this GPU's KV heads; for MLA, the whole latent (``kv_lora_rank +
        qk_rope_head_dim``), which every TP GPU stores in full (vLLM's MLA cache has one KV head).
        """
        element_bytes = KV_CACHE_DTYPE_BYTES[self.kv_cache_dtype]
        if self.llm.is_mla:
            return self.llm.kv_cache_elements_per_token_per_layer * element_bytes
        return 2 * self.kv_heads_per_gpu * self.llm.head_dim * element_bytes

    @property
    def kv_reads_per_token(self) -> float:
        """Times a decode step's attention reads each cached KV token: ``g ** exponent`` for a GQA cache, else 1.

        ``g`` = query heads per KV head on one GPU; the exponent is the engine's
        ``gqa_kv_reread_exponent`` (see :class:`~guide_opt.frameworks.EfficiencyFactors`).
        MLA caches are read once, and FP8 caches where the engine's ``gqa_kv_reread_fp8_cache`` is off.
        """
        f = self.factors
        if f.gqa_kv_reread_exponent == 0 or self.llm.is_mla or (self.kv_cache_dtype == "fp8" and not f.gqa_kv_reread_fp8_cache):
            return 1.0
        return (self.heads_per_gpu / self.kv_heads_per_gpu) ** f.gqa_kv_reread_exponent

    @property
    def kv_read_at_fp8_rate(self) -> bool:
        """Whether a decode step reads the KV cache at the GPU's FP8-cache HBM fraction: an FP8 cache, read by an engine
        whose kernel does not stream it at the 16-bit rate (``fp8_kv_cache_at_16bit_rate``, see
        :class:`~guide_opt.frameworks.EfficiencyFactors`)."""
        return self.kv_cache_dtype == "fp8" and not self.factors.fp8_kv_cache_at_16bit_rate

    @property
    def kv_bytes_per_token(self) -> float:
        """KV-cache bytes one token adds on one GPU of the most loaded stage (every layer holding it)."""
        return self.layers_per_stage * self.kv_bytes_per_token_per_layer

    @property
    def sliding_layers_per_stage(self) -> int:
        """Sliding-window layers on the most loaded stage (the fewest: global layers hold more KV)."""
        return math.floor(self.layers_per_stage * self.llm.num_sliding_layers / self.llm.num_layers)

    @property
    def moe_layers_per_stage(self) -> int:
        """MoE layers on the most loaded stage (as many as it can hold: they are the heavier layers)."""
        return min(self.layers_per_stage, self.llm.num_moe_layers)

    def unsupported_reason(self) -> str | None:
        """Why this configuration cannot run at all (None when it can).

        Checks: TP divides the attention heads and divides (or is a multiple of) the KV heads, TP
        fits in one node, PP does not exceed the layer count, the engine runs on this GPU's
        architecture and runs the quantization there (``hardware_db/frameworks``), the GPU has the
        tensor path the quantization needs, a pre-quantized checkpoint is served with its own
        scheme, the engine has an fp8 KV cache on this GPU when asked, expert parallelism only for
        MoE, positive sizes.
        The LLM's context length is a separate question (:meth:`context_reason`): hardware can
        run longer sequences, so benchmarks that did are still evaluated.
        """
        llm, gpu = self.llm, self.gpu
        if self.tp < 1 or self.pp < 1 or self.batch < 1 or self.input_tokens < 1 or self.output_tokens < 1:
            return "tp, pp, batch, input_tokens and output_tokens must all be at least 1"
        if llm.num_attention_heads % self.tp:
            return f"TP={self.tp} does not divide the {llm.num_attention_heads} attention heads of {llm.id}"
        if not llm.is_mla and self.tp <= llm.num_kv_heads and llm.num_kv_heads % self.tp:
            return f"TP={self.tp} does not divide the {llm.num_kv_heads} KV heads of {llm.id}"
        if not llm.is_mla and self.tp > llm.num_kv_heads and self.tp % llm.num_kv_heads:
            # Engines replicate KV heads only in whole copies (vLLM: tp % num_kv_heads == 0).
            return f"TP={self.tp} is not a multiple of the {llm.num_kv_heads} KV heads of {llm.id}, so they cannot be replicated evenly"
        if self.expert_parallel and not llm.is_moe:
            return f"expert parallelism needs a mixture-of-experts LLM; {llm.id} is dense"
        checkpoint = llm.checkpoint_quantization
        if checkpoint and self.quantization.id != checkpoint.scheme_id:
            return (f"{llm.id} is a pre-quantized {checkpoint.method} checkpoint: serve it with quantization "
                    f"{checkpoint.scheme_id}, not {self.quantization.id}")
        if self.tp > gpu.gpus_per_node:
            return f"TP={self.tp} exceeds the {gpu.gpus_per_node} GPUs of one {gpu.id} node"
        if self.pp > llm.num_layers:
            return f"PP={self.pp} exceeds the {llm.num_layers} layers of {llm.id}"
        if gpu.peak_flops_per_s(self.quantization.compute_dtype) is None:
            return f"{gpu.id} has no {self.quantization.compute_dtype} tensor cores needed by {self.quantization.id}"
        if self.kv_cache_dtype == "fp8" and not self.fp8_kv_cache_supported:
            return f"{self.framework.id} has no fp8 KV cache on {gpu.id} ({gpu.architecture})"
        engine = self.framework.unsupported_reason(gpu.id, gpu.architecture, self.quantization.id)
        if engine:
            return engine
        if not 0 < self.h2o_kept_fraction <= 1:
            return "h2o_kept_fraction must be in (0, 1]"
        return None

    @property
    def fp8_kv_cache_supported(self) -> bool:
        """Whether the engine can keep an fp8 KV cache on this GPU.

        GPUs with FP8 tensor cores do natively; on Ampere, engines that store fp8 and
        dequantize to 16-bit inside the attention kernel (``fp8_kv_cache_on_ampere``) do too:
        the KV bytes halve while attention math stays 16-bit.
        """
        if self.gpu.fp8_dense_tflops is not None:
            return True
        return self.gpu.architecture == "ampere" and self.framework.fp8_kv_cache_on_ampere

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
