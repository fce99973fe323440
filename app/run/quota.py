"""Nested quotas on a shared outside channel (a KakaoTalk or SMS sender account): the
provider's messages per second, divided among the academies sending at that moment in
proportion to their weight, each academy's own cap (per second, per day) on top.

One Redis hash per channel counts the current second (by Redis's clock), and one Lua script
decides every grant, so every worker process and host draws from the same second. A grant is
for the current second only and must be used before :data:`SEND_UNTIL` of it: the provider
never sees more than its rate in any clock second. The shares are water-filled: an academy
capped below its weighted share keeps its cap and the rest is divided among the others; an
academy alone gets the whole rate. Past :data:`OPEN_AT` of a second, what the academies
sending left unused goes to whoever asks (within its own cap): no second is idle for a share
nobody takes. Without a tenant the older token bucket (app.run.throttle) applies.

Shares even out over time, not only at each instant: an academy with more to send keeps a
*claim* on the channel (a broadcast between its chunk runs, until it ends or
:data:`CLAIM_SECONDS` pass without a send), and each second every academy sending or claiming
is owed its weighted part of what was granted; what it got less (or more) is its *credit*,
within :data:`CREDIT_SECONDS` of its share, added to its share while it sends
(app/run/quota_script.py).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

import redis
from sqlalchemy import text

from app.broker import client as broker_client
from app.core import tracing
from app.core.errors import PermanentError, TransientError, WaitingError
from app.run.quota_script import GIVE_BACK, GRANT
from app.store import db

#: Grants are made until this fraction of a second; later askers wait for the next one.
ADMIT_UNTIL = 0.7
#: A granted message not handed to the provider by this fraction of its second goes back.
SEND_UNTIL = 0.75
#: From this fraction of a second on, capacity the academies left unused is open to anyone.
OPEN_AT = 0.6
#: A sender that has not asked for this long no longer counts as sending (it died, or ended).
ACTIVE_SECONDS = 1.5
#: Days (for daily quotas) are Korean days: the academies' own midnight.
DAY_OFFSET = 9 * 3600
#: How long a process uses an academy's limits before reading them again (changes go live).
LIMITS_TTL = 1.0
#: An academy's credit (what it is owed, or took beyond its part) is at most this many seconds
#: of its weighted share of the rate.
CREDIT_SECONDS = 3.0
#: A claim (an academy with more to send between its runs) lapses when not renewed this long.
CLAIM_SECONDS = 5.0
#: Until this fraction of a second an academy claiming the channel keeps its share though none
#: of its runs sends yet (its next run starting); after it, the others may use it, and owe it.
CLAIM_GRACE = 0.3

#: What a refusal means, for the job's history and ``jobq stats``.
REASONS = {"rate": "the provider's rate is used up this second",
           "share": "the academy's share of the rate is used up this second",
           "cap": "the academy's own cap per second is reached",
           "second": "this second is closing", "daily": "the academy's daily quota is used up"}


@dataclass(frozen=True)
class Limits:
    """An academy's weight and its own limits on one channel (None: no limit)."""

    weight: float = 1.0
    rate: float | None = None
    daily: int | None = None
    over_daily: str = "wait"


@dataclass(frozen=True)
class Grant:
    count: int
    #: Seconds to wait before asking again (when nothing was granted).
    wait: float
    #: ``time.monotonic()`` by which the granted messages must have gone out.
    send_by: float
    #: Why nothing was granted (a key of :data:`REASONS`), else "".
    reason: str
    #: The academy's share of the rate now (messages/s) and how many academies send.
    share: float
    sending: int
    used_today: int
    #: The clock second and the (Korean) day the grant counts in.
    second: int = 0
    day: int = 0
    #: What the academy is owed on the channel (messages; negative: it took more than its part).
    credit: float = 0.0
    #: ``time.monotonic()`` at which the grant's second stops granting (ADMIT_UNTIL of it).
    admit_by: float = float("inf")


def keys_of(channel: str) -> list[str]:
    base = f"quota:{channel}"
    return [broker_client.key(f"{base}:{part}")
            for part in ("second", "senders", "params", "daily", "history", "shares",
                         "credits", "claims")]


