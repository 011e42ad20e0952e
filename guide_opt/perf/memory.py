"""Per-GPU memory of a replica: weights, KV cache, activations, engine reserve.

GUIDE's Model Analyzer (Section 3.3.1-3.3.2): the memory left after the weights bounds the
batch size (``max_batch``) and the sequence length (``max_sequence_length``). Here the KV
cache is sized per GPU (TP shards KV heads, PP shards layers), rounded up to the engine's
KV block size, scaled by the H2O kept fraction, and the engine's usable-memory fraction,
activation workspace and runtime reserve are taken off first.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from guide_opt.hardware import GIB_BYTES
from guide_opt.perf.config import LOGIT_ELEMENT_BYTES, ServingConfig


@dataclass(frozen=True)
class MemoryBreakdown:
    """Bytes on the most loaded GPU of a replica."""

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
    def fits(self) -> bool:
        """True when the used bytes fit in the engine's usable memory."""
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
    """Weight bytes on the most loaded GPU: its stage's layers and the larger of embedding / LM head, sharded by TP."""
    llm = config.llm
    q_cols = config.heads_per_gpu * llm.head_dim
    kv_cols = config.kv_heads_per_gpu * llm.head_dim
    attention = llm.hidden_size * (q_cols + 2 * kv_cols) + q_cols * llm.hidden_size
    mlp = llm.mlp_params_per_layer / config.tp
    layer_params = config.layers_per_stage * (attention + mlp)
    embedding = llm.embedding_params / config.tp
    head = 0 if llm.tie_word_embeddings else llm.lm_head_params / config.tp
    edge_params = embedding + head if config.pp == 1 else max(embedding, head)
    return (layer_params + edge_params) * config.quantization.weight_bytes_per_param


def kv_tokens_allocated(config: ServingConfig, sequence_tokens: int) -> float:
    """KV entries one sequence of ``sequence_tokens`` tokens holds: H2O-kept tokens rounded up to whole KV blocks."""
    block = config.framework.kv_block_size_tokens
    kept = math.ceil(sequence_tokens * config.h2o_kept_fraction)
    return math.ceil(kept / block) * block


def kv_cache_bytes(config: ServingConfig, batch: int, sequence_tokens: int) -> float:
    """KV-cache bytes on one GPU for ``batch`` sequences of ``sequence_tokens`` tokens each (linear in both)."""
    return batch * kv_tokens_allocated(config, sequence_tokens) * config.kv_bytes_per_token


def _activation_tokens(config: ServingConfig) -> int:
    """Tokens of the largest step: the engine's token budget, or a whole prompt when prompts are not chunked."""
    return max(config.step_token_budget, config.input_tokens if config.framework.prefill_mode == "whole" else 0)


def activation_bytes(config: ServingConfig) -> float:
    """Transient activation workspace of the largest step (the engine's token budget) on one GPU."""
    llm = config.llm
    tokens = _activation_tokens(config)
    widest = max((config.heads_per_gpu + 2 * config.kv_heads_per_gpu) * llm.head_dim, 2 * llm.intermediate_size / config.tp)
    hidden_states = tokens * (2 * llm.hidden_size + widest) * config.quantization.activation_bytes
    logits = min(config.batch, tokens) * llm.vocab_size / config.tp * LOGIT_ELEMENT_BYTES
    return hidden_states + logits


def memory_breakdown(config: ServingConfig) -> MemoryBreakdown:
    """Per-GPU memory of ``config`` holding ``batch`` sequences of ``input_tokens + output_tokens``."""
    gpu = config.gpu
    return MemoryBreakdown(
        weights_bytes=weight_bytes_per_gpu(config),
        kv_cache_bytes=kv_cache_bytes(config, config.batch, config.input_tokens + config.output_tokens),
        activation_bytes=activation_bytes(config),
        reserve_bytes=config.framework.runtime_reserve_gib * GIB_BYTES,
        usable_bytes=gpu.memory_bytes * config.memory_fraction,
        device_bytes=gpu.memory_bytes,
    )


def kv_budget_bytes(config: ServingConfig) -> float:
    """Bytes left for the KV cache after weights, activations and reserve (may be negative)."""
    m = memory_breakdown(config)
    return m.usable_bytes - m.weights_bytes - m.activation_bytes - m.reserve_bytes


def max_batch(config: ServingConfig) -> int:
    """Largest batch whose KV cache fits at ``input_tokens + output_tokens`` tokens per sequence (GUIDE 3.3.1)."""
    per_sequence = kv_cache_bytes(config, 1, config.input_tokens + config.output_tokens)
    # The logit rows of the activation workspace grow with the batch (up to the step's tokens),
    # so the budget is taken before them and each sequence pays its row as well as its KV.
    tokens = _activation_tokens(config)
    logit_row = config.llm.vocab_size / config.tp * LOGIT_ELEMENT_BYTES
    budget = kv_budget_bytes(config) + min(config.batch, tokens) * logit_row
    batch = math.floor(budget / (per_sequence + logit_row))
    if batch >= tokens:  # past the step's tokens the logit rows stop growing
        batch = math.floor((budget - tokens * logit_row) / per_sequence)
    return max(0, batch)


def max_sequence_length(config: ServingConfig) -> int:
    """Longest sequence (tokens) whose KV cache fits for ``batch`` sequences (GUIDE 3.3.2), capped by the LLM's context."""
    block = config.framework.kv_block_size_tokens
    budget = kv_budget_bytes(config)
    if budget <= 0:
        return 0
    kept_tokens = math.floor(budget / (config.batch * config.kv_bytes_per_token) / block) * block
    return max(0, min(math.floor(kept_tokens / config.h2o_kept_fraction), config.llm.max_position_embeddings))
