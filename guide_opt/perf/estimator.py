"""Static estimate of one configuration: TTFT, TPOT, batch latency, throughput, memory.

The batch of ``batch`` requests with ``input_tokens`` prompt tokens is prefilled first, in
engine steps of at most the framework's token budget (chunked prefill / SplitFuse), then
decoded together for ``output_tokens`` tokens. Definitions:

- ``ttft_s``: mean over the batch of the time until each request's first token.
- ``tpot_s``: mean decode step time (context grows from input to input + output tokens;
  step time is affine in the context, so the step at the mean context is the exact mean).
- ``batch_latency_s``: time until the whole batch finishes (all prefill + the decode steps).
- ``throughput_tokens_per_s``: generated tokens of the batch / batch latency.
- ``decode_throughput_tokens_per_s``: batch / TPOT (tokens per second while decoding).

``fits`` says whether the whole batch's KV cache is resident at once (what the planner
needs). A batch larger than the KV cache holds still runs on a continuous-batching engine,
which admits what fits and queues the rest; the estimate then runs the batch in ``waves`` of
at most ``max_batch`` sequences, one after the other, and gives the requests whose prompts the
cache holds on arrival their first token in the first prefill (engines admit by prompt size
and preempt later). A first-order view: the simulator models admission and preemption step
by step. Only when the engine cannot serve
one request (:func:`~guide_opt.perf.memory.engine_start_reason`) are there no latencies.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

from guide_opt.perf.config import ServingConfig
from guide_opt.perf.memory import MemoryBreakdown, engine_start_reason, max_admitted_prompts, max_batch, max_sequence_length, memory_breakdown
from guide_opt.perf.roofline import Bound
from guide_opt.perf.step import StepShape, StepTime, step_time


@dataclass(frozen=True)
class PhaseTimes:
    """Latency figures of one configuration (all None when it does not fit)."""

    ttft_s: float
    tpot_s: float
    batch_latency_s: float
    prefill_total_s: float
    prefill_bound: Bound
    decode_bound: Bound


@dataclass(frozen=True)
class Estimate:
    """Predicted metrics of one :class:`ServingConfig`.

    fits: the whole batch is resident in the KV cache at once.
    waves: how many successive groups of at most ``max_batch`` sequences the batch runs in
        (1 when it fits).
    start_reason: why the engine cannot serve even one request (None when it can); then
        ``phases`` is None.
    """

    config: ServingConfig
    fits: bool
    memory: MemoryBreakdown
    max_batch: int
    max_sequence_length: int
    phases: PhaseTimes | None
    estimator: str = "roofline"
    waves: int = 1
    start_reason: str | None = None

    @property
    def runs(self) -> bool:
        """True when the engine serves the batch (resident, or in waves); then the latencies are set."""
        return self.phases is not None

    @property
    def ttft_s(self) -> float | None:
        """Mean time to first token (s), None when it does not fit."""
        return self.phases.ttft_s if self.phases else None

    @property
    def tpot_s(self) -> float | None:
        """Mean time per output token after the first (s)."""
        return self.phases.tpot_s if self.phases else None

    @property
    def batch_latency_s(self) -> float | None:
        """Time to finish the whole batch (s)."""
        return self.phases.batch_latency_s if self.phases else None

    @property
    def throughput_tokens_per_s(self) -> float | None:
        """Generated tokens per second of one replica over the whole batch."""
        if not self.phases:
            return None
        return self.config.batch * self.config.output_tokens / self.phases.batch_latency_s

    @property
    def decode_throughput_tokens_per_s(self) -> float | None:
        """Tokens per second of one replica while decoding (batch / TPOT)."""
        return self.config.batch / self.phases.tpot_s if self.phases else None

    def metrics(self) -> dict[str, float | None]:
        """The contract's ``metrics`` object (milliseconds and tokens/s)."""
        p = self.phases
        return {
            "ttft_ms": p.ttft_s * 1e3 if p else None,
            "tpot_ms": p.tpot_s * 1e3 if p else None,
            "batch_latency_s": p.batch_latency_s if p else None,
            "throughput_tokens_per_s": self.throughput_tokens_per_s,
            "memory_utilization": self.memory.utilization,
        }


def prefill_schedule(config: ServingConfig) -> list[tuple[StepShape, int]]:
    """The prefill steps of the batch as (shape, requests whose prompt completes in this step).

    ``whole``: each step packs whole prompts up to the token budget (at least one prompt).
    ``chunked`` / ``split_fuse``: steps of exactly the token budget over the concatenated
    prompts, a prompt's tail finishing in the step that holds its last token.
    """
    return list(prefill_steps(config.framework.prefill_mode, config.step_token_budget, config.input_tokens, config.batch))


