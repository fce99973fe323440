"""The worker set-up ``jobq run`` starts (docker-compose mirrors it; a test keeps them equal).

Urgent work (dispatches, realtime notices, beat's maintenance) and bulk work (broadcast
chunks, imports, reports) get separate workers, so a burst of bulk jobs never delays a
late-arrival notice.

Realtime: ``JOBQ_WORKER_POOL=solo`` (the default) runs one single-process worker per core
(``JOBQ_WORKER_PROCESSES``): on the 2-core benchmark machine that drained audited jobs 2.3× as
fast as one prefork worker with two children (245 vs 107 jobs/s, 0.93× stock Celery's
``-c 2 -E``; bench/results/README.md). A solo worker keeps
each intent's soft time limit (app/run/timelimit.py) but has no hard limit and no pool child to
lose instead of itself: pick ``prefork`` when handlers may hang in C code or leak memory.
Bulk work always runs in prefork children, under Celery's hard time limits.
"""

from __future__ import annotations

from app.core.settings import settings

REALTIME_QUEUES = "celery,dispatch,maintenance,realtime"
BULK_QUEUES = "bulk"
BULK_CHILDREN = 2


def _realtime() -> dict[str, list[str]]:
    n = settings.worker_processes
    if settings.worker_pool == "prefork":
        return {"realtime": ["-P", "prefork", "-c", str(n), "-n", "realtime@%h",
                             "-Q", REALTIME_QUEUES]}
    return {
        ("realtime" if i == 1 else f"realtime-{i}"): [
            # -c 1: what a solo worker runs anyway; the banner and Flower then say so.
            "-P", "solo", "-c", "1", "-n", f"realtime{'' if i == 1 else i}@%h",
            "-Q", REALTIME_QUEUES]
        for i in range(1, n + 1)
    }


#: name -> the `celery worker` arguments of that process (node name and -Q included).
WORKERS: dict[str, list[str]] = {
    **_realtime(),
    "bulk": ["-P", "prefork", "-c", str(BULK_CHILDREN), "-n", "bulk@%h", "-Q", BULK_QUEUES],
}

#: Quieter, faster start for the processes `jobq run` manages (no peers to sync with).
COMMON = ["--without-gossip", "--without-mingle"]


def worker_args(name: str) -> list[str]:
    return [*WORKERS[name], *COMMON]
