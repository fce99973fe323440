"""A 50,000-row roster import (the migration scenario) on the worker set-up ``jobq run`` uses:
total time, rows per second, and how long late-arrival notices (realtime queue) waited while
it ran, against the same notices on an idle system.

    python -m bench roster [--rows 50000] [--batch-size 500]
"""

from __future__ import annotations

import argparse
import time

from bench import env  # first: sets up the environment
from bench.broadcast import (
    NOTICE_EVERY,
    job_times,
    late_notice,
    seed,
    sql,
    start_workers,
    submit,
    wait_finished,
)
from bench.common import make_tenant, percentile, print_table, stop_all, write_result

HEADING = "학번,이름,생년월일,학교,학년,보호자,보호자연락처,관계,반\n"
BAD_EVERY = 1000  # one row in a thousand has no name: reported, not imported


def write_roster(rows: int) -> str:
    """A roster file under JOBQ_HOME/uploads; its path there."""
    folder = env.HOME / "uploads"
    folder.mkdir(parents=True, exist_ok=True)
    lines = [HEADING]
    for i in range(1, rows + 1):
        name = "" if i % BAD_EVERY == 0 else f"학생{i}"
        lines.append(f"R{i:06d},{name},2012-03-{i % 28 + 1:02d},한빛중학교,중{i % 3 + 1},"
                     f"보호자{i},010-{6000 + i // 10000:04d}-{i % 10000:04d},모,\n")
    (folder / "roster.csv").write_text("".join(lines), encoding="utf-8")
    return "roster.csv"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench roster", description=__doc__)
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--timeout", type=float, default=1800)
    args = parser.parse_args(argv)
    tenant = make_tenant()
    student = seed(tenant, 10)  # a student in session now, for the late notices
    path = write_roster(args.rows)
    procs = start_workers(None)
    try:
        time.sleep(3)
        idle = []
        for _ in range(10):
            idle.append(late_notice(tenant, student))
            time.sleep(0.3)
        wait_finished(idle, 60)
        job = submit(tenant, "student.exec.import_roster",
                     {"file": path, "batch_size": args.batch_size})
        during: list[str] = []
        started = time.monotonic()
        next_notice = started + NOTICE_EVERY
        while time.monotonic() - started < args.timeout:
            [(status,)] = sql("SELECT status FROM job_executions WHERE id = CAST(:j AS uuid)",
                              j=job)
            if status in ("completed", "failed", "cancelled"):
                break
            if status == "processing" and time.monotonic() >= next_notice:
                during.append(late_notice(tenant, student))
                next_notice += NOTICE_EVERY
            time.sleep(0.05)
        else:
            raise SystemExit(f"the import did not finish in {args.timeout:.0f}s")
        wait_finished(during, 120)
    finally:
        stop_all(procs)
    [(status, seconds, run_seconds)] = sql(
        "SELECT status, extract(epoch FROM completed_at - created_at), "
        "extract(epoch FROM completed_at - executed_at) "
        "FROM job_executions WHERE id = CAST(:j AS uuid)", j=job)
    [(imported,)] = sql("SELECT count(*) FROM students WHERE tenant_id = CAST(:t AS uuid) "
                        "AND external_ref LIKE 'R%'", t=tenant)
    [(bad,)] = sql("SELECT count(*) FROM roster_import_errors e JOIN roster_imports i "
                   "ON i.id = e.import_id WHERE i.job_id = CAST(:j AS uuid)", j=job)
    idle_t, during_t = job_times(idle), job_times(during)

    def ms(values: list[float], pct: float) -> float:
        return round(percentile(values, pct) * 1000, 1)

    result = {
        "rows": args.rows, "batch_size": args.batch_size, "status": status,
        "students_imported": imported, "bad_rows_reported": bad,
        "seconds": round(float(seconds), 2), "rows_per_s": round(args.rows / float(seconds), 1),
        "run_seconds": round(float(run_seconds), 2),
        "late_notices_during": len(during_t),
        "late_wait_p50_ms": ms([a for a, _ in during_t], 50),
        "late_wait_max_ms": ms([a for a, _ in during_t], 100),
        "late_idle_wait_p50_ms": ms([a for a, _ in idle_t], 50),
    }
    print_table(f"Roster import of {args.rows:,} rows (batches of {args.batch_size})",
                ["status", "seconds", "rows/s", "imported", "bad rows", "late wait p50/max ms",
                 "idle p50 ms"],
                [(status, result["seconds"], result["rows_per_s"], imported, bad,
                  f"{result['late_wait_p50_ms']:.0f} / {result['late_wait_max_ms']:.0f}",
                  result["late_idle_wait_p50_ms"])])
    print(f"written {write_result('roster', result)}")


if __name__ == "__main__":
    main()
