"""Builders of a small academy for the handler tests: real rows, written and committed at once,
and readers of what a user would look at (notifications, invoices, attendance)."""

from __future__ import annotations

import datetime as dt
import itertools
import uuid
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import text

from app.store import db
from handlers.models import (
    AcademyClass,
    AttendanceRecord,
    ClassSession,
    Enrolment,
    Guardian,
    Invoice,
    Student,
    StudentGuardian,
    Term,
    TimetableSlot,
)

SEOUL = ZoneInfo("Asia/Seoul")
_phones = itertools.count(1000)


def seoul(*args: int) -> dt.datetime:
    """An academy wall-clock time: ``seoul(2026, 11, 26, 16, 12)``."""
    return dt.datetime(*args, tzinfo=SEOUL)


def _add(obj: Any) -> Any:
    with db.session() as s:
        s.add(obj)
        s.commit()
        return obj


def make_class(tenant: str, name: str = "중등 수학 A반", *, fee: int = 250_000,
               term_id: uuid.UUID | None = None,
               timetable: tuple[tuple[int, dt.time, dt.time], ...] = ()) -> AcademyClass:
    klass = _add(AcademyClass(tenant_id=uuid.UUID(tenant), name=name, subject="수학",
                              teacher="이선생", room="201호", monthly_fee=fee, term_id=term_id))
    for weekday, start, end in timetable:
        _add(TimetableSlot(tenant_id=klass.tenant_id, class_id=klass.id, weekday=weekday,
                           starts_at=start, ends_at=end))
    return klass


def make_student(tenant: str, name: str = "김민준", *, guardians: int = 1,
                 channel: str = "kakao", email: str | None = None,
                 guardian_name: str | None = None) -> Student:
    """A student with ``guardians`` guardians, the first primary, all preferring ``channel``."""
    student = _add(Student(tenant_id=uuid.UUID(tenant), name=name, grade=8))
    for i in range(guardians):
        guardian = _add(Guardian(
            tenant_id=student.tenant_id, name=guardian_name or f"{name[0]}보호자{i + 1}",
            phone=f"010-{next(_phones):04d}-{uuid.uuid4().int % 10000:04d}",
            email=email or f"guardian{uuid.uuid4().hex[:8]}@example.com",
            preferred_channel=channel))
        _add(StudentGuardian(student_id=student.id, guardian_id=guardian.id,
                             tenant_id=student.tenant_id, relation="모" if i == 0 else "부",
                             is_primary=i == 0))
    return student


def enrol(student: Student, klass: AcademyClass, *, started_on: dt.date = dt.date(2026, 1, 1),
          fee: int | None = None) -> Enrolment:
    return _add(Enrolment(tenant_id=student.tenant_id, student_id=student.id, class_id=klass.id,
                          started_on=started_on, monthly_fee=fee))


def make_session(klass: AcademyClass, starts: dt.datetime, minutes: int = 90,
                 term_id: uuid.UUID | None = None) -> ClassSession:
    return _add(ClassSession(tenant_id=klass.tenant_id, class_id=klass.id, starts_at=starts,
                             ends_at=starts + dt.timedelta(minutes=minutes), term_id=term_id))


def mark(session: ClassSession, student: Student, status: str) -> None:
    _add(AttendanceRecord(tenant_id=session.tenant_id, session_id=session.id,
                          student_id=student.id, status=status))


def make_term(tenant: str, name: str, starts_on: dt.date, ends_on: dt.date) -> Term:
    return _add(Term(tenant_id=uuid.UUID(tenant), name=name, starts_on=starts_on,
                     ends_on=ends_on))


def make_invoice(enrolment: Enrolment, month: dt.date, amount: int, due_on: dt.date,
                 status: str = "open") -> Invoice:
    return _add(Invoice(tenant_id=enrolment.tenant_id, enrolment_id=enrolment.id,
                        student_id=enrolment.student_id, class_id=enrolment.class_id,
                        month=month, amount=amount, due_on=due_on, status=status))


# --- reading -----------------------------------------------------------------------------------


def rows(statement: str, **params: Any) -> list[dict[str, Any]]:
    with db.engine().connect() as conn:
        return [dict(r) for r in conn.execute(text(statement), params).mappings()]


def notifications(job_id: str) -> list[dict[str, Any]]:
    return rows("SELECT * FROM notifications WHERE job_id = CAST(:j AS uuid) "
                "ORDER BY recipient", j=job_id)


def overdue_invoices(tenant: str) -> tuple[Invoice, Invoice]:
    """Two open invoices of 250,000원 of one student: one 40 days past its due date, one 10
    days (past the late-fee intent's default grace of 7 days, within a grace of 30)."""
    today = dt.datetime.now(SEOUL).date()
    enrolment = enrol(make_student(tenant, "연체생"), make_class(tenant, f"연체 확인반 {uuid.uuid4().hex[:6]}"))
    old = make_invoice(enrolment, month_start(today - dt.timedelta(days=70)), 250_000,
                       today - dt.timedelta(days=40))
    recent = make_invoice(enrolment, month_start(today - dt.timedelta(days=35)), 250_000,
                          today - dt.timedelta(days=10))
    return old, recent


def month_start(day: dt.date) -> dt.date:
    return day.replace(day=1)


def late_fees(tenant: str) -> dict[uuid.UUID, int]:
    """Each of the tenant's invoices' late fee (0: none applied)."""
    return {r["id"]: r["late_fee"] for r in rows(
        "SELECT id, late_fee FROM invoices WHERE tenant_id = CAST(:t AS uuid)", t=tenant)}
