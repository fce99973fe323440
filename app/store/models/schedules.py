"""Periodic work: schedules (an intent on a cron) and the slots beat dealt with, once each."""

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
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from app.store.models.base import Base, uuid_pk


class JobSchedule(Base):
    """A periodic intent: beat turns each due cron slot into one job per tenant."""

    __tablename__ = "job_schedules"
    __table_args__ = (Index("ix_job_schedules_enabled", "enabled"),)

    id: Mapped[uuid.UUID] = uuid_pk()
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