def ask(channel: str, tenant_id: str, wanted: int, *, rate: float, limits: Limits,
        sender: str, backlog: int, claim: str = "") -> Grant:
    """One try for up to ``wanted`` messages of ``tenant_id`` on ``channel`` this second (and
    the renewal of ``claim``, if given)."""
    began = time.monotonic()
    try:
        got = broker_client.client().eval(
            GRANT, 8, *keys_of(channel), repr(float(rate)), tenant_id, repr(limits.weight),
            repr(float(limits.rate or 0)), int(limits.daily or 0), int(wanted), sender,
            int(backlog), repr(ADMIT_UNTIL), repr(SEND_UNTIL), repr(OPEN_AT),
            repr(ACTIVE_SECONDS), DAY_OFFSET, repr(CREDIT_SECONDS), claim, repr(CLAIM_SECONDS),
            repr(CLAIM_GRACE))
    except redis.RedisError as exc:
        raise TransientError(f"send quota of {channel!r} unavailable: {exc}") from exc
    granted, wait, send_by, reason, share, sending, used, second, day, credit = got
    send_by_s = began + float(send_by)
    return Grant(int(granted), float(wait), send_by_s, _text(reason), float(share),
                 int(sending), int(used), int(second), int(day), float(credit),
                 send_by_s - (SEND_UNTIL - ADMIT_UNTIL))


def give_back(channel: str, tenant_id: str, grant: Grant, count: int) -> None:
    """Messages of ``grant`` that did not go out: they no longer count for the academy's day
    (nor for the second, if it is still on)."""
    if count <= 0:
        return
    keys = keys_of(channel)
    with contextlib.suppress(redis.RedisError):
        broker_client.client().eval(GIVE_BACK, 2, keys[0], keys[3], tenant_id, int(count),
                                    grant.second, grant.day)


def done(channel: str, sender: str) -> None:
    """This sender has nothing more to send on ``channel``: its academy stops counting as
    sending as soon as none of its senders does (its share goes to the others at once)."""
    with contextlib.suppress(redis.RedisError):  # else it ages out after ACTIVE_SECONDS
        broker_client.client().hdel(keys_of(channel)[1], sender)


def release(channel: str, claim: str) -> None:
    """``claim`` (e.g. a broadcast) has nothing more to send on ``channel``: its academy stops
    being owed a share between its runs, and its credit ends with its last send."""
    with contextlib.suppress(redis.RedisError):  # else it lapses after CLAIM_SECONDS
        broker_client.client().hdel(keys_of(channel)[7], claim)


def sending_academies(channel: str) -> set[str]:
    """The academies with a sender on ``channel`` now (asked within :data:`ACTIVE_SECONDS`)."""
    try:
        entries = broker_client.client().hgetall(keys_of(channel)[1])
    except redis.RedisError:
        return set()
    now = time.time()
    found = set()
    for raw in entries.values():
        tenant, _backlog, last = _text(raw).split(" ")
        if float(last) >= now - ACTIVE_SECONDS:
            found.add(tenant)
    return found


def take(channel: str, tenant_id: str, wanted: int, *, rate: float, sender: str,
         backlog: int, waited: dict[str, Any], claim: str = "",
         deadline: float | None = None) -> Grant:
    """Block until at least one of ``wanted`` messages may go out (with ``deadline``, a
    ``time.monotonic()``: not past it; a grant of 0 then); ``waited`` collects the seconds
    waited by reason. A daily quota that is used up raises :class:`WaitingError` (until the
    academy's next day) or :class:`PermanentError` (its setting ``fail``)."""
    limits = limits_of(tenant_id, channel)
    while True:
        grant = ask(channel, tenant_id, wanted, rate=rate, limits=limits, sender=sender,
                    backlog=backlog, claim=claim)
        if grant.count > 0:
            return grant
        if grant.reason == "daily":
            done(channel, sender)
            if claim:
                release(channel, claim)
            until = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=grant.wait)
            kst = until.astimezone(dt.timezone(dt.timedelta(seconds=DAY_OFFSET)))
            message = (f"daily quota of {limits.daily} {channel} messages reached "
                       f"({grant.used_today} sent today)")
            if limits.over_daily == "fail":
                raise PermanentError(message + "; the academy's setting fails what is over it")
            raise WaitingError(f"{message}; waits until {kst:%Y-%m-%d %H:%M} KST",
                               retry_after=grant.wait + 1.0)
        pause = max(0.002, grant.wait + 0.002)
        if deadline is not None and time.monotonic() + pause > deadline:
            return grant
        waited[grant.reason] = waited.get(grant.reason, 0.0) + pause
        waited["share"] = grant.share
        waited["sending"] = grant.sending
        time.sleep(pause)
        limits = limits_of(tenant_id, channel)


