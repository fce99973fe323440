"""`jobq tenants`: list, create, suspend, resume and delete tenants (academies).

A suspended tenant's new requests are refused at dispatch, its pending jobs are held (not run)
and its failed jobs cannot be retried until it is resumed. A deleted tenant's pending jobs fail
and nothing of it runs again. Every change is recorded with who made it (``tenant_events``).
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.console import JustifyMethod
from rich.table import Table
from rich.text import Text

from app.ops.cli.common import console, fail

app = typer.Typer(help="Tenants (academies): list, create, suspend, resume, delete.",
                  no_args_is_help=False)


#: Below this terminal width the ids shrink to their first 8 characters (which every
#: command taking a tenant accepts); in a pipe they are always whole.
WIDE_ENOUGH = 100


@app.callback(invoke_without_command=True)
def tenants_list(
    ctx: typer.Context,
    status: Annotated[str | None, typer.Option(
        "--status", help="Only tenants in this state (active, suspended, deleted).")] = None,
    wide: Annotated[bool, typer.Option(
        "--wide", "-w", help="Whole ids and names however narrow the terminal.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON array, for scripts.")] = False,
) -> None:
    """List tenants with their jobs of the last 24 hours."""
    if ctx.invoked_subcommand:
        return
    from app.ops.cli import show
    from app.ops.cli.args import bad
    from app.store import db, tenants
    from app.store.models import TENANT_STATUSES

    if status is not None and status not in TENANT_STATUSES:
        raise bad(f"{status!r} is not one of {', '.join(TENANT_STATUSES)}", "--status")
    with db.engine().connect() as conn:
        rows = tenants.list_tenants(conn, status=status)
    if as_json:
        console.print_json(data=[{**r, "created_at": r["created_at"].isoformat()} for r in rows])
        return
    whole = wide or not console.is_terminal or console.width >= WIDE_ENOUGH
    table = Table(box=None, header_style="bold", pad_edge=False)
    columns: list[tuple[str, JustifyMethod]] = [
        ("id", "left"), ("name", "left"), ("status", "left"),
        (f"created ({show.zone_name()})", "left"), ("jobs 24h", "right"),
        ("failed 24h", "right"), ("backlog", "right"), ("running", "right"),
        ("oldest wait", "right"), ("weight", "right"), ("cap (per queue)", "right"),
        ("kept days", "right")]
    for name, justify in columns:
        table.add_column(name, justify=justify, no_wrap=name != "name")
    for r in rows:
        table.add_row(*_row(r, whole))
    show.print_whole(console, table, wide=wide)


def cap_text(max_running: int | None, queue_caps: dict[str, int]) -> str:
    """``4; bulk 1``: the cap across queues (or -), then each queue's own."""
    across = str(max_running) if max_running else "-"
    per_queue = ", ".join(f"{q} {n}" for q, n in sorted(queue_caps.items()))
    if not per_queue:
        return across
    return per_queue if across == "-" else f"{across}; {per_queue}"


def _row(r: dict, whole: bool) -> list:
    from app.ops.cli import show

    cap = cap_text(r["max_running"], r["queue_caps"] or {})
    return [r["id"] if whole else r["id"][:8], Text(r["name"]),
            f"[green]{r['status']}[/]" if r["status"] == "active" else f"[red]{r['status']}[/]",
            show.local_time(r["created_at"], short=True), str(r["jobs_24h"]),
            f"[red]{r['failed_24h']}[/]" if r["failed_24h"] else "0",
            str(r["backlog"]), str(r["running"]),
            _age(r["oldest_wait_s"]), f"{r['weight']:g}", cap, kept_text(r)]


def kept_text(r: dict) -> str:
    """``failed 730``: the days its own retention rules keep (- : the defaults)."""
    own = [f"{state} {r[f'keep_{state}_days']}" for state in ("completed", "failed", "cancelled")
           if r.get(f"keep_{state}_days")]
    return ", ".join(own) or "-"


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{seconds / 60:.1f}m"
    return f"{seconds / 3600:.1f}h"


