"""The FastAPI application of ``jobq api``: the ``/v1`` routes, who may call them, and /metrics.

Routes are plain functions (FastAPI runs them in its thread pool) on SQLAlchemy's synchronous
sessions; only the event stream is a coroutine, polling the table from a thread.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import MutableMapping
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Header, Query, Request, Response
from fastapi.responses import PlainTextResponse
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from app.api import errors, events, jobactions, schemas
from app.api.auth import TENANT_HEADER, Caller, Denied, authenticate
from app.api.errors import problem
from app.api.jobactions import load_job
from app.api.ratelimit import over_limit, retry_after_header
from app.core.errors import IdempotencyConflict, IntentRefused, TenantRefused
from app.core.registry import manifest
from app.core.validation import Request as JobAsked
from app.intake.submit import submit_one
from app.store import db, reads
from app.store.models import JOB_STATUSES

_bearer = HTTPBearer(auto_error=False, description="An API key (jq_...) or a JWT")
_api_key = APIKeyHeader(name="X-API-Key", auto_error=False, description="An API key (jq_...)")


def _authorized(bearer: HTTPAuthorizationCredentials | None, api_key: str | None,
                tenant: str | None, scope_name: str, client: str | None = None) -> Caller:
    """The request's caller, holding ``scope_name`` and within its rate (else 429 with
    Retry-After); ``client``, the peer's address, is what failed authentications count
    against."""
    found = authenticate(f"Bearer {bearer.credentials}" if bearer else None, api_key, tenant,
                         client)
    found.require(scope_name)
    wait = over_limit(found.limit_key, found.rate_limit)
    if wait is not None:
        after = retry_after_header(wait)
        raise Denied(429, f"over this caller's rate of {found.rate_limit:g} requests a second; "
                          f"try again in {after} s", headers={"Retry-After": after})
    return found


def scope(name: str):
    """A dependency: the caller, who must hold ``name`` (one dependency, one thread hop)."""

    def need(
        request: Request,
        bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
        api_key: Annotated[str | None, Depends(_api_key)],
        tenant: Annotated[str | None, Header(alias=TENANT_HEADER, include_in_schema=False)] = None,
    ) -> Caller:
        return _authorized(bearer, api_key, tenant, name,
                           request.client.host if request.client else None)

    need.__name__ = f"need_{name.replace(':', '_')}"
    return need


Reader = Annotated[Caller, Depends(scope("jobs:read"))]
Writer = Annotated[Caller, Depends(scope("jobs:write"))]
Approver = Annotated[Caller, Depends(scope("jobs:approve"))]

# Every error answers in one shape (app.api.errors), documented on each route; a body's own
# (400 not JSON, 413 too large, 415 not declared JSON) on the routes that take one.
_ERRORS = errors.responses(401, 403, 422, 429, 500)
_BODY_ERRORS = errors.responses(400, 413, 415)
_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": schemas.Problem, "description": "No such job of this tenant"}}
_CONFLICT: dict[int | str, dict[str, Any]] = {
    409: {"model": schemas.Problem, "description": "The job's state does not allow it"}}


v1 = APIRouter(prefix="/v1", responses=_ERRORS)


@v1.post("/jobs", status_code=201, response_model=schemas.Job,
         responses={200: {"model": schemas.Job, "description": "The job this Idempotency-Key "
                                                               "asked for before"},
                    **_BODY_ERRORS,
                    409: {"model": schemas.Problem, "description": "The Idempotency-Key was "
                          "used before for a different request (intent_key, intent_params or "
                          "run_at); job_id is that job. Nothing is written"},
                    422: {"model": schemas.Problem, "description": "Refused: what is wrong, "
                          "by field; the refusal is kept as a failed job"}})
def create_job(
    body: schemas.JobRequest,
    who: Writer,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> Any:
    """Ask for a job. A repeat with the same Idempotency-Key and the same request returns the
    same job (200); the key with a different request is a conflict (409)."""
    tenant = who.for_tenant()
    asked = JobAsked(tenant, body.intent_key, body.intent_params, idempotency_key,
                     body.run_at, body.max_retries, requires_approval=body.requires_approval,
                     requested_by=who.name)
    with db.tenant_session(tenant) as session:
        try:
            done = submit_one(session, asked, source="api")
        except TenantRefused as refused:
            session.rollback()
            return problem(403, str(refused), field=refused.field)
        except IdempotencyConflict as clash:
            session.rollback()  # nothing was written
            return problem(409, clash.telling("Idempotency-Key", clash.key, clash.job_id),
                           field="Idempotency-Key", job_id=clash.job_id)
        except IntentRefused as refused:
            session.commit()  # keeps the failed row for the audit
            return problem(422, str(refused), field=refused.field, job_id=refused.job_id)
        # A new job is answered with the row as written; a repeated key's, as it is now.
        row = done.row or reads.find_jobs_by_prefix(session.connection(), done.id, done.id)[0]
        session.commit()  # then the job is published
    # Serialized here, not validated again against the response model: this is the hot path.
    return Response(json.dumps(schemas.job_out(row), default=_json_value, ensure_ascii=False),
                    status_code=201 if done.row is not None else 200,
                    media_type="application/json")


def _json_value(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.isoformat().replace("+00:00", "Z")
    return str(value)


@v1.get("/jobs", response_model=schemas.JobPage)
def list_jobs(
    who: Reader,
    status: Annotated[list[str] | None, Query(description="Repeatable")] = None,
    intent: Annotated[str | None, Query(description="A key, or a family: billing.*")] = None,
    since: Annotated[str | None, Query(description="30m, 1h, 7d or an ISO 8601 time")] = None,
    until: Annotated[str | None, Query(description="Created before: 30m (ago), 1d or an ISO "
                                                   "8601 time")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
) -> Any:
    """The tenant's jobs, newest first, a page at a time."""
    tenant = who.for_tenant()
    for value in status or ():
        if value not in JOB_STATUSES:
            raise Denied(422, f"status {value[:64]!r} is not one of {', '.join(JOB_STATUSES)}",
                         field="status")
    try:
        window = schemas.parse_window(since, until)
    except ValueError as exc:
        raise Denied(422, str(exc), field=schemas.window_field(exc)) from None
    try:
        after = schemas.decode_cursor(cursor) if cursor else (None, None)
    except ValueError as exc:
        raise Denied(422, str(exc), field="cursor") from None
    if intent is not None and not schemas.is_intent_filter(intent):
        raise Denied(422, f"intent must be an intent key or a family such as billing.*, of at "
                          f"most {schemas.MAX_INTENT_FILTER} printable characters",
                     field="intent")
    where = reads.JobFilter(tenant_id=tenant, statuses=status, intent=intent,
                            since_seconds=window.since_seconds, since_at=window.since_at,
                            until_seconds=window.until_seconds, until_at=window.until_at)
    with db.tenant_begin(tenant) as conn:
        rows = reads.list_jobs_after(conn, where, limit=limit + 1, cursor_at=after[0],
                                     cursor_id=after[1])
    more = len(rows) > limit
    rows = rows[:limit]
    return {"jobs": [schemas.job_out(r) for r in rows],
            "next_cursor": schemas.encode_cursor(rows[-1]) if more else None}


