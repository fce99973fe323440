"""class.* intents, dispatched as a caller would, asserted in classes, sessions, enrolments and
the notifications guardians receive."""

from __future__ import annotations

import datetime as dt

import pytest

from app import dispatch_intent
from app.core.errors import IntentRefused
from tests.academy import (
    enrol,
    make_class,
    make_session,
    make_student,
    make_term,
    notifications,
    rows,
    seoul,
)
from tests.fixtures import sql, wait_for_status

pytestmark = pytest.mark.usefixtures("worker")

MON_WED_4PM = ((0, dt.time(16, 0), dt.time(17, 30)), (2, dt.time(16, 0), dt.time(17, 30)))


def run(tenant: str, intent: str, **params) -> dict:
    job_id = dispatch_intent.delay(tenant_id=tenant, intent_key=intent,
                                   intent_params=params).get(timeout=15)
    return wait_for_status(job_id, timeout=30)


def sessions_of(klass) -> list[tuple[dt.datetime, str]]:
    return [(r["starts_at"], r["status"]) for r in rows(
        "SELECT starts_at, status FROM class_sessions WHERE class_id = :c ORDER BY starts_at",
        c=klass.id)]


def test_term_sessions_follow_the_timetable_in_seoul_time_and_are_made_once(tenant):
    term = make_term(tenant, "2026 겨울학기", dt.date(2026, 12, 1), dt.date(2026, 12, 14))
    klass = make_class(tenant, "중등 수학 A반", term_id=term.id, timetable=MON_WED_4PM)
    archived = make_class(tenant, "폐강반", term_id=term.id, timetable=MON_WED_4PM)
    sql("UPDATE classes SET status = 'archived' WHERE id = :id", id=archived.id)

    first = run(tenant, "class.exec.generate_term_sessions", term_id=str(term.id))
    second = run(tenant, "class.exec.generate_term_sessions", term_id=str(term.id))

    assert first["result"] == {"term": "2026 겨울학기", "classes": 1, "sessions_created": 4}
    assert second["result"]["sessions_created"] == 0
    assert [start for start, _ in sessions_of(klass)] == [
        seoul(2026, 12, 2, 16), seoul(2026, 12, 7, 16), seoul(2026, 12, 9, 16),
        seoul(2026, 12, 14, 16)]
    assert sessions_of(archived) == []


def test_schedule_change_moves_the_session_and_tells_every_guardian(tenant):
    klass = make_class(tenant, "초등 영어 A반")
    moved = make_session(klass, seoul(2026, 11, 27, 16, 0))
    first, second = make_student(tenant, "한지민", guardians=2), make_student(tenant, "백승호")
    enrol(first, klass)
    enrol(second, klass)
    make_student(tenant, "다른반")  # not enrolled: not told

    job = run(tenant, "class.exec.notify_schedule_change", class_id=str(klass.id),
              session_id=str(moved.id), new_starts_at="2026-11-28T10:00:00")

    assert job["status"] == "completed"
    assert job["result"]["students"] == 2 and job["result"]["session_moved"] is True
    [(starts, ends)] = sql("SELECT starts_at, ends_at FROM class_sessions WHERE id = :id",
                           id=moved.id)
    assert (starts, ends) == (seoul(2026, 11, 28, 10, 0), seoul(2026, 11, 28, 11, 30))
    notes = notifications(job["id"])
    assert len(notes) == 3  # both of 한지민's guardians, and 백승호's
    academy = sql("SELECT name FROM tenants WHERE id = :t", t=tenant)[0][0]
    assert {n["body"] for n in notes} == {
        f"[{academy}] {name} 학생이 수강 중인 초등 영어 A반 수업 일정이 변경되었습니다. "
        "11월 27일(금) 오후 4시 수업이 11월 28일(토) 오전 10시로 변경되었습니다."
        for name in ("한지민", "백승호")}


def test_schedule_change_needs_a_message_or_a_session_to_move(tenant):
    klass = make_class(tenant)
    with pytest.raises(IntentRefused, match="give a message, or a session_id with new_starts_at"):
        dispatch_intent.delay(tenant_id=tenant, intent_key="class.exec.notify_schedule_change",
                              intent_params={"class_id": str(klass.id)}).get(timeout=15)


def test_closing_a_term_ends_its_enrolments_and_cancels_sessions_still_ahead(tenant):
    now = dt.datetime.now(dt.UTC)
    term = make_term(tenant, "가을학기", (now - dt.timedelta(days=60)).date(),
                     (now + dt.timedelta(days=30)).date())
    klass = make_class(tenant, "가을 특강", term_id=term.id)
    other = make_class(tenant, "연중반")
    student = make_student(tenant, "임나연")
    enrol(student, klass)
    enrol(student, other)
    past = make_session(klass, now - dt.timedelta(days=7), term_id=term.id)
    ahead = make_session(klass, now + dt.timedelta(days=7), term_id=term.id)

    job = run(tenant, "class.exec.close_term", term_id=str(term.id))
    again = run(tenant, "class.exec.close_term", term_id=str(term.id))

    assert job["result"] == {"term": "가을학기", "already_closed": False, "enrolments_ended": 1,
                             "sessions_cancelled": 1}
    assert again["result"]["already_closed"] is True
    assert dict(sql("SELECT id, status FROM class_sessions WHERE class_id = :c", c=klass.id)) == {
        past.id: "scheduled", ahead.id: "cancelled"}
    assert dict(sql("SELECT class_id, status FROM enrolments WHERE student_id = :s",
                    s=student.id)) == {klass.id: "ended", other.id: "active"}
    assert sql("SELECT status FROM terms WHERE id = :id", id=term.id) == [("closed",)]


def test_archiving_a_class_ends_enrolments_cancels_sessions_ahead_and_is_done_once(tenant):
    now = dt.datetime.now(dt.UTC)
    klass = make_class(tenant, "폐강 예정반")
    student = make_student(tenant, "조현우")
    enrol(student, klass)
    past = make_session(klass, now - dt.timedelta(days=2))
    ahead = make_session(klass, now + dt.timedelta(days=2))

    job = run(tenant, "class.exec.archive_class", class_id=str(klass.id))
    again = run(tenant, "class.exec.archive_class", class_id=str(klass.id))

    assert job["result"]["enrolments_ended"] == 1 and job["result"]["sessions_cancelled"] == 1
    assert again["result"] == {"class": "폐강 예정반", "already_archived": True,
                               "enrolments_ended": 0, "sessions_cancelled": 0}
    assert sql("SELECT status FROM classes WHERE id = :id", id=klass.id) == [("archived",)]
    assert dict(sql("SELECT id, status FROM class_sessions WHERE class_id = :c", c=klass.id)) == {
        past.id: "scheduled", ahead.id: "cancelled"}
    [(status, ended_on)] = sql("SELECT status, ended_on FROM enrolments WHERE class_id = :c",
                               c=klass.id)
    assert status == "ended" and ended_on is not None
