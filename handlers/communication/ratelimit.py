"""Each channel's send rate, and sending a job's messages at it. An outside message service (a
KakaoTalk or SMS gateway, an SMTP relay) takes so many messages a second per sender account,
whichever of our processes sends them: the engine's channel quota (``ctx.channel``, app/run/
quota.py) divides that rate among the academies sending at the moment by their weight, holds
each academy's own caps on top (``jobq tenants set T --channel kakao --rate 10 --daily 5000``)
and never grants more than the rate in any second. Turned off (``JOBQ_SEND_RATES=kakao=0,...``),
a broadcast sends as fast as the workers go; the gateway then answers 429 and the chunks retry.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlalchemy import text

from app.handler_api import JobContext, PermanentError
from handlers.notify.channels import Transports
from handlers.notify.sending import Outgoing, SendSummary, send_for_job
from handlers.settings import business

#: Messages per second each channel's outside service takes, across all workers, unless
#: ``JOBQ_SEND_RATES`` says otherwise; 0: no limit. Recorded messages leave nothing: no limit.
DEFAULT_SEND_RATES = {"kakao": 50.0, "sms": 20.0, "email": 10.0, "record": 0.0}


@dataclass(frozen=True)
class Bucket:
    name: str
    rate: float  # messages per second; 0: unlimited

    @property
    def portion(self) -> int | None:
        """The most messages to send on one reservation (a second's worth); None: any."""
        return max(1, int(self.rate)) if self.rate > 0 else None


def bucket_for(channel: str, transport: str) -> Bucket:
    """The bucket a message on ``channel`` going out by ``transport`` draws from.

    A recorded message reaches no outside service, so it draws from the ``record`` bucket
    (unlimited unless configured), whatever channel the guardian prefers.
    """
    name = "record" if transport == "record" else channel
    rate = business.send_rates.get(name, DEFAULT_SEND_RATES.get(name, 0.0))
    return Bucket(name, float(rate))


def acquire(ctx: JobContext, bucket: Bucket, count: int) -> float:
    """Block until ``count`` messages may go out on ``bucket``, not sharing it by academy (the
    plain token bucket); the seconds waited."""
    return ctx.throttle(f"send-rate:{bucket.name}", count, rate=bucket.rate)


def chunk_size_for(ctx: JobContext, largest: int, *, seconds: float, least: int) -> int:
    """Messages a chunk of this academy should hold: ``seconds`` of its share of the slowest
    channel it may send on now (its weight's part of the rate among the academies sending,
    within its own cap), between ``least`` and ``largest``."""
    transports = Transports(business)
    buckets = {bucket_for(c, transports.route(c)) for c in ("kakao", "sms", "email")}
    shares = []
    for bucket in buckets:
        if bucket.rate > 0:
            with ctx.channel(bucket.name, rate=bucket.rate) as channel:
                shares.append(channel.share())
    if not shares:
        return largest
    return max(least, min(largest, math.ceil(min(shares) * seconds)))


# --- sending at the rate ----------------------------------------------------------------------

#: Messages per call of the sending helper on a channel without a rate.
UNLIMITED_SLICE = 1000
#: A grant asked for is at most this many seconds of the channel's rate, so the academies
#: sending at once take turns within each second.
STEP_SECONDS = 0.2

_SENT_ALREADY = text(
    """
    SELECT recipient, channel FROM notifications
     WHERE job_id = CAST(:job_id AS uuid) AND tenant_id = CAST(:tenant_id AS uuid)
       AND status = 'sent' AND recipient = ANY(:recipients)
    """
)


def send_at_rate(ctx: JobContext, outgoing: Sequence[Outgoing], *,
                 on_progress: Callable[[int, int], None] | None = None,
                 fail_if_nothing_delivered: bool = False,
                 until: float | None = None,
                 turn_over: Callable[[str], bool] | None = None) -> SendSummary:
    """:func:`~handlers.notify.sending.send_for_job`, paced by each channel's quota.

    Messages the job already sent are counted and skipped before any quota is taken, so a
    resumed run does not wait for messages it will not send. A grant is for the current second:
    what is not handed over in time goes back for the next one. ``on_progress(done, total)`` is
    called after each grant; the sending helper's own progress reports are silenced (a grant's
    numbers would overwrite the caller's). From ``until`` (``time.monotonic()``) on, no new
    grant is asked for when ``turn_over(channel)`` says so (else the turn goes on as long again): the
    messages still to go are counted in the summary's ``left``.
    """
    summary = SendSummary()
    if not outgoing:
        return summary
    with ctx.journal() as conn:
        done_before = {(r.recipient, r.channel) for r in conn.execute(_SENT_ALREADY, {
            "job_id": ctx.job_id, "tenant_id": ctx.tenant_id,
            "recipients": sorted({o.recipient for o in outgoing})})}
    summary.already_sent = sum(1 for o in outgoing if (o.recipient, o.channel) in done_before)
    transports = Transports(business)
    by_bucket: dict[Bucket, list[Outgoing]] = {}
    for o in outgoing:
        if (o.recipient, o.channel) not in done_before:
            by_bucket.setdefault(bucket_for(o.channel, transports.route(o.channel)), []).append(o)
    quiet = dataclasses.replace(ctx, _progress=None)
    total, done = len(outgoing), summary.already_sent
    turn = max(0.0, until - time.monotonic()) if until is not None else 0.0
    for bucket, messages in by_bucket.items():
        step = max(1, math.ceil(bucket.rate * STEP_SECONDS)) if bucket.rate > 0 \
            else UNLIMITED_SLICE
        with ctx.channel(bucket.name, rate=bucket.rate) as channel:
            while messages:
                if until is not None and time.monotonic() >= until:
                    if turn_over is None or turn_over(bucket.name):
                        summary.left += len(messages)
                        break
                    until = time.monotonic() + turn

                grant = channel.take(min(step, len(messages)), backlog=len(messages))
                part, messages = messages[:grant.count], messages[grant.count:]
                got = send_for_job(quiet, part, transports=transports,
                                   fail_if_nothing_delivered=False, send_by=grant.send_by)
                if got.unsent:
                    channel.give_back(grant, len(got.unsent))
                    late = set(got.unsent)
                    messages = [o for o in part if (o.recipient, o.channel) in late] + messages
                summary.sent += got.sent
                summary.already_sent += got.already_sent
                summary.failed += got.failed
                summary.errors.extend(got.errors[:5])
                done += len(part) - len(got.unsent)
                if on_progress is not None:
                    on_progress(done, total)
    if fail_if_nothing_delivered and summary.failed and not (summary.sent or summary.already_sent):
        raise PermanentError(summary.errors[0])
    return summary
