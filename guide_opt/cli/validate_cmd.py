"""``guide-opt validate``: predicted vs measured on public data, and the LLM-Pilot recommendation benchmark."""

from __future__ import annotations

from pathlib import Path

import click

from guide_opt.catalog import load_catalog
from guide_opt.cli.app import cli
from guide_opt.cli.output import echo_json, echo_rows, fmt_number, format_option
from guide_opt.validation.accuracy import AccuracyRow, evaluate, summarize
from guide_opt.validation.datasets import METRIC_LABELS, METRICS, SOURCES, default_data_dir, load_source


def accuracy_table_rows(rows: list[AccuracyRow]) -> list[list[str]]:
    """Text cells of the detailed table (one line per source, GPU and metric)."""
    return [[r.source, r.gpu, METRIC_LABELS[r.metric], f"{r.mape:.1f}", f"{r.median_ape:.1f}", f"{r.bias:+.1f}", str(r.count)] for r in rows]


def echo_guide_tables(rows: list[AccuracyRow]) -> None:
    """Per source, GUIDE's Tables 1-2 layout: one line per metric, one MAPE column per GPU."""
    for source in sorted({r.source for r in rows}):
        mine = [r for r in rows if r.source == source]
        gpus = sorted({r.gpu for r in mine})
        cells = {(r.metric, r.gpu): r for r in mine}
        click.echo(f"\n{source}: MAPE % (n)")
        table = []
        for metric in METRICS:
            if any((metric, g) in cells for g in gpus):
                table.append([METRIC_LABELS[metric]] + [f"{cells[(metric, g)].mape:.1f} ({cells[(metric, g)].count})" if (metric, g) in cells else "-" for g in gpus])
        echo_rows(["Error metric"] + gpus, table)


@cli.command("validate")
@click.option("--source", "sources", multiple=True, type=click.Choice(sorted(SOURCES)), help="Measured source to compare with (repeatable; default: all).")
@click.option("--calibration", type=click.Path(dir_okay=False), default=None,
              help="Calibration YAML from 'guide-opt calibrate' (its fitted factors replace the defaults; in-sample if fitted on the same rows).")
@click.option("--data-dir", type=click.Path(file_okay=False, exists=True, path_type=Path), default=None,
              help="The measured-data folder (default: $GUIDE_OPT_VALIDATION_DATA, else the copy shipped with guide-opt).")
@click.option("--llm-pilot", "llm_pilot", is_flag=True, help="Run LLM-Pilot's GPU recommendation benchmark (leave-one-LLM-out) instead.")
@click.option("--candidates", type=click.Choice(["measured", "all"]), default="measured", show_default=True,
              help="With --llm-pilot: profiles considered per LLM (those LLM-Pilot measured for it, or every priced profile).")
@click.option("--predictor", type=click.Choice(["physics", "learned", "hybrid", "tgis", "tgis-hybrid", "tgis-kv", "all"]), default=None,
              help="With --llm-pilot: how u_max is predicted for the held-out LLM (default: tgis-kv, the best S/O in benchmarks/RESULTS.md 1.5); "
                   "'all' runs and lists every predictor (physics and hybrid simulate every pair in every fold: tens of minutes).")
@click.option("--serving", type=click.Choice(["static", "steady-state", "tgis"]), default="static", show_default=True,
              help="How closed-loop rows (LLM-Pilot) are predicted: a static batch of the users (vllm profile), the steady-state "
                   "closed loop on the tgis profile, or TGIS's batching rule played step by step on the tgis profile with TGIS's "
                   "default host time (launch floor, host time per prefill pass and per running sequence). Offline "
                   "max-throughput rows (trtllm-serving) are read as waves of one burst batch (static) or as a closed loop "
                   "(steady-state, tgis) on their own engine profile.")
