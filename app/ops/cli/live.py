"""`jobq watch`: the jobs `jobq jobs` would list, live, as they change.

In a terminal: the newest jobs that match, redrawn every second, a job that just changed in
bold. Into a pipe: one line per change (a new job, or a job's new status), for scripts and logs.
It reads the table (the source of truth) on the listing's own indexes, so it shows every way a
job changes: runs, retries, cancels, approvals, recoveries.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer
from rich.live import Live
from rich.text import Text

from app.ops.cli import show
from app.ops.cli.common import (
    IntentOption,
    SinceOption,
    StatusOption,
    TenantOption,
    UntilOption,
    console,
)
from app.ops.cli.jobs import jobs_table
from app.ops.cli.lookup import job_filter
from app.store import db, reads

#: How often the table is read.
POLL_SECONDS = 1.0


def register(app: typer.Typer) -> None:
    app.command("watch")(watch_jobs)


def _state(row: dict[str, Any]) -> tuple[Any, ...]:
    return (row["status"], row["retry_count"], (row.get("progress") or {}).get("percent"))


def change_line(row: dict[str, Any], was: str | None) -> Text:
    """One job's change, as a line: time, id, academy, intent, the status it went to."""
    line = Text()
    line.append(show.local_time(row["updated_at"] or row["created_at"], date=False), style="dim")
    line.append(f"  {row['id'][:8]}  ", style="bold")
    line.append(f"{row['tenant_name'] or row['tenant_id'][:8]}  {row['intent_key']}  ")
    if was is not None and was != row["status"]:
        line.append(f"{was} → ")
    elif was is None:
        line.append("new ", style="dim")
    line.append(show.job_status(row))
    if row["status"] in ("failed", "cancelled") and row["error_message"]:
        line.append(f"  {show.short(show.shown_str(row['error_message']), 80)}", style="red")
    elif row["status"] == "processing" and row.get("progress"):
        line.append(f"  {show.progress_line(row['progress'])}")
    return line


def watch_jobs(
    tenant: TenantOption = None,
    status: StatusOption = None,
    intent: IntentOption = None,
    since: SinceOption = None,
    until: UntilOption = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, max=200,
                                       help="Jobs shown (the newest that match).")] = 20,
    seconds: Annotated[float | None, typer.Option(
        "--for", min=0.0, help="Stop after this many seconds (default: until Ctrl-C).")] = None,
) -> None:
    """Watch jobs live as they change (filters as `jobq jobs`); Ctrl-C stops.

    In a terminal, the newest matching jobs redrawn every second; into a pipe, one line per
    change (a new job, or a new status).
    """
    with db.engine().connect() as conn:
        where = job_filter(tenant, status, intent, since, conn, until)
    deadline = None if seconds is None else time.monotonic() + seconds
    seen: dict[str, tuple[Any, ...]] = {}
    first = True

    def read() -> list[dict[str, Any]]:
        with db.engine().connect() as conn:
            return reads.list_jobs(conn, where, limit=limit)

    def changed(rows: list[dict[str, Any]]) -> list[tuple[dict[str, Any], str | None]]:
        out = []
        for row in rows:
            before = seen.get(row["id"])
            if before != _state(row):
                out.append((row, before[0] if before else None))
            seen[row["id"]] = _state(row)
        return out

    def done() -> bool:
        return deadline is not None and time.monotonic() >= deadline

    try:
        if not console.is_terminal:
            while True:
                rows = read()
                for row, was in reversed(changed(rows)):  # oldest first, as they happened
                    console.print(change_line(row, was), soft_wrap=True)
                if done():
                    return
                time.sleep(POLL_SECONDS)
        with Live(console=console, auto_refresh=False) as live:
            while True:
                rows = read()
                fresh = {row["id"] for row, _ in changed(rows)}
                if rows:
                    table = jobs_table(rows, console.width)
                    for i, row in enumerate(rows):
                        if row["id"] in fresh and not first:
                            table.rows[i].style = "bold"
                    live.update(table, refresh=True)
                else:
                    live.update(Text("no jobs match yet"), refresh=True)
                first = False
                if done():
                    return
                time.sleep(POLL_SECONDS)
    except KeyboardInterrupt:
        return
