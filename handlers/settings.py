"""The business's own settings: the e-mail server, the SMS / KakaoTalk gateway, the payment
gateway and the send rates, each declared once with the handler API's ``setting`` and read by
the engine's loader at first use. The manifest names them (``SETTINGS``), so a malformed one
stops a worker at its start, naming the variable, not the first job that sends."""

from __future__ import annotations

from dataclasses import dataclass

from app.handler_api import DeclaredSettings, LazySettings, setting


def _rates(raw: str) -> dict[str, float]:
    """``kakao=50,sms=20`` -> ``{"kakao": 50.0, "sms": 20.0}``."""
    rates = {}
    for part in raw.split(","):
        key, sep, value = part.partition("=")
        try:
            rate = float(value)
        except ValueError:
            rate = -1.0
        if not sep or not key.strip() or rate < 0:
            raise ValueError("must look like 'kakao=50,sms=20' (0: no limit)")
        rates[key.strip().lower()] = rate
    return rates


@dataclass(frozen=True, kw_only=True, repr=False)
class BusinessSettings(DeclaredSettings):
    # E-mail. Unset host: e-mails are only recorded.
    smtp_host: str | None = setting("SMTP_HOST", doc="the e-mail server (unset: only recorded)")
    smtp_tls: str = setting("SMTP_TLS", "starttls", choices=("starttls", "ssl", "none"),
                            doc="starttls, ssl (implicit TLS) or none")
    smtp_port: int = setting("SMTP_PORT", lambda s: 465 if s["smtp_tls"] == "ssl" else 587,
                             minimum=1, doc="the e-mail server's port (default: 587, ssl: 465)")
    smtp_username: str | None = setting("SMTP_USERNAME", doc="the e-mail server's login")
    smtp_password: str | None = setting("SMTP_PASSWORD", secret=True, doc="its password")
    smtp_from: str = setting("SMTP_FROM", "jobq <noreply@jobq.local>", doc="the sender")

    # The SMS / KakaoTalk gateway: signed JSON POSTs. Unset URL: messages are only recorded.
    notify_webhook_url: str | None = setting("JOBQ_NOTIFY_WEBHOOK_URL",
                                             doc="the message gateway (unset: only recorded)")
    notify_webhook_secret: str | None = setting("JOBQ_NOTIFY_WEBHOOK_SECRET", secret=True,
                                                doc="the key its requests are signed with")
    notify_concurrency: int = setting(
        "JOBQ_NOTIFY_CONCURRENCY", 8, minimum=1,
        doc="messages one run hands to the gateway at once (each waits for its answer)")

    # The outside payment gateway billing syncs from.
    payment_gateway_url: str | None = setting("JOBQ_PAYMENT_GATEWAY_URL",
                                              doc="the payment gateway billing syncs from")
    payment_gateway_secret: str | None = setting("JOBQ_PAYMENT_GATEWAY_SECRET", secret=True,
                                                 doc="the key its requests are signed with")

    #: Overrides of the handlers' own rates (handlers.communication.ratelimit).
    send_rates: dict[str, float] = setting(
        "JOBQ_SEND_RATES", {}, parse=_rates,
        doc="messages per second by channel, across all workers (0: no limit)")


#: The process's business settings, read from the environment at the first attribute read.
business: BusinessSettings = LazySettings(BusinessSettings.load)  # type: ignore[assignment]
