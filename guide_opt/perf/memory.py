"""Per-GPU memory of a replica: weights, KV cache, activations, engine reserve.

GUIDE's Model Analyzer (Section 3.3.1-3.3.2): the memory left after the weights bounds the
batch size (``max_batch``) and the sequence length (``max_sequence_length``). Here:

- weights: the most loaded GPU's share (TP shards heads, MLP columns and vocabulary; PP
  shards layers; expert parallelism places whole experts). Under weight quantization the
  embedding, the LM head and MoE routers stay 16-bit, as in FP8, AWQ and GPTQ checkpoints.
- KV cache: per GPU, rounded up to the engine's KV blocks, scaled by the H2O kept fraction;
  sliding-window layers hold at most their window (plus the block it straddles); MLA layers
  hold one latent per token.
- activations: the peak of one forward pass at the engine's token budget, the way vLLM sizes
  it (it profiles one ``max_num_batched_tokens`` pass with ``max_num_seqs`` logit rows at
  start-up and gives the KV cache the rest). It does not depend on the batch asked for.
- usable memory follows each engine's documented rule (``memory_fraction_of``): vLLM caps
  weights + activations + KV at a fraction of the device; SGLang's fraction covers weights + KV
  only, activations living in the remainder; TensorRT-LLM gives the KV cache a fraction of the
  memory still free after weights and activations.

Two questions are kept apart: whether a batch is *resident* (``fits``: every sequence's KV at
once, which the planner needs) and whether the engine *runs* (:func:`engine_start_reason`:
weights and workspace fit and the KV cache holds at least one whole request). A continuous-
batching engine given more sequences than its KV cache holds does not fail: it admits what
fits and queues the rest.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from guide_opt.hardware import GIB_BYTES
from guide_opt.perf.config import LOGIT_ELEMENT_BYTES, ServingConfig

#: Bytes of one element of the hidden states and MLP intermediates between kernels: 16-bit in
#: every scheme (FP8 and INT8 schemes quantize a GEMM's input inside the GEMM call).
ACTIVATION_ELEMENT_BYTES = 2.0


@dataclass(frozen=True)
class MemoryBreakdown:
    """Bytes on the most loaded GPU of a replica.

    ``usable_bytes`` is what the engine lets weights + KV + activations + reserve take, under
    its own memory rule; ``kv_pool_bytes`` what is left of it for the KV cache.
    """

    weights_bytes: float
    kv_cache_bytes: float
    activation_bytes: float
    reserve_bytes: float
    usable_bytes: float
    device_bytes: float

    @property
    def used_bytes(self) -> float:
        """Weights + KV cache + activations + runtime reserve."""
        return self.weights_bytes + self.kv_cache_bytes + self.activation_bytes + self.reserve_bytes

    @property
    def kv_pool_bytes(self) -> float:
        """Bytes the engine gives its KV cache (negative when weights and workspace do not fit)."""
        return self.usable_bytes - self.weights_bytes - self.activation_bytes - self.reserve_bytes

    @property
    def fits(self) -> bool:
        """True when the whole batch's KV cache is resident at once (used bytes within usable)."""
        return self.used_bytes <= self.usable_bytes

    @property
    def utilization(self) -> float:
        """Used bytes as a fraction of the device memory."""
        return self.used_bytes / self.device_bytes

    def as_gib(self) -> dict[str, float]:
        """The breakdown in GiB, for reports."""
        return {
            "weights_gib": self.weights_bytes / GIB_BYTES,
            "kv_cache_gib": self.kv_cache_bytes / GIB_BYTES,
            "activations_gib": self.activation_bytes / GIB_BYTES,
            "reserve_gib": self.reserve_bytes / GIB_BYTES,
            "used_gib": self.used_bytes / GIB_BYTES,
            "usable_gib": self.usable_bytes / GIB_BYTES,
            "device_gib": self.device_bytes / GIB_BYTES,
        }


def weight_bytes_per_gpu(config: ServingConfig) -> float:
    """Weight bytes on the most loaded GPU: its stage's layers and the larger of embedding / LM head, sharded by TP.

    Decoder-layer projections (attention, dense MLPs, experts) take the quantized width; the
    embedding, the LM head and the (replicated) MoE routers stay 16-bit.
    """
    llm, tp = config.llm, config.tp
    moe_layers = config.moe_layers_per_stage
    dense_layers = config.layers_per_stage - moe_layers
    attention = config.layers_per_stage * config.attention_params_per_gpu
    dense_mlp = dense_layers * llm.dense_mlp_params / tp
    moe_mlp = moe_layers * (config.routed_experts_per_gpu * llm.expert_params + llm.shared_expert_params / tp)
    quantized = attention + dense_mlp + moe_mlp
    embedding = llm.embedding_params / tp
    head = 0 if llm.tie_word_embeddings else llm.lm_head_params / tp
    edge = embedding + head if config.pp == 1 else max(embedding, head)
    unquantized = edge + moe_layers * llm.router_params
    return quantized * config.weight_bytes_per_param + unquantized * config.unquantized_weight_bytes_per_param