@format_option
def validate_command(sources, calibration, data_dir, llm_pilot, candidates, predictor, serving, output_format) -> int:
    """Compare guide-opt's predictions with measured public data: MAPE, median APE, bias and count
    per source, GPU and metric (TTFT, TPOT/ITL, batch latency, throughput), as GUIDE's Tables 1-2.

    Rows that cannot be mapped to the catalog or predicted are skipped and counted (table output).
    """
    catalog = load_catalog()
    data_dir = data_dir or default_data_dir()
    if predictor is not None and not llm_pilot:
        raise click.UsageError("--predictor goes with --llm-pilot")
    if serving != "static" and llm_pilot:
        raise click.UsageError("--serving goes without --llm-pilot (choose the recommendation's model with --predictor)")
    if llm_pilot:
        from guide_opt.validation.llm_pilot import benchmark_payload, run_benchmark
        from guide_opt.validation.pilot_predictors import DEFAULT_PREDICTOR, PREDICTORS

        chosen = predictor or DEFAULT_PREDICTOR
        run = PREDICTORS if chosen == "all" else tuple(dict.fromkeys([chosen, "learned"]))
        headline = DEFAULT_PREDICTOR if chosen == "all" else chosen
        payload = benchmark_payload(run_benchmark(data_dir, catalog, candidates=candidates, predictors=run), headline)
        if output_format == "json":
            echo_json(payload)
        else:
            _print_llm_pilot(payload)
        return 0
    cal = None
    if calibration:
        from guide_opt.validation.calibration import load_calibration

        cal = load_calibration(calibration)
    rows: list[AccuracyRow] = []
    skipped: dict[str, dict[str, int]] = {}
    for name in sources or sorted(SOURCES):
        data = load_source(name, catalog, data_dir)
        result = evaluate(data.rows, catalog, cal, serving=serving.replace("-", "_"),
                          closed_loop_framework=None if serving == "static" else "tgis")
        rows.extend(summarize(result.comparisons))
        skipped[name] = dict(data.skipped) | dict(result.skipped)
    if output_format == "json":
        echo_json([r.as_dict() for r in rows])
        return 0
    label = f"calibration {calibration}" if calibration else "default efficiency factors (hardware_db/frameworks, not fitted)"
    label += f"; closed-loop rows: {serving}" + ("" if serving == "static" else " (tgis profile)")
    label += "; offline runs: " + ("burst batches" if serving == "static" else "closed loops")
    label += "; static batches larger than the KV cache: waves, vLLM's simulated with its recompute preemption"
    click.echo(f"Predicted vs measured, {label}. Errors in %: bias > 0 means guide-opt predicts too high.")
    echo_guide_tables(rows)
    click.echo("")
    echo_rows(["source", "gpu", "metric", "MAPE", "median APE", "bias", "n"], accuracy_table_rows(rows))
    for name, reasons in skipped.items():
        if reasons:
            click.echo(f"\nskipped in {name}:")
            for reason, count in sorted(reasons.items(), key=lambda kv: -kv[1]):
                click.echo(f"  {count:5d}  {reason}")
    return 0


def _print_llm_pilot(payload: dict) -> None:
    from guide_opt.validation.pilot_predictors import PREDICTOR_LABELS

    def pct(value) -> str:
        return "-" if value is None else f"{value:.1%}"

    def score_row(label: str, sc: dict) -> list[str]:
        return [label, pct(sc["success_rate"]), pct(sc["mean_overspend"]), fmt_number(sc["so_score"])]

    click.echo(f"LLM-Pilot GPU recommendation, U=200 users, median nTTFT <= 100 ms/token, median ITL <= 50 ms; "
               f"{payload['scored_llms']} decoder-only LLMs, leave-one-LLM-out, candidates: {payload['candidates']} profiles")
    sp = payload["static_policy"]
    table = [score_row(PREDICTOR_LABELS[name] + (" <- recommendations below" if name == payload["predictor"] else ""), sc)
             for name, sc in payload["predictors"].items()]
    table += [
        score_row("static estimator (vllm profile), calibrated on the other LLMs", payload["static_estimator"]["calibrated"]),
        score_row("static estimator (vllm profile), default factors", payload["static_estimator"]["default_factors"]),
        score_row(f"static policy {sp['policy']}, same LLMs", sp["decoder_only"]),
        score_row(f"static policy {sp['policy']}, all 10 LLMs", sp["all_llms"]),
        ["paper: LLM-Pilot (10 LLMs)", "80%", "< 20%", "-"],
        ["paper: best static policy (10 LLMs)", "50%", "-", "0.65"],
    ]
    echo_rows(["method", "success", "overspend", "S/O"], table)
    click.echo(f"not scored: {payload['skipped_reason']}")
    reliable = payload["reliable_levels"]
    if reliable["scores"]:
        click.echo(f"\nThe same recommendations against the reliable-levels truth (a measured level with more than "
                   f"{reliable['max_failed_fraction']:.0%} failed requests misses the SLOs; the paper counts only the medians of the survivors):")
        echo_rows(["method", "success", "overspend", "S/O"],
                  [score_row(PREDICTOR_LABELS.get(name) or f"static policy {sp['policy']}, same LLMs", sc)
                   for name, sc in reliable["scores"].items()])
    click.echo("")
    rows = []
    for r in payload["recommendations"]:
        rec, best = r["recommended"], r["true_best"]
        rows.append([r["llm"], f"{rec['pods']} x ({rec['profile']})" if rec else "-", fmt_number(rec["cost_usd_per_hour"]) if rec else "-",
                     f"{best['pods']} x ({best['profile']})" if best else "-", fmt_number(best["cost_usd_per_hour"]) if best else "-",
                     "yes" if r["success"] else "no", pct(r["overspend"])])
    echo_rows(["LLM", f"recommended ({payload['predictor']})", "$/h", "truly cheapest", "$/h", "success", "overspend"], rows)
