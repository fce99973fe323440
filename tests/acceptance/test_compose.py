"""docker-compose.yml and the Dockerfile, checked by reading them (no Docker engine runs here):
every command names a real module, command and queue; every setting is one jobq reads."""

from __future__ import annotations

import re
import shlex

import pytest
import yaml
from typer.testing import CliRunner

import celeryconfig
from app.broker.celery_app import celery_app
from app.core.settings import load
from app.ops.cli import app as jobq_cli
from tests.fixtures import ROOT

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
    env = _env_file()
    settings_source = (ROOT / "app" / "core" / "settings.py").read_text()
    for key in env:
        known = f'"{key}"' in settings_source or key.startswith("FLOWER_")
        assert known, f"jobq.env sets {key}, which nothing reads"
    settings = load(env)
    assert settings.database_url.startswith("postgresql://") and "@postgres:5432/" in \
        settings.database_url
    assert settings.broker_url == "redis://redis:6379/0"
    assert settings.flower_basic_auth, "Flower listens beyond localhost: basic auth is required"
    pg = SERVICES["postgres"]["environment"]
    assert f"{pg['POSTGRES_USER']}:{pg['POSTGRES_PASSWORD']}@" in env["DATABASE_URL"]
    assert env["DATABASE_URL"].endswith("/" + pg["POSTGRES_DB"])


def test_handlers_log_in_as_their_own_role_with_a_password_the_migration_sets():
    """The postgres image asks every TCP client for a password; the migrate service (its user
    a superuser) creates the handler role with the password of JOBQ_HANDLER_DATABASE_URL."""
    from app.core.settings import url_user

    settings = load(_env_file())
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
    assert "pip install -e ." in dockerfile
    assert re.search(r"^USER (?!root)\w+", dockerfile, flags=re.M), "the image runs as root"


def test_flower_in_compose_passes_its_own_exposure_check():
    """Flower listens on 0.0.0.0 in its container: the settings file must carry basic auth,
    and without it `jobq flower` refuses to start."""
    import os
    import subprocess
    import sys

    assert _command(SERVICES["flower"]) == ["jobq", "flower"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLOWER_", "JOBQ_"))}
    env.update(_env_file())
    env["JOBQ_HOME"] = str(ROOT / ".jobq-compose-check")
    check = [sys.executable, "-m", "app.ops.cli", "flower", "--check"]
    ok = subprocess.run(check, env=env, capture_output=True, text=True, cwd=ROOT)
    assert ok.returncode == 0, ok.stderr
    env.pop("FLOWER_BASIC_AUTH")
    refused = subprocess.run(check, env=env, capture_output=True, text=True, cwd=ROOT)
    assert refused.returncode == 2
    assert "FLOWER_BASIC_AUTH" in refused.stderr


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
