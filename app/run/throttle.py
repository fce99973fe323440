"""A rate that many worker processes share: a token bucket in Redis, for outside services that
take so many requests a second per account (a KakaoTalk or SMS gateway, an SMTP relay).

Each bucket is one Redis hash updated by one Lua script, so every worker draws from the same
tokens. A caller *reserves* tokens and sleeps as long as the script says: the bucket may go into
debt, which keeps concurrent callers in arrival order instead of letting them race.
"""

from __future__ import annotations

import time

import redis

from app.broker import client as broker_client
from app.core.errors import TransientError

#: A bucket holds at most this many seconds' worth of tokens: a short burst, then the rate.
#: It also bounds one reservation, so senders sharing a channel (two academies' broadcasts)
#: take turns every quarter second instead of every second.
BURST_SECONDS = 0.25

# KEYS[1]: the bucket. ARGV: rate per second, capacity, tokens wanted.
# Returns the seconds the caller waits before its tokens are due (as a string: Lua numbers
# lose their fraction on the way back to Redis).
_RESERVE = """
local rate = tonumber(ARGV[1])
local capacity = tonumber(ARGV[2])
local wanted = tonumber(ARGV[3])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or capacity
local at = tonumber(state[2]) or now
tokens = math.min(capacity, tokens + (now - at) * rate) - wanted
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('EXPIRE', KEYS[1], math.ceil(capacity / rate - tokens / rate) + 60)
if tokens >= 0 then return '0' end
return tostring(-tokens / rate)
"""


def capacity(rate: float) -> float:
    return max(1.0, rate * BURST_SECONDS)


def portion(rate: float) -> int | None:
    """The most uses to take on one reservation (no more than a burst); None: any."""
    return int(capacity(rate)) if rate > 0 else None


def reserve(name: str, count: int, *, rate: float) -> float:
    """Take ``count`` tokens of bucket ``name``; the seconds to wait before using them."""
    if rate <= 0 or count <= 0:
        return 0.0
    key = broker_client.key(f"throttle:{name}")
    try:
        wait = broker_client.client().eval(_RESERVE, 1, key, repr(rate), repr(capacity(rate)),
                                           count)
    except redis.RedisError as exc:
        raise TransientError(f"rate bucket {name!r} unavailable: {exc}") from exc
    return float(wait)


def acquire(name: str, count: int, *, rate: float) -> float:
    """Block until ``count`` uses of ``name`` may go out at ``rate`` a second; the seconds
    waited. Take at most :func:`portion` per call, or they leave in one burst."""
    waited = 0.0
    step = portion(rate) or count
    while count > 0:
        part = min(count, step)
        wait = reserve(name, part, rate=rate)
        if wait > 0:
            time.sleep(wait)
            waited += wait
        count -= part
    return waited
