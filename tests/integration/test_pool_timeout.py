"""A handler that waits too long for a pooled database connection (SQLAlchemy's QueuePool
timeout: every connection of its process's pool is taken) meets a passing shortage, like a
database outage: its job is retried, not failed for good."""

from __future__ import annotations

import pytest

from app import dispatch_intent
from tests.fixtures import in_thread_worker, job_events, make_tenant, wait_for_status


@pytest.fixture(scope="module")
def worker():
    with in_thread_worker(2) as w:
        yield w


def test_a_pool_timeout_in_a_handler_is_retried_and_the_job_completes(worker):
    tenant = make_tenant()
    job = dispatch_intent.delay(tenant_id=tenant, intent_key="test.exec.meet_a_full_pool",
                                intent_params={"timeouts": 1}).get(timeout=15)

    row = wait_for_status(job, "completed", "failed", timeout=60)
    retries = [e for e in job_events(job) if e["kind"] == "retry"]
    assert row["status"] == "completed", (row["error_message"], retries)
    assert row["retry_count"] == 1
    [retry] = retries
    assert "QueuePool limit of size 1 overflow 0 reached" in retry["error"]
    assert row["result"] == {"attempt": 2}  # the attempt after the timeout did the work
