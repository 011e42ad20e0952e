"""Solvers behind one interface (:class:`~guide_opt.solvers.base.Solver`).

- ``cpsat``      -- the exact CP-SAT solver (default).
- ``exhaustive`` -- brute-force enumeration of the same discrete space (the cross-check).
- ``optuna``     -- CP-SAT, then Optuna refinement against the serving simulator.

Each solver module registers its class in :data:`SOLVERS` when imported; :func:`load_all`
imports them (lazily, so that ``import guide_opt.solvers`` does not load Optuna).
"""

from __future__ import annotations

from guide_opt.errors import InputError
from guide_opt.presets import SolverPreset
from guide_opt.solvers.base import SOLVERS, Solver


def load_all() -> None:
    """Import every solver module so it registers itself."""
    from guide_opt.solvers import cpsat, exhaustive, optuna_solver  # noqa: F401 -- imported for registration


def get_solver(name: str, preset: SolverPreset | None = None) -> Solver:
    """Instantiate the solver registered as ``name``."""
    load_all()
    if name not in SOLVERS:
        raise InputError("--solver", f"unknown solver '{name}'", f"use one of {', '.join(sorted(SOLVERS))}")
    return SOLVERS[name](preset)


__all__ = ["SOLVERS", "Solver", "get_solver", "load_all"]
