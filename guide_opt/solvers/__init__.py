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
from typing import TYPE_CHECKING, Any

from guide_opt.errors import InputError
from guide_opt.presets import SolverPreset

if TYPE_CHECKING:
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


def solver_module(name: str) -> str:
    """The module that registers the solver ``name`` (not imported); an unknown name raises :class:`InputError`."""
    module = SOLVER_MODULES.get(name)
    if module is None:
        raise InputError("--solver", f"unknown solver '{name}'", f"use one of {', '.join(sorted(SOLVER_MODULES))}")
    return module


def get_solver(name: str, preset: SolverPreset | None = None) -> Solver:
    """Instantiate the solver registered as ``name`` (its module imported first)."""
    importlib.import_module(solver_module(name))
    from guide_opt.solvers.base import SOLVERS

    return SOLVERS[name](preset)


def __getattr__(name: str) -> Any:
    """``SOLVERS`` and ``Solver`` of :mod:`guide_opt.solvers.base`, imported on first use: naming a solver
    (:func:`solver_module`) does not load the solvers' modules -- OR-Tools among them, half a second."""
    if name in ("SOLVERS", "Solver"):
        from guide_opt.solvers import base

        return getattr(base, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["SOLVERS", "SOLVER_MODULES", "Solver", "get_solver", "load_all", "solver_module"]
