"""Text rendering of a refinement (``guide-opt solve --refine``): incumbent vs refined side by side per LLM."""

from __future__ import annotations

import math

import click

from guide_opt.refine import KNOBS, Refinement, SimulatedMetrics


def _fmt(value: float | None, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.{digits}g}"


def _triple(m: SimulatedMetrics | None, metric: str) -> str:
    if m is None:
        return "-"
    return " / ".join(_fmt(m.latency_ms(metric, q)) for q in (50, 90, 99))


def print_refinement(refinement: Refinement) -> None:
    """Print the refinement as text: incumbent vs refined side by side per LLM, what changed, trials, verdict."""
    r = refinement
    click.echo(f"Refinement of '{r.problem}' ({r.objective_name}) with the serving simulator: {r.num_requests} requests per LLM, "
               f"simulation seed {r.simulation_seed}; Optuna TPE seed {r.seed}, study '{r.study_name}' ({r.storage})")
    click.echo(f"trials: {r.trials_run} run now; study total {r.trials_total} = {r.trials_complete} complete "
               f"({r.trials_feasible} feasible), {r.trials_failed} failed, {r.trials_pruned} pruned"
               + (f"; best is trial {r.best_trial_number}" if r.best_trial_number is not None else "") + f"; {r.wall_time_s:.1f} s")
    inc_metrics = r.incumbent_metrics or [None] * len(r.incumbent)
    ref_metrics = r.refined_metrics or [None] * len(r.refined)
    for i, (di, dr, si, sr, mi, mr) in enumerate(zip(r.incumbent, r.refined, r.incumbent_settings, r.refined_settings, inc_metrics, ref_metrics)):
        pct = r.percentiles[i]
        rows = [
            ("deployment", di.describe(), dr.describe()),
            # knobs the deployment line does not show, one row each
            *((k.flag, k.format(getattr(si, k.name)), k.format(getattr(sr, k.name))) for k in KNOBS if k.deployment_field is None),
            ("simulated load", mi.arrival if mi else "-", mr.arrival if mr else "-"),
            ("TTFT p50/p90/p99 ms", _triple(mi, "ttft"), _triple(mr, "ttft")),
            ("TPOT p50/p90/p99 ms", _triple(mi, "tpot"), _triple(mr, "tpot")),
            ("ITL p50/p90/p99 ms", _triple(mi, "itl"), _triple(mr, "itl")),
            ("mean E2E ms", _fmt(mi.e2e_mean_ms) if mi else "-", _fmt(mr.e2e_mean_ms) if mr else "-"),
            ("throughput tokens/s", _fmt(mi.throughput_tokens_per_s) if mi else "-", _fmt(mr.throughput_tokens_per_s) if mr else "-"),
            ("goodput (both SLOs met)", _share(mi.goodput_fraction if mi else None), _share(mr.goodput_fraction if mr else None)),
            ("demand served", _share(mi.demand_served_share if mi else None), _share(mr.demand_served_share if mr else None)),
            ("cost $/h", f"{di.cost_per_hour:,.2f}", f"{dr.cost_per_hour:,.2f}"),
        ]
        click.echo("")
        click.echo(f"{di.model} (SLO percentile p{pct})")
        w0 = max(len(a) for a, _, _ in rows)
        w1 = max(len("incumbent (solver)"), *(len(b) for _, b, _ in rows))
        click.echo(f"  {'':{w0}}  {'incumbent (solver)':{w1}}  refined")
        for label, a, b in rows:
            click.echo(f"  {label:{w0}}  {a:{w1}}  {b}")
    click.echo("")
    click.echo(f"plan: incumbent ${r.incumbent_cost_per_hour:,.2f}/h, "
               f"{'meets' if r.incumbent_feasible else 'MISSES' if r.incumbent_feasible is False else 'not simulated:'} the simulated constraints"
               f"; refined ${r.refined_cost_per_hour:,.2f}/h, {'meets' if r.refined_feasible else 'MISSES'} them")
    for label, violations in (("incumbent", r.incumbent_violations), ("refined", r.refined_violations)):
        for v in violations:
            click.echo(f"  {label} violates {v}")
    click.echo("changes: " + ("; ".join(r.changes) if r.changes else "none"))
    for e in r.errors:
        click.echo(f"failed trial: {e}")
    for note in r.notes:
        click.echo(f"note: {note}")


def _share(value: float | None) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.1%}"
