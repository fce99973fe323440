"""Attendance reports: the weekly report per class and student, and one student's progress."""

from __future__ import annotations

import datetime as dt
import uuid
from collections import Counter, defaultdict
from typing import Any

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from app.handler_api import JobContext, PermanentError
from handlers import periods
from handlers.models import (
    AcademyClass,
    AttendanceRecord,
    ClassSession,
    Enrolment,
    Invoice,
    Student,
)
from handlers.notify.templates import WEEKDAYS_KO, time_ko, won
from handlers.report.files import grade_ko, rate, report_dir, save_report, write_csv
from handlers.report.params import StudentProgressParams, WeeklyAttendanceParams

STATUSES = ("present", "late", "absent", "excused")
STATUS_KO = {"present": "출석", "late": "지각", "absent": "결석", "excused": "사유결석",
             None: "미확인"}
WEEKLY_HEADINGS = ("반", "담당 강사", "학생", "학번", "학년", "수업 수", "출석", "지각", "결석",
                   "사유결석", "미확인", "출석률(%)")
PROGRESS_HEADINGS = ("날짜", "요일", "반", "수업 시간", "출결", "확인 시각")
#: A student absent this often in a week is named in the class's summary.
ABSENT_ATTENTION = 2
PROGRESS_WEEKS = 12


def weekly_attendance(ctx: JobContext, params: WeeklyAttendanceParams) -> dict[str, Any]:
    """One CSV row per class and student for a Monday-to-Sunday week, and a summary per class.

    Without parameters it reports the last whole week before the job's day: the Monday 07:00
    schedule reports the week that just ended.
    """
    tenant = uuid.UUID(ctx.tenant_id)
    if params.week_start is not None:
        monday = params.week_start - dt.timedelta(days=params.week_start.weekday())
    else:
        day = periods.job_date(ctx)
        monday = day - dt.timedelta(days=day.weekday() + 7)
    sunday = monday + dt.timedelta(days=6)
    start, _ = periods.day_bounds(monday)
    _, end = periods.day_bounds(sunday)
    query = (select(ClassSession.id, ClassSession.class_id, ClassSession.starts_at,
                    AcademyClass.name, AcademyClass.teacher)
             .join(AcademyClass, AcademyClass.id == ClassSession.class_id)
             .where(ClassSession.tenant_id == tenant, ClassSession.status != "cancelled",
                    ClassSession.starts_at >= start, ClassSession.starts_at < end))
    if params.class_id is not None:
        query = query.where(ClassSession.class_id == params.class_id)
    sessions = ctx.session.execute(query).all()
    by_class: dict[uuid.UUID, list] = defaultdict(list)
    for s in sessions:
        by_class[s.class_id].append(s)
    marks = _marks(ctx.session, tenant, [s.id for s in sessions])
    members = _members(ctx.session, tenant, list(by_class), monday, sunday)
    rows, classes = [], []
    for class_id, class_sessions in sorted(by_class.items(), key=lambda kv: kv[1][0].name):
        name, teacher = class_sessions[0].name, class_sessions[0].teacher
        totals: Counter = Counter()
        attention = []
        for student in sorted(members.get(class_id, []), key=lambda m: (m.name, m.id)):
            expected = [s for s in class_sessions
                        if student.started_on <= periods.local_date(s.starts_at)
                        and (student.ended_on is None
                             or periods.local_date(s.starts_at) <= student.ended_on)]
            counts = Counter(marks.get((s.id, student.id)) for s in expected)
            if not expected and not counts:
                continue
            checked = sum(counts[k] for k in STATUSES)
            rows.append((name, teacher or "", student.name, student.external_ref or "",
                         grade_ko(student.grade), len(expected),
                         *(counts[k] for k in STATUSES), counts[None],
                         _blank(rate(counts["present"] + counts["late"], checked))))
            totals.update({k: counts[k] for k in STATUSES})
            totals["unchecked"] += counts[None]
            totals["students"] += 1
            if counts["absent"] >= ABSENT_ATTENTION:
                attention.append(student.name)
        checked = sum(totals[k] for k in STATUSES)
        classes.append({"class": name, "teacher": teacher, "sessions": len(class_sessions),
                        "students": totals["students"], **{k: totals[k] for k in STATUSES},
                        "unchecked": totals["unchecked"],
                        "attendance_rate": rate(totals["present"] + totals["late"], checked),
                        "absent_twice_or_more": attention})
    overall = {k: sum(c[k] for c in classes) for k in (*STATUSES, "unchecked")}
    summary = {
        "title": f"주간 출결 보고서 ({_span_ko(monday, sunday)})",
        "week_start": monday.isoformat(), "week_end": sunday.isoformat(),
        "sessions": len(sessions), **overall,
        "attendance_rate": rate(overall["present"] + overall["late"],
                                sum(overall[k] for k in STATUSES)),
        "classes": classes,
    }
    scope = str(params.class_id) if params.class_id else ""
    path = report_dir(ctx.tenant_id, "weekly_attendance") / (
        f"weekly-attendance-{monday.isoformat()}{'-' + scope[:8] if scope else ''}.csv")
    written = write_csv(path, ctx.job_id, WEEKLY_HEADINGS, rows)
    report_id = save_report(ctx, kind="weekly_attendance", start=monday, end=sunday, path=path,
                            summary=summary, scope=scope)
    return {"report_id": report_id, "file": str(path), "rows": written,
            **{k: v for k, v in summary.items() if k not in ("classes", "title")}}


