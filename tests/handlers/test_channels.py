"""Notification channels end to end: a late-arrival notice dispatched as a user would, delivered
to a real SMTP server or a local HTTP gateway, and recorded once per job, recipient and channel."""

from __future__ import annotations

import time

import pytest

from app import dispatch_intent
from app.beat.recovery import recover_once
from app.beat.sweep import sweep_once
from handlers.notify.channels import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    sign,
    verify_signature,
)
from tests.academy import enrol, make_class, make_student, notifications, seoul
from tests.fixtures import event_kinds, sql, wait_for, wait_for_status
from tests.outside import WEBHOOK_SECRET

pytestmark = pytest.mark.usefixtures("worker")

ARRIVED = seoul(2026, 11, 26, 16, 12)


def notify_late(tenant: str, student) -> str:
    return dispatch_intent.delay(
        tenant_id=tenant, intent_key="attendance.exec.notify_guardians_late",
        intent_params={"student_id": str(student.id), "notify_time": ARRIVED.isoformat()},
    ).get(timeout=15)


def academy(tenant: str) -> str:
    return sql("SELECT name FROM tenants WHERE id = :t", t=tenant)[0][0]


def test_record_channel_keeps_the_korean_message_without_any_outside_service(tenant):
    student = make_student(tenant, "김민준", channel="kakao")

    job_id = notify_late(tenant, student)

    wait_for_status(job_id, "completed")
    [row] = notifications(job_id)
    assert row["transport"] == "record" and row["channel"] == "kakao"
    assert row["status"] == "sent" and row["attempts"] == 1
    assert row["body"] == f"[{academy(tenant)}] 김민준 학생이 오후 4시 12분에 지각했습니다."
    assert row["provider_message_id"] == f"record:{row['id']}"


def test_email_arrives_at_the_smtp_server_with_the_korean_text(tenant, smtp_server):
    student = make_student(tenant, "이서연", channel="email", email="mother@example.com")

    job_id = notify_late(tenant, student)

    row = wait_for_status(job_id, "completed")
    assert row["result"]["notifications"] == {"sent": 1, "already_sent": 0, "failed": 0}
    [mail] = smtp_server.messages
    assert smtp_server.logins == ["academy-mailer"]
    assert mail["To"] == "mother@example.com"
    assert mail["Subject"] == f"[{academy(tenant)}] 이서연 학생 지각 안내"
    assert mail.get_content().strip() == (
        f"[{academy(tenant)}] 이서연 학생이 오후 4시 12분에 지각했습니다.")
    [note] = notifications(job_id)
    assert note["transport"] == "smtp" and note["status"] == "sent"
    assert note["provider_message_id"] == mail["Message-ID"]


def test_class_notice_goes_to_every_guardian_over_one_smtp_login(tenant, smtp_server):
    klass = _class_with(tenant, make_student(tenant, "오하늘", channel="email",
                                             email="oh@example.com"))
    enrol(make_student(tenant, "신바다", channel="email", email="shin@example.com"), klass)

    job_id = dispatch_intent.delay(
        tenant_id=tenant, intent_key="class.exec.notify_schedule_change",
        intent_params={"class_id": str(klass.id), "message": "다음 주 월요일은 휴강입니다."},
    ).get(timeout=15)

    wait_for_status(job_id, "completed")
    assert sorted(m["To"] for m in smtp_server.messages) == ["oh@example.com", "shin@example.com"]
    assert smtp_server.logins == ["academy-mailer"]
    assert all(m.get_content().strip().endswith("다음 주 월요일은 휴강입니다.")
               for m in smtp_server.messages)


def test_smtp_refusing_the_address_fails_the_notice_at_once_with_its_reason(tenant, smtp_server):
    student = make_student(tenant, "문가람", channel="email", email="nobody@example.com")

    job_id = notify_late(tenant, student)

    row = wait_for_status(job_id, "failed")
    assert row["retry_count"] == 0
    assert "SMTP refused nobody@example.com: 550 5.1.1 수신자 주소가 존재하지 않습니다" in row["error_message"]
    assert smtp_server.messages == []
    assert notifications(job_id)[0]["status"] == "failed"


