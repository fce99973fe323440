"""A per-channel send rate shared by every worker process (a token bucket in Redis), and
sending a job's messages at that rate."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import redis
from sqlalchemy import text

import app.settings
from app import broker_client
from app.context import JobContext
from app.errors import PermanentError, TransientError
from handlers.notify.channels import Transports
from handlers.notify.sending import Outgoing, SendSummary, send_for_job

# An outside message service (a KakaoTalk or SMS gateway, an SMTP relay) takes so many messages
# a second per sender account, whichever of our processes sends them. Each bucket is one Redis
# hash updated by one Lua script, so all workers draw from the same tokens. A caller *reserves*
# tokens and sleeps as long as the script says: the bucket may go into debt, which keeps
# concurrent callers in arrival order instead of letting them race. Turned off
# (JOBQ_SEND_RATES=kakao=0,...), a broadcast sends as fast as the workers go; the gateway then
# answers 429 and the chunks retry with backoff.

#: A bucket holds at most this many seconds' worth of tokens: a short burst, then the rate.
BURST_SECONDS = 1.0

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


@dataclass(frozen=True)
class Bucket:
    name: str
    rate: float  # tokens per second; 0: unlimited

    @property
    def capacity(self) -> float:
        return max(1.0, self.rate * BURST_SECONDS)

    @property
    def portion(self) -> int | None:
        """The most messages to send on one reservation (no more than a burst); None: any."""
        return int(self.capacity) if self.rate > 0 else None


def bucket_for(channel: str, transport: str) -> Bucket:
    """The bucket a message on ``channel`` going out by ``transport`` draws from.

    A recorded message reaches no outside service, so it draws from the ``record`` bucket
    (unlimited unless configured), whatever channel the guardian prefers.
    """
    name = "record" if transport == "record" else channel
    return Bucket(name, float(app.settings.settings.send_rates.get(name, 0.0)))


def reserve(bucket: Bucket, count: int) -> float:
    """Take ``count`` tokens; the seconds to wait before using them."""
    if bucket.rate <= 0 or count <= 0:
        return 0.0
    key = broker_client.key(f"send-rate:{bucket.name}")
    try:
        wait = broker_client.client().eval(_RESERVE, 1, key, repr(bucket.rate), repr(bucket.capacity), count)
    except redis.RedisError as exc:
        raise TransientError(f"send-rate bucket unavailable: {exc}") from exc
    return float(wait)


def acquire(bucket: Bucket, count: int) -> float:
    """Block until ``count`` messages may go out on ``bucket``; the seconds waited.

    Send at most :attr:`Bucket.portion` messages per call, or they leave in one burst.
    """
    waited = 0.0
    while count > 0:
        portion = min(count, bucket.portion or count)
        wait = reserve(bucket, portion)
        if wait > 0:
            time.sleep(wait)
            waited += wait
        count -= portion
    return waited


# --- sending at the rate ----------------------------------------------------------------------

#: Messages per call of the sending helper when the bucket sets no smaller portion.
UNLIMITED_SLICE = 1000

_SENT_ALREADY = text(
    """
    SELECT recipient, channel FROM notifications
     WHERE job_id = CAST(:job_id AS uuid) AND tenant_id = CAST(:tenant_id AS uuid)
       AND status = 'sent' AND recipient = ANY(:recipients)
    """
)


def send_at_rate(ctx: JobContext, outgoing: Sequence[Outgoing], *,
                 on_progress: Callable[[int, int], None] | None = None,
                 fail_if_nothing_delivered: bool = False) -> SendSummary:
    """:func:`~handlers.notify.sending.send_for_job`, paced by each channel's bucket.

    Messages the job already sent are counted and skipped before any token is taken, so a
    resumed run does not wait for messages it will not send. ``on_progress(done, total)`` is
    called after each slice; the sending helper's own progress reports are silenced (a slice's
    numbers would overwrite the caller's).
    """
    summary = SendSummary()
    if not outgoing:
        return summary
    with ctx.journal() as conn:
        done_before = {(r.recipient, r.channel) for r in conn.execute(_SENT_ALREADY, {
            "job_id": ctx.job_id, "tenant_id": ctx.tenant_id,
            "recipients": sorted({o.recipient for o in outgoing})})}
    summary.already_sent = sum(1 for o in outgoing if (o.recipient, o.channel) in done_before)
    transports = Transports(app.settings.settings)
    by_bucket: dict[Bucket, list[Outgoing]] = {}
    for o in outgoing:
        if (o.recipient, o.channel) not in done_before:
            by_bucket.setdefault(bucket_for(o.channel, transports.route(o.channel)), []).append(o)
    quiet = dataclasses.replace(ctx, _progress=None)
    total, done = len(outgoing), summary.already_sent
    for bucket, messages in by_bucket.items():
        step = bucket.portion or UNLIMITED_SLICE
        for start in range(0, len(messages), step):
            part = messages[start:start + step]
            acquire(bucket, len(part))
            got = send_for_job(quiet, part, transports=transports,
                               fail_if_nothing_delivered=False)
            summary.sent += got.sent
            summary.already_sent += got.already_sent
            summary.failed += got.failed
            summary.errors.extend(got.errors[:5])
            done += len(part)
            if on_progress is not None:
                on_progress(done, total)
    if fail_if_nothing_delivered and summary.failed and not (summary.sent or summary.already_sent):
        raise PermanentError(summary.errors[0])
    return summary
