"""What a handler gets: its job, its tenant's session, a logger, progress and checkpoints, child
jobs, a look at them, and a shared outside rate to keep to.

A handler never imports Celery, never opens a session and never commits; the engine commits
the session together with the job's completion, so a run's database effects and its
``completed`` row land at once or not at all. Long, resumable work (a roster import) calls
:meth:`JobContext.checkpoint` after each batch: the batch and the checkpoint commit together.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection
from sqlalchemy.orm import Session

from app.core.errors import JobqError
from app.store import db

if TYPE_CHECKING:
    from app.run.quota import Channel


class RunAborted(JobqError):
    """The run no longer owns its job (cancelled, or taken over); its work is rolled back."""


@dataclass
class JobContext:
    job_id: str
    tenant_id: str
    intent_key: str
    attempt: int
    max_retries: int
    log: logging.LoggerAdapter
    #: When the job was meant to run: its ``run_at`` (a schedule's slot), else its creation.
    #: Handlers derive default periods ("last month") from it, not from the clock.
    scheduled_for: dt.datetime | None = None
    #: The state saved by the last :meth:`checkpoint` of an earlier attempt, or None.
    resume_from: Any = None
    #: ``(job id, lease owner)`` of the run: what binds the handler's connections to the job's
    #: tenant. Its own field: a handler may record work under another ``job_id`` (a broadcast
    #: chunk writes its messages under its parent's), but it runs as its own job.
    _binding: tuple[str, str] | None = field(default=None, repr=False)
    #: Opens the tenant-bound session, the first time a handler asks for it.
    _open_session: Callable[[], Session] | None = field(default=None, repr=False)
    _session: Session | None = field(default=None, repr=False)
    _progress: Callable[[dict[str, Any]], None] | None = field(default=None, repr=False)
    _checkpoint: Callable[[Any], bool] | None = field(default=None, repr=False)
    _last_progress: float = field(default=0.0, repr=False)
    _min_interval: float = field(default=0.25, repr=False)
    #: A section a cancel must not cut in two (app.run.stopping): the engine's own writes.
    _shielded: Callable[[], AbstractContextManager[None]] = field(
        default=contextlib.nullcontext, repr=False)
    #: Writes a wait for a shared channel in the job's history.
    _note_wait: Callable[[dict[str, Any]], None] | None = field(default=None, repr=False)

    @classmethod
    def for_run(cls, **fields: Any) -> JobContext:
        """The context the engine hands a run's handler (the private fields included)."""
        return cls(**fields)

    @property
    def session(self) -> Session:
        """The tenant-bound session; the engine commits it with the job's completion.

        Opened on first use: a handler that never touches the database costs no connection.
        """
        if self._session is None:
            if self._open_session is None:
                raise RuntimeError("this context has no database session")
            self._session = self._open_session()
        return self._session

    @property
    def opened_session(self) -> Session | None:
        """The session if the handler opened it, else None (for the engine)."""
        return self._session

    @property
    def is_retry(self) -> bool:
        return self.attempt > 1

    def progress(self, done: int | float, total: int | float | None = None,
                 message: str | None = None, *, force: bool = False) -> None:
        """Report how far the run got; written at most a few times a second."""
        now = time.monotonic()
        finished = total is not None and done >= total
        if not (force or finished) and now - self._last_progress < self._min_interval:
            return
        self._last_progress = now
        info: dict[str, Any] = {"done": done}
        if total is not None:
            info["total"] = total
            info["percent"] = round(100.0 * done / total, 1) if total else 100.0
        if message:
            info["message"] = message
        if self._progress is not None:
            with self._shielded():
                self._progress(info)

    def checkpoint(self, state: Any) -> None:
        """Commit the work done so far together with ``state``; a rerun gets ``resume_from``.

        Raises :class:`RunAborted` when the job was cancelled or taken over meanwhile: the
        uncommitted work is then rolled back.
        """
        with self._shielded():
            saved = self._checkpoint is not None and self._checkpoint(state)
        if not saved:
            raise RunAborted(f"job {self.job_id} is no longer owned by this run")
        self.resume_from = state

    def submit(self, intent_key: str, intent_params: dict[str, Any] | None = None, *,
               idempotency_key: str | None = None, run_at: Any = None,
               max_retries: int | None = None, job_id: str | None = None) -> str:
        """Ask for a child job of this tenant, in this run's transaction: it exists (and is
        published) only if this run completes. Its ``parent_id`` is this job. Returns its id."""
        return self.submit_children([{
            "intent_key": intent_key, "intent_params": intent_params,
            "idempotency_key": idempotency_key, "run_at": run_at, "max_retries": max_retries,
            "job_id": job_id}])[0]

    def submit_children(self, requests: list[dict[str, Any]], *,
                        source: str = "fanout") -> list[str]:
        """:meth:`submit` for many children in one statement; each request is a dict of
        ``intent_key``, ``intent_params`` and optionally ``idempotency_key``, ``run_at``,
        ``max_retries``, ``job_id``. Bad input raises IntentRefused, naming it."""
        from app.core.validation import Request
        from app.intake.submit import submit_many  # not at import: it loads the Celery app

        return submit_many(self.session, [
            Request(self.tenant_id, r["intent_key"], r.get("intent_params"),
                    r.get("idempotency_key"), r.get("run_at"), r.get("max_retries"),
                    r.get("job_id"), parent_id=self.job_id)
            for r in requests], source=source)

    def children(self, of: str | None = None) -> list[dict[str, Any]]:
        """The child jobs of this job (or of ``of``, another job of this tenant): ``id``,
        ``intent_key``, ``status``, ``progress``, ``result``, ``error_message``, oldest first."""
        from app.store import reads

        return reads.children(self.session, of or self.job_id)

    def job_status(self, job_id: str) -> str | None:
        """The status of one of this tenant's jobs, or None when there is no such job."""
        from app.store import reads

        return reads.job_status(self.session, job_id)

    def throttle(self, name: str, count: int, *, rate: float) -> float:
        """Wait until ``count`` uses of the outside resource ``name`` may go out at ``rate`` per
        second, shared by every worker process; returns the seconds waited (0: no limit)."""
        from app.run import throttle

        return throttle.acquire(name, count, rate=rate)

    def channel(self, name: str, *, rate: float) -> Channel:
        """This academy's sending on the outside channel ``name`` (a sender account taking
        ``rate`` messages/s across every worker): its weighted share of the rate and its own
        caps (``jobq tenants set T --channel NAME``). ``with ctx.channel(...) as ch:`` then
        ``ch.take(n)`` waits until up to ``n`` may go out; the wait lands in the job's history."""
        from app.run.quota import Channel

        return Channel(name, self.tenant_id, rate, note=self._note_wait)

    def others_waiting(self, channel: str | None = None) -> bool:
        """Whether another academy's job waits for a worker on this job's queue (with
        ``channel``: one not already sending on it): a long run that can stop and go on later
        (a broadcast chunk) then lets its worker go."""
        from app.run.quota import sending_academies
        from app.store import channels

        sending = sorted(sending_academies(channel)) if channel else []
        with db.engine().connect() as conn:
            return channels.others_waiting(conn, self._binding[0] if self._binding
                                           else self.job_id, sending)

    @contextlib.contextmanager
    def journal(self) -> Iterator[Connection]:
        """A transaction of its own, bound to the tenant and committed on leaving the block.

        For the record of an effect outside the database (a message handed to a gateway): it
        must survive this run's rollback, or a retry would repeat the effect. It is another
        connection: it sees only committed rows, and it must never wait for a lock the run's
        own session holds (a foreign key to a row the run locked would wait forever).
        A cancel that comes while the block runs stops the run after it has committed.
        """
        if self._binding is None:
            raise RuntimeError("this context has no database session")
        with self._shielded(), db.handler_engine().begin() as conn:
            db.bind_job(conn, *self._binding)
            yield conn
