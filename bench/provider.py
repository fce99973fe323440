"""A fake message provider for the benchmarks: the KakaoTalk / SMS gateway behind jobq's message
webhook, over a real socket in the bench's own process. It takes ``rate`` messages per clock
second, answers 429 above that, and records when each message arrived and for which academy
(the ``[academy name]`` its subject starts with), so the bench reports what the provider saw."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Provider:
    def __init__(self, rate: int):
        self.rate = rate
        self.arrivals: list[tuple[float, str, int]] = []  # (time, subject, status)
        self.lock = threading.Lock()
        self._count: Counter = Counter()
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/messages"
        provider = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                status = provider.receive(body.get("subject") or "")
                data = json.dumps({"message_id": f"p-{body.get('id')}"} if status == 200
                                  else {"reason": "rate limit exceeded"}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                if status == 429:
                    self.send_header("Retry-After", "1")
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def receive(self, subject: str) -> int:
        with self.lock:
            at = time.time()
            status = 200 if self._count[int(at)] < self.rate else 429
            if status == 200:
                self._count[int(at)] += 1
            self.arrivals.append((at, subject, status))
            return status

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def env(self) -> dict[str, str]:
        """The workers' settings that send KakaoTalk messages here at ``rate``."""
        return {"JOBQ_NOTIFY_WEBHOOK_URL": self.url, "JOBQ_NOTIFY_WEBHOOK_SECRET": "bench",
                "JOBQ_SEND_RATES": f"kakao={self.rate}"}

    def figures(self, academy: str | None = None) -> dict[str, Any]:
        """What the provider saw: messages (of ``academy``), the first and last arrival, the
        seconds that went over the rate (incl. refused), the refused, and the share of the
        rate used over the whole seconds between the first and last arrival."""
        with self.lock:
            seen = [(a, s) for a, s, st in self.arrivals if academy is None or f"[{academy}]" in s]
            refused = sum(1 for a, s, st in self.arrivals if st == 429
                          and (academy is None or f"[{academy}]" in s))
            per_second = Counter(int(a) for a, s, st in self.arrivals)
        if not seen:
            return {"messages": 0, "refused": refused}
        first, last = min(a for a, _ in seen), max(a for a, _ in seen)
        inner = range(int(first) + 1, int(last))
        used = sum(per_second[s] for s in inner) / (len(inner) * self.rate) if inner else None
        return {"messages": len(seen), "first": first, "last": last, "refused": refused,
                "seconds_over_rate": sum(1 for n in per_second.values() if n > self.rate),
                "busiest_second": max(per_second.values()),
                "rate_used": round(used, 4) if used is not None else None}
