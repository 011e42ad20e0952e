"""``guide-opt solve``: the best deployment for a problem file, proven and explained.

This module parses the options and renders the answer; :func:`guide_opt.api.solve` computes
it (build, solve, verify, explain, refine). What is printed follows the answer: the exact
Pareto frontier (``objective: pareto``), a batch-job schedule (``min_makespan``, or
``scheduling.enabled``), or the optimal plan of a single deployment or fleet. ``--plot FILE``
draws the frontier, the Gantt chart or the fleet (:mod:`guide_opt.plotting`); ``--emit DIR``
writes the deployment artifacts.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from guide_opt import limits
from guide_opt.answer import check_contexts, in_problem_file
from guide_opt.api import Answer, RefineRequest, refinable, solve
from guide_opt.cli.app import cli, command_started_s
from guide_opt.cli.common import FiniteFloatRange, capacity_share_text, seed_int
from guide_opt.cli.output import echo_json, echo_rows, fmt_number, format_option
from guide_opt.errors import InputError
from guide_opt.objectives import OBJECTIVES, schedule_reporting
from guide_opt.presets import DEFAULT_PRESET, load_preset
from guide_opt.problem import Problem
from guide_opt.solution import Solution, Status

def format_objective(name: str, value: float | None) -> str:
    """``$5.98/h``, ``42,218.0 tokens/s``, ``1,081.0 ms``, ``97.50% of demand served``, ``6.42 h`` or ``$236.48 total``
    (:data:`guide_opt.objectives.OBJECTIVES`); '-' for None."""
    return OBJECTIVES[name].format(value)


def progress(message: str) -> None:
    """A progress line on stderr, only for a person at a terminal (pipes and JSON stay clean)."""
    if sys.stderr.isatty():
        click.echo(f"guide-opt: {message}", err=True)


def with_prediction_options(problem: Problem, calibration_file: str | None, slo_margin: float | None) -> Problem:
    """``problem`` with ``--calibration`` / ``--slo-margin`` applied to its ``prediction`` block."""
    update = {}
    if calibration_file is not None:
        update["calibration"] = calibration_file
    if slo_margin is not None:
        update["slo_margin"] = slo_margin
    return problem.model_copy(update={"prediction": problem.prediction.model_copy(update=update)}) if update else problem


@cli.command("solve")
@click.argument("problem_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--solver", "solver_name", default="cpsat", show_default=True,
              help="cpsat (exact), exhaustive (brute-force cross-check) or optuna (CP-SAT, then Optuna against the serving simulator).")
@click.option("--preset", default=DEFAULT_PRESET, show_default=True, help="Solver preset: a name in solvers/ (fast, exact, refine) or a YAML path.")
@click.option("--time-limit-s", type=FiniteFloatRange(min=0, min_open=True, max=limits.MAX_TIME_LIMIT_S), default=None,
              help="Wall-clock limit, s, for the whole command from its start: reading the problem, evaluating the "
                   "candidates (not interrupted; the search then still gets a fifth of the limit), the optimum, its plan "
                   "checks, the alternatives and the explanation share it; picks cut short are reported with their status "
                   "(overrides the preset).")
@click.option("--seed", type=seed_int, default=None, help="Random seed, 0 to 2147483647 (overrides the preset).")
@click.option("--explain/--no-explain", default=True, show_default=True, help="Report which constraints bind and what relaxing each would gain.")
@click.option("--plot", "plot_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also draw a chart to FILE (.png, .svg or .pdf): the Pareto frontier, the batch-job Gantt chart, or the fleet.")
@click.option("--calibration", "calibration_file", type=click.Path(dir_okay=False), default=None,
              help="Calibration file from 'guide-opt calibrate': fitted efficiencies, and SLOs checked at each LLM's slo.percentile.")
@click.option("--slo-margin", type=FiniteFloatRange(min=1.0, max=limits.MAX_SLO_MARGIN), default=None,
              help="Safety factor >= 1 on predicted TTFT and TPOT (1.2 = plan with 20% headroom); overrides prediction.slo_margin.")
@click.option("--refine", is_flag=True, help="Then refine the plan with Optuna against the serving simulator (engine knobs, TP, replicas).")
@click.option("--trials", type=click.IntRange(min=0, max=limits.MAX_TRIALS), default=None, help="Optuna trials for --refine (default: the preset's trials).")
@click.option("--storage", default=None, help="Optuna storage for --refine: sqlite:///refine.db or postgresql://... shared by workers (default: in memory).")
@click.option("--study-name", default=None, help="Study name for --refine with --storage; workers with the same name share trials.")
@click.option("--emit", "emit_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Also write, per deployment, the engine launch command, Kubernetes manifests and the SLO benchmark to DIR.")
@click.option("--cache/--no-cache", "use_cache", default=True, show_default=True,
              help="Read the candidate table from the table cache when this problem's LLMs, workloads, SLOs and search were "
                   "solved before, and store it after a build; likewise the plan checks' simulations ($GUIDE_OPT_CACHE_DIR, default "
                   "~/.cache/guide-opt; GUIDE_OPT_CACHE_DIR=off disables it).")
@format_option
def solve_command(problem_file: Path, **options) -> int:
    """Find the optimal deployment for PROBLEM_FILE (YAML; see problems/README.md).

    Exit code 0 when a deployment was found, 2 when the problem is infeasible (the
    conflicting constraints and the cheapest relaxation are printed), 1 for bad input
    (one line naming the field), 3 for an internal error (please report it).
    """
    try:
        return _solve(problem_file, **options)
    except InputError as exc:
        # ids and keys are checked while the space is built: say which file they are in
        raise in_problem_file(exc, str(problem_file)) from None


def _solve(problem_file: Path, solver_name: str, preset: str, time_limit_s: float | None, seed: int | None,
           explain: bool, plot_file: Path | None, calibration_file: str | None, slo_margin: float | None,
           refine: bool, trials: int | None, storage: str | None, study_name: str | None, emit_dir: Path | None,
           use_cache: bool, output_format: str) -> int:
    if not problem_file.is_file():
        raise click.BadParameter(f"no such file: {problem_file}", param_hint="PROBLEM_FILE")
    problem = with_prediction_options(Problem.from_yaml(problem_file), calibration_file, slo_margin)
    check_contexts(problem)
    solver_preset = load_preset(preset)
    if plot_file is not None:
        from guide_opt.plotting import check_plot_path

        check_plot_path(plot_file)
    if (refine or storage or study_name) and not refinable(problem):
        raise click.UsageError(f"--refine handles min_cost, max_throughput and min_latency problems, not {problem.objective}")
    if (storage or study_name or trials is not None) and not refine:
        raise click.UsageError("--trials, --storage and --study-name go with --refine")
    request = (RefineRequest(trials if trials is not None else solver_preset.trials, storage, study_name, progress_bar=output_format == "table")
               if refine else None)
    answer = solve(problem, solver_name=solver_name, preset=solver_preset, time_limit_s=time_limit_s, seed=seed, explain=explain,
                   refine=request, progress=progress, started_s=command_started_s(), use_cache=use_cache)
    if answer.frontier is not None:
        return _print_pareto(problem, answer, plot_file, output_format, emit_dir)
    if answer.schedule is not None:
        return _print_schedule(problem, answer, plot_file, output_format, emit_dir)
    solution, payload, refinement = answer.solution, answer.payload, answer.refinement
    if plot_file is not None and solution.status.found:
        from guide_opt.plotting import plot_fleet

        payload["plot"] = str(plot_fleet(solution, plot_file, title=problem.name))
    emit_artifacts(problem, solution, payload, emit_dir)
    if output_format == "json":
        echo_json(payload)
    else:
        print_solution(problem, solution, payload)
        _print_emitted(payload)
        if refinement is not None:
            from guide_opt.cli.refine_output import print_refinement

            click.echo("")
            print_refinement(refinement)
    return 0 if solution.status.found else 2


def emit_artifacts(problem: Problem, solution: Solution, payload: dict, emit_dir: Path | None) -> None:
    """With ``--emit DIR``: write each deployment's launch script, manifests and benchmark (the payload already names them)."""
    if emit_dir is None or not solution.status.found:
        return
    from guide_opt.catalog import load_catalog
    from guide_opt.deploy import build_artifacts, write_artifacts

    payload["emitted"] = [str(p) for p in write_artifacts(build_artifacts(problem.models, solution.deployments, load_catalog()), emit_dir)]


