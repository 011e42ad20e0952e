"""Solvers behind one interface (:class:`~guide_opt.solvers.base.Solver`).

- ``cpsat``      -- the exact CP-SAT solver (default).
- ``exhaustive`` -- brute-force enumeration of the same discrete space (the cross-check).
- ``optuna``     -- CP-SAT, then Optuna refinement against the serving simulator.

Each solver module registers its class in :data:`SOLVERS` when imported; :func:`get_solver`
imports only the module of the solver asked for (:data:`SOLVER_MODULES`), so that a ``cpsat``
solve does not load Optuna, and :func:`load_all` imports them all.
"""

from __future__ import annotations

import importlib

from guide_opt.errors import InputError
from guide_opt.presets import SolverPreset
from guide_opt.solvers.base import SOLVERS, Solver

#: The module that registers each solver name.
SOLVER_MODULES = {
    "cpsat": "guide_opt.solvers.cpsat",
    "exhaustive": "guide_opt.solvers.exhaustive",
    "optuna": "guide_opt.solvers.optuna_solver",
}


def load_all() -> None:
    """Import every solver module so it registers itself."""
    for module in SOLVER_MODULES.values():
        importlib.import_module(module)


def get_solver(name: str, preset: SolverPreset | None = None) -> Solver:
    """Instantiate the solver registered as ``name`` (its module imported first)."""
    module = SOLVER_MODULES.get(name)
    if module is None:
        raise InputError("--solver", f"unknown solver '{name}'", f"use one of {', '.join(sorted(SOLVER_MODULES))}")
    importlib.import_module(module)
    return SOLVERS[name](preset)


__all__ = ["SOLVERS", "SOLVER_MODULES", "Solver", "get_solver", "load_all"]
