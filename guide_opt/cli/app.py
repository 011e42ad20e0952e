"""The click group and the list of verb modules that attach to it."""

from __future__ import annotations

import importlib

import click

from guide_opt import __version__

#: Modules under guide_opt.cli that each define one or more commands on :data:`cli`.
COMMAND_MODULES = (
    "guide_opt.cli.estimate_cmd",
    "guide_opt.cli.catalog_cmd",
    "guide_opt.cli.solve_cmd",
    "guide_opt.cli.validate_cmd",
    "guide_opt.cli.calibrate_cmd",
    "guide_opt.cli.simulate_cmd",
    "guide_opt.cli.serve_cmd",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="guide-opt")
def cli() -> None:
    """Plan LLM deployments: GPUs, parallelism, engine, batch and precision under SLOs and budgets."""


def register_commands() -> None:
    """Import every verb module so its commands attach to :data:`cli` (idempotent)."""
    for name in COMMAND_MODULES:
        importlib.import_module(name)
