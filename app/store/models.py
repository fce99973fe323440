"""The engine's tables, declared once; Alembic migrations must reach exactly this.

``job_executions`` keeps the original system's columns with their names, types and
defaults, so ``INSERT INTO job_executions (tenant_id, intent_key, intent_params)`` still
works; everything the engine adds stands beside them.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

#: awaiting_approval: asked for with an approval first (alembic 0006); nothing publishes or
#: runs it until someone approves it (then pending) or rejects it (then cancelled).
JOB_STATUSES = ("pending", "processing", "completed", "failed", "cancelled", "awaiting_approval")
FINISHED_STATUSES = ("completed", "failed", "cancelled")
#: suspended: its jobs wait (held) until it is resumed; deleted: its jobs fail, for good.
TENANT_STATUSES = ("active", "suspended", "deleted")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


def _uuid_pk() -> Mapped[uuid.UUID]:
    return mapped_column(
        UUID(as_uuid=True), primary_key=True, server_default=text("gen_random_uuid()")
    )


class Tenant(Base):
    """An academy. Every other row belongs to one."""

    __tablename__ = "tenants"
    __table_args__ = (
        CheckConstraint("status IN ('active', 'suspended', 'deleted')", name="status"),
        CheckConstraint("weight > 0", name="weight"),
        CheckConstraint("max_running > 0", name="max_running"),
    )

    id: Mapped[uuid.UUID] = _uuid_pk()
    name: Mapped[str] = mapped_column(Text, nullable=False)
    status: Mapped[str] = mapped_column(Text, nullable=False, server_default="active")
    created_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )
    #: Share of a queue under contention (fair scheduling, migration 0005).
    weight: Mapped[float] = mapped_column(Float, nullable=False, server_default=text("1"))
    #: Jobs running or handed to a worker at once, across queues; None is no cap.
    max_running: Mapped[int | None] = mapped_column(Integer)


class TenantQueueLimit(Base):
    """A cap on one queue of one tenant (beside the tenant's cap across queues)."""

    __tablename__ = "tenant_queue_limits"
    __table_args__ = (CheckConstraint("max_running > 0", name="max_running"),)

    tenant_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True)
    queue: Mapped[str] = mapped_column(Text, primary_key=True)
    max_running: Mapped[int] = mapped_column(Integer, nullable=False)


class FairQueue(Base):
    """One (queue, tenant) that has had work: its virtual time and whether jobs may wait."""

    __tablename__ = "fair_queue"
    __table_args__ = (
        Index("ix_fair_queue_ready", "queue", "vtime", text("readied_at DESC"),
              postgresql_where=text("ready")),
    )

    queue: Mapped[str] = mapped_column(Text, primary_key=True)
    tenant_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True)
    vtime: Mapped[float] = mapped_column(Float, nullable=False, server_default=text("0"))
    ready: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("true"))
    #: When it last became ready: among equal virtual times, the latest goes first.
    readied_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=text("clock_timestamp()"))


class FairClock(Base):
    """Per queue: the virtual time of the last pick, and the window the feeder keeps."""

    __tablename__ = "fair_clock"

    queue: Mapped[str] = mapped_column(Text, primary_key=True)
    vclock: Mapped[float] = mapped_column(Float, nullable=False, server_default=text("0"))
    window_size: Mapped[int | None] = mapped_column(Integer)


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
        # A key names one request of a tenant, whatever its intent (0009).
        Index(
            "uq_job_executions_tenant_idempotency",
            "tenant_id",
            "idempotency_key",
            unique=True,
            postgresql_where=text("idempotency_key IS NOT NULL"),
        ),
        # The fairness feeder's pick: a tenant's oldest due unpublished job of a queue.
        Index(
            "ix_job_executions_ready",
            "queue",
            "tenant_id",
            text("coalesce(run_at, created_at)"),
            postgresql_where=text("status = 'pending' AND published_at IS NULL"),
        ),
        # The window: jobs handed to the broker and not yet started.
        Index(
            "ix_job_executions_in_flight",
            "queue",
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
    id: Mapped[uuid.UUID] = _uuid_pk()
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


class JobSchedule(Base):
    """A periodic intent: beat turns each due cron slot into one job per tenant."""

    __tablename__ = "job_schedules"
    __table_args__ = (Index("ix_job_schedules_enabled", "enabled"),)

    id: Mapped[uuid.UUID] = _uuid_pk()
    name: Mapped[str] = mapped_column(Text, nullable=False, unique=True)
    #: NULL: every active tenant.
    tenant_id: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), ForeignKey("tenants.id", ondelete="CASCADE")
    )
    intent_key: Mapped[str] = mapped_column(Text, nullable=False)
    intent_params: Mapped[Any] = mapped_column(
        JSONB, nullable=False, server_default=text("'{}'::jsonb")
    )
    cron: Mapped[str] = mapped_column(Text, nullable=False)
    timezone: Mapped[str] = mapped_column(Text, nullable=False, server_default="Asia/Seoul")
    enabled: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("true"))
    description: Mapped[str | None] = mapped_column(Text)
    #: Slots up to this time are dealt with (fired, skipped, refused, or passed while paused);
    #: beat fires the slots after it. Creation and resume set it to now, so neither fires the past.
    slots_done_until: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )
    created_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )
    updated_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )


