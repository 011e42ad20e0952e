"""A static batch the KV cache cannot hold at once, on an engine that preempts by recompute.

The static estimate (:func:`guide_opt.perf.estimate`) runs such a batch in waves of as many
sequences as fit to their last token, one wave after the other: how an engine behaves that
admits a request only when its whole sequence fits (TensorRT-LLM's default
``GUARANTEED_NO_EVICT`` scheduler). vLLM admits a prompt when the blocks it needs *now* are
free, so it starts more sequences than fit to the end; when the growing sequences run out of
blocks it preempts the newest by recompute (its blocks freed, its prompt and the tokens it had
generated prefilled again later). The serving simulator (:mod:`guide_opt.simulate.engine`)
plays that policy, so a measured static batch of such an engine is read as the simulator
serving its ``batch`` requests arriving together (:func:`burst_batch_latency_s`): the waves
estimate times :func:`wave_slowdown`.

Measured on LLM-Inference-Bench's rows that run in waves (``benchmarks/bench_wave_rows.py``,
RESULTS.md section 16), vLLM's read this way and TensorRT-LLM's as waves. Only the batch
latency (and the throughput derived from it) is read so; a row's TTFT and TPOT keep the waves
reading. Fits hold the slowdown at their starting factors
(:class:`~guide_opt.validation.calibration.PreparedRow`), as they hold TurboMind's wait for
blocks: a simulation per row at every evaluation of a fit would dominate it.
"""

from __future__ import annotations

from guide_opt.perf.config import ServingConfig
from guide_opt.simulate import SimulationResult, simulate
from guide_opt.simulate.workloads import FixedLengths, Workload

#: Engines whose scheduler admits a prompt by the KV blocks it needs now and preempts the newest sequence by
#: recompute when the running ones run out (vLLM's scheduler: ``can_allocate`` for the prompt's blocks,
#: ``PreemptionMode.RECOMPUTE`` for single-sequence requests).
RECOMPUTE_PREEMPTION = frozenset({"vllm"})
#: Simulated burst latencies kept per configuration (``repr``: every field that moves the simulation).
_CACHE_SIZE = 4096
_cache: dict[str, float] = {}


def preempts_by_recompute(config: ServingConfig) -> bool:
    """Whether ``config``'s engine admits by the prompt's blocks and preempts by recompute (:data:`RECOMPUTE_PREEMPTION`)."""
    return config.framework.id in RECOMPUTE_PREEMPTION


def read_as_preempted(config: ServingConfig, *, in_waves: bool, closed_loop: bool) -> bool:
    """Whether a measured row of ``config`` takes the simulated burst's batch latency: a static batch (not a closed
    loop) that the estimate runs in waves (``in_waves``), on an engine that preempts by recompute."""
    return in_waves and not closed_loop and preempts_by_recompute(config)


def burst_run(config: ServingConfig) -> SimulationResult:
    """The engine simulator serving ``config.batch`` requests of ``input_tokens`` + ``output_tokens`` arriving together
    (max-num-seqs ``batch``, the engine's token budget, the KV cache its memory holds)."""
    return simulate(config, Workload.burst(FixedLengths(config.input_tokens, config.output_tokens)), max_num_seqs=config.batch,
                    max_num_batched_tokens=max(config.step_token_budget, config.batch), num_requests=config.batch)


def burst_batch_latency_s(config: ServingConfig) -> float:
    """Seconds until the last request of :func:`burst_run` completes.

    Memoised per configuration: validation evaluates the same rows many times.
    """
    key = repr(config)
    found = _cache.get(key)
    if found is None:
        if len(_cache) >= _CACHE_SIZE:
            _cache.clear()
        found = _cache[key] = burst_run(config).duration_s
    return found


def wave_slowdown(config: ServingConfig, waves_batch_latency_s: float) -> float:
    """The simulated burst's latency over the waves estimate's (``waves_batch_latency_s``) for ``config``."""
    return burst_batch_latency_s(config) / waves_batch_latency_s
