"""``guide-opt simulate``: serve a request stream on a configuration with the discrete-event simulator."""

from __future__ import annotations

import json
from pathlib import Path

import click

from guide_opt.cli.app import cli
from guide_opt import limits
from guide_opt.cli.common import FiniteFloatRange, batch_int, build_config, positive_int, replica_options, seed_int
from guide_opt.cli.output import echo_json, echo_pairs, fmt_number, format_option
from guide_opt.catalog import parse_yaml_text
from guide_opt.errors import InputError
from guide_opt.limits import read_text_file
from guide_opt.simulate import (BALANCERS, CLOSED_LOOP_RANGE_RATIO, POLICIES, PRESETS, FixedLengths, GoodputTargets, JointBinnedLengths, RangeLengths,
                                SimulationResult, Workload, simulate)
from guide_opt.simulate.workload_spec import workload_from_spec
from guide_opt.simulate.workloads import LengthDistribution

DEFAULT_INPUT_TOKENS = 512
DEFAULT_OUTPUT_TOKENS = 128


def resolve_lengths(workload: str | None, input_tokens: int | None, output_tokens: int | None, range_ratio: float = 0.0) -> LengthDistribution:
    """Token lengths from ``--workload`` (preset, trace CSV, YAML/JSON workload file) or ``--input/--output-tokens``
    (spread uniformly by ``--range-ratio``, as ``vllm bench serve --random-range-ratio``)."""
    if workload is None:
        inputs, outputs = input_tokens or DEFAULT_INPUT_TOKENS, output_tokens or DEFAULT_OUTPUT_TOKENS
        return RangeLengths(inputs, outputs, range_ratio) if range_ratio else FixedLengths(inputs, outputs)
    if input_tokens is not None or output_tokens is not None:
        raise InputError("--workload", "cannot be combined with --input-tokens/--output-tokens", "give either a workload or fixed lengths")
    if range_ratio:
        raise InputError("--range-ratio", "spreads --input-tokens/--output-tokens, not a --workload", "drop --range-ratio or give fixed lengths")
    if workload in PRESETS:
        return PRESETS[workload]
    path = Path(workload)
    if not path.is_file():
        raise InputError("--workload", f"'{workload}' is neither a preset nor a file",
                         f"use a preset ({', '.join(PRESETS)}), a trace CSV with n_input_tokens,n_output_tokens, or a YAML/JSON workload file")
    if path.suffix.lower() == ".csv":
        return JointBinnedLengths.from_csv(path, field="--workload")
    text = read_text_file(path, "--workload")  # text only, within the size limit
    try:
        spec = json.loads(text) if path.suffix.lower() == ".json" else parse_yaml_text(text, "--workload")  # aliases bounded
    except (json.JSONDecodeError, RecursionError) as exc:
        raise InputError("--workload", f"cannot parse '{workload}' ({type(exc).__name__})", "fix the YAML/JSON syntax") from None
    if isinstance(spec, dict):
        for key in ("request_rate_per_s", "concurrent_users"):
            if key in spec:
                raise InputError(f"--workload: {key}", "arrivals come from the command line", f"remove {key} from the file and use --rate or --users")
    return workload_from_spec(spec, field=f"--workload {path.name}", base_dir=path.parent).lengths


def check_context(llm, lengths: LengthDistribution, field: str) -> None:
    """Refuse (exit 1, like ``estimate`` and ``solve``) requests whose mean length exceeds the LLM's context."""
    total = lengths.mean_input_tokens + lengths.mean_output_tokens
    if total > llm.max_position_embeddings:
        raise InputError(field, f"{lengths.mean_input_tokens:,.0f} input + {lengths.mean_output_tokens:,.0f} output tokens exceed the context of "
                                f"{llm.id} ({llm.max_position_embeddings:,} tokens)", "give shorter requests or an LLM with a longer context")


def simulate_payload(config, result: SimulationResult, workload: Workload) -> dict:
    """The JSON object printed by ``simulate --format json``: the configuration, the workload and :meth:`SimulationResult.metrics`."""
    return {
        "model": config.llm.id,
        "gpu": config.gpu.id,
        "tp": config.tp,
        "pp": config.pp,
        "framework": config.framework.id,
        "quantization": config.quantization.id,
        "kv_cache_dtype": config.kv_cache_dtype,
        "workload": {**(_lengths_spec(workload.lengths) or workload.spec()), **_arrival_spec(workload), "arrival": workload.arrival, "mean_input_tokens": workload.lengths.mean_input_tokens,
                     "mean_output_tokens": workload.lengths.mean_output_tokens},
        **result.metrics(),
    }


