"""How a rendered message leaves: one small interface, three transports.

``record`` only keeps the message (its row is the delivery; the demo needs nothing outside),
``smtp`` sends e-mail with :mod:`smtplib`, ``webhook`` POSTs signed JSON to an SMS / KakaoTalk
gateway. A guardian's channel (kakao, sms, email) is routed to a transport by the settings:
with no SMTP host or webhook URL configured, that channel records.

Transports raise :class:`~app.core.errors.TransientError` for "try again later" (5xx, 429, timeouts,
lost connections, SMTP 4xx) and :class:`~app.core.errors.PermanentError` with the other side's reason
for "this will not work" (4xx, SMTP 5xx, a refused address).
"""

from __future__ import annotations

import email.utils
import hashlib
import hmac
import json
import os
import queue
import smtplib
import ssl
import threading
import time
from dataclasses import dataclass
from email.header import Header
from email.mime.text import MIMEText
from typing import Protocol

import requests

from app.handler_api import PermanentError, TransientError, outside_call, settings
from handlers.settings import BusinessSettings

#: Where a guardian's channel goes when its outside service is configured.
ROUTES = {"email": "smtp", "kakao": "webhook", "sms": "webhook", "record": "record"}
SIGNATURE_HEADER = "X-Jobq-Signature"
TIMESTAMP_HEADER = "X-Jobq-Timestamp"
MAX_REASON = 300


@dataclass(frozen=True)
class Message:
    """One message to one address; ``reference`` is our notification id, unique per message."""

    reference: str
    channel: str
    address: str | None
    subject: str | None
    body: str


class Transport(Protocol):
    name: str

    def send(self, message: Message) -> str:
        """Hand the message over; return the provider's message id."""
        ...


class RecordTransport:
    """Keeps the rendered message in its notification row, and nothing else."""

    name = "record"

    def send(self, message: Message) -> str:
        return f"record:{message.reference}"


class SmtpTransport:
    """E-mail through the configured SMTP server, over one connection for the whole run
    (logged in once), opened again once if the server dropped it between messages."""

    name = "smtp"

    def __init__(self, cfg: BusinessSettings):
        if not cfg.smtp_host:
            raise PermanentError("SMTP_HOST is not set")
        self.cfg = cfg
        self._client: smtplib.SMTP | None = None

    def _connect(self) -> smtplib.SMTP:
        cfg = self.cfg
        timeout = settings.outside_call_timeout
        assert cfg.smtp_host is not None
        if cfg.smtp_tls == "ssl":
            client = smtplib.SMTP_SSL(cfg.smtp_host, cfg.smtp_port, timeout=timeout,
                                      context=ssl.create_default_context())
        else:
            client = smtplib.SMTP(cfg.smtp_host, cfg.smtp_port, timeout=timeout)
            if cfg.smtp_tls == "starttls":
                client.starttls(context=ssl.create_default_context())
        if cfg.smtp_username:
            client.login(cfg.smtp_username, cfg.smtp_password or "")
        return client

    def send(self, message: Message) -> str:
        if not message.address:
            raise PermanentError("no e-mail address")
        # compat32 on purpose: the newer email policy folds a long Korean subject into
        # encoded-words at a space and drops that space ("학생 지각" arrives as "학생지각").
        mail = MIMEText(message.body, "plain", "utf-8")
        sender_name, sender = email.utils.parseaddr(self.cfg.smtp_from)
        mail["From"] = email.utils.formataddr((sender_name, sender), charset="utf-8")
        mail["To"] = message.address
        mail["Subject"] = Header(message.subject or "", "utf-8")
        # Derived from our reference, so a resent message can be recognised by the recipient.
        mail["Message-ID"] = f"<{message.reference}@{sender.partition('@')[2] or 'jobq.local'}>"
        mail["Date"] = email.utils.formatdate(localtime=True)
        try:
            with outside_call("email", "send", attributes={
                    "server.address": self.cfg.smtp_host, "server.port": self.cfg.smtp_port}):
                self._send(sender, message.address, mail.as_bytes())
        except smtplib.SMTPRecipientsRefused as exc:
            raise PermanentError(f"SMTP refused {message.address}: {_smtp_reason(exc)}") from exc
        except smtplib.SMTPResponseException as exc:
            self.close()
            reason = f"SMTP {exc.smtp_code} {_decode(exc.smtp_error)}"
            if 400 <= exc.smtp_code < 500:
                raise TransientError(reason) from exc
            raise PermanentError(reason) from exc
        except (smtplib.SMTPServerDisconnected, smtplib.SMTPConnectError, OSError) as exc:
            self.close()
            raise TransientError(f"SMTP server unreachable: {exc}") from exc
        return mail["Message-ID"]

    def _send(self, sender: str, to: str, data: bytes) -> None:
        try:
            self._deliver(sender, to, data)
        except smtplib.SMTPServerDisconnected:
            # An idle connection the server closed since the last message: once more, anew.
            self.close()
            self._deliver(sender, to, data)

    def _deliver(self, sender: str, to: str, data: bytes) -> None:
        if self._client is None:
            self._client = self._connect()
        self._client.sendmail(sender, [to], data)

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                client.quit()
            except (smtplib.SMTPException, OSError):
                client.close()


