"""Build hook: compile the serving simulator's engine (``guide_opt/simulate/engine.py``) with mypyc.

The engine's event loop is plain Python over ints, floats and lists, the kind of code mypyc turns
into C without a change of behaviour (the same IEEE double operations in the same order). Compiled,
a simulation runs about twice as fast (``benchmarks/RESULTS.md`` section 4), and every plan check,
refinement trial and characterization comparison runs simulations.

- ``pip install -e .`` (editable): the compiled module is written beside ``engine.py`` in the
  source tree; ``pip install .`` / a wheel: it is packed into the wheel, which is then tagged for
  this Python and platform.
- Next to it goes a stamp, the SHA-256 of the ``engine.py`` it was compiled from. At import,
  :mod:`guide_opt.simulate.compiled` uses the compiled engine only while ``engine.py`` still has
  that hash, so an edit to the source is never hidden by an older binary.
- No C compiler, a mypy error, or ``GUIDE_OPT_PURE_PYTHON=1``: the build goes on without it, with a
  warning, and the engine runs as Python (the same results, slower).

The file names below are mirrored by :mod:`guide_opt.simulate.compiled`, which the build cannot import.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

#: The module compiled, relative to the project root.
ENGINE_SOURCE = Path("guide_opt/simulate/engine.py")
#: The stamp beside it: the SHA-256 (hex) of the source the binary was compiled from.
STAMP_NAME = "engine.compiled-sha256"
#: Seconds one compilation may take before the build goes on without it.
COMPILE_TIMEOUT_S = 900


def compile_engine(root: Path, work: Path) -> list[Path]:
    """Compile ``root``'s engine with mypyc in ``work`` (a copy of the package's Python files, so that nothing but the
    binaries reaches the source tree); the extension files, under ``work``."""
    shutil.copytree(root / "guide_opt", work / "guide_opt", ignore=shutil.ignore_patterns("__pycache__", "*.so", "_data"))
    env = {**os.environ, "MYPY_CACHE_DIR": str(work / ".mypy_cache")}
    # Only the engine's own code is checked (the modules it imports are read for their types, their errors not reported),
    # and libraries that the isolated build environment lacks, such as numpy, count as untyped.
    flags = ["--follow-imports=silent", "--ignore-missing-imports"]
    done = subprocess.run([sys.executable, "-m", "mypyc", *flags, str(ENGINE_SOURCE)], cwd=work, env=env, capture_output=True, text=True,
                          timeout=COMPILE_TIMEOUT_S)
    if done.returncode != 0:  # the last lines say why (a type error, a missing compiler), each cut to a readable length
        lines = [line[:300] for line in (done.stdout + done.stderr).strip().splitlines() if line.strip()]
        raise RuntimeError("\n".join(lines[-6:]))
    binaries = sorted((work / ENGINE_SOURCE.parent).glob("engine*.so")) + sorted((work / ENGINE_SOURCE.parent).glob("engine*.pyd"))
    if not binaries:
        raise RuntimeError("mypyc reported success but wrote no extension module")
    return binaries


class CustomBuildHook(BuildHookInterface):
    """Hatchling's hook (``[tool.hatch.build.targets.wheel.hooks.custom]`` in pyproject.toml): see the module doc."""

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        root = Path(self.root)
        folder = root / ENGINE_SOURCE.parent
        if version == "editable":  # binaries of an earlier install would outlive a failed build
            for old in [*folder.glob("engine*.so"), *folder.glob("engine*.pyd"), folder / STAMP_NAME]:
                old.unlink(missing_ok=True)
        if os.environ.get("GUIDE_OPT_PURE_PYTHON") == "1":
            self.app.display_info("guide-opt: GUIDE_OPT_PURE_PYTHON=1, the simulator engine stays pure Python")
            return
        self.app.display_info("guide-opt: compiling the simulator engine with mypyc (about a minute) ...")
        work = Path(tempfile.mkdtemp(prefix="guide-opt-mypyc-"))
        try:
            binaries = compile_engine(root, work)
        except Exception as exc:  # no compiler, mypy or setuptools missing, a type error: build without it
            self.app.display_warning("guide-opt: the simulator engine was not compiled; it runs as pure Python (the same results, "
                                     "about half the speed; a C compiler such as gcc and a reinstall compile it). Why:\n"
                                     f"{type(exc).__name__}: {exc}")
            shutil.rmtree(work, ignore_errors=True)
            return
        stamp = work / STAMP_NAME
        stamp.write_text(hashlib.sha256((root / ENGINE_SOURCE).read_bytes()).hexdigest() + "\n")
        if version == "editable":
            for binary in [*binaries, stamp]:
                shutil.copy2(binary, folder / binary.name)
        else:
            for binary in [*binaries, stamp]:
                build_data["force_include"][str(binary)] = str(ENGINE_SOURCE.parent / binary.name)
            build_data["pure_python"] = False
            build_data["infer_tag"] = True
        self.app.display_info(f"guide-opt: compiled {', '.join(b.name for b in binaries)}")
