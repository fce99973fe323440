"""A worker process's hooks: tracing made ready, a prefork child's own database connections, the
garbage failed runs leave, a solo worker's task events while a job runs, and the completions and
spans still gathering when a process stops; and beat's: its process feeds the job queues."""

from __future__ import annotations

import gc
import os
import threading
import time

from celery import states
from celery.concurrency.solo import TaskPool as SoloPool
from celery.signals import (
    beat_init,
    task_postrun,
    task_prerun,
    worker_init,
    worker_process_init,
    worker_process_shutdown,
    worker_ready,
    worker_shutdown,
)

from app.core import tracing
from app.core.manifest import QUEUES
from app.run import completions, feeder, liveness, orphans
from app.store import db, jobstore
from app.tasks.running_events import RunningEventSender


@worker_init.connect
@beat_init.connect
def _start_tracing(**_: object) -> None:
    # With an OTLP endpoint, OpenTelemetry is imported now, not during the first job (a
    # prefork child inherits it; the SDK's exporter thread starts again in each child).
    tracing.setup()


@worker_process_init.connect
def _after_fork(**_: object) -> None:
    # A prefork child must not share the parent's database sockets.
    db.dispose_after_fork()
    # What is loaded by now lives as long as the process: full collections skip it (cheap).
    gc.freeze()
    # The child waits for its first message while the parent still connects to the broker:
    # meanwhile it takes its liveness lock and opens its status connection, claim prepared.
    threading.Thread(target=_warm_up, name="jobq-warm-up", daemon=True).start()


def _warm_up() -> None:
    # What the first run would do on its way (app.run.lease, app.run.runner); a database that
    # is away is the first run's to find and report, as before.
    try:
        liveness.process.token()
        with db.status_conn() as conn:
            jobstore.prepare_claim(conn)
    except Exception:  # the run that needs it reports it
        pass


#: Seconds between the garbage collections that follow failed or retried runs.
FAILURE_GC_INTERVAL = 1.0
_last_failure_gc = 0.0


@task_postrun.connect
def _collect_failure_garbage(state: str | None = None, **_: object) -> None:
    # Each failed or retried run leaves Celery's exception info (on Python 3.11, the code
    # positions of every frame) as cyclic garbage that only Python's rare full collection
    # frees: a pool process grew from ~95 MB to ~250 MB. Collect it, at most once a second.
    global _last_failure_gc
    if state in (states.FAILURE, states.RETRY) and \
            time.monotonic() - _last_failure_gc >= FAILURE_GC_INTERVAL:
        _last_failure_gc = time.monotonic()
        gc.collect()


@worker_ready.connect
def _start_feeder(sender=None, **_: object) -> None:
    # The fairness feeder of the job queues this worker consumes (one worker leads each).
    queues = [q.name for q in sender.app.amqp.queues.consume_from.values()]
    owner = sender.controller if hasattr(sender, "controller") else sender
    hub = getattr(sender, "hub", None)
    if hub is None:
        feeder.start(queues, owner=owner)
    else:
        # Once the event loop has asked for the first messages: the feeder's connection and
        # first look at the table are not on the way to the first job. Until it leads, the
        # jobs a caller published itself (the fast path) flow as they always do.
        hub.call_soon(feeder.start, queues, owner)


@worker_ready.connect
def _name_the_holder(**_: object) -> None:
    # The messages this process takes name it as their holder, so that when it dies another
    # process's check sends them again at once (app.run.orphans).
    orphans.hold_as_this_process()


#: On a solo worker: (its process, the thread that runs jobs and its event loop, the sender).
_running_events: tuple[int, int, RunningEventSender] | None = None


@worker_ready.connect
def _watch_running_events(sender=None, **_: object) -> None:
    # Only where the job runs in the event loop's own thread: elsewhere the loop is free to send.
    global _running_events
    if getattr(sender, "hub", None) is not None and isinstance(sender.pool, SoloPool):
        _running_events = (os.getpid(), threading.get_ident(),
                           RunningEventSender(lambda: sender.event_dispatcher))


def _in_loop_thread() -> RunningEventSender | None:
    found = _running_events
    if found and found[0] == os.getpid() and found[1] == threading.get_ident():
        return found[2]
    return None


@task_prerun.connect
def _run_started(**_: object) -> None:
    if (events := _in_loop_thread()) is not None:
        events.started()


@task_postrun.connect
def _run_ended(**_: object) -> None:
    if (events := _in_loop_thread()) is not None:
        events.ended()


@worker_shutdown.connect
def _stop_feeder(sender=None, **_: object) -> None:
    feeder.stop(owner=sender)


@worker_process_shutdown.connect
@worker_shutdown.connect
def _flush_completions(**_: object) -> None:
    # Completions still gathering are written before the process goes.
    completions.writer.flush()
    # And the spans still gathering are sent (a pool process ends without atexit hooks).
    tracing.shutdown()


@beat_init.connect
def _start_beat_feeder(sender=None, **_: object) -> None:
    # Beat's process feeds every job queue, outside the workers' consuming processes; their
    # feeders stand by and lead only while no beat feeds (app.run.feeder).
    feeder.start(list(QUEUES), owner=sender, beat=True)
