"""The ``dispatch`` queue as the dispatch pump (app.intake.pump) reads it: messages taken many at
a time into kombu's own unacknowledged set, acknowledged, or given back, with kombu's semantics.

kombu's Redis transport LPUSHes a message onto the queue's list and a consumer BRPOPs it, then
keeps it in the ``unacked`` hash (delivery tag -> ``[message, exchange, routing_key]``) and the
``unacked_index`` sorted set (delivery tag -> when) until it is acknowledged; a message there
longer than the visibility timeout goes back to its queue. The pump's messages are kept the same
way, plus a set of the tags it holds (``jobq:pump:held``), so the next pump to lead gives a dead
one's back at once instead of after the visibility timeout.
"""

from __future__ import annotations

import contextlib
import json
import time

from app.broker import client as redis_client
from app.core.settings import settings

QUEUE = "dispatch"
TASK = "dispatch_intent"
#: The header that marks a message the pump handed back to workers.
HANDED_BACK = "jobq_pump"

# KEYS: the queue, kombu's unacked hash and index, the pump's held set.
# ARGV: the most to take, now (the unacked index's score), the task name.
# Takes from the front (the right end: kombu LPUSHes, workers BRPOP) while the front is a
# dispatch_intent message the pump may run; stops at the first other one.
_TAKE = """
local out = {}
for i = 1, tonumber(ARGV[1]) do
  local raw = redis.call('LINDEX', KEYS[1], -1)
  if not raw then break end
  local ok, msg = pcall(cjson.decode, raw)
  if not ok or type(msg) ~= 'table' then break end
  local h, p = msg['headers'], msg['properties']
  if type(h) ~= 'table' or type(p) ~= 'table' then break end
  if h['task'] ~= ARGV[3] or h['jobq_pump'] ~= nil then break end
  if h['eta'] ~= nil and h['eta'] ~= cjson.null then break end
  if h['expires'] ~= nil and h['expires'] ~= cjson.null then break end
  local tag = p['delivery_tag']
  if type(tag) ~= 'string' then break end
  local ex, rk = '', ''
  local di = p['delivery_info']
  if type(di) == 'table' then
    if type(di['exchange']) == 'string' then ex = di['exchange'] end
    if type(di['routing_key']) == 'string' then rk = di['routing_key'] end
  end
  redis.call('RPOP', KEYS[1])
  redis.call('ZADD', KEYS[3], ARGV[2], tag)
  redis.call('HSET', KEYS[2], tag, '[' .. raw .. ',' .. cjson.encode(ex) .. ',' .. cjson.encode(rk) .. ']')
  redis.call('SADD', KEYS[4], tag)
  out[#out + 1] = raw
end
return out
"""


def _prefixed(name: str) -> str:
    return settings.redis_key_prefix + name


def _keys() -> list[str]:
    return [_prefixed(QUEUE), _prefixed("unacked"), _prefixed("unacked_index"),
            redis_client.key("pump:held")]


class Held:
    """The pump's Redis calls on the ``dispatch`` queue (the broker's Redis, Sentinel or not)."""

    def __init__(self) -> None:
        self.redis = redis_client.connect(timeout=10)
        self._take = self.redis.register_script(_TAKE)
        self.queue, self.unacked, self.index, self.held = _keys()

    def take(self, n: int) -> list[str]:
        raw = self._take(keys=[self.queue, self.unacked, self.index, self.held],
                         args=[n, time.time(), TASK])
        return [r.decode() if isinstance(r, bytes) else r for r in raw]

    def ack(self, tags: list[str]) -> None:
        if not tags:
            return
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.hdel(self.unacked, *tags)
            pipe.zrem(self.index, *tags)
            pipe.srem(self.held, *tags)
            pipe.execute()

    def give_back(self, tags: list[str], *, for_workers: bool = False) -> int:
        """Put held messages back: to the front of the queue in the order they were taken
        (the pump, or a worker, takes them again), or ``for_workers`` to the back, marked so
        the pump leaves them to a worker."""
        if not tags:
            return 0
        stored = self.redis.hmget(self.unacked, tags)
        with self.redis.pipeline(transaction=True) as pipe:
            for value in reversed(stored):
                if value is None:
                    continue
                message = json.loads(value)[0]
                with contextlib.suppress(KeyError, TypeError):
                    message["headers"]["redelivered"] = True
                    message["properties"]["delivery_info"]["redelivered"] = True
                if for_workers:
                    message.setdefault("headers", {})[HANDED_BACK] = "workers"
                    pipe.lpush(self.queue, json.dumps(message))
                else:
                    pipe.rpush(self.queue, json.dumps(message))
            pipe.hdel(self.unacked, *tags)
            pipe.zrem(self.index, *tags)
            pipe.srem(self.held, *tags)
            pipe.execute()
        return sum(v is not None for v in stored)

    def held_tags(self) -> list[str]:
        return [t.decode() if isinstance(t, bytes) else t for t in self.redis.smembers(self.held)]


