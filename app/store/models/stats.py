"""The statistics' hourly rollup of finished jobs (alembic 0020, app.store.rollup): which hours
are rolled and whether one changed since, and each hour's figures at three levels."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    SmallInteger,
    Table,
    Text,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, UUID
from sqlalchemy.orm import Mapped, mapped_column

from app.store.models.base import Base


class JobStatsHour(Base):
    """An hour of finished jobs claimed for the rollup: rolled yet, changes since its roll."""

    __tablename__ = "job_stats_hours"

    hour: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), primary_key=True)
    rolled: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("false"))
    changes: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default=text("0"))
    claimed_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=text("clock_timestamp()"))
    rolled_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    jobs: Mapped[int | None] = mapped_column(BigInteger)
    #: When the day's spans at this hour were made (0023): from the day's start to it, from it
    #: to the day's end.
    prefix_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    suffix_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    #: When the hour's ten-minute parts were made (with its roll; the last two days only).
    parts_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))


def _buckets(name: str) -> Column:
    return Column(name, ARRAY(Integer), nullable=False, server_default=text("'{}'"))


#: An hour's figures: level 1 per intent, queue and end state over all academies; 2 per
#: academy over all intents; 3 per academy over the four-hour block the hour starts; 4 and 5
#: per academy, the hour's day up to and with it and from it to the day's end; 6 and 7 the same
#: per intent and end state; 8 and 9 per intent and end state and per academy over a
#: ten-minute ``part`` (0-5) of the hour (app.store.rollup). Rows are replaced an hour at a
#: time, so no key of their own.
job_stats_hourly = Table(
    "job_stats_hourly", Base.metadata,
    Column("hour", DateTime(timezone=True),
           ForeignKey("job_stats_hours.hour", ondelete="CASCADE"), nullable=False),
    Column("level", SmallInteger, nullable=False),
    Column("tenant_id", UUID(as_uuid=True), ForeignKey("tenants.id", ondelete="CASCADE")),
    Column("intent_key", Text),
    Column("queue", Text),
    Column("status", Text),
    Column("n", BigInteger, nullable=False),
    Column("retries", BigInteger, nullable=False),
    Column("run_max", Float),
    _buckets("run_b"), _buckets("run_n"), _buckets("wait_b"), _buckets("wait_n"),
    Column("part", SmallInteger),
    CheckConstraint("level BETWEEN 1 AND 9", name="level"),
    Index("ix_job_stats_hourly_level_hour", "level", "hour"),
    Index("ix_job_stats_hourly_tenant", "tenant_id", "hour",
          postgresql_where=text("tenant_id IS NOT NULL")),
)
