"""Evaluated candidate tables and plan checks kept on disk, so that solving a problem again skips the candidate
build and the simulations of plans it has checked before.

The build (:func:`guide_opt.space.build_space`) evaluates every candidate with the full
performance model and is most of a solve's time; what it produces depends only on the problem's
LLMs, workloads, SLOs, search space and prediction settings, on the catalog (``hardware_db/``)
and on guide-opt's own code. A solve through :func:`guide_opt.api.solve` (``guide-opt solve``,
the web planner) looks its table up here first under a key made of exactly those inputs:

- guide-opt's source files and the ``hardware_db/`` files, by content, and the Python and numpy
  versions (a new release, an edited catalog file or an upgraded numpy never reads an older table);
- the problem without the fields that only the solvers read (:data:`SOLVER_ONLY_FIELDS`: its name,
  description, objective, budget and GPU-count limit; of the inventory only which GPU types have
  none, since those are pruned before evaluation), so re-solving with another objective or budget
  reuses the table;
- the content of every file the problem names: an LLM given as a ``config.json`` (its parsed
  specification) and the calibration file (its parsed factors).

A table read back is the one the build made for those inputs, so the answer is the same as with a
fresh build (``tests/planning/test_table_cache.py`` checks it).

A plan check (:func:`guide_opt.simcheck.check_plan`: the seeded simulation of a plan at its own
workload) is kept the same way (in the ``checks`` subfolder; tables in ``tables``), under a key of the whole problem but its
name and description, the files it names, the plan's deployments, the requests and the seed
(:func:`check_key`); a solve that meets the same plan again -- the optimum or an alternative --
reads the verdict instead of simulating.

A build that finds no table of its own still starts from the *step tables* of earlier builds (in the
``steps`` subfolder): each shape's :class:`~guide_opt.perf.steady_state.StepTable` memoises the
steady-state answers of its configuration -- capacities, the largest rate within each SLO, loads
already evaluated -- none of which depends on the request rate, the users or the deadline, and the
SLO-limited searches of another SLO retrace many of the same loads. They are kept per set of LLMs
and lengths (:func:`steps_key`), and a table starts from the kept one of exactly its configuration
(:func:`~guide_opt.perf.steady_state.table_identity`), so a problem that differs in its demand, SLOs,
GPUs or budget is built from them and gets the candidates a fresh build makes; only problems of at
most :data:`STEP_TABLE_MAX_MODELS` LLMs keep them (the what-if of a deployment, not a fleet).

Where they are kept, and how (a private folder, atomic writes, limits, ``GUIDE_OPT_CACHE_DIR=off`` and
``solve --no-cache``): :mod:`guide_opt.disk_cache`. A table that cannot be read is rebuilt and a
folder that cannot be written leaves the solve uncached; neither is an error.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Sequence

from guide_opt import disk_cache
from guide_opt.catalog import Catalog, load_catalog
from guide_opt.disk_cache import code_and_catalog_digest
from guide_opt.prediction import problem_calibration
from guide_opt.problem import Problem
from guide_opt.space import BuildProgress, ModelSpace, SearchSpace, StepMemories, evaluate_search, resolve_search

#: Bumped when the key or the stored object changes shape.
FORMAT_VERSION = 1
#: Problems of at most this many LLMs keep and reuse their step tables (a large fleet's would be large to store and
#: to send back from the build's workers).
STEP_TABLE_MAX_MODELS = 8
#: Largest step-table file written (pickled bytes): beyond it only this build's tables are kept, or none.
STEP_TABLE_MAX_BYTES = 64 * 2**20
#: Problem fields that no candidate depends on: the solvers read them (limits, objective), the build does not.
SOLVER_ONLY_FIELDS = ("name", "description", "objective", "budget_per_hour")
#: ``hardware`` fields that no candidate depends on (the inventory's counts, except zero, likewise).
SOLVER_ONLY_HARDWARE_FIELDS = ("max_gpus", "inventory")


def _file_inputs(problem: Problem, catalog: Catalog) -> dict[str, Any]:
    """What the files a problem names hold: each LLM's parsed specification (a ``config.json`` or the catalog's) and the
    parsed calibration."""
    calibration = problem_calibration(problem)
    return {"llms": [catalog.llm(m.id, field=f"models[{i}].id").model_dump(mode="json") for i, m in enumerate(problem.models)],
            "calibration": None if calibration is None else calibration.model_dump(mode="json")}


def table_key(problem: Problem, catalog: Catalog) -> str:
    """The cache key of ``problem``'s candidate table (see the module docstring for what it covers)."""
    fields = problem.model_dump(mode="json", exclude=set(SOLVER_ONLY_FIELDS))
    hardware = fields["hardware"]
    for name in SOLVER_ONLY_HARDWARE_FIELDS:
        hardware.pop(name, None)
    hardware["no_inventory"] = sorted(gpu for gpu, count in problem.hardware.inventory.items() if count == 0)
    return disk_cache.key_of({"format": FORMAT_VERSION, "code_and_catalog": code_and_catalog_digest(), "problem": fields}
                             | _file_inputs(problem, catalog))


