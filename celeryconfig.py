"""Celery's settings for jobq, all derived from :mod:`app.core.settings` (the environment).

Loaded by ``app.broker.celery_app`` with ``config_from_object("celeryconfig")``. Nothing here reads
the environment directly.
"""

from __future__ import annotations

from kombu import Exchange, Queue

from app.broker.client import transport_options as _sentinel_options
from app.core.manifest import QUEUES

# Private (underscore) name: Celery takes every other module attribute for a setting, and
# `celery inspect conf` (which Flower shows) would print this object, URLs and passwords included.
from app.core.settings import settings as _settings

# --- connections ---------------------------------------------------------------------------
broker_url = _settings.broker_url
result_backend = _settings.result_backend
broker_connection_retry_on_startup = True
broker_connection_timeout = 4
broker_transport_options = {
    # Longer than the longest allowed run: Redis must never hand a live run to a second worker.
    "visibility_timeout": _settings.visibility_timeout,
    "global_keyprefix": _settings.redis_key_prefix,
    "socket_timeout": 10,
    "socket_connect_timeout": 4,
    "health_check_interval": 25,
    # A worker takes from its queues in the order they are listed (below, or -Q's order), not
    # round robin: requests (celery, dispatch) become rows before any job runs, so a burst of
    # dispatch_intent calls reaches the fair queue at once instead of holding everyone's
    # requests behind it; beat's caretaking (maintenance: short, and the sweep routes plain-SQL
    # rows) never waits behind jobs; then realtime, then bulk. Give bulk its own worker (as
    # jobq run and docker-compose do): on a shared one it runs when realtime has nothing.
    "queue_order_strategy": "priority",
    # A sentinel:// URL: the master name and the sentinels' own password (Flower reads these
    # too). Kombu asks the sentinels for the primary on every (re)connection.
    **_sentinel_options(_settings.broker_url, timeout=4),
}
result_backend_transport_options = {
    "global_keyprefix": _settings.redis_key_prefix,
    "socket_timeout": 10,
    "socket_connect_timeout": 4,
    **_sentinel_options(_settings.result_backend, timeout=4),
}
result_expires = 24 * 3600
redis_socket_connect_timeout = 4
redis_backend_health_check_interval = 25

# --- serialization: JSON only; a pickle message is refused, never executed -------------------
task_serializer = "json"
result_serializer = "json"
event_serializer = "json"
accept_content = ["json"]
result_accept_content = ["json"]

# --- delivery: at least once ------------------------------------------------------------------
task_acks_late = True
task_reject_on_worker_lost = True  # a killed worker process puts its message back
task_acks_on_failure = True  # a run that raised is recorded in the table; do not redeliver
task_acks_on_timeout = True
worker_prefetch_multiplier = _settings.prefetch_multiplier
task_publish_retry = True
task_publish_retry_policy = {
    "max_retries": 2,
    "interval_start": 0,
    "interval_step": 0.25,
    "interval_max": 0.5,
}

# --- time -----------------------------------------------------------------------------------
timezone = _settings.timezone
enable_utc = True
task_soft_time_limit = _settings.default_time_limit
task_time_limit = _settings.default_time_limit + 30

# --- monitoring (Flower) ---------------------------------------------------------------------
worker_send_task_events = True
# No task-sent events (Celery's default): each would cost a Redis round trip per job where the
# fairness feeder publishes, inside the consuming worker. Flower shows a job from the moment a
# worker receives it (with its kwargs, secrets redacted); what waits is in the table.
task_send_sent_event = False
task_track_started = False  # the table records the start; no result-backend write per run
worker_hijack_root_logger = False
# Task events go out in batches, every 50 ms at most, not one publish per job (app.broker.consumer).
worker_consumer = "app.broker.consumer:Consumer"

# --- queues: every worker serves all of them unless -Q narrows it ----------------------------
# ``celery`` is Celery's default queue: a vanilla client that knows only the broker URL sends
# ``send_task("dispatch_intent", ...)`` there.
task_default_queue = "celery"
task_queues = [Queue("celery", Exchange("celery"), routing_key="celery")] + [
    Queue(name, Exchange(name), routing_key=name)
    for name in sorted(QUEUES, key=("dispatch", "maintenance", "realtime", "bulk").index)
]
task_create_missing_queues = False

# --- beat: the table's caretaker -------------------------------------------------------------
beat_schedule = {
    "sweep-due-jobs": {
        "task": "jobq.sweep_due_jobs",
        "schedule": _settings.sweep_interval,
        "options": {"queue": "maintenance", "expires": max(_settings.sweep_interval * 5, 5)},
    },
    "recover-lost-runs": {
        "task": "jobq.recover_lost_runs",
        "schedule": _settings.recover_interval,
        "options": {"queue": "maintenance", "expires": max(_settings.recover_interval * 5, 5)},
    },
    "expire-approvals": {
        "task": "jobq.expire_approvals",
        "schedule": _settings.recover_interval,
        "options": {"queue": "maintenance", "expires": max(_settings.recover_interval * 5, 5)},
    },
    # The schedules live in job_schedules, read on every tick: no beat restart for a change.
    "fire-schedules": {
        "task": "jobq.fire_schedules",
        "schedule": _settings.schedule_interval,
        "options": {"queue": "maintenance", "expires": max(_settings.schedule_interval * 5, 5)},
    },
    "apply-retention": {
        "task": "jobq.apply_retention",
        "schedule": _settings.retention_interval,
        "options": {"queue": "maintenance", "expires": max(_settings.retention_interval / 2, 5)},
    },
    # Statistics: each hour of finished jobs rolled up once it is old enough (app.store.rollup).
    "roll-up-stats": {
        "task": "jobq.roll_up_stats",
        "schedule": 60.0,
        "options": {"queue": "maintenance", "expires": 30},
    },
}
beat_max_loop_interval = min(5.0, _settings.sweep_interval)
# Of several beats, only the leader sends these (app/beat/leader.py); another takes over
# within a sweep interval when it stops.
beat_scheduler = "app.beat.leader:LeaderScheduler"
