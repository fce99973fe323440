"""student.* intents, dispatched as a caller would, asserted in the academy's tables: a roster
import (inline and from an upload, in Excel's encodings, killed half-way in a real prefork
worker and resumed), a class transfer, graduation, and merging duplicate records."""

from __future__ import annotations

import datetime as dt
import os
import signal
from pathlib import Path

import pytest

import app.core.settings
from app import dispatch_intent, submit
from app.run import lease
from app.store import db
from tests.academy import enrol, make_class, make_invoice, make_session, make_student, mark, rows
from tests.fixtures import event_kinds, job_row, sql, wait_for, wait_for_status

ROSTER_HEADING = "학번,이름,생년월일,학교,학년,보호자,보호자 연락처,관계,반\n"


def run(tenant: str, intent: str, **params) -> dict:
    job_id = dispatch_intent.delay(tenant_id=tenant, intent_key=intent,
                                   intent_params=params).get(timeout=15)
    return wait_for_status(job_id, timeout=60)


def uploads() -> Path:
    path = app.core.settings.settings.home / "uploads"
    path.mkdir(parents=True, exist_ok=True)
    return path


def students(tenant: str) -> dict[str, dict]:
    return {r["external_ref"]: r for r in rows(
        "SELECT * FROM students WHERE tenant_id = :t", t=tenant)}


def import_errors(job_id: str) -> list[tuple[int, str]]:
    return [(r["line_number"], r["reason"]) for r in rows(
        "SELECT e.line_number, e.reason FROM roster_import_errors e "
        "JOIN roster_imports i ON i.id = e.import_id WHERE i.job_id = :j "
        "ORDER BY e.line_number", j=job_id)]


def big_roster(n: int, bad_every: int) -> tuple[str, set[str], list[int]]:
    """A roster of ``n`` rows, every ``bad_every``-th without a name; (text, good refs, bad lines)."""
    lines, good, bad = [ROSTER_HEADING], set(), []
    for i in range(1, n + 1):
        ref = f"M{i:05d}"
        name = "" if i % bad_every == 0 else f"학생{i}"
        lines.append(f"{ref},{name},2012-03-{i % 28 + 1:02d},한빛중학교,중{i % 3 + 1},"
                     f"보호자{i},010-{5000 + i // 10000:04d}-{i % 10000:04d},모,\n")
        if name:
            good.add(ref)
        else:
            bad.append(i + 1)
    return "".join(lines), good, bad


# --- the crash: a real prefork worker, its child killed mid-import -------------------------------
# First in the module: the in-thread worker (module-scoped) must not be running yet, or it would
# take the import instead of the prefork worker.


@pytest.mark.slow
def test_roster_import_killed_half_way_resumes_after_its_last_batch_without_duplicates(
        tenant, start_worker_process):
    text_, good, bad_lines = big_roster(3000, bad_every=997)
    (uploads() / f"roster-{tenant}.csv").write_text(text_, encoding="utf-8")
    worker = start_worker_process("-P", "prefork", "-c", "1", queues="bulk")

    with db.session() as session:
        job_id = submit(session, tenant_id=tenant, intent_key="student.exec.import_roster",
                        intent_params={"file": f"roster-{tenant}.csv", "batch_size": 100})
        session.commit()

    def mid_import():
        row = job_row(job_id)
        if row["status"] != "processing" or not row["checkpoint"]:
            return None
        return row if row["checkpoint"]["next"] >= 600 else None

    row = wait_for(mid_import, timeout=60, interval=0.01, message="the import to be half-way")
    pid = lease.owner_pid(row["lease_owner"])
    assert pid in worker.child_pids()
    os.kill(pid, signal.SIGKILL)

    done = wait_for_status(job_id, timeout=120)
    assert done["status"] == "completed", done["error_message"]
    assert done["retry_count"] == 1
    kinds = event_kinds(job_id)
    assert (1, "lost") in kinds and kinds[-1] == (2, "completed")
    result = done["result"]
    assert result["resumed_at_row"] >= 600  # the second attempt began after the last batch
    # Every good row once: created once each (no row of a committed batch imported again).
    assert result["created"] == len(good) and result["updated"] == 0
    assert result["bad"] == len(bad_lines)
    found = students(tenant)
    assert set(found) == good
    assert sql("SELECT count(*) FROM students WHERE tenant_id = :t", t=tenant)[0][0] == len(good)
    [imp] = rows("SELECT * FROM roster_imports WHERE job_id = :j", j=job_id)
    assert (imp["status"], imp["rows_total"], imp["rows_imported"], imp["rows_bad"]) == (
        "completed", 3000, len(good), len(bad_lines))
    assert import_errors(job_id) == [(line, "이름이(가) 비어 있습니다") for line in bad_lines]


