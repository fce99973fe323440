"""The fake message provider as a pytest fixture: the KakaoTalk / SMS gateway behind jobq's
message webhook (the server is tests/fake_provider.py, shared with the benchmarks). It takes so
many messages per clock second, answers 429 above that, and records each message's arrival.

tests/conftest.py loads this module as a plugin: a test asks for ``provider`` and calls
``provider.start(rate=50)`` (``latency=0.05`` to answer like a gateway 50 ms away).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.fake_provider import Arrival, FakeProvider
from tests.outside import WEBHOOK_SECRET

__all__ = ["Arrival", "FakeProvider", "provider"]


@pytest.fixture
def provider(configure) -> Iterator[Any]:
    """Call ``provider.start(rate=...)``; jobq's message webhook then points at it."""
    started: list[FakeProvider] = []

    class Starter:
        @staticmethod
        def start(rate: int, latency: float = 0.0) -> FakeProvider:
            fake = FakeProvider(rate, latency=latency)
            started.append(fake)
            configure(notify_webhook_url=fake.messages_url,
                      notify_webhook_secret=WEBHOOK_SECRET, outside_call_timeout=5.0)
            return fake

    try:
        yield Starter()
    finally:
        for fake in started:
            fake.stop()
