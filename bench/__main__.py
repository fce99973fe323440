"""``python -m bench <name> [options]``: run one benchmark (its --help tells more).

``python -m bench --own-cluster <name> [options]`` runs it on a PostgreSQL cluster of its own
(bench/pgcluster.py: initdb'd for the run, autovacuum on, destroyed at exit), so that the
shared server's other databases (another engineer's fill, a transaction they hold open, their
checkpoints) do not enter its figures; the machine's CPU is still shared."""

from __future__ import annotations

import importlib
import sys

BENCHMARKS = {
    "drain": "bench.drain",
    "academies": "bench.academies",
    "publish": "bench.publish",
    "latency": "bench.latency",
    "coldstart": "bench.coldstart",
    "roster": "bench.roster",
    "broadcast": "bench.broadcast",
    "soak": "bench.soak",
    "sweep_latency": "bench.sweep_latency",
    "fairness": "bench.fairness",
    "api": "bench.api",
    "streams": "bench.streams",
    "scale": "bench.scale",
    "report": "bench.report",
    "pressure": "bench.pressure",
    "console": "bench.console",
    "held_pick": "bench.held_pick",
    "tracing": "bench.tracing",
}


def main() -> None:
    if sys.argv[1:2] == ["--own-cluster"]:
        import atexit
        import os

        from bench.pgcluster import Cluster

        sys.argv.pop(1)
        cluster = Cluster()
        atexit.register(cluster.destroy)  # after the bench database is dropped (LIFO)
        cluster.start()
        os.environ["BENCH_DATABASE_URL"] = cluster.url
    if len(sys.argv) < 2 or sys.argv[1] not in BENCHMARKS:
        print("usage: python -m bench {" + ",".join(BENCHMARKS) + "} [options]", file=sys.stderr)
        raise SystemExit(2)
    name = sys.argv.pop(1)
    importlib.import_module(BENCHMARKS[name]).main(sys.argv[1:])


if __name__ == "__main__":
    main()