@functools.lru_cache(maxsize=1 << 16)
def prefill_steps(prefill_mode: str, budget_tokens: int, prompt_tokens: int, prompts: int) -> tuple[tuple[StepShape, int], ...]:
    """:func:`prefill_schedule` of ``prompts`` prompts of ``prompt_tokens`` tokens with a step budget of ``budget_tokens``.

    A schedule depends on nothing else, so it is memoised: the shapes of a search space share
    their engines' budgets, and the steady-state model asks for the windows of the same prompt
    counts next to every decode count (:class:`guide_opt.perf.steady_state.StepTable`).
    """
    if prefill_mode == "whole":
        per_step = max(1, budget_tokens // prompt_tokens)
        steps = []
        for done in range(0, prompts, per_step):
            n = min(per_step, prompts - done)
            steps.append((StepShape.prefill_chunk(n, prompt_tokens), n))
        return tuple(steps)
    # Chunked / SplitFuse: every step takes the next `budget` tokens of the concatenated prompts,
    # so a step may end one prompt and start the next (packing whole prompts instead would let
    # a longer prompt lower the mean TTFT).
    steps = []
    request, offset = 0, 0  # the prompt being prefilled and its tokens already done
    while request < prompts:
        room, new_tokens, sequences, attended, kv_read, finished = budget_tokens, 0, 0, 0.0, 0.0, 0
        while room and request < prompts:
            chunk = min(room, prompt_tokens - offset)
            piece = StepShape.prefill_chunk(1, chunk, offset)
            new_tokens, sequences = new_tokens + chunk, sequences + 1
            attended, kv_read = attended + piece.attended_tokens, kv_read + piece.kv_read_tokens
            room, offset = room - chunk, offset + chunk
            if offset == prompt_tokens:
                request, offset, finished = request + 1, 0, finished + 1
        steps.append((StepShape(new_tokens, sequences, attended, kv_read), finished))
    return tuple(steps)


def _dominant(times: list[StepTime]) -> Bound:
    totals = {b: 0.0 for b in Bound}
    for t in times:
        totals[Bound.COMPUTE] += t.compute_s
        totals[Bound.MEMORY] += t.memory_s
        totals[Bound.NETWORK] += t.network_s
        totals[Bound.OVERHEAD] += t.overhead_s
    return max(totals, key=totals.__getitem__)


def _resident_phase_times(config: ServingConfig) -> PhaseTimes:
    """Prefill and decode times of ``config``'s batch, all of it resident at once."""
    elapsed_s, first_token_sum_s, prefill_steps = 0.0, 0.0, []
    times_by_shape: dict[StepShape, StepTime] = {}  # whole-prompt steps repeat: compute each shape once
    for shape, finished in prefill_schedule(config):
        t = times_by_shape.get(shape)
        if t is None:
            t = times_by_shape[shape] = step_time(config, shape, pipeline_fill=True)
        prefill_steps.append(t)
        elapsed_s += t.time_s
        first_token_sum_s += finished * elapsed_s
    mean_context = config.input_tokens + (config.output_tokens - 1) / 2
    decode = step_time(config, StepShape.decode(config.batch, mean_context))
    decode_steps = config.output_tokens - 1
    return PhaseTimes(
        ttft_s=first_token_sum_s / config.batch,
        tpot_s=decode.time_s,
        batch_latency_s=elapsed_s + decode_steps * decode.time_s,
        prefill_total_s=elapsed_s,
        prefill_bound=_dominant(prefill_steps),
        decode_bound=decode.bound,
    )


def wave_sizes(batch: int, running: int) -> list[int]:
    """The batch split into successive waves of at most ``running`` sequences (the last one takes the rest)."""
    full, rest = divmod(batch, running)
    return [running] * full + ([rest] if rest else [])


def phase_times(config: ServingConfig, running: int | None = None, admitted: int | None = None) -> PhaseTimes:
    """Prefill and decode times of ``config`` (whether or not it fits).

    ``running``: the most sequences resident at once (default: the whole batch). A larger
    batch runs in :func:`wave_sizes` waves one after the other: a request of a later wave waits
    for the earlier waves to finish; TPOT and latency are those of the waves. ``admitted``: how
    many requests get their first token in the burst's first prefill, because the engine admits
    by prompt size (see :func:`~guide_opt.perf.memory.max_admitted_prompts`; default
    ``running``); the others get it in their wave. TTFT and TPOT are means over requests.
    """
    if running is None or running >= config.batch:
        return _resident_phase_times(config)
    admitted = min(config.batch, max(running, admitted or running))
    cache: dict[int, PhaseTimes] = {}

    def resident(size: int) -> PhaseTimes:
        if size not in cache:
            cache[size] = _resident_phase_times(dataclasses.replace(config, batch=size))
        return cache[size]

    first_token_sum_s = admitted * resident(admitted).ttft_s  # prefilled as soon as the burst arrives
    elapsed_s = tpot_sum_s = prefill_s = 0.0
    first: PhaseTimes | None = None
    position = 0  # requests ahead of this wave in arrival order
    for size in wave_sizes(config.batch, running):
        wave = resident(size)
        first = first or wave
        late = max(0, min(size, position + size - admitted))  # this wave's requests not admitted on arrival
        first_token_sum_s += late * (elapsed_s + wave.ttft_s)
        tpot_sum_s += size * wave.tpot_s
        prefill_s += wave.prefill_total_s
        elapsed_s += wave.batch_latency_s
        position += size
    assert first is not None
    return PhaseTimes(
        ttft_s=first_token_sum_s / config.batch,
        tpot_s=tpot_sum_s / config.batch,
        batch_latency_s=elapsed_s,
        prefill_total_s=prefill_s,
        prefill_bound=first.prefill_bound,
        decode_bound=first.decode_bound,
    )


def estimate(config: ServingConfig) -> Estimate:
    """Predict the metrics of ``config``.

    A batch the KV cache cannot hold at once runs in waves of ``max_batch`` sequences
    (``fits=False``, ``waves > 1``); an engine that cannot serve one request gives no latencies
    and says why (``start_reason``). Raises ``ValueError`` when the configuration cannot run
    at all (see :meth:`ServingConfig.unsupported_reason`).
    """
    reason = config.unsupported_reason()
    if reason:
        raise ValueError(reason)
    memory = memory_breakdown(config)
    resident = max_batch(config)
    start_reason = engine_start_reason(config)
    waves = 1 if memory.fits or start_reason else len(wave_sizes(config.batch, resident))
    return Estimate(
        config=config,
        fits=memory.fits,
        memory=memory,
        max_batch=resident,
        max_sequence_length=max_sequence_length(config),
        phases=None if start_reason else phase_times(config, None if memory.fits else resident, max_admitted_prompts(config)),
        waves=waves,
        start_reason=start_reason,
    )
