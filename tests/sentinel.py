"""A Redis primary, a replica and three sentinels on this machine, for the broker's failover
test: real ``redis-server`` processes (``--sentinel`` for the sentinels) on free ports, each in
a folder of its own under ``home``, stopped by pid."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

from app.ops.embedded import free_port

MASTER = "jobqmaster"
#: The Redis servers' password (in the broker URL) and the sentinels' own.
PASSWORD = "broker-pw"
SENTINEL_PASSWORD = "sentinel-pw"
#: How soon the sentinels call a silent primary down (milliseconds).
DOWN_AFTER_MS = 1000


def _wait_listening(client: redis.Redis, proc: subprocess.Popen, what: str, log: Path) -> None:
    deadline = time.monotonic() + 15
    while True:
        try:
            if client.ping():
                return
        except redis.RedisError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not start: {log.read_text(errors='replace')[-2000:]}")
        time.sleep(0.05)


@dataclass
class RedisNode:
    port: int
    data: Path
    proc: subprocess.Popen | None = field(default=None, repr=False)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        if self.running():
            assert self.proc is not None
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)


@dataclass
class SentinelSet:
    """``primary``, ``replica`` and three sentinels watching them under :data:`MASTER`."""

    home: Path
    executable: str
    primary: RedisNode | None = None
    replica: RedisNode | None = None
    sentinels: list[RedisNode] = field(default_factory=list)

    def _spawn(self, node: RedisNode, argv: list[str]) -> None:
        node.data.mkdir(parents=True, exist_ok=True)
        node.proc = subprocess.Popen([self.executable, *argv], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)

    def _server(self, name: str, *extra: str) -> RedisNode:
        node = RedisNode(free_port(), self.home / name)
        self._spawn(node, [
            "--port", str(node.port), "--bind", "127.0.0.1", "--dir", str(node.data),
            "--save", "", "--appendonly", "no", "--requirepass", PASSWORD,
            "--masterauth", PASSWORD, "--logfile", str(node.data / "redis.log"), *extra])
        assert node.proc is not None
        _wait_listening(redis.Redis(port=node.port, password=PASSWORD), node.proc, name,
                        node.data / "redis.log")
        return node

    def start(self) -> SentinelSet:
        self.primary = self._server("primary")
        self.replica = self._server("replica", "--replicaof", "127.0.0.1",
                                    str(self.primary.port))
        for i in range(3):
            node = RedisNode(free_port(), self.home / f"sentinel{i}")
            node.data.mkdir(parents=True, exist_ok=True)
            conf = node.data / "sentinel.conf"
            conf.write_text("\n".join([
                f"port {node.port}", "bind 127.0.0.1", f"dir {node.data}",
                f"logfile {node.data / 'sentinel.log'}",
                f"sentinel monitor {MASTER} 127.0.0.1 {self.primary.port} 2",
                f"sentinel auth-pass {MASTER} {PASSWORD}",
                f"sentinel down-after-milliseconds {MASTER} {DOWN_AFTER_MS}",
                f"sentinel failover-timeout {MASTER} 5000",
                f"sentinel parallel-syncs {MASTER} 1",
                f"requirepass {SENTINEL_PASSWORD}",
                f"sentinel sentinel-pass {SENTINEL_PASSWORD}", ""]))
            self._spawn(node, [str(conf), "--sentinel"])
            assert node.proc is not None
            _wait_listening(redis.Redis(port=node.port, password=SENTINEL_PASSWORD), node.proc,
                            f"sentinel {i}", node.data / "sentinel.log")
            self.sentinels.append(node)
        self.wait_replicated()
        return self

    def wait_replicated(self, timeout: float = 20.0) -> None:
        """Until the replica follows the primary and every sentinel knows the other two."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.replica is not None
            link = redis.Redis(port=self.replica.port, password=PASSWORD).info("replication")
            known = [self.sentinel_client(s).sentinel_sentinels(MASTER) for s in self.sentinels]
            if link.get("master_link_status") == "up" and all(len(k) == 2 for k in known):
                return
            time.sleep(0.1)
        raise RuntimeError("the replica or the sentinels did not come together")

    @staticmethod
    def sentinel_client(node: RedisNode) -> redis.Redis:
        return redis.Redis(port=node.port, password=SENTINEL_PASSWORD, socket_timeout=2)

    def url(self, db: int = 0) -> str:
        """The broker URL: every sentinel, the Redis servers' password."""
        return ";".join(f"sentinel://:{PASSWORD}@127.0.0.1:{s.port}/{db}" for s in self.sentinels)

    def master_port(self) -> int | None:
        """The primary's port as the sentinels' majority names it."""
        ports = []
        for node in self.sentinels:
            with contextlib.suppress(redis.RedisError):
                host_port = self.sentinel_client(node).sentinel_get_master_addr_by_name(MASTER)
                if host_port:
                    ports.append(int(host_port[1]))
        return max(set(ports), key=ports.count) if ports else None

    def env(self) -> dict[str, str]:
        return {"CELERY_BROKER_URL": self.url(), "JOBQ_SENTINEL_MASTER": MASTER,
                "JOBQ_SENTINEL_PASSWORD": SENTINEL_PASSWORD}

    def close(self) -> None:
        for node in [*self.sentinels, self.replica, self.primary]:
            if node is not None:
                node.kill()
