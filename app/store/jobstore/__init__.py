"""The one writer of ``job_executions`` and ``job_events``, in the order of a job's life.

Every statement that changes a job's state is a named constant, and each state change lands in
the same statement as its event, so the history can never disagree with the row. Callers pass a
connection or session and own the transaction; all times come from the database's clock.

- ``creating``: new rows (a refused request's too), and the job a repeat already names
- ``approvals``: a job that waits for a person, approved, rejected or expired
- ``feeding``: a feeder's look at its queue's window, and every hand-off to the broker stamped
- ``claiming``: a run takes its job (the hot statement, prepared), or learns why it may not
- ``running``: leases kept fresh, progress, checkpoints, runs that no longer own their job
- ``finishing``: completed, retried later, failed for good, or stopped after a cancel
- ``lost``: runs whose owner died or stopped renewing its lease, released
- ``orphans``: handed to the broker, but held by a dead process or never sent: to send again
- ``sweep``: due jobs that no broker holds, idle tenants ready again, jobs refused
- ``operator_actions``: cancel, requeue (a retry), a deleted tenant's pending jobs refused
- ``retention``: finished jobs past their age, deleted
- ``binds``: how JSON values and lists of ids bind to the statements' parameters

The database functions and triggers they rely on (``jobq_feed``, ``jobq_fast_room``, the
fairness flags, the ``created`` event) are in app/store/schema.sql. Every name of the stages
is here too: callers write ``from app.store import jobstore`` and ``jobstore.claim(...)``.
"""

from __future__ import annotations

from app.store.jobstore.approvals import (
    APPROVE,
    EXPIRE_APPROVALS,
    REJECT,
    Approved,
    approve,
    expire_approvals,
    reject,
)
from app.store.jobstore.claiming import (
    CLAIM,
    CLAIM_SQL,
    INSPECT,
    RUN_AT_SLACK,
    Claimed,
    Inspected,
    TenantRefusal,
    claim,
    inspect,
    prepare_claim,
    tenant_refusal,
)
from app.store.jobstore.creating import (
    FIND_EXISTING,
    INSERT_JOBS,
    Existing,
    NewJob,
    find_existing,
    insert_jobs,
    new_id,
)
from app.store.jobstore.feeding import (
    LOOK,
    MARK_PUBLISHED,
    MARK_UNPUBLISHED,
    SET_WINDOW,
    Look,
    Picked,
    hand_on,
    look,
    mark_published,
    mark_unpublished,
    set_window,
    stamp_fast,
)
from app.store.jobstore.finishing import (
    COMPLETE,
    FAIL,
    RECORD_STOPPED,
    RETRY_LATER,
    STOPPED_AFTER_CANCEL,
    WAIT_LATER,
    Outcome,
    Stopped,
    complete,
    fail,
    record_stopped,
    retry_later,
    stopped_after_cancel,
    wait_later,
)
from app.store.jobstore.lost import (
    LOST_ERROR,
    RELEASE_EXPIRED,
    RELEASE_OWNED,
    Released,
    release_expired,
    release_owned,
)
from app.store.jobstore.operator_actions import (
    CANCEL,
    REFUSE_TENANT_PENDING,
    REQUEUE,
    cancel,
    refuse_tenant_pending,
    requeue,
)
from app.store.jobstore.orphans import (
    LOCK_ORPHANS,
    LOOK_ORPHANS,
    Orphan,
    OrphanJob,
    OrphansSeen,
    lock_orphans,
    look_orphans,
)
from app.store.jobstore.retention import (
    DELETE_EXPIRED,
    EXPIRED_PAIRS,
    RETENTION_START,
    RETENTION_STATES,
    Expired,
    RetentionBatch,
    default_retention_days,
    delete_expired,
    expired_pairs,
)
from app.store.jobstore.running import (
    LOST_RUNS,
    RECORD_WAIT,
    RENEW_LEASES,
    SAVE_CHECKPOINT,
    SET_PROGRESS,
    lost_runs,
    record_wait,
    renew_leases,
    save_checkpoint,
    set_progress,
)
from app.store.jobstore.sweep import (
    FLAG_DUE,
    LOCK_DUE,
    PUBLISHED_PENDING,
    REFUSE_PENDING,
    ROUTE,
    Due,
    flag_due,
    lock_due,
    refuse_pending,
    route,
)

__all__ = [
    "APPROVE",
    "CANCEL",
    "CLAIM",
    "CLAIM_SQL",
    "COMPLETE",
    "DELETE_EXPIRED",
    "EXPIRED_PAIRS",
    "EXPIRE_APPROVALS",
    "FAIL",
    "FIND_EXISTING",
    "FLAG_DUE",
    "INSERT_JOBS",
    "INSPECT",
    "LOCK_DUE",
    "LOCK_ORPHANS",
    "LOOK",
    "LOOK_ORPHANS",
    "LOST_ERROR",
    "LOST_RUNS",
    "MARK_PUBLISHED",
    "MARK_UNPUBLISHED",
    "PUBLISHED_PENDING",
    "RECORD_STOPPED",
    "RECORD_WAIT",
    "REFUSE_PENDING",
    "REFUSE_TENANT_PENDING",
    "REJECT",
    "RELEASE_EXPIRED",
    "RELEASE_OWNED",
    "RENEW_LEASES",
    "REQUEUE",
    "RETENTION_START",
    "RETENTION_STATES",
    "RETRY_LATER",
    "ROUTE",
    "RUN_AT_SLACK",
    "SAVE_CHECKPOINT",
    "SET_PROGRESS",
    "SET_WINDOW",
    "STOPPED_AFTER_CANCEL",
    "WAIT_LATER",
    "Approved",
    "Claimed",
    "Due",
    "Existing",
    "Expired",
    "Inspected",
    "Look",
    "NewJob",
    "Orphan",
    "OrphanJob",
    "OrphansSeen",
    "Outcome",
    "Picked",
    "Released",
    "RetentionBatch",
    "Stopped",
    "TenantRefusal",
    "approve",
    "cancel",
    "claim",
    "complete",
    "default_retention_days",
    "delete_expired",
    "expire_approvals",
    "expired_pairs",
    "fail",
    "find_existing",
    "flag_due",
    "hand_on",
    "insert_jobs",
    "inspect",
    "lock_due",
    "lock_orphans",
    "look",
    "look_orphans",
    "lost_runs",
    "mark_published",
    "mark_unpublished",
    "new_id",
    "prepare_claim",
    "record_stopped",
    "record_wait",
    "refuse_pending",
    "refuse_tenant_pending",
    "reject",
    "release_expired",
    "release_owned",
    "renew_leases",
    "requeue",
    "retry_later",
    "route",
    "save_checkpoint",
    "set_progress",
    "set_window",
    "stamp_fast",
    "stopped_after_cancel",
    "tenant_refusal",
    "wait_later",
]
