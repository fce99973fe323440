"""Every setting of the engine, each declared once (field, environment variable, default,
bounds, one line of doc: :func:`~app.core.declared.setting`) and read from the environment by
one loader, :meth:`DeclaredSettings.load`.

Nothing else in the code base looks at ``os.environ``. With neither ``DATABASE_URL`` nor
``CELERY_BROKER_URL`` set, the URLs of the embedded services that ``jobq run`` started
(written to ``$JOBQ_HOME/services.json``) are used, so a worker started by hand in the same
folder finds them. The business declares its own settings (SMTP, gateways, send rates) the same
way, with :func:`setting` from the handler API, in ``handlers/settings.py``.

The environment is read at the first use of :data:`settings`, not when this module is
imported: whoever chooses the environment (a test run, ``jobq run``) may import jobq first.
"""

from __future__ import annotations

import importlib.util
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Generic, Self, TypeVar

from app.core import declared
from app.core.declared import setting
from app.core.urls import handler_url_for, is_sentinel_url

#: Where the embedded services write the URLs they listen on.
SERVICES_FILE = "services.json"
T = TypeVar("T")


class SettingsError(RuntimeError):
    """A setting is missing or malformed; the message names it."""


class DeclaredSettings:
    """Base of a frozen, keyword-only dataclass of :func:`setting` fields (the engine's, the
    business's): its loader, its declarations, a printout without secrets or URL passwords."""

    @classmethod
    def load(cls, env: Mapping[str, str] | None = None) -> Self:
        """The one loader: read from ``env`` (default: the process environment)."""
        try:
            return declared.read(cls, os.environ if env is None else env)
        except declared.Malformed as refused:
            raise SettingsError(str(refused)) from None

    def __repr__(self) -> str:
        from app.core.redaction import redact

        # Only the dataclasses below are ever shown; this base is not one itself.
        shown = ", ".join(f"{f.name}={getattr(self, f.name)!r}"
                          for f in fields(self) if f.repr)  # type: ignore[arg-type]
        return redact(f"{type(self).__name__}({shown})") or ""


class LazySettings(Generic[T]):
    """The process's settings of one kind: attribute reads go to what ``load`` returns,
    called at the first of them."""

    def __init__(self, load: Callable[[], T]):
        self._load = load
        self._value: T | None = None

    def get(self) -> T:
        """The settings, read now if nothing has read them yet."""
        if self._value is None:
            self._value = self._load()
        return self._value

    def use(self, value: T) -> T:
        self._value = value
        return value

    @property
    def is_loaded(self) -> bool:
        return self._value is not None

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.get(), name)

    def __repr__(self) -> str:
        return repr(self.get())


# --- the engine's settings ------------------------------------------------------------------


def _embedded(key: str) -> Callable[[dict[str, Any]], str | None]:
    """A default read from ``$JOBQ_HOME/services.json``, where ``jobq run`` wrote it."""

    def default(values: dict[str, Any]) -> str | None:
        try:
            with open(values["home"] / SERVICES_FILE) as found:
                return json.load(found).get(key)
        except (OSError, ValueError):
            return None

    return default


def _otlp_protocol(value: str) -> str:
    if value.strip().lower() == "http/protobuf":
        return "http/protobuf"
    raise ValueError(f"{value!r} is not sent by jobq, which exports over OTLP/HTTP "
                     "(http/protobuf): point the endpoint at the collector's HTTP port "
                     "(4318), not its gRPC port (4317)")
    return "http/protobuf"