def _print_emitted(payload: dict) -> None:
    if payload.get("emitted"):
        folders = sorted({str(Path(p).parent) for p in payload["emitted"]})
        click.echo(f"  launch commands, Kubernetes manifests and SLO benchmarks written to {', '.join(folders)}")


def plan_summary(deployments: list[dict]) -> str:
    """One line per plan: each deployment's summary, prefixed by its LLM when the plan serves several (a fleet)."""
    several = len(deployments) > 1
    return " + ".join(f"{d['model']}: {d['summary']}" if several else d["summary"] for d in deployments)


def _verdict(verified: bool, failures: list[str]) -> str:
    """'yes', or 'NO: ' and the verification failures."""
    return "yes" if verified else "NO: " + "; ".join(failures)


def _print_binding(binding: list[dict], listed: int = 6) -> None:
    """Binding constraints one per line; the others named briefly (all of them are in the JSON)."""
    for b in binding:
        if b.get("binding"):
            click.echo(f"  {b['text']}")
    for label, group in (("do not bind", [b for b in binding if b.get("binding") is False]),
                         ("not evaluated within the explanation time budget (--no-explain skips this report)",
                          [b for b in binding if b.get("binding") is None])):
        if group:
            names = [b["constraint"] for b in group]
            shown = ", ".join(names[:listed]) + (f" and {len(names) - listed} more" if len(names) > listed else "")
            click.echo(f"  {label}: {shown}")


