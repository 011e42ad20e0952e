"""Fixtures for the validation tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from guide_opt.validation.datasets import default_data_dir


@pytest.fixture(scope="module")
def data_dir() -> Path:
    """The measured-data folder shipped with guide-opt (``validation_data/``); a missing one fails."""
    return default_data_dir()
