"""The HTTP API over real HTTP: ``jobq api`` (uvicorn) processes on free ports, real PostgreSQL
and Redis, an in-thread worker running the jobs. Every route's round trip, who may call (keys,
JWTs by secret and by JWKS, scopes, revocation, expiry, tenants), the event stream of a running
job, approvals, the rate limit across processes, tenants that never reach each other's jobs,
bad input (hypothesis), the OpenAPI document, and /metrics from the table.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import httpx
import jwt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.academy import late_fees, overdue_invoices
from tests.api import ApiProcess, hs256_token, make_key
from tests.fixtures import event_kinds, job_events, job_row, make_tenant, sql, wait_for_status

pytestmark = pytest.mark.usefixtures("worker")


@pytest.fixture(scope="module")
def api(start_api, jwks) -> ApiProcess:
    return start_api({"JOBQ_JWT_JWKS_URL": jwks.url, "JOBQ_API_RATE_LIMIT": "0",
                      "JOBQ_METRICS_TOP_TENANTS": "2"})


@pytest.fixture(scope="module")
def academy() -> str:
    return make_tenant()


@pytest.fixture(scope="module")
def other_academy() -> str:
    return make_tenant()


@pytest.fixture(scope="module")
def key(academy) -> str:
    return make_key(academy, name="web")


@pytest.fixture(scope="module")
def client(api, key) -> httpx.Client:
    return api.client(key)


def post_job(client: httpx.Client, body: dict[str, Any], **headers: str) -> httpx.Response:
    return client.post("/v1/jobs", json=body, headers=headers)


# --- the routes -------------------------------------------------------------------------------


def test_a_job_asked_for_over_http_runs_and_names_its_caller(client, academy):
    created = post_job(client, {"intent_key": "system.exec.echo",
                                "intent_params": {"word": "안녕"}})
    assert created.status_code == 201, created.text
    job = created.json()
    assert (job["tenant_id"], job["status"], job["requested_by"]) == (academy, "pending", "api:web")
    wait_for_status(job["id"], "completed")
    shown = client.get(f"/v1/jobs/{job['id']}").json()
    assert shown["status"] == "completed" and shown["result"] == {"word": "안녕"}
    kinds = [e["kind"] for e in shown["events"]]
    assert kinds == ["created", "started", "completed"]
    assert shown["events"][0]["detail"] == {"source": "api", "by": "api:web"}


def test_a_new_job_is_answered_as_a_later_read_shows_it(client):
    created = post_job(client, {"intent_key": "test.exec.approved_echo",
                                "intent_params": {"token": "s3cret", "n": 2},
                                "run_at": "2099-03-01T09:00:00+09:00", "max_retries": 1})
    assert created.status_code == 201
    body = created.json()
    shown = client.get(f"/v1/jobs/{body['id']}").json()
    assert body == {k: v for k, v in shown.items() if k not in ("events", "waiting")}
    assert body["run_at"] == "2099-03-01T00:00:00Z" and body["intent_params"]["token"] == "***"


def test_a_repeated_idempotency_key_returns_the_same_job_with_200(client):
    body = {"intent_key": "system.exec.echo", "intent_params": {"n": 1}}
    key = f"order-{uuid.uuid4().hex[:8]}"
    first = post_job(client, body, **{"Idempotency-Key": key})
    again = post_job(client, body, **{"Idempotency-Key": key})
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()["id"] == again.json()["id"]
    assert sql("SELECT count(*) FROM job_executions WHERE idempotency_key = :k", k=key)[0][0] == 1


def test_a_reused_idempotency_key_for_another_request_answers_409_naming_it(client, academy):
    # Issue 22 (10): a different request under a used key got the old job back with 200.
    body = {"intent_key": "system.exec.echo", "intent_params": {"n": 1},
            "run_at": "2099-03-01T09:00:00+09:00"}
    key = f"order-{uuid.uuid4().hex[:8]}"
    first = post_job(client, body, **{"Idempotency-Key": key})
    assert first.status_code == 201
    job = first.json()
    for change in ({"intent_params": {"n": 2}}, {"intent_params": {}},
                   {"run_at": "2099-03-01T10:00:00+09:00"},
                   {"intent_key": "system.exec.sleep", "intent_params": {"seconds": 1}}):
        clash = post_job(client, {**body, **change}, **{"Idempotency-Key": key})
        assert clash.status_code == 409, clash.text
        problem = clash.json()
        assert problem["error"].startswith(f"Idempotency-Key {key!r} was already used for a "
                                           f"different request (job {job['id']})")
        assert (problem["field"], problem["job_id"]) == ("Idempotency-Key", job["id"])
    same = post_job(client, {**body, "run_at": "2099-03-01T00:00:00Z"}, **{"Idempotency-Key": key})
    assert same.status_code == 200 and same.json() == job
    assert sql("SELECT count(*) FROM job_executions WHERE tenant_id = :t AND created_at >= :at",
               t=academy, at=job["created_at"])[0][0] == 1
    assert [k for _, k in event_kinds(job["id"])] == ["created"]


def test_a_refusal_answers_422_naming_the_field_and_keeps_its_failed_row(client):
    refused = post_job(client, {"intent_key": "system.exec.sleep",
                                "intent_params": {"seconds": "soon"}})
    assert refused.status_code == 422
    problem = refused.json()
    assert problem["field"] == "intent_params.seconds"
    assert "seconds" in problem["error"] and "valid number" in problem["error"]
    row = job_row(problem["job_id"])
    assert row["status"] == "failed" and row["error_message"] == problem["error"]
    unknown = post_job(client, {"intent_key": "system.exec.slep"})
    assert unknown.status_code == 422 and "did you mean 'system.exec.sleep'" in unknown.json()["error"]
    extra = post_job(client, {"intent_key": "system.exec.echo", "colour": "red"})
    assert extra.status_code == 422 and extra.json()["field"] == "colour"


def test_jobs_are_listed_newest_first_a_page_at_a_time_by_cursor(api):
    tenant = make_tenant()
    client = api.client(make_key(tenant))
    ids = [post_job(client, {"intent_key": "test.exec.approved_echo",
                             "intent_params": {"i": i}}).json()["id"] for i in range(5)]
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = client.get("/v1/jobs", params=params).json()
        seen += [j["id"] for j in page["jobs"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(ids)) and pages == 3
    only = client.get("/v1/jobs", params={"status": "awaiting_approval",
                                          "intent": "test.*", "since": "1h"}).json()
    assert len(only["jobs"]) == 5
    # A window's upper end: these five were created in the last hour, not before it.
    assert client.get("/v1/jobs", params={"intent": "test.*", "since": "1h", "until": "1m"}
                      ).json()["jobs"] == []
    assert client.get("/v1/jobs", params={"intent": "test.*", "until": "2099-01-01"}
                      ).json()["jobs"][:5] == only["jobs"]
    assert client.get("/v1/jobs", params={"status": "nonsense"}).status_code == 422
    assert client.get("/v1/jobs", params={"cursor": "garbage"}).status_code == 422


def test_cancel_and_retry_over_http_are_audited_with_the_caller(client):
    job = post_job(client, {"intent_key": "system.exec.echo", "run_at": "2099-01-01T00:00:00Z"}
                   ).json()
    cancelled = client.post(f"/v1/jobs/{job['id']}/cancel", json={"reason": "wrong class"})
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    again = client.post(f"/v1/jobs/{job['id']}/cancel")
    assert again.status_code == 409 and "cancelled" in again.json()["error"]
    retried = client.post(f"/v1/jobs/{job['id']}/retry")
    assert retried.status_code == 200  # it runs at once: pending, or further already
    assert retried.json()["status"] in ("pending", "processing", "completed")
    wait_for_status(job["id"], "completed")
    details = [(e["kind"], (e["detail"] or {}).get("by")) for e in job_events(job["id"])]
    assert ("cancelled", "api:web") in details and ("requeued", "api:web") in details
    assert job_row(job["id"])["error_message"] is None


def test_retry_on_corrected_parameters_and_refused_ones(client):
    refused = post_job(client, {"intent_key": "system.exec.sleep",
                                "intent_params": {"seconds": "soon"}}).json()
    bad = client.post(f"/v1/jobs/{refused['job_id']}/retry",
                      json={"intent_params": {"seconds": -1}})
    assert bad.status_code == 422 and "seconds" in bad.json()["error"]
    fixed = client.post(f"/v1/jobs/{refused['job_id']}/retry",
                        json={"intent_params": {"seconds": 0.01}})
    assert fixed.status_code == 200, fixed.text
    assert wait_for_status(refused["job_id"], "completed")["intent_params"] == {"seconds": 0.01}


def test_a_job_whose_parameters_were_not_kept_is_retried_only_on_new_ones(client, academy):
    # Issue 22 (8): a plain retry ran late fees on the intent's defaults (5% after 7 days).
    old, recent = overdue_invoices(academy)
    refused = post_job(client, {"intent_key": "billing.exec.apply_late_fees",
                                "intent_params": {"percent": 1, "grace_days": 30,
                                                  "note": "x" * 70_000}})
    assert refused.status_code == 422
    job_id = refused.json()["job_id"]
    assert client.get(f"/v1/jobs/{job_id}").json()["intent_params"] is None

    for body in (None, {}, {"intent_params": None}):
        again = client.post(f"/v1/jobs/{job_id}/retry", json=body)
        assert again.status_code == 422, again.text
        problem = again.json()
        assert problem["field"] == "intent_params"
        assert f"job {job_id} was refused and its parameters were not kept" in problem["error"]
        assert '{"intent_params": {...}}' in problem["error"]
    row = job_row(job_id)
    assert (row["status"], row["intent_params"]) == ("failed", None)
    assert [k for _, k in event_kinds(job_id)] == ["refused"]
    assert late_fees(academy) == {old.id: 0, recent.id: 0}

    fixed = client.post(f"/v1/jobs/{job_id}/retry", json={"intent_params": {
        "percent": 1, "grace_days": 30, "notify_guardians": False}})
    assert fixed.status_code == 200, fixed.text
    assert wait_for_status(job_id, "completed")["result"]["invoices"] == 1
    assert late_fees(academy) == {old.id: 5_000, recent.id: 0}


def test_intents_are_listed_with_their_parameter_schemas(client):
    intents = {i["key"]: i for i in client.get("/v1/intents").json()}
    sleep = intents["system.exec.sleep"]
    assert sleep["params_schema"]["properties"]["seconds"]["type"] == "number"
    assert intents["test.exec.approved_echo"]["requires_approval"] is True
    assert intents["attendance.exec.notify_guardians_late"]["description"]


def test_the_served_openapi_document_is_valid_and_documents_the_routes(api):
    from openapi_spec_validator import validate

    document = httpx.get(api.url + "/openapi.json").json()
    validate(document)
    paths = document["paths"]
    for path in ("/v1/jobs", "/v1/jobs/{job_id}", "/v1/jobs/{job_id}/cancel",
                 "/v1/jobs/{job_id}/retry", "/v1/jobs/{job_id}/approve",
                 "/v1/jobs/{job_id}/reject", "/v1/jobs/{job_id}/events", "/v1/intents"):
        assert path in paths, path
    assert "Idempotency-Key" in json.dumps(paths["/v1/jobs"]["post"]["parameters"])
    docs = httpx.get(api.url + "/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()


# --- the event stream -------------------------------------------------------------------------


def read_stream(client: httpx.Client, path: str, timeout: float = 30) -> list[tuple[str, Any]]:
    frames: list[tuple[str, Any]] = []
    with client.stream("GET", path, timeout=timeout) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        kind = None
        for line in response.iter_lines():
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: "):
                frames.append((kind, json.loads(line[6:])))
                if kind == "end":
                    break
    return frames


def test_the_event_stream_carries_a_running_jobs_progress_until_it_ends(client):
    job = post_job(client, {"intent_key": "system.exec.sleep",
                            "intent_params": {"seconds": 2}}).json()
    frames = read_stream(client, f"/v1/jobs/{job['id']}/events")
    states = [data for kind, data in frames if kind == "state"]
    running = [s["progress"]["percent"] for s in states
               if s["status"] == "processing" and s["progress"]]
    assert any(0 < p < 100 for p in running), states
    history = [data["kind"] for kind, data in frames if kind == "history"]
    assert history == ["created", "started", "completed"]
    assert frames[-1] == ("end", {"id": job["id"], "status": "completed"})
    assert states[-1]["result"] == {"slept": 2.0}


# --- approvals --------------------------------------------------------------------------------


def test_a_job_awaiting_approval_runs_once_approved_and_the_decision_is_audited(api, academy):
    teacher = api.client(hs256_token(academy, sub="teacher-7",
                                     scope="jobs:read jobs:write jobs:approve"))
    job = post_job(teacher, {"intent_key": "system.exec.echo", "intent_params": {"card": 1},
                             "requires_approval": True}).json()
    assert job["status"] == "awaiting_approval" and job["approval_expires_at"]
    assert event_kinds(job["id"]) == [(0, "created")]  # nothing started it
    approved = teacher.post(f"/v1/jobs/{job['id']}/approve", json={"note": "확인함"})
    assert approved.status_code == 200 and approved.json()["status"] in ("pending", "processing",
                                                                       "completed")
    wait_for_status(job["id"], "completed")
    decision = [e for e in job_events(job["id"]) if e["kind"] == "approved"]
    assert decision[0]["detail"] == {"by": "jwt:teacher-7", "note": "확인함"}
    assert teacher.post(f"/v1/jobs/{job['id']}/approve").status_code == 409


def test_a_rejected_job_never_runs_and_an_intent_can_require_approval(client):
    job = post_job(client, {"intent_key": "test.exec.approved_echo"}).json()
    assert job["status"] == "awaiting_approval"
    rejected = client.post(f"/v1/jobs/{job['id']}/reject", json={"reason": "중복 요청"})
    assert rejected.status_code == 200
    row = rejected.json()
    assert (row["status"], row["error_message"]) == ("cancelled", "중복 요청")
    assert [k for _, k in event_kinds(job["id"])] == ["created", "rejected"]
    assert job_row(job["id"])["executed_at"] is None


def test_a_cancel_and_a_retry_do_not_run_an_unapproved_job(api, academy):
    writer = api.client(make_key(academy, scopes=("jobs:read", "jobs:write")))
    job = post_job(writer, {"intent_key": "system.exec.echo", "requires_approval": True}).json()
    assert writer.post(f"/v1/jobs/{job['id']}/cancel").status_code == 200
    retried = writer.post(f"/v1/jobs/{job['id']}/retry")
    assert retried.status_code == 200 and retried.json()["status"] == "awaiting_approval"
    assert retried.json()["approval_expires_at"]
    kinds = [k for _, k in event_kinds(job["id"])]
    assert kinds == ["created", "cancelled", "requeued"] and "started" not in kinds
    assert job_row(job["id"])["published_at"] is None


def test_approving_needs_its_own_scope(api, academy):
    writer = api.client(make_key(academy, scopes=("jobs:read", "jobs:write")))
    job = post_job(writer, {"intent_key": "test.exec.approved_echo"}).json()
    refused = writer.post(f"/v1/jobs/{job['id']}/approve")
    assert refused.status_code == 403 and "jobs:approve" in refused.json()["error"]
    assert job_row(job["id"])["status"] == "awaiting_approval"


def test_the_sweep_never_publishes_an_unapproved_job_and_beat_expires_it(
        client, start_beat_process):
    from app.beat.caretaking import caretaker_notes

    job = post_job(client, {"intent_key": "test.exec.approved_echo"}).json()
    beat = start_beat_process(env={"JOBQ_RECOVER_INTERVAL": "0.5"})

    def sweeps() -> float:
        return caretaker_notes().get("sweep_due_jobs", {}).get("runs", 0)

    before = sweeps()
    from tests.fixtures import wait_for

    wait_for(lambda: sweeps() >= before + 3, 20, message="three sweeps")
    row = job_row(job["id"])
    assert (row["status"], row["published_at"], row["executed_at"]) == (
        "awaiting_approval", None, None)
    sql("UPDATE job_executions SET approval_expires_at = now() - interval '1 second' "
        "WHERE id = CAST(:id AS uuid)", id=job["id"])
    expired = wait_for_status(job["id"], "cancelled", timeout=20)
    assert expired["error_message"].startswith("approval expired")
    assert [k for _, k in event_kinds(job["id"])] == ["created", "expired"]
    assert beat.proc.poll() is None


# --- who may call -----------------------------------------------------------------------------


def test_requests_without_valid_credentials_are_refused_with_401(api, academy):
    job_path = "/v1/jobs"
    assert httpx.get(api.url + job_path).status_code == 401
    wrong = api.client("jq_" + "x" * 43).get(job_path)
    assert wrong.status_code == 401 and "unknown or revoked" in wrong.json()["error"]
    assert api.client("not-a-token").get(job_path).status_code == 401
    forged = api.client(hs256_token(academy, secret="not-the-secret-of-this-server-at-all-0123456789")).get(job_path)
    assert forged.status_code == 401 and "invalid token" in forged.json()["error"]
    expired = api.client(hs256_token(academy, expires_in=-60)).get(job_path)  # past the leeway
    assert expired.status_code == 401 and "expired" in expired.json()["error"]


def test_a_revoked_key_is_refused_at_its_next_request(api, academy):
    from tests.commands import jobq

    name = f"tablet-{uuid.uuid4().hex[:6]}"
    made = jobq("keys", "create", "--tenant", academy, "--name", name, "--scopes", "jobs:read")
    assert made.returncode == 0, made.stderr
    secret = made.stdout.strip()
    client = api.client(secret)
    assert client.get("/v1/jobs").status_code == 200
    listed = jobq("keys", "list", "--tenant", academy, "--json")
    mine = next(k for k in json.loads(listed.stdout) if k["name"] == name)
    assert mine["last_used_at"] is not None and secret not in listed.stdout
    assert jobq("keys", "revoke", name, "--tenant", academy).returncode == 0
    refused = client.get("/v1/jobs")
    assert refused.status_code == 401 and "revoked" in refused.json()["error"]


def test_scopes_are_checked_per_route(api, academy):
    reader = api.client(make_key(academy, scopes=("jobs:read",)))
    assert reader.get("/v1/jobs").status_code == 200
    refused = post_job(reader, {"intent_key": "system.exec.echo"})
    assert refused.status_code == 403 and "jobs:write" in refused.json()["error"]
    assert reader.get("/metrics").status_code == 403
    read_only_token = api.client(hs256_token(academy, scope="jobs:read"))
    assert post_job(read_only_token, {"intent_key": "system.exec.echo"}).status_code == 403


def test_a_jwks_signed_token_acts_for_the_tenant_its_claim_names(api, jwks, academy):
    token = jwks.token(sub="user-42", exp=int(time.time()) + 60,
                       app_metadata={"tenant_id": academy})
    created = post_job(api.client(token), {"intent_key": "system.exec.echo"})
    assert created.status_code == 201 and created.json()["requested_by"] == "jwt:user-42"
    no_tenant = jwks.token(sub="user-42", exp=int(time.time()) + 60)
    refused = api.client(no_tenant).get("/v1/jobs")
    assert refused.status_code == 403 and "names no tenant" in refused.json()["error"]
    expired = jwks.token(sub="user-42", exp=int(time.time()) - 60,
                         app_metadata={"tenant_id": academy})
    assert api.client(expired).get("/v1/jobs").status_code == 401
    from cryptography.hazmat.primitives.asymmetric import rsa

    impostor = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = jwt.encode({"sub": "user-42", "exp": int(time.time()) + 60,
                         "app_metadata": {"tenant_id": academy}}, impostor, algorithm="RS256",
                        headers={"kid": jwks.kid})
    answer = api.client(forged).get("/v1/jobs")
    assert answer.status_code == 401 and "invalid token" in answer.json()["error"]


def test_a_key_cannot_name_another_tenant_than_its_own(api, academy, other_academy):
    ours = api.client(make_key(academy), **{"X-Jobq-Tenant": other_academy})
    refused = ours.get("/v1/jobs")
    assert refused.status_code == 403 and "another tenant" in refused.json()["error"]


def test_an_operator_key_names_the_tenant_of_each_request(api, academy, other_academy):
    operator = make_key(None, scopes=("jobs:read", "jobs:write"))
    mine = post_job(api.client(operator, **{"X-Jobq-Tenant": academy}),
                    {"intent_key": "system.exec.echo"})
    assert mine.status_code == 201 and mine.json()["tenant_id"] == academy
    elsewhere = api.client(operator, **{"X-Jobq-Tenant": other_academy})
    assert elsewhere.get(f"/v1/jobs/{mine.json()['id']}").status_code == 404
    unnamed = api.client(operator).get("/v1/jobs")
    assert unnamed.status_code == 400 and "X-Jobq-Tenant" in unnamed.json()["error"]


def test_a_tenant_can_never_read_or_change_another_tenants_job(api, academy, other_academy):
    ours = api.client(make_key(academy))
    theirs_key = make_key(other_academy)
    theirs = api.client(theirs_key)
    jwt_theirs = api.client(hs256_token(other_academy, scope="jobs:read jobs:write jobs:approve"))
    waiting = post_job(ours, {"intent_key": "test.exec.approved_echo",
                              "intent_params": {"secret": 1}}).json()
    failed = post_job(ours, {"intent_key": "system.exec.sleep",
                             "intent_params": {"seconds": "x"}}).json()
    before = (job_row(waiting["id"]), job_events(waiting["id"]), job_row(failed["job_id"]))
    for other in (theirs, jwt_theirs):
        for job_id in (waiting["id"], failed["job_id"]):
            for method, path in (("GET", ""), ("GET", "/events"), ("POST", "/cancel"),
                                 ("POST", "/retry"), ("POST", "/approve"), ("POST", "/reject")):
                answer = other.request(method, f"/v1/jobs/{job_id}{path}")
                assert answer.status_code == 404, (method, path, answer.text)
                assert "secret" not in answer.text
        listed = other.get("/v1/jobs", params={"limit": 200}).json()["jobs"]
        assert {j["tenant_id"] for j in listed} <= {other_academy}
    # The same idempotency key in another tenant makes that tenant's own job.
    key = f"shared-{uuid.uuid4().hex[:6]}"
    a = post_job(ours, {"intent_key": "system.exec.echo"}, **{"Idempotency-Key": key}).json()
    b = post_job(theirs, {"intent_key": "system.exec.echo"}, **{"Idempotency-Key": key}).json()
    assert a["id"] != b["id"] and b["tenant_id"] == other_academy
    after = (job_row(waiting["id"]), job_events(waiting["id"]), job_row(failed["job_id"]))
    assert after == before


def test_a_suspended_tenants_requests_are_refused_without_a_row(api):
    tenant = make_tenant()
    client = api.client(make_key(tenant))
    sql("UPDATE tenants SET status = 'suspended' WHERE id = CAST(:t AS uuid)", t=tenant)
    refused = post_job(client, {"intent_key": "system.exec.echo"})
    assert refused.status_code == 403 and "suspended" in refused.json()["error"]
    assert sql("SELECT count(*) FROM job_executions WHERE tenant_id = CAST(:t AS uuid)",
               t=tenant)[0][0] == 0
    assert client.get("/v1/jobs").status_code == 200  # reading its history stays possible
    sql("UPDATE tenants SET status = 'deleted' WHERE id = CAST(:t AS uuid)", t=tenant)
    gone = client.get("/v1/jobs")
    assert gone.status_code == 403 and "deleted" in gone.json()["error"]


# --- the rate limit ---------------------------------------------------------------------------


def test_over_its_rate_a_key_gets_429_with_retry_after_across_processes(start_api, academy):
    first, second = start_api(), start_api()
    key = make_key(academy, rate=0.2)  # one request per 5-second window
    while time.time() % 5 > 2.5:  # start early in a window: both requests fall into one
        time.sleep(0.1)
    assert first.client(key).get("/v1/jobs").status_code == 200
    refused = second.client(key).get("/v1/jobs")
    assert refused.status_code == 429
    wait = int(refused.headers["Retry-After"])
    assert 1 <= wait <= 5 and "rate" in refused.json()["error"]
    time.sleep(wait)
    assert second.client(key).get("/v1/jobs").status_code == 200
    other_key = make_key(academy, rate=0.2)
    assert first.client(other_key).get("/v1/jobs").status_code == 200  # its own budget


# --- /metrics -----------------------------------------------------------------------------------


def _samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    from prometheus_client.parser import text_string_to_metric_families

    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                found[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def test_metrics_come_from_the_table_with_bounded_tenant_labels(api):
    # Earlier tests in this process's database may have left academies with more jobs awaiting
    # approval than these (the tests run in parallel processes, each file after others): the
    # labels are the biggest academies' of the whole table, so those are cancelled first.
    sql("UPDATE job_executions SET status = 'cancelled', completed_at = now() "
        "WHERE status = 'awaiting_approval'")
    tenants = [make_tenant() for _ in range(4)]
    # A run that finished a moment ago, as a worker leaves it (the window's counts and run times).
    sql("INSERT INTO job_executions (tenant_id, intent_key, intent_params, queue, status, "
        "executed_at, completed_at) VALUES (CAST(:t AS uuid), 'system.exec.echo', '{}', "
        "'realtime', 'completed', now() - interval '1 second', now())", t=tenants[0])
    for n, tenant in enumerate(tenants, start=1):
        client = api.client(make_key(tenant))
        for _ in range(n + 10):
            assert post_job(client, {"intent_key": "test.exec.approved_echo"}).status_code == 201
    operator = api.client(make_key(None, scopes=("metrics:read",)))
    scraped = operator.get("/metrics")
    assert scraped.status_code == 200
    jobs = _samples(scraped.text, "jobq_jobs")
    awaiting = {dict(labels)["tenant"]: value for labels, value in jobs.items()
                if dict(labels)["status"] == "awaiting_approval"}
    # JOBQ_METRICS_TOP_TENANTS=2: the two biggest by name, every other tenant summed.
    assert awaiting[tenants[3]] == 14 and awaiting[tenants[2]] == 13
    assert set(awaiting) == {tenants[3], tenants[2], "other"}
    total = sql("SELECT count(*) FROM job_executions WHERE status = 'awaiting_approval'")[0][0]
    assert sum(awaiting.values()) == total
    finished = _samples(scraped.text, "jobq_jobs_finished_window")
    assert any(dict(k)["intent"] == "system.exec.echo" and dict(k)["status"] == "completed"
               and v >= 1 for k, v in finished.items())
    assert _samples(scraped.text, "jobq_run_seconds_window_bucket")


# --- bad input ----------------------------------------------------------------------------------

# JSON has no NaN nor infinity: a client cannot send them.
_JSON = st.recursive(st.none() | st.booleans() | st.integers()
                     | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
                     lambda inner: st.lists(inner, max_size=3)
                     | st.dictionaries(st.text(max_size=10), inner, max_size=3), max_leaves=8)


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(params=_JSON, run_at=st.one_of(st.none(), st.text(max_size=30), st.integers()),
       max_retries=st.one_of(st.none(), st.integers(-5, 200), st.text(max_size=5)))
def test_bad_input_is_refused_with_422_and_its_row_or_accepted_whole(client, params, run_at,
                                                                    max_retries):
    # Awaiting approval, an accepted one never runs (the test cancels it).
    body = {"intent_key": "system.exec.sleep", "intent_params": params, "run_at": run_at,
            "max_retries": max_retries, "requires_approval": True}
    answer = post_job(client, body)
    assert answer.status_code in (201, 422), answer.text
    found = answer.json()
    if answer.status_code == 422:
        assert found["error"] and found["field"].split(".")[0] in (
            "intent_params", "run_at", "max_retries")
        row = job_row(found["job_id"])
        assert row["status"] == "failed" and row["error_message"] == found["error"]
    else:
        assert isinstance(params, dict) and set(params) == {"seconds"}
        assert found["status"] == "awaiting_approval"
        client.post(f"/v1/jobs/{found['id']}/cancel")
