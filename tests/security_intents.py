"""Intents only the isolation and secrets tests run (listed in tests/manifest.py): a handler that
deliberately reaches for another tenant's rows, and handlers that fail with passwords and secret
parameters in their errors and logs."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg2
from pydantic import Field
from sqlalchemy import text

from app.context import JobContext
from app.dispatch import submit
from app.errors import IntentRefused, PermanentError
from app.manifest import IntentParams


class SnoopParams(IntentParams):
    other_tenant_id: uuid.UUID = Field(description="The tenant whose rows the handler wants.")
    other_student_id: uuid.UUID = Field(description="One of that tenant's students.")
    other_job_id: uuid.UUID = Field(description="One of that tenant's jobs.")


def _refused(ctx: JobContext, statement: str, **params: Any) -> str:
    """Run ``statement`` in a savepoint; what PostgreSQL said when it refused, or 'allowed'."""
    try:
        with ctx.session.begin_nested():
            result = ctx.session.execute(text(statement), params)
            return f"allowed ({result.rowcount} rows)"
    except Exception as exc:
        return str(getattr(exc, "orig", exc)).splitlines()[0]


def snoop_other_tenant(ctx: JobContext, params: SnoopParams) -> dict[str, Any]:
    """Read and write another tenant's rows every way a handler could; report what happened."""
    s, other = ctx.session, str(params.other_tenant_id)

    def scalar(statement: str, **kw: Any) -> Any:
        return s.execute(text(statement), {"other": other, **kw}).scalar()

    seen = {
        "role": scalar("SELECT current_user"),
        "other_students": scalar("SELECT count(*) FROM students WHERE tenant_id = :other"),
        "other_student_by_id": scalar("SELECT count(*) FROM students WHERE id = :id",
                                      id=str(params.other_student_id)),
        "student_tenants": scalar("SELECT count(DISTINCT tenant_id) FROM students"),
        "tenants": scalar("SELECT count(*) FROM tenants"),
        "other_tenant": scalar("SELECT count(*) FROM tenants WHERE id = :other"),
        "other_jobs": scalar("SELECT count(*) FROM job_executions WHERE tenant_id = :other"),
        "other_job_events": scalar("SELECT count(*) FROM job_events WHERE job_id = :id",
                                   id=str(params.other_job_id)),
        "job_tenants": scalar("SELECT count(DISTINCT tenant_id) FROM job_executions"),
        "guardians_joined": scalar(
            "SELECT count(*) FROM student_guardians sg JOIN guardians g ON g.id = sg.guardian_id "
            "WHERE g.tenant_id = :other"),
    }
    writes = {
        "update_other": _refused(ctx, "UPDATE students SET name = 'hijacked' WHERE tenant_id = :o",
                                 o=other),
        "delete_other": _refused(ctx, "DELETE FROM students WHERE id = :id",
                                 id=str(params.other_student_id)),
        "insert_other": _refused(ctx, "INSERT INTO students (tenant_id, name) VALUES (:o, 'planted')",
                                 o=other),
        "move_own_to_other": _refused(ctx, "UPDATE students SET tenant_id = :o "
                                           "WHERE tenant_id = :own", o=other, own=ctx.tenant_id),
        "event_on_other_job": _refused(ctx, "INSERT INTO job_events (job_id, kind) "
                                            "VALUES (:id, 'forged')", id=str(params.other_job_id)),
        "fail_other_job": _refused(ctx, "UPDATE job_executions SET status = 'failed' WHERE id = :id",
                                   id=str(params.other_job_id)),
        "delete_own_job": _refused(ctx, "DELETE FROM job_executions WHERE id = :id", id=ctx.job_id),
        "suspend_own_tenant": _refused(ctx, "UPDATE tenants SET status = 'suspended' "
                                            "WHERE id = :own", own=ctx.tenant_id),
    }
    try:
        with s.begin_nested():
            submit(s, tenant_id=other, intent_key="system.exec.echo", source="fanout")
        writes["submit_for_other"] = "allowed"
    except IntentRefused as exc:
        writes["submit_for_other"] = str(exc)
    with ctx.journal() as conn:
        seen["journal_role"] = conn.execute(text("SELECT current_user")).scalar()
        seen["journal_other_students"] = conn.execute(
            text("SELECT count(*) FROM students WHERE tenant_id = :o"), {"o": other}).scalar()
    # Its own tenant's work goes on as usual, and commits with the job's completion.
    s.execute(text("INSERT INTO students (tenant_id, name) VALUES (:own, '정상 학생')"),
              {"own": ctx.tenant_id})
    return {"seen": seen, "writes": writes}


class LeakParams(IntentParams):
    url: str = Field(description="A database URL with a password, which cannot be reached.")


def connect_with_password(ctx: JobContext, params: LeakParams) -> None:
    """Log the URL it connects to, fail to connect, and fail with the URL in the message."""
    ctx.log.warning("connecting to the reporting database at %s", params.url)
    try:
        psycopg2.connect(params.url, connect_timeout=2).close()
    except psycopg2.OperationalError as exc:
        raise PermanentError(f"reporting database {params.url} unreachable: {exc}") from exc
    raise PermanentError(f"reporting database {params.url} should not have answered")


class SecretParams(IntentParams):
    card_number: str = Field(description="Declared secret in the manifest.")
    api_token: str = Field(description="Secret by its name.")
    note: str = ""
    fail: bool = Field(False, description="Fail with a database error carrying the secret.")


def use_secrets(ctx: JobContext, params: SecretParams) -> dict[str, Any]:
    """Echo the parameters back, or fail in a statement whose parameters hold the secrets."""
    ctx.log.info("charging the card for %s", params.note)
    if params.fail:
        ctx.session.execute(text("SELECT 1 / 0 WHERE :card IS NOT NULL AND :token IS NOT NULL"),
                            {"card": params.card_number, "token": params.api_token})
    return params.model_dump()
