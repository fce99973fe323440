"""What a waiting job is waiting for, read from the table as the feeder decides it: its
academy's status and caps, its place in its queue's fair order, its run_at, the queue's window.

Read on the engine's own connection, once the caller has found the job through its own
tenant's row-level security: the counts of other academies' work are aggregates, no rows.
Counts that could reach far into a big backlog stop at :data:`COUNT_CAP` (shown as "N+").
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import text

#: Counts of jobs ahead stop here: an index range of millions is not read to say "many".
COUNT_CAP = 10_000

#: One job and everything about its academy and queue that the feeder's pick looks at
#: (jobq_feed in schema.sql): status, weight and caps, its virtual time, the queue's clock.
JOB_WAIT_FACTS = text(
    """
    SELECT j.id::text AS id, j.status, j.queue, j.published_at, j.run_at, j.created_at,
           coalesce(j.run_at, j.created_at) AS due, j.error_message, j.requested_by,
           j.approval_expires_at, j.tenant_id::text AS tenant_id, now() AS db_now,
           t.name AS tenant_name, t.status AS tenant_status, t.weight,
           coalesce(l.max_running, t.max_running) AS cap, l.max_running IS NOT NULL AS per_queue,
           fq.vtime, fq.ready, coalesce(fc.vclock, 0) AS vclock,
           (SELECT e.kind FROM job_events e WHERE e.job_id = j.id
             ORDER BY e.at DESC, e.id DESC LIMIT 1) AS last_event
      FROM job_executions j
      JOIN tenants t ON t.id = j.tenant_id
      LEFT JOIN tenant_queue_limits l ON l.tenant_id = j.tenant_id AND l.queue = j.queue
      LEFT JOIN fair_queue fq ON fq.queue = j.queue AND fq.tenant_id = j.tenant_id
      LEFT JOIN fair_clock fc ON fc.queue = j.queue
     WHERE j.id = CAST(:id AS uuid)
    """
)

#: The academy's jobs that count against its cap (running, or handed to a worker): on the
#: busy index, as jobq_feed counts them.
BUSY = text(
    """
    SELECT count(*) FROM job_executions je
     WHERE je.tenant_id = CAST(:tenant AS uuid)
       AND (NOT :per_queue OR je.queue = :queue)
       AND (je.status = 'processing' OR (je.status = 'pending' AND je.published_at IS NOT NULL))
    """
)

#: The academy's own due, unpublished jobs of the queue that go before this one (its oldest
#: first), on the feeder's ready index; at most COUNT_CAP.
OWN_AHEAD = text(
    f"""
    SELECT count(*) FROM (
        SELECT 1 FROM job_executions je
         WHERE je.queue = :queue AND je.tenant_id = CAST(:tenant AS uuid)
           AND je.status = 'pending' AND je.published_at IS NULL
           AND coalesce(je.run_at, je.created_at) <= now()
           AND (coalesce(je.run_at, je.created_at), je.id)
               < (CAST(:due AS timestamptz), CAST(:id AS uuid))
         LIMIT {COUNT_CAP}) ahead
    """
)

#: Other academies with work ready in the queue whose turn comes first (a lower virtual time),
#: on the ready tenants' index; at most COUNT_CAP.
ACADEMIES_AHEAD = text(
    f"""
    SELECT count(*) FROM (
        SELECT 1 FROM fair_queue fq
         WHERE fq.queue = :queue AND fq.ready AND fq.vtime < :start
           AND fq.tenant_id <> CAST(:tenant AS uuid)
         LIMIT {COUNT_CAP}) ahead
    """
)

#: The queue's window: jobs handed to the broker and not started yet; at most COUNT_CAP.
IN_FLIGHT = text(
    f"""
    SELECT count(*) FROM (
        SELECT 1 FROM job_executions je
         WHERE je.queue = :queue AND je.status = 'pending' AND je.published_at IS NOT NULL
         LIMIT {COUNT_CAP}) flying
    """
)


def wait_facts(conn, job_id: str) -> dict[str, Any] | None:
    """The facts :func:`app.intake.waiting.explain` needs about ``job_id`` (None: no such job).

    Only a job that waits (pending or awaiting approval) gets the counts, each one indexed
    statement."""
    row = conn.execute(JOB_WAIT_FACTS, {"id": job_id}).mappings().first()
    if row is None:
        return None
    facts = dict(row)
    facts.update(busy=None, own_ahead=None, academies_ahead=None, in_flight=None)
    if facts["status"] != "pending" or facts["queue"] is None:
        return facts
    queue, tenant = facts["queue"], facts["tenant_id"]
    if facts["published_at"] is not None:
        facts["in_flight"] = conn.execute(IN_FLIGHT, {"queue": queue}).scalar_one()
        return facts
    if facts["cap"] is not None:
        facts["busy"] = conn.execute(BUSY, {"tenant": tenant, "queue": queue,
                                            "per_queue": facts["per_queue"]}).scalar_one()
    if facts["due"] <= facts["db_now"]:
        facts["own_ahead"] = conn.execute(OWN_AHEAD, {
            "queue": queue, "tenant": tenant, "due": facts["due"],
            "id": job_id}).scalar_one()
        start = max(facts["vtime"] or 0.0, facts["vclock"] or 0.0)
        facts["academies_ahead"] = conn.execute(ACADEMIES_AHEAD, {
            "queue": queue, "tenant": tenant, "start": start}).scalar_one()
    return facts
