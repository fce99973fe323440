"""docker-compose.yml and the Dockerfile, checked by reading them (no Docker engine runs here):
every command names a real module, command and queue; every setting is one jobq reads."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys

import pytest
import yaml
from typer.testing import CliRunner

import celeryconfig
from app.broker.celery_app import celery_app
from app.core.settings import load
from app.ops.cli import app as jobq_cli
from app.ops.embedded import free_port
from tests.fixtures import ROOT, wait_for

COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
QUEUES = {q.name for q in celeryconfig.task_queues}


def _command(service: dict) -> list[str]:
    cmd = service.get("command", [])
    return shlex.split(cmd) if isinstance(cmd, str) else list(cmd)


def _env_file() -> dict[str, str]:
    env = {}
    for line in (ROOT / "jobq.env").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            env[key] = value
    return env


#: What an operator puts in .env beside docker-compose.yml (compose reads it to fill in ${...}).
REDIS_PASSWORD = "0f4d2c9be1a87d3e5f6a9b0c1d2e3f40"


class Unset(Exception):
    """Compose refuses to start: a ${VAR:?message} whose variable is not set."""


def _interpolate(value, shell: dict[str, str]):
    """``value`` as compose fills it in from the shell and .env (${VAR}, ${VAR:?error},
    ${VAR:-default}, $$), through lists and mappings."""
    if isinstance(value, list):
        return [_interpolate(v, shell) for v in value]
    if isinstance(value, dict):
        return {k: _interpolate(v, shell) for k, v in value.items()}
    if not isinstance(value, str):
        return value

    def fill(match: re.Match) -> str:
        if match.group(0) == "$$":
            return "$"
        name, how, text = match.group(1), match.group(2), match.group(3)
        if shell.get(name):
            return shell[name]
        if how == "?":
            raise Unset(f"{name}: {text}")
        return text if how == "-" else ""

    return re.sub(r"\$\$|\$\{(\w+)(?::([?-])([^}]*))?\}", fill, value)


def _service(name: str, shell: dict[str, str] | None = None) -> dict:
    return _interpolate(SERVICES[name], {"REDIS_PASSWORD": REDIS_PASSWORD}
                        if shell is None else shell)


def _service_env(name: str) -> dict[str, str]:
    """What a jobq service's processes see: jobq.env, then the service's own environment."""
    return {**_env_file(), **_service(name).get("environment", {})}


def _option(cmd: list[str], name: str) -> str | None:
    for i, arg in enumerate(cmd):
        if arg == name and i + 1 < len(cmd):
            return cmd[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def test_every_jobq_service_runs_from_the_one_image_and_settings_file():
    jobq_services = [n for n, s in SERVICES.items() if s.get("image") == "jobq:latest"]
    assert set(jobq_services) == {"migrate", "worker", "worker-bulk", "beat", "flower", "api"}
    for name in jobq_services:
        service = SERVICES[name]
        assert service["build"] == ".", name
        assert service["env_file"] == "jobq.env", name


@pytest.mark.parametrize("name", [n for n, s in SERVICES.items() if s.get("image") == "jobq:latest"])
def test_each_command_refers_to_a_real_module_command_and_queue(name):
    cmd = _command(SERVICES[name])
    if cmd[0] == "jobq":
        result = CliRunner().invoke(jobq_cli, [*cmd[1:2], "--help"])
        assert result.exit_code == 0, f"{name}: `jobq {cmd[1]}` does not exist: {result.output}"
        return
    assert cmd[:3] == ["celery", "-A", "app"], name
    from celery.app.utils import find_app

    assert find_app("app") is celery_app
    assert cmd[3] in {"worker", "beat", "flower"}, name
    queues = _option(cmd, "-Q")
    if cmd[3] == "worker":
        assert queues, f"{name}: a worker without -Q would also take bulk work"
        assert set(queues.split(",")) <= QUEUES, f"{name}: unknown queue in {queues}"
    schedule = _option(cmd, "--schedule")
    if schedule:
        mounts = [v.split(":")[1] for v in SERVICES[name].get("volumes", [])]
        assert any(schedule.startswith(m) for m in mounts), f"{name}: {schedule} is not on a volume"


def test_workers_together_serve_every_queue():
    served = set()
    for service in SERVICES.values():
        cmd = _command(service)
        if cmd[3:4] == ["worker"]:
            served |= set(_option(cmd, "-Q").split(","))
    assert served == QUEUES


def test_dependencies_exist_and_wait_for_health():
    for name, service in SERVICES.items():
        for dep, cond in (service.get("depends_on") or {}).items():
            assert dep in SERVICES, f"{name} depends on missing {dep}"
            if cond["condition"] == "service_healthy":
                assert "healthcheck" in SERVICES[dep], f"{dep} has no healthcheck"
    assert SERVICES["worker"]["depends_on"]["migrate"]["condition"] == \
        "service_completed_successfully"


def test_the_settings_file_is_what_jobq_reads():
    env = _service_env("worker")
    settings_source = (ROOT / "app" / "core" / "settings.py").read_text()
    for key in env:
        known = f'"{key}"' in settings_source or key.startswith("FLOWER_")
        assert known, f"jobq.env or docker-compose.yml sets {key}, which nothing reads"
    settings = load(env)
    assert settings.database_url.startswith("postgresql://") and "@postgres:5432/" in \
        settings.database_url
    assert settings.broker_url == f"redis://:{REDIS_PASSWORD}@redis:6379/0"
    assert settings.result_backend == f"redis://:{REDIS_PASSWORD}@redis:6379/1"
    pg = SERVICES["postgres"]["environment"]
    assert f"{pg['POSTGRES_USER']}:{pg['POSTGRES_PASSWORD']}@" in env["DATABASE_URL"]
    assert env["DATABASE_URL"].endswith("/" + pg["POSTGRES_DB"])


def test_handlers_log_in_as_their_own_role_with_a_password_the_migration_sets():
    """The postgres image asks every TCP client for a password; the migrate service (its user
    a superuser) creates the handler role with the password of JOBQ_HANDLER_DATABASE_URL."""
    from app.core.urls import url_user

    settings = load(_service_env("worker"))
    handler = settings.require_handler_database_url()
    assert url_user(handler) == ("jobq_handler", "handler-change-me")
    assert url_user(settings.database_url)[0] != "jobq_handler"
    assert handler.rpartition("@")[2] == settings.database_url.rpartition("@")[2]  # same db
    assert SERVICES["migrate"]["env_file"] == "jobq.env"


def test_the_dockerfile_copies_what_the_image_needs():
    dockerfile = (ROOT / "Dockerfile").read_text()
    copied = re.findall(r"^COPY (.+) \S+$", dockerfile, flags=re.M)
    for line in copied:
        for path in line.split():
            assert (ROOT / path).exists(), f"Dockerfile copies missing {path}"
    for needed in ("app", "handlers", "alembic", "alembic.ini", "celeryconfig.py", "pyproject.toml"):
        assert any(needed in line.split() for line in copied), f"the image lacks {needed}"
    # Editable, with the tracing extra by default (docs/tracing.md: setting the endpoint is all
    # a deployment of the image does).
    assert 'pip install -e ".[${JOBQ_EXTRAS}]"' in dockerfile
    assert re.search(r"^ARG JOBQ_EXTRAS=tracing$", dockerfile, flags=re.M)
    assert re.search(r"^USER (?!root)\w+", dockerfile, flags=re.M), "the image runs as root"


def test_compose_ships_no_flower_password_and_flower_makes_its_own(tmp_path):
    """Flower listens on 0.0.0.0 in its container, its port published: no password comes with
    the files (the one they once shipped is refused); `jobq flower` generates one at its first
    start, and a password set in jobq.env must not be a known default."""
    assert _command(SERVICES["flower"]) == ["jobq", "flower"]
    assert "FLOWER_BASIC_AUTH" not in _service_env("flower")
    assert "change-me" not in (ROOT / "docker-compose.yml").read_text()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLOWER_", "JOBQ_"))}
    env.update(_service_env("flower"))
    env["JOBQ_HOME"] = str(tmp_path / "flower-data")
    check = [sys.executable, "-m", "app.ops.cli", "flower", "--check"]
    ok = subprocess.run(check, env=env, capture_output=True, text=True, cwd=ROOT)
    assert ok.returncode == 0, ok.stderr
    assert f"its credentials will be generated in {tmp_path}/flower-data/flower-credentials" \
        in ok.stdout
    assert not (tmp_path / "flower-data").exists()  # a check changes nothing
    refused = subprocess.run(check, env={**env, "FLOWER_BASIC_AUTH": "admin:change-me"},
                             capture_output=True, text=True, cwd=ROOT)
    assert refused.returncode == 2
    assert "FLOWER_BASIC_AUTH refused" in refused.stderr and "change-me" in refused.stderr
    # Generated into JOBQ_HOME, which is the flower-data volume: they survive a new container.
    mounts = [v.split(":")[1] for v in SERVICES["flower"]["volumes"]]
    assert _env_file()["JOBQ_HOME"] in mounts


def test_compose_will_not_start_without_a_broker_password_and_every_client_uses_it():
    """Redis asks every client for REDIS_PASSWORD (requirepass), which compose refuses to
    start without; every jobq service's broker URLs, the health check, the replica and the
    sentinels carry it."""
    for name in ("redis", "worker", "worker-bulk", "beat", "flower", "api", "redis-replica",
                 "sentinel-1"):
        with pytest.raises(Unset, match="REDIS_PASSWORD: set REDIS_PASSWORD first"):
            _service(name, shell={})
    redis = _service("redis")
    assert _option(_command(redis), "--requirepass") == REDIS_PASSWORD
    assert redis["environment"]["REDISCLI_AUTH"] == REDIS_PASSWORD
    assert "ports" not in redis  # reached only on the compose network
    for name, service in SERVICES.items():
        if service.get("image") == "jobq:latest" and name != "migrate":
            settings = load(_service_env(name))
            for url in (settings.broker_url, settings.result_backend):
                assert url.startswith(f"redis://:{REDIS_PASSWORD}@redis:6379/"), (name, url)
    replica = _command(_service("redis-replica"))
    assert _option(replica, "--masterauth") == _option(replica, "--requirepass") == \
        REDIS_PASSWORD
    assert f"'sentinel auth-pass jobqmaster {REDIS_PASSWORD}'" in \
        _command(_service("sentinel-1"))[0]


def test_the_compose_redis_refuses_a_client_without_the_password(tmp_path):
    """The redis service's own command line on a real redis-server: jobq's broker URL (from the
    compose settings) gets in, a client without the password does not, the health check does."""
    import redis as redis_py

    port = free_port()
    cmd = _command(_service("redis"))
    assert cmd[0] == "redis-server"
    server = subprocess.Popen([shutil.which("redis-server") or "redis-server", *cmd[1:],
                               "--port", str(port), "--bind", "127.0.0.1", "--dir", str(tmp_path),
                               "--save", ""], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        url = load(_service_env("worker")).broker_url.replace("@redis:6379", f"@127.0.0.1:{port}")
        client = redis_py.Redis.from_url(url)
        wait_for(lambda: _answers(client), 20, interval=0.1, message="the compose redis")
        assert client.set("jobq-compose-check", "1")
        stranger = redis_py.Redis(host="127.0.0.1", port=port)
        with pytest.raises(redis_py.AuthenticationError):
            stranger.lpush("dispatch", "{}")
        assert client.llen("dispatch") == 0
        health = _service("redis")["healthcheck"]["test"][1:]
        assert health == ["redis-cli", "ping"]
        health = [health[0], "-p", str(port), *health[1:]]
        env = {**os.environ, **_service("redis")["environment"]}
        answered = subprocess.run(health, env=env, capture_output=True, text=True, timeout=10)
        assert answered.stdout.strip() == "PONG", answered
        env.pop("REDISCLI_AUTH")
        refused = subprocess.run(health, env=env, capture_output=True, text=True, timeout=10)
        assert "NOAUTH" in refused.stdout + refused.stderr
    finally:
        server.terminate()
        server.wait(10)


def _answers(client) -> bool:
    import redis as redis_py

    try:
        return bool(client.ping())
    except redis_py.ConnectionError:
        return False


def test_compose_workers_match_the_set_up_jobq_run_starts():
    """Same pools and queues as app/ops/workers.py (with its default settings)."""
    from app.ops.workers import WORKERS

    def pool(cmd: list[str]) -> tuple[str | None, str | None, str | None]:
        return _option(cmd, "-P"), _option(cmd, "-c"), _option(cmd, "-Q")

    compose = {pool(_command(s)) for s in SERVICES.values() if _command(s)[3:4] == ["worker"]}
    ours = {pool(args) for args in WORKERS.values()}
    assert compose == ours
    # One realtime worker per core: jobq run counts this machine's; compose says 2 by default.
    assert SERVICES["worker"]["deploy"]["replicas"] >= 1


def test_the_api_service_listens_where_its_port_and_health_check_say():
    api = SERVICES["api"]
    cmd = _command(api)
    assert cmd[:2] == ["jobq", "api"] and _option(cmd, "--address") == "0.0.0.0"
    port = load(_env_file()).api_port
    assert api["ports"] == [f"{port}:{port}"]
    assert f"http://127.0.0.1:{port}/v1/health" in " ".join(api["healthcheck"]["test"])
    from app.api.server import create_app

    assert create_app().url_path_for("health") == "/v1/health"