# --- with the in-thread worker from here on ------------------------------------------------------


def test_roster_import_keeps_good_rows_and_reports_bad_ones_by_line(tenant, worker):
    math = make_class(tenant, "중등 수학 A반")
    csv_text = (
        ROSTER_HEADING
        + "S001,김민준,2012-03-15,한빛중학교,중2,이지영,010-1234-5678,모,중등 수학 A반\n"
        + "S002,,2012-05-01,한빛중학교,중2,박은정,010-2222-3333,모,\n"              # line 3
        + "S003,이서연,2012.7.9,대청중학교,중4,최수진,010-3333-4444,모,\n"           # line 4
        + "S004,박도윤,20110203,대청중학교,8,박성호,1055556666,부,중등 영어 Z반\n"    # line 5
        + "\n"                                                                           # line 6
        + "S001,김민준,2012-03-15,한빛중학교,중2,이지영,010-1234-5678,모,\n"          # line 7
        + "S005,김하은,2013-01-20,서울초등학교,초6,이지영,010-1234-5678,모\n"         # line 8
        + "S006,정하준,2012-13-01,한빛중학교,중2,,,,\n"                               # line 9
        + 'S007,"최지우",2012-02-02,한빛중학교,중2,한미정,"010 7777 8888",모,\n'      # line 10
        + "S008,윤서윤,,,,,,,\n"                                                      # line 11
    )

    job = run(tenant, "student.exec.import_roster", csv_text=csv_text, batch_size=10)

    assert job["status"] == "completed", job["error_message"]
    assert import_errors(job["id"]) == [
        (3, "이름이(가) 비어 있습니다"),
        (4, "학년 '중4'을(를) 알 수 없습니다 (예: 초5, 중2, 고1 또는 1~12)"),
        (5, "반 '중등 영어 Z반'이(가) 이 학원에 없습니다"),
        (7, "학번 S001이(가) 2번째 줄과 중복됩니다"),
        (8, "열 개수가 머리글과 다릅니다 (머리글 9개, 이 줄 8개)"),
        (9, "생년월일 '2012-13-01'을(를) 날짜로 읽을 수 없습니다 (예: 2012-03-15)"),
    ]
    found = students(tenant)
    assert set(found) == {"S001", "S007", "S008"}
    assert (found["S001"]["name"], found["S001"]["grade"], found["S001"]["birth_date"]) == (
        "김민준", 8, dt.date(2012, 3, 15))
    [guardian] = rows("SELECT g.name, g.phone, sg.relation, sg.is_primary FROM guardians g "
                      "JOIN student_guardians sg ON sg.guardian_id = g.id "
                      "WHERE sg.student_id = :s", s=found["S007"]["id"])
    assert guardian == {"name": "한미정", "phone": "010-7777-8888", "relation": "모",
                        "is_primary": True}
    assert rows("SELECT class_id, status FROM enrolments WHERE student_id = :s",
                s=found["S001"]["id"]) == [{"class_id": math.id, "status": "active"}]
    assert {k: job["result"][k] for k in ("rows", "created", "updated", "unchanged", "bad")} == {
        "rows": 9, "created": 3, "updated": 0, "unchanged": 0, "bad": 6}
    [imp] = rows("SELECT * FROM roster_imports WHERE job_id = :j", j=job["id"])
    assert (imp["status"], imp["rows_imported"], imp["rows_bad"]) == ("completed", 3, 6)

    again = run(tenant, "student.exec.import_roster", csv_text=csv_text, batch_size=10)

    assert {k: again["result"][k] for k in ("created", "updated", "unchanged", "bad")} == {
        "created": 0, "updated": 0, "unchanged": 3, "bad": 6}
    assert sql("SELECT count(*) FROM students WHERE tenant_id = :t", t=tenant)[0][0] == 3
    assert sql("SELECT count(*) FROM guardians WHERE tenant_id = :t", t=tenant)[0][0] == 2


