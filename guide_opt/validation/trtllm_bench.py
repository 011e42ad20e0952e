"""How ``trtllm-bench`` sizes a TensorRT-LLM engine for its offline max-throughput runs.

NVIDIA's TensorRT-LLM performance overview (v0.10 and later: the v0.13 and v1.0 tables of
``validation_data/trtllm_perf``) measures in-flight batching under maximum load: ``trtllm-bench
throughput`` queues every request of a synthetic dataset at once (fixed input and output
lengths, 1,000-30,000 requests) and reports the output tokens per second of the whole run.
The engine is sized from the dataset by a heuristic, reproduced by :func:`engine_settings`
(NVIDIA/TensorRT-LLM ``tensorrt_llm/bench/build/tuning.py``, ``calc_engine_setting`` and
``finetune_setting``):

- the KV cache is taken to hold ``0.95 x (device memory x GPUs - weights)`` at
  ``2 x layers x max(TP, KV heads) x head size`` bytes per token (1 byte per element for an FP8
  cache, else 2), so ``kv_cache_max_requests = tokens / (ISL + OSL)``;
- max batch size: that, capped at 4,096, rounded up (64 at least; to 32 below 256, 128 below
  1,024, else 256); max num tokens: ``batch x (1 + ISL / OSL)`` capped at 32,768, rounded up
  (2,048 at least; to 256 below 4,096, 512 below 8,192, else 1,024).

Its runtime schedules with ``GUARANTEED_NO_EVICT`` (the run's printout in the performance
overview): a request is admitted only when the KV cache can hold it to its last token, so the
requests running at once are the fewer of the max batch size and what the KV cache holds at
``ISL + OSL`` tokens each -- the latter from guide-opt's own memory model at prediction time
(:func:`guide_opt.validation.accuracy.offline_throughput_metrics`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from guide_opt.hardware import GIB_BYTES, GpuSpec
from guide_opt.llm import LlmSpec
from guide_opt.quantization import KV_CACHE_DTYPE_BYTES

#: Fraction of the memory left after the weights that trtllm-bench assumes the KV cache gets.
KV_CACHE_FRACTION = 0.95
#: trtllm-bench's caps on the max batch size and the max num tokens.
MAX_BATCH_CAP = 4096
MAX_TOKENS_CAP = 32768


@dataclass(frozen=True)
class EngineSettings:
    """What trtllm-bench builds: ``max_batch_size`` sequences and ``max_num_tokens`` tokens per step.

    ``kv_cache_max_requests``: its own (optimistic) estimate of the requests the KV cache holds.
    """

    max_batch_size: int
    max_num_tokens: int
    kv_cache_max_requests: float


#: trtllm-bench's rounding: (below this value, round up to a multiple of this step), in order.
BATCH_STEPS = ((256, 32), (1024, 128), (math.inf, 256))
TOKEN_STEPS = ((4096, 256), (8192, 512), (math.inf, 1024))
#: Its floors: a max batch size of 64 and a max num tokens of 2,048 at least.
MIN_BATCH, MIN_TOKENS = 64, 2048


def _rounded(value: float, steps: tuple[tuple[float, int], ...], floor: int) -> int:
    """``value`` rounded up to the step of the first range it falls below, and at least ``floor``."""
    step = next(step for bound, step in steps if value < bound)
    return max(floor, step * math.ceil(value / step))


def tuned_settings(kv_cache_max_requests: float, input_tokens: int, output_tokens: int, pp: int = 1) -> tuple[int, int]:
    """trtllm-bench's ``finetune_setting``: (max batch size, max num tokens) from the requests its KV cache holds."""
    raw_batch = min(kv_cache_max_requests, MAX_BATCH_CAP) / pp
    raw_tokens = min(raw_batch * (1 + input_tokens / output_tokens), MAX_TOKENS_CAP)
    return _rounded(raw_batch, BATCH_STEPS, MIN_BATCH), _rounded(raw_tokens, TOKEN_STEPS, MIN_TOKENS)


def engine_settings(llm: LlmSpec, gpu: GpuSpec, *, tp: int, pp: int, fp8_weights: bool, kv_cache_dtype: str,
                    input_tokens: int, output_tokens: int) -> EngineSettings:
    """The engine trtllm-bench builds for ``llm`` on ``tp x pp`` GPUs of ``gpu`` and a dataset of fixed lengths.

    As its ``calc_engine_setting``: parameters in billions times 1 byte (FP8 weights) or 2
    (anything else) as the engine size in GB, the device memory in GiB (``torch``'s total
    memory) times the GPUs, the parameter count the LLM's total (``config.json``'s).
    """
    kv_bytes_per_token = 2 * llm.num_layers * max(tp, llm.num_kv_heads) * llm.head_dim * KV_CACHE_DTYPE_BYTES[kv_cache_dtype] / GIB_BYTES
    engine_size = llm.total_params / 1e9 * (1 if fp8_weights else 2)
    available = gpu.memory_bytes / GIB_BYTES * tp * pp - engine_size
    requests = max(0.0, available * KV_CACHE_FRACTION / kv_bytes_per_token / (input_tokens + output_tokens))
    batch, tokens = tuned_settings(requests, input_tokens, output_tokens, pp)
    return EngineSettings(batch, tokens, requests)