#: HTTP sessions not in use, per process and gateway URL: a send takes one (its own kept-alive
#: connection) and puts it back, so the connections outlive a run and concurrent sends never
#: share one. Opening a connection per message (or per run) would cost a handshake each, and a
#: burst of new connections can overflow the gateway's listen queue, which delays them by a
#: second: into the next clock second, past the channel's grant.
_IDLE: dict[tuple[int, str], queue.SimpleQueue[requests.Session]] = {}
_IDLE_LOCK = threading.Lock()


def _idle_sessions(url: str) -> queue.SimpleQueue[requests.Session]:
    key = (os.getpid(), url)  # a forked worker child opens its own
    with _IDLE_LOCK:
        found = _IDLE.get(key)
        if found is None:
            found = _IDLE[key] = queue.SimpleQueue()
        return found


class WebhookTransport:
    """A signed JSON POST to the message gateway.

    The body is ``{"id", "channel", "to", "subject", "text"}``; ``X-Jobq-Timestamp`` is the
    Unix time and ``X-Jobq-Signature`` is ``sha256=`` + hex HMAC-SHA256 of ``"{timestamp}." +
    body`` under the shared secret (see :func:`verify_signature`). ``Idempotency-Key`` is our
    message reference, so a gateway can drop a resend. The reply's ``message_id`` (or ``id``)
    is the provider message id.
    """

    name = "webhook"

    def __init__(self, cfg: BusinessSettings):
        if not cfg.notify_webhook_url:
            raise PermanentError("JOBQ_NOTIFY_WEBHOOK_URL is not set")
        self.url = cfg.notify_webhook_url
        self.secret = (cfg.notify_webhook_secret or "").encode()
        self.timeout = settings.outside_call_timeout
        self._idle = _idle_sessions(self.url)

    def send(self, message: Message) -> str:
        """Safe to call from several threads at once: each call has a session of its own."""
        if not message.address:
            raise PermanentError(f"no {message.channel} address")
        payload = {"id": message.reference, "channel": message.channel, "to": message.address,
                   "subject": message.subject, "text": message.body}
        body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
        try:
            http = self._idle.get_nowait()
        except queue.Empty:
            http = requests.Session()
        try:
            reply = post_signed(http, self.url, body, self.secret, self.timeout,
                                headers={"Idempotency-Key": message.reference},
                                service=message.channel)
        finally:
            self._idle.put(http)
        try:
            data = reply.json()
        except ValueError:
            data = {}
        provider_id = data.get("message_id") or data.get("id") if isinstance(data, dict) else None
        return str(provider_id or reply.headers.get("X-Message-Id") or message.reference)


# --- shared HTTP handling -------------------------------------------------------------------------


