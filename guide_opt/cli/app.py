"""The click group and the list of verb modules that attach to it."""

from __future__ import annotations

import importlib
import time

import click

from guide_opt import __version__

#: The module under guide_opt.cli that defines each verb (a command or group on :data:`cli`).
COMMAND_MODULES = {
    "estimate": "guide_opt.cli.estimate_cmd",
    "hardware": "guide_opt.cli.catalog_cmd",
    "models": "guide_opt.cli.catalog_cmd",
    "solve": "guide_opt.cli.solve_cmd",
    "validate": "guide_opt.cli.validate_cmd",
    "calibrate": "guide_opt.cli.calibrate_cmd",
    "simulate": "guide_opt.cli.simulate_cmd",
    "serve": "guide_opt.cli.serve_cmd",
    "characterize": "guide_opt.cli.characterize_cmd",
}


#: When the running command started (:func:`time.perf_counter`), set by :func:`guide_opt.cli.main` around each run.
_command_started_s: list[float] = []


def command_started_s() -> float | None:
    """When the running ``guide-opt`` command started (before its verb's modules loaded), None outside one:
    ``solve --time-limit-s`` counts from here."""
    return _command_started_s[0] if _command_started_s else None


def mark_command_start() -> None:
    """Record that a command starts now (:func:`command_started_s`)."""
    _command_started_s[:] = [time.perf_counter()]


def clear_command_start() -> None:
    """Forget the start of the command that ended."""
    _command_started_s.clear()


class LazyGroup(click.Group):
    """A group that imports a verb's module only when that verb runs (or help lists them all).

    The verbs pull in very different libraries (OR-Tools, the simulator, an HTTP client, a web
    server); loading only the one asked for keeps a ``solve`` from paying for the others.
    """

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        """The verb ``cmd_name``, its module imported first."""
        module = COMMAND_MODULES.get(cmd_name)
        if module is not None and cmd_name not in self.commands:
            importlib.import_module(module)
        return super().get_command(ctx, cmd_name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        """Every verb (all modules imported: the help lists them with their summaries)."""
        register_commands()
        return super().list_commands(ctx)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="guide-opt")
def cli() -> None:
    """Plan LLM deployments: GPUs, parallelism, engine, batch and precision under SLOs and budgets."""


def register_commands() -> None:
    """Import every verb module so its commands attach to :data:`cli` (idempotent)."""
    for name in dict.fromkeys(COMMAND_MODULES.values()):
        importlib.import_module(name)