@v1.get("/jobs/{job_id}", response_model=schemas.JobWithHistory, responses=_NOT_FOUND)
def get_job(job_id: str, who: Reader) -> Any:
    """A job and its history, attempt by attempt."""
    return load_job(who.for_tenant(), job_id, history=True)


@v1.post("/jobs/{job_id}/cancel", response_model=schemas.Job,
         responses={**_NOT_FOUND, **_CONFLICT, **_BODY_ERRORS})
def cancel_job(job_id: str, who: Writer, body: schemas.CancelRequest | None = None) -> Any:
    """Cancel a pending, running or unapproved job (a running one is stopped within about a
    second)."""
    tenant = who.for_tenant()
    jobactions.cancel(tenant, job_id, by=who.name, reason=body.reason if body else None)
    return load_job(tenant, job_id)


@v1.post("/jobs/{job_id}/retry", response_model=schemas.Job,
         responses={**_NOT_FOUND, **_CONFLICT, **_BODY_ERRORS,
                    422: {"model": schemas.Problem, "description": "Parameters refused, or "
                          "needed: the job's own were not kept"}})
def retry_job(job_id: str, who: Writer, body: schemas.RetryRequest | None = None) -> Any:
    """Run a failed or cancelled job again (optionally on corrected parameters; a job refused
    with parameters that were not kept needs them)."""
    tenant = who.for_tenant()
    jobactions.retry(tenant, job_id, by=who.name, params=body.intent_params if body else None)
    return load_job(tenant, job_id)


