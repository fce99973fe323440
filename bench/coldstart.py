"""Cold start: from starting ``celery -A app worker`` to the first job completed, and the
worker's memory after boot, for the real manifest and for 10, 100 and 500 generated handlers
whose modules are slow to import (each sleeps 20 ms, imports libraries and loads 200 KB of data). Beside it
the same worker with every handler imported eagerly at start, as the original system did; and
bare Celery (bench/bare.py: jobq's Celery settings, a no-op task, no database) started with the
same flags on its own queue, its one message waiting likewise, until the message is
acknowledged (late: after the task ran). The real manifest's time over bare Celery's is issue
24's cold-start figure.

    python -m bench coldstart [--sizes 10,100,500] [--rounds 3]
    python -m bench coldstart --sizes ""      # the real manifest and bare Celery only
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from pathlib import Path

from bench import env  # first: sets up the environment
from bench.common import (
    broker_backlog,
    celery_worker,
    make_tenant,
    median,
    print_table,
    targets,
    write_result,
)

BARE = "bare Celery"

HANDLER = '''"""Generated handler {i}: slow to import, like a real one pulling in its libraries."""
import time
import decimal, email.mime.multipart, xml.etree.ElementTree, csv, statistics  # noqa
time.sleep(0.02)
_TABLES = b"x" * 200_000  # data loaded at import (templates, lookup tables)


def run(ctx, params):
    return {{"handler": {i}}}
'''


def generate(root: Path, n: int, eager: bool) -> str:
    """A package of ``n`` handler modules and a manifest; returns the manifest reference."""
    pkg = f"gen{n}{'e' if eager else ''}"
    (root / pkg).mkdir(parents=True, exist_ok=True)
    (root / pkg / "__init__.py").write_text("")
    for i in range(n):
        (root / pkg / f"h{i}.py").write_text(HANDLER.format(i=i))
    entries = "\n".join(
        f'    Intent("gen.exec.h{i}", "{pkg}.h{i}:run", description="generated {i}"),'
        for i in range(n)
    )
    eager_imports = (
        "import importlib\n"
        + f"for _i in range({n}):\n    importlib.import_module(f'{pkg}.h{{_i}}')\n"
        if eager else ""
    )
    (root / pkg / "manifest.py").write_text(
        "from app.core.manifest import Intent\n"
        "from handlers.manifest import INTENTS as REAL\n"
        f"{eager_imports}"
        f"INTENTS = REAL + (\n{entries}\n)\n"
    )
    return f"{pkg}.manifest:INTENTS"


def rss_mib(pid: int) -> float:
    """Resident memory of a process and its children (a prefork pool's children count too)."""
    total = 0
    pids = [pid]
    children = Path(f"/proc/{pid}/task/{pid}/children")
    if children.exists():
        pids += [int(p) for p in children.read_text().split()]
    for p in pids:
        for line in Path(f"/proc/{p}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total / 1024


def one_start(manifest: str | None, tenant: str, root: Path, intent: str) -> dict:
    """Start a worker, dispatch one job the moment it is asked, time it to ``completed``."""
    from sqlalchemy import text

    from app.store import db

    extra = {"PYTHONPATH": f"{root}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    if manifest:
        extra["JOBQ_MANIFEST"] = manifest
    with db.engine().begin() as conn:
        job = conn.execute(text(
            "INSERT INTO job_executions (tenant_id, intent_key, intent_params, queue, "
            "published_at) VALUES (CAST(:t AS uuid), :k, '{}', 'realtime', now()) "
            "RETURNING id::text"), {"t": tenant, "k": intent}).scalar_one()
    # The message waits in the broker before the worker exists: the clock starts at spawn.
    from app.broker.publish import Outgoing, publish

    publish([Outgoing(job, tenant, intent, "realtime")])
    started = time.time()
    proc = celery_worker("app", "cold", "-P", "prefork", "-c", "1", "-Q", "realtime",
                         extra_env=extra)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            with db.engine().connect() as conn:
                done = conn.execute(text(
                    "SELECT extract(epoch FROM completed_at) FROM job_executions "
                    "WHERE id = CAST(:j AS uuid) AND status = 'completed'"), {"j": job}).scalar()
            if done:
                break
            time.sleep(0.01)
        else:
            raise SystemExit(f"no completion; see {proc.log}")
        time.sleep(1.0)  # settle, then read memory after boot and one run
        rss = rss_mib(proc.popen.pid)
    finally:
        proc.stop()
    return {"first_job_s": round(float(done) - started, 3), "rss_mib": round(rss, 1)}


def bare_start() -> dict:
    """:func:`one_start` for bare Celery: its message waits, a worker with the same flags
    starts, the clock stops when the queue and the unacknowledged set are empty."""
    from bench.bare import app as bare_app

    job = str(uuid.uuid4())
    bare_app.send_task("bare.noop", kwargs={"tenant_id": None, "job_id": job}, task_id=job,
                       queue="bare")
    started = time.time()
    proc = celery_worker("bench.bare", "cold-bare", "-P", "prefork", "-c", "1", "-Q", "bare")
    try:
        deadline = time.monotonic() + 120
        while broker_backlog(["bare"]):
            if time.monotonic() > deadline:
                raise SystemExit(f"bare Celery ran nothing; see {proc.log}")
            time.sleep(0.005)
        done = time.time()
        time.sleep(1.0)
        rss = rss_mib(proc.popen.pid)
    finally:
        proc.stop()
    return {"first_job_s": round(done - started, 3), "rss_mib": round(rss, 1)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench coldstart", description=__doc__)
    parser.add_argument("--sizes", default="10,100,500")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    tenant = make_tenant()
    root = env.HOME / "generated"
    sys.path.insert(0, str(root))
    sizes = [int(s) for s in args.sizes.split(",") if s]
    cases: list[tuple[str, str | None, str]] = [("real manifest", None, "system.exec.echo"),
                                                (BARE, None, "")]
    for n in sizes:
        cases.append((f"{n} handlers, lazy", generate(root, n, eager=False), "gen.exec.h0"))
        cases.append((f"{n} handlers, eager", generate(root, n, eager=True), "gen.exec.h0"))
    results = []
    for name, manifest, intent in cases:
        runs = [bare_start() if name == BARE else one_start(manifest, tenant, root, intent)
                for _ in range(args.rounds)]
        r = {"case": name, "first_job_s": median([x["first_job_s"] for x in runs]),
             "rss_mib": median([x["rss_mib"] for x in runs]), "rounds": runs}
        results.append(r)
        print(f"{name:>22}: first job after {r['first_job_s']:.2f}s, RSS {r['rss_mib']:.0f} MiB",
              flush=True)
    by = {r["case"]: r for r in results}
    small, big = (f"{min(sizes)} handlers, lazy", f"{max(sizes)} handlers, lazy") if sizes \
        else ("", "")
    if small in by and big in by:
        summary = {
            "start_ratio_big_vs_small": round(by[big]["first_job_s"] / by[small]["first_job_s"], 3),
            "rss_ratio_big_vs_small": round(by[big]["rss_mib"] / by[small]["rss_mib"], 3),
        }
        print(f"{big} vs {small}: start ×{summary['start_ratio_big_vs_small']}, "
              f"RSS ×{summary['rss_ratio_big_vs_small']} (target: within 1.10)")
    else:
        summary = {}
    print_table("Cold start: worker spawn to first job completed (median of rounds)",
                ["case", "first job (s)", "RSS after boot (MiB)"],
                [(r["case"], r["first_job_s"], r["rss_mib"]) for r in results])
    summary["ratio_vs_bare"] = round(by["real manifest"]["first_job_s"]
                                     / by[BARE]["first_job_s"], 3)
    summary["targets"] = targets([("cold start, worker launch → first job, real manifest / "
                                   "bare Celery", summary["ratio_vs_bare"], "≤ 1.3×")])
    print(f"written {write_result('coldstart', {'cases': results, **summary})}")


if __name__ == "__main__":
    main()
