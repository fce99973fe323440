"""A class's sessions: generated from its timetable, and moved with notice to guardians."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence

from sqlalchemy import or_, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from app.handler_api import JobContext, PermanentError
from handlers import periods
from handlers.classes.params import GenerateTermSessionsParams, NotifyScheduleChangeParams
from handlers.models import AcademyClass, ClassSession, Enrolment, Term, TimetableSlot
from handlers.notify.recipients import academy_name, guardians_of
from handlers.notify.sending import send_for_job
from handlers.notify.templates import date_ko, time_ko, with_ro


def sessions_from_timetable(session: Session, tenant_id: str, classes: Sequence[AcademyClass],
                            first: dt.date, last: dt.date, term_id: uuid.UUID | None) -> int:
    """Insert each class's sessions for the days ``first..last``; how many were new."""
    tenant = uuid.UUID(str(tenant_id))
    slots = session.scalars(select(TimetableSlot).where(
        TimetableSlot.tenant_id == tenant,
        TimetableSlot.class_id.in_([c.id for c in classes]))).all()
    rooms = {c.id: c.room for c in classes}
    rows = []
    day = first
    while day <= last:
        for slot in slots:
            if slot.weekday == day.weekday():
                rows.append({
                    "tenant_id": tenant, "class_id": slot.class_id, "term_id": term_id,
                    "starts_at": periods.at_local(day, slot.starts_at),
                    "ends_at": periods.at_local(day, slot.ends_at),
                    "room": slot.room or rooms.get(slot.class_id),
                })
        day += dt.timedelta(days=1)
    created = 0
    for start in range(0, len(rows), 1000):
        created += session.execute(
            insert(ClassSession).values(rows[start:start + 1000])
            .on_conflict_do_nothing(index_elements=["class_id", "starts_at"])
        ).rowcount
    return created


def generate_term_sessions(ctx: JobContext, params: GenerateTermSessionsParams) -> dict:
    """Create the term's sessions from each class's weekly timetable (existing ones stay)."""
    tenant = uuid.UUID(ctx.tenant_id)
    term = ctx.session.scalar(select(Term).where(Term.tenant_id == tenant,
                                                 Term.id == params.term_id))
    if term is None:
        raise PermanentError(f"no term {params.term_id} in this academy")
    if term.status == "closed":
        raise PermanentError(f"term {term.name} is closed")
    query = select(AcademyClass).where(AcademyClass.tenant_id == tenant,
                                       AcademyClass.status == "active")
    if params.class_id is not None:
        query = query.where(AcademyClass.id == params.class_id)
    else:
        # Classes of this term, and classes that run all year.
        query = query.where(or_(AcademyClass.term_id == term.id, AcademyClass.term_id.is_(None)))
    classes = ctx.session.scalars(query).all()
    if params.class_id is not None and not classes:
        raise PermanentError(f"no active class {params.class_id} in this academy")
    created = sessions_from_timetable(ctx.session, ctx.tenant_id, classes, term.starts_on,
                                      term.ends_on, term.id)
    return {"term": term.name, "classes": len(classes), "sessions_created": created}


def notify_schedule_change(ctx: JobContext, params: NotifyScheduleChangeParams) -> dict:
    """Move a session (if asked) and tell every enrolled student's guardians."""
    tenant = uuid.UUID(ctx.tenant_id)
    klass = ctx.session.scalar(select(AcademyClass).where(AcademyClass.tenant_id == tenant,
                                                          AcademyClass.id == params.class_id))
    if klass is None:
        raise PermanentError(f"no class {params.class_id} in this academy")
    change = params.message
    moved = None
    if params.session_id is not None and params.new_starts_at is not None:
        moved, composed = _move(ctx.session, klass, params.session_id, params.new_starts_at,
                                params.new_ends_at)
        change = change or composed
    assert change is not None
    students = ctx.session.scalars(select(Enrolment.student_id).where(
        Enrolment.tenant_id == tenant, Enrolment.class_id == klass.id,
        Enrolment.status == "active")).all()
    academy = academy_name(ctx.session, ctx.tenant_id)
    contacts = guardians_of(ctx.session, ctx.tenant_id, students, primary_only=False)
    sent = send_for_job(ctx, [c.notice("class.schedule_change", academy=academy,
                                       class_name=klass.name, change=change)
                              for c in contacts], fail_if_nothing_delivered=False)
    return {"class_id": str(klass.id), "students": len(students), "session_moved": moved,
            "notifications": sent.as_dict()}


def _move(s: Session, klass: AcademyClass, session_id: uuid.UUID, starts: dt.datetime,
          ends: dt.datetime | None) -> tuple[bool, str]:
    """Move the session; whether it moved now (False: it was moved already), and the notice."""
    found = s.scalar(select(ClassSession).where(ClassSession.class_id == klass.id,
                                                ClassSession.id == session_id).with_for_update())
    if found is None:
        raise PermanentError(f"no session {session_id} of class {klass.name}")
    if starts.tzinfo is None:
        starts = starts.replace(tzinfo=periods.zone())
    if ends is None:
        ends = starts + (found.ends_at - found.starts_at)
    elif ends.tzinfo is None:
        ends = ends.replace(tzinfo=periods.zone())
    if ends <= starts:
        raise PermanentError("new_ends_at must be after new_starts_at")
    old = found.starts_at
    moved = old != starts
    if moved:
        found.starts_at, found.ends_at = starts, ends
    composed = (
        f"{date_ko(periods.local_date(old))} {time_ko(old)} 수업이 "
        f"{with_ro(date_ko(periods.local_date(starts)) + ' ' + time_ko(starts))} 변경되었습니다."
        if moved else
        f"{date_ko(periods.local_date(starts))} 수업은 {time_ko(starts)}에 시작합니다."
    )
    return moved, composed
