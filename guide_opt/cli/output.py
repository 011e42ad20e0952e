"""Rendering helpers shared by the verbs: ``--format`` option, JSON and aligned text."""

from __future__ import annotations

import json
import math
from typing import Any

import click

format_option = click.option(
    "--format",
    "output_format",
    type=click.Choice(["table", "json"]),
    default="table",
    show_default=True,
    help="Human-readable table or machine-readable JSON.",
)


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def echo_json(payload: Any) -> None:
    """Print ``payload`` as indented JSON (non-finite floats become null)."""
    click.echo(json.dumps(_clean(payload), indent=2))


def fmt_number(value: float | None, digits: int = 3) -> str:
    """Format a number with ``digits`` significant digits; '-' for None."""
    if value is None:
        return "-"
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer() and abs(value) < 1e6):
        return f"{value:,.0f}"
    return f"{value:,.{digits}g}" if abs(value) < 100 else f"{value:,.0f}"


def echo_pairs(title: str, pairs: list[tuple[str, str]]) -> None:
    """Print a title line then ``label  value`` lines with aligned values."""
    click.echo(title)
    width = max((len(label) for label, _ in pairs), default=0)
    for label, value in pairs:
        click.echo(f"  {label.ljust(width)}  {value}")


def echo_rows(headers: list[str], rows: list[list[str]]) -> None:
    """Print rows under ``headers`` in left-aligned columns."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    click.echo("  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip())
    for row in rows:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
