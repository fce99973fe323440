"""An event stream of ``jobq api`` read as a client reads it: over a real socket, on a thread,
each frame kept with the time it arrived, closable from the test at any moment."""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import threading
import time
from typing import Any


class EventStream:
    """``GET path`` with ``token``; ``frames`` fill as they arrive: (arrived, kind, data, id)."""

    def __init__(self, base_url: str, path: str, token: str, **headers: str) -> None:
        host, port = base_url.removeprefix("http://").split(":")
        self.conn = http.client.HTTPConnection(host, int(port), timeout=120)
        self.conn.request("GET", path, headers={"Authorization": f"Bearer {token}", **headers})
        self.response = self.conn.getresponse()
        self.status = self.response.status
        self.frames: list[tuple[float, str, Any, str | None]] = []
        self.ended_at: float | None = None
        self.body: Any = None
        if self.status != 200:
            raw = self.response.read()
            try:
                self.body = json.loads(raw)
            except ValueError:
                self.body = {"error": raw.decode(errors="replace")}
            self.conn.close()
            self.ended_at = time.monotonic()
            return
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        kind, event_id, data = "message", None, None
        try:
            while line := self.response.readline():
                text = line.decode().rstrip("\r\n")
                if text.startswith("event: "):
                    kind = text[7:]
                elif text.startswith("id: "):
                    event_id = text[4:]
                elif text.startswith("data: "):
                    data = json.loads(text[6:])
                elif not text and data is not None:
                    self.frames.append((time.monotonic(), kind, data, event_id))
                    kind, event_id, data = "message", None, None
        except (OSError, ValueError, AttributeError, http.client.HTTPException):
            pass  # closed by the test
        finally:
            self.ended_at = time.monotonic()

    @property
    def ended(self) -> bool:
        return self.ended_at is not None

    def kinds(self) -> list[str]:
        return [kind for _, kind, _, _ in self.frames]

    def of(self, kind: str) -> list[Any]:
        return [data for _, k, data, _ in self.frames if k == kind]

    def close(self) -> None:
        """Hang up as a client that goes away does."""
        sock = self.conn.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self.conn.close()
