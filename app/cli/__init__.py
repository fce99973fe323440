"""``jobq``: the command line. Run the system, dispatch intents, look at jobs.

Exit codes scripts can trust: 0 success; 1 a failure the command reports (an unknown job, a
job that failed, a broken manifest, an unreachable database); 2 bad arguments (printed as one
line), a refused dispatch included. Each command group lives in its own module here.
"""

from __future__ import annotations

import importlib
import os
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.text import Text

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


def say_error(message: str) -> None:
    """``error: message`` on stderr, one line; the message is never read as markup."""
    err.print(Text.assemble(("error: ", "bold red"), " ".join(message.split())), soft_wrap=True)


def fail(message: str, code: int = 1) -> typer.Exit:
    say_error(message)
    return typer.Exit(code)


# --- run -----------------------------------------------------------------------------------------


def _worker_commands(celery: str) -> dict[str, str]:
    """The worker processes ``jobq run`` starts (app/workers.py says which and why)."""
    from app.workers import WORKERS, worker_args

    return {name: f"{celery} -A app worker {' '.join(worker_args(name))} -l INFO"
            for name in WORKERS}


#: Seconds ``jobq run`` gives its processes to stop after Ctrl-C before killing them: long
#: enough for a worker's warm shutdown to finish short jobs and for Flower to save its state.
STOP_GRACE_SECONDS = 15
#: Modules of other command groups whose ``on_run(RunContext)`` hook ``jobq run`` calls after
#: migrating, when they exist (``demo`` only with ``--demo``).
RUN_HOOKS = ("schedules", "demo")


@dataclass(frozen=True)
class RunContext:
    """What a ``jobq run`` hook gets: the services the system is about to use."""

    database_url: str
    broker_url: str
    home: Path
    demo: bool


def _sibling_command(name: str) -> str:
    """A console script installed beside this Python (the venv's), else ``python -m``."""
    beside = Path(sys.executable).with_name(name)
    if beside.exists():
        return str(beside)
    return f"{sys.executable} -m {'app.cli' if name == 'jobq' else name}"


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
) -> None:
    """Run the whole system here: database, broker, migrations, workers, beat and Flower.

    With DATABASE_URL and CELERY_BROKER_URL unset, an embedded PostgreSQL and Redis start
    under $JOBQ_HOME (default ./.jobq). One log stream; Ctrl-C stops everything.
    """
    import honcho.manager
    from honcho.manager import Manager

    from app.cli.flower import exposure_problem
    from app.settings import settings

    if flower:  # refuse before anything starts, not after the rest is up
        problem = exposure_problem(settings.flower_address, settings.flower_basic_auth)
        if problem:
            raise fail(problem, 2)
        if _port_in_use(settings.flower_address, settings.flower_port):
            raise fail(f"port {settings.flower_port} is taken on {settings.flower_address}: "
                       "set FLOWER_PORT to a free one, or --no-flower", 2)

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
    env["JOBQ_HOME"] = str(settings.home)
    env["PYTHONUNBUFFERED"] = "1"  # log lines reach the shared stream as they happen
    try:
        from app import db

        db.migrate(env["DATABASE_URL"])
        console.print("database migrated")
        context = RunContext(env["DATABASE_URL"], env["CELERY_BROKER_URL"], settings.home, demo)
        hooked = _run_hooks(context)
        if demo and "demo" not in hooked:
            tenant_id = _ensure_demo_tenant(env["DATABASE_URL"])
            console.print(f"demo tenant [bold]{DEMO_TENANT_NAME}[/] id={tenant_id}")
        celery = _sibling_command("celery")
        procs = _worker_commands(celery)
        settings.home.mkdir(parents=True, exist_ok=True)
        procs["beat"] = (
            f"{celery} -A app beat -l INFO "
            f"--schedule {settings.home / 'celerybeat-schedule'} --pidfile="
        )
        if flower:
            procs["flower"] = f"{_sibling_command('jobq')} flower"
            console.print(
                f"Flower: [bold]http://{settings.flower_address}:{settings.flower_port}/[/]"
            )
        honcho.manager.KILL_WAIT = STOP_GRACE_SECONDS
        manager = Manager()
        for name, cmd in procs.items():
            manager.add_process(name, cmd, env=env)
        manager.loop()
        code = manager.returncode or 0
    finally:
        if embedded is not None:
            embedded.stop()
    # Ctrl-C is how a user stops it: a clean stop, not an error.
    raise typer.Exit(0 if code in (130, 143) else code)


def _run_hooks(context: RunContext) -> set[str]:
    """Call ``on_run`` of the command modules that have one; the names of those called."""
    called = set()
    for name in RUN_HOOKS:
        if name == "demo" and not context.demo:
            continue
        module = _optional_module(name)
        hook = getattr(module, "on_run", None)
        if hook is None:
            continue
        try:
            hook(context)
        except Exception as exc:  # one broken extra must not keep the system down
            say_error(f"jobq {name}: its start-up step failed: {exc}")
        called.add(name)
    return called


def _optional_module(name: str):
    try:
        return importlib.import_module(f"app.cli.{name}")
    except ModuleNotFoundError as exc:
        if exc.name != f"app.cli.{name}":
            raise
        return None


def _ensure_demo_tenant(url: str) -> str:
    from app import db, queries

    with db.engine(url).begin() as conn:
        found = queries.find_tenants_by_name(conn, DEMO_TENANT_NAME)
        if found:
            return found[0]["id"]
        return queries.create_tenant(conn, DEMO_TENANT_NAME)


@app.command()
def migrate(revision: Annotated[str, typer.Argument(help="Target revision.")] = "head") -> None:
    """Bring the database schema up to date."""
    from app import db

    db.migrate(revision=revision)
    console.print(f"database at {revision}")


def _register_commands() -> None:
    # Each command group lives in its own module under app/cli/. A module either adds its
    # commands itself (``register(app)``) or is one Typer group (``app``) named after it.
    from app.cli import dispatch, flower, intents, jobs, retry, stats, tenants

    for module in (dispatch, jobs, retry, stats, flower):
        module.register(app)
    app.add_typer(intents.app, name="intents")
    app.add_typer(tenants.app, name="tenants")
    for name in RUN_HOOKS:  # written by others; present or not
        module = _optional_module(name)
        if module is None:
            continue
        if hasattr(module, "register"):
            module.register(app)
        elif isinstance(getattr(module, "app", None), typer.Typer):
            app.add_typer(module.app, name=name)


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

    from app.embedded import EmbeddedError
    from app.settings import SettingsError

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
        from app.redaction import redact_text

        reason = str(exc.orig) if exc.orig else str(exc)
        say_error(f"cannot reach the database: {redact_text(reason)}")
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
