"""Every setting of jobq, read from the environment in this one place.

Nothing else in the code base looks at ``os.environ``. With neither ``DATABASE_URL`` nor
``CELERY_BROKER_URL`` set, the URLs of the embedded services that ``jobq run`` started
(written to ``$JOBQ_HOME/services.json``) are used, so a worker started by hand in the same
folder finds them.

The environment is read at the first use of :data:`settings`, not when this module is
imported: whoever chooses the environment (a test run, ``jobq run``) may import jobq first.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit, urlunsplit

#: Where the embedded services write the URLs they listen on.
SERVICES_FILE = "services.json"
#: The role handlers' connections log in as, unless JOBQ_HANDLER_DATABASE_URL names another.
HANDLER_ROLE = "jobq_handler"


class SettingsError(RuntimeError):
    """A setting is missing or malformed; the message names it."""


def _int(env: dict[str, str], name: str, default: int, minimum: int = 0) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not an integer") from None
    if value < minimum:
        raise SettingsError(f"{name}={value} is below the minimum of {minimum}")
    return value


def _float(env: dict[str, str], name: str, default: float, minimum: float = 0.0) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a number") from None
    if value < minimum:
        raise SettingsError(f"{name}={value} is below the minimum of {minimum}")
    return value


def _rates(env: dict[str, str], name: str, default: dict[str, float]) -> dict[str, float]:
    """``kakao=50,sms=20`` -> ``{"kakao": 50.0, "sms": 20.0}`` over ``default``."""
    raw = env.get(name)
    rates = dict(default)
    if not raw:
        return rates
    for part in raw.split(","):
        key, sep, value = part.partition("=")
        try:
            rate = float(value)
        except ValueError:
            rate = -1.0
        if not sep or not key.strip() or rate < 0:
            raise SettingsError(f"{name}={raw!r} must look like 'kakao=50,sms=20' (0: no limit)")
        rates[key.strip().lower()] = rate
    return rates


def handler_url_for(database_url: str, role: str = HANDLER_ROLE) -> str:
    """``database_url`` (the engine's) with the handler role as its user and no password: the
    same server and database. Where the server wants a password from that role too, set
    JOBQ_HANDLER_DATABASE_URL instead."""
    parts = urlsplit(database_url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{quote(role, safe='')}@{host}"))


def is_sentinel_url(url: str | None) -> bool:
    """Whether ``url`` names Redis Sentinels (``sentinel://h1:26379;sentinel://h2:26379``)."""
    return bool(url) and url.strip().lower().startswith("sentinel://")


def url_user(url: str) -> tuple[str | None, str | None]:
    """The user name and password in a database URL (percent-decoded), either None."""
    parts = urlsplit(url)
    return (unquote(parts.username) if parts.username else None,
            unquote(parts.password) if parts.password else None)


def _choice(env: dict[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    value = (env.get(name) or default).lower()
    if value not in choices:
        raise SettingsError(f"{name}={value!r} must be one of {', '.join(choices)}")
    return value


def _bool(env: dict[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    if raw.lower() in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"{name}={raw!r} is not a boolean (use true or false)")


@dataclass(frozen=True)
class Settings:
    # Services. ``None`` means "not configured": the embedded default applies.
    database_url: str | None
    #: Handlers' connections: JOBQ_HANDLER_DATABASE_URL, or None for the one derived from
    #: ``database_url`` (see :meth:`require_handler_database_url`).
    handler_database_url: str | None
    broker_url: str | None
    result_backend: str | None
    home: Path
    redis_key_prefix: str
    #: With a ``sentinel://`` broker URL: the Sentinel master name and the password of the
    #: sentinels themselves (the URL's password is the Redis servers').
    sentinel_master: str = "mymaster"
    sentinel_password: str | None = field(default=None, repr=False)
    #: Whether DATABASE_URL / CELERY_BROKER_URL were set, not found in services.json: what
    #: ``jobq run`` does not start embedded.
    database_url_given: bool = False
    broker_url_given: bool = False

    # Celery.
    timezone: str = "Asia/Seoul"
    default_time_limit: int = 300
    max_time_limit: int = 3600
    prefetch_multiplier: int = 1
    #: The realtime workers' pool: solo (one process per core, fastest here) or prefork.
    worker_pool: str = "solo"
    worker_processes: int = 2

    # Fair scheduling between tenants (app.run.feeder).
    #: At most this many jobs of one queue wait in the broker (the window's upper bound).
    fair_window: int = 64
    #: At least this many (with prefetch, enough to keep a queue's worker processes fed).
    fair_window_min: int = 2
    #: Workers run a feeder thread (one per queue leads); off only for special set-ups.
    fair_feeder: bool = True

    # Dispatch and the audit mirror.
    manifest: str = "handlers.manifest:INTENTS"
    max_params_bytes: int = 65536
    max_params_depth: int = 32
    max_result_bytes: int = 65536
    max_key_length: int = 200
    default_max_retries: int = 3

    # Retries: short backoffs ride a Celery countdown, longer ones wait in the table.
    retry_backoff_base: float = 2.0
    retry_backoff_max: float = 3600.0
    eta_max_seconds: float = 5.0

    # Completions of handlers that wrote nothing themselves are written in batches.
    batch_completions: bool = True

    # Leases: a live run renews its lease; a run whose lease lapsed is lost.
    lease_seconds: float = 30.0

    # Beat.
    sweep_interval: float = 1.0
    sweep_batch: int = 500
    republish_after: float = 60.0
    recover_interval: float = 5.0
    schedule_interval: float = 10.0
    retention_interval: float = 3600.0
    retention_days: int = 90
    retention_failed_days: int = 365
    retention_batch: int = 5000

    # Progress writes per job and second, at most.
    progress_writes_per_second: float = 4.0

    # Logs.
    log_format: str = "text"
    log_level: str = "INFO"

    # Flower.
    flower_address: str = "127.0.0.1"
    flower_port: int = 5555
    flower_basic_auth: str | None = field(default=None, repr=False)  # user:password

    # Approvals: a job awaiting one is cancelled as expired after this many seconds.
    approval_expires_seconds: float = 259200.0

    # The HTTP API (jobq api).
    api_address: str = "127.0.0.1"
    api_port: int = 8000
    api_workers: int = 1
    #: Requests per second per API key (or JWT subject) unless the key says otherwise.
    api_rate_limit: float = 50.0
    #: A request body larger than this is refused (413) before it is read, parsed or its
    #: caller authenticated. Default: four times ``max_params_bytes``, room for a request whose
    #: parameters are at that limit however its JSON is spaced or escaped.
    api_max_body_bytes: int = 262144
    #: Failed authentications one client address may make per window before the API answers
    #: 429 without looking at its credentials (0: no limit).
    api_auth_failures: int = 20
    api_auth_failure_window: float = 60.0
    #: Open event streams (``GET /v1/jobs/{id}/events``) per API key or token subject, and per
    #: tenant, across every API process (0: no cap).
    api_streams_per_key: int = 20
    api_streams_per_tenant: int = 100
    #: Seconds an event stream stays open at most; it then ends with a ``close`` event that
    #: tells the client to reconnect (with Last-Event-ID, so it misses nothing).
    api_stream_max_seconds: float = 1800.0
    #: Seconds a stopping API process waits for open requests (event streams) before it cuts
    #: them; a client reconnects to another process with Last-Event-ID and misses nothing.
    api_shutdown_seconds: float = 5.0
    #: JWT bearer tokens: an HS256 secret, or a JWKS URL (RS256/ES256 keys), or neither (off).
    jwt_secret: str | None = field(default=None, repr=False)
    jwt_jwks_url: str | None = None
    jwt_tenant_claim: str = "tenant_id"
    #: Required whenever tokens are on (:meth:`require_jwt_checks`): a token of another
    #: application of a shared identity provider is not one of ours.
    jwt_audience: str | None = None
    jwt_issuer: str | None = None
    #: Seconds of clock difference forgiven on ``exp``, ``nbf`` and ``iat``.
    jwt_leeway: float = 30.0
    #: Scopes of a token whose ``scope`` claim says none.
    jwt_default_scopes: tuple[str, ...] = ("jobs:read", "jobs:write")
    #: /metrics: tenants named in labels (the rest are summed as "other"), and the window that
    #: finished jobs and run times are counted over.
    metrics_top_tenants: int = 20
    metrics_window_seconds: float = 3600.0

    # Notifications. Unset SMTP host / webhook URL: those channels only record the message.
    smtp_host: str | None = None
    smtp_port: int = 587
    #: starttls, ssl (implicit TLS, port 465) or none.
    smtp_tls: str = "starttls"
    smtp_username: str | None = None
    smtp_password: str | None = field(default=None, repr=False)
    smtp_from: str = "jobq <noreply@jobq.local>"
    #: The SMS / KakaoTalk gateway: signed JSON POSTs.
    notify_webhook_url: str | None = None
    notify_webhook_secret: str | None = field(default=None, repr=False)
    #: The outside payment gateway billing syncs from.
    payment_gateway_url: str | None = None
    payment_gateway_secret: str | None = field(default=None, repr=False)
    #: Seconds an outside call (SMTP, webhook, gateway) may take before it counts as transient.
    outside_call_timeout: float = 10.0
    #: Send rates by channel (messages per second across all workers; 0: no limit) that
    #: override the handlers' own defaults (handlers.communication.ratelimit).
    send_rates: dict[str, float] = field(default_factory=dict)

    def __repr__(self) -> str:
        # The service URLs carry passwords: printed anywhere, they show masked.
        from app.core.redaction import redact

        shown = ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in fields(self) if f.repr)
        return redact(f"Settings({shown})") or ""

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


def _embedded_urls(home: Path) -> dict[str, str]:
    path = home / SERVICES_FILE
    try:
        with open(path) as found:
            return json.load(found)
    except (OSError, ValueError):
        return {}


def load(env: dict[str, str] | None = None) -> Settings:
    """Read the settings from ``env`` (default: the process environment)."""
    env = dict(os.environ if env is None else env)
    home = Path(env.get("JOBQ_HOME") or ".jobq").expanduser().absolute()
    embedded = _embedded_urls(home)
    database_url = env.get("DATABASE_URL") or embedded.get("database_url")
    broker_url = env.get("CELERY_BROKER_URL") or embedded.get("broker_url")
    result_backend = env.get("CELERY_RESULT_BACKEND") or broker_url
    log_format = _choice(env, "LOG_FORMAT", "text", ("text", "json"))
    smtp_tls = _choice(env, "SMTP_TLS", "starttls", ("starttls", "ssl", "none"))
    default_time_limit = _int(env, "JOBQ_DEFAULT_TIME_LIMIT", 300, minimum=1)
    max_time_limit = _int(env, "JOBQ_MAX_TIME_LIMIT", 3600, minimum=1)
    max_params_bytes = _int(env, "JOBQ_MAX_PARAMS_BYTES", 65536, minimum=2)
    if default_time_limit > max_time_limit:
        raise SettingsError(
            f"JOBQ_DEFAULT_TIME_LIMIT={default_time_limit} exceeds "
            f"JOBQ_MAX_TIME_LIMIT={max_time_limit}"
        )
    return Settings(
        database_url=database_url,
        handler_database_url=env.get("JOBQ_HANDLER_DATABASE_URL") or None,
        broker_url=broker_url,
        result_backend=result_backend,
        home=home,
        redis_key_prefix=env.get("JOBQ_REDIS_PREFIX", ""),
        sentinel_master=env.get("JOBQ_SENTINEL_MASTER") or "mymaster",
        sentinel_password=env.get("JOBQ_SENTINEL_PASSWORD") or None,
        database_url_given=bool(env.get("DATABASE_URL")),
        broker_url_given=bool(env.get("CELERY_BROKER_URL")),
        timezone=env.get("JOBQ_TIMEZONE", "Asia/Seoul"),
        default_time_limit=default_time_limit,
        max_time_limit=max_time_limit,
        prefetch_multiplier=_int(env, "JOBQ_PREFETCH_MULTIPLIER", 1, minimum=1),
        worker_pool=_choice(env, "JOBQ_WORKER_POOL", "solo", ("solo", "prefork")),
        worker_processes=_int(env, "JOBQ_WORKER_PROCESSES", os.cpu_count() or 2, minimum=1),
        fair_window=_int(env, "JOBQ_FAIR_WINDOW", 64, minimum=1),
        fair_window_min=_int(env, "JOBQ_FAIR_WINDOW_MIN", 2, minimum=1),
        fair_feeder=_bool(env, "JOBQ_FAIR_FEEDER", True),
        manifest=env.get("JOBQ_MANIFEST", "handlers.manifest:INTENTS"),
        max_params_bytes=max_params_bytes,
        max_result_bytes=_int(env, "JOBQ_MAX_RESULT_BYTES", 65536, minimum=256),
        default_max_retries=_int(env, "JOBQ_DEFAULT_MAX_RETRIES", 3),
        retry_backoff_base=_float(env, "JOBQ_RETRY_BACKOFF_BASE", 2.0),
        retry_backoff_max=_float(env, "JOBQ_RETRY_BACKOFF_MAX", 3600.0),
        eta_max_seconds=_float(env, "JOBQ_ETA_MAX_SECONDS", 5.0),
        batch_completions=_bool(env, "JOBQ_BATCH_COMPLETIONS", True),
        lease_seconds=_float(env, "JOBQ_LEASE_SECONDS", 30.0, minimum=0.5),
        sweep_interval=_float(env, "JOBQ_SWEEP_INTERVAL", 1.0, minimum=0.05),
        sweep_batch=_int(env, "JOBQ_SWEEP_BATCH", 500, minimum=1),
        republish_after=_float(env, "JOBQ_REPUBLISH_AFTER", 60.0, minimum=0.1),
        recover_interval=_float(env, "JOBQ_RECOVER_INTERVAL", 5.0, minimum=0.05),
        schedule_interval=_float(env, "JOBQ_SCHEDULE_INTERVAL", 10.0, minimum=0.05),
        retention_interval=_float(env, "JOBQ_RETENTION_INTERVAL", 3600.0, minimum=1.0),
        retention_days=_int(env, "JOBQ_RETENTION_DAYS", 90, minimum=1),
        retention_failed_days=_int(env, "JOBQ_RETENTION_FAILED_DAYS", 365, minimum=1),
        retention_batch=_int(env, "JOBQ_RETENTION_BATCH", 5000, minimum=1),
        progress_writes_per_second=_float(env, "JOBQ_PROGRESS_WRITES_PER_SECOND", 4.0, 0.1),
        log_format=log_format,
        log_level=env.get("LOG_LEVEL", "INFO").upper(),
        flower_address=env.get("FLOWER_ADDRESS", "127.0.0.1"),
        flower_port=_int(env, "FLOWER_PORT", 5555, minimum=1),
        flower_basic_auth=env.get("FLOWER_BASIC_AUTH") or None,
        smtp_host=env.get("SMTP_HOST") or None,
        smtp_port=_int(env, "SMTP_PORT", 465 if smtp_tls == "ssl" else 587, minimum=1),
        smtp_tls=smtp_tls,
        smtp_username=env.get("SMTP_USERNAME") or None,
        smtp_password=env.get("SMTP_PASSWORD") or None,
        smtp_from=env.get("SMTP_FROM") or "jobq <noreply@jobq.local>",
        notify_webhook_url=env.get("JOBQ_NOTIFY_WEBHOOK_URL") or None,
        notify_webhook_secret=env.get("JOBQ_NOTIFY_WEBHOOK_SECRET") or None,
        payment_gateway_url=env.get("JOBQ_PAYMENT_GATEWAY_URL") or None,
        payment_gateway_secret=env.get("JOBQ_PAYMENT_GATEWAY_SECRET") or None,
        outside_call_timeout=_float(env, "JOBQ_OUTSIDE_CALL_TIMEOUT", 10.0, minimum=0.1),
        send_rates=_rates(env, "JOBQ_SEND_RATES", {}),
        approval_expires_seconds=_float(env, "JOBQ_APPROVAL_EXPIRES", 259200.0, minimum=1.0),
        api_address=env.get("JOBQ_API_ADDRESS", "127.0.0.1"),
        api_port=_int(env, "JOBQ_API_PORT", 8000, minimum=1),
        api_workers=_int(env, "JOBQ_API_WORKERS", 1, minimum=1),
        api_rate_limit=_float(env, "JOBQ_API_RATE_LIMIT", 50.0),
        api_max_body_bytes=_int(env, "JOBQ_API_MAX_BODY_BYTES", 4 * max_params_bytes,
                                minimum=1024),
        api_auth_failures=_int(env, "JOBQ_API_AUTH_FAILURES", 20),
        api_auth_failure_window=_float(env, "JOBQ_API_AUTH_FAILURE_WINDOW", 60.0, minimum=1.0),
        api_streams_per_key=_int(env, "JOBQ_API_STREAMS_PER_KEY", 20),
        api_streams_per_tenant=_int(env, "JOBQ_API_STREAMS_PER_TENANT", 100),
        api_stream_max_seconds=_float(env, "JOBQ_API_STREAM_MAX_SECONDS", 1800.0, minimum=1.0),
        api_shutdown_seconds=_float(env, "JOBQ_API_SHUTDOWN_SECONDS", 5.0, minimum=0.0),
        jwt_secret=env.get("JOBQ_JWT_SECRET") or None,
        jwt_jwks_url=env.get("JOBQ_JWT_JWKS_URL") or None,
        jwt_tenant_claim=env.get("JOBQ_JWT_TENANT_CLAIM") or "tenant_id",
        jwt_audience=env.get("JOBQ_JWT_AUDIENCE") or None,
        jwt_issuer=env.get("JOBQ_JWT_ISSUER") or None,
        jwt_leeway=_float(env, "JOBQ_JWT_LEEWAY", 30.0),
        jwt_default_scopes=tuple(
            s.strip() for s in (env.get("JOBQ_JWT_DEFAULT_SCOPES") or "jobs:read,jobs:write")
            .split(",") if s.strip()),
        metrics_top_tenants=_int(env, "JOBQ_METRICS_TOP_TENANTS", 20, minimum=1),
        metrics_window_seconds=_float(env, "JOBQ_METRICS_WINDOW", 3600.0, minimum=1.0),
    )


class _Current:
    """:data:`settings`: the process's settings, read from the environment at first use."""

    _loaded: Settings | None = None

    def __getattr__(self, name: str):
        loaded = _Current._loaded
        if loaded is None:
            loaded = _Current._loaded = load()
        return getattr(loaded, name)

    def __repr__(self) -> str:
        return repr(_Current._loaded or load())


def child_environment(set_: dict[str, str] | None = None,
                      unset: tuple[str, ...] = ()) -> dict[str, str]:
    """The environment for a process this one starts (``jobq run``'s workers, Flower): this
    process's own, with ``set_`` added and ``unset`` removed."""
    env = {k: v for k, v in os.environ.items() if k not in unset}
    env.update(set_ or {})
    return env


def reload(env: dict[str, str] | None = None) -> Settings:
    """Read the settings again (from ``env``, default the process environment) and use them
    from now on. For a process that changed its own environment, e.g. ``jobq run``."""
    _Current._loaded = load(env)
    return _Current._loaded


def loaded() -> bool:
    """Whether anything has read :data:`settings` yet."""
    return _Current._loaded is not None


#: The process's settings. Attribute reads go to a :class:`Settings` loaded at the first one.
settings: Settings = _Current()  # type: ignore[assignment]
