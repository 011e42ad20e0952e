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
workload) is kept the same way in the ``checks`` subfolder, under a key of the whole problem but its
name and description, the files it names, the plan's deployments, the requests and the seed
(:func:`check_key`); a solve that meets the same plan again -- the optimum or an alternative --
reads the verdict instead of simulating. Tables live in
``$GUIDE_OPT_CACHE_DIR`` (default ``$XDG_CACHE_HOME/guide-opt/tables``, else
``~/.cache/guide-opt/tables``); ``GUIDE_OPT_CACHE_DIR=off`` or ``solve --no-cache`` turns the cache
off. At most :data:`MAX_TABLES` tables and :data:`MAX_BYTES` are kept (the least recently used go
first). A table that cannot be read (truncated, written by another version of Python's pickle) is
rebuilt; a folder that cannot be written leaves the solve uncached; neither is an error. Tables are
Python pickles, which run code when read: a folder that others may write to is not used (the solve
builds its table, uncached), and a new folder is made private to its user.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import os
import pickle
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from guide_opt.catalog import Catalog, load_catalog
from guide_opt.data_files import data_dir
from guide_opt.deadline import Deadline
from guide_opt.prediction import problem_calibration
from guide_opt.problem import Problem
from guide_opt.space import BuildProgress, SearchSpace, evaluate_search, resolve_search

#: Environment variable naming the cache folder; ``off`` (or an empty value) disables the cache.
CACHE_DIR_ENV = "GUIDE_OPT_CACHE_DIR"
#: Tables kept in the folder; the least recently used beyond this are deleted after each write.
MAX_TABLES = 64
#: Bytes the kept tables may take together (a table is about 250 bytes per candidate); the least
#: recently used beyond this go too, but never the table just written.
MAX_BYTES = 512 * 2**20
#: Suffix of a table being written (renamed to ``<key>.pickle`` once whole); one left by a killed process
#: is deleted once it is :data:`STALE_PARTIAL_S` old.
PARTIAL_SUFFIX = ".partial"
STALE_PARTIAL_S = 3600.0
#: Bumped when the key or the stored object changes shape.
FORMAT_VERSION = 1
#: Problem fields that no candidate depends on: the solvers read them (limits, objective), the build does not.
SOLVER_ONLY_FIELDS = ("name", "description", "objective", "budget_per_hour")
#: ``hardware`` fields that no candidate depends on (the inventory's counts, except zero, likewise).
SOLVER_ONLY_HARDWARE_FIELDS = ("max_gpus", "inventory")


#: Set while a solve runs with the cache switched off (:func:`switched_off`; ``solve --no-cache``).
_OFF: list[bool] = [False]


@contextlib.contextmanager
def switched_off(off: bool = True) -> Iterator[None]:
    """Within this block (when ``off``), :func:`cache_dir` is None: nothing is read or stored (processes forked meanwhile
    inherit it)."""
    before = _OFF[0]
    _OFF[0] = before or off
    try:
        yield
    finally:
        _OFF[0] = before


def cache_dir() -> Path | None:
    """The folder tables are kept in, or None when the cache is off (``GUIDE_OPT_CACHE_DIR=off``, :func:`switched_off`, or
    no home folder to keep it in). Plan checks are kept in its ``checks`` subfolder."""
    if _OFF[0]:
        return None
    configured = os.environ.get(CACHE_DIR_ENV)
    if configured is not None:
        return None if configured.strip().lower() in ("", "off") else Path(configured).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"))
    return base / "guide-opt" / "tables" if base.is_absolute() else None  # no home folder (a bare container user): off


@functools.lru_cache(maxsize=None)
def _files_digest(root: Path, pattern: str) -> str:
    """sha256 over the relative paths and contents of the files under ``root`` matching ``pattern`` (once per process)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob(pattern) if p.is_file() and "__pycache__" not in p.parts):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(b"\0")
        digest.update(path.read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()


def code_and_catalog_digest() -> str:
    """What the tables of this installation depend on besides the problem: guide-opt's code and its ``hardware_db/``,
    and the versions of Python and numpy that compute the figures."""
    package = Path(__file__).resolve().parent
    return "|".join((_files_digest(package, "*.py"), _files_digest(data_dir("hardware_db"), "*"), sys.version, np.__version__))


def _file_inputs(problem: Problem, catalog: Catalog) -> dict[str, Any]:
    """What the files a problem names hold: each LLM's parsed specification (a ``config.json`` or the catalog's) and the
    parsed calibration."""
    calibration = problem_calibration(problem)
    return {"llms": [catalog.llm(m.id, field=f"models[{i}].id").model_dump(mode="json") for i, m in enumerate(problem.models)],
            "calibration": None if calibration is None else calibration.model_dump(mode="json")}


def _digest(parts: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def table_key(problem: Problem, catalog: Catalog) -> str:
    """The cache key of ``problem``'s candidate table (see the module docstring for what it covers)."""
    fields = problem.model_dump(mode="json", exclude=set(SOLVER_ONLY_FIELDS))
    hardware = fields["hardware"]
    for name in SOLVER_ONLY_HARDWARE_FIELDS:
        hardware.pop(name, None)
    hardware["no_inventory"] = sorted(gpu for gpu, count in problem.hardware.inventory.items() if count == 0)
    return _digest({"format": FORMAT_VERSION, "code_and_catalog": code_and_catalog_digest(), "problem": fields}
                   | _file_inputs(problem, catalog))


