"""communication.* intents, dispatched as a caller would, asserted in notifications, broadcasts
and the jobs a broadcast fans out: each guardian reached once, however often a broadcast runs;
progress on the parent; the per-channel send rate; redelivery to a corrected address; the
daily digest once per child and day."""

from __future__ import annotations

import datetime as dt
import os
import re
import subprocess
import sys
import threading
import time
import uuid

import pytest

from app import dispatch_intent
from app.intake.actions import cancel
from app.ops.cli.retry import requeue
from app.run import throttle
from handlers.communication import ratelimit
from tests.academy import enrol, make_class, make_invoice, make_session, make_student, mark, rows
from tests.fixtures import job_row, sql, wait_for, wait_for_status

pytestmark = pytest.mark.usefixtures("worker")

BROADCAST = "communication.exec.broadcast"


def dispatch(tenant: str, intent: str, **params) -> str:
    return dispatch_intent.delay(tenant_id=tenant, intent_key=intent,
                                 intent_params=params).get(timeout=15)


def run(tenant: str, intent: str, **params) -> dict:
    return wait_for_status(dispatch(tenant, intent, **params), timeout=60)


def academy(tenant: str) -> str:
    return sql("SELECT name FROM tenants WHERE id = :t", t=tenant)[0][0]


def broadcast_messages(job_id: str) -> list[dict]:
    return rows("SELECT * FROM notifications WHERE job_id = :j ORDER BY recipient", j=job_id)


def guardians_of_tenant(tenant: str) -> set:
    return {r[0] for r in sql("SELECT sg.guardian_id FROM student_guardians sg JOIN students s "
                              "ON s.id = sg.student_id WHERE s.tenant_id = :t "
                              "AND s.status = 'active'", t=tenant)}


def many_students(tenant: str, n: int, klass=None, **kwargs) -> list:
    made = [make_student(tenant, f"학생{i:03d}", **kwargs) for i in range(n)]
    if klass is not None:
        for s in made:
            enrol(s, klass)
    return made


def test_broadcast_reaches_every_guardian_once_through_parallel_chunk_jobs(tenant):
    many_students(tenant, 30, guardians=2)  # 60 guardians: primary and not, all get it
    sibling = make_student(tenant, "학생형")
    sql("INSERT INTO student_guardians (student_id, guardian_id, tenant_id, is_primary) "
        "SELECT s.id, sg.guardian_id, s.tenant_id, true FROM students s, student_guardians sg "
        "WHERE s.name = '학생000' AND s.tenant_id = :t AND sg.student_id = :sib",
        t=tenant, sib=sibling.id)  # a guardian of two children: still one message
    gone = make_student(tenant, "졸업생")
    sql("UPDATE students SET status = 'graduated' WHERE id = :s", s=gone.id)

    job = run(tenant, BROADCAST, title="설 연휴 휴원 안내",
              message="2월 16일부터 18일까지 설 연휴로 휴원합니다.", chunk_size=10)

    assert job["status"] == "completed", job["error_message"]
    expected = guardians_of_tenant(tenant)
    assert len(expected) == 61
    messages = broadcast_messages(job["id"])
    assert sorted(m["guardian_id"] for m in messages) == sorted(expected)
    assert {m["status"] for m in messages} == {"sent"} and {m["attempts"] for m in messages} == {1}
    assert messages[0]["subject"] == f"[{academy(tenant)}] 설 연휴 휴원 안내"
    assert messages[0]["body"] == f"[{academy(tenant)}] 2월 16일부터 18일까지 설 연휴로 휴원합니다."
    result = job["result"]
    assert (result["recipients"], result["chunks"], result["sent"], result["failed"]) == (
        61, 7, 61, 0)
    [broadcast] = rows("SELECT * FROM broadcasts WHERE job_id = :j", j=job["id"])
    assert broadcast["status"] == "sent" and broadcast["finished_at"] is not None
    assert job["progress"]["percent"] == 100
    chunks = rows("SELECT * FROM job_executions WHERE parent_id = :j ORDER BY created_at",
                  j=job["id"])
    assert len(chunks) == 7
    assert {(c["intent_key"], c["source"], c["queue"]) for c in chunks} == {
        ("communication.exec.broadcast_chunk", "fanout", "bulk")}
    for chunk in chunks:
        assert wait_for_status(chunk["id"])["status"] == "completed"
    senders = {r[0] for r in sql("SELECT sent_by_job_id FROM broadcast_chunks "
                                 "WHERE broadcast_id = :b", b=broadcast["id"])}
    assert senders <= {job["id"], *(c["id"] for c in chunks)}


