"""``jobq``: the command line. Run the system, dispatch intents, look at jobs.

Exit codes: 0 success, 1 a failure the command reports (an unknown job, a broken manifest),
2 bad arguments.
"""

from __future__ import annotations

import os
import shutil
import sys
from typing import Annotated

import typer
from rich.console import Console

app = typer.Typer(
    name="jobq",
    help="Intent-based jobs on Celery, audited in PostgreSQL.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err = Console(stderr=True)

DEMO_TENANT_NAME = "데모 학원"


def fail(message: str, code: int = 1) -> typer.Exit:
    err.print(f"[bold red]error:[/] {message}")
    return typer.Exit(code)


# --- run -----------------------------------------------------------------------------------------


def _worker_commands(celery: str) -> dict[str, str]:
    """The worker processes ``jobq run`` starts: urgent work never queues behind bulk work."""
    return {
        "worker": f"{celery} -A app worker -P prefork -c 2 -n realtime@%h "
        "-Q celery,dispatch,realtime,maintenance --without-gossip --without-mingle -l INFO",
        "bulk": f"{celery} -A app worker -P prefork -c 1 -n bulk@%h -Q bulk "
        "--without-gossip --without-mingle -l INFO",
    }


@app.command()
def run(
    demo: Annotated[bool, typer.Option(help="Create the demo academy.")] = True,
    flower: Annotated[bool, typer.Option(help="Start Flower.")] = True,
) -> None:
    """Run the whole system here: database, broker, migrations, workers, beat and Flower.

    With DATABASE_URL and CELERY_BROKER_URL unset, an embedded PostgreSQL and Redis start
    under $JOBQ_HOME (default ./.jobq). Ctrl-C stops everything.
    """
    from honcho.manager import Manager

    from app.settings import settings

    embedded = None
    env = dict(os.environ)
    if not os.environ.get("DATABASE_URL") or not os.environ.get("CELERY_BROKER_URL"):
        from app.embedded import EmbeddedServices

        console.print(f"starting the embedded services in [bold]{settings.home}[/]")
        embedded = EmbeddedServices(settings.home).start(
            postgres=not os.environ.get("DATABASE_URL"),
            redis=not os.environ.get("CELERY_BROKER_URL"),
        )
        embedded.write_urls()
        env["DATABASE_URL"] = os.environ.get("DATABASE_URL") or embedded.database_url
        env["CELERY_BROKER_URL"] = os.environ.get("CELERY_BROKER_URL") or embedded.broker_url
    try:
        from app import db

        db.migrate(env["DATABASE_URL"])
        console.print("database migrated")
        if demo:
            tenant_id = _ensure_demo_tenant(env["DATABASE_URL"])
            console.print(f"demo tenant [bold]{DEMO_TENANT_NAME}[/] id={tenant_id}")
        celery = shutil.which("celery") or f"{sys.executable} -m celery"
        procs = _worker_commands(celery)
        settings.home.mkdir(parents=True, exist_ok=True)
        procs["beat"] = (
            f"{celery} -A app beat -l INFO "
            f"--schedule {settings.home / 'celerybeat-schedule'} --pidfile="
        )
        if flower:
            procs["flower"] = (
                f"{celery} -A app flower --address={settings.flower_address} "
                f"--port={settings.flower_port} --persistent=True "
                f"--db={settings.home / 'flower.db'}"
            )
            console.print(
                f"Flower: [bold]http://{settings.flower_address}:{settings.flower_port}/[/]"
            )
        manager = Manager()
        for name, cmd in procs.items():
            manager.add_process(name, cmd, env=env)
        manager.loop()
        code = manager.returncode or 0
    finally:
        if embedded is not None:
            embedded.stop()
    raise typer.Exit(code)


def _ensure_demo_tenant(url: str) -> str:
    from sqlalchemy import text

    from app import db

    with db.engine(url).begin() as conn:
        found = conn.execute(
            text("SELECT id::text FROM tenants WHERE name = :n ORDER BY created_at LIMIT 1"),
            {"n": DEMO_TENANT_NAME},
        ).scalar()
        if found:
            return found
        return conn.execute(
            text("INSERT INTO tenants (name) VALUES (:n) RETURNING id::text"),
            {"n": DEMO_TENANT_NAME},
        ).scalar_one()


@app.command()
def migrate(revision: Annotated[str, typer.Argument(help="Target revision.")] = "head") -> None:
    """Bring the database schema up to date."""
    from app import db

    db.migrate(revision=revision)
    console.print(f"database at {revision}")


def _register_commands() -> None:
    # Each command group lives in its own module under app/cli/.
    from app.cli import intents, tenants

    app.add_typer(intents.app, name="intents")
    app.add_typer(tenants.app, name="tenants")


_register_commands()


def main() -> None:
    try:
        app()
    except Exception as exc:  # settings and connection problems: one clear line
        from app.settings import SettingsError

        if isinstance(exc, SettingsError):
            err.print(f"[bold red]error:[/] {exc}")
            sys.exit(2)
        raise


if __name__ == "__main__":
    main()
