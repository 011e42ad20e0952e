"""``guide-opt solve``: the best deployment for a problem file, proven and explained."""

from __future__ import annotations

from pathlib import Path

import click

from guide_opt.cli.app import cli
from guide_opt.cli.output import echo_json, echo_rows, fmt_number, format_option
from guide_opt.presets import DEFAULT_PRESET, load_preset
from guide_opt.problem import Problem
from guide_opt.solution import Solution, Status
from guide_opt.solvers import get_solver
from guide_opt.verify import verify

_OBJECTIVE_UNITS = {"min_cost": ("$", "/h"), "max_throughput": ("", " tokens/s"), "min_latency": ("", " ms")}


def format_objective(name: str, value: float | None) -> str:
    """``$5.98/h``, ``42,218 tokens/s`` or ``1,081 ms``; '-' for None."""
    if value is None:
        return "-"
    prefix, suffix = _OBJECTIVE_UNITS.get(name, ("", ""))
    return f"{prefix}{value:,.2f}{suffix}" if name == "min_cost" else f"{prefix}{value:,.1f}{suffix}"


@cli.command("solve")
@click.argument("problem_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--solver", "solver_name", default="cpsat", show_default=True, help="cpsat (exact), exhaustive (brute-force cross-check).")
@click.option("--preset", default=DEFAULT_PRESET, show_default=True, help="Solver preset: a name in solvers/ (fast, exact, refine) or a YAML path.")
@click.option("--time-limit-s", type=click.FloatRange(min=0, min_open=True), default=None, help="Wall-clock limit per solve (overrides the preset).")
@click.option("--seed", type=click.IntRange(min=0), default=None, help="Random seed (overrides the preset).")
@click.option("--explain/--no-explain", default=True, show_default=True, help="Report which constraints bind and what relaxing each would gain.")
@format_option
def solve_command(problem_file: Path, solver_name: str, preset: str, time_limit_s: float | None, seed: int | None,
                  explain: bool, output_format: str) -> int:
    """Find the optimal deployment for PROBLEM_FILE (YAML; see problems/README.md).

    Exit code 0 when a deployment was found, 2 when the problem is infeasible (the
    conflicting constraints and the cheapest relaxation are printed), 1 for bad input.
    """
    if not problem_file.is_file():
        raise click.BadParameter(f"no such file: {problem_file}", param_hint="PROBLEM_FILE")
    problem = Problem.from_yaml(problem_file)
    solver_preset = load_preset(preset)
    solution = get_solver(solver_name, solver_preset).solve(problem, time_limit_s=time_limit_s, seed=seed)
    violations = verify(problem, solution) if solution.status.found else []
    binding = []
    if explain and solution.status.found:
        binding = _binding(problem, solution, solver_preset)
    payload = solution.to_json()
    payload["problem"] = problem.name
    payload["verified"] = solution.status.found and not violations
    if violations:
        payload["verification_failures"] = [v.text for v in violations]
    if binding:
        payload["binding_constraints"] = binding
    if output_format == "json":
        echo_json(payload)
    else:
        print_solution(problem, solution, payload)
    return 0 if solution.status.found else 2


def _binding(problem: Problem, solution: Solution, preset) -> list[dict]:
    from guide_opt.explain import explain_binding
    from guide_opt.plan import Pick
    from guide_opt.space import build_space

    space = build_space(problem)
    plan = []
    for ms, dep in zip(space.models, solution.deployments):
        match = next(c for c in ms.candidates if c.shape.key == (dep.gpu, dep.tp, dep.pp, dep.framework, dep.quantization, dep.kv_cache_dtype) and c.batch == dep.max_batch)
        plan.append(Pick(match, dep.replicas))
    return explain_binding(space, tuple(plan), preset)


def print_solution(problem: Problem, solution: Solution, payload: dict) -> None:
    """Readable report of a solution."""
    obj = solution.objective_name
    gap = "-" if solution.gap is None else f"{solution.gap:.2%}"
    click.echo(f"{problem.name}")
    click.echo(f"  status {solution.status.value}   objective ({obj}) {format_objective(obj, solution.objective)}   "
               f"bound {format_objective(obj, solution.bound)}   gap {gap}   time {solution.wall_time_s:.2f} s   solver {solution.solver}")
    if not solution.status.found:
        _print_explanation(solution)
        return
    click.echo("")
    click.echo("Deployments")
    for req, d in zip(problem.models, solution.deployments):
        m = d.metrics
        slo_ttft = f" (SLO {req.slo.ttft_ms:g})" if req.slo.ttft_ms else ""
        slo_tpot = f" (SLO {req.slo.tpot_ms:g})" if req.slo.tpot_ms else ""
        click.echo(f"  {d.model}: {d.describe()}   ${d.cost_per_hour:,.2f}/h")
        click.echo(f"      TTFT {fmt_number(m['ttft_ms'])} ms{slo_ttft}, TPOT {fmt_number(m['tpot_ms'])} ms{slo_tpot}, "
                   f"{fmt_number(m['throughput_tokens_per_s'])} tokens/s, memory {m['memory_utilization']:.0%} of each GPU")
    click.echo(f"  verified with the full model: {'yes' if payload['verified'] else 'NO: ' + '; '.join(payload.get('verification_failures', []))}")
    if solution.alternatives:
        click.echo("")
        click.echo("Alternatives")
        rows = [[a["kind"], format_objective(a["objective_name"], a["objective"]), f"${a['cost_per_hour']:,.2f}/h",
                 " + ".join(d["summary"] for d in a["deployments"])] for a in solution.alternatives]
        echo_rows(["kind", "objective", "cost", "deployments"], rows)
    binding = payload.get("binding_constraints")
    if binding:
        click.echo("")
        click.echo("Constraints")
        for b in binding:
            click.echo(f"  {b['text']}")
    stats = solution.stats
    click.echo("")
    click.echo(f"  searched {stats.get('candidates', 0)} candidates ({stats.get('pruned_shapes', 0)} shapes pruned by pre-checks)")


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
