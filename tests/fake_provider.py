"""A fake message provider over a real socket: the KakaoTalk / SMS gateway behind jobq's message
webhook, the one HTTP server both the tests (tests/provider.py, a pytest fixture) and the
benchmarks (bench/provider.py) stand up.

It takes ``rate`` messages per clock second per sender account, as the real gateways do,
answers 429 (with ``Retry-After``) to every message above that, and records each message's
arrival time, channel, address, subject (a broadcast's starts with ``[academy name]``) and
answer, so a test or a bench sees the seconds the provider saw.

``latency`` (seconds) is how long it takes to answer each message after counting it: a real
gateway is tens of milliseconds away, so a sender that waits for each answer before the next
message reaches only ``1 / latency`` messages a second per connection. 0 answers at once.

Replies go out with TCP_NODELAY: without it the answer's headers and body leave as two small
writes, and Nagle's algorithm holds the second until the client's delayed ACK (40 ms on Linux),
which made every message cost 45 ms on loopback (0.7 ms with it).
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Arrival:
    at: float
    channel: str
    to: str
    subject: str
    status: int


class FakeProvider:
    """Started at construction on ``127.0.0.1`` (a free port unless given); :meth:`stop` ends
    it. ``url`` is the server's base URL, ``messages_url`` the endpoint jobq's webhook posts to."""

    def __init__(self, rate: int, *, latency: float = 0.0, host: str = "127.0.0.1",
                 port: int = 0):
        if rate <= 0:
            raise ValueError(f"the provider's rate must be a positive number of messages/s, "
                             f"not {rate!r}")
        if latency < 0:
            raise ValueError(f"latency must be 0 or more seconds, not {latency!r}")
        self.rate, self.latency = int(rate), float(latency)
        self.arrivals: list[Arrival] = []
        self.lock = threading.Lock()
        self._count: Counter[int] = Counter()
        #: Messages being answered now, and the most there ever were at once.
        self.in_flight = 0
        self.most_in_flight = 0
        self.server = _Server((host, port), _handler_for(self))
        self.port = self.server.server_address[1]
        self.url = f"http://{host}:{self.port}"
        self.messages_url = f"{self.url}/messages"
        threading.Thread(target=self.server.serve_forever, daemon=True,
                         name=f"fake-provider-{self.port}").start()

    # --- what it does with a message -----------------------------------------------------------

    def receive(self, body: dict[str, Any]) -> int:
        """200, or 429 when this clock second already had ``rate`` messages."""
        with self.lock:
            at = time.time()
            second = int(at)
            status = 200 if self._count[second] < self.rate else 429
            if status == 200:
                self._count[second] += 1
            self.arrivals.append(Arrival(at, str(body.get("channel") or ""),
                                         str(body.get("to") or ""),
                                         str(body.get("subject") or ""), status))
            return status

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # --- what it saw ---------------------------------------------------------------------------

    @property
    def accepted(self) -> list[Arrival]:
        with self.lock:
            return [a for a in self.arrivals if a.status == 200]

    @property
    def refused(self) -> int:
        """How many messages were answered 429."""
        with self.lock:
            return sum(1 for a in self.arrivals if a.status == 429)

    def per_second(self, match: str | None = None) -> Counter[int]:
        """Messages that arrived in each clock second (whose subject contains ``match``)."""
        with self.lock:
            return Counter(int(a.at) for a in self.arrivals
                           if match is None or match in a.subject)

    def busiest_second(self) -> int:
        return max(self.per_second().values(), default=0)

    def figures(self, academy: str | None = None) -> dict[str, Any]:
        """What the provider saw: messages (of ``academy``, by the ``[name]`` its subjects
        start with), the first and last arrival, the refused, the seconds over the rate
        (refused messages included), the busiest second, and the share of the rate used over
        the whole seconds between the first and the last arrival (``rate_used``)."""
        tag = f"[{academy}]" if academy is not None else None
        with self.lock:
            seen = [a for a in self.arrivals if tag is None or tag in a.subject]
            per_second = Counter(int(a.at) for a in self.arrivals)
        refused = sum(1 for a in seen if a.status == 429)
        if not seen:
            return {"messages": 0, "refused": refused}
        first, last = min(a.at for a in seen), max(a.at for a in seen)
        inner = range(int(first) + 1, int(last))
        used = sum(per_second[s] for s in inner) / (len(inner) * self.rate) if inner else None
        return {"messages": len(seen), "first": first, "last": last, "refused": refused,
                "seconds_over_rate": sum(1 for n in per_second.values() if n > self.rate),
                "busiest_second": max(per_second.values()),
                "rate_used": round(used, 4) if used is not None else None}


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    #: Connections waiting to be accepted (socketserver's default is 5). A real gateway takes
    #: hundreds; with 5, a few senders opening connections at once overflow it, and the kernel
    #: retries the dropped ones a second later: into the next clock second, as if jobq had
    #: sent more than the rate in it.
    request_queue_size = 128


def _handler_for(provider: FakeProvider) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: a sender reuses its connection
        disable_nagle_algorithm = True  # one answer is not held for the client's ACK

        def do_POST(self) -> None:
            try:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
            except ValueError:
                self._answer(400, {"reason": "the body is not JSON"})
                return
            if not isinstance(body, dict):
                self._answer(400, {"reason": "the body is not a JSON object"})
                return
            with provider.lock:
                provider.in_flight += 1
                provider.most_in_flight = max(provider.most_in_flight, provider.in_flight)
            try:
                status = provider.receive(body)
                if provider.latency:
                    time.sleep(provider.latency)
                if status == 200:
                    self._answer(200, {"message_id": f"p-{body.get('id')}"})
                else:
                    self._answer(429, {"reason": f"rate limit of {provider.rate}/s exceeded"},
                                 {"Retry-After": "1"})
            finally:
                with provider.lock:
                    provider.in_flight -= 1

        def _answer(self, status: int, payload: dict[str, Any],
                    headers: dict[str, str] | None = None) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    return Handler

