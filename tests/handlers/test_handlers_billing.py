"""billing.* intents, dispatched as a caller would, asserted in invoices, payments and the
notifications guardians receive; the payment gateway is a local HTTP server."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest

from app import dispatch_intent
from handlers.notify.channels import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify_signature
from tests.academy import (
    enrol,
    make_class,
    make_invoice,
    make_student,
    notifications,
    rows,
)
from tests.fixtures import event_kinds, sql, wait_for_status
from tests.outside import WEBHOOK_SECRET

pytestmark = pytest.mark.usefixtures("worker")


def run(tenant: str, intent: str, run_at: str | None = None, **params) -> dict:
    job_id = dispatch_intent.delay(tenant_id=tenant, intent_key=intent, intent_params=params,
                                   run_at=run_at).get(timeout=15)
    return wait_for_status(job_id, timeout=30)


def invoices(tenant: str) -> list[dict]:
    return rows("SELECT i.*, s.name AS student FROM invoices i JOIN students s "
                "ON s.id = i.student_id WHERE i.tenant_id = :t ORDER BY s.name, i.month", t=tenant)


def academy(tenant: str) -> str:
    return sql("SELECT name FROM tenants WHERE id = :t", t=tenant)[0][0]


# --- monthly settlement ----------------------------------------------------------------------------


def test_settlement_bills_each_active_enrolment_once_per_month(tenant):
    math = make_class(tenant, "수학 A반", fee=250_000)
    closed = make_class(tenant, "폐강반", fee=200_000)
    sql("UPDATE classes SET status = 'archived' WHERE id = :id", id=closed.id)
    a, b, gone, later = (make_student(tenant, n) for n in ("가민서", "나지훈", "다은비", "라온"))
    enrol(a, math)
    enrol(b, math, fee=225_000)  # a sibling's discount
    enrol(a, closed)
    ended = enrol(gone, math)
    sql("UPDATE enrolments SET status = 'ended', ended_on = '2026-02-20' WHERE id = :id",
        id=ended.id)
    enrol(later, math, started_on=dt.date(2026, 4, 2))

    first = run(tenant, "billing.exec.monthly_settlement", month="2026-03")
    second = run(tenant, "billing.exec.monthly_settlement", month="2026-03")

    assert first["result"] == {"month": "2026-03", "created": 2, "already_billed": 0}
    assert second["result"] == {"month": "2026-03", "created": 0, "already_billed": 2}
    assert [(i["student"], i["month"], i["amount"], i["due_on"], i["status"])
            for i in invoices(tenant)] == [
        ("가민서", dt.date(2026, 3, 1), 250_000, dt.date(2026, 3, 10), "open"),
        ("나지훈", dt.date(2026, 3, 1), 225_000, dt.date(2026, 3, 10), "open"),
    ]


def test_settlement_without_params_bills_the_month_it_was_scheduled_for_in_seoul(tenant):
    student = make_student(tenant, "마하린")
    enrol(student, make_class(tenant, fee=300_000))

    # The beat schedule's slot: 1 March 02:00 in Seoul is still 28 February in UTC.
    job = run(tenant, "billing.exec.monthly_settlement", run_at="2026-02-28T17:00:00+00:00")

    assert job["result"]["month"] == "2026-03"
    assert [i["month"] for i in invoices(tenant)] == [dt.date(2026, 3, 1)]


# --- reminders and late fees -----------------------------------------------------------------------


def test_overdue_invoices_are_reminded_once_a_week(tenant):
    klass = make_class(tenant, "고등 국어 A반", fee=250_000)
    student = make_student(tenant, "홍길동")
    enrolment = enrol(student, klass)
    overdue = make_invoice(enrolment, dt.date(2026, 10, 1), 250_000, dt.date(2026, 10, 10))
    make_invoice(enrolment, dt.date(2026, 9, 1), 250_000, dt.date(2026, 9, 10), status="paid")
    make_invoice(enrolment, dt.date(2026, 11, 1), 250_000, dt.date(2026, 11, 30))

    job = run(tenant, "billing.exec.payment_reminders", as_of="2026-11-20")
    again = run(tenant, "billing.exec.payment_reminders", as_of="2026-11-22")
    week_later = run(tenant, "billing.exec.payment_reminders", as_of="2026-11-27")

    assert job["result"]["overdue_invoices"] == 1
    [note] = notifications(job["id"])
    assert note["body"] == (f"[{academy(tenant)}] 홍길동 학생의 2026년 10월 고등 국어 A반 수강료 "
                            "250,000원이 납부 기한(10월 10일(토))이 지나 아직 미납 상태입니다. "
                            "확인 부탁드립니다.")
    assert again["result"]["overdue_invoices"] == 0 and notifications(again["id"]) == []
    assert week_later["result"]["overdue_invoices"] == 1
    [(sent, last)] = sql("SELECT reminders_sent, last_reminded_on FROM invoices WHERE id = :id",
                         id=overdue.id)
    assert (sent, last) == (2, dt.date(2026, 11, 27))


def test_late_fee_is_added_once_after_the_grace_days_and_guardians_are_told(tenant):
    klass = make_class(tenant, "중등 수학 B반", fee=250_000)
    student = make_student(tenant, "송민호")
    enrolment = enrol(student, klass)
    late = make_invoice(enrolment, dt.date(2026, 10, 1), 250_000, dt.date(2026, 10, 10))
    within_grace = make_invoice(enrolment, dt.date(2026, 11, 1), 250_000, dt.date(2026, 11, 10))

    job = run(tenant, "billing.exec.apply_late_fees", as_of="2026-11-15")
    again = run(tenant, "billing.exec.apply_late_fees", as_of="2026-11-16")

    assert job["result"]["invoices"] == 1 and job["result"]["late_fees_total"] == 12_500
    assert again["result"]["invoices"] == 0
    fees = dict(sql("SELECT id, late_fee FROM invoices WHERE tenant_id = :t", t=tenant))
    assert fees == {late.id: 12_500, within_grace.id: 0}
    [note] = notifications(job["id"])
    assert "연체료 12,500원이 부과되었습니다. 납부하실 금액은 총 262,500원입니다." in note["body"]


# --- the payment gateway ---------------------------------------------------------------------------


def _paid(request, amount: int = 250_000):
    """The gateway's answer: every invoice asked about was paid in full by card."""
    return {"payments": [
        {"id": f"pay-{invoice_id[:8]}", "invoice_id": invoice_id, "amount": amount,
         "paid_at": "2026-11-05T10:30:00+09:00", "method": "card", "status": "paid"}
        for invoice_id in request.json()["invoice_ids"]
    ]}


