"""A closed loop of users on IBM's TGIS server, step by step, with TGIS's own batching rule.

LLM-Pilot measured every LLM on TGIS (IBM/text-generation-inference, the image of
``fmperf_model_specifications_tgis_all.yml``) under a closed loop of ``u`` users with zero
think time. TGIS batches differently from vLLM, and the difference is what decides its
latencies under load (``router/src/batcher.rs`` of IBM/text-generation-inference):

- **Separate prefill passes.** New requests are prefilled as an *add-on batch* in a forward
  pass of their own, while the running batch waits; their first token comes out of that pass.
  Prefill is never mixed into a decode step (no chunking).
- **The add-on rule.** After each decode step the router pulls waiting requests only when at
  least ``min_size = max(1, b (M - w) / M)`` of them wait (integer division), where ``b`` is the
  running batch, ``w`` the decode steps since the last prefill and ``M`` =
  ``max_waiting_tokens``; with ``b <= 1`` or ``w >= M`` one waiting request suffices. So under
  load a returning user's request waits for several decode steps before its prefill: TTFT grows
  with ``u`` far faster than one prefill, and each add-on prefill pauses every running request
  (the gaps that lift the median ITL).
- **Batch limit.** At most ``max_batch_size`` requests run; the rest wait in the queue.
  LLMs without flash attention run padded batches (every prompt padded to the longest one of
  its prefill batch, every decode attends over the longest context of the batch).

:func:`tgis_closed_loop` plays this loop with engine-step times from
:func:`guide_opt.perf.step.step_time` under TGIS's host time, for ``u`` users whose request
lengths are drawn from a :class:`~guide_opt.simulate.workloads.HistogramLengths`, and reports
the medians LLM-Pilot reports (TTFT, TTFT per input token, inter-token latency). It is seeded
and deterministic. TGIS's host time:

- **Launch floor** (:func:`eager_step_s`). TGIS runs PyTorch eagerly (no CUDA graphs): Python
  launches every kernel of every layer, so a pass takes ``max(GPU work, launch time)`` --
  the host runs ahead of a busy GPU, a fast GPU waits for the host -- with the launch time of
  the profile's :class:`~guide_opt.frameworks.EagerLaunch` (``tgis.yaml``; per-rank
  synchronisation of each all-reduce at TP > 1). This is why one user's ITL on several H100s
  stops falling with the GPU count. The step model's host overhead adds outside the max. On in
  :func:`default_settings` (``TgisSettings.launch_floor``).
- **Host costs** of :class:`TgisSettings`: a fixed cost per prefill pass (the Python shard
  re-tokenizes and builds the pass's batch, ``FlashCausalLMBatch.from_pb``), a cost per running
  sequence per decode step (``generate_token``'s Python loop over the batch), an add-on cost
  and a cost per GiB of KV cache (``kv_ms_per_gib``: at equal load LLM-Pilot's ITL grows with the
  size of the KV cache, llama-13b's 0.8 MB per token far more than starcoder's multi-query
  20 kB, beyond the single read of the cache that the step model prices).

:func:`default_settings` gives the engine defaults, fitted on LLM-Pilot (:mod:`guide_opt.validation.tgis_host`),
as is the ``tgis`` profile's compute efficiency (``tgis.yaml``): TGIS's eager kernels reach under half the
compute throughput of the GPU's measured kernel curves, which sets what its add-on prefill passes cost and so
how long a returning request waits under load.

Not modelled: TGIS's batch-weight memory limits (the KV cache is checked by guide-opt's memory
model instead), the "batch about to complete" exception of the add-on rule, client-side and
network time (LLM-Pilot's TTFT starts once the router has validated the request and sent its
first message, ``router/src/batcher.rs`` ``infer_stream``).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, replace

import numpy as np

from guide_opt.hardware import GIB_BYTES
from guide_opt.perf import ServingConfig
from guide_opt.perf.estimator import estimate
from guide_opt.perf.step import StepShape, step_time
from guide_opt.simulate.workloads import HistogramLengths

#: fmperf's TGIS deployment default for ``MAX_WAITING_TOKENS`` (``TGISModelSpec`` in IBM/fmperf;
#: LLM-Pilot's specification file does not override it).
MAX_WAITING_TOKENS = 12
#: Context tokens per bucket when step times are memoised (the step time changes by far less).
CONTEXT_BUCKET_TOKENS = 64
#: Tensor-parallel all-reduces per decoder layer (after the attention output and after the MLP,
#: TGIS's ``TensorParallelRowLinear``), each a point where the ranks wait for one another.
ALL_REDUCES_PER_LAYER = 2


def launch_floor_s(config: ServingConfig) -> float:
    """Host time to launch one forward pass of ``config`` on an eager engine (0 when the engine has no :attr:`eager_launch`).

    Per layer of the stage: ``kernels_per_layer x launch_us``, plus ``ALL_REDUCES_PER_LAYER x
    rank_sync_us`` when the replica spans several GPUs (:class:`~guide_opt.frameworks.EagerLaunch`).
    The same kernels run in a prefill pass and in a decode step, so both have this floor.
    """
    launch = config.framework.eager_launch
    if launch is None:
        return 0.0
    sync_us = ALL_REDUCES_PER_LAYER * launch.rank_sync_us if config.tp * config.pp > 1 else 0.0
    return config.layers_per_stage * (launch.kernels_per_layer * launch.launch_us + sync_us) * 1e-6


def eager_step_s(config: ServingConfig, shape: StepShape, *, pipeline_fill: bool = False) -> float:
    """Seconds of one engine step of ``shape`` on an eager engine: host overhead + max(GPU work, launch floor).

    The GPU work (kernels and all-reduces of :func:`~guide_opt.perf.step.step_time`) overlaps
    the host's launches of it: the host runs ahead of a busy GPU, a fast GPU waits for the
    host, so the forward pass takes the longer of the two. The step model's host overhead
    (fixed per step, per sequence, multi-GPU hand-off) happens between forward passes and adds.
    """
    step = step_time(config, shape, pipeline_fill=pipeline_fill)
    return step.overhead_s + max(step.time_s - step.overhead_s, launch_floor_s(config))


@dataclass(frozen=True)
class TgisSettings:
    """How one TGIS deployment batches, and its host-side costs.

    max_batch_size: most requests running at once. padded: batches padded to their longest
    sequence (LLMs served without flash attention). max_waiting_tokens: ``M`` of the add-on
    rule. per_sequence_overhead_ms: host time added to every decode step per running sequence
    (token processing and stopping checks in TGIS's Python shard). prefill_overhead_ms: fixed
    host time of every prefill pass (building the add-on batch). kv_ms_per_gib: time added to
    every decode step per GiB of KV cache its sequences hold on one GPU (padded: every sequence
    at the longest context). addon_overhead_ms: host time added to a prefill pass that joins a
    running batch (an add-on; TGIS then merges the new batch into the running one).
    launch_floor: passes take max(GPU work, the profile's launch time) (:func:`eager_step_s`);
    off, they take the step model's time. :func:`default_settings` turns it on; the recommendation
    predictors of :mod:`~guide_opt.validation.pilot_predictors` leave it off (their fitted step
    overheads and host costs stand in for it).
    """

    max_batch_size: int
    padded: bool = False
    max_waiting_tokens: int = MAX_WAITING_TOKENS
    per_sequence_overhead_ms: float = 0.0
    prefill_overhead_ms: float = 0.0
    kv_ms_per_gib: float = 0.0
    addon_overhead_ms: float = 0.0
    launch_floor: bool = False


@dataclass(frozen=True)
class TgisLevel:
    """Medians of one closed-loop level (ms; nTTFT in ms per input token). fits: the batch fits in memory.

    itl_batch / itl_kv_gib: the mean running batch and KV cache (GiB on one GPU) of the decode
    steps that ended the middle decile of the inter-token gaps -- how much a per-sequence or
    per-GiB host cost moves the median ITL (the fit of :mod:`~guide_opt.validation.pilot_predictors`
    linearizes with them).
    """

    fits: bool
    median_ttft_ms: float
    median_nttft_ms_per_token: float
    median_itl_ms: float
    itl_batch: float = math.nan
    itl_kv_gib: float = math.nan

    @property
    def pilot_pair(self) -> tuple[float, float]:
        """(median nTTFT, median ITL), inf when it does not fit: the form LLM-Pilot's u_max rule reads."""
        return (self.median_nttft_ms_per_token, self.median_itl_ms) if self.fits else (math.inf, math.inf)


NOT_FITTING = TgisLevel(False, math.inf, math.inf, math.inf)

#: TGIS's host time per prefill pass (ms) with default factors: building the pass's batch in the Python shard
#: before its first kernel. Fitted on LLM-Pilot's one-user levels at the profile's shared compute efficiency
#: (:func:`guide_opt.validation.tgis_host.fit_all`;
#: held-out scores in benchmarks/RESULTS.md 1.2.1).
PREFILL_HOST_MS = 8.5
#: TGIS's host time per running sequence per decode step (ms) with default factors: the Python loop over the
#: batch's requests after every step (next-token choice, stopping checks, detokenization). Fitted on LLM-Pilot's
#: loaded levels (:func:`guide_opt.validation.tgis_host.fit_all`).
SEQUENCE_HOST_MS = 0.5


def default_settings(max_batch_size: int, padded: bool = False, *, prefill_host_ms: float | None = None,
                     sequence_host_ms: float | None = None) -> TgisSettings:
    """TGIS's batching with the engine's default host time: the launch floor on, host costs per prefill pass and per
    running sequence (None: :data:`PREFILL_HOST_MS`, :data:`SEQUENCE_HOST_MS`)."""
    return TgisSettings(max_batch_size, padded=padded, launch_floor=True,
                        per_sequence_overhead_ms=SEQUENCE_HOST_MS if sequence_host_ms is None else sequence_host_ms,
                        prefill_overhead_ms=PREFILL_HOST_MS if prefill_host_ms is None else prefill_host_ms)



class _StepTimes:
    """Memoised prefill-pass and decode-step times (s) of one configuration and settings."""

    def __init__(self, config: ServingConfig, settings: TgisSettings) -> None:
        self.config, self.settings = config, settings
        self._decode: dict[tuple[int, int], float] = {}
        self._prefill: dict[tuple[int, int, int], float] = {}

    def pass_s(self, shape: StepShape, *, pipeline_fill: bool) -> float:
        """One forward pass of ``shape``: under the launch floor when the settings ask for it."""
        if self.settings.launch_floor:
            return eager_step_s(self.config, shape, pipeline_fill=pipeline_fill)
        return step_time(self.config, shape, pipeline_fill=pipeline_fill).time_s

    def held_tokens(self, contexts: list[int]) -> int:
        """Context tokens a decode step of ``contexts`` holds and attends over (padded: each at the longest)."""
        return len(contexts) * max(contexts) if self.settings.padded else sum(contexts)

    def kv_gib(self, tokens: float) -> float:
        """GiB of KV cache ``tokens`` context tokens take on one GPU."""
        return tokens * self.config.kv_bytes_per_token / GIB_BYTES

    def decode_s(self, contexts: list[int]) -> float:
        n = len(contexts)
        key = (n, round(self.held_tokens(contexts) / CONTEXT_BUCKET_TOKENS))
        found = self._decode.get(key)
        if found is None:
            context = key[1] * CONTEXT_BUCKET_TOKENS
            found = self.pass_s(StepShape(n, n, context, context), pipeline_fill=False)
            found += (n * self.settings.per_sequence_overhead_ms + self.kv_gib(context) * self.settings.kv_ms_per_gib) * 1e-3
            self._decode[key] = found
        return found

    def prefill_s(self, prompts: list[int]) -> float:
        k = len(prompts)
        if self.settings.padded:
            longest = max(prompts)
            tokens, attended = k * longest, k * longest * (longest + 1) / 2
        else:
            tokens, attended = sum(prompts), sum(p * (p + 1) / 2 for p in prompts)
        key = (k, round(tokens / 16), round(attended / (16 * CONTEXT_BUCKET_TOKENS)))
        found = self._prefill.get(key)
        if found is None:
            found = self.pass_s(StepShape(max(1, key[1] * 16), k, key[2] * 16.0 * CONTEXT_BUCKET_TOKENS, 0.0), pipeline_fill=True)
            found += self.settings.prefill_overhead_ms * 1e-3
            self._prefill[key] = found
        return found


def fits_in_memory(config: ServingConfig, users: int, settings: TgisSettings) -> bool:
    """Whether the batch TGIS would run for ``users`` users (at most ``max_batch_size``) fits in guide-opt's memory model."""
    return estimate(replace(config, batch=max(1, min(users, settings.max_batch_size)))).runs


def tgis_closed_loop(config: ServingConfig, users: int, lengths: HistogramLengths, settings: TgisSettings, *,
                     num_requests: int, seed: int = 0) -> TgisLevel:
    """Medians of ``users`` users with zero think time on TGIS (see the module docstring).

    ``num_requests`` requests are measured, after ``users`` warm-up requests; ``users`` more keep
    the load up while the measured ones finish. Each user sends its next request the moment its
    previous answer completes. Returns :data:`NOT_FITTING` when the running batch does not fit.
    """
    if users < 1 or num_requests < 1:
        raise ValueError("users and num_requests must be at least 1")
    if not fits_in_memory(config, users, settings):
        return NOT_FITTING
    rng = np.random.default_rng(seed)
    total = num_requests + 2 * users
    measured = range(users, users + num_requests)
    inputs, outputs = (a.tolist() for a in lengths.sample(rng, total))
    times = _StepTimes(config, settings)
    queue: deque[tuple[int, float]] = deque((i, 0.0) for i in range(users))
    submitted = users
    running: list[list] = []  # [request, tokens left, context tokens, time of its last token]
    ttft, itl, itl_batch, itl_kv = np.full(total, math.nan), [], [], []
    done_measured, now, waiting = 0, 0.0, 0

    def finish(request: int) -> None:
        nonlocal submitted, done_measured
        if request in measured:
            done_measured += 1
        if submitted < total:
            queue.append((submitted, now))
            submitted += 1

    def prefill(count: int) -> None:
        nonlocal now
        batch = [queue.popleft() for _ in range(count)]
        now += times.prefill_s([inputs[r] for r, _ in batch]) + (settings.addon_overhead_ms * 1e-3 if running else 0.0)
        for request, arrived in batch:
            ttft[request] = now - arrived
            if outputs[request] <= 1:
                finish(request)
            else:
                running.append([request, outputs[request] - 1, inputs[request] + 1, now])

    while done_measured < num_requests:
        if not running:
            prefill(min(len(queue), settings.max_batch_size))
            waiting = 1
            continue
        batch = len(running)
        if batch <= 1 or waiting >= settings.max_waiting_tokens:
            min_size = 1
        else:
            min_size = max(1, batch * (settings.max_waiting_tokens - waiting) // settings.max_waiting_tokens)
        room = settings.max_batch_size - batch
        if queue and room > 0 and len(queue) >= min_size:
            prefill(min(len(queue), room))
            waiting = 1
        contexts = [seq[2] for seq in running]
        now += times.decode_s(contexts)
        waiting += 1
        kv_gib = times.kv_gib(times.held_tokens(contexts))
        still = []
        for seq in running:
            if seq[0] in measured:
                itl.append(now - seq[3])
                itl_batch.append(batch)
                itl_kv.append(kv_gib)
            seq[1] -= 1
            seq[2] += 1
            seq[3] = now
            if seq[1] == 0:
                finish(seq[0])
            else:
                still.append(seq)
        running = still
    sel = ttft[users:users + num_requests]
    per_token = sel / np.array(inputs[users:users + num_requests], dtype=float)
    if not itl:
        return TgisLevel(True, float(np.median(sel)) * 1e3, float(np.median(per_token)) * 1e3, math.inf)
    order = np.argsort(itl, kind="stable")
    middle = order[int(0.45 * len(order)):int(0.55 * len(order)) + 1]
    return TgisLevel(True, float(np.median(sel)) * 1e3, float(np.median(per_token)) * 1e3, float(np.median(itl)) * 1e3,
                     float(np.mean(np.array(itl_batch)[middle])), float(np.mean(np.array(itl_kv)[middle])))
