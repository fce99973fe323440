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

# KEYS: 1 the second's counts, 2 the senders, 3 each academy's weight and cap, 4 the daily
# counts' base key, 5 the last five minutes' seconds, 6 the shares last computed.
# ARGV: 1 rate, 2 tenant, 3 weight, 4 cap/s (0 none), 5 daily (0 none), 6 wanted, 7 sender,
# 8 its backlog, 9 ADMIT_UNTIL, 10 SEND_UNTIL, 11 OPEN_AT, 12 ACTIVE_SECONDS, 13 DAY_OFFSET.
# Returns {granted, wait s, send-by s, reason, share, academies sending, used today, the
# second, the day}.
_GRANT = """
local rate, tenant, weight = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3])
local cap, daily, wanted = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local sender, backlog = ARGV[7], tonumber(ARGV[8])
local admit_until, send_until = tonumber(ARGV[9]), tonumber(ARGV[10])
local open_at, active_s, offset = tonumber(ARGV[11]), tonumber(ARGV[12]), tonumber(ARGV[13])
local clock = redis.call('TIME')
local sec = tonumber(clock[1])
local now = sec + tonumber(clock[2]) / 1000000
local frac = now - sec
local at = tonumber(redis.call('HGET', KEYS[1], 'at') or '-1')
if at ~= sec then
  if at >= 0 then
    redis.call('LPUSH', KEYS[5], cjson.encode(redis.call('HGETALL', KEYS[1])))
    redis.call('LTRIM', KEYS[5], 0, 299)
    redis.call('EXPIRE', KEYS[5], 3600)
  end
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[1], 'at', sec, 'total', 0)
  redis.call('EXPIRE', KEYS[1], 120)
end
if backlog > 0 then
  redis.call('HSET', KEYS[2], sender, tenant .. ' ' .. backlog .. ' ' .. now)
else
  redis.call('HDEL', KEYS[2], sender)
end
redis.call('EXPIRE', KEYS[2], 3600)
redis.call('HSET', KEYS[3], tenant, weight .. ' ' .. cap)
redis.call('EXPIRE', KEYS[3], 86400)
local names, seen = {}, {}
local entries = redis.call('HGETALL', KEYS[2])
for i = 1, #entries, 2 do
  local t, b, last = string.match(entries[i + 1], '(%S+) (%S+) (%S+)')
  if tonumber(last) < now - active_s then
    redis.call('HDEL', KEYS[2], entries[i])
  elseif not seen[t] then
    seen[t] = true
    table.insert(names, t)
  end
end
if not seen[tenant] then table.insert(names, tenant) end
table.sort(names)
local w, c = {}, {}
for _, t in ipairs(names) do
  local pw, pc = string.match(redis.call('HGET', KEYS[3], t) or '1 0', '(%S+) (%S+)')
  w[t], c[t] = tonumber(pw), tonumber(pc)
end
local share, open, left = {}, {}, rate
for _, t in ipairs(names) do open[t] = true end
while true do
  local sumw = 0
  for _, t in ipairs(names) do if open[t] then sumw = sumw + w[t] end end
  if sumw <= 0 then break end
  local capped = {}
  for _, t in ipairs(names) do
    if open[t] and c[t] > 0 and c[t] < left * w[t] / sumw then table.insert(capped, t) end
  end
  if #capped == 0 then
    for _, t in ipairs(names) do if open[t] then share[t] = left * w[t] / sumw end end
    break
  end
  for _, t in ipairs(capped) do
    share[t] = c[t]
    left = left - c[t]
    open[t] = nil
  end
end
redis.call('DEL', KEYS[6])
for _, t in ipairs(names) do redis.call('HSET', KEYS[6], t, tostring(share[t] or 0)) end
redis.call('HSET', KEYS[6], '_rate', tostring(rate))
redis.call('EXPIRE', KEYS[6], 60)
local function per_second(r) return math.floor(r * (sec + 1)) - math.floor(r * sec) end
local mine = share[tenant] or 0
-- For the history (bench g, jobq stats): each academy's asks this second, which academies
-- counted as sending at any ask in it, grants made past OPEN_AT and by how many were sending.
if wanted > 0 then redis.call('HINCRBY', KEYS[1], 'a:' .. tenant, 1) end
for _, t in ipairs(names) do redis.call('HSET', KEYS[1], 'in:' .. t, 1) end
local day = math.floor((now + offset) / 86400)
local dkey = KEYS[4] .. ':' .. day
local used_d = tonumber(redis.call('HGET', dkey, tenant) or '0')
local function reply(g, wait, reason)
  return {g, tostring(wait), tostring(send_until - frac), reason, tostring(mine), #names,
          used_d, sec, day}
end
if wanted <= 0 then return reply(0, 0, '') end
if daily > 0 and used_d >= daily then
  return reply(0, (day + 1) * 86400 - offset - now, 'daily')
end
if frac >= admit_until then return reply(0, 1 - frac, 'second') end
local used_t = tonumber(redis.call('HGET', KEYS[1], 't:' .. tenant) or '0')
local room = per_second(rate) - tonumber(redis.call('HGET', KEYS[1], 'total'))
local allow = per_second(mine)
local borrowing = frac >= open_at
if borrowing then allow = (cap > 0) and per_second(cap) or per_second(rate) end
local g = math.max(0, math.min(wanted, allow - used_t, room))
if daily > 0 then g = math.min(g, daily - used_d) end
if g <= 0 then
  if room <= 0 then return reply(0, 1 - frac, 'rate') end
  if cap > 0 and used_t >= per_second(cap) then return reply(0, 1 - frac, 'cap') end
  if borrowing then return reply(0, 1 - frac, 'share') end
  return reply(0, open_at - frac, 'share')
end
redis.call('HINCRBY', KEYS[1], 'total', g)
redis.call('HINCRBY', KEYS[1], 't:' .. tenant, g)
redis.call('HINCRBY', KEYS[1], 'p' .. #names .. ':' .. tenant, g)
if borrowing then redis.call('HINCRBY', KEYS[1], 'b:' .. tenant, g) end
redis.call('HINCRBY', dkey, tenant, g)
redis.call('EXPIRE', dkey, 3 * 86400)
used_d = used_d + g
return reply(g, 0, '')
"""

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


