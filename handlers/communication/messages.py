"""A single message to a guardian (or a student's guardians), and the daily digest: each
guardian's account of their child's day at the academy."""

from __future__ import annotations

import datetime as dt
import uuid
from collections import defaultdict
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from app.handler_api import JobContext, PermanentError
from handlers import periods
from handlers.communication.params import DailyDigestParams, SendMessageParams
from handlers.communication.ratelimit import send_at_rate
from handlers.models import (
    AcademyClass,
    AttendanceRecord,
    ClassSession,
    Guardian,
    Invoice,
    Student,
    StudentGuardian,
)
from handlers.notify.recipients import academy_name, channel_and_address, guardians_of
from handlers.notify.sending import Outgoing, send_for_job
from handlers.notify.templates import date_ko, month_ko, render, time_ko, won

DIGEST_TEMPLATE = "communication.digest"
STATUS_KO = {"present": "출석", "late": "지각", "absent": "결석", "excused": "사유 결석"}
#: The digest mentions open invoices falling due within this many days after the day.
DUE_SOON_DAYS = 3


def send_message(ctx: JobContext, params: SendMessageParams) -> dict[str, Any]:
    """One message to a guardian, or to a student's guardians, sent once per job.

    It does not draw from the channel's send rate: a single message is not what floods a
    gateway, and it must not queue behind a broadcast's reserved tokens.
    """
    tenant = uuid.UUID(ctx.tenant_id)
    academy = academy_name(ctx.session, ctx.tenant_id)
    rendered = render("communication.message", academy=academy, title=params.title,
                      text=params.message)
    if params.guardian_id is not None:
        guardian = ctx.session.scalar(select(Guardian).where(Guardian.tenant_id == tenant,
                                                             Guardian.id == params.guardian_id))
        if guardian is None:
            raise PermanentError(f"no guardian {params.guardian_id} in this academy")
        pairs = [(guardian, None)]
    else:
        student = ctx.session.scalar(select(Student).where(Student.tenant_id == tenant,
                                                           Student.id == params.student_id))
        if student is None:
            raise PermanentError(f"no student {params.student_id} in this academy")
        query = (select(Guardian).join(StudentGuardian, StudentGuardian.guardian_id == Guardian.id)
                 .where(StudentGuardian.student_id == student.id).order_by(Guardian.name))
        if not params.all_guardians:
            query = query.where(StudentGuardian.is_primary)
        pairs = [(g, str(student.id)) for g in ctx.session.scalars(query)]
        if not pairs:
            raise PermanentError(f"student {student.name} ({student.id}) has no guardian")
    outgoing = []
    for guardian, student_id in pairs:
        channel, address = _address(guardian, params.channel)
        outgoing.append(Outgoing(
            recipient=f"{guardian.id}:{student_id}" if student_id else str(guardian.id),
            channel=channel, address=address, rendered=rendered, guardian_id=str(guardian.id),
            student_id=student_id))
    sent = send_for_job(ctx, outgoing)
    return {"recipients": len(outgoing), "notifications": sent.as_dict()}


def _address(guardian: Guardian, channel: str | None) -> tuple[str, str | None]:
    if channel is None:
        return channel_and_address(guardian)
    address = {"kakao": guardian.kakao_id or guardian.phone, "sms": guardian.phone,
               "email": guardian.email}[channel]
    if not address:
        raise PermanentError(f"guardian {guardian.name} ({guardian.id}) has no {channel} address")
    return channel, address


# --- the daily digest -------------------------------------------------------------------------

_DIGESTS_SENT = text(
    """
    SELECT recipient FROM notifications
     WHERE tenant_id = CAST(:tenant_id AS uuid) AND template = :template AND status = 'sent'
       AND recipient = ANY(:recipients)
    """
)


def daily_digest(ctx: JobContext, params: DailyDigestParams) -> dict[str, Any]:
    """Tell each primary guardian about their child's day: attendance, fees falling due.

    A guardian gets one digest per child and day, whichever job (a schedule's, a manual one)
    sends it first.
    """
    day = params.date or periods.job_date(ctx)
    lines = _digest_lines(ctx.session, uuid.UUID(ctx.tenant_id), day)
    academy = academy_name(ctx.session, ctx.tenant_id)
    topic = f"digest:{day.isoformat()}"
    outgoing = [
        c.notice(DIGEST_TEMPLATE, topic=topic, academy=academy, date=date_ko(day),
                 lines="\n".join(lines[uuid.UUID(c.student_id)]))
        for c in guardians_of(ctx.session, ctx.tenant_id, lines)
    ]
    # Digests another job already sent for this day: this job's keys are the same.
    with ctx.journal() as conn:
        earlier = {r[0] for r in conn.execute(_DIGESTS_SENT, {
            "tenant_id": ctx.tenant_id, "template": DIGEST_TEMPLATE,
            "recipients": [o.recipient for o in outgoing]})}
    todo = [o for o in outgoing if o.recipient not in earlier]
    sent = send_at_rate(ctx, todo, on_progress=lambda done, total: ctx.progress(done, total))
    return {"date": day.isoformat(), "students": len(lines), "digests": len(outgoing),
            "sent_by_earlier_jobs": len(outgoing) - len(todo), "notifications": sent.as_dict()}


def _digest_lines(session: Session, tenant: uuid.UUID, day: dt.date) -> dict[uuid.UUID, list[str]]:
    """Per active student with something to tell, the digest's lines in Korean."""
    start, end = periods.day_bounds(day)
    lines: dict[uuid.UUID, list[str]] = defaultdict(list)
    attendance = session.execute(
        select(AttendanceRecord.student_id, AttendanceRecord.status,
               AttendanceRecord.checked_at, ClassSession.starts_at, AcademyClass.name)
        .join(ClassSession, ClassSession.id == AttendanceRecord.session_id)
        .join(AcademyClass, AcademyClass.id == ClassSession.class_id)
        .join(Student, Student.id == AttendanceRecord.student_id)
        .where(AttendanceRecord.tenant_id == tenant, Student.status == "active",
               ClassSession.starts_at >= start, ClassSession.starts_at < end)
        .order_by(ClassSession.starts_at, AcademyClass.name)
    ).all()
    for student_id, status, checked_at, starts_at, class_name in attendance:
        line = f"- {time_ko(starts_at)} {class_name}: {STATUS_KO.get(status, status)}"
        if status == "late":
            line += f" ({time_ko(checked_at)} 도착)"
        lines[student_id].append(line)
    due = session.execute(
        select(Invoice.student_id, Invoice.month, Invoice.amount, Invoice.late_fee,
               Invoice.due_on, AcademyClass.name)
        .join(AcademyClass, AcademyClass.id == Invoice.class_id)
        .join(Student, Student.id == Invoice.student_id)
        .where(Invoice.tenant_id == tenant, Invoice.status == "open", Student.status == "active",
               Invoice.due_on > day, Invoice.due_on <= day + dt.timedelta(days=DUE_SOON_DAYS))
        .order_by(Invoice.due_on, AcademyClass.name)
    ).all()
    for student_id, month, amount, late_fee, due_on, class_name in due:
        lines[student_id].append(f"- {month_ko(month)} {class_name} 수강료 {won(amount + late_fee)}원"
                                 f" 납부 기한: {date_ko(due_on)}")
    return lines