class JobScheduleRun(Base):
    """One cron slot of a schedule: fired (with how many jobs), skipped (beat was down and a
    later slot fired instead) or refused (the intent, parameters or tenant were not valid)."""

    __tablename__ = "job_schedule_runs"
    __table_args__ = (
        # The guard that makes a slot fire once, whichever beat gets there first.
        UniqueConstraint("schedule_id", "slot_at"),
        CheckConstraint("status IN ('fired', 'skipped', 'refused')", name="status"),
        Index("ix_job_schedule_runs_at", "at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    schedule_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("job_schedules.id", ondelete="CASCADE"), nullable=False
    )
    slot_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    status: Mapped[str] = mapped_column(Text, nullable=False)
    jobs: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    #: Why a slot was refused.
    error: Mapped[str | None] = mapped_column(Text)
    at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )


class TenantEvent(Base):
    """A change of a tenant's status (suspended, resumed, deleted): who did it, and when."""

    __tablename__ = "tenant_events"
    __table_args__ = (Index("ix_tenant_events_tenant_at", "tenant_id", "at"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    tenant_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False
    )
    #: suspended, resumed or deleted.
    kind: Mapped[str] = mapped_column(Text, nullable=False)
    #: The status before.
    was: Mapped[str] = mapped_column(Text, nullable=False)
    #: Who: ``cli:user@host``, ``api``, ...
    by: Mapped[str | None] = mapped_column(Text)
    #: Jobs the change touched (failed on deletion).
    detail: Mapped[Any | None] = mapped_column(JSONB)
    at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )


class JobqBinding(Base):
    """Which tenant a handler's transaction is bound to: one row per database backend, valid
    for the transaction that wrote it (alembic 0004's ``jobq_bind``). Unlogged: a binding
    never outlives its transaction, so a crash has nothing of value to lose. Handlers can
    neither read nor write it; only the SECURITY DEFINER functions do."""

    __tablename__ = "jobq_bindings"
    __table_args__ = ({"prefixes": ("UNLOGGED",)},)

    pid: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    #: The binding transaction's full id (``pg_current_xact_id()``).
    xid: Mapped[int] = mapped_column(BigInteger, nullable=False)
    #: Not ``tenant_id``: that column name marks the tables row-level security binds.
    bound_tenant: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), nullable=False)
    #: NULL for an API request's binding (``jobq_bind_tenant``, alembic 0006).
    job_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))


class ApiKey(Base):
    """A key of the HTTP API: one tenant's (or, with no tenant, an operator's spanning them),
    stored as the SHA-256 of its secret, which is shown once when it is created."""

    __tablename__ = "api_keys"
    __table_args__ = (
        Index(
            "uq_api_keys_tenant_name",
            text("coalesce(tenant_id, '00000000-0000-0000-0000-000000000000'::uuid)"),
            "name",
            unique=True,
            postgresql_where=text("revoked_at IS NULL"),
        ),
    )

    id: Mapped[uuid.UUID] = _uuid_pk()
    #: NULL: an operator key, which names the tenant of each request.
    tenant_id: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), ForeignKey("tenants.id", ondelete="CASCADE")
    )
    name: Mapped[str] = mapped_column(Text, nullable=False)
    #: The secret's first characters, to tell keys apart in listings.
    prefix: Mapped[str] = mapped_column(Text, nullable=False)
    key_hash: Mapped[str] = mapped_column(Text, nullable=False, unique=True)
    scopes: Mapped[list[str]] = mapped_column(ARRAY(Text), nullable=False)
    #: Requests per second; NULL: JOBQ_API_RATE_LIMIT.
    rate_limit: Mapped[float | None] = mapped_column(Float)
    created_by: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )
    last_used_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))


class JobqApiSecret(Base):
    """The secret an API request's binding ticket is made with (one row; the owner's only)."""

    __tablename__ = "jobq_api_secret"
    __table_args__ = (CheckConstraint("one", name="one"),)

    one: Mapped[bool] = mapped_column(Boolean, primary_key=True, server_default=text("true"))
    secret: Mapped[str] = mapped_column(Text, nullable=False)
