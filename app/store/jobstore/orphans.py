"""Orphans: pending jobs handed to the broker whose message nobody alive will run, because the
process that took it died before its claim, or because it never reached the broker (a hand-off
stamped, then its sender died). What the broker says about each is in app/broker/held.py; the
judging is app/run/orphans.py."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, text

from app.store import liveness
from app.store.jobstore.binds import IDS

#: Waiting means: pending, handed to the broker, due (a retry riding a broker countdown is held
#: on purpose by a live worker until its ``run_at``).
_WAITING = ("status = 'pending' AND published_at IS NOT NULL "
            "AND (run_at IS NULL OR run_at <= now())")

#: In one round trip: the holders' tokens whose liveness lock is free (not right after a
#: database restart, when nobody could hold one yet), the jobs of the held messages, and the
#: waiting jobs of ``:queues`` handed to the broker more than ``:after`` seconds ago (on
#: ix_job_executions_published, oldest first). Each job row says whether it waits and whether
#: it is that old. (The first kind's ``id`` is a token.)
LOOK_ORPHANS = text(
    f"""
    SELECT 'dead' AS kind, t AS id, NULL::text AS queue, NULL::timestamptz AS published_at,
           NULL::bool AS pending, NULL::bool AS waiting, NULL::bool AS stale
      FROM unnest(CAST(:tokens AS text[])) AS t
     WHERE NOT {liveness.token_alive("t")}
       AND pg_postmaster_start_time() < now() - make_interval(secs => :settle)
    UNION ALL
    SELECT 'job', id::text, queue, published_at, status = 'pending', {_WAITING},
           coalesce(published_at < now() - make_interval(secs => :after), false)
      FROM job_executions WHERE id = ANY(:held)
    UNION ALL
    (SELECT 'job', id::text, queue, published_at, true, true, true
       FROM job_executions
      WHERE {_WAITING} AND published_at < now() - make_interval(secs => :after)
        AND queue = ANY(:queues)
      ORDER BY published_at LIMIT :limit)
    """
).bindparams(bindparam("held", type_=IDS))


@dataclass(frozen=True)
class OrphanJob:
    id: str
    queue: str | None
    published_at: dt.datetime | None
    pending: bool
    #: Pending, handed to the broker, due.
    waiting: bool
    #: Handed to the broker more than ``after`` seconds ago.
    stale: bool


@dataclass(frozen=True)
class OrphansSeen:
    dead_tokens: set[str]
    jobs: dict[str, OrphanJob]


def look_orphans(conn, *, tokens: Sequence[str], held: Sequence[str], queues: Sequence[str],
         after: float, settle: float, limit: int) -> OrphansSeen:
    rows = conn.execute(LOOK_ORPHANS, {"tokens": list(tokens), "held": list(held), "queues": list(queues),
                               "after": after, "settle": settle, "limit": limit})
    dead: set[str] = set()
    jobs: dict[str, OrphanJob] = {}
    for kind, key, queue, published_at, pending, waiting, stale in rows:
        if kind == "dead":
            dead.add(key)
        else:
            jobs[key] = OrphanJob(key, queue, published_at, pending, waiting, stale)
    return OrphansSeen(dead, jobs)


#: Orphans about to be sent again: still waiting and not sent again by anyone since they were
#: looked at (the same ``published_at``); locked until the caller commits.
LOCK_ORPHANS = text(
    """
    SELECT j.id::text, j.tenant_id::text, j.intent_key, j.intent_params, j.queue
      FROM job_executions j
      JOIN unnest(CAST(:ids AS uuid[]), CAST(:published AS timestamptz[])) AS s(id, published_at)
        ON s.id = j.id AND j.published_at = s.published_at
     WHERE j.status = 'pending' AND (j.run_at IS NULL OR j.run_at <= now())
       FOR UPDATE OF j SKIP LOCKED
    """
)


@dataclass(frozen=True)
class Orphan:
    id: str
    tenant_id: str
    intent_key: str
    intent_params: Any
    queue: str


def lock_orphans(conn, jobs: Sequence[OrphanJob]) -> list[Orphan]:
    if not jobs:
        return []
    rows = conn.execute(LOCK_ORPHANS, {"ids": [j.id for j in jobs],
                               "published": [j.published_at for j in jobs]})
    return [Orphan(*r) for r in rows]