def slo_margin_words(req, d) -> str:
    """Headroom of each latency SLO under the plan's prediction, after its SLO factors (calibration x slo_margin).

    E.g. ``TTFT 480 ms to spare (20.1 ms x 1.00 vs 500), TPOT 33.4 ms to spare (6.6 ms x 1.00 vs 40)``; '' without SLOs.
    """
    factors = d.slo_margin or {}
    parts = []
    for key, limit in (("ttft", req.slo.ttft_ms), ("tpot", req.slo.tpot_ms)):
        if limit is None:
            continue
        factor = factors.get(f"{key}_factor", 1.0)
        planned_ms = d.metrics[f"{key}_ms"] * factor
        spare = limit - planned_ms
        parts.append(f"{key.upper()} {fmt_number(abs(spare))} ms {'to spare' if spare >= 0 else 'OVER'} "
                     f"({fmt_number(d.metrics[f'{key}_ms'])} ms x {factor:.2f} vs {limit:g})")
    return ", ".join(parts)


def simulated_words(sim: dict) -> str:
    """One line of a deployment's simulated check: percentile latencies, goodput and the verdict."""
    pct = sim["percentile"]
    goodput = "" if sim.get("goodput_fraction") is None else f", goodput {sim['goodput_fraction']:.0%}"
    verdict = "meets the SLOs" if sim["meets_slo"] else "MISSES: " + "; ".join(sim["violations"])
    return (f"simulated ({sim['arrival']}, {sim['requests']} requests, seed {sim['seed']}): TTFT p{pct} {fmt_number(sim['ttft_ms'])} ms, "
            f"TPOT p{pct} {fmt_number(sim['tpot_ms'])} ms{goodput} -- {verdict}")


def _alternative_status(status: str) -> str:
    """'' for a proven pick, else a word on what its status means."""
    return {"OPTIMAL": "", "FEASIBLE": " (best found, not proven)"}.get(status, " (not found within the time limit)")


def _simulated_cell(alternative: dict) -> str:
    meets = alternative.get("meets_slo_in_simulation")
    return "-" if meets is None else "meets SLOs" if meets else "MISSES"


def _percentile_label(problem: Problem, metrics: dict) -> str:
    """``p90 `` before the latencies when the steady-state model reports the SLO's percentile ("" for the burst model)."""
    if problem.prediction.serving_model != "steady_state" or metrics.get("slo_percentile") is None:
        return ""
    return f"p{metrics['slo_percentile']:.0f} "


def _load_text(requirement, metrics: dict) -> str | None:
    """The planned load of one replica and the means at it, e.g. ``4.00 requests/s per replica (78% of capacity), mean TTFT ...``."""
    load = metrics.get("load_per_replica")
    if load is None:
        return None
    w = requirement.workload
    unit = "requests/s" if w.request_rate_per_s is not None else "users" if w.concurrent_users is not None else "concurrent requests (a full replica)"
    share = ""
    if metrics.get("utilization") is not None:
        share = f" ({capacity_share_text(metrics['utilization'], closed_loop=w.concurrent_users is not None)})"
    return (f"{load:,.4g} {unit} per replica{share}; mean TTFT {fmt_number(metrics['ttft_mean_ms'])} ms, "
            f"mean TPOT {fmt_number(metrics['tpot_mean_ms'])} ms")