def _arrival_spec(workload: Workload) -> dict:
    keys = ("request_rate_per_s", "concurrent_users")
    return {k: v for k, v in workload.spec().items() if k in keys}


def _lengths_spec(lengths: LengthDistribution) -> dict:
    """``{"preset": NAME}`` for a preset (instead of its bins), else nothing extra."""
    for name, preset in PRESETS.items():
        if lengths is preset:
            return {"preset": name}
    return {}


@cli.command("simulate")
@replica_options
@click.option("--replicas", type=click.IntRange(1, limits.MAX_SIMULATED_REPLICAS), default=1, show_default=True, help="Identical replicas behind the load balancer.")
@click.option("--balancer", type=click.Choice(BALANCERS), default="round_robin", show_default=True, help="How requests are spread over replicas (random: as a Kubernetes Service does, and as solve's plan check simulates).")
@click.option("--max-num-seqs", type=batch_int, default=None, help="Concurrent sequences per replica [default: the framework's].")
@click.option("--max-num-batched-tokens", type=batch_int, default=None, help="Token budget per engine step [default: the framework's].")
@click.option("--policy", type=click.Choice(POLICIES), default=None, help="Step scheduling [default: decode_first].")
@click.option("--num-gpu-blocks", type=click.IntRange(1, limits.MAX_KV_BLOCKS), default=None,
              help="KV-cache blocks per replica, of the framework's block size, as vLLM's --num-gpu-blocks-override fixes them "
                   "[default: what the memory holds].")
@click.option("--rate", type=FiniteFloatRange(min=0, min_open=True, max=limits.MAX_REQUEST_RATE_PER_S), default=None, help="Open loop: Poisson arrivals, requests per second.")
@click.option("--users", type=click.IntRange(1, limits.MAX_CONCURRENT_USERS), default=None, help="Closed loop: concurrent users, each sending its next request when the last completes.")
@click.option("--requests", "num_requests", type=click.IntRange(1, limits.MAX_SIMULATED_REQUESTS), default=1000, show_default=True,
              help=f"Requests to simulate (at most {limits.MAX_SIMULATED_REQUESTS:,}).")
@click.option("--input-tokens", type=positive_int, default=None, help=f"Prompt tokens per request [default: {DEFAULT_INPUT_TOKENS}].")
@click.option("--output-tokens", type=positive_int, default=None, help=f"Generated tokens per request [default: {DEFAULT_OUTPUT_TOKENS}].")
@click.option("--range-ratio", type=FiniteFloatRange(min=0, max=1, max_open=True), default=0.0, show_default=True,
              help="Spread --input/--output-tokens uniformly by this fraction (vllm bench serve --random-range-ratio); "
                   f"{CLOSED_LOOP_RANGE_RATIO:g} keeps closed-loop users from staying in lock-step, as the plan check does.")
@click.option("--workload", default=None, help=f"Preset ({', '.join(PRESETS)}), a trace CSV (n_input_tokens,n_output_tokens) or a YAML/JSON workload file.")
@click.option("--seed", type=seed_int, default=0, show_default=True, help="Seed of the random lengths and arrivals.")
@click.option("--ttft-slo-ms", type=FiniteFloatRange(min=0, min_open=True, max=limits.MAX_LATENCY_MS), default=None, help="Per-request TTFT target for goodput, ms.")
@click.option("--tpot-slo-ms", type=FiniteFloatRange(min=0, min_open=True, max=limits.MAX_LATENCY_MS), default=None, help="Per-request TPOT target for goodput, ms.")
@format_option
def simulate_command(model, gpu, tp, pp, framework, quantization, kv_cache_dtype, replicas, balancer, max_num_seqs, max_num_batched_tokens,
                     policy, num_gpu_blocks, rate, users, num_requests, input_tokens, output_tokens, range_ratio, workload, seed, ttft_slo_ms, tpot_slo_ms,
                     output_format) -> int:
    """Simulate serving a request stream: TTFT / ITL / E2E percentiles, throughput, goodput, KV use.

    Give exactly one of --rate (open loop) or --users (closed loop). Exit code 0 when requests
    were served, 2 when the configuration cannot hold a single request, 1 for bad input.
    """
    if (rate is None) == (users is None):
        raise InputError("--rate/--users", "give exactly one of them", "--rate R for Poisson arrivals or --users U for a closed loop")
    lengths = resolve_lengths(workload, input_tokens, output_tokens, range_ratio)
    config = build_config(model=model, gpu=gpu, tp=tp, pp=pp, framework=framework, quantization=quantization, kv_cache_dtype=kv_cache_dtype)
    check_context(config.llm, lengths, "--input-tokens/--output-tokens" if workload is None else "--workload")
    stream = Workload(lengths, request_rate_per_s=rate, concurrent_users=users)
    slo = GoodputTargets(ttft_ms=ttft_slo_ms, tpot_ms=tpot_slo_ms) if (ttft_slo_ms or tpot_slo_ms) else None
    try:
        result = simulate(config, stream, max_num_seqs=max_num_seqs, max_num_batched_tokens=max_num_batched_tokens, num_requests=num_requests,
                          seed=seed, replicas=replicas, balancer=balancer, slo=slo, policy=policy, num_kv_blocks=num_gpu_blocks)
    except ValueError as exc:
        field = "--max-num-batched-tokens" if "max_num_batched_tokens" in str(exc) else "options"
        raise InputError(field, str(exc), "choose compatible values") from None
    if output_format == "json":
        echo_json(simulate_payload(config, result, stream))
    else:
        _print_table(config, result, stream)
    return 0 if result.fits else 2


