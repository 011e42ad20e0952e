"""Files kept between runs in the user's cache folder: pickles written atomically, read only from a private folder.

The bottom layer of guide-opt's caches. :mod:`guide_opt.table_cache` keeps evaluated candidate
tables and plan checks here, and :func:`guide_opt.catalog.load_catalog` the parsed catalog. Every
stored object is keyed by what it was computed from, including :func:`code_and_catalog_digest` (the
content of guide-opt's sources and ``hardware_db/`` files and the Python and numpy versions), so a new
release, an edited catalog file or an upgraded numpy never reads an older object.

The folder is ``$GUIDE_OPT_CACHE_DIR`` (default ``$XDG_CACHE_HOME/guide-opt``, else
``~/.cache/guide-opt``), one subfolder per kind of object; ``GUIDE_OPT_CACHE_DIR=off`` or :func:`switched_off` (``solve
--no-cache``) turns caching off, and so does a user without a home folder. Objects are Python pickles,
which run code when read: a folder that others may write to is not used, and a new one is made
private to its user. Writes are atomic (a reader sees the old file or the whole new one); a write
that fails (no room, no permission) leaves nothing behind and is not an error; a file that cannot be
read is treated as absent. Each folder keeps at most :data:`MAX_FILES` files and :data:`MAX_BYTES`,
the least recently used going first.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import pickle
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

import numpy as np

from guide_opt.data_files import data_dir

#: Environment variable naming the cache folder; ``off`` (or an empty value) disables the cache.
CACHE_DIR_ENV = "GUIDE_OPT_CACHE_DIR"
#: Files kept in a folder; the least recently used beyond this are deleted after each write.
MAX_FILES = 64
#: Bytes the kept files of a folder may take together (a candidate table is about 250 bytes per candidate);
#: the least recently used beyond this go too, but never the file just written.
MAX_BYTES = 512 * 2**20
#: Suffix of a file being written (renamed to ``<key>.pickle`` once whole); one left by a killed process
#: is deleted once it is :data:`STALE_PARTIAL_S` old.
PARTIAL_SUFFIX = ".partial"
STALE_PARTIAL_S = 3600.0

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
    """The cache folder, or None when caching is off (``GUIDE_OPT_CACHE_DIR=off``, :func:`switched_off`, or no home folder
    to keep it in). Each kind of object has a subfolder of its own (:func:`folder`)."""
    if _OFF[0]:
        return None
    configured = os.environ.get(CACHE_DIR_ENV)
    if configured is not None:
        return None if configured.strip().lower() in ("", "off") else Path(configured).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"))
    return base / "guide-opt" if base.is_absolute() else None  # no home folder (a bare container user): off


def folder(kind: str) -> Path | None:
    """The subfolder ``kind`` (``tables``, ``checks``, ``catalog``) of :func:`cache_dir`, or None when caching is off or
    the cache folder or the subfolder may be written by others (:func:`private`)."""
    root = cache_dir()
    if root is None or not private(root) or not private(root / kind):
        return None
    return root / kind


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
    """What every cached object of this installation depends on besides its own inputs: guide-opt's code and its
    ``hardware_db/``, and the versions of Python and numpy that compute the figures."""
    package = Path(__file__).resolve().parent
    return "|".join((_files_digest(package, "*.py"), _files_digest(data_dir("hardware_db"), "*"), sys.version, np.__version__))


def key_of(parts: dict) -> str:
    """The sha256 key of ``parts`` (JSON-able; dictionaries compared regardless of their order)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def private(folder: Path) -> bool:
    """Whether files in ``folder`` can be trusted: it does not exist yet (it is made private), or it belongs to this
    user and no one else may write to it. Pickles run code when read, so a shared folder is not used."""
    try:
        stat = folder.stat()
    except FileNotFoundError:
        return True
    except OSError:
        return False
    owner = getattr(os, "getuid", None)
    return (owner is None or stat.st_uid == owner()) and not stat.st_mode & 0o022


def read(path: Path, expected: type):
    """The ``expected`` object stored at ``path`` (its access time refreshed), or None when there is none or it cannot be read."""
    try:
        with path.open("rb") as f:
            found = pickle.load(f)
    except Exception:  # absent, truncated or foreign: rebuilt and overwritten, never an error
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


class _TooLarge(Exception):
    """A pickle past the ``max_bytes`` its writer allowed."""


def write(folder: Path, path: Path, obj: object, *, max_bytes: int | None = None) -> bool:
    """Store ``obj`` at ``path`` atomically (a reader sees the old file or the whole new one) and trim the folder.

    False when it could not be stored (no room, no permission, or a pickle of more than ``max_bytes``): the partial
    file is removed, ``path`` keeps what it held, and the solve goes on.
    """
    partial: Path | None = None
    try:
        folder.parent.mkdir(mode=0o700, parents=True, exist_ok=True)  # the cache folder, then its subfolder: both private
        folder.mkdir(mode=0o700, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".", suffix=PARTIAL_SUFFIX, delete=False) as f:
            partial = Path(f.name)
            pickle.dump(obj, f, protocol=pickle.HIGHEST_PROTOCOL)
            if max_bytes is not None and f.tell() > max_bytes:
                raise _TooLarge
        os.replace(partial, path)
    except (OSError, pickle.PicklingError, _TooLarge):
        if partial is not None:
            partial.unlink(missing_ok=True)
        return False
    _touch(path)
    trim(folder)
    return True


def trim(folder: Path) -> None:
    """Delete the least recently used files beyond :data:`MAX_FILES` or :data:`MAX_BYTES`, and partial files a killed writer
    left (another process may be deleting too)."""
    try:
        files = sorted(((p.stat(), p) for p in folder.glob("*.pickle")), key=lambda sp: sp[0].st_mtime_ns, reverse=True)
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
    for i, (stat, path) in enumerate(files):
        kept_bytes += stat.st_size
        if i == 0 or (i < MAX_FILES and kept_bytes <= MAX_BYTES):
            continue
        try:
            path.unlink()
        except OSError:
            pass