@v1.post("/jobs/{job_id}/approve", response_model=schemas.Job,
         responses={**_NOT_FOUND, **_CONFLICT, **_BODY_ERRORS})
def approve_job(job_id: str, who: Approver, body: schemas.ApproveRequest | None = None) -> Any:
    """Approve a job awaiting approval: it becomes pending and runs."""
    tenant = who.for_tenant()
    jobactions.approve(tenant, job_id, by=who.name, note=body.note if body else None)
    return load_job(tenant, job_id)


@v1.post("/jobs/{job_id}/reject", response_model=schemas.Job,
         responses={**_NOT_FOUND, **_CONFLICT, **_BODY_ERRORS})
def reject_job(job_id: str, who: Approver, body: schemas.RejectRequest | None = None) -> Any:
    """Reject a job awaiting approval: it is cancelled and never runs."""
    tenant = who.for_tenant()
    jobactions.reject(tenant, job_id, by=who.name, reason=body.reason if body else None)
    return load_job(tenant, job_id)


@v1.get("/jobs/{job_id}/events", responses={
    **_NOT_FOUND, 200: {"content": {"text/event-stream": {}},
                        "description": "Server-Sent Events: `state` (status and progress) on "
                                       "each change, `history` per job event, `end` when the "
                                       "job has ended; `close` (`reason`, `reconnect`) when "
                                       "the stream ends before the job"},
    403: {"model": schemas.Problem, "description": "A scope the caller lacks, or the tenant is "
                                                   "suspended"},
    429: {"model": schemas.Problem, "description": "Over the caller's rate, or over the "
                                                   "caller's or the tenant's cap of open "
                                                   "event streams"}})
async def job_events(job_id: str, who: Reader,
                     last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None):
    """Follow a job live until it ends. A stream open JOBQ_API_STREAM_MAX_SECONDS, or whose
    key is revoked, ends with a `close` event saying why (and whether to reconnect)."""
    from starlette.concurrency import run_in_threadpool

    tenant = who.for_tenant()

    def open_it() -> Any:
        return events.open_stream(who, load_job(tenant, job_id), after=_event_id(last_event_id))

    return await run_in_threadpool(open_it)


def _event_id(value: str | None) -> int:
    try:
        return max(0, int(value)) if value else 0
    except ValueError:
        return 0


@v1.get("/intents", response_model=list[schemas.IntentInfo])
def list_intents(who: Reader) -> Any:
    """Every intent this system runs, with its parameters' JSON schema."""
    return [{"key": i.key, "description": i.description, "queue": i.queue,
             "requires_approval": i.requires_approval, "max_retries": i.effective_max_retries,
             "params_schema": i.params_model.model_json_schema()}
            for i in sorted(manifest, key=lambda i: i.key)]


@v1.put("/tenant/channels/{channel}", response_model=schemas.ChannelLimitsOut,
        responses={**_BODY_ERRORS, **_NOT_FOUND})
