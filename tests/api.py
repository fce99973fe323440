"""Fixtures for the HTTP API: real ``jobq api`` processes (uvicorn) on free ports, a JWKS server
on a real socket, keys and tokens, and an HTTP client."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from app.ops.embedded import free_port
from tests.commands import JOBQ
from tests.fixtures import ROOT, wait_for

#: The HS256 secret every test API process verifies tokens with.
JWT_SECRET = f"test-secret-{uuid.uuid4().hex}"
TENANT_CLAIM = "app_metadata.tenant_id"
#: The audience and issuer every test API process requires of a token (and tokens carry).
JWT_AUDIENCE = "jobq-test"
JWT_ISSUER = "https://id.academy.test/"


@dataclass
class ApiProcess:
    proc: subprocess.Popen
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self, token: str | None = None, *, source: str | None = None,
               **headers: str) -> httpx.Client:
        """An HTTP client; ``source`` is the local address it connects from (another
        127.x.y.z is another client to the API)."""
        auth = {"Authorization": f"Bearer {token}"} if token else {}
        transport = httpx.HTTPTransport(local_address=source) if source else None
        return httpx.Client(base_url=self.url, headers={**auth, **headers}, timeout=20,
                            transport=transport)

    def rss_kib(self) -> int:
        """The server process's resident memory (VmRSS), KiB."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError(f"no VmRSS for process {self.proc.pid}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode


class Jwks:
    """A JWKS document served over HTTP on a free port, with the RSA key it lists."""

    def __init__(self) -> None:
        from cryptography.hazmat.primitives.asymmetric import rsa

        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = "test-key-1"
        public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key()))
        document = json.dumps({"keys": [{**public, "kid": self.kid, "use": "sig",
                                         "alg": "RS256"}]}).encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(document)))
                self.end_headers()
                self.wfile.write(document)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/.well-known/jwks.json"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def token(self, **claims: Any) -> str:
        claims = {"aud": JWT_AUDIENCE, "iss": JWT_ISSUER, **claims}
        return jwt.encode(claims, self.key, algorithm="RS256", headers={"kid": self.kid})

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def jwks() -> Iterator[Jwks]:
    served = Jwks()
    yield served
    served.close()


def hs256_token(tenant_id: str, *, sub: str = "teacher-1", expires_in: float = 300,
                scope: str | None = None, secret: str = JWT_SECRET, **claims: Any) -> str:
    """A token as this run's API processes accept it; ``claims`` add to it or replace its own
    (``aud=...``, ``iss=...``; None leaves one out)."""
    claims = {"sub": sub, "exp": int(time.time() + expires_in), "aud": JWT_AUDIENCE,
              "iss": JWT_ISSUER, "app_metadata": {"tenant_id": tenant_id}, **claims}
    if scope is not None:
        claims["scope"] = scope
    return jwt.encode({k: v for k, v in claims.items() if v is not None}, secret,
                      algorithm="HS256")


def spawn_api(directory: Path, env: dict[str, str] | None = None) -> ApiProcess:
    port = free_port()
    log_path = directory / f"api-{port}.log"
    full_env = {**os.environ, "JOBQ_JWT_SECRET": JWT_SECRET,
                "JOBQ_JWT_TENANT_CLAIM": TENANT_CLAIM, "JOBQ_JWT_AUDIENCE": JWT_AUDIENCE,
                "JOBQ_JWT_ISSUER": JWT_ISSUER, **(env or {})}
    with open(log_path, "wb") as logfile:
        proc = subprocess.Popen([*JOBQ, "api", "--port", str(port)], cwd=ROOT, env=full_env,
                                stdout=logfile, stderr=subprocess.STDOUT, start_new_session=True)
    api = ApiProcess(proc, port, log_path)

    def healthy() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"jobq api exited early:\n{api.log()[-3000:]}")
        try:
            return httpx.get(api.url + "/v1/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(healthy, 30, interval=0.1, message="jobq api to answer")
    return api


@pytest.fixture(scope="module")
def api_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("api")


@pytest.fixture(scope="module")
def start_api(api_dir: Path) -> Iterator[Callable[..., ApiProcess]]:
    """Start ``jobq api`` processes: ``start_api(env={...})``; stopped at the module's end."""
    started: list[ApiProcess] = []

    def start(env: dict[str, str] | None = None) -> ApiProcess:
        api = spawn_api(api_dir, env)
        started.append(api)
        return api

    yield start
    for api in started:
        api.stop()


def make_key(tenant_id: str | None, *, name: str | None = None,
             scopes: tuple[str, ...] = ("jobs:read", "jobs:write", "jobs:approve"),
             rate: float | None = None) -> str:
    from app.api.keys import create

    return create(tenant_id=tenant_id, name=name or f"key-{uuid.uuid4().hex[:6]}",
                  scopes=list(scopes), by="test", rate_limit=rate).secret