def kv_tokens_allocated(config: ServingConfig, sequence_tokens: int) -> float:
    """KV entries one sequence of ``sequence_tokens`` tokens holds in one layer: H2O-kept tokens rounded up to whole KV blocks."""
    block = config.framework.kv_block_size_tokens
    kept = math.ceil(sequence_tokens * config.h2o_kept_fraction)
    return math.ceil(kept / block) * block


def _windowed_tokens_allocated(config: ServingConfig, sequence_tokens: int) -> float:
    """KV entries a sliding-window layer holds: the blocks overlapping the last ``sliding_window`` tokens.

    Engines that free out-of-window blocks (vLLM's hybrid KV manager) keep ``ceil(window /
    block)`` blocks plus the one the window's start straddles.
    """
    full = kv_tokens_allocated(config, sequence_tokens)
    window = config.llm.sliding_window
    if window is None:
        return full
    return min(full, kv_tokens_allocated(config, window) + config.framework.kv_block_size_tokens)


def kv_bytes_per_sequence(config: ServingConfig, sequence_tokens: int) -> float:
    """KV-cache bytes one sequence of ``sequence_tokens`` tokens holds on one GPU of the most loaded stage."""
    sliding = config.sliding_layers_per_stage
    full_layers = config.layers_per_stage - sliding
    tokens = full_layers * kv_tokens_allocated(config, sequence_tokens) + sliding * _windowed_tokens_allocated(config, sequence_tokens)
    return tokens * config.kv_bytes_per_token_per_layer


def kv_cache_bytes(config: ServingConfig, batch: int, sequence_tokens: int) -> float:
    """KV-cache bytes on one GPU for ``batch`` sequences of ``sequence_tokens`` tokens each."""
    return batch * kv_bytes_per_sequence(config, sequence_tokens)


def _activation_tokens(config: ServingConfig) -> int:
    """Tokens of the largest step: the engine's token budget, or a whole prompt when prompts are not chunked."""
    return max(config.step_token_budget, config.input_tokens if config.framework.prefill_mode == "whole" else 0)


def _widest_intermediate_elements_per_token(config: ServingConfig) -> float:
    """Widest per-token intermediate of one layer on one GPU: QKV output, dense MLP gate+up, or routed experts' buffers.

    A fused MoE kernel keeps, per token, each of its top-k experts' gate+up output and down
    output (vLLM ``fused_moe`` intermediate caches), besides the shared experts' gate+up.
    """
    llm, tp = config.llm, config.tp
    qkv = config.heads_per_gpu * (llm.head_dim + llm.value_head_dim) + 2 * config.kv_heads_per_gpu * llm.head_dim
    widest = float(qkv)
    if llm.num_dense_mlp_layers:
        widest = max(widest, 2 * llm.intermediate_size / tp)
    if llm.is_moe:
        routed = llm.experts_per_token * (2 * llm.expert_intermediate_size / tp + llm.hidden_size)
        widest = max(widest, routed + 2 * llm.shared_expert_intermediate_size / tp)
    return widest


def activation_bytes(config: ServingConfig) -> float:
    """Transient activation workspace of the engine's largest step on one GPU (independent of the batch asked for).

    Hidden states in and out plus the widest intermediate, for the step's tokens, and fp32
    logit rows for ``min(max_num_seqs, tokens)`` sequences (vLLM samples one row per sequence
    when it profiles its peak).
    """
    llm = config.llm
    tokens = _activation_tokens(config)
    hidden_states = tokens * (2 * llm.hidden_size + _widest_intermediate_elements_per_token(config)) * ACTIVATION_ELEMENT_BYTES
    logits = min(config.framework.max_num_seqs, tokens) * llm.vocab_size / config.tp * LOGIT_ELEMENT_BYTES
    return hidden_states + logits


