"""Every statement about an academy's own limits on outside channels (``tenant_channel_limits``,
migration 0013): setting them (recorded in ``tenant_events`` with who did it) and reading them.
The channels' shared rates and the academies' shares live in Redis (app/run/quota.py)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text

#: Set a tenant's limits on a channel (NULL arguments keep what is there; ``:clear_rate`` /
#: ``:clear_daily`` remove one), recorded with who changed it; the limits before, as JSON.
SET_CHANNEL_LIMITS = text(
    """
    WITH before AS (
        SELECT rate, daily, over_daily FROM tenant_channel_limits
         WHERE tenant_id = CAST(:id AS uuid) AND channel = :channel
    ), next AS (
        SELECT CASE WHEN :clear_rate THEN NULL
                    ELSE coalesce(CAST(:rate AS float8), (SELECT rate FROM before)) END AS rate,
               CASE WHEN :clear_daily THEN NULL
                    ELSE coalesce(CAST(:daily AS int), (SELECT daily FROM before)) END AS daily,
               coalesce(CAST(:over_daily AS text), (SELECT over_daily FROM before), 'wait')
                   AS over_daily
    ), upserted AS (
        INSERT INTO tenant_channel_limits (tenant_id, channel, rate, daily, over_daily)
        SELECT CAST(:id AS uuid), :channel, rate, daily, over_daily FROM next
        ON CONFLICT (tenant_id, channel) DO UPDATE
           SET rate = excluded.rate, daily = excluded.daily, over_daily = excluded.over_daily
        RETURNING rate, daily, over_daily
    ), event AS (
        INSERT INTO tenant_events (tenant_id, kind, was, by, detail)
        SELECT CAST(:id AS uuid), 'limits',
               :channel || ' rate ' || coalesce((SELECT rate::text FROM before), 'unlimited')
               || ', daily ' || coalesce((SELECT daily::text FROM before), 'unlimited'), :by,
               jsonb_build_object('channel', :channel, 'rate', u.rate, 'daily', u.daily,
                                  'over_daily', u.over_daily,
                                  'was', (SELECT to_jsonb(b) FROM before b))
          FROM upserted u
         WHERE (u.rate, u.daily, u.over_daily) IS DISTINCT FROM
               (SELECT (b.rate, b.daily, b.over_daily) FROM before b)
    )
    SELECT rate, daily, over_daily FROM upserted
    """
)

#: A tenant's limits on each channel.
CHANNEL_LIMITS = text(
    "SELECT channel, rate, daily, over_daily FROM tenant_channel_limits "
    "WHERE tenant_id = CAST(:id AS uuid) ORDER BY channel"
)


def set_channel_limits(conn, tenant_id: str, channel: str, *, by: str, rate: float | None,
                       daily: int | None, over_daily: str | None, clear_rate: bool = False,
                       clear_daily: bool = False) -> dict[str, Any]:
    """The tenant's limits on ``channel`` after the change."""
    row = conn.execute(SET_CHANNEL_LIMITS, {
        "id": tenant_id, "channel": channel, "rate": rate, "daily": daily,
        "over_daily": over_daily, "clear_rate": clear_rate, "clear_daily": clear_daily,
        "by": by}).mappings().one()
    return dict(row)


def channel_limits(conn, tenant_id: str) -> dict[str, dict[str, Any]]:
    return {r["channel"]: {"rate": r["rate"], "daily": r["daily"], "over_daily": r["over_daily"]}
            for r in conn.execute(CHANNEL_LIMITS, {"id": tenant_id}).mappings()}


#: Whether another academy (not one of ``:sending``) has a job waiting for a worker on this
#: job's queue (due, or handed to the broker and not started): a long sender then lets the
#: worker go at its turn's end. Academies already sending get their share of the channel anyway.
OTHERS_WAITING = text(
    """
    SELECT EXISTS (
        SELECT 1 FROM job_executions j, job_executions me
         WHERE me.id = CAST(:job AS uuid) AND j.queue = me.queue AND j.status = 'pending'
           AND j.tenant_id <> me.tenant_id AND NOT (j.tenant_id::text = ANY(:sending))
           AND (j.published_at IS NOT NULL OR coalesce(j.run_at, j.created_at) <= now()))
    """
)


def others_waiting(conn, job_id: str, sending: list[str]) -> bool:
    """Another academy than these (sending already) waits for a worker on the job's queue."""
    return bool(conn.execute(OTHERS_WAITING, {"job": job_id, "sending": sending}).scalar())
