"""``jobq``: the command line. Run the system, dispatch intents, look at jobs.

Exit codes scripts can trust: 0 success; 1 a failure the command reports (an unknown job, a
job that failed, a broken manifest, an unreachable database); 2 bad arguments (printed as one
line), a refused dispatch included. Each command group lives in its own module here.
"""

from __future__ import annotations

import importlib
import socket
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.text import Text
from sqlalchemy.orm import Session

app = typer.Typer(
    name="jobq",
    help="Intent-based jobs on Celery, audited in PostgreSQL.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err = Console(stderr=True)


def say_error(message: str) -> None:
    """``error: message`` on stderr, one line; the message is never read as markup."""
    err.print(Text.assemble(("error: ", "bold red"), " ".join(message.split())), soft_wrap=True)


def fail(message: str, code: int = 1) -> typer.Exit:
    say_error(message)
    return typer.Exit(code)


# --- run -----------------------------------------------------------------------------------------


def _worker_commands(celery: str) -> dict[str, str]:
    """The worker processes ``jobq run`` starts (app/ops/workers.py says which and why)."""
    from app.ops.workers import WORKERS, worker_args

    return {name: f"{celery} -A app worker {' '.join(worker_args(name))} -l INFO"
            for name in WORKERS}


#: Seconds ``jobq run`` gives its processes to stop after Ctrl-C before killing them: long
#: enough for a worker's warm shutdown to finish short jobs and for Flower to save its state.
STOP_GRACE_SECONDS = 15
@dataclass(frozen=True)
class RunSetup:
    """What a ``jobq run`` hook (and a business command) gets: the services the system uses,
    and the few operations business commands may ask of the engine
    (:class:`app.handler_api.Operations`)."""

    database_url: str
    broker_url: str | None
    home: Path
    demo: bool = False

    def session(self) -> Session:
        from app.store import db

        return Session(db.engine(self.database_url), expire_on_commit=False)

    def ensure_tenant(self, name: str) -> str:
        from app.store import db, tenants

        with db.engine(self.database_url).begin() as conn:
            found = tenants.find_tenants_by_name(conn, name)
            return found[0]["id"] if found else tenants.create_tenant(conn, name)

    def submit_many(self, session: Session, tenant_id: str,
                    requests: Sequence[tuple[str, dict[str, Any]]]) -> list[str]:
        from app.core.validation import Request
        from app.intake.submit import submit_many

        return submit_many(session, [Request(tenant_id, key, params) for key, params in requests],
                           source="cli")


def _configured_operations() -> RunSetup:
    """The operations of a business command run on its own (not under ``jobq run``)."""
    from app.core.settings import settings

    return RunSetup(settings.require_database_url(), settings.broker_url, settings.home)


def _business_commands() -> list[Any]:
    """The modules the manifest module names in ``COMMANDS`` (the demo, for one)."""
    from app.core.settings import settings

    module = importlib.import_module(settings.manifest.partition(":")[0])
    return [importlib.import_module(name) for name in getattr(module, "COMMANDS", ())]


def _sibling_command(name: str) -> str:
    """A console script installed beside this Python (the venv's), else ``python -m``."""
    beside = Path(sys.executable).with_name(name)
    if beside.exists():
        return str(beside)
    return f"{sys.executable} -m {'app.ops.cli' if name == 'jobq' else name}"


def _port_in_use(address: str, port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((address or "0.0.0.0", port))
        except OSError:
            return True
    return False


@app.command()
def run(
    demo: Annotated[bool, typer.Option(help="Create the demo academy.")] = True,
    flower: Annotated[bool, typer.Option(help="Start Flower.")] = True,
    api: Annotated[bool, typer.Option(help="Start the HTTP API (jobq api).")] = True,
) -> None:
    """Run the whole system here: database, broker, migrations, workers, beat and Flower.

    With DATABASE_URL and CELERY_BROKER_URL unset, an embedded PostgreSQL and Redis start
    under $JOBQ_HOME (default ./.jobq). One log stream; a process that stops on its own is
    started again; Ctrl-C stops everything.
    """
    import honcho.manager

    from app.core.settings import child_environment, settings
    from app.ops.cli.flower import credentials as flower_credentials
    from app.ops.supervisor import Supervisor

    if flower:  # refuse before anything starts, not after the rest is up
        if _port_in_use(settings.flower_address, settings.flower_port):
            raise fail(f"port {settings.flower_port} is taken on {settings.flower_address}: "
                       "set FLOWER_PORT to a free one, or --no-flower", 2)
        # Generated here the first time, so the summary below can show the password once.
        login = flower_credentials(settings.flower_basic_auth, settings.home)
    if api and _port_in_use(settings.api_address, settings.api_port):
        raise fail(f"port {settings.api_port} is taken on {settings.api_address}: "
                   "set JOBQ_API_PORT to a free one, or --no-api", 2)

    embedded = None
    urls = {"DATABASE_URL": settings.database_url if settings.database_url_given else None,
            "CELERY_BROKER_URL": settings.broker_url if settings.broker_url_given else None}
    if not (settings.database_url_given and settings.broker_url_given):
        from app.ops.embedded import EmbeddedServices

        console.print(f"starting the embedded services in [bold]{settings.home}[/]")
        embedded = EmbeddedServices(settings.home).start(
            postgres=not settings.database_url_given, redis=not settings.broker_url_given)
        embedded.write_urls()
        urls["DATABASE_URL"] = urls["DATABASE_URL"] or embedded.database_url
        urls["CELERY_BROKER_URL"] = urls["CELERY_BROKER_URL"] or embedded.broker_url
    # Log lines reach the shared stream as they happen (PYTHONUNBUFFERED).
    env = child_environment({**urls, "JOBQ_HOME": str(settings.home), "PYTHONUNBUFFERED": "1"})
    try:
        from app.store import db

        db.migrate(env["DATABASE_URL"])
        console.print("database migrated")
        _run_hooks(RunSetup(env["DATABASE_URL"], env["CELERY_BROKER_URL"], settings.home, demo))
        celery = _sibling_command("celery")
        procs = _worker_commands(celery)
        settings.home.mkdir(parents=True, exist_ok=True)
        procs["beat"] = (
            f"{celery} -A app beat -l INFO "
            f"--schedule {settings.home / 'celerybeat-schedule'} --pidfile="
        )
        if flower:
            procs["flower"] = f"{_sibling_command('jobq')} flower"
            console.print(login.summary(
                f"http://{settings.flower_address or '0.0.0.0'}:{settings.flower_port}/"),
                markup=False, highlight=False, soft_wrap=True)
        if api:
            procs["api"] = f"{_sibling_command('jobq')} api"
            console.print(f"API: [bold]http://{settings.api_address}:{settings.api_port}/docs[/]"
                          " (jobq keys create --tenant T makes a key)")
        honcho.manager.KILL_WAIT = STOP_GRACE_SECONDS
        manager = Supervisor()
        for name, cmd in procs.items():
            manager.add_process(name, cmd, env=env)
        manager.loop()
        code = manager.returncode or 0
    finally:
        if embedded is not None:
            embedded.stop()
    # Ctrl-C is how a user stops it: a clean stop, not an error.
    raise typer.Exit(0 if code in (130, 143) else code)


def _run_hooks(setup: RunSetup) -> None:
    """Call the ``on_run`` start-up step of the schedules and of each business command."""
    from app.ops.cli import schedules

    for name, hook in [("schedules", schedules.on_run),
                       *((m.__name__, getattr(m, "on_run", None)) for m in _business_commands())]:
        if hook is None:
            continue
        try:
            hook(setup)
        except Exception as exc:  # one broken extra must not keep the system down
            say_error(f"{name}: its start-up step failed: {exc}")


@app.command()
def migrate(revision: Annotated[str, typer.Argument(help="Target revision.")] = "head") -> None:
    """Bring the database schema up to date."""
    from app.store import db

    db.migrate(revision=revision)
    console.print(f"database at {revision}")


def _register_commands() -> None:
    # Each command group lives in its own module under app/ops/cli/. A module either adds its
    # commands itself (``register(app)``) or is one Typer group (``app``) named after it; the
    # business adds its own (the manifest module's COMMANDS).
    from app.ops.cli import (
        api,
        approvals,
        dispatch,
        flower,
        intents,
        jobs,
        keys,
        retry,
        schedules,
        stats,
        tenants,
    )

    for module in (dispatch, jobs, retry, approvals, stats, flower, api):
        module.register(app)
    app.add_typer(intents.app, name="intents")
    app.add_typer(keys.app, name="keys")
    app.add_typer(tenants.app, name="tenants")
    app.add_typer(schedules.app, name="schedules")
    for module in _business_commands():
        module.register(app, _configured_operations)


_register_commands()


def _click_exceptions():
    """Click's exception classes as this Typer raises them (recent Typer vendors Click)."""
    try:
        from typer._click import exceptions
    except ImportError:  # older Typer runs on Click itself
        from click import exceptions
    return exceptions


def main(argv: list[str] | None = None) -> None:
    """The ``jobq`` entry point: every error is one line and a trustworthy exit code."""
    from sqlalchemy.exc import OperationalError

    from app.core.settings import SettingsError
    from app.ops.embedded import EmbeddedError

    ex = _click_exceptions()
    no_args = getattr(ex, "NoArgsIsHelpError", ())
    command = typer.main.get_command(app)
    try:
        code = command.main(args=argv, prog_name="jobq", standalone_mode=False)
    except no_args as exc:  # Typer's rich help has printed itself by now
        if exc.format_message():
            console.print(exc.format_message(), markup=False, highlight=False)
        sys.exit(2)
    except ex.UsageError as exc:
        where = exc.ctx.command_path if exc.ctx else "jobq"
        say_error(f"{where}: {exc.format_message()} (see {where} --help)")
        sys.exit(2)
    except ex.ClickException as exc:
        say_error(exc.format_message())
        sys.exit(exc.exit_code)
    except (getattr(ex, "Abort", typer.Abort), typer.Abort, KeyboardInterrupt):
        sys.exit(130)
    except SettingsError as exc:
        say_error(str(exc))
        sys.exit(2)
    except EmbeddedError as exc:
        say_error(str(exc))
        sys.exit(1)
    except OperationalError as exc:
        from app.core.redaction import redact

        reason = str(exc.orig) if exc.orig else str(exc)
        say_error(f"cannot reach the database: {redact(reason)}")
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
