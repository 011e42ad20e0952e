"""CP-SAT's Python API is imported without pandas, and falls back to the real module when a stand-in is not enough."""

from __future__ import annotations

import subprocess
import sys
import types
from pathlib import Path

import pytest

from guide_opt.cp_sat import import_with_stand_in

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def modules(tmp_path, monkeypatch):
    """A folder on sys.path for throw-away modules; whatever they load is unloaded afterwards."""
    monkeypatch.syspath_prepend(str(tmp_path))
    before = set(sys.modules)
    yield tmp_path
    for name in set(sys.modules) - before:
        del sys.modules[name]


def _stand_in(name: str) -> types.ModuleType:
    stand_in = types.ModuleType(name)
    stand_in.Index = type("Index", (), {})
    return stand_in


def test_a_module_that_only_names_the_stand_in_classes_is_imported_against_it(modules):
    (modules / "heavydep_a.py").write_text("raise RuntimeError('the real module must not load')\n")
    (modules / "user_a.py").write_text("import heavydep_a as pd\nINDEX = pd.Index\n")
    stand_in = _stand_in("heavydep_a")
    user = import_with_stand_in("user_a", stand_in)
    assert user.INDEX is stand_in.Index
    assert "heavydep_a" not in sys.modules  # the stand-in does not outlive the import


def test_a_module_that_needs_more_is_imported_again_with_the_real_one(modules):
    (modules / "heavydep_b.py").write_text("class Index: ...\nclass DataFrame: ...\n")
    (modules / "user_b.py").write_text("import heavydep_b as pd\nFRAME = pd.DataFrame\n")
    user = import_with_stand_in("user_b", _stand_in("heavydep_b"))
    assert user.FRAME is sys.modules["heavydep_b"].DataFrame


def test_a_real_module_already_loaded_is_used_as_it_is(modules):
    (modules / "heavydep_c.py").write_text("class Index: ...\n")
    (modules / "user_c.py").write_text("import heavydep_c as pd\nINDEX = pd.Index\n")
    import heavydep_c  # noqa: F401  (loaded before, as a user's program may have)

    assert import_with_stand_in("user_c", _stand_in("heavydep_c")).INDEX is sys.modules["heavydep_c"].Index


def test_a_whole_solve_loads_no_pandas():
    # A fresh interpreter: OR-Tools' cp_model imports pandas at module level, guide-opt's solve must not.
    code = ("import sys\nfrom guide_opt.cli import main\n"
            "code = main(['solve', 'problems/guide-grid-llama-2-7b.yaml', '--format', 'json'])\n"
            "print('EXIT', code, 'pandas' in sys.modules, 'ortools.sat.python.cp_model' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, capture_output=True, text=True).stdout
    assert out.splitlines()[-1] == "EXIT 0 False True"
