"""`jobq tenants`: list, create, suspend and resume tenants (academies).

A suspended tenant's new requests are refused at dispatch and its failed jobs cannot be
retried until it is resumed.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from app.cli import console, fail

app = typer.Typer(help="Tenants (academies): list, create, suspend, resume.",
                  no_args_is_help=False)


#: Below this terminal width the ids shrink to their first 8 characters (which every
#: command taking a tenant accepts); in a pipe they are always whole.
WIDE_ENOUGH = 100


@app.callback(invoke_without_command=True)
def tenants_list(
    ctx: typer.Context,
    status: Annotated[str | None, typer.Option(
        "--status", help="Only tenants in this state (active, suspended).")] = None,
    wide: Annotated[bool, typer.Option(
        "--wide", "-w", help="Whole ids and names however narrow the terminal.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON array, for scripts.")] = False,
) -> None:
    """List tenants with their jobs of the last 24 hours."""
    if ctx.invoked_subcommand:
        return
    from app import db, queries
    from app.cli import show
    from app.cli.args import bad
    from app.models import TENANT_STATUSES

    if status is not None and status not in TENANT_STATUSES:
        raise bad(f"{status!r} is not one of {', '.join(TENANT_STATUSES)}", "--status")
    with db.engine().connect() as conn:
        rows = queries.list_tenants(conn, status=status)
    if as_json:
        console.print_json(data=[{**r, "created_at": r["created_at"].isoformat()} for r in rows])
        return
    whole = wide or not console.is_terminal or console.width >= WIDE_ENOUGH
    table = Table(box=None, header_style="bold", pad_edge=False)
    for name, justify in (("id", "left"), ("name", "left"), ("status", "left"),
                          (f"created ({show.zone_name()})", "left"), ("jobs 24h", "right"),
                          ("failed 24h", "right")):
        table.add_column(name, justify=justify, no_wrap=name != "name")
    for r in rows:
        table.add_row(r["id"] if whole else r["id"][:8], Text(r["name"]),
                      f"[green]{r['status']}[/]" if r["status"] == "active" else f"[red]{r['status']}[/]",
                      show.local_time(r["created_at"], short=True), str(r["jobs_24h"]),
                      f"[red]{r['failed_24h']}[/]" if r["failed_24h"] else "0")
    show.print_whole(console, table, wide=wide)


@app.command("create")
def tenants_create(
    name: Annotated[str, typer.Argument(help="The academy's name, e.g. '해오름 수학학원'.")],
) -> None:
    """Create a tenant; prints its id."""
    from app import db, queries
    from app.cli.args import bad

    if not name.strip():
        raise bad("a tenant needs a name", "NAME")
    with db.engine().begin() as conn:
        tenant_id = queries.create_tenant(conn, name.strip())
    console.print(tenant_id)


def _set_status(ref: str, status: str) -> None:
    from app import db, queries
    from app.cli.lookup import lookup_tenant

    with db.engine().begin() as conn:
        tenant = lookup_tenant(conn, ref)
        if tenant is None:
            raise fail(f"no tenant {ref!r}")
        was = queries.set_tenant_status(conn, tenant["id"], status)
    if was == status:
        console.print(f"tenant {tenant['name']} ({tenant['id']}) was already {status}")
    else:
        console.print(f"tenant {tenant['name']} ({tenant['id']}) is now {status}")


@app.command("suspend")
def tenants_suspend(
    tenant: Annotated[str, typer.Argument(metavar="TENANT", help="Its id or exact name.")],
) -> None:
    """Suspend a tenant: its new requests are refused until it is resumed."""
    _set_status(tenant, "suspended")


@app.command("resume")
def tenants_resume(
    tenant: Annotated[str, typer.Argument(metavar="TENANT", help="Its id or exact name.")],
) -> None:
    """Make a suspended tenant active again."""
    _set_status(tenant, "active")
