"""`jobq jobs` (a filtered page of jobs, newest first) and `jobq job ID` (one job and its
history, attempt by attempt; `--watch` follows it live).
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from app.core import tracing
from app.ops.cli import show
from app.ops.cli.common import (
    IntentOption,
    SinceOption,
    StatusOption,
    TenantOption,
    UntilOption,
    console,
    err,
)
from app.ops.cli.lookup import find_job, job_filter
from app.ops.cli.retry import retry_hint
from app.store import db, reads


def register(app: typer.Typer) -> None:
    app.command("jobs")(jobs_list)
    app.command("job")(job_show)


def jobs_list(
    tenant: TenantOption = None,
    status: StatusOption = None,
    intent: IntentOption = None,
    since: SinceOption = None,
    until: UntilOption = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, max=1000,
                                       help="Jobs per page.")] = 20,
    # No short option: -p is --param everywhere else (dispatch, retry).
    page: Annotated[int, typer.Option("--page", min=1, help="Which page, from 1.")] = 1,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON array, for scripts.")] = False,
) -> None:
    """List jobs, newest first, a page at a time."""
    with db.engine().connect() as conn:
        where = job_filter(tenant, status, intent, since, conn, until)
        rows = reads.list_jobs(conn, where, limit=limit + 1, offset=(page - 1) * limit)
    more, rows = len(rows) > limit, rows[:limit]
    if as_json:
        console.print_json(data=[show.job_for_json(r) for r in rows])
        return
    if not rows:
        err.print("no jobs match" + (f" on page {page}" if page > 1 else ""))
        return
    console.print(jobs_table(rows, console.width))
    first = (page - 1) * limit + 1
    footer = f"jobs {first}–{first + len(rows) - 1}, newest first"
    if more:
        footer += f"; older: add --page {page + 1}"
    err.print(Text(footer, style="dim"))


#: Columns a narrow terminal drops first, in order, once the note is down to its least.
_OPTIONAL = ("retries", "took", "tenant")
#: The least width of a note, and of names cut to fit (what still tells them apart).
_NOTE_MIN = 16
_NAME_MIN = {"intent": 20, "tenant": 8}
#: Between two columns.
_GAP = 2


def jobs_table(rows: list[dict], width: int) -> Table:
    """The page as a table that fits ``width``. Every column is as wide as its content; the
    note (progress or error) takes the room left, and is left out when no row has one. When
    it does not fit: the note shrinks to its least, then the least needed columns go, then the
    names give way (down to a width that still tells them apart)."""
    created = f"created ({show.zone_name()})"
    cells = {
        "id": [Text(r["id"][:8]) for r in rows],
        created: [Text(show.local_time(r["created_at"], short=True)) for r in rows],
        "tenant": [Text(r["tenant_name"] or r["tenant_id"][:8]) for r in rows],
        "intent": [Text(r["intent_key"]) for r in rows],
        "status": [show.job_status(r) for r in rows],
        "retries": [Text(f"{r['retry_count']}/"
                         f"{r['max_retries'] if r['max_retries'] is not None else '-'}")
                    for r in rows],
        "took": [Text(show.duration(show.between(r["executed_at"], r["completed_at"])))
                 for r in rows],
    }
    notes = [_note(r) for r in rows]
    widths = {name: max(len(name), *(c.cell_len for c in values)) for name, values in cells.items()}
    shown = list(cells)
    note_width = max((n.cell_len for n in notes), default=0)
    if note_width:
        note_width = max(note_width, len("progress / error"))

    def used(note: int) -> int:
        return sum(widths[n] for n in shown) + _GAP * (len(shown) - 1) + (_GAP + note if note else 0)

    least_note = min(note_width, _NOTE_MIN)
    for name in _OPTIONAL:
        if used(least_note) <= width:
            break
        shown.remove(name)
    for name, least in _NAME_MIN.items():  # still too wide: the names give way
        excess = used(least_note) - width
        if excess > 0 and name in shown:
            widths[name] = max(least, widths[name] - excess)
    if note_width:
        note_width = max(least_note, min(note_width, width - used(0) - _GAP))
    table = Table(box=None, header_style="bold", pad_edge=False)
    for name in shown:
        table.add_column(name, width=widths[name], no_wrap=True, overflow="ellipsis",
                         justify="right" if name in ("retries", "took") else "left",
                         style="bold" if name == "id" else None)
    if note_width:
        table.add_column("progress / error", width=note_width, no_wrap=True, overflow="ellipsis")
    for i in range(len(rows)):
        table.add_row(*(cells[name][i] for name in shown), *([notes[i]] if note_width else []))
    return table


def _note(r: dict) -> Text:
    if show.is_held(r):
        return Text(f"tenant suspended: {show.resume_hint(r)}", style="yellow")
    if r["status"] in ("failed", "cancelled") and r["error_message"]:
        return Text(show.shown_str(r["error_message"]), style="red")
    if r["status"] == "processing" and r["progress"]:
        return Text(show.progress_line(r["progress"]))
    if r["status"] == "pending" and r["error_message"]:  # waiting to retry
        return Text(f"retrying after: {show.shown_str(r['error_message'])}", style="yellow")
    if r["status"] == "awaiting_approval":
        by = f" (asked by {r['requested_by']})" if r.get("requested_by") else ""
        return Text(f"awaiting approval{by}", style="yellow")
    return Text("")


def job_show(
    job_id: Annotated[str, typer.Argument(metavar="ID", help="A job id (or its first 8 characters).")],
    watch: Annotated[bool, typer.Option("--watch", "-w",
                                        help="Follow it live until it ends.")] = False,
    traceback: Annotated[bool, typer.Option("--traceback",
                                            help="Show each failed attempt's traceback.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="The row and its events as JSON.")] = False,
) -> None:
    """Show one job: its row and its history, attempt by attempt, errors included.

    With --watch, follow it with a live progress bar until it ends; the exit code is then 0 when
    it completed and 1 when it failed or was cancelled.
    """
    from app.intake.waiting import why_waiting

    with db.engine().connect() as conn:
        job = find_job(conn, job_id)
        events = reads.job_events(conn, job["id"])
    waiting = why_waiting(job["id"]) if job["status"] in ("pending", "awaiting_approval") else []
    if as_json:
        console.print_json(data={"job": show.job_for_json(job),
                                 "events": [_event_for_json(e) for e in events],
                                 "waiting": [r.as_dict() for r in waiting]})
        return
    if watch:
        from app.ops.cli.watch import outcome_line
        from app.ops.cli.watch import watch as follow

        console.print(_header(job))
        row = follow(job["id"], job["intent_key"], console)
        console.print(outcome_line(row, console.width))
        raise typer.Exit(0 if row["status"] == "completed" else 1)
    console.print(_details(job))
    for reason in waiting:
        console.print(Text(f"waiting: {reason.text}", style="yellow"), soft_wrap=True)
    console.print()
    console.print(_timeline(events, job["intent_key"]))
    if traceback:
        for e in events:
            if e.get("traceback"):
                console.rule(f"attempt {e['attempt']} {e['kind']} at {show.local_time(e['at'])}",
                             style="red")
                console.print(show.shown_str(e["traceback"]), markup=False, highlight=False)
    elif any(e.get("traceback") for e in events):
        err.print(Text("tracebacks: add --traceback", style="dim"))
    if job["status"] in ("failed", "cancelled"):
        err.print(Text(retry_hint(job), style="dim"), soft_wrap=True)


def _header(job: dict) -> Text:
    line = Text()
    line.append(f"job {job['id']}", style="bold")
    line.append(f"  {job['intent_key']}  ")
    line.append(f"tenant {job['tenant_name'] or job['tenant_id']}", style="dim")
    return line


def _details(job: dict) -> Table:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(overflow="fold")

    def row(label: str, value: object) -> None:
        if value not in (None, "", "-"):
            grid.add_row(label, value if isinstance(value, Text) else str(value))

    row("job", job["id"])
    row("intent", job["intent_key"])
    tenant = Text(job["tenant_name"] or "?")
    tenant.append(f"  {job['tenant_id']}", style="dim")
    if job.get("tenant_status") and job["tenant_status"] != "active":
        tenant.append(f"  ({job['tenant_status']})", style="red")
    row("tenant", tenant)
    status = show.job_status(job)
    if show.is_held(job):
        status.append(f": pending, not run while tenant {job['tenant_name'] or job['tenant_id']} "
                      f"is suspended ({show.resume_hint(job)})")
    if job["status"] == "processing" and job["progress"]:
        status.append(f"  {show.progress_line(job['progress'])}")
    row("status", status)
    row("retries", f"{job['retry_count']} of {job['max_retries'] if job['max_retries'] is not None else '?'}")
    row("queue", job["queue"])
    row("source", job["source"])
    if job.get("requested_by"):
        row("asked by", job["requested_by"])
    row("created", show.local_time(job["created_at"]))
    if job["status"] == "awaiting_approval":
        expires = show.local_time(job["approval_expires_at"]) if job["approval_expires_at"] else "-"
        row("approval", Text(f"awaiting approval until {expires}: jobq approve "
                             f"{job['id'][:8]} (or reject)", style="yellow"))
    if job["run_at"] and job["status"] == "pending":
        row("due", show.local_time(job["run_at"]))
    row("started", show.local_time(job["executed_at"]) if job["executed_at"] else None)
    row("finished", show.local_time(job["completed_at"]) if job["completed_at"] else None)
    row("took", show.duration(show.between(job["executed_at"], job["completed_at"])))
    row("worker", job["worker"])
    row("idempotency", job["idempotency_key"])
    row("parent", job["parent_id"])
    row("trace", tracing.trace_link(job.get("traceparent"))
        or tracing.trace_id_of(job.get("traceparent")))
    if job.get("params_dropped"):
        row("params", Text("not kept (refused before they could be stored)", style="yellow"))
    else:
        row("params", show.as_json(show.shown_params(job["intent_key"], job["intent_params"])))
    if job["result"] is not None:
        row("result", show.short(show.job_for_json(job)["result"], 2000))
    if job["error_message"]:
        row("error", Text(show.shown_str(job["error_message"]), style="red"))
    return grid


def _timeline(events: list[dict], intent_key: str) -> Table:
    table = Table(title="history", title_justify="left", title_style="bold", box=None,
                  header_style="bold", pad_edge=False)
    table.add_column(f"at ({show.zone_name()})", no_wrap=True)
    table.add_column("attempt", justify="right")
    table.add_column("event", no_wrap=True)
    table.add_column("worker", no_wrap=True, style="dim")
    table.add_column("detail", overflow="fold")
    previous = None
    for e in events:
        # Each start names its attempt (a rerun starts at 1 again); other events only when it
        # changes.
        shown = e["attempt"] and (e["attempt"] != previous or e["kind"] == "started")
        attempt = str(e["attempt"]) if shown else ""
        previous = e["attempt"] or previous
        table.add_row(show.local_time(e["at"], zone=False), attempt, show.event_kind(e["kind"]),
                      e["worker"] or "", show.event_detail(e, intent_key))
    return table


def _event_for_json(event: dict) -> dict:
    out = {k: v for k, v in event.items() if k != "id"}
    for key in ("error", "traceback"):
        if out.get(key):
            out[key] = show.shown_str(out[key])
    out["at"] = out["at"].isoformat()
    return out

