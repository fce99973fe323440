"""The acceptance tier: real PostgreSQL and Redis (tests/conftest.py: ``run_services``)."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True, scope="session")
def _services(run_services):
    return run_services


@pytest.fixture(autouse=True)
def _fresh_queues(fresh_queues):
    return fresh_queues
