"""Hosts for tests: network namespaces on this machine joined by a bridge, and a PostgreSQL and
a Redis of the test's own listening on the bridge. A host's processes reach only those two; a
host is cut off by taking its link down (its processes keep running) and comes back by bringing
it up. Needs root (``ip netns``); everything is removed at :meth:`Network.close`."""

from __future__ import annotations

import contextlib
import secrets
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from app.ops.embedded import EmbeddedPostgres, free_port


def ip(*args: str, ns: str | None = None) -> None:
    cmd = ["ip", *(["netns", "exec", ns, "ip"] if ns else []), *args]
    subprocess.run(cmd, check=True, capture_output=True, timeout=10)


@dataclass
class Host:
    name: str
    netns: str
    veth: str  # the bridge's end of its link
    address: str

    def command(self, *argv: str) -> list[str]:
        """``argv`` run inside this host's namespace."""
        return ["ip", "netns", "exec", self.netns, *argv]

    def cut(self) -> None:
        ip("link", "set", self.veth, "down")

    def restore(self) -> None:
        ip("link", "set", self.veth, "up")


@dataclass
class BridgePostgres(EmbeddedPostgres):
    """The embedded cluster, also on TCP at the bridge's address, trusting the hosts."""

    address: str = ""
    port: int = 0

    def start_server(self) -> None:
        hba = self.pgdata / "pg_hba.conf"
        rule = f"host all all {self.address.rsplit('.', 1)[0]}.0/24 trust\n"
        if rule not in hba.read_text():
            with open(hba, "a") as out:
                out.write(rule)
        self._command("pg_ctl", "-D", str(self.pgdata), "-w", "-t", "60", "-l",
                      str(self.pgdata / "log"), "-o",
                      f"-h {self.address} -p {self.port} -k {self.socket_dir} "
                      "-c fsync=off -c synchronous_commit=off -c full_page_writes=off", "start")

    def url(self, database: str = "jobq") -> str:
        return f"postgresql://postgres@/{database}?host={self.socket_dir}&port={self.port}"

    def tcp_url(self, database: str = "jobq") -> str:
        return f"postgresql://postgres@{self.address}:{self.port}/{database}"


@dataclass
class Network:
    home: Path
    redis_executable: str
    tag: str = field(default_factory=lambda: secrets.token_hex(2))
    hosts: list[Host] = field(default_factory=list)
    postgres: BridgePostgres | None = None
    redis: subprocess.Popen | None = None
    redis_port: int = 0

    @property
    def bridge(self) -> str:
        return f"jqb{self.tag}"

    @property
    def subnet(self) -> str:
        return f"10.217.{int(self.tag, 16) % 250 + 1}"

    @property
    def address(self) -> str:
        return f"{self.subnet}.1"

    def start(self, hosts: int) -> Network:
        ip("link", "add", self.bridge, "type", "bridge")
        ip("addr", "add", f"{self.address}/24", "dev", self.bridge)
        ip("link", "set", self.bridge, "up")
        for i in range(1, hosts + 1):
            netns, veth, inner = f"jq{self.tag}h{i}", f"jq{self.tag}v{i}", f"jq{self.tag}i{i}"
            host = Host(f"host{i}", netns, veth, f"{self.subnet}.{10 + i}")
            ip("netns", "add", netns)
            self.hosts.append(host)
            ip("link", "add", veth, "type", "veth", "peer", "name", inner)
            ip("link", "set", inner, "netns", netns)
            ip("link", "set", veth, "master", self.bridge)
            ip("link", "set", veth, "up")
            ip("addr", "add", f"{host.address}/24", "dev", inner, ns=netns)
            ip("link", "set", inner, "up", ns=netns)
            ip("link", "set", "lo", "up", ns=netns)
        self.postgres = BridgePostgres(self.home / "pg", durable=False, address=self.address,
                                       port=free_port()).start()
        self.redis_port = free_port()
        (self.home / "redis").mkdir(parents=True, exist_ok=True)
        self.redis = subprocess.Popen(
            [self.redis_executable, "--port", str(self.redis_port), "--bind", self.address,
             "--dir", str(self.home / "redis"), "--save", "", "--appendonly", "no",
             "--protected-mode", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        time.sleep(0.3)
        return self

    def env(self) -> dict[str, str]:
        assert self.postgres is not None
        return {"DATABASE_URL": self.postgres.tcp_url(),
                "CELERY_BROKER_URL": f"redis://{self.address}:{self.redis_port}/0",
                "JOBQ_REDIS_PREFIX": ""}

    def close(self) -> None:
        if self.redis is not None and self.redis.poll() is None:
            self.redis.send_signal(signal.SIGKILL)
            self.redis.wait(10)
        if self.postgres is not None:
            with contextlib.suppress(Exception):
                self.postgres.stop("immediate")
            self.postgres.close()
        for host in self.hosts:
            with contextlib.suppress(subprocess.CalledProcessError):
                ip("netns", "del", host.netns)
            with contextlib.suppress(subprocess.CalledProcessError):
                ip("link", "del", host.veth)
        with contextlib.suppress(subprocess.CalledProcessError):
            ip("link", "del", self.bridge)
