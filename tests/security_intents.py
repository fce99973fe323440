"""Intents only the isolation and secrets tests run (listed in tests/manifest.py): a handler that
deliberately reaches for another tenant's rows, and handlers that fail with passwords and secret
parameters in their errors and logs."""

from __future__ import annotations

import time
import uuid
from typing import Any

import psycopg2
from pydantic import Field
from sqlalchemy import text

from app.core.errors import IntentRefused, PermanentError
from app.core.manifest import IntentParams
from app.intake.submit import submit
from app.run.context import JobContext, RunAborted


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


def report_secrets(ctx: JobContext, params: SecretParams) -> dict[str, Any]:
    """Report progress whose message names the token, then echo the parameters back."""
    ctx.progress(1, 1, message=f"charged the card with token={params.api_token}")
    return params.model_dump()


class EscapeParams(IntentParams):
    other_tenant_id: uuid.UUID = Field(description="The tenant whose rows the handler wants.")
    other_student_id: uuid.UUID = Field(description="One of that tenant's students.")
    other_job_id: uuid.UUID = Field(description="That tenant's job, running meanwhile.")


#: Every way out of its tenant a handler could try on its own session, in order. ``{owner}`` is
#: the role that owns the engine's tables, which any role can read from the catalog.
ESCAPES = {
    "nothing": None,
    "reset_role": "RESET ROLE",
    "set_role_none": "SET ROLE NONE",
    "reset_session_authorization": "RESET SESSION AUTHORIZATION",
    "set_session_authorization": 'SET SESSION AUTHORIZATION "{owner}"',
    "set_role_owner": 'SET ROLE "{owner}"',
    "set_config_role": "SELECT set_config('role', '{owner}', false)",
    "set_config_tenant": "SELECT set_config('app.tenant_id', :other, false)",
    "set_local_tenant": "SELECT set_config('app.tenant_id', :other, true)",
    "bind_other_job": "SELECT jobq_bind(CAST(:other_job AS uuid), :ticket)",
    "replay_sniffed_bind": "{sniffed}",
}


def _error(exc: Exception) -> str:
    return str(getattr(exc, "orig", exc)).splitlines()[0]


def _under(ctx: JobContext, escape: str | None, probe: Any, **params: Any) -> tuple[str, Any]:
    """In a transaction of its own, as a handler would (no savepoint: SQLAlchemy binds the
    tenant again as one begins, and its end would undo a SET): the escape, then ``probe``;
    whatever got through is committed (a checkpoint). What the escape statement did ('ok' or
    PostgreSQL's refusal) and what the probe returned (or its refusal)."""
    s = ctx.session
    outcome = "ok"
    if escape is not None:
        try:
            result = s.execute(text(escape), params)
            if result.returns_rows:
                result.all()
        except Exception as exc:
            s.rollback()  # the next statement begins (and is bound) afresh
            outcome = _error(exc)
    try:
        value = probe(s)
    except Exception as exc:
        s.rollback()
        return outcome, _error(exc)
    try:
        ctx.checkpoint({"probe": "committed"})
    except RunAborted:  # its own job is out of sight now: a malicious handler commits anyway
        s.commit()
    return outcome, value


def _scalar(statement: str, **params: Any) -> Any:
    return lambda s: s.execute(text(statement), params).scalar()


def _rows(statement: str, **params: Any) -> Any:
    return lambda s: f"{s.execute(text(statement), params).rowcount} rows"


def escape_tenant(ctx: JobContext, params: EscapeParams) -> dict[str, Any]:
    """Try every escape from the tenant on its own session; under each, read and write the
    other tenant's rows as far as it can and commit what got through. Reports per escape what
    the statement did and what was seen and changed."""
    other, other_job = str(params.other_tenant_id), str(params.other_job_id)
    owner = ctx.session.execute(text(
        "SELECT tableowner FROM pg_tables WHERE tablename = 'job_executions'")).scalar()
    # Whatever the other tenant's running handler last sent, as any session of the same role
    # may read it; and a ticket made up for the other job.
    sniffed = ctx.session.execute(text(
        "SELECT query FROM pg_stat_activity WHERE pid <> pg_backend_pid() "
        "AND query ILIKE '%jobq_bind%' AND query NOT ILIKE '%pg_stat_activity%' LIMIT 1"
    )).scalar()
    report: dict[str, Any] = {"owner": owner, "sniffed": bool(sniffed)}

    def submit_for_other(name: str) -> Any:
        def probe(s) -> str:
            try:
                submit(s, tenant_id=other, intent_key="system.exec.echo",
                       intent_params={"planted_by": name}, source="fanout")
            except IntentRefused as exc:
                return str(exc)
            return "allowed"
        return probe

    for name, template in ESCAPES.items():
        escape = None
        if template is not None:
            escape = template.format(owner=owner, sniffed=sniffed or "SELECT 'no bind seen'")
        probes = {
            "user": _scalar("SELECT current_user"),
            "job_tenants": _scalar("SELECT count(DISTINCT tenant_id) FROM job_executions"),
            "tenants": _scalar("SELECT count(*) FROM tenants"),
            "other_students": _scalar("SELECT count(*) FROM students WHERE tenant_id = :o",
                                      o=other),
            "other_job_events": _scalar("SELECT count(*) FROM job_events WHERE job_id = :j",
                                        j=other_job),
            "schedules": _scalar("SELECT count(*) FROM job_schedules"),
            "alembic_version": _scalar("SELECT count(*) FROM alembic_version"),
            "rename_other_student": _rows("UPDATE students SET name = :n WHERE id = :id",
                                          n=f"hijacked by {name}",
                                          id=str(params.other_student_id)),
            "plant_other_student": _rows("INSERT INTO students (tenant_id, name) "
                                         "VALUES (:o, :n)", o=other, n=f"planted by {name}"),
            "forge_other_job": _rows("UPDATE job_executions SET error_message = :n "
                                     "WHERE id = :j", n=f"forged by {name}", j=other_job),
            "submit_for_other": submit_for_other(name),
        }
        outcomes, seen = set(), {}
        for what, probe in probes.items():
            outcome, seen[what] = _under(ctx, escape, probe, other=other, other_job=other_job,
                                         ticket="0" * 64)
            outcomes.add(outcome)
        report[name] = {"statement": " / ".join(sorted(outcomes)), "seen": seen}
    with ctx.journal() as conn:
        conn.execute(text("RESET ROLE"))
        conn.execute(text("SELECT set_config('app.tenant_id', :o, false)"), {"o": other})
        report["journal"] = {
            "user": conn.execute(text("SELECT current_user")).scalar(),
            "other_students": conn.execute(text(
                "SELECT count(*) FROM students WHERE tenant_id = :o"), {"o": other}).scalar(),
            "job_tenants": conn.execute(text(
                "SELECT count(DISTINCT tenant_id) FROM job_executions")).scalar(),
        }
    return report


class HoldParams(IntentParams):
    seconds: float = Field(5.0, ge=0, le=60, description="How long to hold the session.")


def hold_session(ctx: JobContext, params: HoldParams) -> dict[str, Any]:
    """Open the tenant's session (so it is bound) and keep it while another handler runs."""
    ctx.session.execute(text("SELECT 1")).scalar()
    ctx.progress(0, 1, "holding the session", force=True)  # the test waits for this
    deadline = time.monotonic() + params.seconds
    while time.monotonic() < deadline:
        time.sleep(0.05)
    return {"held": params.seconds}
