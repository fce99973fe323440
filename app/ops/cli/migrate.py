"""`jobq migrate`: bring the database schema up to date (``jobq run`` does it on its own)."""

from __future__ import annotations

from typing import Annotated

import typer

from app.ops.cli.common import console


def register(app: typer.Typer) -> None:
    app.command("migrate")(migrate)


def migrate(revision: Annotated[str, typer.Argument(help="Target revision.")] = "head") -> None:
    """Bring the database schema up to date."""
    from app.store import db

    db.migrate(revision=revision)
    console.print(f"database at {revision}")