def test_webhook_post_is_signed_and_carries_the_message(tenant, gateway):
    student = make_student(tenant, "박지호", channel="sms")

    job_id = notify_late(tenant, student)

    wait_for_status(job_id, "completed")
    [request] = gateway.received
    assert request.path == "/messages"
    assert verify_signature(WEBHOOK_SECRET.encode(), request.headers[TIMESTAMP_HEADER],
                            request.body, request.headers[SIGNATURE_HEADER])
    payload = request.json()
    [note] = notifications(job_id)
    assert payload == {"id": str(note["id"]), "channel": "sms", "to": note["address"],
                       "subject": f"[{academy(tenant)}] 박지호 학생 지각 안내",
                       "text": f"[{academy(tenant)}] 박지호 학생이 오후 4시 12분에 지각했습니다."}
    assert request.headers["Idempotency-Key"] == str(note["id"])
    assert note["provider_message_id"] == "gw-1" and note["transport"] == "webhook"


def test_gateway_503_twice_then_200_is_retried_and_delivered_once(tenant, gateway):
    gateway.script = [(503, {"error": "busy"}), (503, {"error": "busy"})]
    student = make_student(tenant, "최하은", channel="kakao")

    job_id = notify_late(tenant, student)

    row = wait_for_status(job_id, "completed")
    assert row["retry_count"] == 2
    assert [k for _, k in event_kinds(job_id)].count("retry") == 2
    assert len(gateway.received) == 3
    assert {r.headers["Idempotency-Key"] for r in gateway.received} == {str(notifications(job_id)[0]["id"])}
    [note] = notifications(job_id)
    assert (note["status"], note["attempts"], note["provider_message_id"]) == ("sent", 3, "gw-3")


def test_gateway_400_fails_the_job_at_once_with_the_gateways_reason(tenant, gateway):
    gateway.script = [(400, {"reason": "수신 거부된 번호입니다"})]
    student = make_student(tenant, "정우진", channel="kakao")

    job_id = notify_late(tenant, student)

    row = wait_for_status(job_id, "failed")
    assert row["retry_count"] == 0
    assert "answered 400: 수신 거부된 번호입니다" in row["error_message"]
    assert len(gateway.received) == 1
    [note] = notifications(job_id)
    assert note["status"] == "failed" and "수신 거부된 번호입니다" in note["last_error"]


def test_retry_after_a_partial_send_does_not_send_the_delivered_message_again(tenant, gateway):
    # Two guardians: the first message goes through, the second meets a 503; the retry must
    # send only the second.
    gateway.script = [(200, None), (503, {"error": "busy"})]
    student = make_student(tenant, "강서준", guardians=2, channel="kakao")

    job_id = notify_class(tenant, student, "이번 주 금요일 수업은 휴강합니다.")

    row = wait_for_status(job_id, "completed")
    assert row["retry_count"] == 1
    keys = [r.headers["Idempotency-Key"] for r in gateway.received]
    assert len(keys) == 3 and len(set(keys)) == 2  # the first once, the second twice
    notes = notifications(job_id)
    assert [n["status"] for n in notes] == ["sent", "sent"]
    assert sorted(n["attempts"] for n in notes) == [1, 2]


def test_rerun_of_a_completed_notice_sends_nothing_new(tenant, smtp_server):
    student = make_student(tenant, "윤지우", channel="email")
    job_id = notify_late(tenant, student)
    wait_for_status(job_id, "completed")
    before = notifications(job_id)

    # The state a worker leaves when it dies after sending but before recording completion:
    # still processing, lease lapsed. Recovery and the sweep run the job again.
    sql("UPDATE job_executions SET status = 'processing', completed_at = NULL, "
        "lease_owner = 'gone-host:4242', lease_expires_at = now() - interval '1 second' "
        "WHERE id = :j", j=job_id)
    assert job_id in {r.id for r in recover_once()}
    wait_for(lambda: sweep_once()[1] >= 1 or sql(
        "SELECT status FROM job_executions WHERE id = :j", j=job_id)[0][0] != "pending",
        message="the sweep to publish the job again")
    row = wait_for_status(job_id, "completed")

    assert row["retry_count"] == 1 and row["result"]["notifications"] == {
        "sent": 0, "already_sent": 1, "failed": 0}
    time.sleep(0.2)
    assert len(smtp_server.messages) == 1
    assert notifications(job_id) == before


