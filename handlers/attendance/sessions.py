"""Closing a session's attendance, and the day's attendance summary."""

from __future__ import annotations

import uuid
from collections import defaultdict

from sqlalchemy import func, literal, or_, select
from sqlalchemy.dialects.postgresql import UUID, insert

from app.handler_api import JobContext, PermanentError
from handlers import periods
from handlers.attendance.params import DailySummaryParams, MarkUncheckedAbsentParams
from handlers.models import (
    AcademyClass,
    AttendanceRecord,
    ClassSession,
    Enrolment,
    Report,
)

STATUSES = ("present", "late", "absent", "excused")


def mark_unchecked_absent(ctx: JobContext, params: MarkUncheckedAbsentParams) -> dict:
    """At the end of a session, mark every enrolled student with no attendance record absent."""
    tenant = uuid.UUID(ctx.tenant_id)
    session = ctx.session.scalar(
        select(ClassSession).where(ClassSession.tenant_id == tenant,
                                   ClassSession.id == params.session_id).with_for_update())
    if session is None:
        raise PermanentError(f"no class session {params.session_id} in this academy")
    if session.status == "cancelled":
        raise PermanentError(f"session {session.id} was cancelled; it has no attendance")
    if session.ends_at > periods.now():
        raise PermanentError(
            f"session {session.id} ends at {session.ends_at.astimezone(periods.zone()):%H:%M}; "
            "its attendance is still open")
    day = periods.local_date(session.starts_at)
    unchecked = select(
        Enrolment.tenant_id, literal(session.id, UUID(as_uuid=True)), Enrolment.student_id,
        literal("absent"), literal("auto"),
    ).where(
        Enrolment.tenant_id == tenant, Enrolment.class_id == session.class_id,
        Enrolment.started_on <= day,
        # Active now, or ended (transferred) after the session: they were in the class then.
        or_(Enrolment.status == "active", Enrolment.ended_on >= day),
    ).distinct()
    marked = ctx.session.execute(
        insert(AttendanceRecord)
        .from_select(["tenant_id", "session_id", "student_id", "status", "source"], unchecked)
        .on_conflict_do_nothing(index_elements=["session_id", "student_id"])
    ).rowcount
    already_closed = session.attendance_closed_at is not None
    if not already_closed:
        session.attendance_closed_at = periods.now()
        session.status = "held"
    follow_up = None
    if params.notify_guardians:
        # One notice job per session, however often this runs: the idempotency key says so.
        follow_up = ctx.submit("attendance.exec.notify_absentees",
                               {"session_id": str(session.id)},
                               idempotency_key=f"absentees:{session.id}")
    return {"session_id": str(session.id), "marked_absent": marked,
            "already_closed": already_closed, "notify_job_id": follow_up}


def daily_summary(ctx: JobContext, params: DailySummaryParams) -> dict:
    """Count the day's attendance per class; store it as a ``daily_attendance`` report."""
    tenant = uuid.UUID(ctx.tenant_id)
    day = params.date or periods.job_date(ctx)
    start, end = periods.day_bounds(day)
    sessions = ctx.session.execute(
        select(ClassSession.id, ClassSession.class_id, AcademyClass.name)
        .join(AcademyClass, AcademyClass.id == ClassSession.class_id)
        .where(ClassSession.tenant_id == tenant, ClassSession.starts_at >= start,
               ClassSession.starts_at < end, ClassSession.status != "cancelled")
    ).all()
    counts = ctx.session.execute(
        select(AttendanceRecord.session_id, AttendanceRecord.status, func.count())
        .where(AttendanceRecord.tenant_id == tenant,
               AttendanceRecord.session_id.in_([s.id for s in sessions]))
        .group_by(AttendanceRecord.session_id, AttendanceRecord.status)
    ).all()
    by_session: dict[uuid.UUID, dict[str, int]] = defaultdict(dict)
    for session_id, status, n in counts:
        by_session[session_id][status] = n
    classes: dict[str, dict] = {}
    for s in sessions:
        entry = classes.setdefault(str(s.class_id), {"class": s.name, "sessions": 0,
                                                     **dict.fromkeys(STATUSES, 0)})
        entry["sessions"] += 1
        for status in STATUSES:
            entry[status] += by_session[s.id].get(status, 0)
    totals = {status: sum(c[status] for c in classes.values()) for status in STATUSES}
    checked = sum(totals.values())
    summary = {
        "date": day.isoformat(), "sessions": len(sessions), **totals,
        "attendance_rate": round(100 * (totals["present"] + totals["late"]) / checked, 1)
        if checked else None,
        "classes": sorted(classes.values(), key=lambda c: c["class"]),
    }
    ctx.session.execute(
        insert(Report)
        .values(tenant_id=tenant, kind="daily_attendance", period_start=day, period_end=day,
                scope="", summary=summary, job_id=uuid.UUID(ctx.job_id))
        .on_conflict_do_update(
            constraint="uq_reports_tenant_id_kind_period_start_period_end_scope",
            set_={"summary": summary, "job_id": uuid.UUID(ctx.job_id),
                  "created_at": func.now()})
    )
    return {k: v for k, v in summary.items() if k != "classes"}

