"""A quiet academy's requests behind another academy's burst of ``dispatch_intent`` requests,
on real worker processes and a real beat, as ``jobq run`` starts them: with beat's dispatch
pump the quiet ones start within 2 s; without it (``JOBQ_DISPATCH_PUMP=0``: workers turn the
FIFO ``dispatch`` queue into rows one by one) they wait behind the whole burst."""

from __future__ import annotations

import time

import pytest

from app.broker.celery_app import celery_app
from app.core.settings import settings
from app.tasks.dispatch import dispatch_intent
from tests.fixtures import make_tenant, sql, wait_for

SLEEP = "system.exec.sleep"
BURST = 3000
QUIET = 10
REALTIME_QUEUES = "celery,dispatch,realtime,maintenance"


def _dispatch_queue_empty() -> bool:
    from app.broker import client

    redis = client.client()
    return (redis.llen(settings.redis_key_prefix + "dispatch") == 0
            and redis.scard(client.key("pump:held")) == 0)


def quiet_waits(start_worker_process, start_beat_process, *, pump: bool) -> tuple[list[float], int]:
    """Seconds from each quiet request's ``delay`` to its job's start; and the burst's rows."""
    workers = [start_worker_process("-P", "solo", "-c", "1", queues=REALTIME_QUEUES,
                                    wait=False) for _ in range(2)]
    beat = start_beat_process(env={"JOBQ_DISPATCH_PUMP": "1" if pump else "0"})
    for w in workers:
        w.wait_ready()
    loud, quiet = make_tenant("붐비는 학원"), make_tenant("조용한 학원")
    with celery_app.producer_or_acquire() as producer:
        burst = [dispatch_intent.apply_async(
            kwargs={"tenant_id": loud, "intent_key": SLEEP, "intent_params": {"seconds": 0.01}},
            producer=producer) for _ in range(BURST)]
    time.sleep(0.5)
    calls = []
    for _ in range(QUIET):
        calls.append((time.time(), dispatch_intent.delay(
            tenant_id=quiet, intent_key=SLEEP, intent_params={"seconds": 0})))
    ids = [r.get(timeout=120) for _, r in calls]

    def started():
        rows = sql("SELECT id::text, extract(epoch FROM executed_at) FROM job_executions "
                   "WHERE id = ANY(CAST(:ids AS uuid[])) AND executed_at IS NOT NULL", ids=ids)
        return dict(rows) if len(rows) == len(ids) else None

    at = wait_for(started, 120, interval=0.1, message="the quiet academy's jobs to start")
    waits = [float(at[job]) - t for (t, _), job in zip(calls, ids, strict=True)]
    # Every burst request became one row (and its caller has its id).
    wait_for(_dispatch_queue_empty, 120, interval=0.2, message="the burst's requests taken")
    burst_ids = [r.get(timeout=60) for r in burst]
    [(rows, distinct)] = sql("SELECT count(*), count(DISTINCT id) FROM job_executions "
                             "WHERE tenant_id = CAST(:t AS uuid)", t=loud)
    assert rows == distinct == len(set(burst_ids)) == BURST
    for w in workers:
        w.stop()
    beat.stop()
    return waits, rows


@pytest.mark.slow
def test_a_quiet_academy_is_not_stuck_behind_a_dispatch_burst(start_worker_process,
                                                              start_beat_process, fresh_queues):
    before, _ = quiet_waits(start_worker_process, start_beat_process, pump=False)
    sql("UPDATE job_executions SET status = 'cancelled', completed_at = now() "
        "WHERE status = 'pending'")
    sql("UPDATE fair_queue SET ready = false WHERE ready")
    after, _ = quiet_waits(start_worker_process, start_beat_process, pump=True)
    print(f"\nquiet academy's wait behind a {BURST}-request dispatch_intent burst: "
          f"without the pump worst {max(before):.2f} s (p50 {sorted(before)[QUIET // 2]:.2f}), "
          f"with it worst {max(after):.2f} s (p50 {sorted(after)[QUIET // 2]:.2f})")
    assert max(after) <= 2.0
    assert max(after) < max(before)


@pytest.mark.slow
def test_flower_shows_the_requests_the_pump_wrote(tenant, start_worker_process,
                                                  start_beat_process, start_flower):
    """Received, then succeeded (the job id) or failed (the refusal), from the pump's node,
    with the parameters' secrets hidden as a worker hides them."""
    from tests.flower import flower_task

    flower = start_flower()
    start_worker_process("-P", "solo", queues="realtime")  # nobody else takes dispatch
    start_beat_process()
    good = dispatch_intent.delay(tenant_id=tenant, intent_key="test.exec.use_secrets",
                                 intent_params={"card_number": "4111-1111", "api_token": "tok-secret"})
    bad = dispatch_intent.delay(tenant_id=tenant, intent_key="system.exec.ecco")
    job = good.get(timeout=30)
    with pytest.raises(Exception, match="unknown intent key"):
        bad.get(timeout=30)

    shown = flower_task(flower, good.id, state="SUCCESS")
    assert shown["name"] == "dispatch_intent"
    assert shown["worker"].startswith("dispatch-pump@")
    assert job in shown["result"]
    assert tenant in shown["kwargs"] and "4111-1111" not in shown["kwargs"]
    assert "tok-secret" not in shown["kwargs"]
    refused = flower_task(flower, bad.id, state="FAILURE")
    assert "unknown intent key" in refused["exception"]
    workers = flower.get("/api/workers", params={"status": "true"}).json()
    assert any(name.startswith("dispatch-pump@") for name in workers), workers