def student_progress(ctx: JobContext, params: StudentProgressParams) -> dict[str, Any]:
    """A student's sessions over a period with their attendance, rates per class and month,
    and what is left to pay."""
    tenant = uuid.UUID(ctx.tenant_id)
    student = ctx.session.scalar(select(Student).where(Student.tenant_id == tenant,
                                                       Student.id == params.student_id))
    if student is None:
        raise PermanentError(f"no student {params.student_id} in this academy")
    last = params.to_date or periods.job_date(ctx)
    first = params.from_date or last - dt.timedelta(weeks=PROGRESS_WEEKS) + dt.timedelta(days=1)
    start, _ = periods.day_bounds(first)
    _, end = periods.day_bounds(last)
    enrolments = ctx.session.execute(
        select(Enrolment.class_id, Enrolment.started_on, Enrolment.ended_on)
        .where(Enrolment.student_id == student.id, Enrolment.started_on <= last,
               or_(Enrolment.ended_on.is_(None), Enrolment.ended_on >= first))).all()
    sessions = ctx.session.execute(
        select(ClassSession.id, ClassSession.class_id, ClassSession.starts_at,
               ClassSession.ends_at, AcademyClass.name, AttendanceRecord.status,
               AttendanceRecord.checked_at)
        .join(AcademyClass, AcademyClass.id == ClassSession.class_id)
        .outerjoin(AttendanceRecord, and_(AttendanceRecord.session_id == ClassSession.id,
                                          AttendanceRecord.student_id == student.id))
        .where(ClassSession.tenant_id == tenant, ClassSession.status != "cancelled",
               ClassSession.class_id.in_([e.class_id for e in enrolments] or [uuid.UUID(int=0)]),
               ClassSession.starts_at >= start, ClassSession.starts_at < end,
               ClassSession.starts_at <= periods.now())
        .order_by(ClassSession.starts_at)).all()
    spans = defaultdict(list)
    for e in enrolments:
        spans[e.class_id].append((e.started_on, e.ended_on))
    rows, by_class, by_month = [], defaultdict(Counter), defaultdict(Counter)
    for s in sessions:
        day = periods.local_date(s.starts_at)
        if s.status is None and not any(a <= day and (b is None or day <= b)
                                        for a, b in spans[s.class_id]):
            continue  # before joining or after leaving that class
        rows.append((day.isoformat(), WEEKDAYS_KO[day.weekday()], s.name,
                     f"{time_ko(s.starts_at)}~{time_ko(s.ends_at)}", STATUS_KO[s.status],
                     time_ko(s.checked_at) if s.checked_at else ""))
        by_class[s.name][s.status] += 1
        by_month[day.strftime("%Y-%m")][s.status] += 1
    unpaid = ctx.session.execute(
        select(Invoice.amount, Invoice.late_fee).where(
            Invoice.student_id == student.id, Invoice.status == "open")).all()
    summary = {
        "title": f"{student.name} 학생 학습 현황 보고서 ({_span_ko(first, last)})",
        "student": student.name, "student_id": str(student.id),
        "external_ref": student.external_ref, "grade": grade_ko(student.grade),
        "from": first.isoformat(), "to": last.isoformat(), "sessions": len(rows),
        "classes": [{"class": name, **_counts(c)} for name, c in sorted(by_class.items())],
        "months": [{"month": m, **_counts(c)} for m, c in sorted(by_month.items())],
        **_counts(sum(by_class.values(), Counter())),
        "unpaid_invoices": len(unpaid),
        "unpaid_total": won(sum(a + f for a, f in unpaid)) + "원",
    }
    path = report_dir(ctx.tenant_id, "student_progress") / (
        f"student-progress-{student.id}-{first.isoformat()}-{last.isoformat()}.csv")
    write_csv(path, ctx.job_id, PROGRESS_HEADINGS, rows)
    report_id = save_report(ctx, kind="student_progress", start=first, end=last, path=path,
                            summary=summary, scope=str(student.id))
    return {"report_id": report_id, "file": str(path),
            **{k: v for k, v in summary.items() if k not in ("classes", "months", "title")}}


