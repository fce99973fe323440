"""A student's place in the academy: moving to another class, and graduating the final year."""

from __future__ import annotations

import datetime as dt
import uuid
from itertools import groupby
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from app.handler_api import JobContext, PermanentError
from handlers import periods
from handlers.models import AcademyClass, Enrolment, Invoice, Student, TimetableSlot
from handlers.notify.recipients import academy_name, guardians_of
from handlers.notify.sending import send_for_job
from handlers.notify.templates import WEEKDAYS_KO, date_ko, time_ko, with_ro
from handlers.student.params import DeactivateGraduatesParams, TransferClassParams

#: How many names a dry run lists.
DRY_RUN_NAMES = 50


def transfer_class(ctx: JobContext, params: TransferClassParams) -> dict[str, Any]:
    """End the student's enrolment in one class and start one in the other, from a day on.

    The old enrolment ends the day before (``transferred``), so attendance and billing up to
    then stay with it; its open invoices for later months are voided. Run again, it finds the
    move made and changes nothing.
    """
    tenant = uuid.UUID(ctx.tenant_id)
    student = ctx.session.scalar(select(Student).where(
        Student.tenant_id == tenant, Student.id == params.student_id).with_for_update())
    if student is None:
        raise PermanentError(f"no student {params.student_id} in this academy")
    leaving = _class(ctx.session, tenant, params.from_class_id)
    joining = _class(ctx.session, tenant, params.to_class_id)
    effective = params.effective_on or periods.job_date(ctx)
    current = _active(ctx.session, student.id, leaving.id)
    target = _active(ctx.session, student.id, joining.id)
    moved = current is not None
    if current is None and target is None:
        raise PermanentError(f"{student.name} is not enrolled in {leaving.name}")
    voided = 0
    if current is not None:
        if student.status != "active":
            raise PermanentError(f"{student.name} is {student.status}, not active")
        if joining.status != "active":
            raise PermanentError(f"class {joining.name} is {joining.status}")
        taken = ctx.session.scalar(select(func.count()).select_from(Enrolment).where(
            Enrolment.class_id == joining.id, Enrolment.status == "active"))
        if target is None and joining.capacity is not None and (taken or 0) >= joining.capacity:
            raise PermanentError(f"class {joining.name} is full ({taken}/{joining.capacity})")
        current.status = "transferred"
        current.ended_on = effective - dt.timedelta(days=1)
        ctx.session.execute(insert(Enrolment).values(
            tenant_id=tenant, student_id=student.id, class_id=joining.id, status="active",
            started_on=effective,
        ).on_conflict_do_nothing(index_elements=["student_id", "class_id"],
                                 index_where=Enrolment.status == "active"))
        # Months that begin after the move are the new class's to bill.
        voided = ctx.session.execute(
            update(Invoice).where(Invoice.enrolment_id == current.id, Invoice.status == "open",
                                  Invoice.month > periods.month_start(effective))
            .values(status="void")).rowcount
        ctx.session.flush()  # a constraint that fails should fail before guardians hear of it
    sent = None
    if params.notify_guardians:
        academy = academy_name(ctx.session, ctx.tenant_id)
        schedule = timetable_ko(ctx.session, joining.id)
        sent = send_for_job(ctx, [
            c.notice("student.transfer", academy=academy, date=date_ko(effective),
                     from_class=leaving.name, to_class_ro=with_ro(joining.name),
                     schedule=f"새 반 수업 시간은 {schedule}입니다." if schedule else "")
            for c in guardians_of(ctx.session, ctx.tenant_id, [student.id])
        ], fail_if_nothing_delivered=False).as_dict()
    return {"student_id": str(student.id), "from_class": leaving.name, "to_class": joining.name,
            "effective_on": effective.isoformat(), "already_transferred": not moved,
            "invoices_voided": voided, "notifications": sent}


def deactivate_graduates(ctx: JobContext, params: DeactivateGraduatesParams) -> dict[str, Any]:
    """Mark the graduating year's active students graduated; end their enrolments and void
    their open invoices for months after graduation."""
    tenant = uuid.UUID(ctx.tenant_id)
    as_of = params.as_of or periods.job_date(ctx)
    graduates = ctx.session.scalars(
        select(Student).where(Student.tenant_id == tenant, Student.status == "active",
                              Student.grade == params.grade)
        .order_by(Student.name, Student.id).with_for_update()).all()
    names = [s.name for s in graduates[:DRY_RUN_NAMES]]
    if params.dry_run or not graduates:
        return {"as_of": as_of.isoformat(), "grade": params.grade, "dry_run": params.dry_run,
                "graduates": len(graduates), "names": names, "enrolments_ended": 0,
                "invoices_voided": 0}
    ids = [s.id for s in graduates]
    now = periods.now()
    for student in graduates:
        student.status = "graduated"
        student.left_on = as_of
        student.updated_at = now
    ended = ctx.session.execute(
        update(Enrolment).where(Enrolment.student_id.in_(ids), Enrolment.status == "active")
        .values(status="ended", ended_on=as_of)).rowcount
    voided = ctx.session.execute(
        update(Invoice).where(Invoice.student_id.in_(ids), Invoice.status == "open",
                              Invoice.month > periods.month_start(as_of))
        .values(status="void")).rowcount
    return {"as_of": as_of.isoformat(), "grade": params.grade, "dry_run": False,
            "graduates": len(graduates), "names": names, "enrolments_ended": ended,
            "invoices_voided": voided}


def timetable_ko(session: Session, class_id: uuid.UUID) -> str:
    """``월·수 오후 5시~오후 6시 30분``: a class's weekly times as guardians read them."""
    slots = session.execute(
        select(TimetableSlot.weekday, TimetableSlot.starts_at, TimetableSlot.ends_at)
        .where(TimetableSlot.class_id == class_id)
        .order_by(TimetableSlot.starts_at, TimetableSlot.ends_at, TimetableSlot.weekday)).all()
    day = dt.date(2026, 1, 5)  # any date: only the wall-clock times are shown
    parts = []
    for (starts, ends), group in groupby(slots, key=lambda s: (s.starts_at, s.ends_at)):
        days = "·".join(WEEKDAYS_KO[s.weekday] for s in sorted(group, key=lambda s: s.weekday))
        parts.append(f"{days} {time_ko(periods.at_local(day, starts))}~"
                     f"{time_ko(periods.at_local(day, ends))}")
    return ", ".join(parts)


def _class(session: Session, tenant: uuid.UUID, class_id: uuid.UUID) -> AcademyClass:
    found = session.scalar(select(AcademyClass).where(AcademyClass.tenant_id == tenant,
                                                      AcademyClass.id == class_id))
    if found is None:
        raise PermanentError(f"no class {class_id} in this academy")
    return found


def _active(session: Session, student_id: uuid.UUID, class_id: uuid.UUID) -> Enrolment | None:
    return session.scalar(select(Enrolment).where(
        Enrolment.student_id == student_id, Enrolment.class_id == class_id,
        Enrolment.status == "active").with_for_update())
