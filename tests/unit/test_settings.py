"""Settings come from the environment; a malformed one stops start-up with its name."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from app.core.declared import declarations
from app.core.settings import Settings, SettingsError, load
from handlers.settings import BusinessSettings


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("JOBQ_WORKER_POOL", "threads", "JOBQ_WORKER_POOL='threads' must be one of solo, prefork"),
        ("JOBQ_WORKER_PROCESSES", "0", "JOBQ_WORKER_PROCESSES=0 is below the minimum of 1"),
        ("JOBQ_WORKER_PROCESSES", "two", "JOBQ_WORKER_PROCESSES='two' is not an integer"),
        ("LOG_FORMAT", "xml", "LOG_FORMAT='xml' must be one of text, json"),
        ("SMTP_TLS", "yes", "SMTP_TLS='yes' must be one of starttls, ssl, none"),
        ("JOBQ_SEND_RATES", "kakao=fast", "JOBQ_SEND_RATES='kakao=fast' must look like"),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc", "HTTP port (4318), not its gRPC port (4317)"),
        ("OTEL_TRACES_EXPORTER", "zipkin", "OTEL_TRACES_EXPORTER='zipkin' must be one of otlp, none"),
        ("OTEL_SDK_DISABLED", "maybe", "OTEL_SDK_DISABLED='maybe' is not a boolean"),
    ],
)
def test_a_malformed_setting_is_named_in_the_error(name, value, says):
    env = {"DATABASE_URL": "postgresql://x/y", "CELERY_BROKER_URL": "redis://x", name: value}
    with pytest.raises(SettingsError) as refused:  # the engine's settings, or the business's
        load(env)
        BusinessSettings.load(env)
    assert says in str(refused.value)


def test_worker_set_up_follows_the_pool_setting(monkeypatch):
    import app.core.settings
    import app.ops.workers

    base = {"DATABASE_URL": "postgresql://x/y", "CELERY_BROKER_URL": "redis://x"}
    solo = load({**base, "JOBQ_WORKER_PROCESSES": "3"})
    monkeypatch.setattr(app.core.settings, "settings", solo)
    monkeypatch.setattr(app.ops.workers, "settings", solo)
    workers = app.ops.workers._realtime()
    assert list(workers) == ["realtime", "realtime-2", "realtime-3"]
    assert all(args[:2] == ["-P", "solo"] for args in workers.values())
    # Node names differ, or the second worker would refuse to share the first's name.
    assert len({args[args.index("-n") + 1] for args in workers.values()}) == 3

    prefork = load({**base, "JOBQ_WORKER_POOL": "PREFORK", "JOBQ_WORKER_PROCESSES": "4"})
    monkeypatch.setattr(app.ops.workers, "settings", prefork)
    (args,) = app.ops.workers._realtime().values()
    assert args[:4] == ["-P", "prefork", "-c", "4"]


@pytest.mark.smoke
def test_settings_are_read_at_first_use_not_at_import(tmp_path):
    # A test run (or jobq run) may import jobq before it chooses the environment: the
    # settings must follow the environment as it is when they are first read.
    import json
    import os
    import subprocess
    import sys

    (tmp_path / "services.json").write_text(json.dumps(
        {"database_url": "postgresql://dev@/devdb", "broker_url": "redis://dev:1/0"}))
    code = ("import os, app.ops.embedded, app.core.settings as s\n"
            "os.environ['DATABASE_URL'] = 'postgresql://chosen@/later'\n"
            "os.environ['CELERY_BROKER_URL'] = 'redis://chosen:2/0'\n"
            "print(s.settings.database_url, s.settings.broker_url)\n")
    env = {k: v for k, v in os.environ.items()
           if k not in ("DATABASE_URL", "CELERY_BROKER_URL")}
    out = subprocess.run([sys.executable, "-c", code], env={**env, "JOBQ_HOME": str(tmp_path)},
                         capture_output=True, text=True, check=True).stdout.split()
    assert out == ["postgresql://chosen@/later", "redis://chosen:2/0"]


def test_a_caller_with_no_broker_configured_gets_one_clear_error(tmp_path):
    # Run from a folder with no `jobq run` beside it: no silent fall-back to AMQP on localhost.
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items()
           if k not in ("DATABASE_URL", "CELERY_BROKER_URL", "JOBQ_HOME")}
    code = ("from app import dispatch_intent\n"
            "dispatch_intent.delay(tenant_id='x', intent_key='system.exec.echo')\n")
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("app.core.settings.SettingsError: CELERY_BROKER_URL is not set"), last
    assert "set CELERY_BROKER_URL" in last and "amqp" not in out.stderr.lower()


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


def test_a_sentinel_broker_url_names_every_sentinel_the_master_and_both_passwords():
    from app.broker.client import _credentials, sentinel_addresses
    from app.core.redaction import redact

    url = ("sentinel://:redis-pw@10.0.0.1:26379;sentinel://:redis-pw@10.0.0.2;"
           "sentinel://:redis-pw@10.0.0.3:26380/2")
    settings = load({"CELERY_BROKER_URL": url, "JOBQ_SENTINEL_MASTER": "academy",
                     "JOBQ_SENTINEL_PASSWORD": "sentinel-pw"})
    assert settings.broker_is_sentinel and settings.result_backend == url
    assert settings.sentinel_master == "academy"
    assert sentinel_addresses(url) == [("10.0.0.1", 26379), ("10.0.0.2", 26379),
                                       ("10.0.0.3", 26380)]
    assert _credentials("sentinel://:redis-pw@h:1/2") == {"db": 2, "password": "redis-pw"}
    # Neither password is printed with the settings, nor left in a log line of the URL.
    assert "redis-pw" not in repr(settings) and "sentinel-pw" not in repr(settings)
    assert "redis-pw" not in redact(f"connected to {url}")
    assert not load({"CELERY_BROKER_URL": "redis://h:6379/0"}).broker_is_sentinel


ROOT = Path(__file__).resolve().parents[2]


def test_no_module_but_the_settings_reads_or_writes_the_environment():
    # Settings have one home: a lookup anywhere else escapes their declarations, bounds and docs.
    looks = re.compile(r"\bos\.(environ|getenv|putenv|unsetenv)\b|\bfrom os import\b.*\benviron\b")
    found = [f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
             for package in ("app", "handlers") for path in sorted((ROOT / package).rglob("*.py"))
             if path != ROOT / "app" / "core" / "settings.py"
             for number, line in enumerate(path.read_text().splitlines(), 1)
             if looks.search(line)]
    assert found == []


def test_each_variable_is_declared_once_with_a_line_of_doc():
    declared = [*declarations(Settings).values(), *declarations(BusinessSettings).values()]
    names = [d.env for d in declared]
    assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)
    assert [d.env for d in declared if not d.doc.strip() or "\n" in d.doc] == []


def test_business_settings_live_with_the_business_not_in_the_engine():
    engine = {d.env for d in declarations(Settings).values()}
    assert {"SMTP_HOST", "SMTP_TLS", "JOBQ_NOTIFY_WEBHOOK_URL", "JOBQ_PAYMENT_GATEWAY_URL",
            "JOBQ_SEND_RATES"} <= {d.env for d in declarations(BusinessSettings).values()}
    assert not {name for name in engine if name.startswith(("SMTP_", "JOBQ_NOTIFY_",
                                                            "JOBQ_PAYMENT_", "JOBQ_SEND_"))}


def test_every_declared_variable_is_documented_by_its_full_name():
    # The configuration tables in README.md or docs/ name each variable in full, so a reader
    # (or grep) finds every one; `JOBQ_X` / `_Y` shorthands hide the second.
    docs = "\n".join(path.read_text() for path in
                     [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))])
    declared = [*declarations(Settings).values(), *declarations(BusinessSettings).values()]
    assert [d.env for d in declared if not re.search(rf"\b{d.env}\b", docs)] == []


@pytest.mark.parametrize(("name", "value", "field", "read"), [
    # Empty is "unset" (the default) for most; for an address it means every interface.
    ("JOBQ_SENTINEL_MASTER", "", "sentinel_master", "mymaster"),
    ("JOBQ_FAIR_WINDOW", "", "fair_window", 64),
    ("FLOWER_ADDRESS", "", "flower_address", ""),
    ("JOBQ_API_ADDRESS", "", "api_address", ""),
    ("LOG_LEVEL", "debug", "log_level", "DEBUG"),
    ("JOBQ_FAIR_FEEDER", "Off", "fair_feeder", False),
    ("JOBQ_JWT_DEFAULT_SCOPES", " jobs:read , ,admin", "jwt_default_scopes", ("jobs:read", "admin")),
    ("JOBQ_RETRY_BACKOFF_MAX", "60", "retry_backoff_max", 60.0),
])
def test_each_kind_of_setting_reads_as_declared(name, value, field, read):
    assert getattr(load({name: value}), field) == read


def test_a_default_may_follow_an_earlier_setting_and_is_not_held_to_the_minimum():
    assert BusinessSettings.load({"SMTP_TLS": "ssl"}).smtp_port == 465
    assert BusinessSettings.load({"SMTP_TLS": "ssl", "SMTP_PORT": "2525"}).smtp_port == 2525
    assert load({"JOBQ_MAX_PARAMS_BYTES": "100"}).api_max_body_bytes == 400
    with pytest.raises(SettingsError, match="JOBQ_API_MAX_BODY_BYTES=400 is below the minimum"):
        load({"JOBQ_API_MAX_BODY_BYTES": "400"})
    assert BusinessSettings.load({"JOBQ_SEND_RATES": "Kakao=5, sms=0"}).send_rates == {
        "kakao": 5.0, "sms": 0.0}


def test_jobq_run_stops_on_a_malformed_business_setting_before_it_starts_anything(tmp_path):
    # The business's settings are read with the manifest: jobq run names the bad one in one
    # line, before any service, migration or worker (each worker would stop on it as it starts).
    import os
    import subprocess
    import sys

    jobq = Path(sys.executable).with_name("jobq")
    env = {**os.environ, "SMTP_TLS": "yes", "JOBQ_HOME": str(tmp_path / ".jobq"),
           "DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none",
           "CELERY_BROKER_URL": "redis://127.0.0.1:1/0"}
    out = subprocess.run([str(jobq), "run", "--no-flower", "--no-api"], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=60)
    assert (out.returncode, out.stderr.strip()) == (
        2, "error: SMTP_TLS='yes' must be one of starttls, ssl, none"), out.stdout + out.stderr
    assert "starting" not in out.stdout and not (tmp_path / ".jobq").exists()


@pytest.mark.parametrize(("env", "on", "url"), [
    ({}, False, None),
    ({"OTEL_SERVICE_NAME": "jobq", "OTEL_TRACES_SAMPLER": "always_on"}, False, None),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318/"}, True, "http://c:4318/v1/traces"),
    ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/t"}, True, "http://c:4318/t"),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "true"}, False,
     "http://c:4318/v1/traces"),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_TRACES_EXPORTER": "none"}, False,
     "http://c:4318/v1/traces"),
])
def test_tracing_is_on_with_an_otlp_endpoint_only(env, on, url):
    from app.core import settings as loaded
    from app.core import tracing

    found = load({"DATABASE_URL": "postgresql://x/y", **env})
    assert found.tracing_enabled is on
    previous = loaded.settings.get()  # type: ignore[attr-defined]
    try:
        loaded.settings.use(found)  # type: ignore[attr-defined]
        assert tracing.traces_url() == url
    finally:
        loaded.settings.use(previous)  # type: ignore[attr-defined]


def test_an_endpoint_without_the_sdk_installed_stops_a_process_saying_what_to_install(
        monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name.startswith("opentelemetry") else real(name, *a))
    with pytest.raises(SettingsError, match=r"pip install 'jobq\[tracing\]'"):
        load({"DATABASE_URL": "postgresql://x/y", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"})
    assert not load({"DATABASE_URL": "postgresql://x/y"}).tracing_enabled  # off: never asked
