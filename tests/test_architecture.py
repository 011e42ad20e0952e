"""The package layering holds: the import contracts of pyproject.toml ([tool.importlinter]).

Runs import-linter's own checker on the installed source, so a new upward import or cycle
fails the default test run, not only a separate lint step.
"""

from __future__ import annotations

from pathlib import Path

from importlinter.cli import lint_imports

ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_are_kept(monkeypatch):
    monkeypatch.chdir(ROOT)
    assert lint_imports(config_filename=str(ROOT / "pyproject.toml")) == 0