@dataclass(frozen=True, kw_only=True, repr=False)
class Settings(DeclaredSettings):
    # Services. ``None`` means "not configured": the embedded default applies.
    home: Path = setting("JOBQ_HOME", ".jobq", doc="data folder of the embedded services, beat, "
                         "Flower")
    database_url: str | None = setting("DATABASE_URL", _embedded("database_url"),
                                       doc="the engine's PostgreSQL (unset: the embedded one)")
    handler_database_url: str | None = setting(
        "JOBQ_HANDLER_DATABASE_URL", doc="handlers' PostgreSQL login (unset: the engine's URL "
        "with the handler role, see require_handler_database_url)")
    broker_url: str | None = setting("CELERY_BROKER_URL", _embedded("broker_url"),
                                     doc="redis://... or sentinel://... (unset: embedded Redis)")
    result_backend: str | None = setting("CELERY_RESULT_BACKEND", lambda s: s["broker_url"],
                                         doc="where dispatch_intent's return value is kept")
    redis_key_prefix: str = setting("JOBQ_REDIS_PREFIX", "", doc="a prefix of every Redis key")
    sentinel_master: str = setting("JOBQ_SENTINEL_MASTER", "mymaster",
                                   doc="with a sentinel:// broker: the master's name")
    sentinel_password: str | None = setting("JOBQ_SENTINEL_PASSWORD", secret=True,
                                            doc="the sentinels' own password")
    #: The variables that were set, not found in services.json: what ``jobq run`` does not
    #: start embedded (DATABASE_URL, CELERY_BROKER_URL).
    given: frozenset[str] = field(default=frozenset(), repr=False)

    # Celery.
    timezone: str = setting("JOBQ_TIMEZONE", "Asia/Seoul", blank_is_value=True,
                            doc="Celery's and the schedules' timezone")
    default_time_limit: int = setting("JOBQ_DEFAULT_TIME_LIMIT", 300, minimum=1,
                                      doc="seconds an intent may run unless it says otherwise")
    max_time_limit: int = setting("JOBQ_MAX_TIME_LIMIT", 3600, minimum=1,
                                  doc="the most seconds an intent may run")
    prefetch_multiplier: int = setting("JOBQ_PREFETCH_MULTIPLIER", 1, minimum=1,
                                       doc="messages a worker process reserves ahead")
    worker_pool: str = setting("JOBQ_WORKER_POOL", "solo", choices=("solo", "prefork"),
                               doc="the realtime workers' pool (solo: a process per core)")
    worker_processes: int = setting("JOBQ_WORKER_PROCESSES", lambda s: os.cpu_count() or 2,
                                    minimum=1, doc="realtime worker processes (default: cores)")

    # Fair scheduling between tenants (app.run.feeder).
    fair_window: int = setting("JOBQ_FAIR_WINDOW", 64, minimum=1,
                               doc="the most jobs of one queue waiting in the broker")
    fair_window_min: int = setting("JOBQ_FAIR_WINDOW_MIN", 2, minimum=1,
                                   doc="the least (enough to keep a queue's processes fed)")
    fair_feeder: bool = setting("JOBQ_FAIR_FEEDER", True,
                                doc="beat (or, without beat, a worker) runs the feeder")
    orphan_after: float = setting("JOBQ_ORPHAN_AFTER", 2.0, minimum=0.5,
                                  doc="a handed-off message seen nowhere this long is sent again")

    # Dispatch and the audit mirror.
    dispatch_pump: bool = setting("JOBQ_DISPATCH_PUMP", True,
                                  doc="beat writes dispatch_intent requests as rows in batches")
    dispatch_batch: int = setting("JOBQ_DISPATCH_BATCH", 500, minimum=1,
                                  doc="the most dispatch_intent requests written at once")
    manifest: str = setting("JOBQ_MANIFEST", "handlers.manifest:INTENTS", blank_is_value=True,
                            doc="the intent manifest, module:attribute")
    max_params_bytes: int = setting("JOBQ_MAX_PARAMS_BYTES", 65536, minimum=2,
                                    doc="largest intent_params accepted")
    max_result_bytes: int = setting("JOBQ_MAX_RESULT_BYTES", 65536, minimum=256,
                                    doc="largest handler result kept in the row")
    #: Fixed, not read from the environment: how deep intent_params nest, how long a key is.
    max_params_depth: int = 32
    max_key_length: int = 200
    default_max_retries: int = setting("JOBQ_DEFAULT_MAX_RETRIES", 3,
                                       doc="retries of a transient failure")

    # Retries: short backoffs ride a Celery countdown, longer ones wait in the table.
    retry_backoff_base: float = setting("JOBQ_RETRY_BACKOFF_BASE", 2.0,
                                        doc="seconds of the first backoff (then exponential)")
    retry_backoff_max: float = setting("JOBQ_RETRY_BACKOFF_MAX", 3600.0,
                                       doc="the longest backoff, in seconds")
    eta_max_seconds: float = setting("JOBQ_ETA_MAX_SECONDS", 5.0,
                                     doc="longer waits live in the table (run_at), not Redis")
    batch_completions: bool = setting("JOBQ_BATCH_COMPLETIONS", True,
                                      doc="completions of handlers that wrote nothing batch up")
    lease_seconds: float = setting("JOBQ_LEASE_SECONDS", 30.0, minimum=0.5,
                                   doc="a run renews its lease; a lapsed lease is a lost run")

    # Beat.
    sweep_interval: float = setting("JOBQ_SWEEP_INTERVAL", 1.0, minimum=0.05,
                                    doc="seconds between sweeps of due and lost messages")
    sweep_batch: int = setting("JOBQ_SWEEP_BATCH", 500, minimum=1, doc="rows per sweep batch")
    republish_after: float = setting("JOBQ_REPUBLISH_AFTER", 60.0, minimum=0.1,
                                     doc="a published row not started by then is sent again")
    recover_interval: float = setting("JOBQ_RECOVER_INTERVAL", 5.0, minimum=0.05,
                                      doc="seconds between looks for lost runs")
    schedule_interval: float = setting("JOBQ_SCHEDULE_INTERVAL", 10.0, minimum=0.05,
                                       doc="seconds between reads of job_schedules")
    retention_interval: float = setting("JOBQ_RETENTION_INTERVAL", 3600.0, minimum=1.0,
                                        doc="seconds between deletes of old finished jobs")
    retention_days: int = setting("JOBQ_RETENTION_DAYS", 90, minimum=1,
                                  doc="days a finished job is kept")
    retention_failed_days: int = setting("JOBQ_RETENTION_FAILED_DAYS", 365, minimum=1,
                                         doc="days a failed job is kept")
    retention_batch: int = setting("JOBQ_RETENTION_BATCH", 5000, minimum=1,
                                   doc="rows per retention delete")
    progress_writes_per_second: float = setting("JOBQ_PROGRESS_WRITES_PER_SECOND", 4.0,
                                                minimum=0.1, doc="progress writes per job")

    # Logs, Flower.
    log_format: str = setting("LOG_FORMAT", "text", choices=("text", "json"),
                              doc="json: one JSON object per line")
    log_level: str = setting("LOG_LEVEL", "INFO", parse=str.upper, blank_is_value=True,
                             doc="the lowest level logged")
    flower_address: str = setting("FLOWER_ADDRESS", "127.0.0.1", blank_is_value=True,
                                  doc="where Flower listens (empty: every interface)")
    flower_port: int = setting("FLOWER_PORT", 5555, minimum=1, doc="Flower's port")
    flower_basic_auth: str | None = setting("FLOWER_BASIC_AUTH", secret=True,
                                            doc="user:password (unset: generated once)")

    # Approvals, outside calls.
    approval_expires_seconds: float = setting("JOBQ_APPROVAL_EXPIRES", 259200.0, minimum=1.0,
                                              doc="seconds a job awaits approval, at most")
    outside_call_timeout: float = setting(
        "JOBQ_OUTSIDE_CALL_TIMEOUT", 10.0, minimum=0.1,
        doc="seconds an outside call (JWKS, SMTP, a gateway) may take before it is transient")

    # The HTTP API (jobq api).
    api_address: str = setting("JOBQ_API_ADDRESS", "127.0.0.1", blank_is_value=True,
                               doc="where the API listens")
    api_port: int = setting("JOBQ_API_PORT", 8000, minimum=1, doc="the API's port")
    api_workers: int = setting("JOBQ_API_WORKERS", 1, minimum=1, doc="API processes")
    api_rate_limit: float = setting("JOBQ_API_RATE_LIMIT", 50.0,
                                    doc="requests per second per key unless the key says")
    api_max_body_bytes: int = setting(
        "JOBQ_API_MAX_BODY_BYTES", lambda s: 4 * s["max_params_bytes"], minimum=1024,
        doc="larger bodies are refused (413) unread; default: 4 x JOBQ_MAX_PARAMS_BYTES")
    api_auth_failures: int = setting("JOBQ_API_AUTH_FAILURES", 20,
                                     doc="failed logins per address and window (0: no limit)")
    api_auth_failure_window: float = setting("JOBQ_API_AUTH_FAILURE_WINDOW", 60.0, minimum=1.0,
                                             doc="that window, in seconds")
    api_streams_per_key: int = setting("JOBQ_API_STREAMS_PER_KEY", 20,
                                       doc="open event streams per key or subject (0: no cap)")
    api_streams_per_tenant: int = setting("JOBQ_API_STREAMS_PER_TENANT", 100,
                                          doc="open event streams per tenant (0: no cap)")
    api_stream_max_seconds: float = setting("JOBQ_API_STREAM_MAX_SECONDS", 1800.0, minimum=1.0,
                                            doc="a stream then ends: reconnect, Last-Event-ID")
    console_session_seconds: float = setting(
        "JOBQ_CONSOLE_SESSION_SECONDS", 8 * 3600.0, minimum=60.0,
        doc="a web console session (/ui) ends this long after its login (or its token's expiry)")
    api_shutdown_seconds: float = setting("JOBQ_API_SHUTDOWN_SECONDS", 5.0, minimum=0.0,
                                          doc="a stopping API waits this for open requests")
    jwt_secret: str | None = setting("JOBQ_JWT_SECRET", secret=True, doc="HS256 token secret")
    jwt_jwks_url: str | None = setting("JOBQ_JWT_JWKS_URL", doc="JWKS of RS256/ES256 keys")
    jwt_tenant_claim: str = setting("JOBQ_JWT_TENANT_CLAIM", "tenant_id",
                                    doc="the claim naming the tenant")
    jwt_audience: str | None = setting("JOBQ_JWT_AUDIENCE", doc="'aud' (required with tokens)")
    jwt_issuer: str | None = setting("JOBQ_JWT_ISSUER", doc="'iss' (required with tokens)")
    jwt_leeway: float = setting("JOBQ_JWT_LEEWAY", 30.0, doc="clock difference forgiven, s")
    jwt_default_scopes: tuple[str, ...] = setting(
        "JOBQ_JWT_DEFAULT_SCOPES", ("jobs:read", "jobs:write"),
        doc="scopes of a token whose scope claim names none")
    metrics_top_tenants: int = setting("JOBQ_METRICS_TOP_TENANTS", 20, minimum=1,
                                       doc="tenants /metrics names (the rest: other)")
    metrics_window_seconds: float = setting("JOBQ_METRICS_WINDOW", 3600.0, minimum=1.0,
                                            doc="/metrics counts finished jobs over this")

    # Tracing (app.core.tracing): the standard variables that decide whether a process traces
    # (its SDK reads the others: OTEL_SERVICE_NAME, OTEL_TRACES_SAMPLER, ...), and where to look.
    otlp_endpoint: str | None = setting("OTEL_EXPORTER_OTLP_ENDPOINT", doc="an OTLP/HTTP "
                                        "collector (http://collector:4318); unset: no tracing")
    otlp_traces_endpoint: str | None = setting("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", doc="the "
                                               "collector's traces URL itself (…/v1/traces)")
    otlp_protocol: str = setting("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf",
                                 parse=_otlp_protocol, doc="http/protobuf, the one jobq sends")
    otel_sdk_disabled: bool = setting("OTEL_SDK_DISABLED", False,
                                      doc="true: no tracing, whatever the endpoint")
    otel_traces_exporter: str = setting("OTEL_TRACES_EXPORTER", "otlp", choices=("otlp", "none"),
                                        doc="none: no tracing, whatever the endpoint")
    trace_url: str | None = setting("JOBQ_TRACE_URL", doc="a job's trace in the tracing UI, "
                                    "{trace_id} filled in: the console and jobq job link it")

    def __post_init__(self) -> None:
        if self.default_time_limit > self.max_time_limit:
            raise SettingsError(f"JOBQ_DEFAULT_TIME_LIMIT={self.default_time_limit} exceeds "
                                f"JOBQ_MAX_TIME_LIMIT={self.max_time_limit}")
        if self.tracing_enabled and importlib.util.find_spec("opentelemetry.sdk") is None:
            raise SettingsError(
                "OTEL_EXPORTER_OTLP_ENDPOINT asks for traces, but the OpenTelemetry SDK is not "
                "installed: pip install 'jobq[tracing]' (or unset the endpoint)")
        if self.trace_url and "{trace_id}" not in self.trace_url:
            raise SettingsError(f"JOBQ_TRACE_URL={self.trace_url!r} has no {{trace_id}} to fill "
                                "in (http://jaeger:16686/trace/{trace_id})")

    @property
    def database_url_given(self) -> bool:
        return "DATABASE_URL" in self.given

    @property
    def broker_url_given(self) -> bool:
        return "CELERY_BROKER_URL" in self.given

    @property
    def visibility_timeout(self) -> int:
        """Longer than the longest allowed run, so Redis never redelivers a live one."""
        return self.max_time_limit + 600

    def require_database_url(self) -> str:
        if not self.database_url:
            raise SettingsError(
                "DATABASE_URL is not set and no embedded PostgreSQL is running "
                f"(no {self.home / SERVICES_FILE}); set DATABASE_URL, or start `jobq run` and "
                "work in its folder (or set JOBQ_HOME to its .jobq)"
            )
        return self.database_url

    def require_handler_database_url(self) -> str:
        """Where handlers' sessions log in: a role that row-level security binds to one
        tenant, never the engine's (see alembic 0004)."""
        return self.handler_database_url or handler_url_for(self.require_database_url())

    @property
    def tracing_enabled(self) -> bool:
        """Whether spans are made and exported (app.core.tracing)."""
        return (bool(self.otlp_endpoint or self.otlp_traces_endpoint)
                and not self.otel_sdk_disabled and self.otel_traces_exporter == "otlp")

    @property
    def broker_is_sentinel(self) -> bool:
        return is_sentinel_url(self.broker_url)

    @property
    def jwt_enabled(self) -> bool:
        return bool(self.jwt_secret or self.jwt_jwks_url)

    def require_jwt_checks(self) -> None:
        """Tokens are verified for this API only: with JWTs on, audience and issuer are
        required, not optional."""
        if not self.jwt_enabled:
            return
        missing = [name for name, value in (("JOBQ_JWT_AUDIENCE", self.jwt_audience),
                                             ("JOBQ_JWT_ISSUER", self.jwt_issuer)) if not value]
        if missing:
            source = "JOBQ_JWT_SECRET" if self.jwt_secret else "JOBQ_JWT_JWKS_URL"
            raise SettingsError(
                f"{source} turns JWT bearer tokens on, but {' and '.join(missing)} "
                f"{'is' if len(missing) == 1 else 'are'} not set: without them a token the "
                "identity provider issued for another application would be accepted. Set "
                "JOBQ_JWT_AUDIENCE to the 'aud' and JOBQ_JWT_ISSUER to the 'iss' your tokens "
                "carry (or unset the JWT settings to accept API keys only)")

    def require_broker_url(self) -> str:
        if not self.broker_url:
            raise SettingsError(
                "CELERY_BROKER_URL is not set and no embedded Redis is running "
                f"(no {self.home / SERVICES_FILE}); set CELERY_BROKER_URL (e.g. "
                "redis://127.0.0.1:6379/0), or start `jobq run` and work in its folder "
                "(or set JOBQ_HOME to its .jobq)"
            )
        return self.broker_url


