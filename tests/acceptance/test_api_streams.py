"""The API's event streams over real HTTP (``jobq api`` processes, PostgreSQL, Redis): what many
open streams cost the database, the caps on open streams per key and per tenant across
processes, the lifetime of a stream, a revoked key's or a suspended tenant's streams ending
while open, and a running job's events arriving promptly.
"""

from __future__ import annotations

import time
import uuid
from datetime import datetime

import pytest

from tests.api import ApiProcess, make_key
from tests.commands import jobq
from tests.fixtures import make_tenant, sql, wait_for
from tests.sse import EventStream

CAPS = {"JOBQ_API_STREAMS_PER_KEY": "2", "JOBQ_API_STREAMS_PER_TENANT": "3",
        "JOBQ_API_RATE_LIMIT": "0"}


@pytest.fixture(scope="module")
def api(start_api) -> ApiProcess:
    return start_api({"JOBQ_API_RATE_LIMIT": "0", "JOBQ_API_STREAMS_PER_KEY": "0",
                      "JOBQ_API_STREAMS_PER_TENANT": "0"})


def waiting_job(api: ApiProcess, key: str) -> str:
    """A job awaiting approval: its stream stays open until something ends it."""
    made = api.client(key).post("/v1/jobs", json={"intent_key": "system.exec.sleep",
                                                  "intent_params": {"seconds": 1},
                                                  "requires_approval": True})
    assert made.status_code == 201, made.text
    return made.json()["id"]


def open_stream(api: ApiProcess, key: str, job_id: str, **headers: str) -> EventStream:
    return EventStream(api.url, f"/v1/jobs/{job_id}/events", key, **headers)


def following(stream: EventStream) -> EventStream:
    """``stream``, once it has shown its job's state (the server holds it)."""
    assert stream.status == 200, stream.body
    wait_for(lambda: stream.of("state"), 20, message="the stream's first state")
    return stream


def database_transactions() -> int:
    """Transactions committed or rolled back in this run's database so far."""
    import psycopg2

    from tests.conftest import ADMIN_URL, DB_NAME

    conn = psycopg2.connect(ADMIN_URL)  # another database: reading adds none to this one
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT xact_commit + xact_rollback FROM pg_stat_database "
                        "WHERE datname = %s", (DB_NAME,))
            return int(cur.fetchone()[0])
    finally:
        conn.close()


def transactions_per_second(seconds: float) -> float:
    # A backend publishes its counts at most once a second while busy, and up to 10 s after it
    # went idle: what opening the streams cost must not land in the window.
    time.sleep(11)
    before, t = database_transactions(), time.monotonic()
    time.sleep(seconds)
    time.sleep(1.2)
    return (database_transactions() - before) / (time.monotonic() - t)


# No worker in this test: nothing but the API writes or reads the database while it counts.
def test_a_hundred_open_streams_cost_the_database_about_what_one_does(api):
    key = make_key(make_tenant(), rate=0)
    jobs = [waiting_job(api, key) for _ in range(100)]
    one = following(open_stream(api, key, jobs[0]))
    with_one = transactions_per_second(3)
    many = [following(open_stream(api, key, job)) for job in jobs[1:]]
    with_hundred = transactions_per_second(3)
    assert not any(s.ended for s in [one, *many])  # all of them were open throughout
    for stream in [one, *many]:
        stream.close()
    # Each stream reading the table on its own costs about four transactions a second more.
    assert with_hundred < with_one + 20, (with_one, with_hundred)


def test_over_its_cap_a_key_or_a_tenant_gets_429_naming_the_cap_across_processes(start_api):
    first, second = start_api(CAPS), start_api(CAPS)
    tenant = make_tenant()
    key, other_key = make_key(tenant, rate=0), make_key(tenant, rate=0)
    jobs = [waiting_job(first, key) for _ in range(4)]
    a = following(open_stream(first, key, jobs[0]))
    following(open_stream(second, key, jobs[1]))
    refused = open_stream(first, key, jobs[2])
    assert refused.status == 429
    assert "2 open event streams" in refused.body["error"]
    assert "JOBQ_API_STREAMS_PER_KEY" in refused.body["error"]
    # The tenant's third stream comes from another key; its fourth from none.
    following(open_stream(second, other_key, jobs[2]))
    refused = open_stream(first, other_key, jobs[3])
    assert refused.status == 429 and "JOBQ_API_STREAMS_PER_TENANT" in refused.body["error"]
    # A stream that ends gives its place back.
    a.close()
    retried = wait_for(lambda: (s := open_stream(first, other_key, jobs[3])).status == 200 and s,
                       15, interval=0.2, message="the closed stream's place to come free")
    following(retried)
    # Another tenant's streams are counted apart.
    stranger = make_key(make_tenant(), rate=0)
    following(open_stream(first, stranger, waiting_job(first, stranger)))


