"""Academies' broadcasts share a KakaoTalk sender account fairly, on real workers against a fake
provider over a real socket (tests/provider.py), which counts what arrives in each clock second
and answers 429 above its rate: no second above the rate, shares by weight, an academy's own
cap held and its unused share used by the others, a daily quota that makes the rest wait with
the reason, and each chunk's wait for the channel in its job's history."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter

import pytest

from app import dispatch_intent
from app.intake.actions import set_channel_limits, set_tenant_limits
from app.run import quota
from tests.fixtures import in_thread_worker, make_tenant, sql, wait_for, wait_for_status

pytestmark = pytest.mark.usefixtures("worker")


@pytest.fixture(scope="module")
def worker():
    """An in-thread worker with room for three academies' parents and all their chunk jobs at once."""
    with in_thread_worker(10) as w:
        yield w

BROADCAST = "communication.exec.broadcast"
#: The provider's rate: what a loaded, shared test machine's in-thread worker sends with room.
RATE = 30


def academy(n: int, guardians: int, weight: float = 1.0) -> tuple[str, str]:
    """A new academy named ``학원N-<id>`` with ``guardians`` guardians on KakaoTalk."""
    tenant = make_tenant()
    name = f"학원{n}-{tenant[:8]}"
    sql("UPDATE tenants SET name = :n WHERE id = :t", n=name, t=tenant)
    if weight != 1.0:
        set_tenant_limits(tenant, weight=weight, by="test")
    sql("INSERT INTO students (tenant_id, name, grade) SELECT CAST(:t AS uuid), '학생' || i, 8 "
        "FROM generate_series(1, :n) i", t=tenant, n=guardians)
    sql("INSERT INTO guardians (tenant_id, name, phone, preferred_channel) "
        "SELECT CAST(:t AS uuid), '보호자' || i, '010-' || lpad(i::text, 4, '0') || '-' || "
        "substr(md5(random()::text), 1, 4), 'kakao' FROM generate_series(1, :n) i",
        t=tenant, n=guardians)
    sql("INSERT INTO student_guardians (student_id, guardian_id, tenant_id, relation) "
        "SELECT s.id, g.id, s.tenant_id, '모' FROM students s JOIN guardians g "
        "ON g.tenant_id = s.tenant_id AND g.name = '보호자' || substring(s.name from 3) "
        "WHERE s.tenant_id = CAST(:t AS uuid)", t=tenant)
    return tenant, name


def broadcast(tenant: str, chunk_size: int = 25) -> str:
    return dispatch_intent.delay(tenant_id=tenant, intent_key=BROADCAST, intent_params={
        "title": "휴원 안내", "message": "내일은 휴원합니다.", "chunk_size": chunk_size,
    }).get(timeout=15)


def sent(job_id: str) -> int:
    return sql("SELECT count(*) FROM notifications WHERE job_id = :j AND status = 'sent'",
               j=job_id)[0][0]


def all_sending(per: dict[str, Counter]) -> list[int]:
    """The whole clock seconds in which every academy had messages arriving."""
    firsts = [min(c) for c in per.values()]
    lasts = [max(c) for c in per.values()]
    return list(range(max(firsts) + 1, min(lasts)))


@pytest.fixture
def kakao(provider, configure):
    """The provider at RATE messages/s and jobq's KakaoTalk rate set to the same."""
    fake = provider.start(rate=RATE)
    configure(send_rates={"kakao": float(RATE)})
    return fake


def test_weights_1_1_2_share_the_provider_rate_with_no_second_over_it(kakao):
    academies = [academy(1, 60), academy(2, 60), academy(3, 120, weight=2)]
    jobs = [broadcast(t) for t, _ in academies]
    for job in jobs:
        assert wait_for_status(job, timeout=120)["status"] == "completed"

    assert kakao.refused == 0
    assert kakao.busiest_second() <= RATE, kakao.per_second()
    per = {name: kakao.per_second(f"[{name}]") for _, name in academies}
    inner = all_sending(per)
    assert len(inner) >= 3, per
    got = {name: sum(c[s] for s in inner) for name, c in per.items()}
    total = sum(got.values())
    # 95% with senders alone (tests/integration/test_quota.py); here every message also
    # costs two database writes on a shared, loaded machine.
    assert total >= 0.90 * RATE * len(inner), (got, inner)
    for (_, name), weight in zip(academies, (1, 1, 2), strict=True):
        assert got[name] / total == pytest.approx(weight / 4, rel=0.10), (
            got, {n: [c[s] for s in inner] for n, c in per.items()})


def test_an_academy_capped_at_10_per_second_keeps_it_and_the_others_use_the_rest(kakao):
    capped, capped_name = academy(1, 60)
    set_channel_limits(capped, "kakao", rate=10, by="test")
    others = [academy(2, 100), academy(3, 100)]
    jobs = [broadcast(t) for t in (capped, *(t for t, _ in others))]
    for job in jobs:
        assert wait_for_status(job, timeout=120)["status"] == "completed"

    assert kakao.refused == 0 and kakao.busiest_second() <= RATE
    mine = kakao.per_second(f"[{capped_name}]")
    assert max(mine.values()) <= 10, mine
    per = {name: kakao.per_second(f"[{name}]") for name in (capped_name, *(n for _, n in others))}
    inner = all_sending(per)
    assert len(inner) >= 3
    theirs = [sum(per[name][second] for _, name in others) for second in inner]
    assert sum(theirs) / len(inner) >= 0.95 * RATE - 10, (theirs, [mine[s] for s in inner])
    # Each chunk's wait for the channel is in its job's history, with the academy's share.
    [event] = sql("SELECT e.detail FROM job_events e JOIN job_executions j ON j.id = e.job_id "
                  "WHERE j.tenant_id = :t AND e.kind = 'throttled' ORDER BY e.at DESC LIMIT 1",
                  t=capped)[0]
    assert event["channel"] == "kakao" and event["waited_s"] > 0
    assert event["share"] <= 10 and set(event["by_reason"]) <= set(quota.REASONS)