def print_solution(problem: Problem, solution: Solution, payload: dict) -> None:
    """Readable report of a solution."""
    _header(problem, solution, solution.objective_name)
    if not solution.status.found:
        _print_explanation(solution)
        return
    click.echo("")
    click.echo("Deployments")
    rows_done: list = []
    for req, d in zip(problem.models, solution.deployments):
        m = d.metrics
        slo_ttft = f" (SLO {req.slo.ttft_ms:g})" if req.slo.ttft_ms else ""
        slo_tpot = f" (SLO {req.slo.tpot_ms:g})" if req.slo.tpot_ms else ""
        served = f"   serves {payload['served_percent'][len(rows_done)]:.1f}% of demand" if "served_percent" in payload else ""
        rows_done.append(d)
        click.echo(f"  {d.model}: {d.describe()}   ${d.cost_per_hour:,.2f}/h{served}")
        click.echo(f"      {_percentile_label(problem, m)}TTFT {fmt_number(m['ttft_ms'])} ms{slo_ttft}, TPOT {fmt_number(m['tpot_ms'])} ms{slo_tpot}, "
                   f"{fmt_number(m['throughput_tokens_per_s'])} tokens/s, memory {m['memory_utilization']:.0%} of each GPU")
        load = _load_text(req, m) if problem.prediction.serving_model == "steady_state" else None
        if load:
            click.echo(f"      steady state: {load}")
        margin = slo_margin_words(req, d)
        if margin:
            click.echo(f"      SLO margin (predicted): {margin}")
        if d.simulated is not None:
            click.echo(f"      {simulated_words(d.simulated)}")
    for note in solution.notes:
        click.echo(f"  note: {note}")
    verdict = _verdict(payload["verified"], payload.get("verification_failures", []))
    if solution.solver == "optuna" and not payload["verified"]:
        verdict = ("the serving simulator accepted this refined plan, but the static model disagrees: "
                   + "; ".join(payload.get("verification_failures", [])))
    click.echo(f"  verified with the full model: {verdict}")
    if solution.alternatives:
        click.echo("")
        click.echo("Alternatives")
        rows = [[a["kind"] + _alternative_status(a["status"]), format_objective(a["objective_name"], a["objective"]),
                 "-" if a["cost_per_hour"] is None else f"${a['cost_per_hour']:,.2f}/h", _simulated_cell(a),
                 plan_summary(a["deployments"]) or "-"] for a in solution.alternatives]
        echo_rows(["kind", "objective", "cost", "simulated", "deployments"], rows)
    binding = payload.get("binding_constraints")
    if binding:
        click.echo("")
        click.echo("Constraints")
        _print_binding(binding)
    stats = solution.stats
    click.echo("")
    click.echo(f"  searched {stats.get('candidates', 0)} candidates ({stats.get('pruned_shapes', 0)} shapes pruned by pre-checks"
               f"{_dominated_text(stats)}){_cached_text(payload)}")
    if payload.get("plot"):
        click.echo(f"  chart written to {payload['plot']}")


def _cached_text(payload: dict) -> str:
    """Said after the candidate count when the table came from the table cache, or was built from the step tables an
    earlier solve kept (``solve --no-cache`` builds it anew)."""
    source = payload.get("stats", {}).get("timing", {}).get("candidate_table", "")
    if source == "cached":
        return "; candidate table read from the cache (--no-cache rebuilds it)"
    if source.startswith("built from "):
        return f"; candidate table {source} by earlier solves of these LLMs (--no-cache builds it anew)"
    return ""


def _dominated_text(stats: dict) -> str:
    n = stats.get("dominated_pruned")
    return f", {n} dominated candidates pruned before the model was built" if n else ""


def _header(problem: Problem, solution: Solution, objective_key: str) -> None:
    gap = "-" if solution.gap is None else f"{solution.gap:.2%}"
    click.echo(f"{problem.name}")
    click.echo(f"  status {solution.status.value}   objective ({solution.objective_name}) {format_objective(objective_key, solution.objective)}   "
               f"bound {format_objective(objective_key, solution.bound)}   gap {gap}   time {solution.wall_time_s:.2f} s   solver {solution.solver}")