def test_roster_saved_by_korean_excel_is_read_from_uploads_and_siblings_share_a_guardian(
        tenant, worker):
    text_ = ("원생번호,성명,학년,학부모,학부모 연락처,비고\n"
             "K01,강지호,고1,오은주,01099998888,형\n"
             "K02,강지후,중3,오은주,010-9999-8888,동생\n")
    folder = uploads() / tenant
    folder.mkdir(exist_ok=True)
    (folder / "명단.csv").write_bytes(text_.encode("cp949"))

    job = run(tenant, "student.exec.import_roster", file=f"{tenant}/명단.csv")

    assert job["status"] == "completed", job["error_message"]
    assert job["result"]["encoding"] == "cp949"
    assert job["result"]["ignored_headings"] == ["비고"]
    assert {ref: (s["name"], s["grade"]) for ref, s in students(tenant).items()} == {
        "K01": ("강지호", 10), "K02": ("강지후", 9)}
    [(phone, children)] = sql(
        "SELECT g.phone, count(*) FROM guardians g JOIN student_guardians sg "
        "ON sg.guardian_id = g.id WHERE g.tenant_id = :t GROUP BY g.phone", t=tenant)
    assert (phone, children) == ("010-9999-8888", 2)


def test_roster_outside_the_uploads_folder_is_refused(tenant, worker):
    job = run(tenant, "student.exec.import_roster", file="../../etc/passwd")

    assert job["status"] == "failed" and job["retry_count"] == 0
    assert "is not under" in job["error_message"]


def test_transfer_moves_the_enrolment_from_a_day_on_and_tells_the_guardians(tenant, worker):
    from datetime import time

    a = make_class(tenant, "중등 수학 A반")
    b = make_class(tenant, "중등 수학 B반", timetable=((1, time(17), time(19)),
                                                    (3, time(17), time(19))))
    student = make_student(tenant, "윤지우")
    old = enrol(student, a)
    later = make_invoice(old, dt.date(2026, 12, 1), 250_000, dt.date(2026, 12, 10))
    now = make_invoice(old, dt.date(2026, 11, 1), 250_000, dt.date(2026, 11, 10))

    job = run(tenant, "student.exec.transfer_class", student_id=str(student.id),
              from_class_id=str(a.id), to_class_id=str(b.id), effective_on="2026-11-16")

    assert job["status"] == "completed", job["error_message"]
    assert job["result"]["already_transferred"] is False
    assert {(r["class_id"], r["status"], r["started_on"], r["ended_on"]) for r in rows(
        "SELECT * FROM enrolments WHERE student_id = :s", s=student.id)} == {
        (a.id, "transferred", dt.date(2026, 1, 1), dt.date(2026, 11, 15)),
        (b.id, "active", dt.date(2026, 11, 16), None)}
    assert dict(sql("SELECT id, status FROM invoices WHERE enrolment_id = :e", e=old.id)) == {
        later.id: "void", now.id: "open"}
    [note] = rows("SELECT * FROM notifications WHERE job_id = :j", j=job["id"])
    academy = sql("SELECT name FROM tenants WHERE id = :t", t=tenant)[0][0]
    assert note["body"] == (
        f"[{academy}] 윤지우 학생의 수강반이 11월 16일(월)부터 중등 수학 A반에서 중등 수학 B반으로 "
        "변경되었습니다. 새 반 수업 시간은 화·목 오후 5시~오후 7시입니다.")

    again = run(tenant, "student.exec.transfer_class", student_id=str(student.id),
                from_class_id=str(a.id), to_class_id=str(b.id), effective_on="2026-11-16")

    assert again["result"]["already_transferred"] is True
    assert sql("SELECT count(*) FROM enrolments WHERE student_id = :s", s=student.id)[0][0] == 2


def test_transfer_into_a_full_class_is_refused(tenant, worker):
    a, full = make_class(tenant, "초등 영어 A반"), make_class(tenant, "초등 영어 B반")
    sql("UPDATE classes SET capacity = 1 WHERE id = :id", id=full.id)
    enrol(make_student(tenant, "서하린"), full)
    student = make_student(tenant, "권도현")
    enrol(student, a)

    job = run(tenant, "student.exec.transfer_class", student_id=str(student.id),
              from_class_id=str(a.id), to_class_id=str(full.id))

    assert job["status"] == "failed" and "초등 영어 B반 is full (1/1)" in job["error_message"]
    assert sql("SELECT status FROM enrolments WHERE student_id = :s", s=student.id) == [("active",)]


