"""Fair scheduling over tenants (alembic 0005): caps per queue, each (queue, tenant)'s virtual
time, and each queue's clock and window."""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    Text,
    text,
)
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import Mapped, mapped_column

from app.store.models.base import Base


class TenantQueueLimit(Base):
    """A cap on one queue of one tenant (beside the tenant's cap across queues)."""

    __tablename__ = "tenant_queue_limits"
    __table_args__ = (CheckConstraint("max_running > 0", name="max_running"),)

    tenant_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True)
    queue: Mapped[str] = mapped_column(Text, primary_key=True)
    max_running: Mapped[int] = mapped_column(Integer, nullable=False)


class TenantChannelLimit(Base):
    """An academy's own limits on an outside channel (0013): messages per second and per day,
    and whether what would go over the day's quota waits for the next day or fails."""

    __tablename__ = "tenant_channel_limits"
    __table_args__ = (CheckConstraint("rate > 0", name="rate"),
                      CheckConstraint("daily > 0", name="daily"),
                      CheckConstraint("over_daily IN ('wait', 'fail')", name="over_daily"))

    tenant_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True)
    channel: Mapped[str] = mapped_column(Text, primary_key=True)
    rate: Mapped[float | None] = mapped_column(Float)
    daily: Mapped[int | None] = mapped_column(Integer)
    over_daily: Mapped[str] = mapped_column(Text, nullable=False, server_default=text("'wait'"))


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
    #: Where its fair pick starts: a second before the due time of the last job it was handed
    #: (what comes due earlier lowers it; the sweep sets it back once a minute).
    feed_from: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=text("'-infinity'"))


class FairClock(Base):
    """Per queue: the virtual time of the last pick, and the window the feeder keeps."""

    __tablename__ = "fair_clock"

    queue: Mapped[str] = mapped_column(Text, primary_key=True)
    vclock: Mapped[float] = mapped_column(Float, nullable=False, server_default=text("0"))
    window_size: Mapped[int | None] = mapped_column(Integer)