def test_rerun_of_a_completed_broadcast_sends_nothing_new(tenant):
    many_students(tenant, 25)
    job = run(tenant, BROADCAST, title="공지", message="학원 소식입니다.", chunk_size=10)
    assert job["status"] == "completed"
    before = {m["id"]: (m["attempts"], m["sent_at"]) for m in broadcast_messages(job["id"])}
    chunk_jobs = sql("SELECT count(*) FROM job_executions WHERE parent_id = :j", j=job["id"])
    # As if the run's completion had been lost: the same job runs its handler once more.
    sql("UPDATE job_executions SET status = 'failed' WHERE id = :j", j=job["id"])
    assert requeue([{"id": job["id"]}])

    again = wait_for_status(job["id"], "completed", timeout=30)

    assert again["result"]["resumed"] is True and again["result"]["chunks_sent_by_parent"] == 0
    after = {m["id"]: (m["attempts"], m["sent_at"]) for m in broadcast_messages(job["id"])}
    assert after == before and len(after) == 25
    assert sql("SELECT count(*) FROM job_executions WHERE parent_id = :j",
               j=job["id"]) == chunk_jobs


def test_broadcast_to_a_class_reaches_only_its_guardians(tenant):
    klass = make_class(tenant, "고등 영어 A반")
    inside = many_students(tenant, 3, klass)
    many_students(tenant, 2)  # not in the class

    job = run(tenant, BROADCAST, title="보강 안내", message="토요일 오전 10시에 보강합니다.",
              class_id=str(klass.id))

    wanted = {r[0] for r in sql("SELECT guardian_id FROM student_guardians "
                                "WHERE student_id = ANY(:ids)", ids=[s.id for s in inside])}
    assert {m["guardian_id"] for m in broadcast_messages(job["id"])} == wanted
    assert job["result"]["recipients"] == 3


def test_broadcast_is_paced_by_the_channel_rate_shows_progress_and_resumes_after_a_cancel(
        tenant, configure):
    configure(send_rates={"record": 20.0})
    many_students(tenant, 120)
    job_id = dispatch(tenant, BROADCAST, title="안내", message="천천히 보내는 안내입니다.",
                      chunk_size=10)
    started = time.monotonic()

    seen = wait_for(lambda: (p := (job_row(job_id)["progress"] or {}).get("percent")) and
                    0 < p < 50 and p, timeout=30, interval=0.02,
                    message="the parent to report progress part-way")
    # The parent waits between its looks at the chunks without holding a worker: pending then.
    assert cancel(job_id, reason="paused by the test") in ("processing", "pending")
    wait_for_status(job_id, "cancelled")
    # The chunk runs under way finish their chunk (the parent's own run is stopped by the
    # cancel; chunk jobs not yet started stop on seeing it): wait until nothing more goes out.
    sent_before = settled(job_id)
    # At most the chunks under way (four workers' worth) went out after the cancel.
    assert 0 < seen < 50 and sent_before < 120

    assert requeue([{"id": job_id}])
    done = wait_for_status(job_id, "completed", timeout=60)

    messages = broadcast_messages(job_id)
    assert sorted(m["guardian_id"] for m in messages) == sorted(guardians_of_tenant(tenant))
    assert {m["attempts"] for m in messages} == {1}  # nothing sent twice
    assert done["result"]["recipients"] == 120
    # 120 messages at 20 a second with a burst of 20: five seconds at least, over both runs.
    assert time.monotonic() - started >= 5.0


