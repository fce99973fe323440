"""The event streams' and the API's shown values' pure logic: what a stream hands over, why a
stream is closed, what shows redacted, and the stream settings."""

from __future__ import annotations

import pytest

from app.api import schemas
from app.api.watcher import Watch, _why_closed
from app.core.settings import SettingsError, load

JOB, TENANT, KEY = "job-1", "tenant-1", "key-1"


def test_a_watch_hands_over_new_history_in_order_and_a_state_only_when_it_changed():
    watch = Watch(JOB, TENANT, after=0, key_id=KEY)
    watch.events += [{"id": 1, "kind": "created"}, {"id": 2, "kind": "started"}]
    watch.state = {"status": "processing", "progress": {"done": 1}}
    watch.changed.set()
    events, state = watch.take()
    assert [e["id"] for e in events] == [1, 2] and state["status"] == "processing"
    assert not watch.changed.is_set()
    watch.state = {"status": "processing", "progress": {"done": 1}}  # read again, unchanged
    assert watch.take() == ([], None)
    watch.state = {"status": "completed", "progress": {"done": 1}}
    assert watch.take()[1]["status"] == "completed"


def test_a_stream_is_closed_for_a_revoked_key_or_a_tenant_no_longer_active():
    keyed, tokened = Watch(JOB, TENANT, 0, key_id=KEY), Watch(JOB, TENANT, 0, key_id=None)
    assert _why_closed(keyed, {KEY}, {TENANT: "active"}) is None
    assert _why_closed(keyed, set(), {TENANT: "active"})[0] == "revoked"
    assert _why_closed(tokened, set(), {TENANT: "active"}) is None  # a token has no key
    reason, message = _why_closed(tokened, set(), {TENANT: "suspended"})
    assert reason == "tenant" and "suspended" in message
    assert _why_closed(tokened, set(), {})[0] == "tenant"


def test_results_progress_errors_and_event_details_show_redacted():
    row = {"intent_key": "no.such.intent", "intent_params": {"api_token": "t0k"},
           "result": {"card": {"password": "pw1"}, "n": 3},
           "progress": {"done": 1, "message": "logging in with token=t0k"},
           "error_message": "cannot reach postgresql://app:pw2@db/x"}
    shown = schemas.job_out(row)
    assert shown["intent_params"] == {"api_token": "***"}
    assert shown["result"] == {"card": {"password": "***"}, "n": 3}
    assert shown["progress"]["message"] == "logging in with token=***"
    assert shown["error_message"] == "cannot reach postgresql://app:***@db/x"
    event = schemas.event_out({"id": 1, "kind": "requeued", "error": "password=pw3",
                               "detail": {"params": {"old": {"card_number": "4111"}}}},
                              ("card_number",))
    assert event["detail"] == {"params": {"old": {"card_number": "***"}}}
    assert event["error"] == "password=***"
    assert schemas.state_out({"status": "pending"}) == {"status": "pending"}


def test_stream_settings_are_read_from_the_environment():
    found = load({"JOBQ_API_STREAMS_PER_KEY": "3", "JOBQ_API_STREAMS_PER_TENANT": "0",
                  "JOBQ_API_STREAM_MAX_SECONDS": "60"})
    assert (found.api_streams_per_key, found.api_streams_per_tenant,
            found.api_stream_max_seconds) == (3, 0, 60.0)
    defaults = load({})
    assert (defaults.api_streams_per_key, defaults.api_streams_per_tenant) == (20, 100)
    with pytest.raises(SettingsError, match="JOBQ_API_STREAM_MAX_SECONDS"):
        load({"JOBQ_API_STREAM_MAX_SECONDS": "0"})
    with pytest.raises(SettingsError, match="JOBQ_API_STREAMS_PER_KEY"):
        load({"JOBQ_API_STREAMS_PER_KEY": "-1"})
