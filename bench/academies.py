"""Many academies: the same jobs spread over many academies against all of them in one, drained
by the same workers in one invocation (issue 24: the product's real load is many academies).

    python -m bench academies [--jobs 3000] [--academies 1000] [--rounds 3] [--rows 0]
                              [--setup plain] [--path submit]

Each round drains ``--jobs`` echo jobs twice with bench/drain.py's ``run_one`` (enqueued
first, then ``celery -A app worker`` with no flags and beat started; jobs/s from the first
start to the last completion): once all in one academy, once in turn over ``--academies``
academies (the order alternates between rounds). The ratio (many / one) is taken within each
round; the figures printed are medians over the rounds.

``--rows N`` first fills the table with N finished jobs and their events over 1,000 academies
(bench/scale.py's fill: 91 days of history, then VACUUM ANALYZE); the drained jobs' academies
are those academies. 10 M rows take about half an hour and 11 GB to write: keep them with
``--keep`` and run again on them with ``BENCH_REUSE_DB``:

    python -m bench academies --rows 10000000 --keep      # prints the database it kept
    BENCH_REUSE_DB=jobq_bench_<id> python -m bench academies --rows 10000000
"""

from __future__ import annotations

import argparse
import time

from bench import env  # first: sets up the environment
from bench.common import median, print_table, targets, write_result
from bench.drain import run_one, writes_line


def prepare(rows: int, academies: int) -> list[str]:
    """The academies (bench/scale.py's, with ``rows`` finished jobs over them at most)."""
    from bench import scale

    scale.setup(max(academies, 1_000) if rows else academies)
    [(have,)] = scale.sql("SELECT count(*) FROM job_executions "
                          "WHERE status IN ('completed', 'failed')")
    if rows > have:
        [(tenants,)] = scale.sql("SELECT count(*) FROM bench_tenants")
        t0 = time.monotonic()
        scale.fill(have, rows, tenants=tenants, days=91.0)
        scale.raw("VACUUM ANALYZE job_executions")
        scale.raw("VACUUM ANALYZE job_events")
        print(f"filled to {rows:,} finished jobs in {time.monotonic() - t0:.0f} s", flush=True)
    return [r[0] for r in scale.sql("SELECT id::text FROM bench_tenants ORDER BY n LIMIT :n",
                                    n=academies)]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench academies", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=3_000)
    parser.add_argument("--academies", type=int, default=1_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rows", type=int, default=0,
                        help="finished jobs in the table first (10000000: the scale benchmark's)")
    parser.add_argument("--setup", default="plain", help="a bench/drain.py set-up")
    parser.add_argument("--path", default="submit", help="submit, dispatch or sql")
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--keep", action="store_true",
                        help="keep the database afterwards (for BENCH_REUSE_DB); drop it yourself")
    args = parser.parse_args(argv)
    if args.keep:
        env.keep()
    tenants = prepare(args.rows, args.academies)
    keep = bool(args.rows)
    rounds = []
    for i in range(args.rounds):
        runs = {}
        for case in (("one", "many") if i % 2 == 0 else ("many", "one")):
            who = tenants[:1] if case == "one" else tenants
            runs[case] = run_one(args.path, args.setup, args.jobs, who, args.timeout,
                                 keep_finished=keep)
            print(f"[{i + 1}] {case:>4}: {runs[case]['jobs_per_s']:,.0f} jobs/s "
                  f"({runs[case]['seconds']:.1f} s); rows written per job: "
                  f"{writes_line(runs[case]['written_per_job'])}", flush=True)
        rounds.append({"one": runs["one"]["jobs_per_s"], "many": runs["many"]["jobs_per_s"],
                       "ratio": round(runs["many"]["jobs_per_s"] / runs["one"]["jobs_per_s"], 3),
                       "runs": runs})
    one, many = median([r["one"] for r in rounds]), median([r["many"] for r in rounds])
    ratio = median([r["ratio"] for r in rounds])
    table = f"{args.rows:,} finished jobs in the table" if args.rows else "an empty table"
    print_table(f"{args.jobs:,} {args.path} jobs over 1 vs {len(tenants):,} academies, "
                f"{args.setup} set-up, {table}, median of {args.rounds} round(s)",
                ["academies", "jobs/s", "× one academy"],
                [(1, one, 1.0), (len(tenants), many, ratio)])
    found = targets([(f"{args.jobs:,} jobs over {len(tenants):,} academies / over one, "
                      f"{args.setup}, {table}", ratio, "≥ 0.95×")])
    path = write_result("academies" + (f"-{args.rows}" if args.rows else ""), {
        "jobs": args.jobs, "academies": len(tenants), "rows": args.rows, "setup": args.setup,
        "path": args.path, "rounds": args.rounds, "one_jobs_per_s": one,
        "many_jobs_per_s": many, "ratio": ratio, "targets": found, "each_round": rounds})
    print(f"written {path}")


if __name__ == "__main__":
    main()