def test_jobq_job_shows_the_broadcasts_percentage_while_its_chunks_are_sent(tenant, configure):
    # 60 messages at 4 a second: the broadcast is still under way while `jobq job` starts,
    # which takes seconds on a loaded machine (at 15 a second it had finished first).
    configure(send_rates={"record": 4.0})
    many_students(tenant, 60)
    job_id = dispatch(tenant, BROADCAST, title="안내", message="진행률을 보는 안내입니다.",
                      chunk_size=10)
    wait_for(lambda: (p := (job_row(job_id)["progress"] or {}).get("percent")) and p < 100,
             timeout=30, interval=0.02, message="the broadcast to be part-way")

    shown = subprocess.run([sys.executable, "-m", "app.ops.cli", "job", job_id], capture_output=True,
                           text=True, timeout=60, env={**os.environ, "COLUMNS": "200"})

    assert shown.returncode == 0, shown.stderr
    [status_line] = [line for line in shown.stdout.splitlines() if "processing" in line]
    assert re.search(r"processing\s+\d+% \(\d+/60\) broadcast: 6 chunks", status_line), status_line
    assert wait_for_status(job_id, timeout=60)["status"] == "completed"


def settled(job_id: str, quiet: float = 1.5) -> int:
    """The number of the job's messages once it has not changed for ``quiet`` seconds."""
    last, since = -1, time.monotonic()
    while True:
        count = len(broadcast_messages(job_id))
        if count != last:
            last, since = count, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return count
        time.sleep(0.1)