def set_channel_limits(channel: str, body: schemas.ChannelLimits,
                       who: Annotated[Caller, Depends(scope("tenants:write"))]) -> Any:
    """Set the tenant's own caps on an outside channel (``kakao``, ``sms``), live and audited:
    messages per second and per day, and what would go over the day's quota. Operator keys
    only (``X-Jobq-Tenant`` names the academy): an academy's plan is not its own to raise."""
    from app.intake.actions import set_channel_limits as set_limits

    if not who.operator or who.tenant_id is None:
        raise Denied(403, "only an operator key changes an academy's channel limits")
    try:
        limits = set_limits(who.tenant_id, channel, rate=body.rate, daily=body.daily,
                            over_daily=body.over_daily, by=who.name)
    except ValueError as exc:
        field = next((f for f in ("rate", "daily", "over_daily") if str(exc).startswith(f)),
                     "channel")
        raise Denied(422, str(exc), field=field) from None
    except LookupError as exc:
        raise Denied(404, str(exc)) from None
    return {"tenant_id": who.tenant_id, "channel": channel, **limits}


@v1.get("/health", include_in_schema=False)
def health() -> dict[str, str]:
    return {"status": "ok"}


def _untraced(scope: MutableMapping[str, Any]) -> bool:
    """Requests that would bury the jobs' traces under their own: health checks, metrics
    scrapes, the console's stylesheet and script, and its pages' live refreshes."""
    path = scope.get("path", "")
    return (path in ("/v1/health", "/metrics") or path.startswith("/ui/static/")
            or b"fragment=1" in scope.get("query_string", b""))


def create_app() -> FastAPI:
    from app.api import console, docs
    from app.api.auth import check_settings
    from app.api.bodies import RequestBodies
    from app.api.metrics import metrics_response
    from app.core import tracing
    from app.core.settings import settings

    check_settings()  # tokens checked less than this API needs: refuse to start
    tracing.setup()  # with an OTLP endpoint: ready before the first request, not during it
    api = FastAPI(
        title="jobq",
        version="1",
        description="The academies' own API: ask for jobs, follow them live, approve them. "
                    "Every request acts for one tenant (its API key's, or its JWT's). Every "
                    "error, of any status, answers as a `Problem`: `error` says what is wrong, "
                    "`field` names the field or parameter concerned (a dotted path).",
        docs_url=None,
        redoc_url=None,
        openapi_url="/openapi.json",
        # FastAPI's own spans (each request, its dependencies and endpoint, under the caller's
        # traceparent) go to the provider app.core.tracing installs: never exporters of its own.
        telemetry={"auto_configure": False, "exclude": _untraced},
    )
    api.add_middleware(RequestBodies, max_bytes=settings.api_max_body_bytes)
    api.include_router(v1)
    errors.install(api)
    docs.install(api)

    console.install(api)

    @api.exception_handler(Denied)
    def _denied(request: Request, exc: Denied) -> Response:
        if request.url.path.startswith("/ui"):
            return console.denied_page(exc)
        headers = exc.headers
        if exc.status == 401:
            headers = {"WWW-Authenticate": "Bearer", **(headers or {})}
        extra = {"field": exc.field} if exc.field else {}
        return problem(exc.status, str(exc), headers=headers, **extra)

    @api.get("/metrics", include_in_schema=False)
    def metrics(who: Annotated[Caller, Depends(scope("metrics:read"))]) -> Response:
        # Every academy's numbers (and the queues' and intents' across academies): a tenant's
        # credential reads its own jobs through /v1 instead.
        if not who.operator:
            raise Denied(403, "/metrics spans every tenant: only an operator key may read it "
                              "(jobq keys create --operator --scopes metrics:read)")
        return metrics_response()

    @api.get("/", include_in_schema=False)
    def root() -> PlainTextResponse:
        return PlainTextResponse("jobq API: /docs, /openapi.json, /v1/..., the console at /ui\n")

    return api