def test_gateway_503_twice_then_200_is_retried_and_the_invoice_marked_paid(tenant, gateway):
    enrolment = enrol(make_student(tenant, "안유진"), make_class(tenant, fee=250_000))
    invoice = make_invoice(enrolment, dt.date(2026, 11, 1), 250_000, dt.date(2026, 11, 10))
    gateway.script = [(503, {"error": "maintenance"}), (503, {"error": "maintenance"})]
    gateway.default = (200, _paid)

    job = run(tenant, "billing.exec.sync_payment_status")

    assert job["status"] == "completed" and job["retry_count"] == 2
    assert [k for _, k in event_kinds(job["id"])].count("retry") == 2
    assert job["result"] == {"invoices_checked": 1, "payments_recorded": 1, "invoices_paid": 1}
    request = gateway.received[-1]
    assert request.path == "/payments/search"
    assert verify_signature(WEBHOOK_SECRET.encode(), request.headers[TIMESTAMP_HEADER],
                            request.body, request.headers[SIGNATURE_HEADER])
    [inv] = invoices(tenant)
    assert inv["status"] == "paid" and inv["id"] == invoice.id
    assert inv["paid_at"] == dt.datetime(2026, 11, 5, 1, 30, tzinfo=dt.UTC)
    [payment] = rows("SELECT * FROM payments WHERE tenant_id = :t", t=tenant)
    assert (payment["amount"], payment["source"], payment["method"]) == (250_000, "gateway", "card")


def test_payments_reported_again_are_recorded_once_and_part_payments_leave_invoices_open(
        tenant, gateway):
    enrolment = enrol(make_student(tenant, "서지민"), make_class(tenant, fee=250_000))
    invoice = make_invoice(enrolment, dt.date(2026, 11, 1), 250_000, dt.date(2026, 11, 10))
    gateway.default = (200, lambda request: _paid(request, amount=100_000))

    first = run(tenant, "billing.exec.sync_payment_status", invoice_ids=[str(invoice.id)])
    second = run(tenant, "billing.exec.sync_payment_status", invoice_ids=[str(invoice.id)])

    assert first["result"]["payments_recorded"] == 1 and second["result"]["payments_recorded"] == 0
    assert [i["status"] for i in invoices(tenant)] == ["open"]
    assert sql("SELECT count(*) FROM payments WHERE tenant_id = :t", t=tenant) == [(1,)]


def test_gateway_400_fails_the_sync_at_once_with_its_reason(tenant, gateway):
    enrolment = enrol(make_student(tenant, "오세훈"), make_class(tenant, fee=250_000))
    make_invoice(enrolment, dt.date(2026, 11, 1), 250_000, dt.date(2026, 11, 10))
    gateway.default = (400, {"reason": "unknown merchant id"})

    job = run(tenant, "billing.exec.sync_payment_status")

    assert job["status"] == "failed" and job["retry_count"] == 0
    assert "answered 400: unknown merchant id" in job["error_message"]
    assert len(gateway.received) == 1


def test_sync_without_a_configured_gateway_fails_naming_the_setting(tenant):
    job = run(tenant, "billing.exec.sync_payment_status",
              invoice_ids=[str(uuid.uuid4())])

    assert job["status"] == "failed" and "JOBQ_PAYMENT_GATEWAY_URL" in job["error_message"]
