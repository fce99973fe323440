"""What the hand-off to the broker writes: on Redis, each job's message is the one Celery's
``send_task`` writes (task protocol 2 in kombu's envelope), written without kombu's producer;
so any Celery worker, Flower and ``celery inspect`` read it as they always did."""

from __future__ import annotations

import json
import uuid

from app.broker import client as broker_client
from app.broker.celery_app import celery_app
from app.broker.publish import Outgoing, _send, publish
from app.core.settings import settings

QUEUE = "bulk"  # no worker consumes during this module


def _messages() -> list[dict]:
    raw = broker_client.client().lrange(settings.redis_key_prefix + QUEUE, 0, -1)
    return [json.loads(m) for m in reversed(raw)]  # in the order consumers take them


def _clear() -> None:
    broker_client.client().delete(settings.redis_key_prefix + QUEUE)


def _job(n: int, **kw) -> Outgoing:
    return Outgoing(str(uuid.uuid4()), str(uuid.uuid4()), "system.exec.echo", QUEUE,
                    {"n": n, "token": "s3cret"}, ("token",), academy="해오름 수학학원", **kw)


def test_a_message_is_byte_for_byte_what_send_task_writes_but_its_delivery_tag():
    _clear()
    job = _job(1)
    assert publish([job]) == [job.id]
    with celery_app.producer_or_acquire() as producer:
        _send(producer, [job])  # the same job through kombu's producer and send_task
    ours, celerys = _messages()
    assert ours["properties"].pop("delivery_tag") != celerys["properties"].pop("delivery_tag")
    for part in ("headers", "properties"):
        assert {k: (v, celerys[part].get(k)) for k, v in ours[part].items() if celerys[part].get(k) != v} == {}, part
        assert set(ours[part]) == set(celerys[part]), part
    assert ours == celerys
    assert "s3cret" not in json.dumps(ours)  # Flower's kwargsrepr has the secret redacted
    _clear()


def test_a_window_goes_out_in_order_and_a_front_job_is_taken_first():
    _clear()
    jobs = [_job(n) for n in range(5)]
    front = _job(99, front=True)
    assert publish(jobs) == [j.id for j in jobs]
    assert publish([front]) == [front.id]
    assert [m["headers"]["id"] for m in _messages()] == [front.id] + [j.id for j in jobs]
    _clear()


def test_a_job_with_a_countdown_still_goes_through_send_task_with_its_eta():
    _clear()
    job = _job(1, countdown=30)
    assert publish([job]) == [job.id]
    [message] = _messages()
    assert message["headers"]["id"] == job.id and message["headers"]["eta"] is not None
    _clear()
