"""Tenants (academies), to which every other row belongs, and the history of their status."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    Float,
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

#: suspended: its jobs wait (held) until it is resumed; deleted: its jobs fail, for good.
TENANT_STATUSES = ("active", "suspended", "deleted")


class Tenant(Base):
    """An academy. Every other row belongs to one."""

    __tablename__ = "tenants"
    __table_args__ = (
        CheckConstraint("status IN ('active', 'suspended', 'deleted')", name="status"),
        CheckConstraint("weight > 0", name="weight"),
        CheckConstraint("max_running > 0", name="max_running"),
        CheckConstraint("keep_completed_days > 0", name="keep_completed_days"),
        CheckConstraint("keep_failed_days > 0", name="keep_failed_days"),
        CheckConstraint("keep_cancelled_days > 0", name="keep_cancelled_days"),
    )

    id: Mapped[uuid.UUID] = uuid_pk()
    name: Mapped[str] = mapped_column(Text, nullable=False)
    status: Mapped[str] = mapped_column(Text, nullable=False, server_default="active")
    created_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )
    #: Share of a queue under contention (fair scheduling, migration 0005).
    weight: Mapped[float] = mapped_column(Float, nullable=False, server_default=text("1"))
    #: Jobs running or handed to a worker at once, across queues; None is no cap.
    max_running: Mapped[int | None] = mapped_column(Integer)
    #: Days its finished jobs are kept in each end state (alembic 0012); None is the
    #: deployment's default (``JOBQ_RETENTION_DAYS``, ``JOBQ_RETENTION_FAILED_DAYS``).
    keep_completed_days: Mapped[int | None] = mapped_column(Integer)
    keep_failed_days: Mapped[int | None] = mapped_column(Integer)
    keep_cancelled_days: Mapped[int | None] = mapped_column(Integer)


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
