"""Fixtures for the solver tests."""

from __future__ import annotations

import pytest

from guide_opt.problem import Problem
from problem_fixtures import small_problem


@pytest.fixture
def small() -> Problem:
    """The default :func:`problem_fixtures.small_problem`."""
    return small_problem()
