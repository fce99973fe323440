"""Settings come from the environment; a malformed one stops start-up with its name."""

from __future__ import annotations

import pytest

from app.settings import SettingsError, load


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("JOBQ_WORKER_POOL", "threads", "JOBQ_WORKER_POOL='threads' must be one of solo, prefork"),
        ("JOBQ_WORKER_PROCESSES", "0", "JOBQ_WORKER_PROCESSES=0 is below the minimum of 1"),
        ("JOBQ_WORKER_PROCESSES", "two", "JOBQ_WORKER_PROCESSES='two' is not an integer"),
        ("LOG_FORMAT", "xml", "LOG_FORMAT='xml' must be one of text, json"),
        ("SMTP_TLS", "yes", "SMTP_TLS='yes' must be one of starttls, ssl, none"),
        ("JOBQ_SEND_RATES", "kakao=fast", "JOBQ_SEND_RATES='kakao=fast' must look like"),
    ],
)
def test_a_malformed_setting_is_named_in_the_error(name, value, says):
    with pytest.raises(SettingsError) as refused:
        load({"DATABASE_URL": "postgresql://x/y", "CELERY_BROKER_URL": "redis://x", name: value})
    assert says in str(refused.value)


def test_worker_set_up_follows_the_pool_setting(monkeypatch):
    import app.settings
    import app.workers

    base = {"DATABASE_URL": "postgresql://x/y", "CELERY_BROKER_URL": "redis://x"}
    solo = load({**base, "JOBQ_WORKER_PROCESSES": "3"})
    monkeypatch.setattr(app.settings, "settings", solo)
    monkeypatch.setattr(app.workers, "settings", solo)
    workers = app.workers._realtime()
    assert list(workers) == ["realtime", "realtime-2", "realtime-3"]
    assert all(args[:2] == ["-P", "solo"] for args in workers.values())
    # Node names differ, or the second worker would refuse to share the first's name.
    assert len({args[args.index("-n") + 1] for args in workers.values()}) == 3

    prefork = load({**base, "JOBQ_WORKER_POOL": "PREFORK", "JOBQ_WORKER_PROCESSES": "4"})
    monkeypatch.setattr(app.workers, "settings", prefork)
    (args,) = app.workers._realtime().values()
    assert args[:4] == ["-P", "prefork", "-c", "4"]


@pytest.mark.parametrize(("database_url", "handler_url"), [
    ("postgresql://jobq:secret@db.example:5432/jobq",
     "postgresql://jobq_handler@db.example:5432/jobq"),
    ("postgresql://postgres@127.0.0.1:5432/jobq_test", "postgresql://jobq_handler@127.0.0.1:5432/jobq_test"),
    # The embedded PostgreSQL: a socket folder, trust authentication.
    ("postgresql://postgres:@/jobq?host=/srv/.jobq/pg", "postgresql://jobq_handler@/jobq?host=/srv/.jobq/pg"),
])
def test_the_handler_url_is_the_engines_with_the_handler_role_and_no_password(
        database_url, handler_url):
    settings = load({"DATABASE_URL": database_url, "CELERY_BROKER_URL": "redis://x"})
    assert settings.require_handler_database_url() == handler_url


def test_an_explicit_handler_url_wins_and_its_password_never_shows():
    settings = load({"DATABASE_URL": "postgresql://jobq:a@db/jobq", "CELERY_BROKER_URL": "redis://x",
                     "JOBQ_HANDLER_DATABASE_URL": "postgresql://academy_handler:s3cr3t@db/jobq"})
    assert settings.require_handler_database_url() == "postgresql://academy_handler:s3cr3t@db/jobq"
    assert "s3cr3t" not in repr(settings)