def _print_pareto(problem: Problem, answer: Answer, plot_file: Path | None, output_format: str, emit_dir: Path | None = None) -> int:
    """``objective: pareto``: the exact frontier, its points, the optimum, and the chart."""
    solution, payload, frontier, space = answer.solution, answer.payload, answer.frontier, answer.space
    if plot_file is not None and frontier.points:
        from guide_opt.plotting import plot_frontier

        payload["plot"] = str(plot_frontier(frontier, plot_file, title=problem.name, budget_per_hour=problem.budget_per_hour))
    emit_artifacts(problem, solution, payload, emit_dir)
    if output_format == "json":
        echo_json(payload)
        return 0 if solution.status.found else 2
    _header(problem, solution, problem.objective)
    if not solution.status.found:
        _print_explanation(solution)
        return 2
    click.echo("")
    click.echo(f"Pareto frontier: {len(frontier.points)} non-dominated plans over cost ($/h), mean request latency "
               f"(TTFT + (output_tokens-1) x TPOT; SLOs at p{frontier.slo_percentile} hold on every point) and throughput")
    rows = [[str(i + 1), f"${p.cost_per_hour:,.2f}", f"{p.latency_ms:,.1f}", f"{p.throughput_tokens_per_s:,.0f}",
             str(sum(q.gpus for q in p.plan)), plan_summary(p.to_json(space)["deployments"])]
            for i, p in enumerate(frontier.points)]
    echo_rows(["#", "$/h", "latency ms", "tokens/s", "GPUs", "deployments"], rows)
    if frontier.slo_latency_ms is not None:
        click.echo(f"  the SLOs bound the request latency at {frontier.slo_latency_ms:,.1f} ms")
    click.echo("")
    click.echo("Optimum (cheapest point)")
    for d in solution.deployments:
        click.echo(f"  {d.model}: {d.describe()}   ${d.cost_per_hour:,.2f}/h")
    failures = solution.stats.get("verification_failures")
    click.echo(f"  every point verified with the full model: {_verdict(not failures, failures)}")
    click.echo("")
    click.echo(f"  {frontier.solves} CP-SAT solves ({frontier.reused} answers reused from enclosing bounds); searched "
               f"{solution.stats.get('candidates', 0)} candidates ({solution.stats.get('pruned_shapes', 0)} shapes pruned by pre-checks"
               f"{_dominated_text(solution.stats)})")
    if payload.get("plot"):
        click.echo(f"  chart written to {payload['plot']}")
    _print_emitted(payload)
    return 0


def _print_schedule(problem: Problem, answer: Answer, plot_file: Path | None, output_format: str, emit_dir: Path | None = None) -> int:
    """Batch jobs scheduled on the GPU pool: the schedule table, its verification, the Gantt chart."""
    solution, payload, schedule = answer.solution, answer.payload, answer.schedule
    if plot_file is not None and schedule.jobs:
        from guide_opt.plotting import plot_schedule

        payload["plot"] = str(plot_schedule(schedule, problem, plot_file, title=problem.name))
    emit_artifacts(problem, solution, payload, emit_dir)
    if output_format == "json":
        echo_json(payload)
        return 0 if solution.status.found else 2
    _header(problem, solution, schedule_reporting(problem.objective))
    if not solution.status.found:
        _print_explanation(solution)
        return 2
    click.echo("")
    click.echo(f"Schedule (times in hours from the start; slots in {schedule.quantum_s} s quanta; makespan {schedule.makespan_h:.2f} h, "
               f"cost ${schedule.cost_usd:,.2f})")
    rows = [[str(j.option.job), j.model, j.option.candidate.shape.label() + f" b{j.option.candidate.batch}", str(j.option.replicas),
             str(j.option.gpus), f"{j.start_h:.2f}", f"{j.end_h:.2f}", f"{problem.models[j.option.job].workload.deadline_h:g}",
             f"${j.option.cost_usd:,.2f}"] for j in schedule.jobs]
    echo_rows(["job", "model", "shape", "replicas", "GPUs", "start", "end", "deadline", "cost"], rows)
    click.echo(f"  verified with the full model (deployments, durations, deadlines, capacity at every start): "
               f"{_verdict(payload['verified'], payload.get('verification_failures', []))}")
    stats = solution.stats
    click.echo("")
    click.echo(f"  {stats.get('job_options', 0)} job options ({stats.get('dominated_pruned', 0)} dominated options pruned) from "
               f"{stats.get('candidates', 0)} candidates")
    if payload.get("plot"):
        click.echo(f"  chart written to {payload['plot']}")
    _print_emitted(payload)
    return 0


def _print_explanation(solution: Solution) -> None:
    e = solution.explanation or {}
    if solution.status is Status.UNKNOWN:
        click.echo("  no deployment was found within the time limit; raise --time-limit-s or use --preset exact")
        return
    click.echo("")
    click.echo("Why it is infeasible")
    for reason in e.get("reasons", []):
        click.echo(f"  - {reason}")
    if e.get("relaxations"):
        click.echo("")
        click.echo("Single relaxations that make it feasible (cheapest first)")
        for r in e["relaxations"]:
            click.echo(f"  - {r['text']}")
