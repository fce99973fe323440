"""A browser with no internet: Chromium's driver in a network namespace of its own (``unshare
-n``: only a loopback), reaching exactly one port of this machine, the API's, and reached by the
test through exactly one, the driver's. Both cross the namespace's edge as Unix sockets in a
shared folder (a network namespace has no say over the file system), each relayed to TCP on
its side. Anything else the page asked for (a CDN, a font) would find no route.

``python -m tests.offline API_PORT DRIVER_PORT FOLDER CHROMEDRIVER`` is the namespace's side;
:class:`OfflineDriver` starts it and serves this side.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: What the namespace's side prints once it is ready: then whether the internet answered.
READY = "offline relay ready"


def _pipe(a: socket.socket, b: socket.socket) -> None:
    def copy(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    threading.Thread(target=copy, args=(a, b), daemon=True).start()
    threading.Thread(target=copy, args=(b, a), daemon=True).start()


def relay(listener: socket.socket, connect: Callable[[], socket.socket]) -> None:
    """Each connection ``listener`` accepts, joined to a new ``connect()``, in threads."""
    def serve() -> None:
        with contextlib.suppress(OSError):
            while True:
                inbound, _ = listener.accept()
                try:
                    _pipe(inbound, connect())
                except OSError:
                    inbound.close()

    threading.Thread(target=serve, daemon=True).start()


def tcp_listener(port: int) -> socket.socket:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", port))
    s.listen(64)
    return s


def unix_listener(path: Path) -> socket.socket:
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(path))
    s.listen(64)
    return s


def unix_connect(path: Path) -> Callable[[], socket.socket]:
    def connect() -> socket.socket:
        s = socket.socket(socket.AF_UNIX)
        s.connect(str(path))
        return s

    return connect


def tcp_connect(port: int) -> Callable[[], socket.socket]:
    return lambda: socket.create_connection(("127.0.0.1", port), timeout=10)


def internet_answers() -> str:
    """Whether a well-known address answers from here: ``unreachable: ...`` or ``reached``."""
    try:
        socket.create_connection(("1.1.1.1", 443), timeout=3).close()
    except OSError as exc:
        return f"unreachable: {exc}"
    return "reached"


def inside(api_port: int, driver_port: int, folder: Path, chromedriver: str) -> None:
    """The namespace's side: the API's port relayed out, the driver's port relayed in."""
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    relay(tcp_listener(api_port), unix_connect(folder / "api.sock"))
    relay(unix_listener(folder / "driver.sock"), tcp_connect(driver_port))
    driver = subprocess.Popen([chromedriver, f"--port={driver_port}"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # Stopped with SIGTERM: the driver goes with this side (it ends the browsers it started).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"{READY}; the internet: {internet_answers()}", flush=True)
    try:
        driver.wait()
    finally:
        driver.terminate()
        try:
            driver.wait(10)
        except subprocess.TimeoutExpired:
            driver.kill()


class OfflineDriver:
    """The namespace's side as a process of this test, and this side's relays."""

    def __init__(self, api_port: int, folder: Path, chromedriver: str):
        self.folder = folder
        self.driver_port = _free_port()
        self.api = relay_listener = unix_listener(folder / "api.sock")
        relay(relay_listener, tcp_connect(api_port))
        self.proc = subprocess.Popen(
            ["unshare", "-n", sys.executable, "-m", "tests.offline", str(api_port),
             str(self.driver_port), str(folder), chromedriver],
            cwd=ROOT, stdout=subprocess.PIPE, text=True, start_new_session=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert self.proc.stdout is not None
        self.said = self.proc.stdout.readline().strip()
        assert self.said.startswith(READY), f"the namespace's side said {self.said!r}"
        self.local = tcp_listener(self.driver_port)
        relay(self.local, unix_connect(folder / "driver.sock"))
        self._wait_for_driver()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.driver_port}"

    def _wait_for_driver(self) -> None:
        import urllib.request

        deadline = time.monotonic() + 20
        while True:
            try:
                urllib.request.urlopen(self.url + "/status", timeout=2).read()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def close(self) -> None:
        for s in (self.api, self.local):
            s.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def namespaces_work() -> bool:
    return subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode == 0


if __name__ == "__main__":
    inside(int(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3]), sys.argv[4])