def _latency_line(p) -> str:
    ms = p.as_ms()
    return f"p50 {fmt_number(ms['p50'])}  p90 {fmt_number(ms['p90'])}  p99 {fmt_number(ms['p99'])} ms  (mean {fmt_number(ms['mean'])})"


def _print_table(config, r: SimulationResult, stream: Workload) -> None:
    lengths = stream.lengths
    arrival = (f"Poisson {fmt_number(stream.request_rate_per_s)} requests/s" if stream.arrival == "poisson"
               else f"closed loop of {stream.concurrent_users} users")
    replicas = f"{r.replicas} replicas of " if r.replicas > 1 else ""
    title = (f"{config.llm.id} on {replicas}{config.num_gpus} x {config.gpu.id} (TP={config.tp}, PP={config.pp}), {config.framework.id} "
             f"({r.prefill_mode}, {r.policy}), {config.quantization.id}; max-num-seqs {r.max_num_seqs}, max-batched-tokens {r.max_num_batched_tokens}")
    workload = (f"{r.num_requests} requests, mean {fmt_number(lengths.mean_input_tokens)} in / {fmt_number(lengths.mean_output_tokens)} out tokens, "
                f"{arrival}, seed {r.seed}")
    if not r.fits:
        echo_pairs(title, [("workload", workload), ("fits", f"NO: {r.reason}")])
        return
    pairs = [
        ("workload", workload),
        ("TTFT", _latency_line(r.ttft_s)),
        ("ITL", _latency_line(r.itl_s)),
        ("TPOT", _latency_line(r.tpot_s)),
        ("E2E", _latency_line(r.e2e_s)),
        ("throughput", f"{fmt_number(r.throughput_tokens_per_s)} output tokens/s ({fmt_number(r.request_throughput_per_s)} requests/s "
                       f"over {fmt_number(r.duration_s)} s)"),
    ]
    if r.goodput:
        targets = " and ".join(f"{name} <= {fmt_number(v)} ms" for name, v in (("TTFT", r.goodput.slo.ttft_ms), ("TPOT", r.goodput.slo.tpot_ms)) if v)
        pairs.append(("goodput", f"{r.goodput.fraction:.1%} of requests met {targets} ({fmt_number(r.goodput.requests_per_s)} requests/s)"))
    pairs += [
        ("KV cache", f"mean {r.kv_utilization_mean:.1%}, peak {r.kv_utilization_peak:.1%} of {r.kv_capacity_tokens:,} tokens per replica; "
                     f"{r.preemptions} preemptions"),
        ("requests", f"{r.completed_requests} completed, {r.rejected_requests} rejected; {r.steps:,} engine steps, "
                     f"mean batch {fmt_number(r.mean_batch_sequences)} sequences"),
    ]
    if stream.arrival == "closed" and isinstance(lengths, FixedLengths) and stream.concurrent_users > 1:
        pairs.append(("note", "users whose requests are all alike start together and stay in lock-step (a burst repeated); "
                              f"--range-ratio {CLOSED_LOOP_RANGE_RATIO:g} spreads them as a load test and the plan check do"))
    echo_pairs(title, pairs)
