"""Intent handlers as Celery tasks: one task per manifest key, mirrored into the table.

Registering a key creates its task class only; the handler module is imported the first time
this process runs the intent. A run claims its row (``pending -> processing``), calls the
handler with a :class:`~app.run.context.JobContext` inside the tenant's transaction, and commits the
handler's effects together with ``completed``. Errors go through :mod:`app.core.retry`. A message
for a job that is finished, cancelled or running elsewhere does nothing. A run whose job is
cancelled or taken over while it runs is stopped (:mod:`app.run.stopping`), its work rolled back.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import time
import traceback as tb
from typing import Any

from celery.exceptions import Retry, SoftTimeLimitExceeded
from pydantic import ValidationError

from app.broker.publish import Outgoing
from app.core import retry
from app.core.errors import JobqError, PermanentError
from app.core.manifest import ManifestError
from app.core.redaction import redact, redact_params
from app.core.results import bounded_result, describe, progress_summary
from app.core.settings import settings
from app.core.validation import invalid_params, is_uuid
from app.handoff import hand_off
from app.intake.submit import record_direct_call
from app.run import completions, feeder, lease, quota, spans, timelimit
from app.run.context import JobContext, RunAborted
from app.run.stopping import RunStopped, Stoppable
from app.store import db, jobstore

log = logging.getLogger("jobq.jobs")

#: Hard limit = soft limit + this grace, for the handler to clean up after SoftTimeLimitExceeded.
HARD_LIMIT_GRACE = 30
#: How long a finished run keeps trying to record its outcome while the database is away.
OUTCOME_WRITE_PATIENCE = 30.0
MAX_TRACEBACK = 20_000


class AttemptFailed(JobqError):
    """What Flower shows of an attempt that failed while the job will run again (a plain
    exception: the handler's own may not survive the trip from a pool process)."""


class JobFailed(JobqError):
    """Tells Celery a job failed for good, after the table recorded it: Flower then shows the
    run as FAILURE with the error. Expected (``throws``), so the worker logs nothing twice."""


class Run:
    """One delivery of one job's message."""

    def __init__(self, task: Any):
        #: The Celery task that got the message (``request``, ``intent``, ``retry``, events).
        self.task = task
        self.intent = task.intent
        self.job_id: str = task.request.id
        self.worker: str = task.request.hostname or lease.HOST
        self.owner = lease.owner()
        self.claimed: jobstore.Claimed | None = None
        self.dropped: str | None = None
        self.stop: Stoppable | None = None
        #: Set when the claim found the job's tenant suspended (held) or deleted (failed).
        self.refused: jobstore.TenantRefusal | None = None
        #: The attempt's span, told how the run ended (app.run.spans).
        self.attempt = spans.NO_ATTEMPT
        self.handed_on = False  # (a capped academy's, with its completion)

    # -- logging ---------------------------------------------------------------------------
    def _extra(self) -> dict[str, Any]:
        c = self.claimed
        return {
            "job_id": self.job_id,
            "tenant_id": c.tenant_id if c else None,
            "intent_key": self.intent.key,
            "attempt": c.attempt if c else None,
        }

    # -- claiming --------------------------------------------------------------------------
    def _claim(self) -> jobstore.Claimed | None:
        # The completions this process still holds ride along with the claim.
        completing = completions.writer.take()
        try:
            with db.status_conn() as conn:
                claimed, done, self.refused = jobstore.claim(
                    conn, self.job_id, worker=self.worker, owner=self.owner,
                    lease=settings.lease_seconds, default_max_retries=settings.default_max_retries,
                    completing=completing)
        except BaseException:
            completions.writer.give_back(completing)
            raise
        completions.writer.written(completing, done)
        return claimed

    def _claim_or_explain(self, tenant_id: str | None, intent_params: dict | None,
                          from_engine: bool) -> jobstore.Claimed | None:
        claimed = self._take()
        if claimed is not None or self.refused is not None:
            return claimed
        with db.status_conn() as conn:
            state = jobstore.inspect(conn, self.job_id, lease=settings.lease_seconds,
                                     wedged=settings.visibility_timeout)
        if state is None:
            if from_engine:
                self._drop("no row: the job was deleted", logging.WARNING)
                return None
            record_direct_call(tenant_id, self.intent.key, intent_params, job_id=self.job_id)
            return self._take()
        if state.status == "processing":
            # A processing row names its owner; "" (none) would match no row to release.
            owner = state.lease_owner or ""
            if state.lease_expired or lease.owner_is_dead(owner):
                with db.status_conn() as conn:
                    released = jobstore.release_owned(
                        conn, self.job_id, owner=owner,
                        default_max_retries=settings.default_max_retries)
                if released is not None:
                    spans.lost([released])
                    log.warning("job lost by %s, attempt %d (%s)", owner,
                                released.attempt, released.status,
                                extra={"job_id": self.job_id, "intent_key": self.intent.key})
                    if released.status == "pending":
                        return self._take()
                self._drop(f"the job was lost by {state.lease_owner} and is "
                           f"{released.status if released else 'taken over'}")
            else:
                self._drop(f"the job is running elsewhere ({state.lease_owner})")
        elif state.status == "pending" and state.not_due:
            self._drop("the job is not due yet (the sweep sends it when it is)")
        else:
            self._drop(f"the job is already {state.status}")
        return None

    def _take(self) -> jobstore.Claimed | None:
        """The claim, or None (held or failed on the way when the tenant is not active)."""
        claimed = self._claim()
        if claimed is None and self.refused is not None:
            self._refused(self.refused)
        return claimed

    def _refused(self, refusal: jobstore.TenantRefusal) -> None:
        """The claim held the job (its tenant is suspended) or failed it (deleted)."""
        if refusal.held:
            self._drop(f"held: {refusal.reason}")
            return
        log.error("job refused: %s", refusal.reason,
                  extra={"job_id": self.job_id, "intent_key": self.intent.key})
        raise JobFailed(refusal.reason)

    def _drop(self, reason: str, level: int = logging.INFO) -> None:
        """A message that must not run anything; Flower shows ``reason`` as its result."""
        self.dropped = reason
        log.log(level, "message dropped: %s", reason, extra={"job_id": self.job_id,
                                                             "intent_key": self.intent.key})

    # -- running ---------------------------------------------------------------------------
    def execute(self, *, tenant_id: str | None, intent_params: dict | None, from_engine: bool):
        if not is_uuid(self.job_id):
            # Not a message the engine or a Celery client sent: nothing can be claimed or audited.
            log.error("message dropped: its task id %.60r is not a job id (a UUID)", self.job_id,
                      extra={"intent_key": self.intent.key})
            return None
        try:
            self.claimed = self._claim_or_explain(tenant_id, intent_params, from_engine)
        except Exception as exc:
            if db.is_outage(exc):
                delay = min(30.0, 2.0 ** min(self.task.request.retries, 4))
                log.warning("database unavailable to claim job %s; message retried in %.0fs: %s",
                            self.job_id, delay, describe(exc))
                raise self.task.retry(countdown=delay, max_retries=None) from None
            raise
        if self.claimed is None:
            return {"dropped": self.dropped} if self.dropped else None
        self.stop = Stoppable()
        lease.keeper.track(self.job_id, self.owner, self.stop)
        try:
            with spans.attempt(self.claimed, queue=self.intent.queue,
                               worker=self.worker) as self.attempt:
                return self._run_claimed()
        finally:
            lease.keeper.untrack(self.owner)
            if self.claimed.capped and not self.handed_on:
                self._hand_on()

    def _hand_on(self) -> None:
        """This run of a capped academy ended (its outcome written; a plain completion hands on
        in its own transaction): the academy's next job goes to the front of the queue now, so
        this worker takes it next (a feeder would put it behind the whole window, the academy
        idle meanwhile). When its turn has not come, the feeder decides."""
        c = self.claimed
        assert c is not None
        try:
            feeder.hand_on(self.intent.queue, c.tenant_id)
        except Exception as exc:  # the feeder hands it out as usual
            log.warning("could not hand the academy's next job on: %s", describe(exc),
                        extra=self._extra())

    def _run_claimed(self):
        c = self.claimed
        stop = self.stop
        assert c is not None and stop is not None
        started = time.monotonic()
        log.info("job started", extra=self._extra())
        ctx = JobContext.for_run(
            job_id=c.id, tenant_id=c.tenant_id, intent_key=c.intent_key, attempt=c.attempt,
            max_retries=c.max_retries, scheduled_for=c.scheduled_for,
            _binding=(c.id, self.owner),
            _open_session=lambda: db.handler_session(c.id, self.owner),
            log=logging.LoggerAdapter(logging.getLogger(f"jobq.handler.{c.intent_key}"),
                                      self._extra()),
            resume_from=c.checkpoint, _progress=self._progress,
            _checkpoint=lambda state: self._checkpoint(ctx.session, state),
            _min_interval=1.0 / settings.progress_writes_per_second,
            _shielded=stop.shielded,
            _note_wait=lambda detail: quota.note_wait(c.id, c.attempt, self.worker, detail),
        )
        try:
            params = self._params(c)
            with timelimit.soft_limit(self.intent.effective_time_limit), stop.running():
                value = self.intent.function(ctx, params)
            if stop.reason is not None:  # asked to stop as it returned: its outcome is not kept
                raise RunStopped(stop.reason)
            result = bounded_result(value)
            elapsed_ms = round((time.monotonic() - started) * 1000, 1)
            outcome = jobstore.Outcome(c.id, self.owner, self.worker, c.attempt, result,
                                    {"elapsed_ms": elapsed_ms}, dt.datetime.now(dt.UTC))
            session = ctx.opened_session
            if session is not None and session.in_transaction():
                # The handler's writes and its completion commit together, durably.
                if not jobstore.complete(session, [outcome]):
                    raise RunAborted(f"job {c.id} is no longer owned by this run")
                session.commit()
            elif c.capped:
                # Its slot frees and its next job is handed on in one transaction (_hand_on).
                self.handed_on = True
                if not feeder.hand_on(self.intent.queue, c.tenant_id, completing=outcome):
                    raise RunAborted(f"job {c.id} is no longer owned by this run")
            else:
                # Nothing of the handler's to commit: the completion joins the next batch.
                completions.writer.add(outcome)
        except (RunStopped, RunAborted):
            return self._stopped(ctx, started, interrupted=stop.reason is not None)
        except BaseException as exc:
            if stop.reason is not None and isinstance(exc, Exception):
                # The handler turned the stop (or what it cut short) into an error of its own.
                return self._stopped(ctx, started, interrupted=True)
            if ctx.opened_session is not None:
                ctx.opened_session.rollback()
            outcome = self._record_failure(exc)
            if not isinstance(exc, Exception):
                raise
            # Tell Celery too, so Flower shows the attempt as RETRY or the job as FAILURE; a
            # SUCCESS there could not be overwritten by a later attempt's events.
            if isinstance(outcome, retry.RetryDecision):
                error = describe(exc)
                raise Retry(error, exc=AttemptFailed(error), when=outcome.delay) from None
            if outcome is not None:
                raise JobFailed(outcome) from None
            return None
        finally:
            if ctx.opened_session is not None:
                ctx.opened_session.close()
        log.info("job completed in %.1f ms", elapsed_ms, extra=self._extra())
        # What Celery reports (Flower shows it); the table keeps the result as it is.
        return redact_params(result, self.intent.secret_params)

    def _stopped(self, ctx: JobContext, started: float, *, interrupted: bool) -> dict[str, str]:
        """End a run whose job is no longer its own: nothing of it kept, its end in the history.

        An interrupt may have landed anywhere in the handler, even between a statement and the
        bookkeeping after it, so its session's connection is closed rather than reused.
        """
        c = self.claimed
        assert c is not None
        session = ctx.opened_session
        if session is not None:
            if interrupted:
                session.invalidate()
            else:
                session.rollback()
        ran_ms = round((time.monotonic() - started) * 1000, 1)
        reason = self.stop.reason if self.stop is not None else None
        try:
            with db.status_conn() as conn:
                recorded = jobstore.record_stopped(conn, [jobstore.Stopped(
                    c.id, self.owner, self.worker, c.attempt, ran_ms, interrupted)])
            reason = recorded.get(c.id, reason)
        except Exception as exc:
            log.warning("could not record the end of the run: %s", describe(exc),
                        extra=self._extra())
        reason = reason or "cancelled or taken over"
        self.attempt.ended("stopped", reason)
        log.warning("run stopped: job %s; its work is rolled back (it ran %.1f s%s)", reason,
                    ran_ms / 1000, "" if interrupted else " to its end",
                    extra=self._extra())
        return {"stopped": f"job {reason}"}

    def _params(self, c: jobstore.Claimed):
        if c.params_dropped:
            # Put back to pending from outside without new parameters (a retry gives them):
            # the intent's defaults are not what its caller asked for.
            raise PermanentError("its parameters were not kept when it was refused, so it "
                                 "runs only on new ones (jobq retry ID --params-json '{...}')")
        try:
            model = self.intent.params_model
        except ManifestError as exc:
            raise PermanentError(f"intent {self.intent.key!r} cannot load: {exc}") from exc
        try:
            return model.model_validate(c.intent_params or {})
        except ValidationError as exc:  # rows written by plain SQL were never validated
            raise PermanentError(invalid_params(self.intent, exc)[0]) from None

    def _progress(self, info: dict[str, Any]) -> None:
        try:
            with db.status_conn() as conn:
                jobstore.set_progress(conn, self.job_id, info)
        except Exception as exc:
            log.warning("could not record progress: %s", exc, extra=self._extra())
        with contextlib.suppress(Exception):  # events are a courtesy to Flower
            # Flower keeps only Celery's own task fields, so the percentage rides in ``result``
            # (its task list, detail page and API show it); the state reads PROGRESS meanwhile.
            self.task.send_event("task-progress", progress=info, result=progress_summary(info))

    def _checkpoint(self, session, state: Any) -> bool:
        if not jobstore.save_checkpoint(session, self.job_id, owner=self.owner, state=state):
            return False
        session.commit()  # the next transaction binds the tenant again as it begins
        return True

    # -- failing ---------------------------------------------------------------------------
    def _record_failure(self, exc: BaseException) -> str | retry.RetryDecision | None:
        """Record the failed attempt: the error when the job failed for good, the decision
        when it will run again, None when the outcome could not be written."""
        c = self.claimed
        assert c is not None
        error = describe(exc)
        if isinstance(exc, SoftTimeLimitExceeded):
            error = f"time limit of {self.intent.effective_time_limit}s exceeded"
        trace = (redact("".join(tb.format_exception(exc))) or "")[-MAX_TRACEBACK:]
        decision = retry.decide(exc, attempt=c.attempt, max_retries=c.max_retries,
                                policy=self.intent.retry)
        if isinstance(exc, SoftTimeLimitExceeded) or not isinstance(exc, Exception):
            decision = retry.RetryDecision(False, reason="time limit or interrupt")

        def write(conn) -> bool:
            if decision.retry:
                return jobstore.retry_later(
                    conn, c.id, owner=self.owner, worker=self.worker, attempt=c.attempt,
                    error=error, traceback=trace, delay=decision.delay,
                    via_countdown=decision.via_countdown, waiting=decision.waiting)
            return jobstore.fail(conn, c.id, owner=self.owner, worker=self.worker,
                              attempt=c.attempt, error=error, traceback=trace)

        self.attempt.decided(decision, error, stacktrace=trace)
        if not self._write_outcome(write):
            return None
        if decision.retry:
            what = "waits" if decision.waiting else f"retry {c.attempt}/{c.max_retries}"
            log.log(logging.INFO if decision.waiting else logging.WARNING, "job %s in %.1fs: %s",
                    what, decision.delay, error, extra=self._extra())
            if decision.via_countdown:  # retry_later stamped it published
                hand_off([Outgoing(c.id, c.tenant_id, c.intent_key, self.intent.queue,
                                   c.intent_params, self.intent.secret_params,
                                   countdown=decision.delay)])
            return decision
        log.error("job failed (%s): %s", decision.reason, error, extra=self._extra())
        return error

    def _write_outcome(self, write) -> bool:
        """Run the single-statement ``write``, riding out a short database outage.

        If the database stays away, the row stays ``processing`` under a lease nobody renews
        any more, and lost-run recovery takes it from there: nothing is lost.
        """
        deadline = time.monotonic() + OUTCOME_WRITE_PATIENCE
        delay = 0.5
        while True:
            try:
                with db.status_conn() as conn:
                    return write(conn)
            except Exception as exc:
                if not db.is_outage(exc) or time.monotonic() > deadline:
                    log.error("could not record the outcome of job %s: %s", self.job_id,
                              describe(exc), extra=self._extra())
                    return False
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
