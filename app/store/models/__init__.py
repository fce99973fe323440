"""The engine's tables, declared once; Alembic migrations must reach exactly this (the
database's functions and triggers are in app/store/schema.sql).

``job_executions`` keeps the original system's columns with their names, types and
defaults, so ``INSERT INTO job_executions (tenant_id, intent_key, intent_params)`` still
works; everything the engine adds stands beside them.

- ``base``: constraint naming, the declarative ``Base``, UUID primary keys
- ``tenants``: ``tenants`` and ``tenant_events``
- ``jobs``: ``job_executions`` and ``job_events``
- ``fairness``: ``tenant_queue_limits``, ``tenant_channel_limits``, ``fair_queue``, ``fair_clock``
- ``schedules``: ``job_schedules`` and ``job_schedule_runs``
- ``access``: ``jobq_bindings``, ``api_keys``, ``jobq_api_secret``
- ``stats``: ``job_stats_hours`` and ``job_stats_hourly`` (the statistics' rollup)

Every name is here too (``from app.store.models import Base, JOB_STATUSES``), and importing this
package declares every table on ``Base.metadata``.
"""

from __future__ import annotations

from app.store.models.access import ApiKey, JobqApiSecret, JobqBinding
from app.store.models.base import NAMING, Base, uuid_pk
from app.store.models.fairness import (
    FairClock,
    FairQueue,
    TenantChannelLimit,
    TenantQueueLimit,
)
from app.store.models.jobs import FINISHED_STATUSES, JOB_STATUSES, JobEvent, JobExecution
from app.store.models.schedules import JobSchedule, JobScheduleRun
from app.store.models.stats import JobStatsHour, job_stats_hourly
from app.store.models.tenants import TENANT_STATUSES, Tenant, TenantEvent

__all__ = [
    "FINISHED_STATUSES",
    "JOB_STATUSES",
    "NAMING",
    "TENANT_STATUSES",
    "ApiKey",
    "Base",
    "FairClock",
    "FairQueue",
    "JobEvent",
    "JobExecution",
    "JobSchedule",
    "JobScheduleRun",
    "JobStatsHour",
    "JobqApiSecret",
    "JobqBinding",
    "Tenant",
    "TenantChannelLimit",
    "TenantEvent",
    "TenantQueueLimit",
    "job_stats_hourly",
    "uuid_pk",
]
