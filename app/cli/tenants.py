"""`jobq tenants`: list, create and suspend tenants (academies)."""

from __future__ import annotations

import typer

from app.cli import console

app = typer.Typer(help="Tenants (academies).", no_args_is_help=False)


@app.command("create")
def tenants_create(name: str) -> None:
    """Create a tenant; prints its id."""
    from sqlalchemy import text

    from app import db

    with db.engine().begin() as conn:
        tid = conn.execute(
            text("INSERT INTO tenants (name) VALUES (:n) RETURNING id::text"), {"n": name}
        ).scalar_one()
    console.print(tid)
