"""Time of one engine step: per-operator roofline of a decoder layer, plus communication.

An engine step processes ``new_tokens`` tokens from ``sequences`` sequences. Its shape is a
:class:`StepShape`; :func:`step_time` returns a :class:`StepTime` for one replica. The same
function serves prefill (many new tokens per sequence), decode (one per sequence), chunked
prefill and mixed SplitFuse steps, so the static estimator and the simulator agree by
construction.

Per layer and GPU (TP shards heads and MLP columns): QKV projection, attention, output
projection and MLP (dense, SwiGLU, or MoE top-k) each take
``max(FLOPs / compute rate, bytes / memory rate)``; the LM head runs once per step on the
last stage. Tensor parallelism adds two ring all-reduces per layer; pipeline parallelism
splits the batch into micro-batches that flow through the stages.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from guide_opt.perf.communication import point_to_point_time_s, ring_all_reduce_time_s
from guide_opt.perf.config import ALL_REDUCE_ELEMENT_BYTES, ATTENTION_COMPUTE_DTYPE, LOGIT_ELEMENT_BYTES, ServingConfig
from guide_opt.perf.roofline import Bound, RooflineTime, roofline_time

#: Bytes per element of a materialized attention score matrix (no FlashAttention).
SCORE_ELEMENT_BYTES = 2.0


@dataclass(frozen=True)
class StepShape:
    """The work of one engine step.

    new_tokens: tokens whose hidden states are computed this step.
    sequences: sequences those tokens belong to (one logit row each).
    attended_tokens: sum over new tokens of the context length each attends to
        (decode: the sum of context lengths; a whole prompt of s tokens: s(s+1)/2).
    kv_read_tokens: tokens of earlier KV cache read from HBM (decode: the sum of contexts;
        a first prefill chunk: 0).
    """

    new_tokens: int
    sequences: int
    attended_tokens: float
    kv_read_tokens: float

    @staticmethod
    def decode(batch: int, context_tokens_per_sequence: float) -> "StepShape":
        """One decode step of ``batch`` sequences, each with ``context_tokens_per_sequence`` tokens of context."""
        context = batch * context_tokens_per_sequence
        return StepShape(batch, batch, context, context)

    @staticmethod
    def prefill_chunk(sequences: int, chunk_tokens: int, prior_tokens: int = 0) -> "StepShape":
        """Prefill of ``chunk_tokens`` new tokens for each of ``sequences`` sequences that already hold ``prior_tokens``."""
        attended_per_seq = chunk_tokens * prior_tokens + chunk_tokens * (chunk_tokens + 1) / 2
        return StepShape(sequences * chunk_tokens, sequences, sequences * attended_per_seq, sequences * prior_tokens)

    def split(self, parts: int) -> "StepShape":
        """The shape of one of ``parts`` equal micro-batches of this step."""
        return StepShape(
            math.ceil(self.new_tokens / parts),
            math.ceil(self.sequences / parts),
            self.attended_tokens / parts,
            self.kv_read_tokens / parts,
        )


@dataclass(frozen=True)
class StepTime:
    """Seconds of one engine step of one replica, split by resource.

    compute_s / memory_s: sum over operators of the roofline time, attributed to the bound
    each operator hit; network_s: all-reduces and pipeline hops; overhead_s: per-step
    scheduler cost. ``time_s`` is their sum (with pipeline scaling applied).
    """

    time_s: float
    compute_s: float
    memory_s: float
    network_s: float
    overhead_s: float

    @property
    def bound(self) -> Bound:
        """The resource with the largest share of the step."""
        shares = {Bound.COMPUTE: self.compute_s, Bound.MEMORY: self.memory_s, Bound.NETWORK: self.network_s, Bound.OVERHEAD: self.overhead_s}
        return max(shares, key=shares.__getitem__)


def _rates(config: ServingConfig) -> tuple[float, float, float]:
    """Effective (GEMM FLOP/s, attention FLOP/s, HBM bytes/s) of one GPU."""
    f = config.factors
    gemm_peak = config.gpu.peak_flops_per_s(config.quantization.compute_dtype)
    attention_peak = config.gpu.peak_flops_per_s(ATTENTION_COMPUTE_DTYPE)
    assert gemm_peak is not None and attention_peak is not None, config.unsupported_reason()
    gemm_rate = gemm_peak * f.compute_efficiency / config.quantization.dequant_compute_factor
    return gemm_rate, attention_peak * f.compute_efficiency, config.gpu.hbm_bandwidth_bytes_per_s * f.memory_efficiency


def _experts_touched(num_experts: int, experts_per_token: int, tokens: int) -> float:
    """Expected distinct experts hit by ``tokens`` tokens routed uniformly to top-k of ``num_experts``."""
    if num_experts == 1:
        return 1.0
    return num_experts * (1.0 - (1.0 - experts_per_token / num_experts) ** tokens)


def layer_operator_times(config: ServingConfig, shape: StepShape) -> dict[str, RooflineTime]:
    """Roofline time of each operator of one decoder layer on one GPU for ``shape``."""
    llm, q = config.llm, config.quantization
    gemm_rate, attention_rate, hbm_rate = _rates(config)
    tokens = shape.new_tokens
    wb, ab = q.weight_bytes_per_param, q.activation_bytes
    hidden = llm.hidden_size
    q_cols = config.heads_per_gpu * llm.head_dim
    kv_cols = config.kv_heads_per_gpu * llm.head_dim
    qkv_cols = q_cols + 2 * kv_cols

    def gemm(rows: int, in_features: int, out_features: int, weight_params: float) -> RooflineTime:
        flops = 2.0 * rows * in_features * out_features
        bytes_moved = weight_params * wb + rows * (in_features + out_features) * ab
        return roofline_time(flops, bytes_moved, gemm_rate, hbm_rate)

    times = {
        "qkv_projection": gemm(tokens, hidden, qkv_cols, hidden * qkv_cols),
        "output_projection": gemm(tokens, q_cols, hidden, q_cols * hidden),
    }

    attention_flops = 4.0 * config.heads_per_gpu * llm.head_dim * shape.attended_tokens * config.h2o_kept_fraction
    kv_per_token = config.kv_bytes_per_token_per_layer
    attention_bytes = (
        shape.kv_read_tokens * config.h2o_kept_fraction * kv_per_token  # read cached K/V
        + tokens * kv_per_token  # write the new K/V
        + tokens * 2 * q_cols * ab  # read Q, write the attention output
    )
    if not config.flash_attention:
        attention_bytes += 2 * config.heads_per_gpu * shape.attended_tokens * SCORE_ELEMENT_BYTES
    times["attention"] = roofline_time(attention_flops, attention_bytes, attention_rate, hbm_rate)

    inter_cols = llm.intermediate_size / config.tp
    matrices = 3 if llm.mlp_kind == "gated" else 2
    expert_params = matrices * hidden * inter_cols
    touched = _experts_touched(llm.num_experts, llm.experts_per_token, tokens)
    mlp_flops = 2.0 * tokens * llm.experts_per_token * expert_params
    mlp_bytes = touched * expert_params * wb + tokens * llm.experts_per_token * (2 * hidden + (matrices - 1) * inter_cols) * ab
    times["mlp"] = roofline_time(mlp_flops, mlp_bytes, gemm_rate, hbm_rate)
    return times


def lm_head_time(config: ServingConfig, shape: StepShape) -> RooflineTime:
    """Roofline time of the output projection (one logit row per sequence) on one GPU."""
    llm = config.llm
    gemm_rate, _, hbm_rate = _rates(config)
    vocab_cols = llm.vocab_size / config.tp
    flops = 2.0 * shape.sequences * llm.hidden_size * vocab_cols
    bytes_moved = llm.hidden_size * vocab_cols * config.quantization.weight_bytes_per_param + shape.sequences * vocab_cols * LOGIT_ELEMENT_BYTES
    return roofline_time(flops, bytes_moved, gemm_rate, hbm_rate)


def _stage_time(config: ServingConfig, shape: StepShape, with_head: bool) -> StepTime:
    """Time for one pipeline stage (its share of layers) to process ``shape``."""
    ops = layer_operator_times(config, shape)
    compute_s = sum(t.time_s for t in ops.values() if t.bound is Bound.COMPUTE)
    memory_s = sum(t.time_s for t in ops.values() if t.bound is Bound.MEMORY)
    layers = config.layers_per_stage
    compute_s, memory_s = compute_s * layers, memory_s * layers
    if with_head:
        head = lm_head_time(config, shape)
        if head.bound is Bound.COMPUTE:
            compute_s += head.time_s
        else:
            memory_s += head.time_s
    gpu = config.gpu
    link_rate = gpu.link_bandwidth_bytes_per_s * config.factors.communication_efficiency
    link_latency_s = gpu.link_latency_us * 1e-6
    message = shape.new_tokens * config.llm.hidden_size * ALL_REDUCE_ELEMENT_BYTES
    network_s = layers * 2 * ring_all_reduce_time_s(message, config.tp, link_rate, link_latency_s)
    return StepTime(compute_s + memory_s + network_s, compute_s, memory_s, network_s, 0.0)


def step_time(config: ServingConfig, shape: StepShape, *, pipeline_fill: bool = False) -> StepTime:
    """Seconds of one engine step of ``shape`` on one replica.

    With PP > 1 the step is split into ``m = min(pp, sequences)`` micro-batches. In steady
    state (decode, ``pipeline_fill=False``) each round takes ``pp`` stage times; a one-off
    step that must fill the pipeline (``pipeline_fill=True``, e.g. a prefill) takes
    ``m + pp - 1`` stage times. Stage hops add one point-to-point transfer per boundary.
    """
    overhead_s = config.factors.step_overhead_ms * 1e-3
    if config.pp == 1:
        stage = _stage_time(config, shape, with_head=True)
        return StepTime(stage.time_s + overhead_s, stage.compute_s, stage.memory_s, stage.network_s, overhead_s)
    micro = max(1, min(config.pp, shape.sequences))
    stage = _stage_time(config, shape.split(micro), with_head=True)
    rounds = (micro + config.pp - 1) if pipeline_fill else config.pp
    gpu = config.gpu
    hop_bytes = math.ceil(shape.new_tokens / micro) * config.llm.hidden_size * ALL_REDUCE_ELEMENT_BYTES
    hop_s = point_to_point_time_s(hop_bytes, gpu.link_bandwidth_bytes_per_s * config.factors.communication_efficiency, gpu.link_latency_us * 1e-6)
    network_s = rounds * stage.network_s + (config.pp - 1) * hop_s
    compute_s, memory_s = rounds * stage.compute_s, rounds * stage.memory_s
    return StepTime(compute_s + memory_s + network_s + overhead_s, compute_s, memory_s, network_s, overhead_s)