def check_key(problem: Problem, deployments: Sequence[Any], num_requests: int, seed: int) -> str:
    """The cache key of a plan check (:func:`guide_opt.simcheck.check_plan`): the whole problem but its name and
    description (the objective decides whether a load saturates), the files it names, every field of every deployment
    but its simulated verdict, the requests and the seed."""
    fields = problem.model_dump(mode="json", exclude={"name", "description"})
    plan = [{k: v for k, v in dataclasses.asdict(d).items() if k != "simulated"} for d in deployments]
    return disk_cache.key_of({"format": FORMAT_VERSION, "kind": "plan check", "code_and_catalog": code_and_catalog_digest(),
                              "problem": fields, "plan": plan, "requests": num_requests, "seed": seed} | _file_inputs(problem, load_catalog()))


def checks_path(problem: Problem, deployments: Sequence[Any], num_requests: int, seed: int) -> Path | None:
    """Where the plan check of ``deployments`` is kept (:func:`check_key`), or None when the cache is off (the key is
    then not computed)."""
    folder = disk_cache.folder("checks")
    return None if folder is None else folder / f"{check_key(problem, deployments, num_requests, seed)}.pickle"


def cached_checks(path: Path) -> tuple | None:
    """The plan check kept at ``path`` (a tuple of :class:`~guide_opt.simcheck.DeploymentCheck`), or None."""
    return disk_cache.read(path, tuple)


def store_checks(path: Path, checks: tuple) -> None:
    """Keep a plan check at ``path`` (quietly nothing when it cannot be written)."""
    disk_cache.write(path.parent, path, checks)


def steps_key(models: Sequence[ModelSpace]) -> str:
    """The cache key of the step tables a build of ``models`` (:func:`~guide_opt.space.resolve_search`'s) keeps: their
    LLMs' specifications and lengths, the code and the catalog. Problems that differ in anything else share it."""
    llms = sorted({json.dumps([ms.llm.model_dump(mode="json"), ms.input_tokens, ms.output_tokens], sort_keys=True) for ms in models})
    return disk_cache.key_of({"format": FORMAT_VERSION, "kind": "step tables", "code_and_catalog": code_and_catalog_digest(), "llms": llms})


def _kept_step_tables(models: Sequence[ModelSpace]) -> tuple[Path, StepMemories] | None:
    """Where the step tables of ``models`` are kept and those kept there (empty when none), or None when they are not kept."""
    folder = disk_cache.folder("steps")
    if folder is None or len(models) > STEP_TABLE_MAX_MODELS:
        return None
    path = folder / f"{steps_key(models)}.pickle"
    return path, disk_cache.read(path, dict) or {}


def _keep_step_tables(path: Path, after: StepMemories, built: StepMemories) -> None:
    """Store ``after`` (the kept tables with this build's) at ``path``; this build's alone (``built``) if that is too
    large; else none."""
    for tables in (after, built):
        if tables and disk_cache.write(path.parent, path, tables, max_bytes=STEP_TABLE_MAX_BYTES):
            return


def cached_build(problem: Problem, *, workers: int | None = None, on_shape: BuildProgress | None = None) -> tuple[SearchSpace, str]:
    """``problem``'s candidate table and where it came from: ``"cached"``, ``"built"`` (and stored) or ``"built, not cached"``;
    a build that started from kept step tables says ``"built from N of M step tables kept"``.

    The table is :func:`~guide_opt.space.build_space`'s for ``problem``; a table read from the
    cache carries ``problem`` itself (its solver-only fields may differ from the problem that
    was built). The build's input checks run either way (:func:`~guide_opt.space.resolve_search`),
    so bad input raises the same :class:`~guide_opt.errors.InputError` whether or not the table is
    cached. ``on_shape``: the build's progress (:func:`~guide_opt.space.evaluate_search`), silent on a hit.
    Within :func:`~guide_opt.disk_cache.switched_off` (``solve --no-cache``) the table is built and not stored.
    """
    catalog = load_catalog()
    resolved = resolve_search(problem, catalog)
    folder = disk_cache.folder("tables")
    if folder is None:
        return evaluate_search(problem, resolved, workers=workers, on_shape=on_shape), "built, not cached"
    path = folder / f"{table_key(problem, catalog)}.pickle"
    space = disk_cache.read(path, SearchSpace)
    if space is not None:
        return dataclasses.replace(space, problem=problem), "cached"
    kept = _kept_step_tables(resolved[0])
    if kept is None:
        space = evaluate_search(problem, resolved, workers=workers, on_shape=on_shape)
        source = "built"
    else:
        steps_path, known = kept
        after = dict(known)
        space = evaluate_search(problem, resolved, workers=workers, on_shape=on_shape, step_memories=after)
        built = {identity: memory for identity, memory in after.items() if memory is not known.get(identity)}
        reused = sum(identity in known for identity in built)
        _keep_step_tables(steps_path, after, built)
        source = f"built from {reused} of {len(built)} step tables kept" if reused else "built"
    return space, (source if disk_cache.write(folder, path, space) else "built, not cached")

