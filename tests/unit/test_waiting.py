"""Why a job waits, from the facts the store reads (app.intake.waiting.explain): every reason
the console, `jobq job` and the API give, in the order the engine meets them."""

from __future__ import annotations

import datetime as dt

from app.intake.waiting import explain

NOW = dt.datetime(2026, 12, 7, 3, 0, tzinfo=dt.UTC)


def facts(**changes) -> dict:
    base = {"status": "pending", "tenant_id": "t-1", "tenant_name": "해오름 학원",
            "tenant_status": "active", "queue": "realtime", "db_now": NOW,
            "due": NOW - dt.timedelta(seconds=5), "published_at": None, "error_message": None,
            "requested_by": None, "approval_expires_at": None, "cap": None, "busy": None,
            "per_queue": False, "own_ahead": 0, "academies_ahead": 0, "in_flight": None}
    return {**base, **changes}


def codes(found) -> list[str]:
    return [r.code for r in found]


def test_a_job_nothing_holds_is_next():
    found = explain(facts(), frozenset({"realtime"}))
    assert codes(found) == ["next"] and "next in queue realtime" in found[0].text


def test_a_capped_academy_says_which_cap_and_how_full():
    found = explain(facts(cap=3, busy=3, per_queue=True), frozenset({"realtime"}))
    assert codes(found) == ["academy_at_cap"]
    assert found[0].text == ("academy 해오름 학원 is at its cap: 3 of at most 3 jobs running or "
                             "handed to a worker on queue realtime")
    assert codes(explain(facts(cap=3, busy=2), None)) == ["next"]


def test_jobs_ahead_in_fair_order_are_counted_and_a_big_count_says_plus():
    found = explain(facts(own_ahead=12, academies_ahead=1), None)
    assert found[0].text == ("it is behind 12 older job(s) of its own academy and 1 other "
                             "academy whose turn comes first in queue realtime's fair order")
    many = explain(facts(own_ahead=10_000), None)
    assert "10,000+ older job(s)" in many[0].text


def test_suspended_future_and_unserved_reasons_come_together():
    later = NOW + dt.timedelta(minutes=3, seconds=20)
    found = explain(facts(tenant_status="suspended", due=later, error_message="boom"),
                    frozenset({"bulk"}))
    assert codes(found) == ["academy_suspended", "run_at_future", "no_worker"]
    assert "(a retry's backoff), in 3 min 20 s" in found[1].text
    assert "celery -A app worker -Q realtime" in found[2].text


def test_approval_handed_over_unrouted_and_finished_jobs():
    asked = explain(facts(status="awaiting_approval", requested_by="api:web"), None)
    assert codes(asked) == ["awaiting_approval"] and "(asked by api:web)" in asked[0].text
    handed = explain(facts(published_at=NOW, in_flight=4), frozenset({"realtime"}))
    assert codes(handed) == ["handed_to_worker"] and "with 4 job(s)" in handed[0].text
    assert codes(explain(facts(queue=None), None)) == ["unrouted"]
    assert explain(facts(status="completed"), None) == []
