"""One academy's backlog handed out while a session holds the xmin horizon: what the fair pick
reads, with each tenant's pick starting where its last one ended (``fair_queue.feed_from``,
migration 0017) and, in the same invocation, from the first entry of the ready-jobs index as
before (``feed_from`` set back before every pick).

While a transaction holds the horizon, the index entries of the jobs already handed out stay
(their old row versions cannot be removed). Picking from the first entry reads all of them on
every pick: a backlog of n jobs handed out in picks of b reads about n²/2b entries. The figures
are counts (index entries read, from PostgreSQL's own statistics), not times: they do not depend
on the machine's load; the milliseconds are printed beside them.

    python -m bench held_pick [--jobs 5000] [--batch 50]

Results: bench/results/held_pick.json.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from sqlalchemy import text

QUEUE = "bench_held_pick"
PICK = text("SELECT count(*) FROM jobq_feed(:q, :n)")
READ = text("SELECT pg_stat_get_xact_tuples_returned('ix_job_executions_ready'::regclass)")
SET_BACK = text("UPDATE fair_queue SET feed_from = '-infinity' WHERE queue = :q")


def _drain(jobs: int, batch: int, *, from_start: bool) -> dict[str, Any]:
    from app.store import db
    from bench.common import make_tenant

    with db.engine().begin() as conn:
        conn.execute(text("DELETE FROM job_executions WHERE queue = :q"), {"q": QUEUE})
        conn.execute(text("DELETE FROM fair_queue WHERE queue = :q"), {"q": QUEUE})
    tenant = make_tenant("보류 벤치 학원")
    with db.engine().begin() as conn:  # a backlog built up over the last hour or so
        conn.execute(text(
            "INSERT INTO job_executions (tenant_id, intent_key, queue, created_at) "
            "SELECT CAST(:t AS uuid), 'system.exec.echo', :q, "
            "now() - make_interval(secs => (:n - i) * 0.5) FROM generate_series(1, :n) AS i"),
            {"t": tenant, "q": QUEUE, "n": jobs})
    read = picks = handed = 0
    seconds = 0.0
    with db.engine().connect() as holder:
        holder.execute(text("SELECT txid_current()"))  # idle in a transaction with an XID
        while True:
            with db.engine().begin() as conn:
                if from_start:
                    conn.execute(SET_BACK, {"q": QUEUE})
                before = conn.execute(READ).scalar_one()
                t0 = time.perf_counter()
                n = conn.execute(PICK, {"q": QUEUE, "n": batch}).scalar_one()
                seconds += time.perf_counter() - t0
                read += conn.execute(READ).scalar_one() - before
            picks += 1
            handed += n
            if n == 0:
                break
        holder.rollback()
    with db.engine().begin() as conn:
        conn.execute(text("DELETE FROM job_executions WHERE queue = :q"), {"q": QUEUE})
        conn.execute(text("DELETE FROM fair_queue WHERE queue = :q"), {"q": QUEUE})
    return {"jobs": handed, "picks": picks, "index_entries_read": int(read),
            "entries_per_job": round(read / max(handed, 1), 1),
            "pick_ms_total": round(seconds * 1000, 1)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench held_pick", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=5000, help="the academy's backlog")
    parser.add_argument("--batch", type=int, default=50, help="jobs a pick hands out")
    args = parser.parse_args(argv)
    if args.jobs < 1 or args.batch < 1:
        parser.error("--jobs and --batch must be at least 1")
    from bench import env  # noqa: F401  (the bench database, migrated)
    from bench.common import print_table, write_result

    runs = {"feed_from": _drain(args.jobs, args.batch, from_start=False),
            "from the first entry": _drain(args.jobs, args.batch, from_start=True)}
    rows = [(mode, r["jobs"], r["picks"], r["index_entries_read"], r["entries_per_job"],
             r["pick_ms_total"]) for mode, r in runs.items()]
    print_table(f"{args.jobs} jobs of one academy handed out {args.batch} a pick while a session "
                "holds the xmin horizon",
                ["pick starts", "jobs", "picks", "index entries read", "per job", "pick ms"],
                rows)
    ratio = runs["from the first entry"]["index_entries_read"] / max(
        runs["feed_from"]["index_entries_read"], 1)
    print(f"entries read, from the first entry / feed_from: {ratio:.0f}x")
    print(f"written {write_result('held_pick', {'args': vars(args), 'runs': runs})}")


if __name__ == "__main__":
    main()
