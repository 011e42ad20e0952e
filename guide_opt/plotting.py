"""Charts for ``guide-opt solve --plot FILE``: the Pareto frontier, a batch-job Gantt chart, a fleet.

Matplotlib's object API with the Agg canvas (no pyplot state, no display needed); the
format follows the file's extension (:data:`PLOT_FORMATS`).

- :func:`plot_frontier` -- two panels sharing the cost axis: latency vs cost and throughput
  vs cost, every point coloured by the third objective; the optimum (cheapest point) starred,
  the request latency the SLOs imply and the budget drawn as dashed lines.
- :func:`plot_schedule` -- one bar per job from its start to the end of its slot, coloured by
  GPU type and labelled with its shape; deadlines as ticks; below, the GPUs in use per type
  over time against the inventory.
- :func:`plot_fleet` -- $/h and GPUs per LLM of a fleet plan.
"""

from __future__ import annotations

from pathlib import Path

from guide_opt.errors import InputError
from guide_opt.limits import check_writable_file

#: File extensions ``--plot`` accepts.
PLOT_FORMATS = (".png", ".svg", ".pdf")

_COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]


def check_plot_path(path: str | Path) -> Path:
    """``path`` as a Path, or :class:`InputError` when its extension is not a supported format or it cannot be written.

    Called before the solve, so a bad path costs nothing; the folder must exist already.
    """
    path = Path(path)
    if path.suffix.lower() not in PLOT_FORMATS:
        raise InputError("--plot", f"cannot tell the chart format from '{path.name}'", f"end the file name with {', '.join(PLOT_FORMATS)}")
    return check_writable_file(path, "--plot")


def _t(text: str) -> str:
    """``text`` with dollar signs escaped (matplotlib reads a pair of them as mathtext)."""
    return text.replace("$", r"\$")


def _figure(width_in: float, height_in: float, rows: int = 1, cols: int = 1, **kwargs):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_in, height_in), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False, **kwargs)
    return fig, axes


#: Characters of a 12-pt title per inch of figure width (about 0.09 in per character, with margin).
_TITLE_CHARS_PER_IN = 9


def _suptitle(fig, text: str) -> None:
    """The figure title, wrapped to the figure's width so that a long problem name is not clipped."""
    import textwrap

    width = max(20, int(fig.get_figwidth() * _TITLE_CHARS_PER_IN))
    fig.suptitle(_t("\n".join(textwrap.wrap(text.strip(" -"), width))))


def _save(fig, path: Path) -> Path:
    try:
        fig.savefig(path, dpi=150)
    except OSError as exc:
        raise InputError("--plot", f"cannot write '{path}' ({exc.strerror or type(exc).__name__})", "choose a writable location") from None
    return path


def plot_frontier(frontier, path: str | Path, *, title: str = "", budget_per_hour: float | None = None) -> Path:
    """Draw a :class:`~guide_opt.pareto.Frontier` to ``path`` (PNG, SVG or PDF by extension)."""
    path = check_plot_path(path)
    fig, axes = _figure(11, 4.8, 1, 2)
    ax_lat, ax_thr = axes[0]
    points = frontier.points
    cost = [p.cost_per_hour for p in points]
    latency_s = [p.latency_ms / 1e3 for p in points]
    throughput = [p.throughput_tokens_per_s for p in points]
    if points:
        sc = ax_lat.scatter(cost, latency_s, c=throughput, cmap="viridis", s=28, edgecolors="black", linewidths=0.3, zorder=3)
        fig.colorbar(sc, ax=ax_lat, label="throughput (tokens/s)")
        sc2 = ax_thr.scatter(cost, throughput, c=latency_s, cmap="plasma_r", s=28, edgecolors="black", linewidths=0.3, zorder=3)
        fig.colorbar(sc2, ax=ax_thr, label="mean request latency (s)")
        best = frontier.cheapest
        for ax, y in ((ax_lat, best.latency_ms / 1e3), (ax_thr, best.throughput_tokens_per_s)):
            ax.scatter([best.cost_per_hour], [y], marker="*", s=260, color="red", edgecolors="black", zorder=4,
                       label=_t(f"optimum (cheapest): ${best.cost_per_hour:,.2f}/h"))
    if frontier.slo_latency_ms is not None:
        ax_lat.axhline(frontier.slo_latency_ms / 1e3, color="crimson", linestyle="--", linewidth=1.2,
                       label=f"SLO bound p{frontier.slo_percentile}: TTFT + (out-1) x TPOT = {frontier.slo_latency_ms / 1e3:,.2f} s")
    if budget_per_hour is not None:
        for ax in (ax_lat, ax_thr):
            ax.axvline(budget_per_hour, color="grey", linestyle=":", linewidth=1.2, label=_t(f"budget ${budget_per_hour:,.2f}/h"))
    ax_lat.set_xlabel(_t("cost ($/h)"))
    ax_lat.set_ylabel("mean request latency (s)")
    ax_lat.set_title("latency vs cost")
    ax_thr.set_xlabel(_t("cost ($/h)"))
    ax_thr.set_ylabel("throughput (generated tokens/s)")
    ax_thr.set_title("throughput vs cost")
    for ax in (ax_lat, ax_thr):
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8, loc="best")
    _suptitle(fig, f"{title} -- Pareto frontier: {len(points)} non-dominated plans ({frontier.status.value})")
    return _save(fig, path)


