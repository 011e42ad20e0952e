"""Fixtures for the web planner tests: the app under FastAPI's test client."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def client():
    """The planner app under FastAPI's TestClient, two solves at a time."""
    from fastapi.testclient import TestClient

    from guide_opt.web.app import create_app
    from guide_opt.web.jobs import JobRunner

    with TestClient(create_app(JobRunner(max_workers=2))) as test_client:
        yield test_client
