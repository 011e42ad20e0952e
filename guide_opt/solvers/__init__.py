"""Solvers behind one interface (:class:`~guide_opt.solvers.base.Solver`).

- ``cpsat``      -- the exact CP-SAT solver (default).
- ``exhaustive`` -- brute-force enumeration of the same discrete space (the cross-check).
"""

from __future__ import annotations

import importlib

from guide_opt.solvers.base import SOLVERS, Solver, get_solver

#: Modules that register solvers when imported.
SOLVER_MODULES = ("guide_opt.solvers.cpsat", "guide_opt.solvers.exhaustive", "guide_opt.solvers.optuna_solver")


def load_all() -> None:
    """Import every solver module so it registers itself."""
    for name in SOLVER_MODULES:
        importlib.import_module(name)


__all__ = ["SOLVERS", "Solver", "get_solver", "load_all"]
