"""``guide-opt serve``: the web planner (:mod:`guide_opt.web`) on a local HTTP port."""

from __future__ import annotations

import click

from guide_opt.cli.app import cli


@cli.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0 for every interface).")
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True, help="TCP port.")
@click.option("--workers", type=click.IntRange(min=1), default=None, help="Solves running at once; more wait in a queue (default: the machine's cores).")
@click.option("--max-solve-s", type=click.FloatRange(min=1), default=300.0, show_default=True, help="Wall-clock seconds one solve may run before it is stopped.")
def serve_command(host: str, port: int, workers: int | None, max_solve_s: float) -> int:
    """Serve the planner page and its JSON API (documented at /docs) until Ctrl-C.

    The page plans one LLM from a form (or an uploaded config.json), shows the optimum, the
    alternatives, the binding constraints, the frontier chart and, when infeasible, the
    cheapest relaxations; "download problem YAML" turns the session into a CLI run.
    """
    import uvicorn

    from guide_opt.web.app import create_app
    from guide_opt.web.jobs import JobRunner

    app = create_app(JobRunner(max_workers=workers, max_solve_s=max_solve_s))
    click.echo(f"guide-opt planner on http://{host}:{port}/ (API documentation at /docs; Ctrl-C stops it)", err=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")
    return 0
