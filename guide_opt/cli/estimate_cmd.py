"""``guide-opt estimate``: the predicted metrics of one configuration, in one of two modes.

- **burst** (``--batch B``, the default with B = 1): a batch of B prompts arriving at once,
  prefilled then decoded together (the static estimator; GUIDE's view).
- **steady state** (``--concurrency C`` or ``--rate R``): a running server under a closed loop
  of C users or Poisson arrivals at R requests/s, with max-num-seqs ``--max-num-seqs``
  (:mod:`guide_opt.perf.steady_state`) -- the numbers a ``vllm bench serve`` run reports:
  mean / median / p90 / p99 TTFT, TPOT and ITL, and output throughput.

JSON says which with ``mode``; ``metrics.ttft_ms`` and ``metrics.tpot_ms`` are always plain
numbers, the means of the mode asked (for a burst, the batch's mean TTFT and mean TPOT).
"""

from __future__ import annotations

import dataclasses
import math

import click

from guide_opt import limits
from guide_opt.answer import beyond_capacity_reason, estimate_payload, not_fitting_reason, steady_payload
from guide_opt.cli.app import cli
from guide_opt.cli.common import FiniteFloatRange, batch_int, build_config, capacity_share_text, positive_int, replica_options
from guide_opt.cli.output import echo_json, echo_pairs, fmt_number, format_option
from guide_opt.errors import InputError
from guide_opt.perf import ESTIMATORS, Estimate, steady_state


@cli.command("estimate")
@replica_options
@click.option("--batch", type=batch_int, default=None, help="Burst mode: a batch of this many prompts arriving at once [default: 1].")
@click.option("--concurrency", type=click.IntRange(1, limits.MAX_CONCURRENT_USERS), default=None,
              help="Steady state, closed loop: this many users, each sending its next request when the last completes.")
@click.option("--rate", type=FiniteFloatRange(min=0, min_open=True, max=limits.MAX_REQUEST_RATE_PER_S), default=None,
              help="Steady state, open loop: Poisson arrivals, requests per second.")
@click.option("--max-num-seqs", type=batch_int, default=None,
              help="Steady state: concurrent sequences per replica [default: the framework's, capped by what fits in memory].")
@click.option("--input-tokens", type=positive_int, default=512, show_default=True, help="Prompt tokens per request.")
@click.option("--output-tokens", type=positive_int, default=128, show_default=True, help="Generated tokens per request.")
@click.option("--no-flash-attention", is_flag=True, help="Model attention without FlashAttention (materialized scores).")
@click.option("--h2o-kept-fraction", type=FiniteFloatRange(0, 1, min_open=True), default=1.0, show_default=True, help="Fraction of KV entries kept by H2O eviction.")
@click.option("--expert-parallel", is_flag=True,
              help="Place MoE experts whole, num_experts / tp per GPU (vLLM --enable-expert-parallel; SGLang --ep-size = --tp).")
@click.option("--estimator", type=click.Choice(sorted(ESTIMATORS)), default="roofline", show_default=True, help="guide-opt's roofline model or GUIDE's published equations.")
@format_option
def estimate_command(model, gpu, tp, pp, framework, quantization, kv_cache_dtype, batch, concurrency, rate, max_num_seqs, input_tokens,
                     output_tokens, no_flash_attention, h2o_kept_fraction, expert_parallel, estimator, output_format) -> int:
    """Predict TTFT, TPOT, throughput and memory of one configuration: a burst (--batch) or a steady state (--concurrency / --rate).

    Exit code 0 when the engine serves it (a burst: all of it resident, or in waves of what the
    KV cache holds; a steady state: max-num-seqs resident and the load within capacity), 2 when
    it does not (the numbers say by how much).
    """
    _check_mode(batch, concurrency, rate, max_num_seqs, estimator)
    config = build_config(
        model=model, gpu=gpu, tp=tp, pp=pp, framework=framework, quantization=quantization, kv_cache_dtype=kv_cache_dtype,
        batch=batch or 1, input_tokens=input_tokens, output_tokens=output_tokens, flash_attention=not no_flash_attention,
        h2o_kept_fraction=h2o_kept_fraction, expert_parallel=expert_parallel,
    )
    if concurrency is None and rate is None:
        est = ESTIMATORS[estimator](config)
        if output_format == "json":
            echo_json(estimate_payload(est))
        else:
            _print_table(est)
        return 0 if est.runs else 2
    if max_num_seqs is None:  # the engine's limit, or as many sequences of these lengths as the KV cache holds
        max_num_seqs = max(1, min(config.framework.max_num_seqs, ESTIMATORS[estimator](config).max_batch))
    config = dataclasses.replace(config, batch=max_num_seqs)
    est = ESTIMATORS[estimator](config)
    if not est.fits:
        if output_format == "json":
            echo_json(steady_payload(est, None, math.nan))
        else:
            _print_table(est)
        return 2
    table = steady_state.StepTable(config)
    capacity = steady_state.capacity_request_rate_per_s(config, table)
    state = (steady_state.closed_loop(config, concurrency, table, capacity_per_s=capacity) if concurrency is not None
             else steady_state.open_loop(config, rate, table, capacity_per_s=capacity))
    if output_format == "json":
        echo_json(steady_payload(est, state, capacity))
    else:
        _print_steady(est, state, capacity)
    return 0 if state.stable else 2