@app.command("set")
def tenants_set(
    tenant: Annotated[str, typer.Argument(metavar="TENANT", help="Its id or exact name.")],
    weight: Annotated[float | None, typer.Option(
        "--weight", help="Its share of a queue while others wait too (default 1).")] = None,
    max_running: Annotated[int | None, typer.Option(
        "--max-running", help="At most this many of its jobs running at once (0: no cap).")
    ] = None,
    queue: Annotated[str | None, typer.Option(
        "--queue", "-q", help="Cap this queue only (with --max-running).")] = None,
    channel: Annotated[str | None, typer.Option(
        "--channel", help="An outside channel (kakao, sms, email): its own caps follow.")
    ] = None,
    rate: Annotated[float | None, typer.Option(
        "--rate", help="With --channel: at most this many messages a second (0: no cap).")
    ] = None,
    daily: Annotated[int | None, typer.Option(
        "--daily", help="With --channel: at most this many messages a day, KST (0: no cap).")
    ] = None,
    over_daily: Annotated[str | None, typer.Option(
        "--over-daily", help="With --channel: what would go over the day's quota waits for "
        "the next day (wait, the default) or fails (fail).")] = None,
    keep_completed: Annotated[int | None, typer.Option(
        "--keep-completed", metavar="DAYS",
        help="Keep its completed jobs this many days (0: the default).")] = None,
    keep_failed: Annotated[int | None, typer.Option(
        "--keep-failed", metavar="DAYS",
        help="Keep its failed jobs this many days (0: the default).")] = None,
    keep_cancelled: Annotated[int | None, typer.Option(
        "--keep-cancelled", metavar="DAYS",
        help="Keep its cancelled jobs this many days (0: the default).")] = None,
) -> None:
    """Change a tenant's settings, live: its weight (share of a busy queue and of
    every channel's send rate), its cap on jobs running at once (across queues or on one), how
    many days its finished jobs are kept in each end state, and with --channel its own caps on
    that outside channel. Recorded with who changed it."""
    from app.intake.actions import set_tenant_limits
    from app.ops.cli.args import actor, bad
    from app.ops.cli.lookup import find_tenant
    from app.store import db

    keep = {"completed": keep_completed, "failed": keep_failed, "cancelled": keep_cancelled}
    if channel is not None or rate is not None or daily is not None or over_daily is not None:
        if weight is not None or max_running is not None or queue is not None \
                or any(v is not None for v in keep.values()):
            raise bad("--channel limits are set on their own: give the tenant's other "
                      "settings in another call", "--channel")
        with db.engine().connect() as conn:
            found = find_tenant(conn, tenant, None)
        _set_channel(found, channel, rate, daily, over_daily)
        return
    if queue is not None and max_running is None:
        raise bad("--queue caps one queue: give --max-running with it", "--queue")
    if weight is None and max_running is None and all(v is None for v in keep.values()):
        raise bad("nothing to change: give --weight, --max-running or --keep-completed/"
                  "--keep-failed/--keep-cancelled", "--weight")
    with db.engine().connect() as conn:
        found = find_tenant(conn, tenant, None)
    if any(v is not None for v in keep.values()):
        _set_retention(found, keep, actor())
        if weight is None and max_running is None:
            return
    try:
        limits = set_tenant_limits(found["id"], weight=weight, max_running=max_running,
                                   queue=queue, by=actor())
    except ValueError as exc:
        option = "--weight" if "weight" in str(exc) else "--queue" if "queue" in str(exc) \
            else "--max-running"
        raise bad(str(exc), option) from None
    per_queue = ", ".join(f"{q} {n}" for q, n in limits.queue_max_running.items())
    console.print(
        f"tenant {found['name']} ({found['id']}): weight {limits.weight:g}, max running "
        f"{limits.max_running or 'unlimited'}" + (f"; per queue: {per_queue}" if per_queue else ""))


def _set_channel(found: dict, channel: str | None, rate: float | None, daily: int | None,
                 over_daily: str | None) -> None:
    from app.intake.actions import set_channel_limits
    from app.ops.cli.args import actor, bad

    if channel is None:
        raise bad("--rate, --daily and --over-daily cap one channel: give --channel", "--channel")
    try:
        limits = set_channel_limits(found["id"], channel, rate=rate, daily=daily,
                                    over_daily=over_daily, by=actor())
    except ValueError as exc:
        option = next((o for o in ("rate", "daily", "over_daily", "channel")
                       if str(exc).startswith(o)), "channel")
        raise bad(str(exc), "--" + option.replace("_", "-")) from None
    console.print(
        f"tenant {found['name']} ({found['id']}) on {channel}: rate "
        f"{'unlimited' if limits['rate'] is None else format(limits['rate'], 'g') + '/s'}, "
        f"daily {limits['daily'] or 'unlimited'}, over the daily quota: {limits['over_daily']}")