class Channel:
    """One run's sending on a channel: ``take`` blocks until messages may go out; leaving the
    ``with`` block tells the channel this sender is done, and writes the run's wait (if it
    waited) in its job's history: how long, why, and the academy's share meanwhile.

    With ``claim`` (a name for what the run is part of, e.g. a broadcast), each ask renews the
    academy's claim on the channel: between this run and the next of the same broadcast it is
    still owed its share, until :meth:`release` (or :data:`CLAIM_SECONDS` without an ask)."""

    def __init__(self, name: str, tenant_id: str, rate: float,
                 note: Any = None, claim: str | None = None):
        self.name, self.tenant_id, self.rate, self.note = name, tenant_id, float(rate), note
        self.claim = claim or ""
        self.sender = uuid.uuid4().hex
        self.waited: dict[str, Any] = {}
        self.granted = 0

    def __enter__(self) -> Channel:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.rate <= 0:
            return
        done(self.name, self.sender)
        seconds = sum(v for k, v in self.waited.items() if k in REASONS)
        if seconds > 0 and self.note is not None:
            self.note({"channel": self.name, "rate": self.rate, "waited_s": round(seconds, 3),
                       "by_reason": {k: round(v, 3) for k, v in self.waited.items()
                                     if k in REASONS},
                       "share": round(self.waited.get("share", 0.0), 2),
                       "academies_sending": self.waited.get("sending", 1),
                       "messages": self.granted})

    def take(self, wanted: int, *, backlog: int | None = None,
             deadline: float | None = None) -> Grant:
        """At least one and at most ``wanted`` messages to send before ``send_by`` (none if
        they would come only after ``deadline``, a ``time.monotonic()``)."""
        if self.rate <= 0:
            return Grant(wanted, 0.0, float("inf"), "", 0.0, 1, 0)
        grant = take(self.name, self.tenant_id, wanted, rate=self.rate, sender=self.sender,
                     backlog=max(wanted, backlog or 0), waited=self.waited, claim=self.claim,
                     deadline=deadline)
        self.granted += grant.count
        return grant

    def give_back(self, grant: Grant, count: int) -> None:
        """``count`` messages of ``grant`` did not go out in time: they do not count."""
        if self.rate > 0:
            give_back(self.name, self.tenant_id, grant, count)
            self.granted -= count

    def release(self) -> None:
        """The claim has nothing more to send on this channel (see :func:`release`)."""
        if self.rate > 0 and self.claim:
            release(self.name, self.claim)

    def share(self) -> float:
        """The academy's share of the rate (messages/s) if it sent now; 0: no limit. With a
        claim, this makes (or renews) it: the academy has messages waiting from now on."""
        if self.rate <= 0:
            return 0.0
        return ask(self.name, self.tenant_id, 0, rate=self.rate,
                   limits=limits_of(self.tenant_id, self.name), sender=self.sender,
                   backlog=0, claim=self.claim).share


# --- an academy's limits, read live -----------------------------------------------------------

_LIMITS = text(
    """
    SELECT t.weight, l.rate, l.daily, coalesce(l.over_daily, 'wait')
      FROM tenants t
      LEFT JOIN tenant_channel_limits l ON l.tenant_id = t.id AND l.channel = :channel
     WHERE t.id = CAST(:tenant AS uuid)
    """
)
_cache: dict[tuple[str, str], tuple[float, Limits]] = {}
_cache_lock = threading.Lock()


def limits_of(tenant_id: str, channel: str) -> Limits:
    """The academy's weight and limits on ``channel``, at most :data:`LIMITS_TTL` old."""
    key = (str(tenant_id), channel)
    now = time.monotonic()
    with _cache_lock:
        cached = _cache.get(key)
    if cached is not None and now - cached[0] < LIMITS_TTL:
        return cached[1]
    with db.engine().connect() as conn:
        row = conn.execute(_LIMITS, {"tenant": key[0], "channel": channel}).first()
    found = Limits() if row is None else Limits(float(row[0] or 1.0), row[1], row[2], row[3])
    with _cache_lock:
        if len(_cache) > 10_000:
            _cache.clear()
        _cache[key] = (now, found)
    return found


def note_wait(job_id: str, attempt: int, worker: str, detail: dict[str, Any]) -> None:
    """A run's wait for a channel, in its job's history (a ``throttled`` event) and its
    attempt's span."""
    from app.store import jobstore

    tracing.event("throttled", detail)
    try:
        with db.status_conn() as conn:
            jobstore.record_wait(conn, job_id, attempt=attempt, worker=worker, detail=detail)
    except Exception:  # the history is a courtesy here; the sending goes on
        pass


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
