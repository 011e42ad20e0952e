"""Fixtures for the validation tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from guide_opt.errors import InputError
from guide_opt.validation.datasets import default_data_dir


@pytest.fixture(scope="module")
def data_dir() -> Path:
    """The measured-data folder (shared/data); tests that need it skip where it is absent."""
    try:
        return default_data_dir()
    except InputError:
        pytest.skip("the measured-data folder shared/data is not available")
