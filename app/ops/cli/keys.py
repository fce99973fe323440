"""`jobq keys`: the HTTP API's keys. A key is shown once, when it is made; only its hash is kept."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from app.ops.cli import show
from app.ops.cli.args import actor, bad
from app.ops.cli.common import console, err, fail
from app.ops.cli.lookup import find_tenant
from app.store import apikeys, db

app = typer.Typer(help="API keys of the HTTP API (jobq api): create, list, revoke.",
                  no_args_is_help=True)

TenantOption = Annotated[str | None, typer.Option(
    "--tenant", "-t", help="The tenant (id, its first 8 characters, or exact name).")]


def _tenant_id(tenant: str | None, operator: bool) -> str | None:
    if operator and tenant:
        raise bad("an operator key spans tenants: give --tenant or --operator, not both",
                  "--operator")
    if not operator and not tenant:
        raise bad("name the tenant the key acts for (--tenant T), or make an operator key "
                  "(--operator)", "--tenant")
    if operator:
        return None
    with db.engine().connect() as conn:
        return find_tenant(conn, tenant or "")["id"]


@app.command("create")
def create(
    tenant: TenantOption = None,
    name: Annotated[str, typer.Option("--name", "-n", help="What the key is for: web, app, ... "
                                      "(named in job histories as api:NAME).")] = "web",
    scopes: Annotated[str, typer.Option(
        "--scopes", "-s",
        help="Comma-separated: jobs:read, jobs:write, jobs:approve; metrics:read, tenants:write (operator "
             "keys only).")
    ] = "jobs:read,jobs:write",
    operator: Annotated[bool, typer.Option(
        "--operator", help="A key spanning tenants (each request names its tenant in the "
                           "X-Jobq-Tenant header).")] = False,
    rate: Annotated[float | None, typer.Option(
        "--rate", min=0, help="Requests per second (0: no limit); default JOBQ_API_RATE_LIMIT.")
    ] = None,
) -> None:
    """Make an API key; prints it once (only its hash is kept)."""
    from app.api.keys import KeyRefused
    from app.api.keys import create as create_key

    tenant_id = _tenant_id(tenant, operator)
    try:
        made = create_key(tenant_id=tenant_id, name=name,
                          scopes=[s.strip() for s in scopes.split(",") if s.strip()],
                          by=actor(), rate_limit=rate)
    except KeyRefused as refused:
        raise fail(str(refused), 2) from None
    typer.echo(made.secret)
    err.print(f"key {made.name!r} ({', '.join(made.scopes)}) for "
              f"{'every tenant (operator)' if tenant_id is None else 'tenant ' + tenant_id}: "
              "shown this once; store it now", soft_wrap=True, style="dim")


@app.command("list")
def list_keys(
    tenant: TenantOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="As JSON.")] = False,
) -> None:
    """API keys, newest first (never their secrets)."""
    tenant_id = _tenant_id(tenant, False) if tenant else None
    with db.engine().connect() as conn:
        found = apikeys.list_keys(conn, tenant_id)
    if as_json:
        typer.echo(json.dumps(found, default=str, ensure_ascii=False))
        return
    # In the academies' zone, like every other time jobq shows, and named in the header.
    zone = show.zone_name()
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("name", "tenant", "key", "scopes", f"created ({zone})", f"last used ({zone})",
                   "state"):
        table.add_column(column, no_wrap=column != "scopes")
    for k in found:
        table.add_row(k["name"], k["tenant_name"] or "(operator)", f"jq_{k['prefix']}…",
                      ",".join(k["scopes"]), show.local_time(k["created_at"], zone=False),
                      show.local_time(k["last_used_at"], zone=False) if k["last_used_at"]
                      else "never",
                      "revoked" if k["revoked_at"] else "live")
    show.print_whole(console, table)


@app.command("revoke")
def revoke(
    name: Annotated[str, typer.Argument(help="The key's name.")],
    tenant: TenantOption = None,
    operator: Annotated[bool, typer.Option("--operator", help="An operator key.")] = False,
) -> None:
    """Revoke a key: its next request is refused (401)."""
    tenant_id = _tenant_id(tenant, operator)
    with db.engine().begin() as conn:
        revoked = apikeys.revoke_key(conn, tenant_id=tenant_id, name=name)
    if revoked is None:
        raise fail(f"no live key named {name!r} here (`jobq keys list`)")
    console.print(f"key {name!r} revoked")
