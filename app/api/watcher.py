"""One watcher per API process feeds every open event stream: each tick it reads what changed in
all watched jobs, and their new history, in one transaction (app.store.streams), so the
database's work does not grow with the number of streams. Every few seconds it also checks that
the keys and tenants the streams were opened for still stand, and closes those that do not.

It runs on the server's event loop while any stream is open (its reads in a thread) and stops
when the last one closes: an API with no open streams costs the database nothing here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from app.api import streamslots
from app.store import db
from app.store import streams as queries

log = logging.getLogger(__name__)

#: How often the watched jobs are read: the most a change waits before its stream shows it.
POLL_SECONDS = 0.25
#: How often the streams' keys and tenants are checked again: the most a revoked key's or a
#: suspended tenant's stream stays open.
RECHECK_SECONDS = 2.0
#: How often the streams' slots (app.api.streamslots) are renewed.
RENEW_SECONDS = streamslots.LEASE_SECONDS / 4
#: After a failed read (the database restarting), wait this long before the next.
RETRY_SECONDS = 1.0


@dataclass(eq=False)
class Watch:
    """One open stream's subscription: what the watcher has for it, not yet sent."""

    job_id: str
    tenant_id: str
    #: The last history event it has (its Last-Event-ID).
    after: int
    #: The API key it was opened with (None for a token).
    key_id: str | None = None
    slot: streamslots.Slot | None = None
    events: list[dict[str, Any]] = field(default_factory=list)
    #: The job's latest state, when it differs from what the stream last took.
    state: dict[str, Any] | None = None
    #: The job is gone (deleted by retention).
    gone: bool = False
    #: Why the stream must end though its job has not: (reason, message).
    closing: tuple[str, str] | None = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    #: Not yet given the job's state (a stream joining a job others already watch).
    fresh: bool = True
    _shown: dict[str, Any] | None = None

    def take(self) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
        """The new history and the state if it changed since the last take."""
        self.changed.clear()
        events, self.events = self.events, []
        state, self.state = self.state, None
        if state is not None and state == self._shown:
            state = None
        if state is not None:
            self._shown = state
        return events, state


@dataclass(eq=False)
class _Job:
    tenant_id: str
    watches: set[Watch] = field(default_factory=set)
    #: The row version (xmin) last read, and the row as read then.
    version: str | None = None
    row: dict[str, Any] | None = None


class Watcher:
    def __init__(self) -> None:
        self._jobs: dict[str, _Job] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._rechecked = 0.0
        self._renewed = time.monotonic()

    def subscribe(self, watch: Watch) -> None:
        job = self._jobs.get(watch.job_id)
        if job is None:
            job = self._jobs[watch.job_id] = _Job(watch.tenant_id)
        elif job.tenant_id != watch.tenant_id:  # not its tenant's job: never shown to it
            watch.gone = True
            watch.changed.set()
            return
        job.watches.add(watch)
        self._wake.set()
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    def unsubscribe(self, watch: Watch) -> None:
        job = self._jobs.get(watch.job_id)
        if job is not None:
            job.watches.discard(watch)
            if not job.watches:
                del self._jobs[watch.job_id]
        if watch.slot is not None:
            slot, watch.slot = watch.slot, None
            with contextlib.suppress(RuntimeError):  # no loop left: the response frees it
                asyncio.get_running_loop().run_in_executor(None, _release, slot)

    async def _run(self) -> None:
        while self._jobs:
            self._wake.clear()
            try:
                await self._tick()
            except Exception:
                log.exception("reading the watched jobs failed; trying again")
                await asyncio.sleep(RETRY_SECONDS)
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), POLL_SECONDS)
            # A burst of new streams wakes the watcher early, but never into a busy loop.
            await asyncio.sleep(0.02)

    async def _tick(self) -> None:
        now = time.monotonic()
        jobs = dict(self._jobs)
        ids = list(jobs)
        versions = [jobs[i].version for i in ids]
        afters = [min(w.after for w in jobs[i].watches) if jobs[i].watches else 0 for i in ids]
        tenants = [jobs[i].tenant_id for i in ids]
        recheck = now - self._rechecked >= RECHECK_SECONDS
        watches = [w for j in jobs.values() for w in j.watches]
        keys = sorted({w.key_id for w in watches if w.key_id}) if recheck else []
        slots = []
        if now - self._renewed >= RENEW_SECONDS:
            slots = [w.slot for w in watches if w.slot is not None]
            self._renewed = now
        rows, events, standing = await asyncio.to_thread(
            _read, ids, tenants, versions, afters, keys, sorted(set(tenants)) if recheck else [],
            recheck, slots)
        if recheck:
            self._rechecked = now

        for row in rows:
            job = jobs[row["id"]]
            if row["gone"]:
                for w in job.watches:
                    w.gone = True
                    w.changed.set()
                continue
            job.version = row.pop("version")
            row.pop("gone")
            job.row = row
            for w in job.watches:
                w.state = row
                w.changed.set()
        for event in events:
            for w in jobs[event["job_id"]].watches:
                if event["id"] > w.after:
                    w.events.append(event)
                    w.after = event["id"]
                    w.changed.set()
        for w in watches:
            if w.fresh:  # joined a job already read: its state as it is, after its history
                w.fresh = False
                job = jobs[w.job_id]
                if w.state is None and job.row is not None:
                    w.state = job.row
                    w.changed.set()
        if standing is not None:
            live_keys, statuses = standing
            for w in watches:
                why = _why_closed(w, live_keys, statuses)
                if why is not None and w.closing is None:
                    w.closing = why
                    w.changed.set()


def _why_closed(watch: Watch, live_keys: set[str],
                statuses: dict[str, str]) -> tuple[str, str] | None:
    if watch.key_id is not None and watch.key_id not in live_keys:
        return "revoked", "the API key of this stream was revoked"
    status = statuses.get(watch.tenant_id)
    if status != "active":
        return "tenant", f"the tenant is {status or 'gone'}: live event streams are closed"
    return None


def _read(ids: list[str], tenants: list[str], versions: list[str | None], afters: list[int],
          keys: list[str], standing_tenants: list[str], recheck: bool,
          slots: list[streamslots.Slot]) -> tuple[list, list, Any]:
    """One transaction: the changed rows, then the new events (read after the rows, so a
    finished row's last event is never missed), and the keys' and tenants' standing."""
    with db.engine().begin() as conn:
        rows = queries.changed_jobs(conn, ids, tenants, versions)
        events = queries.new_events(conn, ids, afters)
        standing = (queries.standing(conn, keys=keys, tenants=standing_tenants)
                    if recheck else None)
    if slots:
        try:
            streamslots.renew(slots)
        except Exception:
            log.warning("renewing the open streams' slots in Redis failed", exc_info=True)
    return rows, events, standing


def _release(slot: streamslots.Slot) -> None:
    try:
        streamslots.release(slot)
    except Exception:  # its lease runs out by itself
        log.warning("freeing an event stream's slot in Redis failed", exc_info=True)


_watchers: dict[int, Watcher] = {}


def watcher() -> Watcher:
    """The watcher of the running event loop (one per API process)."""
    loop = asyncio.get_running_loop()
    found = _watchers.get(id(loop))
    if found is None:
        found = _watchers[id(loop)] = Watcher()
    return found
