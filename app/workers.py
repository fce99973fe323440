"""The worker set-up ``jobq run`` starts (docker-compose mirrors it; a test keeps them equal).

Urgent work (dispatches, realtime notices, beat's maintenance) and bulk work (broadcast
chunks, imports, reports) get separate workers, so a burst of bulk jobs never delays a
late-arrival notice. The pool and sizes are what the drain benchmark found fastest on a
2-core machine (see bench/results/README.md).
"""

from __future__ import annotations

#: name -> the `celery worker` arguments of that process (node name and -Q included).
WORKERS: dict[str, list[str]] = {
    "realtime": ["-P", "prefork", "-c", "2", "-n", "realtime@%h",
                 "-Q", "celery,dispatch,realtime,maintenance"],
    "bulk": ["-P", "prefork", "-c", "1", "-n", "bulk@%h", "-Q", "bulk"],
}

#: Quieter, faster start for the processes `jobq run` manages (no peers to sync with).
COMMON = ["--without-gossip", "--without-mingle"]


def worker_args(name: str) -> list[str]:
    return [*WORKERS[name], *COMMON]
