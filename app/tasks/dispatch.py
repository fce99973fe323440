"""``dispatch_intent`` (any Celery client's way to ask for work), ``jobq.cancel_job``, and the
worker's side of forgetting revokes: thin task declarations over :mod:`app.intake`."""

from __future__ import annotations

import logging
from typing import Any

from celery.worker.control import control_command

from app.broker.celery_app import celery_app
from app.broker.messages import CheckedTask
from app.core import tracing
from app.core.errors import IntentRefused, TenantRefused
from app.core.redaction import redacted_call
from app.core.registry import manifest
from app.core.validation import DISPATCH_ARGUMENTS, dispatch_request, job_id_for, short
from app.handoff import hand_off
from app.intake.actions import cancel
from app.intake.submit import write_requests
from app.store import db

log = logging.getLogger("jobq.dispatch")


class DispatchTask(CheckedTask):
    """``dispatch_intent``'s task class: its parameters never show unredacted, neither in the
    message headers a caller sends nor in what the worker reports to Flower."""

    def apply_async(self, args=None, kwargs=None, **options):
        if "argsrepr" not in options and "kwargsrepr" not in options:
            options["argsrepr"], options["kwargsrepr"] = self.shown_arguments(args, kwargs)
        if tracing.enabled():  # the caller's span: the request's trace goes on with the job
            options["headers"] = headers = dict(options.get("headers") or {})
            tracing.inject(headers)
        return super().apply_async(args, kwargs, **options)

    def shown_arguments(self, args: Any, kwargs: Any) -> tuple[str, str]:
        named = dict(zip(DISPATCH_ARGUMENTS, args or (), strict=False))
        key = (kwargs or {}).get("intent_key", named.get("intent_key"))
        intent = manifest.get(key) if isinstance(key, str) else None
        return redacted_call(args, kwargs, intent.secret_params if intent else ())


# A refusal is an expected outcome (``throws``): Celery logs it in one line, not as a crash.
# Any call shape is taken (``*args, **kwargs``): a client's unknown keyword or extra argument is
# refused as bad input, with its failed row where the tenant is real and active, instead of a
# TypeError from Python that only the caller's result would show.
@celery_app.task(name="dispatch_intent", bind=True, queue="dispatch", ignore_result=False,
                 acks_late=True, max_retries=None, throws=(IntentRefused,), base=DispatchTask)
def dispatch_intent(self, *args: Any, **kwargs: Any) -> str:
    """Validate, write the job's row and its first event, publish it; return the job id.

    Arguments (by keyword, or in this order): tenant_id, intent_key, intent_params=None,
    idempotency_key=None, run_at=None, max_retries=None.
    """
    job_id = job_id_for(self.request.id) if self.request.id else None
    request = dispatch_request(args, kwargs, job_id)
    # The caller's span, when its message carries one; else the job's trace starts here.
    with tracing.span("dispatch_intent", kind="consumer",
                      parent=getattr(self.request, tracing.TRACEPARENT, None),
                      attributes={"jobq.job_id": job_id}):
        return _dispatch(self, request)


def _dispatch(self, request) -> str:
    try:
        # One autocommit statement: the row (or the refusal's row) is durable before the
        # message goes out, and a redelivered dispatch finds it by its derived id.
        with db.engine().connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            ids, outgoing, refusal = write_requests(conn, [request], source="dispatch")
    except TenantRefused as exc:
        if request.call_problem:  # no row to keep it in: say both
            raise TenantRefused(f"{exc}; {request.call_problem}", field=exc.field) from None
        raise
    except IntentRefused:
        raise
    except Exception as exc:
        if db.is_outage(exc):
            delay = min(60.0, 1.0 * 2 ** min(self.request.retries, 6))
            log.warning("database unavailable for dispatch of %s; retrying in %.0fs: %s",
                        short(request.intent_key), delay, exc)
            raise self.retry(exc=exc, countdown=delay) from None
        raise
    if refusal is not None:
        raise refusal
    hand_off(outgoing)
    return ids[0]



@celery_app.task(name="jobq.cancel_job", queue="dispatch", ignore_result=False)
def cancel_job(job_id: str, reason: str = "cancelled") -> str | None:
    """:func:`cancel` as a task: the status the job had. A running job's run stops as there."""
    return cancel(job_id, reason=reason, by="task")


@control_command(args=[("ids", list)], signature="<job_id> [job_id ...]")
def jobq_forget_revoked(state, ids):
    """A worker's side of :func:`forget_revoked`."""
    from celery.worker import state as worker_state

    for job_id in ids:
        worker_state.revoked.discard(job_id)
    return {"ok": f"forgot {len(ids)} revoke(s)"}

