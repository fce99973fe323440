"""Following one job live: a progress bar fed by the row's ``progress``, a line per event, and
the outcome at the end. Used by ``jobq job --watch``, ``jobq dispatch --wait`` and ``jobq retry
--wait``.

It polls the table (the source of truth) rather than listening to Celery events, so it works
from any machine that reaches the database and shows retries, cancels and recoveries too.
"""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.text import Text

from app.ops.cli import show
from app.store import db, reads
from app.store.models import FINISHED_STATUSES

#: How often the row is read; the runner writes progress at most a few times a second.
POLL_SECONDS = 0.25


def event_line(event: dict[str, Any], intent_key: str | None = None) -> Text:
    line = Text()
    line.append(show.local_time(event["at"], date=False), style="dim")
    line.append(f"  attempt {event['attempt']}  " if event["attempt"] else "  ")
    line.append(show.event_kind(event["kind"]))
    if event.get("worker") and event["kind"] == "started":
        line.append(f" on {event['worker']}", style="dim")
    detail = show.event_detail(event, intent_key)
    if detail.plain:
        line.append("  ")
        line.append(detail)
    return line


#: How many terminal lines a result may take at the end of ``--wait`` (``jobq job`` shows more).
RESULT_LINES = 4


def outcome_line(row: dict[str, Any], width: int = 80) -> Text:
    """How the job ended, for a terminal ``width`` cells wide: a result takes up to
    :data:`RESULT_LINES` lines of it before it is cut."""
    status = row["status"]
    out = Text()
    if status == "completed":
        out.append("✓ completed", style="bold green")
        took = show.between(row.get("executed_at"), row.get("completed_at"))
        if took is not None:
            out.append(f" in {show.duration(took)}")
        if row.get("result") is not None:
            out.append("  result: ", style="dim")
            out.append(show.short(show.shown_params(row.get("intent_key") or "", row["result"]),
                                  max(40, RESULT_LINES * width - out.cell_len)))
    elif status == "failed":
        out.append("✗ failed", style="bold red")
        attempts = row["retry_count"] + 1
        out.append(f" after {attempts} attempt{'s' if attempts > 1 else ''}: ")
        out.append(show.shown_str(row.get("error_message")), style="red")
    elif status == "cancelled":
        out.append("✗ cancelled", style="bold magenta")
        if row.get("error_message"):
            out.append(f": {show.shown_str(row['error_message'])}")
    else:
        out.append(f"still {status}", style="yellow")
    return out


def watch(job_id: str, intent_key: str, console: Console, *,
          timeout: float | None = None) -> dict[str, Any]:
    """Show the job until it finishes (or ``timeout`` passes); return its last row."""
    deadline = None if timeout is None else time.monotonic() + timeout
    last_event = 0
    columns = (
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(bar_width=32),
        TextColumn("{task.fields[state]}"),
        TextColumn("{task.fields[note]}", style="dim"),
        TimeElapsedColumn(),
    )
    row: dict[str, Any] | None = None
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task(intent_key, total=None, state="", note="")
        while True:
            with db.engine().connect() as conn:
                row = reads.watch_job(conn, job_id)
                events = reads.job_events(conn, job_id, after=last_event)
            if row is None:  # deleted under us (retention)
                break
            for event in events:
                bar.console.print(event_line(event, intent_key))
                last_event = event["id"]
                if event["kind"] == "started":
                    bar.reset(task, total=None)
            _update(bar, task, row)
            if row["status"] in FINISHED_STATUSES:
                break
            if deadline is not None and time.monotonic() > deadline:
                break
            time.sleep(POLL_SECONDS)
    return row or {"status": "gone", "retry_count": 0}


def _update(bar: Progress, task: Any, row: dict[str, Any]) -> None:
    progress = row.get("progress") or {}
    status = row["status"]
    state = Text(status, style=show.STATUS_STYLES.get(status, ""))
    if status == "completed":
        bar.update(task, total=100, completed=100, state=state, note="")
        return
    percent = progress.get("percent")
    if percent is not None:
        state = Text(f"{percent:.0f}%", style="bold")
        bar.update(task, total=100, completed=percent, state=state,
                   note=show.progress_line({k: v for k, v in progress.items() if k != "percent"}))
    else:
        note = ""
        if status == "pending" and row.get("run_at") and row["run_at"] > row["db_now"]:
            note = f"due {show.local_time(row['run_at'], date=False)}"
        elif progress:
            note = show.progress_line(progress)
        bar.update(task, state=state, note=note)
