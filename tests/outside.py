"""Real outside services inside the test process: an SMTP server (aiosmtpd) and an HTTP gateway
(http.server in a thread) that answers from a script, and the settings that point jobq at them.

tests/conftest.py loads this module as a plugin, so every test can ask for these fixtures.
"""

from __future__ import annotations

import dataclasses
import email
import email.policy
import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

import app.core.settings
import handlers.settings

SMTP_USER, SMTP_PASSWORD = "academy-mailer", "s3cret-pass"
WEBHOOK_SECRET = "test-webhook-secret"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def configure(monkeypatch: pytest.MonkeyPatch):
    """Point jobq's settings at the test's services: ``configure(smtp_host=..., ...)``, the
    business's (``handlers.settings.business``) or the engine's (``outside_call_timeout``).

    The in-thread worker runs handlers in this process, and handlers read those settings when
    they send, so replacing what they loaded reaches them.
    """

    def apply(**changes: Any) -> None:
        for lazy in (app.core.settings.settings, handlers.settings.business):
            current = lazy.get()  # type: ignore[attr-defined]
            mine = {name: changes.pop(name) for name in list(changes)
                    if name in {f.name for f in dataclasses.fields(current)}}
            if mine:
                monkeypatch.setattr(lazy, "_value", dataclasses.replace(current, **mine))
        assert not changes, f"no setting is called {', '.join(changes)}"

    return apply


# --- SMTP ------------------------------------------------------------------------------------------


@dataclass
class SmtpServer:
    """Accepts mail for any address but ``nobody@...`` (550), after a login."""

    host: str
    port: int
    messages: list[EmailMessage] = field(default_factory=list)
    logins: list[str] = field(default_factory=list)

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options) -> str:
        if address.startswith("nobody@"):
            return "550 5.1.1 수신자 주소가 존재하지 않습니다"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope) -> str:
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        self.messages.append(message)  # type: ignore[arg-type]
        return "250 Message accepted for delivery"

    def authenticate(self, server, session, envelope, mechanism, auth_data) -> AuthResult:
        ok = (isinstance(auth_data, LoginPassword) and auth_data.login.decode() == SMTP_USER
              and auth_data.password.decode() == SMTP_PASSWORD)
        if ok:
            self.logins.append(SMTP_USER)
        return AuthResult(success=ok)


@pytest.fixture
def smtp_server(configure) -> Iterator[SmtpServer]:
    """A real SMTP server that requires a login; jobq's SMTP settings point at it."""
    server = SmtpServer("127.0.0.1", free_port())
    controller = Controller(server, hostname=server.host, port=server.port,
                            authenticator=server.authenticate, auth_require_tls=False,
                            auth_required=True)
    controller.start()
    configure(smtp_host=server.host, smtp_port=server.port, smtp_tls="none",
              smtp_username=SMTP_USER, smtp_password=SMTP_PASSWORD,
              smtp_from="데모 학원 <noreply@academy.example>")
    try:
        yield server
    finally:
        controller.stop()


# --- HTTP gateway ----------------------------------------------------------------------------------


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Gateway:
    """Answers each POST with the next scripted ``(status, json)``; then with ``default``."""

    url: str
    script: list[tuple[int, Any]] = field(default_factory=list)
    default: tuple[int, Any] = (200, None)
    received: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, request: Received) -> tuple[int, Any]:
        with self.lock:
            self.received.append(request)
            status, payload = self.script.pop(0) if self.script else self.default
        if payload is None:
            payload = {"message_id": f"gw-{len(self.received)}"}
        return status, payload(request) if callable(payload) else payload


@pytest.fixture
def gateway(configure) -> Iterator[Gateway]:
    """A local HTTP gateway; jobq's message webhook and payment gateway URLs point at it."""
    port = free_port()
    gw = Gateway(f"http://127.0.0.1:{port}")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            status, payload = gw.answer(Received(self.path, dict(self.headers), body))
            data = json.dumps(payload, ensure_ascii=False).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:  # keep the test output quiet
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    configure(notify_webhook_url=f"{gw.url}/messages", notify_webhook_secret=WEBHOOK_SECRET,
              payment_gateway_url=gw.url, payment_gateway_secret=WEBHOOK_SECRET,
              outside_call_timeout=5.0)
    try:
        yield gw
    finally:
        server.shutdown()
        server.server_close()