def _check_mode(batch: int | None, concurrency: int | None, rate: float | None, max_num_seqs: int | None, estimator: str) -> None:
    """One mode per run: --batch (burst) or --concurrency / --rate (steady state)."""
    given = [name for name, value in (("--batch", batch), ("--concurrency", concurrency), ("--rate", rate)) if value is not None]
    if len(given) > 1:
        raise InputError(" and ".join(given), "these ask different questions: --batch a burst of prompts arriving at once, "
                         "--concurrency / --rate a steady-state server", "give only one of them")
    if max_num_seqs is not None and concurrency is None and rate is None:
        raise InputError("--max-num-seqs", "only a steady-state estimate has a max-num-seqs", "add --concurrency C or --rate R, or use --batch")
    if (concurrency is not None or rate is not None) and estimator != "roofline":
        raise InputError("--estimator", f"the steady-state model is built on the roofline step model, not {estimator}",
                         "use --estimator roofline with --concurrency / --rate, or --batch for GUIDE's equations")


def _print_table(est: Estimate) -> None:
    c = est.config
    title = (f"{c.llm.id} on {c.num_gpus} x {c.gpu.id} (TP={c.tp}, PP={c.pp}), {c.framework.id}, {c.quantization.id}, "
             f"batch {c.batch}, {c.input_tokens} in / {c.output_tokens} out tokens [burst: all prompts at once, {est.estimator}]")
    gib = est.memory.as_gib()
    memory = (f"{gib['used_gib']:.1f} of {gib['device_gib']:.0f} GiB per GPU ({est.memory.utilization:.0%}): weights {gib['weights_gib']:.1f}, "
              f"KV {gib['kv_cache_gib']:.1f}, activations {gib['activations_gib']:.1f}, reserve {gib['reserve_gib']:.1f}")
    pairs = [("memory", memory), ("max batch", f"{est.max_batch} (at {c.input_tokens + c.output_tokens} tokens per sequence)"),
             ("max sequence length", f"{est.max_sequence_length} tokens (at batch {c.batch})")]
    if est.phases:
        p = est.phases
        pairs = [
            ("TTFT", f"{fmt_number(p.ttft_s * 1e3)} ms (prefill {p.prefill_bound.value}-bound)"),
            ("TPOT", f"{fmt_number(p.tpot_s * 1e3)} ms (decode {p.decode_bound.value}-bound)"),
            ("batch latency", f"{fmt_number(p.batch_latency_s)} s"),
            ("throughput", f"{fmt_number(est.throughput_tokens_per_s)} tokens/s (decode {fmt_number(est.decode_throughput_tokens_per_s)} tokens/s)"),
        ] + pairs
        if not est.fits:
            pairs.append(("waves", not_fitting_reason(est)))
    else:
        pairs = [("fits", "NO: " + not_fitting_reason(est))] + pairs
    echo_pairs(title, pairs)


def _print_steady(est: Estimate, state: steady_state.SteadyState, capacity_per_s: float) -> None:
    c = est.config
    load = (f"{int(state.concurrent_users)} concurrent users (closed loop)" if state.mode == "closed_loop"
            else f"{state.request_rate_per_s:.4g} requests/s (open loop, Poisson)")
    title = (f"{c.llm.id} on {c.num_gpus} x {c.gpu.id} (TP={c.tp}, PP={c.pp}), {c.framework.id}, {c.quantization.id}, "
             f"max-num-seqs {c.batch}, {c.input_tokens} in / {c.output_tokens} out tokens [steady state, {load}]")
    gib = est.memory.as_gib()
    memory = f"{gib['used_gib']:.1f} of {gib['device_gib']:.0f} GiB per GPU ({est.memory.utilization:.0%})"
    if not state.stable:
        echo_pairs(title, [("stable", "NO: " + beyond_capacity_reason(state, capacity_per_s)), ("memory", memory)])
        return
    row = lambda d: (f"mean {fmt_number(d.mean_s * 1e3)}, median {fmt_number(d.p50_s * 1e3)}, p90 {fmt_number(d.p90_s * 1e3)}, "  # noqa: E731
                     f"p99 {fmt_number(d.p99_s * 1e3)} ms")
    utilization = ("" if math.isnan(state.utilization) else
                   f" ({capacity_share_text(state.utilization, closed_loop=state.mode == 'closed_loop', capacity_per_s=capacity_per_s)})")
    echo_pairs(title, [
        ("TTFT", row(state.ttft)),
        ("TPOT", row(state.tpot)),
        ("ITL", row(state.itl)),
        ("output throughput", f"{fmt_number(state.output_throughput_tokens_per_s)} tokens/s"),
        ("request throughput", f"{state.request_rate_per_s:.4g} requests/s{utilization}"),
        ("mean E2E latency", f"{fmt_number(state.e2e_mean_s * 1e3)} ms"),
        ("memory", memory),
    ])