def load(env: Mapping[str, str] | None = None) -> Settings:
    """Read the engine's settings from ``env`` (default: the process environment)."""
    return Settings.load(env)


#: The process's settings. Attribute reads go to a :class:`Settings` loaded at the first one.
#: Typed as what it stands for (the proxy answers every attribute of a Settings), so that readers
#: of ``settings.x`` are checked; the two functions below reach the proxy's own methods.
settings: Settings = LazySettings(load)  # type: ignore[assignment]


def reload(env: Mapping[str, str] | None = None) -> Settings:
    """Read the settings again (from ``env``, default the process environment) and use them
    from now on. For a process that changed its own environment, e.g. ``jobq run``."""
    return settings.use(load(env))  # type: ignore[attr-defined]


def loaded() -> bool:
    """Whether anything has read :data:`settings` yet."""
    return settings.is_loaded  # type: ignore[attr-defined]


def command_path() -> str | None:
    """``$PATH``, where a shell finds commands: whether a command jobq prints for pasting can
    say just ``jobq``."""
    return os.environ.get("PATH")


def child_environment(set_: dict[str, str] | None = None,
                      unset: tuple[str, ...] = ()) -> dict[str, str]:
    """The environment for a process this one starts (``jobq run``'s workers, Flower): this
    process's own, with ``set_`` added and ``unset`` removed."""
    env = {k: v for k, v in os.environ.items() if k not in unset}
    env.update(set_ or {})
    return env
