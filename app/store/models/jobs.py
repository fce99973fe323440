"""Jobs: ``job_executions``, the durable record of every requested run (the original columns
unchanged, the engine's beside them), and ``job_events``, the history of each."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from app.store.models.base import Base, uuid_pk

#: awaiting_approval: asked for with an approval first (alembic 0006); nothing publishes or
#: runs it until someone approves it (then pending) or rejects it (then cancelled).
JOB_STATUSES = ("pending", "processing", "completed", "failed", "cancelled", "awaiting_approval")
FINISHED_STATUSES = ("completed", "failed", "cancelled")
class JobExecution(Base):
    """One requested run of an intent: the durable record and the source of truth."""

    __tablename__ = "job_executions"
    __table_args__ = (
        CheckConstraint(
            "status IN ('pending', 'processing', 'completed', 'failed', 'cancelled', "
            "'awaiting_approval')",
            name="status",
        ),
        # Approvals that expire, and the jobs waiting for one.
        Index(
            "ix_job_executions_awaiting",
            "approval_expires_at",
            postgresql_where=text("status = 'awaiting_approval'"),
        ),
        # The sweep: pending rows by the time they become due.
        Index(
            "ix_job_executions_due",
            text("coalesce(run_at, created_at)"),
            postgresql_where=text("status = 'pending'"),
        ),
        # Lost-run recovery: running rows by lease expiry.
        Index(
            "ix_job_executions_lease",
            "lease_expires_at",
            postgresql_where=text("status = 'processing'"),
        ),
        Index("ix_job_executions_tenant_created", "tenant_id", text("created_at DESC")),
        Index("ix_job_executions_intent_created", "intent_key", text("created_at DESC")),
        Index("ix_job_executions_status_created", "status", text("created_at DESC")),
        Index("ix_job_executions_created", text("created_at DESC")),
        Index(
            "ix_job_executions_finished",
            "completed_at",
            postgresql_where=text("status IN ('completed', 'failed', 'cancelled')"),
        ),
        # Retention: an academy's finished jobs of one end state, oldest first (0012).
        Index(
            "ix_job_executions_expiry",
            "tenant_id",
            "status",
            "completed_at",
            "id",
            postgresql_where=text("status IN ('completed', 'failed', 'cancelled')"),
        ),
        # A key names one request of a tenant, whatever its intent (0009).
        Index(
            "uq_job_executions_tenant_idempotency",
            "tenant_id",
            "idempotency_key",
            unique=True,
            postgresql_where=text("idempotency_key IS NOT NULL"),
        ),
        # The fairness feeder's pick: a tenant's oldest due unpublished jobs of a queue, in the
        # pick's order (0018).
        Index(
            "ix_job_executions_ready",
            "queue",
            "tenant_id",
            text("coalesce(run_at, created_at)"),
            "id",
            postgresql_where=text("status = 'pending' AND published_at IS NULL"),
        ),
        # The sweep: jobs waiting for a time (a run_at), to wake their tenant when it comes (0014).
        Index(
            "ix_job_executions_run_at",
            "run_at",
            postgresql_where=text(
                "status = 'pending' AND run_at IS NOT NULL AND published_at IS NULL"),
        ),
        # The window: jobs handed to the broker and not yet started; a look reads the last
        # second's (0021).
        Index(
            "ix_job_executions_in_flight",
            "queue",
            "published_at",
            postgresql_where=text("status = 'pending' AND published_at IS NOT NULL"),
        ),
        # The sweep: jobs handed to the broker long ago that never started (0007).
        Index(
            "ix_job_executions_published",
            "published_at",
            postgresql_where=text("status = 'pending' AND published_at IS NOT NULL"),
        ),
        # The sweep: rows inserted without a queue (plain SQL), by when they are due.
        Index(
            "ix_job_executions_unrouted",
            text("coalesce(run_at, created_at)"),
            postgresql_where=text("status = 'pending' AND queue IS NULL"),
        ),
        # Caps: a tenant's jobs running or handed to a worker.
        Index(
            "ix_job_executions_tenant_busy",
            "tenant_id",
            "queue",
            postgresql_where=text(
                "status = 'processing' OR (status = 'pending' AND published_at IS NOT NULL)"),
        ),
        Index(
            "ix_job_executions_parent",
            "parent_id",
            postgresql_where=text("parent_id IS NOT NULL"),
        ),
    )

    # --- the original columns, unchanged -------------------------------------------
    id: Mapped[uuid.UUID] = uuid_pk()
    tenant_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("tenants.id"), nullable=False
    )
    intent_key: Mapped[str] = mapped_column(Text, nullable=False)
    intent_params: Mapped[Any | None] = mapped_column(JSONB)
    status: Mapped[str | None] = mapped_column(Text, server_default="pending")
    retry_count: Mapped[int | None] = mapped_column(Integer, server_default="0")
    max_retries: Mapped[int | None] = mapped_column(Integer, server_default="3")
    created_at: Mapped[dt.datetime | None] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    executed_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    completed_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    error_message: Mapped[str | None] = mapped_column(Text)

    # --- what the engine adds ----------------------------------------------------------
    #: Not before this time (scheduled work, long retry backoff). NULL: at once.
    run_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    #: When the row was last handed to the broker. NULL: no broker holds it.
    published_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    idempotency_key: Mapped[str | None] = mapped_column(Text)
    #: SHA-256 of the request a key was first given with (app.core.validation
    #: .request_fingerprint): a repeat asking for something else is a conflict. NULL: no key,
    #: or a row written by plain SQL (compared with its columns then).
    request_hash: Mapped[str | None] = mapped_column(Text)
    queue: Mapped[str | None] = mapped_column(Text)
    result: Mapped[Any | None] = mapped_column(JSONB)
    #: ``{"done": n, "total": m, "percent": p, "message": "..."}`` while it runs.
    progress: Mapped[Any | None] = mapped_column(JSONB)
    #: A resumable handler's saved state (the last batch it finished), kept across attempts.
    checkpoint: Mapped[Any | None] = mapped_column(JSONB)
    #: The Celery node that ran (or runs) the last attempt.
    worker: Mapped[str | None] = mapped_column(Text)
    #: ``host:pid:token`` of the run holding the lease of the running attempt; the token's 128
    #: random bits make it the secret a handler's session binds its tenant with (alembic 0004).
    lease_owner: Mapped[str | None] = mapped_column(Text)
    lease_expires_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    #: Who asked: sql (a plain INSERT), dispatch, submit, direct, schedule, fanout, retry.
    source: Mapped[str] = mapped_column(Text, nullable=False, server_default="sql")
    #: The job that fanned this one out (bulk chunks).
    parent_id: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), ForeignKey("job_executions.id", ondelete="CASCADE")
    )
    updated_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )
    #: Who asked for it: ``api:key-name``, a JWT's subject, ``cli:user@host`` (NULL: not said).
    requested_by: Mapped[str | None] = mapped_column(Text)
    #: A job awaiting approval is cancelled as expired after this.
    approval_expires_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    #: Refused with parameters that could not be stored (too big, not JSON): the row keeps
    #: none, and the job runs only on new ones (alembic 0008).
    params_dropped: Mapped[bool] = mapped_column(Boolean, nullable=False,
                                                 server_default=text("false"))
    #: The W3C ``traceparent`` of the span that asked for the job: its wait, attempts and
    #: outside calls are spans of that trace (app/core/tracing.py; alembic 0016). NULL: asked
    #: for with tracing off, or by plain SQL.
    traceparent: Mapped[str | None] = mapped_column(Text)


class JobEvent(Base):
    """One state change or attempt of a job: the history an audit reads."""

    __tablename__ = "job_events"
    __table_args__ = (Index("ix_job_events_job_at", "job_id", "at"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    job_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True),
        ForeignKey("job_executions.id", ondelete="CASCADE"),
        nullable=False,
    )
    attempt: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    #: created, refused, started, completed, retry, failed, lost, cancelled, stopped, requeued, ...
    kind: Mapped[str] = mapped_column(Text, nullable=False)
    at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )
    worker: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    traceback: Mapped[str | None] = mapped_column(Text)
    detail: Mapped[Any | None] = mapped_column(JSONB)
