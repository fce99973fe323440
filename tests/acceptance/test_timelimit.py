"""Time limits hold in a solo worker too, where Celery's pool enforces none."""

from __future__ import annotations

import pytest

from app import dispatch_intent
from tests.fixtures import event_kinds, wait_for_status


@pytest.mark.slow
def test_a_solo_worker_stops_a_run_at_its_soft_time_limit(start_worker_process, tenant):
    start_worker_process("-P", "solo")
    job_id = dispatch_intent.delay(tenant_id=tenant, intent_key="test.exec.sleep_limited",
                                   intent_params={"seconds": 30}).get(timeout=15)
    row = wait_for_status(job_id, "failed", timeout=20)
    assert row["error_message"] == "time limit of 2s exceeded"
    assert (row["completed_at"] - row["executed_at"]).total_seconds() < 5
    assert [k for _, k in event_kinds(job_id)] == ["created", "started", "failed"]