def _set_retention(found: dict, keep: dict[str, int | None], by: str) -> None:
    from app.intake.actions import set_tenant_retention
    from app.ops.cli.args import bad

    try:
        rules = set_tenant_retention(found["id"], by=by, **keep)
    except ValueError as exc:
        state = next((s for s in keep if s in str(exc)), "completed")
        raise bad(str(exc), f"--keep-{state}") from None
    kept = ", ".join(f"{state} {days} days" + ("" if rules.own[state] else " (default)")
                     for state, days in rules.kept.items())
    console.print(f"tenant {found['name']} ({found['id']}) keeps its finished jobs: {kept}")


@app.command("create")
def tenants_create(
    name: Annotated[str, typer.Argument(help="The academy's name, e.g. '해오름 수학학원'.")],
) -> None:
    """Create a tenant; prints its id."""
    from app.ops.cli.args import bad
    from app.store import db, tenants

    if not name.strip():
        raise bad("a tenant needs a name", "NAME")
    with db.engine().begin() as conn:
        tenant_id = tenants.create_tenant(conn, name.strip())
    console.print(tenant_id)


def _set_status(ref: str, status: str) -> None:
    from app.intake.actions import set_tenant_status
    from app.ops.cli.args import actor
    from app.ops.cli.lookup import find_tenant
    from app.store import db

    with db.engine().connect() as conn:
        tenant = find_tenant(conn, ref, None)
    # Its held jobs wait in the fair queue again at once when it is resumed.
    was, pending = set_tenant_status(tenant["id"], status, by=actor())
    name = f"{tenant['name']} ({tenant['id']})"
    if was == "deleted" and status != "deleted":
        raise fail(f"tenant {name} is deleted; a deleted tenant cannot be "
                   f"{'resumed' if status == 'active' else 'suspended'}")
    if was == status:
        console.print(f"tenant {name} was already {status}")
        return
    console.print(f"tenant {name} is now {status}")
    if status == "suspended" and pending:
        console.print(f"its {pending} pending job(s) are held until it is resumed")
    elif status == "active" and pending:
        console.print(f"its {pending} held job(s) run again")


@app.command("suspend")
def tenants_suspend(
    tenant: Annotated[str, typer.Argument(metavar="TENANT", help="Its id or exact name.")],
) -> None:
    """Suspend a tenant: its new requests are refused and its pending jobs are held (they stay
    pending, with a `held` event) until it is resumed."""
    _set_status(tenant, "suspended")


@app.command("resume")
def tenants_resume(
    tenant: Annotated[str, typer.Argument(metavar="TENANT", help="Its id or exact name.")],
) -> None:
    """Make a suspended tenant active again; its held jobs run."""
    _set_status(tenant, "active")


@app.command("delete")
def tenants_delete(
    tenant: Annotated[str, typer.Argument(metavar="TENANT", help="Its id or exact name.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete a tenant for good: its pending jobs fail with the reason, a running job finishes
    its attempt but never runs again, and its new requests are refused. Its rows stay for the
    audit (retention removes its finished jobs in time). It cannot be undone."""
    from app.ops.cli.args import actor, bad
    from app.ops.cli.lookup import find_tenant
    from app.store import db, jobstore, tenants

    with db.engine().connect() as conn:
        found = find_tenant(conn, tenant, None)
        pending = tenants.pending_jobs(conn, found["id"])
    name = f"{found['name']} ({found['id']})"
    if found["status"] == "deleted":
        console.print(f"tenant {name} was already deleted")
        return
    if not yes:
        question = f"delete tenant {name} for good ({pending} pending job(s) will fail)?"
        if not sys.stdin.isatty():
            raise bad("deleting a tenant needs a yes: answer in a terminal, or pass --yes",
                      "--yes")
        if not typer.confirm(question, default=False):
            raise fail(f"tenant {name} not deleted")
    by = actor()
    with db.engine().begin() as conn:
        tenants.set_tenant_status(conn, found["id"], "deleted", by=by)
        failed = jobstore.refuse_tenant_pending(
            conn, found["id"], error=jobstore.tenant_refusal(found["id"], "deleted"), by=by)
    console.print(f"tenant {name} is now deleted; {failed} pending job(s) failed")
