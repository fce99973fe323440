"""A broadcast to 10,000 guardians through the default (record) channel, on the worker set-up
``jobq run`` uses (a realtime worker and a separate bulk worker, beat beside them): total time
and messages per second, and how long late-arrival notices (``attendance.exec.
notify_guardians_late``, realtime queue) waited while it ran, against the same notices on an
idle system. Optionally again with more bulk processes, to show the chunks running in parallel.

    python -m bench broadcast [--guardians 10000] [--chunk-size 500] [--setups jobq-run,bulk1]
"""

from __future__ import annotations

import argparse
import datetime as dt
import time
from typing import Any

from bench import env  # noqa: F401  (first: sets up the environment)
from bench.common import (
    celery_beat,
    celery_worker,
    make_tenant,
    median,
    percentile,
    print_table,
    reset_jobs,
    stop_all,
    write_result,
)

LATE = "attendance.exec.notify_guardians_late"
BROADCAST = "communication.exec.broadcast"
#: Bulk worker processes per set-up; ``None``: as ``jobq run`` starts it.
#: name -> bulk worker children (None: as `jobq run` starts it, app.ops.workers.BULK_CHILDREN).
SETUPS: dict[str, int | None] = {"jobq-run": None, "bulk1": 1, "bulk4": 4}
IDLE_NOTICES = 10
NOTICE_EVERY = 0.25  # seconds between late notices while the broadcast runs


def sql(statement: str, **params: Any) -> list[Any]:
    from sqlalchemy import text

    from app.store import db

    with db.engine().begin() as conn:
        result = conn.execute(text(statement), params)
        return result.all() if result.returns_rows else []


def seed(tenant: str, guardians: int) -> str:
    """``guardians`` students with one guardian each (KakaoTalk, so the record channel in this
    set-up), and one of them enrolled in a class in session now; that student's id."""
    sql("INSERT INTO students (tenant_id, name, external_ref, grade) "
        "SELECT CAST(:t AS uuid), '학생' || i, 'B' || lpad(i::text, 6, '0'), 8 "
        "FROM generate_series(1, :n) i", t=tenant, n=guardians)
    sql("INSERT INTO guardians (tenant_id, name, phone, preferred_channel) "
        "SELECT CAST(:t AS uuid), '보호자' || i, "
        "'010-' || lpad((i / 10000)::text, 4, '0') || '-' || lpad((i % 10000)::text, 4, '0'), "
        "'kakao' FROM generate_series(1, :n) i", t=tenant, n=guardians)
    sql("INSERT INTO student_guardians (student_id, guardian_id, tenant_id, relation) "
        "SELECT s.id, g.id, s.tenant_id, '모' FROM students s JOIN guardians g "
        "ON g.tenant_id = s.tenant_id AND g.name = '보호자' || substring(s.name from 3) "
        "WHERE s.tenant_id = CAST(:t AS uuid)", t=tenant)
    [(student,)] = sql("SELECT id::text FROM students WHERE tenant_id = CAST(:t AS uuid) "
                       "AND external_ref = 'B000001'", t=tenant)
    [(klass,)] = sql("INSERT INTO classes (tenant_id, name, monthly_fee) "
                     "VALUES (CAST(:t AS uuid), '중등 수학 A반', 250000) RETURNING id::text",
                     t=tenant)
    sql("INSERT INTO enrolments (tenant_id, student_id, class_id) "
        "VALUES (CAST(:t AS uuid), CAST(:s AS uuid), CAST(:c AS uuid))",
        t=tenant, s=student, c=klass)
    sql("INSERT INTO class_sessions (tenant_id, class_id, starts_at, ends_at) "
        "VALUES (CAST(:t AS uuid), CAST(:c AS uuid), now() - interval '10 minutes', "
        "now() + interval '3 hours')", t=tenant, c=klass)
    return student


def submit(tenant: str, intent: str, params: dict[str, Any]) -> str:
    from app.intake.submit import submit as submit_job
    from app.store import db

    with db.session() as session:
        job_id = submit_job(session, tenant_id=tenant, intent_key=intent, intent_params=params)
        session.commit()
    return job_id


