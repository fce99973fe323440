"""Secrets never shown: settings print their URLs masked, log formatters hide passwords and
tokens, and redaction stays linear however long the text."""

from __future__ import annotations

import io
import json
import logging
import time
import uuid

import pytest

from app.core.logs import JsonFormatter, TextFormatter
from app.core.redaction import redact

DB_PASSWORD = f"db-pw-{uuid.uuid4().hex[:8]}"
BROKER_PASSWORD = f"broker-pw-{uuid.uuid4().hex[:8]}"
LEAKED = f"url-pw-{uuid.uuid4().hex[:8]}"
TOKEN = f"tok-{uuid.uuid4().hex[:12]}"


def assert_no_secret(where: str, text: str) -> None:
    for secret in (DB_PASSWORD, BROKER_PASSWORD, LEAKED, TOKEN):
        assert secret not in text, f"{secret!r} shows in {where}"


def test_settings_print_their_urls_and_credentials_masked():
    from app.core.settings import load
    from handlers.settings import BusinessSettings

    env = {"DATABASE_URL": f"postgresql://jobq:{DB_PASSWORD}@db/jobq",
           "CELERY_BROKER_URL": f"redis://default:{BROKER_PASSWORD}@cache:6379/0",
           "FLOWER_BASIC_AUTH": f"admin:{LEAKED}", "SMTP_PASSWORD": TOKEN,
           "JOBQ_NOTIFY_WEBHOOK_URL": f"https://sms:{LEAKED}@gw.example/send",
           "JOBQ_NOTIFY_WEBHOOK_SECRET": TOKEN, "JOBQ_PAYMENT_GATEWAY_SECRET": TOKEN}
    shown = repr(load(env))
    assert "postgresql://jobq:***@db/jobq" in shown and "redis://default:***@cache" in shown
    assert_no_secret("repr(settings)", shown)
    business = repr(BusinessSettings.load(env))
    assert "https://sms:***@gw.example/send" in business and "smtp_host=None" in business
    assert_no_secret("repr(business settings)", business)


@pytest.mark.parametrize("hostile", [
    "system.exec." + "e" * 1_000_000,  # a megabyte intent key: no "://" anywhere
    "a:" * 500_000, "x://" * 250_000, "x://u:" * 160_000, "ab.cd " * 160_000,
    "password " * 100_000, "bearer " * 140_000, "x://u:p" + "@" * 1_000_000,
], ids=["long-word", "colons", "schemes", "userinfo", "words", "keywords", "bearer", "ats"])
def test_redaction_takes_time_in_proportion_to_the_text(hostile):
    """Redaction runs over every log line, error and parameter: a pattern that rescans from
    each position would hang whoever logs a long enough value."""
    started = time.monotonic()
    shown = redact(f"{hostile} postgresql://jobq:{DB_PASSWORD}@db/jobq")
    assert time.monotonic() - started < 5.0
    assert DB_PASSWORD not in shown and shown.endswith(":***@db/jobq")


@pytest.mark.parametrize("formatter", [JsonFormatter(), TextFormatter("%(name)s: %(message)s")])
def test_formatters_hide_passwords_and_tokens(formatter):
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    logger = logging.getLogger(f"jobq.test.{uuid.uuid4().hex}")
    logger.propagate = False
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)

    logger.info("connecting to postgresql://jobq:pg-secret-1@db:5432/jobq",
                extra={"job_id": "j-1", "tenant_id": "t-1", "intent_key": "billing.exec.x",
                       "attempt": 2})
    logger.warning("gateway said 401 for Authorization: Bearer abcdefgh12345678 token=tok-secret-2")
    logger.error("api_key: key-secret-3, password=pw-secret-4 redis://:redis-secret-5@cache:6379/0")
    try:
        raise RuntimeError("cannot reach amqp://guest:amqp-secret-6@mq//")
    except RuntimeError:
        logger.exception("publish failed")

    text = out.getvalue()
    for secret in ("pg-secret-1", "abcdefgh12345678", "tok-secret-2", "key-secret-3",
                   "pw-secret-4", "redis-secret-5", "amqp-secret-6"):
        assert secret not in text
    assert "postgresql://jobq:***@db:5432/jobq" in text
    first = text.splitlines()[0]
    if isinstance(formatter, JsonFormatter):
        record = json.loads(first)
        assert (record["job_id"], record["tenant_id"], record["intent_key"], record["attempt"]) \
            == ("j-1", "t-1", "billing.exec.x", 2)
        assert all(json.loads(line) for line in text.splitlines() if line.startswith("{"))
    else:
        assert first.endswith("[job_id=j-1 tenant_id=t-1 intent_key=billing.exec.x attempt=2]")
