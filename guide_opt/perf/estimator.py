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

A configuration whose memory does not fit has ``fits = False`` and no latencies.
"""

from __future__ import annotations

from dataclasses import dataclass

from guide_opt.perf.config import ServingConfig
from guide_opt.perf.memory import MemoryBreakdown, max_batch, max_sequence_length, memory_breakdown
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
    """Predicted metrics of one :class:`ServingConfig`."""

    config: ServingConfig
    fits: bool
    memory: MemoryBreakdown
    max_batch: int
    max_sequence_length: int
    phases: PhaseTimes | None
    estimator: str = "roofline"

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
    budget = config.step_token_budget
    prompt, batch = config.input_tokens, config.batch
    if config.framework.prefill_mode == "whole":
        per_step = max(1, budget // prompt)
        steps = []
        for done in range(0, batch, per_step):
            n = min(per_step, batch - done)
            steps.append((StepShape.prefill_chunk(n, prompt), n))
        return steps
    # Chunked / SplitFuse: every step takes the next `budget` tokens of the concatenated prompts,
    # so a step may end one prompt and start the next (packing whole prompts instead would let
    # a longer prompt lower the mean TTFT).
    steps = []
    request, offset = 0, 0  # the prompt being prefilled and its tokens already done
    while request < batch:
        room, new_tokens, sequences, attended, kv_read, finished = budget, 0, 0, 0.0, 0.0, 0
        while room and request < batch:
            chunk = min(room, prompt - offset)
            piece = StepShape.prefill_chunk(1, chunk, offset)
            new_tokens, sequences = new_tokens + chunk, sequences + 1
            attended, kv_read = attended + piece.attended_tokens, kv_read + piece.kv_read_tokens
            room, offset = room - chunk, offset + chunk
            if offset == prompt:
                request, offset, finished = request + 1, 0, finished + 1
        steps.append((StepShape(new_tokens, sequences, attended, kv_read), finished))
    return steps


def _dominant(times: list[StepTime]) -> Bound:
    totals = {b: 0.0 for b in Bound}
    for t in times:
        totals[Bound.COMPUTE] += t.compute_s
        totals[Bound.MEMORY] += t.memory_s
        totals[Bound.NETWORK] += t.network_s
        totals[Bound.OVERHEAD] += t.overhead_s
    return max(totals, key=totals.__getitem__)


def phase_times(config: ServingConfig) -> PhaseTimes:
    """Prefill and decode times of ``config`` (whether or not it fits)."""
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


def estimate(config: ServingConfig) -> Estimate:
    """Predict the metrics of ``config``; memory that does not fit gives ``fits=False`` and no latencies.

    Raises ``ValueError`` when the configuration cannot run at all (see
    :meth:`ServingConfig.unsupported_reason`).
    """
    reason = config.unsupported_reason()
    if reason:
        raise ValueError(reason)
    memory = memory_breakdown(config)
    fits = memory.fits
    return Estimate(
        config=config,
        fits=fits,
        memory=memory,
        max_batch=max_batch(config),
        max_sequence_length=max_sequence_length(config),
        phases=phase_times(config) if fits else None,
    )
