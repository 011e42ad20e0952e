"""``guide-opt calibrate``: fit efficiency factors to a user's benchmarks and write a calibration YAML."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import click

from guide_opt.catalog import load_catalog
from guide_opt.cli.app import cli
from guide_opt.cli.common import degree_int, positive_int
from guide_opt.limits import check_writable_file
from guide_opt.cli.output import echo_json, echo_rows, format_option
from guide_opt.errors import InputError
from guide_opt.validation.accuracy import summarize
from guide_opt.validation.calibration import calibrate, save_calibration
from guide_opt.validation.datasets import METRIC_LABELS, METRICS, SOURCES, USER_CSV_REQUIRED, load_source, load_user_data

DATA_HELP = (
    "Benchmark file (repeatable). CSV columns: " + ", ".join(USER_CSV_REQUIRED)
    + ", optional quantization and closed_loop, and any of ttft_ms, tpot_ms, batch_latency_s, throughput_tokens_per_s. "
    "Or the JSON of 'vllm bench serve --save-result' (GPU, TP and model from the options or its --metadata)."
)


@cli.command("calibrate")
@click.option("--data", "data_files", multiple=True, type=click.Path(dir_okay=False, exists=True, path_type=Path), help=DATA_HELP)
@click.option("--source", "sources", multiple=True, type=click.Choice(sorted(SOURCES)), help="Also fit to a shipped measured source (repeatable).")
@click.option("--data-dir", type=click.Path(file_okay=False, exists=True, path_type=Path), default=None, help="Measured-data folder for --source.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=Path("calibration.yaml"), show_default=True, help="Calibration YAML to write.")
@click.option("--model", default=None, help="vllm bench JSON: catalog LLM id (default: the JSON's metadata, else its model_id).")
@click.option("--gpu", default=None, help="vllm bench JSON: GPU id (default: the JSON's 'gpu' metadata).")
@click.option("--tp", type=degree_int, default=None, help="vllm bench JSON: tensor-parallel degree (default: metadata 'tp', else 1).")
@click.option("--framework", default=None, help="vllm bench JSON: framework id (default: metadata 'framework', else vllm).")
@click.option("--batch", type=positive_int, default=None, help="vllm bench JSON: concurrent requests (default: its max_concurrency).")
@click.option("--quantization", default=None, help="vllm bench JSON: quantization id (default bf16).")
@click.option("--ignore-metric", "ignored", multiple=True, type=click.Choice(METRICS),
              help="Leave this measured metric out of the fit (repeatable), e.g. ttft_ms of closed-loop runs, whose TTFT the static model reads pessimistically.")
@click.option("--no-cross-validate", is_flag=True, help="Skip the leave-one-LLM-out scoring (residual quantiles then come from the in-sample fit).")
@format_option
def calibrate_command(data_files, sources, data_dir, out, model, gpu, tp, framework, batch, quantization, ignored, no_cross_validate,
                      output_format) -> int:
    """Fit compute / memory / communication efficiency and step overhead per (GPU, framework) to
    measured benchmarks (least squares on log errors, bounded), score them leave-one-LLM-out, and
    write a calibration YAML that 'estimate --calibration FILE' (and solve / simulate) accept.
    """
    if not data_files and not sources:
        raise InputError("--data", "no benchmark data given", "pass --data FILE (CSV or vllm bench JSON) or --source NAME")
    check_writable_file(out, "--out")  # before the fit, and never creating folders
    catalog = load_catalog()
    rows, labels, skipped = [], [], {}
    vllm_options = {"model": model, "gpu": gpu, "tp": tp, "framework": framework, "batch": batch, "quantization": quantization}
    for path in data_files:
        data = load_user_data(path, catalog, **vllm_options)
        rows.extend(data.rows)
        labels.append(str(path))
        skipped[data.source] = dict(data.skipped)
    for name in sources:
        data = load_source(name, catalog, data_dir)
        rows.extend(data.rows)
        labels.append(f"source:{name}")
        skipped[name] = dict(data.skipped)
    if ignored:
        rows = [replace(m, measured={k: v for k, v in m.measured.items() if k not in ignored}) for m in rows]
        rows = [m for m in rows if m.measured]
        labels.append("ignored metrics: " + ", ".join(ignored))
    run = calibrate(rows, catalog, data_labels=labels, cross_validate=not no_cross_validate)
    save_calibration(run.calibration, out)
    held_out = None
    if run.held_out is not None:
        held_out = {
            "default": [r.as_dict() for r in summarize(run.held_out.default, by_gpu=True)],
            "calibrated": [r.as_dict() for r in summarize(run.held_out.calibrated, by_gpu=True)],
            "no_training_rows": dict(run.held_out.no_training_rows),
        }
    if output_format == "json":
        echo_json({"out": str(out), "calibration": run.calibration.model_dump(mode="json"), "held_out": held_out,
                   "skipped": {**skipped, "fit": dict(run.skipped)}})
        return 0
    click.echo(f"wrote {out}: {len(run.calibration.entries)} (GPU, framework) group(s) from {len(rows)} row(s)")
    table = []
    for e in run.calibration.entries:
        f = e.efficiency
        fit = ", ".join(f"{METRIC_LABELS[m]} {e.mape_before[m]:.1f}->{e.mape_after.get(m, float('nan')):.1f}" for m in e.mape_before)
        table.append([e.gpu, e.framework, f"{f.compute_efficiency:.3f}", f"{f.memory_efficiency:.3f}", f"{f.communication_efficiency:.3f}",
                      f"{f.step_overhead_ms:.2f}", f"{f.collective_latency_scale:.2f}", str(e.rows), fit])
    echo_rows(["gpu", "framework", "compute", "memory", "comm", "overhead ms", "all-reduce latency x", "rows", "in-sample MAPE % default->fitted"], table)
    if held_out:
        click.echo("\nheld out (leave-one-LLM-out), MAPE %: default -> calibrated")
        lines = []
        for d, c in zip(held_out["default"], held_out["calibrated"]):
            lines.append([d["source"], d["gpu"], METRIC_LABELS[d["metric"]], f"{d['mape']:.1f}", f"{c['mape']:.1f}", str(c["count"])])
        echo_rows(["source", "gpu", "metric", "default", "calibrated", "n"], lines)
        for reason, count in held_out["no_training_rows"].items():
            click.echo(f"  {count} held-out row(s) used default factors: {reason}")
    else:
        click.echo("\nheld out: not scored (fewer than two LLMs, or --no-cross-validate); residual quantiles are in-sample")
    cal = run.calibration
    click.echo(f"\nresidual quantiles ({cal.residual_kind}): multiply a prediction by these to reach the 10th / 50th / 90th percentile of measurements")
    q_rows = [[METRIC_LABELS[m], *(f"{math.exp(q[p]):.2f}" for p in (0.1, 0.5, 0.9)), str(cal.residual_counts.get(m, 0))]
              for m, q in cal.residual_quantiles.items()]
    echo_rows(["metric", "p10", "p50", "p90", "n"], q_rows)
    for label, reasons in [*skipped.items(), ("fit", dict(run.skipped))]:
        for reason, count in reasons.items():
            click.echo(f"skipped ({label}): {count} x {reason}")
    return 0
