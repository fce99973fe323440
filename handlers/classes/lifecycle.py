"""The end of things: closing a term, archiving a class."""

from __future__ import annotations

import uuid

from sqlalchemy import select, update

from app.handler_api import JobContext, PermanentError
from handlers import periods
from handlers.classes.params import ArchiveClassParams, CloseTermParams
from handlers.models import AcademyClass, ClassSession, Enrolment, Term


def close_term(ctx: JobContext, params: CloseTermParams) -> dict:
    """Close the term: its classes' enrolments end, its sessions still ahead are cancelled."""
    tenant = uuid.UUID(ctx.tenant_id)
    term = ctx.session.scalar(select(Term).where(Term.tenant_id == tenant,
                                                 Term.id == params.term_id).with_for_update())
    if term is None:
        raise PermanentError(f"no term {params.term_id} in this academy")
    if term.status == "closed":
        return {"term": term.name, "already_closed": True, "enrolments_ended": 0,
                "sessions_cancelled": 0}
    closing = periods.job_time(ctx)
    ended_on = min(term.ends_on, periods.local_date(closing))
    term_classes = select(AcademyClass.id).where(AcademyClass.tenant_id == tenant,
                                                 AcademyClass.term_id == term.id)
    ended = ctx.session.execute(
        update(Enrolment)
        .where(Enrolment.tenant_id == tenant, Enrolment.status == "active",
               Enrolment.class_id.in_(term_classes))
        .values(status="ended", ended_on=ended_on)
    ).rowcount
    cancelled = ctx.session.execute(
        update(ClassSession)
        .where(ClassSession.tenant_id == tenant, ClassSession.term_id == term.id,
               ClassSession.status == "scheduled", ClassSession.starts_at > closing)
        .values(status="cancelled", note="학기 종료")
    ).rowcount
    term.status = "closed"
    term.closed_at = periods.now()
    return {"term": term.name, "already_closed": False, "enrolments_ended": ended,
            "sessions_cancelled": cancelled}


def archive_class(ctx: JobContext, params: ArchiveClassParams) -> dict:
    """Archive the class: enrolments end today, sessions still ahead are cancelled."""
    tenant = uuid.UUID(ctx.tenant_id)
    klass = ctx.session.scalar(select(AcademyClass).where(
        AcademyClass.tenant_id == tenant, AcademyClass.id == params.class_id).with_for_update())
    if klass is None:
        raise PermanentError(f"no class {params.class_id} in this academy")
    if klass.status == "archived":
        return {"class": klass.name, "already_archived": True, "enrolments_ended": 0,
                "sessions_cancelled": 0}
    when = periods.job_time(ctx)
    ended = ctx.session.execute(
        update(Enrolment)
        .where(Enrolment.class_id == klass.id, Enrolment.status == "active")
        .values(status="ended", ended_on=periods.local_date(when))
    ).rowcount
    cancelled = ctx.session.execute(
        update(ClassSession)
        .where(ClassSession.class_id == klass.id, ClassSession.status == "scheduled",
               ClassSession.starts_at > when)
        .values(status="cancelled", note="반 폐강")
    ).rowcount
    klass.status = "archived"
    klass.archived_at = periods.now()
    return {"class": klass.name, "already_archived": False, "enrolments_ended": ended,
            "sessions_cancelled": cancelled}