def plot_schedule(schedule, problem, path: str | Path, *, title: str = "") -> Path:
    """Draw a :class:`~guide_opt.scheduling.Schedule` as a Gantt chart with GPU usage per type."""
    path = check_plot_path(path)
    jobs = schedule.jobs
    gpu_ids = sorted({j.option.gpu_id for j in jobs})
    colour = {g: _COLOURS[i % len(_COLOURS)] for i, g in enumerate(gpu_ids)}
    fig, axes = _figure(11, 2.2 + 0.55 * max(1, len(jobs)) + 1.6 * max(1, len(gpu_ids)), 1 + max(1, len(gpu_ids)), 1, sharex=True,
                        height_ratios=[max(1.5, 0.55 * len(jobs))] + [1.6] * max(1, len(gpu_ids)))
    gantt = axes[0][0]
    for row, j in enumerate(jobs):
        o = j.option
        gantt.barh(row, j.end_h - j.start_h, left=j.start_h, color=colour[o.gpu_id], alpha=0.35, edgecolor=colour[o.gpu_id])
        gantt.barh(row, j.finish_h - j.start_h, left=j.start_h, color=colour[o.gpu_id], edgecolor="black", linewidth=0.5)
        gantt.text(j.start_h + 0.01 * max(schedule.makespan_h, 1e-9), row, f"{o.replicas} x {o.candidate.shape.label()} b{o.candidate.batch} ({o.gpus} GPUs)",
                   va="center", fontsize=8)
        deadline_h = problem.models[o.job].workload.deadline_h
        gantt.plot([deadline_h, deadline_h], [row - 0.4, row + 0.4], color="crimson", linewidth=2)
    gantt.set_yticks(range(len(jobs)), [_t(f"job {j.option.job}: {j.model}") for j in jobs])
    gantt.invert_yaxis()
    gantt.set_title("jobs (solid: running, pale: rest of the reserved slot, red tick: deadline)")
    gantt.grid(True, axis="x", alpha=0.3)
    for k, gpu_id in enumerate(gpu_ids):
        ax = axes[k + 1][0]
        times = sorted({0.0} | {j.start_h for j in jobs} | {j.end_h for j in jobs})
        usage = [sum(j.option.gpus for j in jobs if j.option.gpu_id == gpu_id and j.start_h <= t < j.end_h) for t in times]
        ax.step(times, usage, where="post", color=colour[gpu_id], linewidth=1.8, label=f"{gpu_id} in use")
        ax.fill_between(times, usage, step="post", color=colour[gpu_id], alpha=0.25)
        limit = problem.hardware.inventory.get(gpu_id)
        if limit is not None:
            ax.axhline(limit, color="black", linestyle="--", linewidth=1, label=f"inventory {limit}")
        ax.set_ylabel("GPUs")
        ax.legend(fontsize=8, loc="upper right")
        ax.grid(True, alpha=0.3)
    axes[-1][0].set_xlabel("hours from the start")
    unit = f"makespan {schedule.makespan_h:.2f} h, cost ${schedule.cost_usd:,.2f}"
    _suptitle(fig, f"{title} -- {schedule.objective_name} schedule ({schedule.status.value}): {unit}")
    return _save(fig, path)


def plot_fleet(solution, path: str | Path, *, title: str = "") -> Path:
    """Draw a fleet plan: $/h and GPUs per LLM, coloured by GPU type."""
    path = check_plot_path(path)
    deps = solution.deployments
    gpu_ids = sorted({d.gpu for d in deps})
    colour = {g: _COLOURS[i % len(_COLOURS)] for i, g in enumerate(gpu_ids)}
    fig, axes = _figure(11, 1.8 + 0.4 * max(1, len(deps)), 1, 2, sharey=True)
    ax_cost, ax_gpus = axes[0]
    labels = [f"{i}: {d.model}" for i, d in enumerate(deps)]
    ax_cost.barh(range(len(deps)), [d.cost_per_hour for d in deps], color=[colour[d.gpu] for d in deps])
    ax_gpus.barh(range(len(deps)), [d.gpu_count for d in deps], color=[colour[d.gpu] for d in deps])
    ax_cost.set_yticks(range(len(deps)), [_t(label) for label in labels])
    ax_cost.invert_yaxis()
    ax_cost.set_xlabel(_t("$/h"))
    ax_gpus.set_xlabel("GPUs")
    from matplotlib.patches import Patch

    ax_gpus.legend(handles=[Patch(color=colour[g], label=g) for g in gpu_ids], fontsize=8, loc="lower right")
    for ax in (ax_cost, ax_gpus):
        ax.grid(True, axis="x", alpha=0.3)
    _suptitle(fig, f"{title} -- {solution.objective_name} ({solution.status.value}): ${solution.total_cost_per_hour:,.2f}/h, "
                   f"{sum(d.gpu_count for d in deps)} GPUs")
    return _save(fig, path)