def test_a_used_up_daily_quota_makes_the_rest_wait_with_the_reason(kakao):
    tenant, _ = academy(1, 8)
    set_channel_limits(tenant, "kakao", daily=5, by="test")
    job = broadcast(tenant, chunk_size=10)

    waiting = wait_for(lambda: sql(
        "SELECT e.error, j.status, j.run_at > now() + interval '1 minute' FROM job_events e "
        "JOIN job_executions j ON j.id = e.job_id WHERE j.tenant_id = :t "
        "AND e.kind = 'waiting' AND e.error LIKE 'daily quota%'", t=tenant),
        timeout=30, message="a job waiting for the daily quota")
    error, status, later = waiting[0]
    assert error.startswith("daily quota of 5 kakao messages reached (5 sent today); "
                            "waits until ") and error.endswith(" 00:00 KST")
    assert status == "pending" and later
    assert len(kakao.accepted) == 5
    chunk = sql("SELECT c.status, cardinality(c.guardian_ids) FROM broadcast_chunks c "
                "JOIN broadcasts b ON b.id = c.broadcast_id WHERE b.job_id = :j", j=job)
    assert sent(job) == 5 and chunk == [("pending", 8)]  # the other 3 still to go, not dropped
    retries = sql("SELECT retry_count FROM job_executions WHERE tenant_id = :t "
                  "AND error_message LIKE 'daily quota%'", t=tenant)
    assert {r[0] for r in retries} == {0}  # a wait, not a failure

    # Why the job waits says so, wherever it is asked (jobq job, the console, the API).
    from app.intake.waiting import why_waiting

    [waiting_id] = sql("SELECT id::text FROM job_executions WHERE tenant_id = :t AND "
                       "status = 'pending' AND error_message LIKE 'daily quota%' LIMIT 1",
                       t=tenant)[0]
    reasons = why_waiting(waiting_id)
    assert reasons[0].code == "waiting_for" and reasons[0].text.startswith(
        "daily quota of 5 kakao messages reached"), reasons

    # `jobq stats` shows the channel's use, the academy's share and what waits for it.
    shown = subprocess.run([sys.executable, "-m", "app.ops.cli", "stats", "--json"],
                           capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    [kakao_use] = [c for c in json.loads(shown.stdout)["channels"] if c["channel"] == "kakao"]
    assert kakao_use["rate"] == RATE and kakao_use["busiest_second"] <= RATE
    [mine] = [a for a in kakao_use["academies"] if a["tenant_id"] == tenant]
    assert (mine["sent_today"], mine["daily_quota"]) == (5, 5)
    assert mine["jobs_waiting_for_daily_quota"] >= 1
    text_ = subprocess.run([sys.executable, "-m", "app.ops.cli", "stats"], capture_output=True,
                           text=True, timeout=60, env={**os.environ, "COLUMNS": "200"}).stdout
    assert f"kakao: {RATE}/s, used" in text_ and "5/5" in text_, text_


def test_over_a_daily_quota_fails_with_the_reason_when_the_academy_says_so(kakao):
    tenant, _ = academy(1, 4)
    set_channel_limits(tenant, "kakao", daily=2, over_daily="fail", by="test")
    job = broadcast(tenant, chunk_size=10)

    failed = wait_for(lambda: sql(
        "SELECT error_message FROM job_executions WHERE tenant_id = :t AND status = 'failed'",
        t=tenant), timeout=30, message="the chunk to fail on the daily quota")
    assert failed[0][0].startswith("PermanentError: daily quota of 2 kakao messages reached (2 sent today)")
    assert len(kakao.accepted) == 2 and sent(job) == 2


def test_a_traced_broadcast_is_one_trace_its_chunks_sends_and_waits_for_the_channel(
        kakao, traced):
    tenant, _name = academy(1, 40)
    set_channel_limits(tenant, "kakao", rate=10, by="test")  # 40 messages: some seconds' wait
    job = broadcast(tenant, chunk_size=20)
    assert wait_for_status(job, timeout=120)["status"] == "completed"

    trace_id = traced.wait_for(lambda got: [s.trace_id for s in got if s.name == f"run {BROADCAST}"
                                            and s.attributes["jobq.job_id"] == job])[0]
    traced.wait_for(lambda got: len([s for s in got if s.trace_id == trace_id
                                     and s.name == "kakao POST"]) == 40, what="40 sends")
    trace = traced.trace(trace_id)
    # The parent waits for its chunks (not an error); each send is a child of the run that
    # made it (a chunk's, or the parent's own), though a pool of threads makes them.
    parents = [s for s in trace if s.name == f"run {BROADCAST}"]
    assert not any(p.failed for p in parents) and parents[-1].attributes["jobq.outcome"] == (
        "completed")
    chunks = [s for s in trace if s.name == f"run {BROADCAST}_chunk"]
    assert chunks and all(c.attributes["jobq.outcome"] == "completed" for c in chunks)
    sends = [s for s in trace if s.name == "kakao POST"]
    assert {s.parent_id for s in sends} <= {r.span_id for r in chunks + parents}
    assert {s.parent_id for s in sends} & {c.span_id for c in chunks}
    waits = [attrs for c in chunks for name, attrs in c.events if name == "throttled"]
    assert waits and all(w["channel"] == "kakao" and w["waited_s"] > 0 for w in waits)
    assert sum(w["waited_s"] for w in waits) > 1.0  # 40 at 10/s