def test_signature_check_rejects_a_changed_body_or_an_old_timestamp():
    secret, body, ts = b"k", b'{"text":"hi"}', "1760000000"
    signature = sign(secret, ts, body)
    assert verify_signature(secret, ts, body, signature, now=1760000010)
    assert not verify_signature(secret, ts, body + b" ", signature, now=1760000010)
    assert not verify_signature(secret, ts, body, signature, now=1760000000 + 3600)


def notify_class(tenant: str, student, message: str) -> str:
    """A schedule change to every guardian of a class made for ``student``."""
    return dispatch_intent.delay(
        tenant_id=tenant, intent_key="class.exec.notify_schedule_change",
        intent_params={"class_id": str(_class_with(tenant, student).id), "message": message},
    ).get(timeout=15)


def _class_with(tenant: str, student):
    klass = make_class(tenant, f"고등 영어 {student.name}반")
    enrol(student, klass)
    return klass


def test_messages_handed_over_together_are_each_a_span_of_the_runs_trace(tenant, gateway,
                                                                          traced):
    student = make_student(tenant, "한가람", guardians=3, channel="kakao")
    job_id = notify_class(tenant, student, "이번 주 토요일 보강 수업이 있습니다.")
    wait_for_status(job_id, "completed")

    def posts(_):
        runs = [s for s in traced.spans if s.name == "run class.exec.notify_schedule_change"
                and s.attributes["jobq.job_id"] == job_id]
        found = [s for s in traced.spans if s.name == "kakao POST"
                 and runs and s.trace_id == runs[0].trace_id]
        return runs and len(found) == 3 and (runs[0], found)

    # The three POSTs went out at once, from threads of the run: each is still the run's child.
    run, found = traced.wait_for(posts, what="three kakao POSTs in the run's trace")
    assert all(s.parent_id == run.span_id for s in found), [(s.parent_id, run.span_id)
                                                            for s in found]
    assert {r.headers["traceparent"].split("-")[2] for r in gateway.received} == {
        s.span_id for s in found}


def test_each_message_that_leaves_is_a_span_of_its_jobs_trace(tenant, gateway, smtp_server,
                                                              traced):
    by_kakao = notify_late(tenant, make_student(tenant, "최하늘", channel="kakao"))
    by_mail = notify_late(tenant, make_student(tenant, "정바다", channel="email",
                                               email="father@example.com"))
    for job_id in (by_kakao, by_mail):
        wait_for_status(job_id, "completed")

    def sent(job_id: str, name: str):
        runs = [s for s in traced.spans if s.name == "run attendance.exec.notify_guardians_late"
                and s.attributes["jobq.job_id"] == job_id]
        return runs and [(runs[0], s) for s in traced.spans
                         if s.parent_id == runs[0].span_id and s.name == name]

    [(run, kakao)] = traced.wait_for(lambda _: sent(by_kakao, "kakao POST"), what="kakao POST")
    assert (kakao.kind, kakao.trace_id, kakao.attributes["http.response.status_code"]) == (
        "client", run.trace_id, 200)
    assert kakao.attributes["url.full"] == f"{gateway.url}/messages"
    # The gateway gets the span as the request's parent; no guardian's address is an attribute.
    [request] = gateway.received
    assert request.headers["traceparent"].startswith(f"00-{kakao.trace_id}-{kakao.span_id}-")
    assert request.json()["to"] not in str(kakao.attributes)
    [(run, mail)] = traced.wait_for(lambda _: sent(by_mail, "email send"), what="email send")
    assert (mail.kind, mail.attributes["server.address"], mail.attributes["server.port"]) == (
        "client", smtp_server.host, smtp_server.port)
    assert not mail.failed and len(smtp_server.messages) == 1
