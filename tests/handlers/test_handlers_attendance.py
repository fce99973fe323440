"""attendance.* intents, dispatched as a caller would, asserted in the academy's tables."""

from __future__ import annotations

import datetime as dt

import pytest

from app import dispatch_intent
from tests.academy import (
    enrol,
    make_class,
    make_session,
    make_student,
    mark,
    notifications,
    rows,
    seoul,
)
from tests.fixtures import sql, wait_for_status

pytestmark = pytest.mark.usefixtures("worker")


def run(tenant: str, intent: str, **params) -> dict:
    job_id = dispatch_intent.delay(tenant_id=tenant, intent_key=intent,
                                   intent_params=params).get(timeout=15)
    return wait_for_status(job_id)


def attendance(session) -> dict[str, tuple[str, str]]:
    """Student name -> (status, source) for the session."""
    return {r["name"]: (r["status"], r["source"]) for r in rows(
        "SELECT s.name, a.status, a.source FROM attendance_records a "
        "JOIN students s ON s.id = a.student_id WHERE a.session_id = :id", id=session.id)}


def academy(tenant: str) -> str:
    return sql("SELECT name FROM tenants WHERE id = :t", t=tenant)[0][0]


@pytest.mark.smoke
def test_late_notice_records_the_late_arrival_in_the_session_found_from_the_timetable(tenant):
    klass = make_class(tenant)
    student = make_student(tenant, "김민준")
    enrol(student, klass)
    session = make_session(klass, seoul(2026, 11, 26, 16, 0))

    job = run(tenant, "attendance.exec.notify_guardians_late", student_id=str(student.id),
              notify_time="2026-11-26T16:12:00+09:00")

    assert job["status"] == "completed"
    assert job["result"]["session_id"] == str(session.id)
    assert attendance(session) == {"김민준": ("late", "notice")}
    [note] = notifications(job["id"])
    assert note["body"] == f"[{academy(tenant)}] 김민준 학생이 오후 4시 12분에 지각했습니다."
    assert note["status"] == "sent" and note["template"] == "attendance.late"


def test_late_notice_never_overrides_what_the_desk_recorded(tenant):
    klass = make_class(tenant)
    student = make_student(tenant, "이도윤")
    enrol(student, klass)
    session = make_session(klass, seoul(2026, 11, 26, 16, 0))
    mark(session, student, "excused")

    job = run(tenant, "attendance.exec.notify_guardians_late", student_id=str(student.id),
              notify_time="2026-11-26T16:20:00", session_id=str(session.id))

    assert job["status"] == "completed" and job["result"]["attendance_recorded"] is False
    assert attendance(session) == {"이도윤": ("excused", "staff")}


def test_late_notice_for_an_unknown_student_fails_at_once(tenant):
    job = run(tenant, "attendance.exec.notify_guardians_late",
              student_id="00000000-0000-4000-8000-000000000000",
              notify_time="2026-11-26T16:12:00+09:00")

    assert job["status"] == "failed" and job["retry_count"] == 0
    assert "no student 00000000-0000-4000-8000-000000000000" in job["error_message"]


def test_end_of_session_marks_unchecked_students_absent_once_and_notifies_their_guardians(tenant):
    klass = make_class(tenant, "초등 영어 B반")
    here, late, missing = (make_student(tenant, n) for n in ("박서윤", "최지호", "정하준"))
    for s in (here, late, missing):
        enrol(s, klass)
    session = make_session(klass, seoul(2026, 11, 20, 17, 0))
    mark(session, here, "present")
    mark(session, late, "late")

    job = run(tenant, "attendance.exec.mark_unchecked_absent", session_id=str(session.id),
              notify_guardians=True)

    assert job["status"] == "completed"
    assert job["result"]["marked_absent"] == 1 and job["result"]["already_closed"] is False
    assert attendance(session) == {"박서윤": ("present", "staff"), "최지호": ("late", "staff"),
                                   "정하준": ("absent", "auto")}
    [(status, closed)] = sql("SELECT status, attendance_closed_at FROM class_sessions "
                             "WHERE id = :id", id=session.id)
    assert status == "held" and closed is not None
    notice_job = wait_for_status(job["result"]["notify_job_id"])
    assert notice_job["status"] == "completed" and notice_job["parent_id"] == job["id"]
    [note] = notifications(notice_job["id"])
    assert note["body"] == (f"[{academy(tenant)}] 정하준 학생이 오늘 오후 5시 초등 영어 B반 수업에 "
                            "출석하지 않았습니다. 사정이 있으시면 학원으로 연락 부탁드립니다.")

    again = run(tenant, "attendance.exec.mark_unchecked_absent", session_id=str(session.id),
                notify_guardians=True)

    assert again["result"]["marked_absent"] == 0 and again["result"]["already_closed"] is True
    assert again["result"]["notify_job_id"] == str(notice_job["id"])  # the same notice job, not a second
    assert len(attendance(session)) == 3


def test_attendance_of_a_session_still_running_is_not_closed(tenant):
    klass = make_class(tenant)
    session = make_session(klass, dt.datetime.now(dt.UTC) - dt.timedelta(minutes=10))

    job = run(tenant, "attendance.exec.mark_unchecked_absent", session_id=str(session.id))

    assert job["status"] == "failed" and "its attendance is still open" in job["error_message"]


def test_absentee_notice_reaches_only_the_guardians_of_absent_students(tenant):
    klass = make_class(tenant, "중등 과학 A반")
    absent, present = make_student(tenant, "윤지우"), make_student(tenant, "장서연")
    session = make_session(klass, seoul(2026, 11, 24, 18, 30))
    mark(session, absent, "absent")
    mark(session, present, "present")

    job = run(tenant, "attendance.exec.notify_absentees", session_id=str(session.id))

    assert job["result"]["absent"] == 1
    [note] = notifications(job["id"])
    assert note["student_id"] == absent.id
    assert "윤지우 학생이 오늘 오후 6시 30분 중등 과학 A반 수업에 출석하지 않았습니다" in note["body"]


def test_daily_summary_counts_each_class_into_one_report_per_day(tenant):
    math, english = make_class(tenant, "수학 A반"), make_class(tenant, "영어 A반")
    students = [make_student(tenant, f"학생{i}") for i in range(4)]
    first = make_session(math, seoul(2026, 11, 25, 16, 0))
    second = make_session(english, seoul(2026, 11, 25, 19, 0))
    make_session(math, seoul(2026, 11, 26, 16, 0))  # the next day: not counted
    for student, status in zip(students, ("present", "present", "late", "absent"), strict=True):
        mark(first, student, status)
    mark(second, students[0], "excused")

    job = run(tenant, "attendance.exec.daily_summary", date="2026-11-25")
    run(tenant, "attendance.exec.daily_summary", date="2026-11-25")

    assert job["result"] == {"date": "2026-11-25", "sessions": 2, "present": 2, "late": 1,
                             "absent": 1, "excused": 1, "attendance_rate": 60.0}
    [report] = rows("SELECT * FROM reports WHERE tenant_id = :t", t=tenant)
    assert report["kind"] == "daily_attendance"
    assert report["period_start"] == report["period_end"] == dt.date(2026, 11, 25)
    assert report["summary"]["classes"] == [
        {"class": "수학 A반", "sessions": 1, "present": 2, "late": 1, "absent": 1, "excused": 0},
        {"class": "영어 A반", "sessions": 1, "present": 0, "late": 0, "absent": 0, "excused": 1},
    ]
