"""The command line loads only the verb that runs, and its help still lists every verb."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from guide_opt.cli.app import COMMAND_MODULES

ROOT = Path(__file__).resolve().parents[2]

#: Modules a `solve` never needs: the characterization client (httpx), the web planner and the
#: accuracy validation.
NOT_FOR_SOLVE = ("guide_opt.characterize", "guide_opt.web", "guide_opt.validation", "httpx", "fastapi")


def _fresh(code: str) -> str:
    """Run ``code`` in a fresh interpreter (this checkout first on sys.path) and return its stdout."""
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, capture_output=True, text=True).stdout


def test_solve_help_loads_no_other_verb():
    loaded = _fresh("import sys\nfrom guide_opt.cli import main\nmain(['solve', '--help'])\n"
                    f"print('LOADED', *[m for m in {NOT_FOR_SOLVE!r} if m in sys.modules])")
    assert loaded.splitlines()[-1] == "LOADED"


def test_help_lists_every_verb(capsys):
    from guide_opt.cli import main

    assert main(["--help"]) == 0
    listed = {line.split()[0] for line in capsys.readouterr().out.split("Commands:")[1].splitlines() if line.strip()}
    assert listed == set(COMMAND_MODULES)
