"""Guardian notices about attendance: a late arrival, and the absentees of a session."""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import and_, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from app.handler_api import JobContext, PermanentError
from handlers import periods
from handlers.attendance.params import NotifyGuardiansLateParams, SessionParams
from handlers.models import AcademyClass, AttendanceRecord, ClassSession, Enrolment, Student
from handlers.notify.recipients import academy_name, guardians_of
from handlers.notify.sending import send_for_job
from handlers.notify.templates import time_ko

#: A late arrival belongs to a session under way, started at most this long before it ...
LATE_WINDOW = dt.timedelta(hours=3)
#: ... or starting this soon after it (a clock a little off at the desk).
EARLY_WINDOW = dt.timedelta(minutes=30)


def notify_guardians_late(ctx: JobContext, params: NotifyGuardiansLateParams) -> dict:
    """Record the student as late for the session and tell the guardians when they arrived."""
    tenant = uuid.UUID(ctx.tenant_id)
    student = ctx.session.scalar(
        select(Student).where(Student.tenant_id == tenant, Student.id == params.student_id))
    if student is None:
        raise PermanentError(f"no student {params.student_id} in this academy")
    arrived = params.notify_time
    if arrived.tzinfo is None:
        arrived = arrived.replace(tzinfo=periods.zone())
    session = (_session(ctx.session, tenant, params.session_id) if params.session_id
               else _session_at(ctx.session, tenant, student.id, arrived))
    recorded = False
    if session is not None:
        # A late mark never overrides what the desk recorded (present, excused).
        result = ctx.session.execute(
            insert(AttendanceRecord)
            .values(tenant_id=tenant, session_id=session.id, student_id=student.id,
                    status="late", checked_at=arrived, source="notice")
            .on_conflict_do_update(
                index_elements=["session_id", "student_id"],
                set_={"status": "late", "checked_at": arrived, "source": "notice"},
                where=and_(AttendanceRecord.status == "absent", AttendanceRecord.source == "auto"),
            )
        )
        recorded = bool(result.rowcount)
    academy = academy_name(ctx.session, ctx.tenant_id)
    contacts = guardians_of(ctx.session, ctx.tenant_id, [student.id])
    if not contacts:
        raise PermanentError(f"student {student.name} ({student.id}) has no guardian to notify")
    sent = send_for_job(ctx, [c.notice("attendance.late", academy=academy, time=time_ko(arrived))
                              for c in contacts])
    return {"student_id": str(student.id), "session_id": session and str(session.id),
            "attendance_recorded": recorded, "notifications": sent.as_dict()}


def notify_absentees(ctx: JobContext, params: SessionParams) -> dict:
    """Tell the guardians of every student marked absent from the session."""
    tenant = uuid.UUID(ctx.tenant_id)
    session = _session(ctx.session, tenant, params.session_id)
    class_name = ctx.session.scalar(select(AcademyClass.name)
                                    .where(AcademyClass.id == session.class_id))
    absent = ctx.session.scalars(
        select(AttendanceRecord.student_id).where(
            AttendanceRecord.tenant_id == tenant, AttendanceRecord.session_id == session.id,
            AttendanceRecord.status == "absent")
    ).all()
    academy = academy_name(ctx.session, ctx.tenant_id)
    contacts = guardians_of(ctx.session, ctx.tenant_id, absent)
    sent = send_for_job(ctx, [
        c.notice("attendance.absent", academy=academy, class_name=class_name,
                 time=time_ko(session.starts_at))
        for c in contacts
    ], fail_if_nothing_delivered=False)
    return {"session_id": str(session.id), "absent": len(absent),
            "notifications": sent.as_dict()}


def _session(s: Session, tenant: uuid.UUID, session_id: uuid.UUID) -> ClassSession:
    found = s.scalar(select(ClassSession).where(ClassSession.tenant_id == tenant,
                                                ClassSession.id == session_id))
    if found is None:
        raise PermanentError(f"no class session {session_id} in this academy")
    return found


def _session_at(s: Session, tenant: uuid.UUID, student_id: uuid.UUID,
                arrived: dt.datetime) -> ClassSession | None:
    """The session of the student's classes that was under way (or about to be) on arrival."""
    return s.scalar(
        select(ClassSession)
        .join(Enrolment, and_(Enrolment.class_id == ClassSession.class_id,
                              Enrolment.student_id == student_id, Enrolment.status == "active"))
        .where(ClassSession.tenant_id == tenant, ClassSession.status != "cancelled",
               ClassSession.starts_at <= arrived + EARLY_WINDOW,
               ClassSession.starts_at >= arrived - LATE_WINDOW,
               ClassSession.ends_at >= arrived)
        .order_by(ClassSession.starts_at.desc())
        .limit(1)
    )
