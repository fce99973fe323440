"""What the benchmarks share: worker processes, broker and table probes, result files."""

from __future__ import annotations

import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from rich.console import Console
from rich.table import Table
from sqlalchemy import text

from bench import env

# Not a terminal (a log file, a pipe): wide enough that tables keep every column readable.
console = Console(width=None if sys.stdout.isatty() else 200)
ROOT = Path(__file__).resolve().parent.parent


def redis_client() -> redis.Redis:
    return redis.Redis.from_url(env.REDIS_URL)


def broker_backlog(queues: Sequence[str]) -> int:
    """Messages waiting in ``queues`` plus those delivered but not yet acknowledged."""
    client = redis_client()
    pipe = client.pipeline()
    for q in queues:
        pipe.llen(env.KEY_PREFIX + q)
    pipe.hlen(env.KEY_PREFIX + "unacked")
    return sum(pipe.execute())


def queue_length(queue: str) -> int:
    return redis_client().llen(env.KEY_PREFIX + queue)


def make_tenant(name: str = "벤치마크 학원") -> str:
    from app.store import db

    with db.engine().begin() as conn:
        return conn.execute(text("INSERT INTO tenants (name) VALUES (:n) RETURNING id::text"),
                            {"n": name}).scalar_one()


def reset_jobs(keep_finished: bool = False) -> None:
    """No jobs, no messages. ``keep_finished``: delete only unfinished jobs (a table filled
    with history, e.g. by ``bench scale``'s fill, keeps it)."""
    from app.store import db

    with db.engine().begin() as conn:
        if keep_finished:
            conn.execute(text("DELETE FROM job_executions "
                              "WHERE status NOT IN ('completed', 'failed', 'cancelled')"))
        else:
            conn.execute(text("TRUNCATE job_events, job_executions"))
    redis_client().delete(*(env.KEY_PREFIX + k for k in
                            ("celery", "dispatch", "realtime", "bulk", "maintenance", "bare", "stock",
                             "unacked", "unacked_index")))


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen
    log: Path

    def stop(self, timeout: float = 30) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(10)


def start_process(name: str, args: Sequence[str], extra_env: dict[str, str] | None = None) -> Proc:
    log = env.HOME / f"{name}-{uuid.uuid4().hex[:4]}.log"
    with open(log, "wb") as fh:
        popen = subprocess.Popen(list(args), cwd=ROOT, env={**os.environ, **(extra_env or {})},
                                 stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    return Proc(name, popen, log)


def celery_worker(app: str, name: str, *args: str, extra_env: dict[str, str] | None = None,
                  quiet: bool = True) -> Proc:
    """``celery -A app worker -n <unique> -l WARNING *args``; ``quiet`` adds
    ``--without-gossip --without-mingle`` (what ``jobq run`` passes; stock Celery runs without)."""
    node = f"{name}-{uuid.uuid4().hex[:4]}@{platform.node()}"
    quiet_args = ["--without-gossip", "--without-mingle"] if quiet else []
    return start_process(node, [sys.executable, "-m", "celery", "-A", app, "worker", "-n", node,
                                *quiet_args, "-l", "WARNING", *args], extra_env)


def celery_beat(extra_env: dict[str, str] | None = None, *, wait: bool = False) -> Proc:
    """``celery -A app beat``, as ``jobq run`` starts it beside its workers (it sweeps, and
    may lead the feeding). ``wait``: return once it has opened its schedule (app loaded,
    scheduler up), so that its start-up stays out of a drain's clock and CPU window."""
    schedule = env.HOME / f"beat-schedule-{uuid.uuid4().hex[:6]}"
    proc = start_process("beat", [sys.executable, "-m", "celery", "-A", "app", "beat", "-l",
                                  "WARNING", "--schedule", str(schedule), "--pidfile="],
                         extra_env)
    deadline = time.monotonic() + 60
    while wait and not any(env.HOME.glob(schedule.name + "*")):
        if proc.popen.poll() is not None:
            raise SystemExit(f"beat exited ({proc.popen.returncode}); see {proc.log}")
        if time.monotonic() > deadline:
            print(f"beat opened no schedule in 60 s; going on (see {proc.log})", flush=True)
            break
        time.sleep(0.05)
    return proc


def stop_all(procs: Sequence[Proc]) -> None:
    for p in procs:
        p.stop()


def percentile(values: Sequence[float], pct: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = (len(ordered) - 1) * pct / 100
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def machine() -> dict[str, Any]:
    load = os.getloadavg()
    return {"cpus": os.cpu_count(), "python": platform.python_version(),
            "load_avg_1m": round(load[0], 2), "at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def write_result(name: str, data: dict[str, Any]) -> Path:
    """bench/results/NAME.json, or NAME-LABEL.json with ``BENCH_LABEL`` set (``before``,
    ``after``: both sides of a change kept beside each other)."""
    env.RESULTS.mkdir(parents=True, exist_ok=True)
    label = os.environ.get("BENCH_LABEL")
    path = env.RESULTS / f"{name}{'-' + label if label else ''}.json"
    path.write_text(json.dumps({"machine": machine(), **data}, indent=2, ensure_ascii=False,
                               default=str))
    return path


def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    table = Table(*columns, title=title)
    for row in rows:
        table.add_row(*(f"{v:,.2f}" if isinstance(v, float) else str(v) for v in row))
    console.print(table)


def targets(rows: Sequence[tuple[str, float | None, str]]) -> list[dict[str, Any]]:
    """Print the figures a run measured against their targets, ``(figure, value, target)``
    each, and return them for the result file (``python -m bench report`` gathers them from
    every file)."""
    out = [{"figure": f, "value": None if v is None or v != v else round(v, 3), "target": t}
           for f, v, t in rows]
    print_table("Figures against their targets", ["figure", "measured", "target"],
                [(r["figure"], "-" if r["value"] is None else r["value"], r["target"])
                 for r in out])
    return out