def keys_of(channel: str) -> list[str]:
    base = f"quota:{channel}"
    return [broker_client.key(f"{base}:{part}")
            for part in ("second", "senders", "params", "daily", "history", "shares")]


def ask(channel: str, tenant_id: str, wanted: int, *, rate: float, limits: Limits,
        sender: str, backlog: int) -> Grant:
    """One try for up to ``wanted`` messages of ``tenant_id`` on ``channel`` this second."""
    began = time.monotonic()
    try:
        got = broker_client.client().eval(
            _GRANT, 6, *keys_of(channel), repr(float(rate)), tenant_id, repr(limits.weight),
            repr(float(limits.rate or 0)), int(limits.daily or 0), int(wanted), sender,
            int(backlog), repr(ADMIT_UNTIL), repr(SEND_UNTIL), repr(OPEN_AT),
            repr(ACTIVE_SECONDS), DAY_OFFSET)
    except redis.RedisError as exc:
        raise TransientError(f"send quota of {channel!r} unavailable: {exc}") from exc
    granted, wait, send_by, reason, share, sending, used, second, day = got
    return Grant(int(granted), float(wait), began + float(send_by), _text(reason),
                 float(share), int(sending), int(used), int(second), int(day))


# KEYS: 1 the second's counts, 2 the daily counts' base key. ARGV: tenant, count, second, day.
_GIVE_BACK = """
if tonumber(redis.call('HGET', KEYS[1], 'at') or '-1') == tonumber(ARGV[3]) then
  redis.call('HINCRBY', KEYS[1], 'total', -tonumber(ARGV[2]))
  redis.call('HINCRBY', KEYS[1], 't:' .. ARGV[1], -tonumber(ARGV[2]))
end
redis.call('HINCRBY', KEYS[2] .. ':' .. ARGV[4], ARGV[1], -tonumber(ARGV[2]))
return 1
"""


