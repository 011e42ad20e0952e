"""Solver presets: time limit, workers, seed, trials and raw CP-SAT parameters, as YAML data.

Bundled presets live in ``solvers/<name>.yaml`` (``fast``, ``exact``, ``refine``);
``--preset`` takes a name or a path.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from guide_opt import limits

from guide_opt.catalog import load_spec
from guide_opt.data_files import data_dir
from guide_opt.errors import InputError

if TYPE_CHECKING:  # OR-Tools loads in about half a second: only the solvers that use it import it
    from ortools.sat.python import cp_model

DEFAULT_PRESET = "fast"


class SolverPreset(BaseModel):
    """How to run the solvers.

    time_limit_s: wall-clock limit of the whole solve, the candidate build included (see :mod:`guide_opt.deadline`;
    every CP-SAT call of the optimum, tie-break, plan-check rounds, alternatives and explanation shares it); num_workers: CP-SAT search workers;
    seed: random seed; trials: Optuna refinement trials; cp_sat: extra CP-SAT parameters by
    their protobuf names (e.g. ``linearization_level``).
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    description: str = ""
    time_limit_s: float = Field(default=10.0, gt=0, le=limits.MAX_TIME_LIMIT_S)
    num_workers: int = Field(default=2, gt=0, le=256)
    seed: int = Field(default=0, ge=0, le=limits.MAX_SEED)
    trials: int = Field(default=60, gt=0, le=limits.MAX_TRIALS)
    cp_sat: dict[str, Any] = {}


def load_preset(name_or_path: str = DEFAULT_PRESET) -> SolverPreset:
    """Load a bundled preset by name, or a preset file by path."""
    path = Path(name_or_path)
    if not path.suffix:
        path = data_dir("solvers") / f"{name_or_path}.yaml"
        if not path.is_file():
            known = sorted(p.stem for p in data_dir("solvers").glob("*.yaml"))
            raise InputError("--preset", f"unknown preset '{name_or_path}'", f"use one of {', '.join(known)} or a path to a YAML file")
    return load_spec(path, SolverPreset)


def apply_cp_sat_parameters(solver: cp_model.CpSolver, preset: SolverPreset, *, time_limit_s: float | None = None, seed: int | None = None) -> None:
    """Set the preset's parameters on ``solver``; an unknown CP-SAT parameter raises :class:`InputError`."""
    params = solver.parameters
    params.max_time_in_seconds = time_limit_s if time_limit_s is not None else preset.time_limit_s
    params.num_workers = preset.num_workers
    params.random_seed = seed if seed is not None else preset.seed
    for key, value in preset.cp_sat.items():
        if not hasattr(params, key):
            raise InputError(f"preset cp_sat.{key}", "not a CP-SAT parameter", "see ortools/sat/sat_parameters.proto for the names")
        try:
            setattr(params, key, value)
        except (TypeError, ValueError, OverflowError) as exc:
            raise InputError(f"preset cp_sat.{key}", f"bad value {value!r} ({exc})", "use the type the parameter expects") from None
