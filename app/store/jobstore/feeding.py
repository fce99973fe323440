"""Feeding the broker: a queue's feeder looks at its window and picks the next jobs in fair order
(``jobq_feed``, app/store/schema.sql), sizes the window callers' fast path respects, and every
hand-off to the broker is stamped (``published_at``) or, when the broker did not take it,
unstamped so the feeder or the sweep sends it again."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, text

from app.store.jobstore.binds import IDS

#: One look of a queue's feeder, in one round trip: how many of its jobs the broker holds now
#: (published, due, not started: the window; a retry riding a broker countdown is not waiting
#: for a worker, and counting it let a run of retries fill a small window and starve the
#: queue: the soak's throughput fell to a few jobs a second), then up to ``:size`` minus that
#: many of the next jobs
#: in fair order, stamped published (``jobq_feed``), and whether anyone waited (as the look
#: began). Always one row for the counts; the picked jobs, if any, ride on it and after it.
#: ``:broker``, when known, is what the queue's list in the broker holds, and the window is that
#: or what was stamped in the last second if more: a caller's or another process's send may be
#: under way as the list is read (a caller's fast path pushing its 64 jobs as the feeder, woken
#: by the commit, read the list: the window went over by what it had not pushed yet). A job
#: stamped by a feeder that died before sending it, or one a worker holds, does not keep the
#: window full. Only the last second is read from the table (0021): every job that went through
#: the window leaves an entry in its index while a transaction holds the xmin horizon. Without
#: the list's length, every job stamped and not started counts.
LOOK = text(
    """
    WITH held AS MATERIALIZED (
        SELECT CASE WHEN CAST(:broker AS int) IS NULL THEN
                   (SELECT count(*)::int FROM job_executions
                     WHERE queue = :queue AND status = 'pending' AND published_at IS NOT NULL
                       AND (run_at IS NULL OR run_at <= now()))
               ELSE greatest(CAST(:broker AS int),
                   (SELECT count(*)::int FROM job_executions
                     WHERE queue = :queue AND status = 'pending'
                       AND published_at > now() - interval '1 second'
                       AND (run_at IS NULL OR run_at <= now())))
               END AS n
    ), picked AS MATERIALIZED (
        SELECT * FROM jobq_feed(:queue, greatest(0, :size - (SELECT n FROM held)))
    )
    SELECT (SELECT n FROM held),
           -- (From the newest virtual time down: a held horizon keeps every older version's
           -- entry in the ready index, below the live ones.)
           -- (Not EXISTS: PostgreSQL drops an EXISTS subquery's ORDER BY.)
           coalesce((SELECT true FROM fair_queue WHERE queue = :queue AND ready
                      ORDER BY vtime DESC LIMIT 1), false),
           p.id::text, p.tenant_id::text, p.intent_key, p.intent_params
      FROM (SELECT 1) AS one LEFT JOIN picked p ON true
    """
)

#: Jobs a plain INSERT told the feeder about (``jobq_fast``: nobody was ready in their queue),
#: stamped published in the order given while the window has room: ``:size`` minus what the
#: broker's list holds or what was stamped in the last second if more (as :data:`LOOK` counts).
#: Those already stamped (a look's pick got there first) or no longer pending are passed over.
STAMP_FAST = text(
    """
    WITH held AS MATERIALIZED (
        SELECT greatest(CAST(:broker AS int),
                   (SELECT count(*)::int FROM job_executions
                     WHERE queue = :queue AND status = 'pending'
                       AND published_at > now() - interval '1 second'
                       AND (run_at IS NULL OR run_at <= now()))) AS n
    ), u AS MATERIALIZED (
        -- Each job by its id: ``pending`` is the status it must be in, as a value the planner
        -- cannot see. With a constant it read a partial index of pending jobs whole instead
        -- (the ready one, or the due one), every entry a held horizon keeps in it.
        SELECT u.id, u.pos, 'pending'::text AS pending
          FROM unnest(CAST(:ids AS uuid[])) WITH ORDINALITY AS u(id, pos)
    ), take AS (
        SELECT j.id, u.pos FROM u JOIN job_executions j ON j.id = u.id
         WHERE j.status = u.pending AND j.queue = :queue
           AND (j.run_at IS NULL OR j.run_at <= now())
         ORDER BY u.pos
         LIMIT greatest(0, :size - (SELECT n FROM held))
           FOR UPDATE OF j SKIP LOCKED
    )
    UPDATE job_executions j SET published_at = now()
      FROM take WHERE j.id = take.id AND j.published_at IS NULL
    RETURNING j.id::text, j.tenant_id::text, j.intent_key, j.intent_params, take.pos
    """
)

#: What did not fit the window goes the fair way: its academy flagged ready (``jobq_fair_flag``).
FLAG_JOBS = text("SELECT jobq_fair_flag_jobs(CAST(:ids AS uuid[]))")


def stamp_fast(conn, queue: str, ids: Sequence[str], size: int, broker: int) -> list[Picked]:
    """Of ``ids`` (told by the insert trigger), those the window has room for, stamped, in the
    order given; flag the rest's academies ready. Commit, then publish what it returned."""
    rows = conn.execute(STAMP_FAST, {"queue": queue, "ids": list(ids), "size": size,
                                     "broker": broker}).all()
    taken = {r[0] for r in rows}
    rest = [i for i in ids if i not in taken]
    if rest:
        conn.execute(FLAG_JOBS, {"ids": rest})
    return [Picked(*r[:4]) for r in sorted(rows, key=lambda r: r[4])]


#: The window a queue's feeder keeps (callers' fast path fills it no further).
SET_WINDOW = text(
    """
    INSERT INTO fair_clock AS c (queue, window_size) VALUES (:queue, :window)
    ON CONFLICT (queue) DO UPDATE SET window_size = excluded.window_size
    """
)


@dataclass(frozen=True)
class Picked:
    id: str
    tenant_id: str
    intent_key: str
    intent_params: Any


@dataclass(frozen=True)
class Look:
    in_flight: int
    waiting: bool
    picked: list[Picked]


def look(conn, queue: str, size: int, broker: int | None = None) -> Look:
    """One look at ``queue`` for a window of ``size``, ``broker`` jobs in its list in the broker
    when known (see :data:`LOOK`); commit, then publish what it picked."""
    rows = conn.execute(LOOK, {"queue": queue, "size": size, "broker": broker}).all()
    return Look(rows[0][0], rows[0][1], [Picked(*r[2:]) for r in rows if r[2] is not None])


#: A capped tenant's run ended: its next jobs, when its turn has come (``jobq_hand_on``).
HAND_ON = text(
    """
    SELECT id::text, tenant_id::text, intent_key, intent_params
      FROM jobq_hand_on(:queue, CAST(:tenant AS uuid))
    """
)


def hand_on(conn, queue: str, tenant_id: str) -> list[Picked]:
    """The next jobs of ``tenant_id`` (capped) on ``queue``, stamped published, for the front of
    the broker's queue; none when it is at its cap, ahead of its turn, or has nothing due
    (see app/store/schema.sql). Commit, then publish them."""
    return [Picked(*row) for row in conn.execute(HAND_ON, {"queue": queue, "tenant": tenant_id})]


def set_window(conn, queue: str, size: int) -> None:
    conn.execute(SET_WINDOW, {"queue": queue, "window": size})


#: Stamp the hand-off to the broker.
MARK_PUBLISHED = text(
    """
    UPDATE job_executions SET published_at = now(), queue = coalesce(queue, :queue)
     WHERE id = ANY(:ids)
    """
).bindparams(bindparam("ids", type_=IDS))

#: The broker did not take them: let the sweep publish them again.
MARK_UNPUBLISHED = text(
    """
    UPDATE job_executions SET published_at = NULL
     WHERE id = ANY(:ids) AND status = 'pending'
    """
).bindparams(bindparam("ids", type_=IDS))


def mark_published(conn, ids: Sequence[str], *, queue: str | None = None) -> None:
    if ids:
        conn.execute(MARK_PUBLISHED, {"ids": list(ids), "queue": queue})


def mark_unpublished(conn, ids: Sequence[str]) -> None:
    if ids:
        conn.execute(MARK_UNPUBLISHED, {"ids": list(ids)})