def test_graduates_leave_with_their_enrolments_and_later_bills_once(tenant, worker):
    klass = make_class(tenant, "고등 수학 B반")
    senior, junior = make_student(tenant, "한유나"), make_student(tenant, "홍예린")
    sql("UPDATE students SET grade = 12 WHERE id = :s", s=senior.id)
    sql("UPDATE students SET grade = 11 WHERE id = :s", s=junior.id)
    senior_enrolment = enrol(senior, klass)
    enrol(junior, klass)
    march = make_invoice(senior_enrolment, dt.date(2027, 3, 1), 350_000, dt.date(2027, 3, 10))
    feb = make_invoice(senior_enrolment, dt.date(2027, 2, 1), 350_000, dt.date(2027, 2, 10))

    preview = run(tenant, "student.exec.deactivate_graduates", as_of="2027-02-20", dry_run=True)
    assert preview["result"]["graduates"] == 1 and preview["result"]["names"] == ["한유나"]
    assert students_status(tenant) == {"한유나": "active", "홍예린": "active"}

    job = run(tenant, "student.exec.deactivate_graduates", as_of="2027-02-20")
    again = run(tenant, "student.exec.deactivate_graduates", as_of="2027-02-20")

    assert job["result"]["graduates"] == 1 and job["result"]["enrolments_ended"] == 1
    assert again["result"]["graduates"] == 0
    assert students_status(tenant) == {"한유나": "graduated", "홍예린": "active"}
    [(left_on,)] = sql("SELECT left_on FROM students WHERE id = :s", s=senior.id)
    assert left_on == dt.date(2027, 2, 20)
    assert dict(sql("SELECT id, status FROM invoices WHERE student_id = :s", s=senior.id)) == {
        march.id: "void", feb.id: "open"}


def students_status(tenant: str) -> dict[str, str]:
    return dict(sql("SELECT name, status FROM students WHERE tenant_id = :t", t=tenant))


def test_duplicates_found_by_name_and_guardian_are_merged_into_one_record(tenant, worker):
    klass, other = make_class(tenant, "중등 과학 A반"), make_class(tenant, "중등 국어 A반")
    kept = make_student(tenant, "장서연", guardian_name="장미정")
    sql("UPDATE students SET external_ref = 'R100', birth_date = '2012-04-04' WHERE id = :s",
        s=kept.id)
    twin = make_student(tenant, "장서연", guardians=0)  # entered again at the desk
    sql("INSERT INTO student_guardians (student_id, guardian_id, tenant_id, is_primary) "
        "SELECT :twin, guardian_id, tenant_id, true FROM student_guardians WHERE student_id = :k",
        twin=twin.id, k=kept.id)
    sql("UPDATE students SET phone = '010-4444-5555' WHERE id = :s", s=twin.id)
    namesake = make_student(tenant, "장서연")  # another child of the same name: not merged
    enrol(kept, klass)
    doubled = enrol(twin, klass)
    enrol(twin, other)
    session = make_session(klass, dt.datetime(2026, 11, 2, 17, tzinfo=dt.UTC))
    mark(session, twin, "late")
    make_invoice(doubled, dt.date(2026, 11, 1), 260_000, dt.date(2026, 11, 10))

    job = run(tenant, "student.exec.merge_duplicates")

    assert job["status"] == "completed", job["error_message"]
    [merge] = job["result"]["merges"]
    assert merge["kept"] == str(kept.id) and merge["merged"] == [str(twin.id)]
    states = {r["id"]: (r["status"], r["merged_into_id"], r["phone"]) for r in rows(
        "SELECT * FROM students WHERE tenant_id = :t", t=tenant)}
    assert states == {kept.id: ("active", None, "010-4444-5555"),
                      twin.id: ("merged", kept.id, "010-4444-5555"),
                      namesake.id: ("active", None, None)}
    assert sorted((r["class_id"] == klass.id, r["status"]) for r in rows(
        "SELECT * FROM enrolments WHERE student_id = :s", s=kept.id)) == [
        (False, "active"), (True, "active"), (True, "ended")]
    assert rows("SELECT student_id, status FROM attendance_records WHERE session_id = :s",
                s=session.id) == [{"student_id": kept.id, "status": "late"}]
    assert sql("SELECT status FROM invoices WHERE enrolment_id = :e", e=doubled.id) == [("open",)]
    assert sql("SELECT count(*) FROM student_guardians WHERE student_id = :s",
               s=twin.id)[0][0] == 0

    again = run(tenant, "student.exec.merge_duplicates")
    explicit = run(tenant, "student.exec.merge_duplicates", keep_student_id=str(kept.id),
                   duplicate_student_ids=[str(twin.id)])

    assert again["result"]["groups"] == 0
    assert explicit["result"]["merges"][0]["already_merged"] == [str(twin.id)]