# --- the parts --------------------------------------------------------------------------------


def _marks(s: Session, tenant: uuid.UUID,
           session_ids: list[uuid.UUID]) -> dict[tuple[uuid.UUID, uuid.UUID], str]:
    if not session_ids:
        return {}
    return {(sid, student): status for sid, student, status in s.execute(
        select(AttendanceRecord.session_id, AttendanceRecord.student_id, AttendanceRecord.status)
        .where(AttendanceRecord.tenant_id == tenant,
               AttendanceRecord.session_id.in_(session_ids)))}


def _members(s: Session, tenant: uuid.UUID, class_ids: list[uuid.UUID], first: dt.date,
             last: dt.date) -> dict[uuid.UUID, list]:
    """The students of each class at some time in the week, with their enrolment's days."""
    if not class_ids:
        return {}
    rows = s.execute(
        select(Enrolment.class_id, Enrolment.started_on, Enrolment.ended_on, Student.id,
               Student.name, Student.external_ref, Student.grade)
        .join(Student, Student.id == Enrolment.student_id)
        .where(Enrolment.tenant_id == tenant, Enrolment.class_id.in_(class_ids),
               Enrolment.started_on <= last,
               or_(Enrolment.ended_on.is_(None), Enrolment.ended_on >= first),
               Student.status != "merged")).all()
    members: dict[uuid.UUID, list] = defaultdict(list)
    for r in rows:
        members[r.class_id].append(r)
    return members


def _counts(c: Counter) -> dict[str, Any]:
    checked = sum(c[k] for k in STATUSES)
    return {**{k: c[k] for k in STATUSES}, "unchecked": c[None],
            "attendance_rate": rate(c["present"] + c["late"], checked)}


def _span_ko(first: dt.date, last: dt.date) -> str:
    """``2026년 11월 16일 ~ 11월 22일`` (the year again only when it changes)."""
    year = f"{last.year}년 " if last.year != first.year else ""
    return f"{first.year}년 {first.month}월 {first.day}일 ~ {year}{last.month}월 {last.day}일"


def _blank(value: float | None) -> float | str:
    return "" if value is None else value
