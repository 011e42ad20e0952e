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
models, sliding-window layers) are averaged by their counts. The memory-bound kernels between
them -- two RMSNorms with fused residual adds, the rotary embedding, the MLP activation -- stream
their tensors once after a kernel floor (``elementwise``). The achieved fractions of the
peaks come from the GPU's fitted kernel curves (:mod:`guide_opt.perf.kernels`: GEMM efficiency
by tokens, matrix size and dtype; attention by context; kernel latencies) times the engine's
factors. The LM head runs once per step on the last stage. Tensor parallelism adds two
all-reduces per layer at the measured alpha-beta cost of the TP degree; pipeline parallelism
splits the batch into micro-batches that flow through the stages. Every step also waits for the
engine's host work (:func:`host_overhead_s`): a fixed overhead, a cost per sequence in the step
and, on a multi-GPU replica, the hand-off of the step to the other ranks.

Every function here maps a config and a shape to numbers, without state. A :class:`StepShape`
of arrays maps to arrays, element by element the same figures (``tests/perf/test_step_arrays.py``):
a window table of :mod:`guide_opt.perf.steady_state` times all its steps in one call.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from guide_opt.perf.communication import point_to_point_time_s
from guide_opt.perf.config import ALL_REDUCE_ELEMENT_BYTES, ATTENTION_COMPUTE_DTYPE, LOGIT_ELEMENT_BYTES, ServingConfig
from guide_opt.perf.kernels import all_reduce_time_s, attention_time, elementwise_time, gemm_time, point_to_point_latency_s
from guide_opt.perf.roofline import Bound, RooflineTime, ceil, choose, larger, smaller

