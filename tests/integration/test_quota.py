"""The channel quota (app/run/quota.py) on the real Redis and database: many senders in threads
take grants as sending workers do, and the grants per clock second are what a provider sees.
The tests with real workers and a fake provider are tests/handlers/test_channel_quota.py."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import Counter

import pytest

from app.broker import client as broker_client
from app.core.errors import PermanentError, WaitingError
from app.intake.actions import set_channel_limits, set_tenant_limits
from app.run import quota
from app.store import channels, db, tenants
from tests.fixtures import make_tenant


def channel() -> str:
    return f"test-{uuid.uuid4().hex[:8]}"


def send_for(name: str, tenant: str, seconds: float, rate: float, grants: list,
             lock: threading.Lock, senders: int = 2) -> list[threading.Thread]:
    """``senders`` threads of ``tenant`` taking grants of up to 5 messages for ``seconds``,
    each granted message recorded at the clock second it was granted in."""
    def sender() -> None:
        with quota.Channel(name, tenant, rate) as ch:
            end = time.time() + seconds
            while time.time() < end:
                grant = ch.take(5, backlog=1000)
                at = time.time()
                with lock:
                    grants.extend([(int(at), tenant)] * grant.count)
    threads = [threading.Thread(target=sender) for _ in range(senders)]
    for t in threads:
        t.start()
    return threads


def run_senders(name: str, tenant_list: list[str], seconds: float, rate: float) -> list:
    grants: list = []
    lock = threading.Lock()
    threads = [t for tenant in tenant_list
               for t in send_for(name, tenant, seconds, rate, grants, lock)]
    for t in threads:
        t.join()
    return grants


def full_seconds(grants: list) -> list[int]:
    """The clock seconds every sender was at work for (not the first and last, partial)."""
    seconds = sorted({s for s, _ in grants})
    return seconds[1:-1]


def test_weights_1_1_2_share_the_rate_and_no_second_goes_over_it():
    a, b, c = make_tenant(), make_tenant(), make_tenant()
    set_tenant_limits(c, weight=2, by="test")
    grants = run_senders(channel(), [a, b, c], 4.5, 50)

    per_second = Counter(s for s, _ in grants)
    assert max(per_second.values()) <= 50, per_second
    inner = full_seconds(grants)
    by_tenant = Counter(t for s, t in grants if s in inner)
    total = sum(by_tenant.values())
    assert total >= 0.95 * 50 * len(inner), (total, inner)
    for tenant, weight in ((a, 1), (b, 1), (c, 2)):
        assert by_tenant[tenant] / total == pytest.approx(weight / 4, rel=0.10), by_tenant


def test_a_capped_academy_keeps_its_cap_and_its_unused_share_goes_to_the_others():
    a, b, capped = make_tenant(), make_tenant(), make_tenant()
    limits = set_channel_limits(capped, "kakao-test", rate=10, by="test")
    assert limits["rate"] == 10
    name = channel()
    with db.engine().begin() as conn:  # the same limits on this test's own channel
        channels.set_channel_limits(conn, capped, name, by="test", rate=10, daily=None,
                                   over_daily=None)
    grants = run_senders(name, [a, b, capped], 4.5, 50)

    inner = full_seconds(grants)
    per_tenant_second = Counter((s, t) for s, t in grants)
    assert max(n for (s, t), n in per_tenant_second.items() if t == capped) <= 10
    for s in inner:
        assert per_tenant_second[(s, capped)] >= 9
        assert per_tenant_second[(s, a)] + per_tenant_second[(s, b)] >= 38  # 50 - 10, rounded
        assert abs(per_tenant_second[(s, a)] - per_tenant_second[(s, b)]) <= 3


def test_each_seconds_record_says_who_asked_who_was_sending_and_what_each_got():
    # What bench fairness g reads to tell a quota's division from the senders' own gaps.
    a, b = make_tenant(), make_tenant()
    name = channel()
    grants = run_senders(name, [a, b], 2.5, 40)
    recorded = {}
    for raw in broker_client.client().lrange(quota.keys_of(name)[4], 0, -1):
        flat = json.loads(raw)
        entry = dict(zip(flat[::2], flat[1::2], strict=True))
        recorded[int(entry["at"])] = entry
    for second in full_seconds(grants):
        entry = recorded[second]
        for tenant in (a, b):
            got = sum(1 for s, t in grants if s == second and t == tenant)
            assert int(entry[f"t:{tenant}"]) == got
            assert int(entry[f"p2:{tenant}"]) == got  # both were sending all second
            assert int(entry[f"a:{tenant}"]) >= 1 and entry[f"in:{tenant}"] == "1"
            assert int(entry.get(f"b:{tenant}", 0)) <= got


def test_an_academy_alone_gets_the_whole_rate():
    alone = make_tenant()
    grants = run_senders(channel(), [alone], 3.5, 40)
    per_second = Counter(s for s, _ in grants)
    assert max(per_second.values()) <= 40
    assert all(per_second[s] == 40 for s in full_seconds(grants)), per_second


def test_a_used_up_daily_quota_waits_with_the_reason_or_fails_by_the_academys_setting():
    tenant = make_tenant()
    name = channel()
    with db.engine().begin() as conn:
        channels.set_channel_limits(conn, tenant, name, by="test", rate=None, daily=7,
                                   over_daily=None)
    with quota.Channel(name, tenant, 100) as ch:
        assert ch.take(5).count == 5
        assert ch.take(5).count == 2  # the rest of the day's 7
        with pytest.raises(WaitingError) as waiting:
            ch.take(5)
    assert f"daily quota of 7 {name} messages reached (7 sent today); waits until" \
        in str(waiting.value)
    assert 0 < waiting.value.retry_after <= 86_401
    with db.engine().begin() as conn:
        channels.set_channel_limits(conn, tenant, name, by="test", rate=None, daily=None,
                                   over_daily="fail")
    time.sleep(quota.LIMITS_TTL)
    with quota.Channel(name, tenant, 100) as ch, pytest.raises(PermanentError) as failed:
        ch.take(1)
    assert "daily quota of 7" in str(failed.value) and "fails what is over it" in str(
        failed.value)


def test_channel_limits_are_checked_and_audited():
    tenant = make_tenant()
    with pytest.raises(ValueError, match="rate must be messages per second"):
        set_channel_limits(tenant, "kakao", rate=-1, by="test")
    with pytest.raises(ValueError, match="channel must be a lowercase name"):
        set_channel_limits(tenant, "Kakao Talk", rate=1, by="test")
    with pytest.raises(ValueError, match="over_daily must be wait or fail"):
        set_channel_limits(tenant, "kakao", over_daily="drop", by="test")
    set_channel_limits(tenant, "kakao", rate=10, daily=5000, by="cli:ops")
    after = set_channel_limits(tenant, "kakao", rate=0, by="cli:ops")
    assert after == {"rate": None, "daily": 5000, "over_daily": "wait"}
    with db.engine().connect() as conn:
        events = tenants.tenant_events(conn, tenant)
        assert channels.channel_limits(conn, tenant) == {"kakao": after}
    assert [(e["kind"], e["by"], e["detail"]["rate"]) for e in events] == [
        ("limits", "cli:ops", 10), ("limits", "cli:ops", None)]
    assert events[1]["was"] == "kakao rate 10, daily 5000"
