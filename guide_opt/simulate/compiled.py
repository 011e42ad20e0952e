"""Which simulator engine runs: the one compiled with mypyc at install time, while it matches ``engine.py``.

The build (``hatch_build.py`` at the project root) compiles :mod:`guide_opt.simulate.engine` into
an extension module beside ``engine.py`` and writes a stamp, the SHA-256 of the source it compiled.
Python imports an extension module before a source file of the same name, so a binary older than
an edit of ``engine.py`` would hide the edit. :func:`choose_engine` runs when
:mod:`guide_opt.simulate` is imported, before anything imports the engine: when the binary's stamp
does not match the source, it loads ``engine.py`` itself under the engine's name and warns.

Both engines give the same results to the last bit (``tests/simulate/test_compiled_engine.py``);
the compiled one is about twice as fast.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.machinery
import importlib.util
import sys
import warnings
from pathlib import Path

#: The engine's module name.
ENGINE_MODULE = "guide_opt.simulate.engine"
#: The stamp beside the binary (the name ``hatch_build.py`` writes).
STAMP_NAME = "engine.compiled-sha256"
#: Where the engine's source, binary and stamp are.
ENGINE_FOLDER = Path(__file__).resolve().parent


def is_extension_file(path: str | Path) -> bool:
    """True when ``path`` names an extension module this Python can load (what mypyc builds), not Python source."""
    return str(path).endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))


def compiled_binaries(folder: Path) -> list[Path]:
    """The engine's extension modules in ``folder`` (any this Python can load)."""
    return [folder / f"engine{suffix}" for suffix in importlib.machinery.EXTENSION_SUFFIXES if (folder / f"engine{suffix}").is_file()]


def compiled_state(folder: Path) -> str:
    """``absent`` (no binary), ``current`` (its stamp is the hash of ``engine.py``) or ``stale`` (no stamp, or another hash)."""
    if not compiled_binaries(folder):
        return "absent"
    stamp = folder / STAMP_NAME
    source_hash = hashlib.sha256((folder / "engine.py").read_bytes()).hexdigest()
    return "current" if stamp.is_file() and stamp.read_text().strip() == source_hash else "stale"


def load_source_engine(folder: Path, name: str = ENGINE_MODULE):
    """``folder/engine.py`` loaded as a Python module named ``name`` and registered in :data:`sys.modules` under it."""
    spec = importlib.util.spec_from_file_location(name, folder / "engine.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    parent, _, child = name.rpartition(".")
    if parent in sys.modules:
        setattr(sys.modules[parent], child, module)
    return module


def choose_engine(folder: Path = ENGINE_FOLDER) -> str:
    """Make ``import guide_opt.simulate.engine`` load the Python source when the binary is stale; the state found."""
    state = compiled_state(folder)
    if state == "stale" and ENGINE_MODULE not in sys.modules:
        warnings.warn(f"the compiled simulator engine in {folder} was built from another engine.py; the Python source runs "
                      "instead (reinstall, e.g. pip install -e ., to compile it again)", RuntimeWarning, stacklevel=2)
        load_source_engine(folder)
    return state


def engine_is_compiled() -> bool:
    """True when the engine in use is the compiled one. (The engine is imported by its name: it imports this module for
    :func:`is_extension_file`, so this module sits below it.)"""
    return is_extension_file(importlib.import_module(ENGINE_MODULE).__file__)
