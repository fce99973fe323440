"""`jobq schedules`: list, add, pause, resume and remove periodic intents.

Beat reads ``job_schedules`` on every tick, so each change here takes effect within
``JOBQ_SCHEDULE_INTERVAL`` without a restart. Bad arguments exit 2; an unknown schedule exits 1.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Annotated, Any

import typer

from app.ops.cli.common import console, err, fail

app = typer.Typer(help="Periodic intents (cron schedules), fired by beat.", no_args_is_help=True)

ScheduleRef = Annotated[str, typer.Argument(help="The schedule's name (or id).")]


def _local(at: dt.datetime | None, timezone: str) -> str:
    if at is None:
        return "-"
    try:
        from app.core.cron import zone

        return at.astimezone(zone(timezone)).strftime("%Y-%m-%d %H:%M:%S %Z")
    except ValueError:
        return at.isoformat()


@app.command("list")
def schedules_list() -> None:
    """Every schedule: what it runs, for whom, when it fires next and how its last slot went."""
    from rich.table import Table

    from app.beat.schedules import list_schedules
    from app.core.registry import manifest
    from app.store import db

    with db.engine().connect() as conn:
        rows = list_schedules(conn)
    if not rows:
        console.print("no schedules (add one with `jobq schedules add`)")
        return
    table = Table("name", "tenant", "intent", "cron", "timezone", "state", "next slot",
                  "last slot", "description")
    for s in rows:
        intent = s.intent_key if s.intent_key in manifest else f"[red]{s.intent_key} (unknown)[/]"
        if s.intent_params:
            intent += f" {json.dumps(s.intent_params, ensure_ascii=False)}"
        last = "-"
        if s.last_status:
            last = f"{s.last_status} {_local(s.last_slot_at, s.timezone)}"
            last += f": {s.last_jobs} job(s)" if s.last_status == "fired" else f": {s.last_error}"
        table.add_row(
            s.name,
            (s.tenant_name or s.tenant_id) if s.tenant_id else "all active",
            intent,
            s.cron,
            s.timezone,
            "enabled" if s.enabled else "[yellow]paused[/]",
            _local(s.next_slot(), s.timezone),
            last,
            s.description or "",
        )
    console.print(table)


def _parse_params(raw: str | None) -> dict[str, Any]:
    if raw is None:
        return {}
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise fail(f"--params is not JSON: {exc}", 2) from None
    if not isinstance(value, dict):
        raise fail(f"--params must be a JSON object, not {type(value).__name__}", 2)
    return value


@app.command("add")
def schedules_add(
    name: Annotated[str, typer.Argument(help="A unique name, e.g. monthly-settlement.")],
    cron: Annotated[str, typer.Option(
        help="Cron expression: 'minute hour day month weekday' (6th field: seconds).")],
    intent: Annotated[str, typer.Option(help="The intent key to run.")],
    tenant: Annotated[str | None, typer.Option(
        help="Only this tenant's id; default: every active tenant.")] = None,
    params: Annotated[str | None, typer.Option(help="intent_params as a JSON object.")] = None,
    timezone: Annotated[str, typer.Option(help="Timezone the cron is read in.")] = "Asia/Seoul",
    description: Annotated[str | None, typer.Option(help="What it is for.")] = None,
    paused: Annotated[bool, typer.Option(help="Create it paused.")] = False,
) -> None:
    """Add a schedule; its first slot is the first one after now."""
    from app.beat.schedules import (
        ScheduleError,
        ScheduleExists,
        add_schedule,
        intent_problem,
    )
    from app.core.cron import next_slot
    from app.store import db
    from app.store import schedules as schedule_store

    intent_params = _parse_params(params)
    problem = intent_problem(intent, intent_params)
    if problem:
        raise fail(problem, 2)
    try:
        with db.engine().begin() as conn:
            schedule_id = add_schedule(
                conn, name=name, intent_key=intent, cron=cron, tenant_id=tenant,
                intent_params=intent_params, timezone=timezone, description=description,
                enabled=not paused,
            )
            row = schedule_store.added(conn, schedule_id)
    except ScheduleExists as exc:
        raise fail(str(exc), 1) from None
    except ScheduleError as exc:
        raise fail(str(exc), 2) from None
    if tenant and row.status != "active":
        err.print(f"[yellow]warning:[/] tenant {tenant} is {row.status}: its slots are refused "
                  "until it is active again")
    if paused:
        state = "paused"
    else:
        state = f"next slot {_local(next_slot(row.cron, timezone, row.slots_done_until), timezone)}"
    console.print(f"schedule {name} added ({state}) id={schedule_id}")


def _toggle(ref: str, action: str) -> None:
    from app.store import db
    from app.store import schedules as sched

    with db.engine().begin() as conn:
        name = getattr(sched, action)(conn, ref)
    if name is None:
        raise fail(f"no schedule named {ref!r}", 1)
    console.print(f"schedule {name} {action}d")


@app.command("pause")
def schedules_pause(ref: ScheduleRef) -> None:
    """Stop firing a schedule until it is resumed."""
    _toggle(ref, "pause")


@app.command("resume")
def schedules_resume(ref: ScheduleRef) -> None:
    """Fire a paused schedule again from its next slot (slots missed while paused stay unfired)."""
    _toggle(ref, "resume")


@app.command("remove")
def schedules_remove(ref: ScheduleRef) -> None:
    """Delete a schedule and its run history; the jobs it made stay."""
    from app.store import db
    from app.store.schedules import remove

    with db.engine().begin() as conn:
        name = remove(conn, ref)
    if name is None:
        raise fail(f"no schedule named {ref!r}", 1)
    console.print(f"schedule {name} removed")


@app.command("defaults")
def schedules_defaults() -> None:
    """Re-create the default schedules (monthly settlement, weekly report) that are missing."""
    from app.beat.schedules import ensure_default_schedules
    from app.store import db

    with db.engine().begin() as conn:
        created = ensure_default_schedules(conn)
    console.print(f"created: {', '.join(created)}" if created else "all default schedules exist")


def on_run(context: Any) -> list[str]:
    """`jobq run` start-up step: what beat will fire (a line for the summary), and, at once,
    which schedules cannot fire.

    The default schedules are written once by the first migration, not here, so a default an
    operator removed stays removed (`jobq schedules defaults` brings it back).
    """
    from app.beat.schedules import list_schedules
    from app.core.registry import manifest
    from app.store import db

    with db.engine(context.database_url).connect() as conn:
        rows = list_schedules(conn)
    enabled = [s for s in rows if s.enabled]
    for s in enabled:
        if s.intent_key not in manifest:
            err.print(f"[yellow]warning:[/] schedule {s.name}: intent {s.intent_key!r} is not in "
                      "the manifest; its slots are refused until it is")
    return [f"schedules: {len(enabled)} enabled, {len(rows) - len(enabled)} paused "
            f"({context.jobq} schedules list)"]