def test_send_rate_bucket_is_shared_by_concurrent_senders(configure):
    configure(send_rates={"kakao": 50.0})
    bucket = ratelimit.bucket_for("kakao", "webhook")
    assert (bucket.name, bucket.rate, bucket.portion) == ("kakao", 50.0, 50)
    assert ratelimit.bucket_for("kakao", "record").rate == 0  # recorded: no outside service
    assert ratelimit.bucket_for("sms", "webhook").rate == 20.0  # the handlers' own default
    name = f"send-rate:kakao-{uuid.uuid4().hex[:6]}"  # a bucket of this test's own, empty
    throttle.acquire(name, 50, rate=bucket.rate)  # drain its first burst
    waits: list[float] = []

    def sender() -> None:
        waits.append(throttle.acquire(name, 25, rate=bucket.rate))

    started = time.monotonic()
    threads = [threading.Thread(target=sender) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    # 100 tokens at 50 a second from an emptied bucket: about two seconds for the last sender,
    # whichever thread it was.
    assert 1.8 <= time.monotonic() - started < 4.0
    assert max(waits) >= 1.8 and min(waits) < max(waits)


def test_single_message_to_a_students_guardians_in_korean(tenant, smtp_server):
    student = make_student(tenant, "박지민", guardians=2, channel="email",
                           email="jimin.parent@example.com")

    job = run(tenant, "communication.exec.send_message", student_id=str(student.id),
              title="상담 일정 안내", message="박지민 학생 학부모 상담은 금요일 오후 4시입니다.",
              all_guardians=True)

    assert job["status"] == "completed", job["error_message"]
    assert job["result"]["recipients"] == 2
    assert len(smtp_server.messages) == 2
    mail = smtp_server.messages[0]
    assert mail["Subject"] == f"[{academy(tenant)}] 상담 일정 안내"
    assert mail.get_content().strip() == (
        f"[{academy(tenant)}] 박지민 학생 학부모 상담은 금요일 오후 4시입니다.")


def test_message_to_a_guardian_without_that_channel_fails_at_once(tenant):
    student = make_student(tenant, "김하늘")
    [(guardian_id,)] = sql("SELECT guardian_id FROM student_guardians WHERE student_id = :s",
                           s=student.id)
    sql("UPDATE guardians SET email = NULL WHERE id = :g", g=guardian_id)

    job = run(tenant, "communication.exec.send_message", guardian_id=str(guardian_id),
              title="안내", message="메일로 보내는 안내", channel="email")

    assert job["status"] == "failed" and job["retry_count"] == 0
    assert "has no email address" in job["error_message"]


def test_refused_message_is_sent_again_to_the_corrected_number_in_the_same_row(
        tenant, gateway):
    student = make_student(tenant, "이준서", channel="sms")
    [(guardian_id,)] = sql("SELECT guardian_id FROM student_guardians WHERE student_id = :s",
                           s=student.id)
    gateway.script = [(400, {"reason": "invalid recipient number"})]
    first = run(tenant, "communication.exec.send_message", guardian_id=str(guardian_id),
                title="안내", message="내일 수업은 휴강입니다.")
    assert first["status"] == "failed" and "invalid recipient number" in first["error_message"]
    sql("UPDATE guardians SET phone = '010-8888-1212' WHERE id = :g", g=guardian_id)

    retry = run(tenant, "communication.exec.retry_failed_deliveries")
    again = run(tenant, "communication.exec.retry_failed_deliveries")

    assert retry["result"] == {"candidates": 1, "sent": 1, "failed": 0, "skipped": 0}
    assert again["result"]["candidates"] == 0
    [note] = broadcast_messages(first["id"])
    assert (note["status"], note["attempts"], note["address"]) == ("sent", 2, "010-8888-1212")
    assert len(gateway.received) == 2 and gateway.received[-1].json()["to"] == "010-8888-1212"
    assert gateway.received[-1].json()["text"] == f"[{academy(tenant)}] 내일 수업은 휴강입니다."


def test_message_left_pending_by_a_job_that_gave_up_is_sent_by_the_retry(tenant, gateway):
    student = make_student(tenant, "배수아", channel="kakao")
    gateway.script = [(503, {"error": "gateway overloaded"})]
    job_id = dispatch_intent.delay(
        tenant_id=tenant, intent_key="communication.exec.send_message", max_retries=0,
        intent_params={"student_id": str(student.id), "title": "안내", "message": "보강 안내"},
    ).get(timeout=15)
    gave_up = wait_for_status(job_id)
    assert gave_up["status"] == "failed" and "gateway overloaded" in gave_up["error_message"]
    [left] = broadcast_messages(job_id)
    assert left["status"] == "pending" and "gateway overloaded" in left["last_error"]

    retry = run(tenant, "communication.exec.retry_failed_deliveries", job_id=job_id)

    assert retry["result"]["sent"] == 1
    [note] = broadcast_messages(job_id)
    assert (note["status"], note["attempts"], note["last_error"]) == ("sent", 2, None)
    assert len(gateway.received) == 2


def test_daily_digest_tells_each_guardian_about_their_childs_day_once(tenant):
    math, english = make_class(tenant, "중등 수학 A반"), make_class(tenant, "중등 영어 A반")
    busy, idle = make_student(tenant, "최유진"), make_student(tenant, "오건우")
    for klass in (math, english):
        enrol(busy, klass)
    enrol(idle, math)
    first = make_session(math, dt.datetime(2026, 11, 25, 8, tzinfo=dt.UTC))  # 17:00 in Seoul
    second = make_session(english, dt.datetime(2026, 11, 25, 10, 30, tzinfo=dt.UTC))
    mark(first, busy, "present")
    mark(second, busy, "late")
    sql("UPDATE attendance_records SET checked_at = :at WHERE session_id = :s",
        at=dt.datetime(2026, 11, 25, 10, 42, tzinfo=dt.UTC), s=second.id)
    make_invoice(enrol(busy, make_class(tenant, "중등 과학 A반")), dt.date(2026, 12, 1), 260_000,
                 dt.date(2026, 11, 27))

    job = run(tenant, "communication.exec.daily_digest", date="2026-11-25")
    again = run(tenant, "communication.exec.daily_digest", date="2026-11-25")

    assert job["status"] == "completed", job["error_message"]
    [note] = broadcast_messages(job["id"])
    assert note["student_id"] == busy.id
    assert note["subject"] == f"[{academy(tenant)}] 11월 25일(수) 최유진 학생 학원 소식"
    assert note["body"] == (
        f"[{academy(tenant)}] 11월 25일(수) 최유진 학생의 학원 소식입니다.\n"
        "- 오후 5시 중등 수학 A반: 출석\n"
        "- 오후 7시 30분 중등 영어 A반: 지각 (오후 7시 42분 도착)\n"
        "- 2026년 12월 중등 과학 A반 수강료 260,000원 납부 기한: 11월 27일(금)")
    assert again["result"]["digests"] == 1 and again["result"]["sent_by_earlier_jobs"] == 1
    assert broadcast_messages(again["id"]) == []
