"""Time of one engine step: per-operator roofline of a decoder layer, plus communication.

An engine step processes ``new_tokens`` tokens from ``sequences`` sequences. Its shape is a
:class:`StepShape`; :func:`step_time` returns a :class:`StepTime` for one replica. The same
function serves prefill (many new tokens per sequence), decode (one per sequence), chunked
prefill and mixed SplitFuse steps, so the static estimator and the simulator agree by
construction.

Per layer and GPU (TP shards heads and MLP columns): QKV projection (or MLA's latent
projections), attention, output projection and MLP (dense, SwiGLU, or MoE: router, top-k routed
experts of ``moe_intermediate_size``, shared experts) each take
``max(FLOPs / compute rate, bytes / memory rate)``; layers of different kinds (dense-first MoE
models, sliding-window layers) are averaged by their counts. The LM head runs once per step on
the last stage. Tensor parallelism adds two ring all-reduces per layer; pipeline parallelism
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


def _weighted(parts: list[tuple[float, RooflineTime]]) -> RooflineTime:
    """The layer-count-weighted mean of the roofline times of different layer kinds (weights sum to 1)."""
    return RooflineTime(
        sum(w * t.time_s for w, t in parts), sum(w * t.compute_time_s for w, t in parts), sum(w * t.memory_time_s for w, t in parts)
    )


def _attention_time(config: ServingConfig, shape: StepShape, window: int | None, attention_rate: float, hbm_rate: float) -> RooflineTime:
    """Roofline time of one layer's attention on one GPU; ``window`` limits each new token to its last ``window`` tokens.

    FLOPs: Q.K over ``head_dim`` and P.V over the value width per head and attended token.
    Bytes: cached KV read (MLA: the latent), new KV written, Q read and output written. With a
    window, attended and read tokens are capped at ``window`` per new token and per sequence
    (the sum of per-sequence minima is at most the minimum of the sums, so this bounds them).
    """
    llm, ab = config.llm, config.quantization.activation_bytes
    kept = config.h2o_kept_fraction
    attended, kv_read = shape.attended_tokens, shape.kv_read_tokens
    if window is not None:
        attended = min(attended, shape.new_tokens * window)
        kv_read = min(kv_read, shape.sequences * window)
    head_widths = llm.head_dim + llm.value_head_dim
    flops = 2.0 * config.heads_per_gpu * head_widths * attended * kept
    kv_per_token = config.kv_bytes_per_token_per_layer
    bytes_moved = (
        kv_read * kept * kv_per_token  # read cached K/V
        + shape.new_tokens * kv_per_token  # write the new K/V
        + shape.new_tokens * config.heads_per_gpu * head_widths * ab  # read Q, write the attention output
    )
    if not config.flash_attention:
        bytes_moved += 2 * config.heads_per_gpu * attended * SCORE_ELEMENT_BYTES
    return roofline_time(flops, bytes_moved, attention_rate, hbm_rate)


def layer_operator_times(config: ServingConfig, shape: StepShape) -> dict[str, RooflineTime]:
    """Roofline time of each operator of one (mean) decoder layer on one GPU for ``shape``.

    Models mixing layer kinds (dense and MoE MLPs; global and sliding-window attention) get
    each operator's layer-count-weighted mean, so ``layers x`` this is the stage's total.
    """
    llm, q = config.llm, config.quantization
    gemm_rate, attention_rate, hbm_rate = _rates(config)
    tokens = shape.new_tokens
    wb, ab = config.weight_bytes_per_param, q.activation_bytes
    hidden = llm.hidden_size

    def gemm(rows: int, weight_params: float, io_elements_per_row: float) -> RooflineTime:
        """A GEMM of ``rows`` tokens through ``weight_params`` weights (FLOPs = 2 x rows x weights)."""
        flops = 2.0 * rows * weight_params
        bytes_moved = weight_params * wb + rows * io_elements_per_row * ab
        return roofline_time(flops, bytes_moved, gemm_rate, hbm_rate)

    o_params = config.output_projection_params_per_gpu
    qkv_params = config.attention_params_per_gpu - o_params
    o_cols = config.heads_per_gpu * llm.value_head_dim
    qkv_cols = config.heads_per_gpu * llm.head_dim + (
        llm.kv_cache_elements_per_token_per_layer if llm.is_mla else 2 * config.kv_heads_per_gpu * llm.head_dim
    )
    times = {
        "qkv_projection": gemm(tokens, qkv_params, hidden + qkv_cols),
        "output_projection": gemm(tokens, o_params, o_cols + hidden),
    }

    full = _attention_time(config, shape, None, attention_rate, hbm_rate)
    sliding_share = llm.num_sliding_layers / llm.num_layers
    if sliding_share:
        windowed = _attention_time(config, shape, llm.sliding_window, attention_rate, hbm_rate)
        times["attention"] = _weighted([(1 - sliding_share, full), (sliding_share, windowed)])
    else:
        times["attention"] = full

    matrices = llm.mlp_matrices
    parts = []
    if llm.num_dense_mlp_layers:
        inter_cols = llm.intermediate_size / config.tp
        parts.append((llm.num_dense_mlp_layers / llm.num_layers, gemm(tokens, matrices * hidden * inter_cols, 2 * hidden + (matrices - 1) * inter_cols)))
    if llm.is_moe:
        parts.append((llm.num_moe_layers / llm.num_layers, _moe_mlp_time(config, tokens, gemm_rate, hbm_rate)))
    times["mlp"] = parts[0][1] if len(parts) == 1 else _weighted(parts)
    return times


def _moe_mlp_time(config: ServingConfig, tokens: int, gemm_rate: float, hbm_rate: float) -> RooflineTime:
    """Roofline time of one MoE layer's MLP on one GPU: router, top-k routed experts, always-active shared experts.

    Routed experts of width ``moe_intermediate_size``: the distinct experts the step's tokens
    hit are read once, each token computes through its top-k. Under expert parallelism a GPU
    holds ``1/tp`` of the experts whole instead of ``1/tp`` of each: in expectation the same
    FLOPs and bytes per GPU (load imbalance and all-to-all traffic are not modelled here).
    """
    llm, ab, wb = config.llm, config.quantization.activation_bytes, config.weight_bytes_per_param
    hidden, tp, matrices = llm.hidden_size, config.tp, llm.mlp_matrices
    expert_cols = llm.expert_intermediate_size / tp
    expert_params = matrices * hidden * expert_cols
    touched = _experts_touched(llm.num_experts, llm.experts_per_token, tokens)
    routed_rows = tokens * llm.experts_per_token
    shared_cols = llm.shared_expert_intermediate_size / tp
    shared_params = matrices * hidden * shared_cols
    router_params = llm.router_params  # replicated, 16-bit
    flops = 2.0 * (routed_rows * expert_params + tokens * shared_params + tokens * router_params)
    bytes_moved = (
        (touched * expert_params + shared_params) * wb
        + router_params * config.unquantized_weight_bytes_per_param
        + routed_rows * (2 * hidden + (matrices - 1) * expert_cols) * ab
        + (tokens * (2 * hidden + (matrices - 1) * shared_cols) * ab if shared_params else 0.0)
    )
    return roofline_time(flops, bytes_moved, gemm_rate, hbm_rate)


def lm_head_time(config: ServingConfig, shape: StepShape) -> RooflineTime:
    """Roofline time of the output projection (one logit row per sequence) on one GPU; its weights stay 16-bit."""
    llm = config.llm
    gemm_rate, _, hbm_rate = _rates(config)
    vocab_cols = llm.vocab_size / config.tp
    flops = 2.0 * shape.sequences * llm.hidden_size * vocab_cols
    bytes_moved = llm.hidden_size * vocab_cols * config.unquantized_weight_bytes_per_param + shape.sequences * vocab_cols * LOGIT_ELEMENT_BYTES
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