def sign(secret: bytes, timestamp: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def verify_signature(secret: bytes, timestamp: str, body: bytes, signature: str,
                     *, tolerance: float = 300.0, now: float | None = None) -> bool:
    """What a receiver checks: the signature matches and the timestamp is recent."""
    try:
        age = abs((now or time.time()) - float(timestamp))
    except ValueError:
        return False
    return age <= tolerance and hmac.compare_digest(sign(secret, timestamp, body), signature)


def post_signed(http: requests.Session, url: str, body: bytes, secret: bytes, timeout: float,
                headers: dict[str, str] | None = None, *, service: str) -> requests.Response:
    """POST ``body`` signed; the reply when 2xx, else Transient- or PermanentError. A span of
    the job's trace (``service``: kakao, sms, payment-gateway) covers it, and the request
    carries its ``traceparent``."""
    timestamp = str(int(time.time()))
    with outside_call(service, "POST", url=url) as call:
        all_headers = {"Content-Type": "application/json; charset=utf-8",
                       TIMESTAMP_HEADER: timestamp,
                       SIGNATURE_HEADER: sign(secret, timestamp, body),
                       **(headers or {}), **call.headers}
        try:
            reply = http.post(url, data=body, headers=all_headers, timeout=timeout)
        except (TimeoutError, requests.ConnectionError, requests.Timeout) as exc:
            raise TransientError(f"{_host(url)} unreachable: {type(exc).__name__}") from exc
        call.answered(reply.status_code)
        raise_for_reply(reply)
    return reply


def raise_for_reply(reply: requests.Response) -> None:
    """5xx, 408 and 429 are transient (honouring Retry-After); other 4xx permanent."""
    status = reply.status_code
    if status < 400:
        return
    reason = f"{_host(reply.url)} answered {status}: {_reason(reply)}"
    if status >= 500 or status in (408, 425, 429):
        raise TransientError(reason, retry_after=_retry_after(reply))
    raise PermanentError(reason)


def _reason(reply: requests.Response) -> str:
    """The other side's own words: a JSON ``error``/``reason``/``message``, else the text."""
    try:
        data = reply.json()
    except ValueError:
        data = None
    if isinstance(data, dict):
        for key in ("reason", "error", "message", "detail"):
            if isinstance(data.get(key), str) and data[key]:
                return data[key][:MAX_REASON]
    text_ = (reply.text or reply.reason or "").strip()
    return text_[:MAX_REASON] or "no reason given"


def _retry_after(reply: requests.Response) -> float | None:
    raw = reply.headers.get("Retry-After")
    try:
        return float(raw) if raw else None
    except ValueError:
        return None


def _host(url: str | None) -> str:
    from urllib.parse import urlsplit

    return urlsplit(url or "").netloc or "the gateway"


def _decode(raw: bytes | str) -> str:
    text_ = raw.decode(errors="replace") if isinstance(raw, bytes) else raw
    return text_[:MAX_REASON]


def _smtp_reason(exc: smtplib.SMTPRecipientsRefused) -> str:
    return "; ".join(f"{code} {_decode(msg)}" for code, msg in exc.recipients.values())


# --- routing --------------------------------------------------------------------------------------


class Transports:
    """The transports of one run, built once from the settings and reused for every message."""

    def __init__(self, cfg: BusinessSettings):
        self.cfg = cfg
        self._built: dict[str, Transport] = {}

    def route(self, channel: str) -> str:
        """The transport name ``channel`` goes out by under these settings."""
        wanted = ROUTES.get(channel)
        if wanted is None:
            raise PermanentError(f"unknown channel {channel!r}")
        if wanted == "smtp" and not self.cfg.smtp_host:
            return "record"
        if wanted == "webhook" and not self.cfg.notify_webhook_url:
            return "record"
        return wanted

    def concurrency(self, name: str) -> int:
        """How many messages transport ``name`` may have in flight at once: the webhook's
        ``JOBQ_NOTIFY_CONCURRENCY`` (each POST waits for its answer, so one at a time would
        cap a run at one message per round trip); SMTP's one connection, and the record
        transport, one."""
        return max(1, int(self.cfg.notify_concurrency)) if name == "webhook" else 1

    def close(self) -> None:
        """Let go of open connections (SMTP); the transports can be used again after."""
        for transport in self._built.values():
            close = getattr(transport, "close", None)
            if close is not None:
                close()

    def get(self, name: str) -> Transport:
        found = self._built.get(name)
        if found is None:
            if name == "smtp":
                found = SmtpTransport(self.cfg)
            elif name == "webhook":
                found = WebhookTransport(self.cfg)
            else:
                found = RecordTransport()
            self._built[name] = found
        return found