def usable_bytes(config: ServingConfig, weights_bytes: float, workspace_bytes: float) -> float:
    """Bytes the engine lets weights, KV cache, activations and reserve (``workspace_bytes``) take on one GPU.

    ``device``: a fraction of the device (vLLM ``--gpu-memory-utilization``, DeepSpeed).
    ``weights_and_kv``: the fraction covers weights and KV only; activations and reserve live in
    the rest of the device (SGLang ``--mem-fraction-static``).
    ``free_after_weights``: the KV cache gets the fraction of what is free after weights and
    workspace (TensorRT-LLM ``free_gpu_memory_fraction``).
    """
    device = config.gpu.memory_bytes
    fraction = config.memory_fraction
    rule = config.framework.memory_fraction_of
    if rule == "weights_and_kv":
        return min(device, device * fraction + workspace_bytes)
    if rule == "free_after_weights":
        free = device - weights_bytes - workspace_bytes
        return weights_bytes + workspace_bytes + fraction * free if free > 0 else device
    return device * fraction


def memory_breakdown(config: ServingConfig) -> MemoryBreakdown:
    """Per-GPU memory of ``config`` holding ``batch`` sequences of ``input_tokens + output_tokens``."""
    weights = weight_bytes_per_gpu(config)
    activations = activation_bytes(config)
    reserve = config.framework.runtime_reserve_gib * GIB_BYTES
    return MemoryBreakdown(
        weights_bytes=weights,
        kv_cache_bytes=kv_cache_bytes(config, config.batch, config.input_tokens + config.output_tokens),
        activation_bytes=activations,
        reserve_bytes=reserve,
        usable_bytes=usable_bytes(config, weights, activations + reserve),
        device_bytes=config.gpu.memory_bytes,
    )


def kv_budget_bytes(config: ServingConfig) -> float:
    """Bytes left for the KV cache after weights, activations and reserve (may be negative)."""
    return memory_breakdown(config).kv_pool_bytes


def max_batch(config: ServingConfig) -> int:
    """Largest batch whose KV cache is resident at ``input_tokens + output_tokens`` tokens per sequence (GUIDE 3.3.1)."""
    budget = kv_budget_bytes(config)
    if budget <= 0:
        return 0
    return math.floor(budget / kv_bytes_per_sequence(config, config.input_tokens + config.output_tokens))


def max_admitted_prompts(config: ServingConfig) -> int:
    """Most requests whose prompt (and first token) the KV cache holds at once: how many a burst gets admitted.

    Engines admit a waiting request when the blocks for its prompt are free (vLLM's scheduler,
    LMDeploy's TurboMind), not for its whole future length; sequences that later outgrow the
    cache are preempted. At least :func:`max_batch`.
    """
    budget = kv_budget_bytes(config)
    if budget <= 0:
        return 0
    return max(max_batch(config), math.floor(budget / kv_bytes_per_sequence(config, config.input_tokens + 1)))


def engine_start_reason(config: ServingConfig) -> str | None:
    """Why the engine cannot serve even one request of ``config`` (None when it can).

    An engine starts when weights, activation workspace and reserve fit in its usable memory,
    and serves a request when its KV cache holds that request whole (vLLM refuses to start when
    one ``max_model_len`` sequence does not fit its KV cache). Batches larger than the KV cache
    holds still run: the engine queues what does not fit.
    """
    m = memory_breakdown(config)
    gib = m.as_gib()
    if m.kv_pool_bytes <= 0:
        return (f"weights {gib['weights_gib']:.1f} GiB + activations {gib['activations_gib']:.1f} + reserve {gib['reserve_gib']:.1f} "
                f"per GPU exceed the {gib['usable_gib']:.1f} GiB usable")
    tokens = config.input_tokens + config.output_tokens
    one = kv_bytes_per_sequence(config, tokens)
    if one > m.kv_pool_bytes:
        return (f"one request of {tokens} tokens needs {one / GIB_BYTES:.2f} GiB of KV cache per GPU but only "
                f"{m.kv_pool_bytes / GIB_BYTES:.2f} GiB are left after weights, activations and reserve")
    return None


def max_sequence_length(config: ServingConfig) -> int:
    """Longest sequence (tokens) whose KV cache is resident for ``batch`` sequences (GUIDE 3.3.2), capped by the LLM's context."""
    budget = kv_budget_bytes(config)
    context = config.llm.max_position_embeddings
    if budget <= 0:
        return 0
    per_sequence = budget / config.batch
    if kv_bytes_per_sequence(config, context) <= per_sequence:
        return context
    low, high = 0, context  # invariant: low fits (0 tokens hold nothing), high does not
    while high - low > 1:
        mid = (low + high) // 2
        if kv_bytes_per_sequence(config, mid) <= per_sequence:
            low = mid
        else:
            high = mid
    return low
