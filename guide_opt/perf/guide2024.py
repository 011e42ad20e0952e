"""GUIDE's own equations (arXiv 2412.04788, Sections 3.2-3.3), kept to reproduce the paper.

Select with ``estimator="guide-2024"`` (CLI: ``guide-opt estimate --estimator guide-2024``).
Differences from guide-opt's default roofline estimator, faithful to the paper's text:

- KV bytes per request are ``2 x N x H x S x kv`` with the *hidden size* H (no GQA/MQA
  saving, no TP/PP sharding of the cache, no block rounding);
- available memory is ``GPU memory - model slice memory`` (no engine fraction, no
  activation workspace, no runtime reserve);
- multi-GPU throughput is ``N x T_single / (1 + log2(TP))`` with
  ``T_single = 1 / TPOT`` of one GPU (per sequence, so times the batch for a batch).

Prefill and decode step times for one GPU come from the shared roofline step model.
"""

from __future__ import annotations

import dataclasses
import math

from guide_opt.perf.config import ServingConfig
from guide_opt.perf.estimator import Estimate, PhaseTimes, phase_times
from guide_opt.perf.memory import MemoryBreakdown, weight_bytes_per_gpu
from guide_opt.quantization import KV_CACHE_DTYPE_BYTES


def available_memory_bytes(gpu_memory_bytes: float, model_slice_bytes: float) -> float:
    """Available Memory = GPU Memory - Model Slice Memory (Section 3.2, Step 1)."""
    return gpu_memory_bytes - model_slice_bytes


def kv_bytes_per_request(num_layers: int, hidden_size: int, sequence_tokens: int, kv_element_bytes: float) -> float:
    """kv_byte_per_request_without_batchsize = 2 x N x H x S x kv (Section 3.3.1)."""
    return 2 * num_layers * hidden_size * sequence_tokens * kv_element_bytes


def max_parallelism(data_parallel: int, available_bytes: float, kv_overhead_per_request_bytes: float) -> float:
    """Maximum Parallelism = DP x (Available Memory / kv overhead per request) (Section 3.2)."""
    return data_parallel * (available_bytes / kv_overhead_per_request_bytes)


def max_batch_size(maximum_parallelism: float, data_parallel: int) -> int:
    """Max Batch Size = Maximum Parallelism / Data Parallelism, floored (Sections 3.2 and 3.3.1)."""
    return max(0, math.floor(maximum_parallelism / data_parallel))


def max_sequence_length(available_bytes: float, num_layers: int, hidden_size: int, batch: int, kv_element_bytes: float) -> int:
    """S_max = floor(C_available / (2 x N x H x B x kv)) (Section 3.3.2)."""
    return max(0, math.floor(available_bytes / (2 * num_layers * hidden_size * batch * kv_element_bytes)))


def multi_gpu_throughput(num_gpus: int, single_gpu_throughput: float, tp: int) -> float:
    """multi_gpu_throughput = N x T_single / (1 + log2(P_TP)) (Section 3.2, Step 2)."""
    return num_gpus * single_gpu_throughput / (1 + math.log2(tp))


def estimate_guide2024(config: ServingConfig) -> Estimate:
    """Estimate ``config`` with GUIDE's published equations (see the module docstring)."""
    reason = config.unsupported_reason()
    if reason:
        raise ValueError(reason)
    llm, gpu = config.llm, config.gpu
    kv_element = KV_CACHE_DTYPE_BYTES[config.kv_cache_dtype]
    sequence = config.input_tokens + config.output_tokens
    model_slice = weight_bytes_per_gpu(config)
    available = available_memory_bytes(gpu.memory_bytes, model_slice)
    per_request = kv_bytes_per_request(llm.num_layers, llm.hidden_size, sequence, kv_element) * config.h2o_kept_fraction
    batch_cap = max_batch_size(max_parallelism(1, available, per_request), 1)
    memory = MemoryBreakdown(
        weights_bytes=model_slice,
        kv_cache_bytes=per_request * config.batch,
        activation_bytes=0.0,
        reserve_bytes=0.0,
        usable_bytes=gpu.memory_bytes,
        device_bytes=gpu.memory_bytes,
    )
    phases = None
    if memory.fits:
        single = phase_times(dataclasses.replace(config, tp=1, pp=1))
        n = config.num_gpus
        scale = n / (1 + math.log2(config.tp))  # multi-GPU speed-up of GUIDE's formula
        tpot_s = single.tpot_s / scale
        ttft_s = single.ttft_s / scale
        prefill_s = single.prefill_total_s / scale
        phases = PhaseTimes(
            ttft_s=ttft_s,
            tpot_s=tpot_s,
            batch_latency_s=prefill_s + (config.output_tokens - 1) * tpot_s,
            prefill_total_s=prefill_s,
            prefill_bound=single.prefill_bound,
            decode_bound=single.decode_bound,
        )
    return Estimate(
        config=config,
        fits=memory.fits,
        memory=memory,
        max_batch=batch_cap,
        max_sequence_length=min(max_sequence_length(available, llm.num_layers, llm.hidden_size, config.batch, kv_element), llm.max_position_embeddings),
        phases=phases,
        estimator="guide-2024",
    )