def late_notice(tenant: str, student: str) -> str:
    return submit(tenant, LATE, {"student_id": student,
                                 "notify_time": dt.datetime.now(dt.UTC).isoformat()})


def job_times(job_ids: list[str]) -> list[tuple[float, float]]:
    """(seconds to start, seconds to completion) of finished jobs, on the database clock."""
    found = sql("SELECT extract(epoch FROM executed_at - created_at), "
                "extract(epoch FROM completed_at - created_at) FROM job_executions "
                "WHERE id = ANY(CAST(:ids AS uuid[])) AND status = 'completed'", ids=job_ids)
    return [(float(a), float(b)) for a, b in found]


def wait_finished(job_ids: list[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        [(left,)] = sql("SELECT count(*) FROM job_executions WHERE id = ANY(CAST(:ids AS uuid[])) "
                        "AND status NOT IN ('completed', 'failed', 'cancelled')", ids=job_ids)
        if not left:
            return
        time.sleep(0.2)
    raise SystemExit(f"{left} job(s) still unfinished after {timeout:.0f}s")


def _bulk_children() -> int:
    from app.ops.workers import BULK_CHILDREN

    return BULK_CHILDREN


def start_workers(bulk_processes: int | None, extra_env: dict[str, str] | None = None) -> list:
    from app.broker.celery_app import celery_app
    from app.ops.workers import WORKERS, worker_args

    procs = [celery_beat(extra_env)]
    for name in WORKERS:
        args = worker_args(name)
        i = args.index("-n")  # celery_worker names the node itself
        args = args[:i] + args[i + 2:]
        if name == "bulk" and bulk_processes is not None:
            args[args.index("-c") + 1] = str(bulk_processes)
        procs.append(celery_worker("app", name, *args, extra_env=extra_env))
    deadline = time.monotonic() + 90
    for proc in procs[1:]:
        while not celery_app.control.ping(destination=[proc.name], timeout=0.5):
            if proc.popen.poll() is not None or time.monotonic() > deadline:
                stop_all(procs)
                raise SystemExit(f"worker {proc.name} did not start; see {proc.log}")
    return procs


def run_one(setup: str, tenant: str, student: str, guardians: int, chunk_size: int,
            timeout: float) -> dict[str, Any]:
    reset_jobs()
    sql("DELETE FROM notifications WHERE tenant_id = CAST(:t AS uuid)", t=tenant)
    sql("DELETE FROM broadcasts WHERE tenant_id = CAST(:t AS uuid)", t=tenant)
    procs = start_workers(SETUPS[setup])
    try:
        time.sleep(3)  # workers idle, pools warm
        idle = []
        for _ in range(IDLE_NOTICES):
            idle.append(late_notice(tenant, student))
            time.sleep(0.3)
        wait_finished(idle, 60)
        parent = submit(tenant, BROADCAST, {
            "title": "설 연휴 휴원 안내", "chunk_size": chunk_size,
            "message": "2월 16일부터 18일까지 설 연휴로 휴원합니다. 19일부터 정상 수업합니다."})
        during: list[str] = []
        progress: list[tuple[float, Any]] = []
        started = time.monotonic()
        next_notice = started + NOTICE_EVERY
        while time.monotonic() - started < timeout:
            [(status, prog)] = sql("SELECT status, progress->>'percent' FROM job_executions "
                                   "WHERE id = CAST(:j AS uuid)", j=parent)
            if prog is not None and (not progress or progress[-1][1] != float(prog)):
                progress.append((round(time.monotonic() - started, 2), float(prog)))
            if status in ("completed", "failed", "cancelled"):
                break
            if status == "processing" and time.monotonic() >= next_notice:
                during.append(late_notice(tenant, student))
                next_notice += NOTICE_EVERY
            time.sleep(0.05)
        else:
            raise SystemExit(f"{setup}: the broadcast did not finish in {timeout:.0f}s")
        wait_finished([parent, *during], 120)
        chunks = [r[0] for r in sql("SELECT id::text FROM job_executions "
                                    "WHERE parent_id = CAST(:j AS uuid)", j=parent)]
        wait_finished(chunks, 120)
    finally:
        stop_all(procs)
    [(status, seconds, result)] = sql(
        "SELECT status, extract(epoch FROM completed_at - created_at), result "
        "FROM job_executions WHERE id = CAST(:j AS uuid)", j=parent)
    [(sent, first, last, twice)] = sql(
        "SELECT count(*) FILTER (WHERE status = 'sent'), min(sent_at), max(sent_at), "
        "count(*) FILTER (WHERE attempts > 1) FROM notifications "
        "WHERE job_id = CAST(:j AS uuid)", j=parent)
    by_sender = dict(sql("SELECT CASE WHEN sent_by_job_id = CAST(:j AS uuid) THEN 'parent' "
                         "ELSE 'chunk jobs' END, count(*) FROM broadcast_chunks c "
                         "JOIN broadcasts b ON b.id = c.broadcast_id "
                         "WHERE b.job_id = CAST(:j AS uuid) GROUP BY 1", j=parent))
    idle_t, during_t = job_times(idle), job_times(during)
    seconds = float(seconds)

    def ms(values: list[float], pct: float) -> float:
        return round(percentile(values, pct) * 1000, 1)

    return {
        "setup": setup, "bulk_processes": SETUPS[setup] or _bulk_children(), "status": status,
        "guardians": guardians, "chunk_size": chunk_size, "chunks": result["chunks"],
        "chunks_sent_by": by_sender, "messages_sent": sent, "sent_twice": twice,
        "seconds": round(seconds, 2), "messages_per_s": round(sent / seconds, 1),
        "sending_window_s": round((last - first).total_seconds(), 2),
        "progress_samples": progress[:: max(1, len(progress) // 20)],
        "late_notices_idle": len(idle_t),
        "late_idle_wait_p50_ms": ms([a for a, _ in idle_t], 50),
        "late_idle_done_p50_ms": ms([b for _, b in idle_t], 50),
        "late_notices_during": len(during_t),
        "late_wait_p50_ms": ms([a for a, _ in during_t], 50),
        "late_wait_max_ms": ms([a for a, _ in during_t], 100),
        "late_done_p50_ms": ms([b for _, b in during_t], 50),
        "late_done_max_ms": ms([b for _, b in during_t], 100),
        "late_done_median_s": round(median([b for _, b in during_t]), 3),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench broadcast", description=__doc__)
    parser.add_argument("--guardians", type=int, default=10_000)
    parser.add_argument("--chunk-size", type=int, default=500)
    parser.add_argument("--setups", default="jobq-run,bulk1")
    parser.add_argument("--timeout", type=float, default=900)
    args = parser.parse_args(argv)
    tenant = make_tenant()
    student = seed(tenant, args.guardians)
    runs = []
    for setup in args.setups.split(","):
        r = run_one(setup, tenant, student, args.guardians, args.chunk_size, args.timeout)
        runs.append(r)
        print(f"{setup:>9}: {r['messages_sent']:,} messages in {r['seconds']:.1f}s "
              f"({r['messages_per_s']:,.0f}/s); late notice waited p50 {r['late_wait_p50_ms']:.0f}"
              f" ms, max {r['late_wait_max_ms']:.0f} ms (idle p50 "
              f"{r['late_idle_wait_p50_ms']:.0f} ms)", flush=True)
    print_table(
        f"Broadcast to {args.guardians:,} guardians (record channel), chunks of {args.chunk_size}",
        ["set-up", "bulk", "seconds", "msg/s", "chunks parent/jobs", "late wait p50/max ms",
         "idle p50 ms"],
        [(r["setup"], r["bulk_processes"], r["seconds"], r["messages_per_s"],
          f"{r['chunks_sent_by'].get('parent', 0)}/{r['chunks_sent_by'].get('chunk jobs', 0)}",
          f"{r['late_wait_p50_ms']:.0f} / {r['late_wait_max_ms']:.0f}",
          r["late_idle_wait_p50_ms"]) for r in runs])
    path = write_result("broadcast", {"guardians": args.guardians,
                                      "chunk_size": args.chunk_size, "runs": runs})
    print(f"written {path}")


if __name__ == "__main__":
    main()
