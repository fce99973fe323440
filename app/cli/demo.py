"""`jobq demo`: create the demo academy (데모 학원) and dispatch a sample of every intent family.

``jobq run`` calls :func:`on_run` after migrating, so the system it starts has the demo academy
to work on; creating it again adds nothing but what time has added (see :mod:`handlers.demo`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Column, Table

from app.cli import DEMO_TENANT_NAME, _ensure_demo_tenant, console, fail

if TYPE_CHECKING:
    from app.cli import RunContext


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)


def create_demo_data(database_url: str, *, students: int = 300
                     ) -> tuple[str, dict, list[tuple[str, str]], str]:
    """Ensure the demo tenant and its academy: its id, what it holds, a few students to try
    intents on and a command ready to paste."""
    from sqlalchemy.orm import Session

    from app import db
    from handlers.demo import create_demo_academy, try_it

    tenant_id = _ensure_demo_tenant(database_url)
    # The engine's own connection: it writes the demo academy's rows, each naming its tenant.
    with Session(db.engine(database_url)) as session:
        academy = create_demo_academy(session, tenant_id, students=students)
        session.commit()
        sample, command = try_it(session, tenant_id, DEMO_TENANT_NAME)
    return tenant_id, academy.as_dict(), sample, command


def _print_try_it(sample: list[tuple[str, str]], command: str) -> None:
    if not command:
        return
    console.print("students to try intents on:")
    for student_id, name in sample:
        console.print(f"  {name}  {student_id}", markup=False, highlight=False)
    console.print("try it (another terminal, this folder, the venv's jobq):")
    console.print(f"  {command}", markup=False, highlight=False, soft_wrap=True)


def on_run(context: RunContext) -> None:
    """``jobq run``'s start-up step: the demo academy exists before the workers start."""
    tenant_id, academy, sample, command = create_demo_data(context.database_url)
    console.print(f"demo tenant [bold]{DEMO_TENANT_NAME}[/] id={tenant_id}: "
                  f"{academy['students']} students, {academy['classes']} classes, "
                  f"{academy['open_invoices']} open invoices")
    _print_try_it(sample, command)


def demo(
    students: Annotated[int, typer.Option(min=1, max=5000,
                                          help="Students in the demo academy.")] = 300,
    dispatch: Annotated[bool, typer.Option(
        help="Then dispatch a sample intent of every family for it.")] = True,
) -> None:
    """Create the demo academy (classes, students and guardians, attendance, invoices) and
    dispatch a sample intent of every family for it; prints the job ids."""
    from app.settings import settings

    tenant_id, academy, sample, command = create_demo_data(settings.require_database_url(),
                                                           students=students)
    table = Table(title=f"{DEMO_TENANT_NAME} ({tenant_id})", show_header=False)
    for key, value in academy.items():
        if key != "tenant_id":
            table.add_row(key.replace("_", " "), str(value))
    console.print(table)
    if dispatch:
        _dispatch_samples(tenant_id)
    _print_try_it(sample, command)


#: Modules whose ``sample_requests(session, tenant_id)`` give the samples of their families.
SAMPLE_SOURCES = ("handlers.demo", "handlers.student.samples", "handlers.communication.samples",
                  "handlers.report.samples")


def _dispatch_samples(tenant_id: str) -> None:
    import importlib

    from app import db
    from app.dispatch import Request, submit_many
    from app.errors import IntentRefused
    from app.registry import manifest

    with db.session() as session:
        samples = [(key, params) for source in SAMPLE_SOURCES
                   for key, params in importlib.import_module(source).sample_requests(
                       session, tenant_id)
                   if key in manifest]
        try:
            ids = submit_many(session, [Request(tenant_id, key, params)
                                        for key, params in samples], source="cli")
        except IntentRefused as exc:
            session.commit()  # keep the refusal's audit row
            raise fail(f"a sample was refused: {exc}") from None
        session.commit()
    table = Table(Column("job id", no_wrap=True, min_width=36), "intent", "queue")
    for job_id, (key, _) in zip(ids, samples, strict=True):
        intent = manifest.get(key)
        table.add_row(job_id, key, intent.queue if intent else "")
    console.print(table)
    families = sorted({key.split(".")[0] for key, _ in samples})
    console.print(f"dispatched {len(ids)} jobs ({', '.join(families)}); "
                  "a running worker (`jobq run`) takes them")
