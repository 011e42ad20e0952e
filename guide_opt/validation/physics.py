"""Physical floors of measured serving figures: what no engine on a GPU can beat.

Each floor counts only the bytes a step must read from HBM at the GPU's peak bandwidth -- the
weights a token touches, and the KV cache every decode step attends to -- so it holds for any
engine, kernel or efficiency factor. A measurement below its floor is a broken run (stopped at
an early end-of-sequence, a unit mistake): the loaders and calibration leave such rows out.
"""

from __future__ import annotations

from guide_opt.perf import ServingConfig


def weight_stream_time_s(config: ServingConfig) -> float:
    """Seconds to read the weights one token touches once at peak HBM bandwidth: the floor of any decode step.

    ``active params x bytes per param / (TP x bandwidth per GPU)``: TP shards read in parallel,
    pipeline stages one after the other, and a mixture-of-experts token touches only its top-k
    experts. No engine produces an output token faster than this.
    """
    weight_bytes = config.llm.active_params_per_token * config.quantization.weight_bytes_per_param
    return weight_bytes / (config.tp * config.gpu.hbm_bandwidth_bytes_per_s)


def kv_read_time_s(config: ServingConfig, sequences: int, context_tokens: int) -> float:
    """Seconds for one GPU to read ``sequences`` KV caches of ``context_tokens`` tokens once at peak HBM bandwidth.

    Every decode step attends to each running sequence's whole context (a sliding-window layer
    to its window), so it reads at least this much besides the weights. Per GPU of the most
    loaded stage: its layers and its share of the KV heads (:attr:`ServingConfig.kv_bytes_per_token_per_layer`).
    """
    kept = context_tokens * config.h2o_kept_fraction
    window = config.llm.sliding_window
    sliding = config.sliding_layers_per_stage
    tokens = (config.layers_per_stage - sliding) * kept + sliding * (kept if window is None else min(kept, window))
    return sequences * tokens * config.kv_bytes_per_token_per_layer / config.gpu.hbm_bandwidth_bytes_per_s


def batch_latency_floor_s(config: ServingConfig, *, static_batch: bool) -> float:
    """The fastest a measured batch of ``config`` (its batch, prompt and answer lengths) can physically be served: per
    output token, the weights once, and for a static batch on one pipeline stage also every sequence's KV cache of its
    prompt once (:func:`kv_read_time_s`).

    The KV term counts the prompt only (a lower bound of every step's context) and holds in waves
    too: each sequence reads its own cache at each of its steps whichever wave it runs in. Closed
    loops and offline runs (``static_batch`` False) keep the weights alone (not every request
    decodes in every step), and so does a pipeline (its stages' reads overlap across micro-batches).
    """
    kv_s = kv_read_time_s(config, config.batch, config.input_tokens) if static_batch and config.pp == 1 else 0.0
    return config.output_tokens * (weight_stream_time_s(config) + kv_s)
