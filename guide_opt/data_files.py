"""Locate the data folders shipped with guide-opt.

In a wheel the folders live in ``guide_opt/_data/<name>``; in a source checkout (an
editable install or ``PYTHONPATH=.``) they are the top-level folders of the repository.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent


def data_dir(name: str) -> Path:
    """Return the folder ``name`` (``hardware_db``, ``solvers``, ``problems`` or ``validation_data``)."""
    for candidate in (_PACKAGE_DIR / "_data" / name, _PACKAGE_DIR.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"guide-opt data folder '{name}' is missing from the installation")