#: Bytes per element of a materialized attention score matrix (no FlashAttention).
SCORE_ELEMENT_BYTES = 2.0
#: Separate elementwise kernels per decoder layer: two RMSNorms (each with its residual add
#: fused, as vLLM's ``fused_add_rms_norm``), the rotary embedding of Q and K, the MLP activation.
ELEMENTWISE_KERNELS_PER_LAYER = 4
#: Hidden-state passes of one RMSNorm with a fused residual add: read x and the residual, write both.
NORM_HIDDEN_PASSES = 4


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

    @staticmethod
    def stack(shapes: "list[StepShape]") -> "StepShape":
        """One shape of arrays (floats) holding ``shapes`` field by field: :func:`step_time` times them all in one call."""
        return StepShape(*(np.array([getattr(s, f.name) for s in shapes], dtype=float) for f in dataclasses.fields(StepShape)))

    def split(self, parts: int) -> "StepShape":
        """The shape of one of ``parts`` equal micro-batches of this step."""
        return StepShape(
            ceil(self.new_tokens / parts),
            ceil(self.sequences / parts),
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


def _gemm(config: ServingConfig, rows: float, weight_params: float, weight_bytes_per_param: float, input_elements: float,
          output_elements: float, kernels: int = 1, copies: float = 1.0, unquantized: bool = False) -> RooflineTime:
    """Time of ``kernels`` GEMMs with ``rows`` tokens each through ``weight_params`` weights in all, on one GPU.

    FLOPs ``2 x rows x weight_params``; HBM bytes: the weights at ``weight_bytes_per_param``
    and ``input_elements`` / ``output_elements`` activations (all kernels) at the activation
    width. The compute efficiency follows the GPU's fitted GEMM curve at ``rows`` and at the
    mean matrix size ``weight_params / (copies x kernels)`` (``copies``: the weights are that
    many same-shaped matrix sets, e.g. the touched experts, each with its own ``rows``).
    ``unquantized``: a 16-bit GEMM (LM head, router) under any scheme; else the scheme's
    compute dtype at its dense peak divided by the dequantization factor, and weights narrower
    than the activations (AWQ/GPTQ) run at the curve's asymptotic fraction
    (:func:`guide_opt.perf.kernels.gemm_time`).
    """
    q, f = config.quantization, config.factors
    dtype = ATTENTION_COMPUTE_DTYPE if unquantized else q.compute_dtype
    peak = config.gpu.peak_flops_per_s(dtype)
    assert peak is not None, config.unsupported_reason()
    if not unquantized:
        peak /= q.dequant_compute_factor
    weight_only = not unquantized and weight_bytes_per_param < q.activation_bytes
    ab = q.activation_bytes
    return gemm_time(2.0 * rows * weight_params, weight_params * weight_bytes_per_param, input_elements * ab, output_elements * ab, rows,
                     weight_params / (copies * kernels), dtype, peak, config.gpu.hbm_bandwidth_bytes_per_s, config.gpu.kernels,
                     f.compute_efficiency, f.memory_efficiency, kernels, weight_only)


def _experts_touched(num_experts: int, experts_per_token: int, tokens: int) -> float:
    """Expected distinct experts hit by ``tokens`` tokens routed uniformly to top-k of ``num_experts``."""
    if num_experts == 1:
        return 1.0
    return num_experts * (1.0 - (1.0 - experts_per_token / num_experts) ** tokens)


def _weighted(parts: list[tuple[float, RooflineTime]]) -> RooflineTime:
    """The weighted sum of roofline times: layer-count shares summing to 1 give the mean layer; weights of 1 add kernels run one after another."""
    return RooflineTime(
        sum(w * t.time_s for w, t in parts), sum(w * t.compute_time_s for w, t in parts), sum(w * t.memory_time_s for w, t in parts)
    )


def _attention_time(config: ServingConfig, shape: StepShape, window: int | None) -> RooflineTime:
    """Roofline time of one layer's attention on one GPU; ``window`` limits each new token to its last ``window`` tokens.

    FLOPs: Q.K over ``head_dim`` and P.V over the value width per head and attended token.
    Bytes: cached KV read (MLA: the latent; :attr:`ServingConfig.kv_reads_per_token` times where the
    engine's kernel re-reads a KV head for its query heads), new KV written, Q read and output written. With a
    window, attended and read tokens are capped at ``window`` per new token and per sequence
    (the sum of per-sequence minima is at most the minimum of the sums, so this bounds them).
    Efficiency: the GPU's fitted attention curve at the mean attended context per new token
    (the cache's dtype choosing its HBM fraction, :attr:`ServingConfig.kv_read_at_fp8_rate`), plus its kernel and per-sequence latencies (:func:`guide_opt.perf.kernels.attention_time`).
    """
    llm, ab = config.llm, config.quantization.activation_bytes
    kept = config.h2o_kept_fraction
    attended, kv_read = shape.attended_tokens, shape.kv_read_tokens
    if window is not None:
        attended = smaller(attended, shape.new_tokens * window)
        kv_read = smaller(kv_read, shape.sequences * window)
    head_widths = llm.head_dim + llm.value_head_dim
    flops = 2.0 * config.heads_per_gpu * head_widths * attended * kept
    kv_per_token = config.kv_bytes_per_token_per_layer
    bytes_moved = (
        kv_read * kept * kv_per_token * config.kv_reads_per_token  # read cached K/V (re-read per query head by some kernels)
        + shape.new_tokens * kv_per_token  # write the new K/V
        + shape.new_tokens * config.heads_per_gpu * head_widths * ab  # read Q, write the attention output
    )
    if not config.flash_attention:
        bytes_moved += 2 * config.heads_per_gpu * attended * SCORE_ELEMENT_BYTES
    peak = config.gpu.peak_flops_per_s(ATTENTION_COMPUTE_DTYPE)
    assert peak is not None, config.unsupported_reason()
    f = config.factors
    mean_context = attended * kept / larger(shape.new_tokens, 1)
    return attention_time(flops, bytes_moved, mean_context, shape.sequences, peak, config.gpu.hbm_bandwidth_bytes_per_s, config.gpu.kernels,
                          f.compute_efficiency, f.memory_efficiency,
                          fp8_kv_cache=config.kv_read_at_fp8_rate)


def layer_operator_times(config: ServingConfig, shape: StepShape) -> dict[str, RooflineTime]:
    """Roofline time of each operator of one (mean) decoder layer on one GPU for ``shape``.

    Models mixing layer kinds (dense and MoE MLPs; global and sliding-window attention) get
    each operator's layer-count-weighted mean, so ``layers x`` this is the stage's total.
    """
    llm = config.llm
    tokens = shape.new_tokens
    wb, hidden = config.weight_bytes_per_param, llm.hidden_size

    o_params = config.output_projection_params_per_gpu
    qkv_params = config.attention_params_per_gpu - o_params
    o_cols = config.heads_per_gpu * llm.value_head_dim
    qkv_cols = config.heads_per_gpu * llm.head_dim + (
        llm.kv_cache_elements_per_token_per_layer if llm.is_mla else 2 * config.kv_heads_per_gpu * llm.head_dim
    )
    times = {
        "qkv_projection": _gemm(config, tokens, qkv_params, wb, tokens * hidden, tokens * qkv_cols),
        "output_projection": _gemm(config, tokens, o_params, wb, tokens * o_cols, tokens * hidden),
    }

    full = _attention_time(config, shape, None)
    sliding_share = llm.num_sliding_layers / llm.num_layers
    if sliding_share:
        windowed = _attention_time(config, shape, llm.sliding_window)
        times["attention"] = _weighted([(1 - sliding_share, full), (sliding_share, windowed)])
    else:
        times["attention"] = full

    times["elementwise"] = _elementwise_time(config, tokens)

    parts = []
    if llm.num_dense_mlp_layers:
        parts.append((llm.num_dense_mlp_layers / llm.num_layers, _mlp_time(config, tokens, 1.0, llm.intermediate_size / config.tp)))
    if llm.is_moe:
        parts.append((llm.num_moe_layers / llm.num_layers, _moe_mlp_time(config, tokens)))
    times["mlp"] = parts[0][1] if len(parts) == 1 else _weighted(parts)
    return times


def _activation_columns(config: ServingConfig) -> float:
    """Activation columns per token of one (mean) layer's MLP on one GPU: its width, over the routed and shared experts of an MoE."""
    llm = config.llm
    dense = llm.intermediate_size * llm.num_dense_mlp_layers
    moe = (llm.experts_per_token * llm.expert_intermediate_size + llm.shared_expert_intermediate_size) * llm.num_moe_layers if llm.is_moe else 0
    return (dense + moe) / llm.num_layers / config.tp


def _elementwise_time(config: ServingConfig, tokens: int) -> RooflineTime:
    """The normalization, rotary and activation kernels of one layer on one GPU (the roofline of GEMMs and attention leaves them out).

    Each streams its tensors once at the GPU's measured rate after a kernel floor
    (:func:`guide_opt.perf.kernels.elementwise_time`): two RMSNorms with fused residual adds
    over the full hidden state (replicated on every TP rank, so they do not shrink with TP),
    the rotary embedding reading and writing Q and K, and the activation reading the up
    GEMM's ``matrices - 1`` outputs and writing one (the MLP's ``matrices x width`` elements).
    Measured per-layer times of these operators (vidur profiling of Llama-2-7B on A100/H100,
    ``input_layernorm``, ``attn_rope``, ``post_attention_layernorm``, ``mlp_act``, ``add``)
    add 10-19% to the layer's four projection GEMMs, at one token and at thousands.
    """
    llm, ab = config.llm, config.quantization.activation_bytes
    rope_cols = config.heads_per_gpu * llm.head_dim + config.kv_heads_per_gpu * llm.head_dim
    per_token = 2 * NORM_HIDDEN_PASSES * llm.hidden_size + 2 * rope_cols + llm.mlp_matrices * _activation_columns(config)
    return elementwise_time(tokens * per_token * ab, ELEMENTWISE_KERNELS_PER_LAYER, config.gpu.hbm_bandwidth_bytes_per_s, config.gpu.kernels,
                            config.factors.memory_efficiency)


def _mlp_time(config: ServingConfig, rows: float, copies: float, cols: float) -> RooflineTime:
    """The two GEMM kernels of an MLP of ``cols`` columns per GPU (gate and up fused, then down; or up, then down).

    ``rows``: tokens through the MLP in all; ``copies``: distinct same-shaped MLPs whose weights
    are read (the experts a step touches; 1 for a dense MLP), each running its share of the rows.
    Activations in: the hidden state and the down GEMM's input; out: the up GEMM's
    ``matrices - 1`` outputs and the hidden state.
    """
    hidden, matrices = config.llm.hidden_size, config.llm.mlp_matrices
    return _gemm(config, rows / copies, copies * matrices * hidden * cols, config.weight_bytes_per_param, rows * (hidden + cols),
                 rows * (hidden + (matrices - 2) * cols), kernels=2, copies=copies)


def _moe_mlp_time(config: ServingConfig, tokens: int) -> RooflineTime:
    """Roofline time of one MoE layer's MLP on one GPU: router, top-k routed experts, always-active shared experts.

    Routed experts of width ``moe_intermediate_size``: the distinct experts the step's tokens
    hit are read once, each token computes through its top-k, each touched expert runs its
    share of the routed rows. Router (16-bit, replicated), routed and shared experts are
    separate kernels whose times add. Under expert parallelism a GPU holds ``1/tp`` of the
    experts whole instead of ``1/tp`` of each: in expectation the same FLOPs and bytes per GPU
    (load imbalance and all-to-all traffic are not modelled here).
    """
    llm, tp = config.llm, config.tp
    touched = _experts_touched(llm.num_experts, llm.experts_per_token, tokens)
    parts = [(1.0, _mlp_time(config, tokens * llm.experts_per_token, touched, llm.expert_intermediate_size / tp))]
    if llm.shared_expert_intermediate_size:
        parts.append((1.0, _mlp_time(config, tokens, 1.0, llm.shared_expert_intermediate_size / tp)))
    if llm.router_params:  # its input (the hidden state the experts read too) and its logits are not counted
        parts.append((1.0, _gemm(config, tokens, llm.router_params, config.unquantized_weight_bytes_per_param, 0.0, 0.0, unquantized=True)))
    return _weighted(parts)


def lm_head_time(config: ServingConfig, shape: StepShape) -> RooflineTime:
    """Roofline time of the output projection (one logit row per sequence) on one GPU; its weights and math stay 16-bit."""
    llm = config.llm
    vocab_cols = llm.vocab_size / config.tp
    # logits are written at LOGIT_ELEMENT_BYTES, not the activation width; the one input row per sequence is not counted
    logit_elements = shape.sequences * vocab_cols * LOGIT_ELEMENT_BYTES / config.quantization.activation_bytes
    return _gemm(config, shape.sequences, llm.hidden_size * vocab_cols, config.unquantized_weight_bytes_per_param, 0.0, logit_elements,
                 unquantized=True)


def _all_reduce_s(config: ServingConfig, message_bytes: float) -> float:
    """One tensor-parallel all-reduce of ``message_bytes``: the measured alpha-beta of the TP degree x the engine factors."""
    gpu, f = config.gpu, config.factors
    return all_reduce_time_s(message_bytes, config.tp, gpu.link_bandwidth_bytes_per_s, gpu.link_latency_us * 1e-6, gpu.kernels,
                             f.communication_efficiency, f.collective_latency_scale)


def _stage_time(config: ServingConfig, shape: StepShape, with_head: bool) -> StepTime:
    """Time for one pipeline stage (its share of layers) to process ``shape``."""
    ops = layer_operator_times(config, shape)
    compute_s = memory_s = 0
    for t in ops.values():  # each operator's time counts for the resource that bounds it
        compute_bound = t.compute_bound
        compute_s = compute_s + choose(compute_bound, t.time_s, 0.0)
        memory_s = memory_s + choose(compute_bound, 0.0, t.time_s)
    layers = config.layers_per_stage
    compute_s, memory_s = compute_s * layers, memory_s * layers
    if with_head:
        head = lm_head_time(config, shape)
        compute_bound = head.compute_bound
        compute_s = compute_s + choose(compute_bound, head.time_s, 0.0)
        memory_s = memory_s + choose(compute_bound, 0.0, head.time_s)
    message = shape.new_tokens * config.llm.hidden_size * ALL_REDUCE_ELEMENT_BYTES
    network_s = layers * 2 * _all_reduce_s(config, message)
    return StepTime(compute_s + memory_s + network_s, compute_s, memory_s, network_s, 0.0)


def host_overhead_s(config: ServingConfig, sequences: int) -> float:
    """Host time of one engine step of ``sequences`` sequences: the fixed step overhead, the
    per-sequence scheduling/sampling cost and, on a multi-GPU replica, the hand-off of the step
    to the other ranks (:class:`~guide_opt.frameworks.EfficiencyFactors`)."""
    f = config.factors
    multi_gpu_s = f.tp_step_overhead_ms * 1e-3 if config.tp * config.pp > 1 else 0.0
    return f.step_overhead_ms * 1e-3 + f.sequence_overhead_us * 1e-6 * sequences + multi_gpu_s


def step_time(config: ServingConfig, shape: StepShape, *, pipeline_fill: bool = False) -> StepTime:
    """Seconds of one engine step of ``shape`` on one replica.

    With PP > 1 the step is split into ``m = min(pp, sequences)`` micro-batches. In steady
    state (decode, ``pipeline_fill=False``) each round takes ``pp`` stage times; a one-off
    step that must fill the pipeline (``pipeline_fill=True``, e.g. a prefill) takes
    ``m + pp - 1`` stage times. Stage hops add one point-to-point transfer per boundary.
    """
    overhead_s = host_overhead_s(config, shape.sequences)
    if config.pp == 1:
        stage = _stage_time(config, shape, with_head=True)
        return StepTime(stage.time_s + overhead_s, stage.compute_s, stage.memory_s, stage.network_s, overhead_s)
    micro = larger(1, smaller(config.pp, shape.sequences))
    stage = _stage_time(config, shape.split(micro), with_head=True)
    rounds = (micro + config.pp - 1) if pipeline_fill else config.pp
    gpu, f = config.gpu, config.factors
    hop_bytes = ceil(shape.new_tokens / micro) * config.llm.hidden_size * ALL_REDUCE_ELEMENT_BYTES
    hop_latency_s = point_to_point_latency_s(gpu.link_latency_us * 1e-6, gpu.kernels) * f.collective_latency_scale
    hop_s = point_to_point_time_s(hop_bytes, gpu.link_bandwidth_bytes_per_s * f.communication_efficiency, hop_latency_s)
    network_s = rounds * stage.network_s + (config.pp - 1) * hop_s
    compute_s, memory_s = rounds * stage.compute_s, rounds * stage.memory_s
    return StepTime(compute_s + memory_s + network_s + overhead_s, compute_s, memory_s, network_s, overhead_s)
