"""A fake message provider over a real socket: the KakaoTalk / SMS gateway behind jobq's message
webhook. It takes so many messages per clock second per sender account, as the real gateways
do, answers 429 (with Retry-After) to every message above that, and records each message's
arrival time, so a test sees the seconds the provider saw.

tests/conftest.py loads this module as a plugin: a test asks for ``provider`` and calls
``provider.start(rate=50)``.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.outside import WEBHOOK_SECRET, free_port


@dataclass(frozen=True)
class Arrival:
    at: float
    channel: str
    to: str
    subject: str
    status: int


@dataclass
class Provider:
    rate: int = 50
    url: str = ""
    arrivals: list[Arrival] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    _count: Counter = field(default_factory=Counter)

    def receive(self, body: dict[str, Any]) -> int:
        """200, or 429 when this clock second already had ``rate`` messages."""
        with self.lock:
            at = time.time()
            second = int(at)
            status = 200 if self._count[second] < self.rate else 429
            if status == 200:
                self._count[second] += 1
            self.arrivals.append(Arrival(at, body.get("channel", ""), body.get("to", ""),
                                         body.get("subject") or "", status))
            return status

    @property
    def accepted(self) -> list[Arrival]:
        return [a for a in self.arrivals if a.status == 200]

    @property
    def refused(self) -> int:
        """How many messages were answered 429."""
        return sum(1 for a in self.arrivals if a.status == 429)

    def per_second(self, match: str | None = None) -> Counter:
        """Messages that arrived in each clock second (whose subject contains ``match``)."""
        return Counter(int(a.at) for a in self.arrivals if match is None or match in a.subject)

    def busiest_second(self) -> int:
        return max(self.per_second().values(), default=0)


@pytest.fixture
def provider(configure) -> Iterator[Any]:
    """Call ``provider.start(rate=...)``; jobq's message webhook then points at it."""
    servers: list[ThreadingHTTPServer] = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: one connection per sending run
        fake: Provider

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
            status = self.fake.receive(body)
            payload = ({"message_id": f"p-{body.get('id')}"} if status == 200
                       else {"reason": f"rate limit of {self.fake.rate}/s exceeded"})
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            if status == 429:
                self.send_header("Retry-After", "1")
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    def start(rate: int) -> Provider:
        port = free_port()
        fake = Provider(rate=rate, url=f"http://127.0.0.1:{port}")
        Handler.fake = fake
        server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        configure(notify_webhook_url=f"{fake.url}/messages",
                  notify_webhook_secret=WEBHOOK_SECRET, outside_call_timeout=5.0)
        return fake

    class Starter:
        pass

    starter = Starter()
    starter.start = start  # type: ignore[attr-defined]
    try:
        yield starter
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()