def test_a_stream_ends_at_its_lifetime_with_a_close_event_that_says_to_reconnect(start_api):
    short = start_api({"JOBQ_API_STREAM_MAX_SECONDS": "2", "JOBQ_API_RATE_LIMIT": "0"})
    key = make_key(make_tenant(), rate=0)
    job = waiting_job(short, key)
    stream = following(open_stream(short, key, job))
    opened = stream.frames[0][0]
    wait_for(lambda: stream.ended, 15, message="the stream to end at its lifetime")
    kind, data = stream.frames[-1][1], stream.frames[-1][2]
    assert kind == "close" and data["reason"] == "lifetime" and data["reconnect"] is True
    assert data["id"] == job and "2 s" in data["message"]
    assert 1.5 <= stream.ended_at - opened <= 6
    created = stream.of("history")
    assert [e["kind"] for e in created] == ["created"]
    # Reconnecting where it left off: the state again, none of the history twice.
    again = following(open_stream(short, key, job, **{"Last-Event-ID": str(created[-1]["id"])}))
    assert again.of("history") == [] and again.of("state")[0]["status"] == "awaiting_approval"
    again.close()


def test_a_revoked_keys_open_streams_end_within_seconds_and_a_suspended_tenants_too(api):
    tenant = make_tenant()
    name = f"tablet-{uuid.uuid4().hex[:6]}"
    made = jobq("keys", "create", "--tenant", tenant, "--name", name, "--scopes", "jobs:read")
    assert made.returncode == 0, made.stderr
    revoked_key, kept_key = made.stdout.strip(), make_key(tenant, rate=0)
    jobs = [waiting_job(api, kept_key) for _ in range(3)]
    doomed = [following(open_stream(api, revoked_key, job)) for job in jobs[:2]]
    kept = following(open_stream(api, kept_key, jobs[2]))

    assert jobq("keys", "revoke", name, "--tenant", tenant).returncode == 0
    revoked_at = time.monotonic()
    wait_for(lambda: all(s.ended for s in doomed), 15, message="the revoked key's streams to end")
    for stream in doomed:
        assert stream.kinds()[-1] == "close"
        assert stream.of("close")[0]["reason"] == "revoked"
        assert stream.of("close")[0]["reconnect"] is False
        assert stream.ended_at - revoked_at < 5
    assert not kept.ended  # the tenant's other key streams on

    sql("UPDATE tenants SET status = 'suspended' WHERE id = CAST(:t AS uuid)", t=tenant)
    suspended_at = time.monotonic()
    wait_for(lambda: kept.ended, 15, message="the suspended tenant's stream to end")
    assert kept.of("close")[0]["reason"] == "tenant" and "suspended" in kept.of("close")[0][
        "message"]
    assert kept.ended_at - suspended_at < 5
    refused = open_stream(api, kept_key, jobs[2])
    assert refused.status == 403 and "suspended" in refused.body["error"]
    assert api.client(kept_key).get(f"/v1/jobs/{jobs[2]}").status_code == 200  # still readable


@pytest.mark.usefixtures("worker")
def test_a_running_jobs_events_arrive_promptly_created_started_progress_completed(api):
    key = make_key(make_tenant(), rate=0)
    made = api.client(key).post("/v1/jobs", json={"intent_key": "system.exec.sleep",
                                                  "intent_params": {"seconds": 2}}).json()
    stream = open_stream(api, key, made["id"])
    wait_for(lambda: stream.ended, 30, message="the stream to end with its job")
    history = [(arrived, data) for arrived, kind, data, _ in stream.frames if kind == "history"]
    assert [data["kind"] for _, data in history] == ["created", "started", "completed"]
    states = stream.of("state")
    assert any(s["status"] == "processing" and 0 < (s["progress"] or {}).get("percent", 0) < 100
               for s in states), states
    assert stream.frames[-1][1:3] == ("end", {"id": made["id"], "status": "completed"})
    # How long after each event was written its frame arrived (one clock: the same machine).
    now_wall, now_mono = time.time(), time.monotonic()
    for arrived, data in history[1:]:
        written = datetime.fromisoformat(data["at"]).timestamp()
        delay = (now_wall - (now_mono - arrived)) - written
        assert delay < 1.5, (data["kind"], delay)


def test_a_stopping_api_ends_its_open_streams_within_its_shutdown_grace(start_api):
    """SIGTERM (docker stop, jobq run's Ctrl-C) must not wait out each open stream's lifetime:
    after the grace the streams are cut (a client reconnects elsewhere with Last-Event-ID)."""
    stopping = start_api({"JOBQ_API_SHUTDOWN_SECONDS": "2", "JOBQ_API_RATE_LIMIT": "0"})
    key = make_key(make_tenant(), rate=0)
    stream = following(open_stream(stopping, key, waiting_job(stopping, key)))
    asked = time.monotonic()
    stopping.stop()  # SIGTERM; uvicorn re-raises it once stopped, so the code is -15
    assert time.monotonic() - asked < 10
    assert "Finished server process" in stopping.log(), stopping.log()[-2000:]
    wait_for(lambda: stream.ended, 5, message="the stream to be cut")
