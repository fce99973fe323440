"""What each outside channel's quota looks like now, for ``jobq stats``: its rate and use over
the last seconds, each academy sending on it with its weight, share and own caps, and what
waits for it (messages its senders still hold, jobs waiting for a daily quota)."""

from __future__ import annotations

import json
import time
from typing import Any

import redis
from sqlalchemy import text

from app.broker import client as broker_client
from app.run.quota import ACTIVE_SECONDS, DAY_OFFSET, keys_of
from app.store import db

#: Seconds of history the use is averaged over.
WINDOW = 10

_ACADEMIES = text(
    """
    SELECT t.id::text, t.name, t.weight, l.rate, l.daily
      FROM tenants t
      LEFT JOIN tenant_channel_limits l ON l.tenant_id = t.id AND l.channel = :channel
     WHERE t.id = ANY(CAST(:ids AS uuid[]))
    """
)

#: Jobs waiting for an academy's daily quota on a channel (their wait's reason says so).
_DAILY_WAITS = text(
    """
    SELECT tenant_id::text, count(*) FROM job_executions
     WHERE status = 'pending' AND error_message LIKE 'daily quota of % ' || :channel || ' %'
     GROUP BY tenant_id
    """
)


def channels() -> list[str]:
    """Channels that granted messages within the last hour."""
    client = broker_client.client()
    suffix, found = ":history", []
    for key in client.scan_iter(match=broker_client.key("quota:*") + suffix, count=500):
        name = key.decode() if isinstance(key, bytes) else key
        found.append(name[len(broker_client.key("quota:")):-len(suffix)])
    return sorted(found)


def channel_use(channel: str) -> dict[str, Any]:
    """One channel: ``rate``, ``used_per_s`` and ``busiest`` over the last :data:`WINDOW`
    seconds, and ``academies`` (weight, share, caps, sent, waiting, used today)."""
    client = broker_client.client()
    _second, senders, _params, daily, history, shares = keys_of(channel)
    now = time.time()
    seconds = [_flat(json.loads(raw)) for raw in client.lrange(history, 0, WINDOW - 1)]
    seconds = [s for s in seconds if now - float(s.get("at", 0)) <= WINDOW + 1]
    totals = [int(s.get("total", 0)) for s in seconds]
    share_of = {_s(k): float(v) for k, v in client.hgetall(shares).items()}
    rate = share_of.pop("_rate", 0.0)
    waiting: dict[str, int] = {}
    for raw in client.hvals(senders):
        tenant, backlog, last = _s(raw).split(" ")
        if float(last) >= now - ACTIVE_SECONDS:
            waiting[tenant] = waiting.get(tenant, 0) + int(backlog)
    sent: dict[str, int] = {}
    for s in seconds:
        for k, v in s.items():
            if k.startswith("t:"):
                sent[k[2:]] = sent.get(k[2:], 0) + int(v)
    day = int((now + DAY_OFFSET) // 86400)
    today = {_s(k): int(v) for k, v in client.hgetall(f"{daily}:{day}").items()}
    with db.engine().connect() as conn:
        daily_waits = {r[0]: r[1] for r in conn.execute(_DAILY_WAITS, {"channel": channel})}
        ids = sorted(set(share_of) | set(waiting) | set(sent) | set(daily_waits))
        rows = conn.execute(_ACADEMIES, {"channel": channel, "ids": ids}).all() if ids else []
    academies = [{"tenant_id": r[0], "name": r[1], "weight": r[2], "rate_cap": r[3],
                  "daily_quota": r[4], "share_per_s": round(share_of.get(r[0], 0.0), 2),
                  "sent_per_s": round(sent.get(r[0], 0) / WINDOW, 1),
                  "messages_waiting": waiting.get(r[0], 0),
                  "jobs_waiting_for_daily_quota": daily_waits.get(r[0], 0),
                  "sent_today": today.get(r[0], 0)} for r in rows]
    academies.sort(key=lambda a: (-a["share_per_s"], -a["messages_waiting"], a["name"]))
    used = sum(totals) / WINDOW
    return {"channel": channel, "rate": rate, "used_per_s": round(used, 1),
            "used_of_rate": round(used / rate, 3) if rate else None,
            "busiest_second": max(totals, default=0), "academies": academies}


def all_channels() -> list[dict[str, Any]] | None:
    """Every channel's use; None when the broker cannot say."""
    try:
        return [channel_use(c) for c in channels()]
    except redis.RedisError:
        return None


def _flat(pairs: list[Any]) -> dict[str, Any]:
    return {str(pairs[i]): pairs[i + 1] for i in range(0, len(pairs) - 1, 2)}


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
