"""``guide-opt estimate``: the predicted metrics of one configuration."""

from __future__ import annotations

import click

from guide_opt.cli.app import cli
from guide_opt.cli.common import FiniteFloatRange, batch_int, build_config, positive_int, replica_options
from guide_opt.cli.output import echo_json, echo_pairs, fmt_number, format_option
from guide_opt.perf import ESTIMATORS, Estimate


def estimate_payload(est: Estimate) -> dict:
    """The JSON object printed by ``estimate --format json``."""
    c = est.config
    payload = {
        "model": c.llm.id,
        "gpu": c.gpu.id,
        "tp": c.tp,
        "pp": c.pp,
        "batch": c.batch,
        "input_tokens": c.input_tokens,
        "output_tokens": c.output_tokens,
        "framework": c.framework.id,
        "quantization": c.quantization.id,
        "kv_cache_dtype": c.kv_cache_dtype,
        "estimator": est.estimator,
        "fits": est.fits,
        "metrics": est.metrics(),
        "decode_throughput_tokens_per_s": est.decode_throughput_tokens_per_s,
        "bounds": {"prefill": est.phases.prefill_bound.value, "decode": est.phases.decode_bound.value} if est.phases else None,
        "memory": est.memory.as_gib(),
        "max_batch": est.max_batch,
        "max_sequence_length": est.max_sequence_length,
    }
    if not est.fits:
        payload["reason"] = not_fitting_reason(est)
    return payload


def not_fitting_reason(est: Estimate) -> str:
    """One sentence saying by how much the configuration overflows memory."""
    gib = est.memory.as_gib()
    return (
        f"needs {gib['used_gib']:.1f} GiB per GPU (weights {gib['weights_gib']:.1f}, KV cache {gib['kv_cache_gib']:.1f}, "
        f"activations {gib['activations_gib']:.1f}, reserve {gib['reserve_gib']:.1f}) but only {gib['usable_gib']:.1f} GiB are usable; "
        f"the largest batch that fits is {est.max_batch}"
    )


@cli.command("estimate")
@replica_options
@click.option("--batch", type=batch_int, default=1, show_default=True, help="Concurrent sequences in the batch.")
@click.option("--input-tokens", type=positive_int, default=512, show_default=True, help="Prompt tokens per request.")
@click.option("--output-tokens", type=positive_int, default=128, show_default=True, help="Generated tokens per request.")
@click.option("--no-flash-attention", is_flag=True, help="Model attention without FlashAttention (materialized scores).")
@click.option("--h2o-kept-fraction", type=FiniteFloatRange(0, 1, min_open=True), default=1.0, show_default=True, help="Fraction of KV entries kept by H2O eviction.")
@click.option("--estimator", type=click.Choice(sorted(ESTIMATORS)), default="roofline", show_default=True, help="guide-opt's roofline model or GUIDE's published equations.")
@format_option
def estimate_command(model, gpu, tp, pp, framework, quantization, kv_cache_dtype, batch, input_tokens, output_tokens,
                     no_flash_attention, h2o_kept_fraction, estimator, output_format) -> int:
    """Predict TTFT, TPOT, batch latency, throughput and memory of one configuration.

    Exit code 0 when it fits in memory, 2 when it does not (the numbers say by how much).
    """
    config = build_config(
        model=model, gpu=gpu, tp=tp, pp=pp, framework=framework, quantization=quantization, kv_cache_dtype=kv_cache_dtype,
        batch=batch, input_tokens=input_tokens, output_tokens=output_tokens, flash_attention=not no_flash_attention,
        h2o_kept_fraction=h2o_kept_fraction,
    )
    est = ESTIMATORS[estimator](config)
    if output_format == "json":
        echo_json(estimate_payload(est))
    else:
        _print_table(est)
    return 0 if est.fits else 2


def _print_table(est: Estimate) -> None:
    c = est.config
    title = (f"{c.llm.id} on {c.num_gpus} x {c.gpu.id} (TP={c.tp}, PP={c.pp}), {c.framework.id}, {c.quantization.id}, "
             f"batch {c.batch}, {c.input_tokens} in / {c.output_tokens} out tokens [{est.estimator}]")
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
    else:
        pairs = [("fits", "NO: " + not_fitting_reason(est))] + pairs
    echo_pairs(title, pairs)
