"""Open event streams counted per key (or token subject) and per tenant in Redis, so
``JOBQ_API_STREAMS_PER_KEY`` and ``JOBQ_API_STREAMS_PER_TENANT`` hold across every API process.

Each open stream holds a slot in two sorted sets, scored by when its lease ends. The process
serving the stream renews the lease while it runs and frees the slot when it ends; a slot whose
process died frees itself when its lease runs out, so a crash never leaves a key locked out.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

from app.broker import client as broker_client

SLOTS_KEY = "api:streams:"
#: A slot not renewed for this long is free again (the watcher renews well within it).
LEASE_SECONDS = 60

# Free the lapsed slots, refuse over either cap (1: the key's, 2: the tenant's), else take a
# slot in both: in one script, so two processes admitting at once cannot both pass a full cap.
_TAKE = """
local now, ends = tonumber(ARGV[1]), tonumber(ARGV[2])
for i = 1, 2 do
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now)
  local cap = tonumber(ARGV[3 + i])
  if cap > 0 and redis.call('ZCARD', KEYS[i]) >= cap then return i end
end
for i = 1, 2 do
  redis.call('ZADD', KEYS[i], ends, ARGV[3])
  redis.call('EXPIRE', KEYS[i], math.ceil(ends - now) + 1)
end
return 0
"""


@dataclass(frozen=True)
class Slot:
    member: str
    keys: tuple[str, str]


class Full(Exception):
    """Over a cap: ``which`` is ``key`` or ``tenant``, ``cap`` its number."""

    def __init__(self, which: str, cap: int):
        super().__init__(which, cap)
        self.which = which
        self.cap = cap


def take(limit_key: str, tenant_id: str, *, per_key: int, per_tenant: int) -> Slot:
    """A slot for one more stream of ``limit_key`` and ``tenant_id``, or :class:`Full`."""
    keys = (broker_client.key(f"{SLOTS_KEY}caller:{limit_key}"),
            broker_client.key(f"{SLOTS_KEY}tenant:{tenant_id}"))
    member = uuid.uuid4().hex
    now = time.time()
    client = broker_client.client()
    refused = client.eval(_TAKE, 2, *keys, now, now + LEASE_SECONDS, member, per_key, per_tenant)
    if refused == 1:
        raise Full("key", per_key)
    if refused == 2:
        raise Full("tenant", per_tenant)
    return Slot(member, keys)


def renew(slots: Iterable[Slot]) -> None:
    """Extend the leases of live streams' slots (never bringing back one already freed)."""
    until = time.time() + LEASE_SECONDS
    pipe = broker_client.client().pipeline(transaction=False)
    n = 0
    for slot in slots:
        for key in slot.keys:
            pipe.zadd(key, {slot.member: until}, xx=True)
            pipe.expire(key, LEASE_SECONDS + 1)
            n += 1
    if n:
        pipe.execute()


def release(slot: Slot) -> None:
    pipe = broker_client.client().pipeline(transaction=False)
    for key in slot.keys:
        pipe.zrem(key, slot.member)
    pipe.execute()