def give_back(channel: str, tenant_id: str, grant: Grant, count: int) -> None:
    """Messages of ``grant`` that did not go out: they no longer count for the academy's day
    (nor for the second, if it is still on)."""
    if count <= 0:
        return
    keys = keys_of(channel)
    with contextlib.suppress(redis.RedisError):
        broker_client.client().eval(_GIVE_BACK, 2, keys[0], keys[3], tenant_id, int(count),
                                    grant.second, grant.day)


def done(channel: str, sender: str) -> None:
    """This sender has nothing more to send on ``channel``: its academy stops counting as
    sending as soon as none of its senders does (its share goes to the others at once)."""
    with contextlib.suppress(redis.RedisError):  # else it ages out after ACTIVE_SECONDS
        broker_client.client().hdel(keys_of(channel)[1], sender)


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
         backlog: int, waited: dict[str, Any]) -> Grant:
    """Block until at least one of ``wanted`` messages may go out; ``waited`` collects the
    seconds waited by reason. A daily quota that is used up raises :class:`WaitingError`
    (until the academy's next day) or :class:`PermanentError` (its setting ``fail``)."""
    limits = limits_of(tenant_id, channel)
    while True:
        grant = ask(channel, tenant_id, wanted, rate=rate, limits=limits, sender=sender,
                    backlog=backlog)
        if grant.count > 0:
            return grant
        if grant.reason == "daily":
            done(channel, sender)
            until = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=grant.wait)
            kst = until.astimezone(dt.timezone(dt.timedelta(seconds=DAY_OFFSET)))
            message = (f"daily quota of {limits.daily} {channel} messages reached "
                       f"({grant.used_today} sent today)")
            if limits.over_daily == "fail":
                raise PermanentError(message + "; the academy's setting fails what is over it")
            raise WaitingError(f"{message}; waits until {kst:%Y-%m-%d %H:%M} KST",
                               retry_after=grant.wait + 1.0)
        pause = max(0.002, grant.wait + 0.002)
        waited[grant.reason] = waited.get(grant.reason, 0.0) + pause
        waited["share"] = grant.share
        waited["sending"] = grant.sending
        time.sleep(pause)
        limits = limits_of(tenant_id, channel)


class Channel:
    """One run's sending on a channel: ``take`` blocks until messages may go out; leaving the
    ``with`` block tells the channel this sender is done, and writes the run's wait (if it
    waited) in its job's history: how long, why, and the academy's share meanwhile."""

    def __init__(self, name: str, tenant_id: str, rate: float,
                 note: Any = None):
        self.name, self.tenant_id, self.rate, self.note = name, tenant_id, float(rate), note
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

    def take(self, wanted: int, *, backlog: int | None = None) -> Grant:
        """At least one and at most ``wanted`` messages to send before ``send_by``."""
        if self.rate <= 0:
            return Grant(wanted, 0.0, float("inf"), "", 0.0, 1, 0)
        grant = take(self.name, self.tenant_id, wanted, rate=self.rate, sender=self.sender,
                     backlog=max(wanted, backlog or 0), waited=self.waited)
        self.granted += grant.count
        return grant

    def give_back(self, grant: Grant, count: int) -> None:
        """``count`` messages of ``grant`` did not go out in time: they do not count."""
        if self.rate > 0:
            give_back(self.name, self.tenant_id, grant, count)
            self.granted -= count

    def share(self) -> float:
        """The academy's share of the rate (messages/s) if it sent now; 0: no limit."""
        if self.rate <= 0:
            return 0.0
        return ask(self.name, self.tenant_id, 0, rate=self.rate,
                   limits=limits_of(self.tenant_id, self.name), sender=self.sender,
                   backlog=0).share


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