def check_key(problem: Problem, deployments: Sequence[Any], num_requests: int, seed: int) -> str:
    """The cache key of a plan check (:func:`guide_opt.simcheck.check_plan`): the whole problem but its name and
    description (the objective decides whether a load saturates), the files it names, every field of every deployment
    but its simulated verdict, the requests and the seed."""
    fields = problem.model_dump(mode="json", exclude={"name", "description"})
    plan = [{k: v for k, v in dataclasses.asdict(d).items() if k != "simulated"} for d in deployments]
    return _digest({"format": FORMAT_VERSION, "kind": "plan check", "code_and_catalog": code_and_catalog_digest(), "problem": fields,
                    "plan": plan, "requests": num_requests, "seed": seed} | _file_inputs(problem, load_catalog()))


def cached_checks(key: str) -> tuple | None:
    """The plan check stored under ``key`` (a tuple of :class:`~guide_opt.simcheck.DeploymentCheck`), or None."""
    folder = _checks_dir()
    return None if folder is None else _read(folder / f"{key}.pickle", tuple)


def store_checks(key: str, checks: tuple) -> None:
    """Keep a plan check under ``key`` (quietly nothing when the cache is off or cannot be written)."""
    folder = _checks_dir()
    if folder is not None:
        _write(folder, folder / f"{key}.pickle", checks)


def _checks_dir() -> Path | None:
    """The folder plan checks are kept in (``checks`` under :func:`cache_dir`), or None when the cache is off or shared."""
    folder = cache_dir()
    if folder is None or not _private(folder) or not _private(folder / "checks"):
        return None
    return folder / "checks"


def cached_build(problem: Problem, *, workers: int | None = None, use_cache: bool = True,
                 on_shape: BuildProgress | None = None) -> tuple[SearchSpace, str]:
    """``problem``'s candidate table and where it came from: ``"cached"``, ``"built"`` (and stored) or ``"built, not cached"``.

    The table is :func:`~guide_opt.space.build_space`'s for ``problem``; a table read from the
    cache carries ``problem`` itself (its solver-only fields may differ from the problem that
    was built). The build's input checks run either way (:func:`~guide_opt.space.resolve_search`),
    so bad input raises the same :class:`~guide_opt.errors.InputError` whether or not the table is
    cached. ``on_shape``: the build's progress (:func:`~guide_opt.space.evaluate_search`), silent on a hit.
    """
    catalog = load_catalog()
    resolved = resolve_search(problem, catalog)
    folder = cache_dir() if use_cache else None
    if folder is None or not _private(folder):
        return evaluate_search(problem, resolved, workers=workers, on_shape=on_shape), "built, not cached"
    path = folder / f"{table_key(problem, catalog)}.pickle"
    space = _read(path)
    if space is not None:
        return dataclasses.replace(space, problem=problem), "cached"
    space = evaluate_search(problem, resolved, workers=workers, on_shape=on_shape)
    return space, ("built" if _write(folder, path, space) else "built, not cached")


