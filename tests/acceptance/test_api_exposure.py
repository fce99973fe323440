"""What the API shows to whom, over real HTTP: /metrics (every academy's numbers) to operator
keys only, and a job's secrets (declared secret fields, secret-looking keys, passwords in text)
as ``***`` in its result, progress and history, read, listed or streamed, as Flower shows them.
"""

from __future__ import annotations

import json
import random
import uuid

import pytest

from app.api.keys import KeyRefused
from tests.api import ApiProcess, hs256_token, make_key
from tests.fixtures import make_tenant, sql, wait_for, wait_for_status
from tests.sse import EventStream

CARD = f"4111-{random.randrange(10**11, 10**12)}"
TOKEN = f"tok-{uuid.uuid4().hex[:12]}"
NEW_CARD = f"5500-{random.randrange(10**11, 10**12)}"


@pytest.fixture(scope="module")
def api(start_api) -> ApiProcess:
    return start_api({"JOBQ_API_RATE_LIMIT": "0"})


def test_an_operator_key_sets_an_academys_channel_limits_live_and_audited(api):
    academy = make_tenant()
    operator = api.client(make_key(None, scopes=("tenants:write",)), **{"X-Jobq-Tenant": academy})

    changed = operator.put("/v1/tenant/channels/kakao", json={"rate": 10, "daily": 5000})
    assert changed.status_code == 200, changed.text
    assert changed.json() == {"tenant_id": academy, "channel": "kakao", "rate": 10.0,
                              "daily": 5000, "over_daily": "wait"}
    again = operator.put("/v1/tenant/channels/kakao", json={"over_daily": "fail", "rate": 0})
    assert again.json()["rate"] is None and again.json()["over_daily"] == "fail"
    bad = operator.put("/v1/tenant/channels/Kakao Talk", json={"rate": 5})
    assert bad.status_code == 422 and bad.json()["field"] == "channel", bad.text
    negative = operator.put("/v1/tenant/channels/kakao", json={"daily": -1})
    assert negative.status_code == 422 and "daily" in negative.json()["field"], negative.text
    # The academy's own key cannot raise its plan, nor be given the scope.
    own = api.client(make_key(academy, scopes=("jobs:read", "jobs:write")))
    assert own.put("/v1/tenant/channels/kakao", json={"rate": 50}).status_code == 403
    with pytest.raises(KeyRefused, match="tenants:write is for operator keys only"):
        make_key(academy, scopes=("jobs:read", "tenants:write"))
    events = sql("SELECT detail, by FROM tenant_events WHERE tenant_id = CAST(:t AS uuid) "
                 "AND kind = 'limits' ORDER BY at, id", t=academy)
    assert [(e[0]["rate"], e[0]["daily"], e[0]["over_daily"]) for e in events] == [
        (10, 5000, "wait"), (None, 5000, "fail")]
    assert all(e[1].startswith("api:") for e in events)


def test_metrics_are_for_operator_keys_only(api):
    mine, theirs = make_tenant(), make_tenant()
    made = api.client(make_key(theirs)).post(
        "/v1/jobs", json={"intent_key": "test.exec.approved_echo"})
    assert made.status_code == 201
    operator = api.client(make_key(None, scopes=("metrics:read",)))
    scraped = operator.get("/metrics")
    assert scraped.status_code == 200 and f'tenant="{theirs}"' in scraped.text

    # A tenant key cannot be given the scope any more...
    with pytest.raises(KeyRefused, match="metrics:read is for operator keys only"):
        make_key(mine, scopes=("jobs:read", "metrics:read"))
    # ...and one that has it from before is refused, as is a token claiming it (a token's
    # scopes are cut to a tenant's).
    old_key = make_key(mine, scopes=("jobs:read",))
    sql("UPDATE api_keys SET scopes = ARRAY['jobs:read', 'metrics:read'] "
        "WHERE tenant_id = CAST(:t AS uuid)", t=mine)
    refused = api.client(old_key).get("/metrics")
    assert refused.status_code == 403, refused.text
    assert "only an operator key" in refused.json()["error"] and theirs not in refused.text
    token = api.client(hs256_token(mine, scope="jobs:read metrics:read")).get("/metrics")
    assert token.status_code == 403 and theirs not in token.text
    assert api.client(old_key).get("/v1/jobs").status_code == 200  # its own jobs still


def _assert_hidden(where: str, text: str) -> None:
    for secret in (CARD, TOKEN, NEW_CARD):
        assert secret not in text, f"{secret!r} shows in {where}"


@pytest.mark.usefixtures("worker")
def test_a_jobs_secrets_show_redacted_in_its_result_progress_history_and_stream(api):
    tenant = make_tenant()
    client = api.client(make_key(tenant))
    secrets = {"card_number": CARD, "api_token": TOKEN, "note": "3월 수강료"}
    # Refused at first run, then retried on corrected parameters: the retry's event keeps the
    # old and the new parameters in its detail.
    failed = client.post("/v1/jobs", json={"intent_key": "test.exec.use_secrets",
                                           "intent_params": {**secrets, "fail": True}}).json()
    wait_for_status(failed["id"], "failed")
    corrected = {**secrets, "card_number": NEW_CARD}
    retried = client.post(f"/v1/jobs/{failed['id']}/retry", json={"intent_params": corrected})
    assert retried.status_code == 200, retried.text
    # A job whose progress message names the token and whose result holds the secrets.
    job = client.post("/v1/jobs", json={"intent_key": "test.exec.report_secrets",
                                        "intent_params": secrets}).json()
    stream = EventStream(api.url, f"/v1/jobs/{job['id']}/events", make_key(tenant))
    assert stream.status == 200
    wait_for(lambda: stream.ended, 30, message="the stream to end with its job")
    wait_for_status(failed["id"], "completed")
    stored = wait_for_status(job["id"], "completed")
    assert stored["result"]["api_token"] == TOKEN and TOKEN in stored["progress"]["message"]

    shown = client.get(f"/v1/jobs/{job['id']}").json()
    assert shown["result"] == {"card_number": "***", "api_token": "***", "note": "3월 수강료",
                               "fail": False}
    assert shown["progress"]["message"] == "charged the card with token=***"
    again = client.get(f"/v1/jobs/{failed['id']}").json()
    requeued = next(e for e in again["events"] if e["kind"] == "requeued")
    assert requeued["detail"]["params"]["old"]["card_number"] == "***"
    assert requeued["detail"]["params"]["new"]["api_token"] == "***"
    listed = client.get("/v1/jobs").text
    states = stream.of("state")
    assert states[-1]["result"]["card_number"] == "***"
    assert states[-1]["progress"]["message"] == "charged the card with token=***"
    replay = EventStream(api.url, f"/v1/jobs/{failed['id']}/events", make_key(tenant))
    wait_for(lambda: replay.ended, 30, message="the finished job's stream to end")
    assert any(h["kind"] == "requeued" for h in replay.of("history"))
    for where, text in (("GET /v1/jobs/{id}", json.dumps(shown, ensure_ascii=False)),
                        ("its history", json.dumps(again, ensure_ascii=False)),
                        ("GET /v1/jobs", listed),
                        ("the event stream", json.dumps(stream.frames, ensure_ascii=False)),
                        ("the retried job's stream", json.dumps(replay.frames,
                                                                ensure_ascii=False))):
        _assert_hidden(where, text)