def cached_build_under(deadline: Deadline, problem: Problem, *, workers: int | None = None,
                       use_cache: bool = True, on_shape: BuildProgress | None = None) -> tuple[SearchSpace, str]:
    """:func:`cached_build`, its time charged to ``deadline``'s ``space_build`` phase (the time limit counts the build)."""
    deadline.phase("space_build")
    return cached_build(problem, workers=workers, use_cache=use_cache, on_shape=on_shape)


def _private(folder: Path) -> bool:
    """Whether tables in ``folder`` can be trusted: it does not exist yet (it is made private), or it belongs to this
    user and no one else may write to it. Pickles run code when read, so a shared folder is not used."""
    try:
        stat = folder.stat()
    except FileNotFoundError:
        return True
    except OSError:
        return False
    owner = getattr(os, "getuid", None)
    return (owner is None or stat.st_uid == owner()) and not stat.st_mode & 0o022


def _read(path: Path, expected: type = SearchSpace):
    """The ``expected`` object stored at ``path`` (its access time refreshed), or None when there is none or it cannot be read."""
    try:
        with path.open("rb") as f:
            found = pickle.load(f)
    except FileNotFoundError:
        return None
    except Exception:  # a truncated or foreign file is rebuilt and overwritten, never an error
        return None
    if not isinstance(found, expected):
        return None
    _touch(path)
    return found


def _touch(path: Path) -> None:
    """Mark ``path`` as used now, to the nanosecond (the file system's own stamps can be coarser than a quick solve)."""
    now = time.time_ns()
    try:
        os.utime(path, ns=(now, now))
    except OSError:
        pass


def _write(folder: Path, path: Path, space: object) -> bool:
    """Store ``space`` (a table or plan checks) at ``path`` atomically (a reader sees the old file or the whole new one) and
    trim the folder.

    False when it could not be stored (no room, no permission): the partial file is removed and the solve goes on.
    """
    partial: Path | None = None
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".", suffix=PARTIAL_SUFFIX, delete=False) as f:
            partial = Path(f.name)
            pickle.dump(space, f, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(partial, path)
    except (OSError, pickle.PicklingError):
        if partial is not None:
            partial.unlink(missing_ok=True)
        return False
    _touch(path)
    _trim(folder)
    return True


def _trim(folder: Path) -> None:
    """Delete the least recently used tables beyond :data:`MAX_TABLES` or :data:`MAX_BYTES`, and partial files a killed writer
    left (another process may be deleting too)."""
    try:
        tables = sorted(((p.stat(), p) for p in folder.glob("*.pickle")), key=lambda sp: sp[0].st_mtime_ns, reverse=True)
    except OSError:
        return
    stale_ns = time.time_ns() - int(STALE_PARTIAL_S * 1e9)
    for partial in folder.glob(f"*{PARTIAL_SUFFIX}"):
        try:
            if partial.stat().st_mtime_ns < stale_ns:
                partial.unlink()
        except OSError:
            pass
    kept_bytes = 0
    for i, (stat, path) in enumerate(tables):
        kept_bytes += stat.st_size
        if i == 0 or (i < MAX_TABLES and kept_bytes <= MAX_BYTES):
            continue
        try:
            path.unlink()
        except OSError:
            pass
