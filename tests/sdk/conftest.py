"""A real server process shared by the SDK tests, and a line that can be cut.

One server serves the whole package (starting one per test would dominate the run);
tests stay independent by using their own agent ids and capabilities. It runs with an
admin token so that every client call is made the way production makes it.
"""

from __future__ import annotations

import contextlib
import itertools
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from orch.client import AgentClient, OrchestratorClient
from tests.conftest import reap
from tests.e2e.conftest import ServerProcess, start_server

ADMIN_TOKEN = "sdk-admin-token"

#: A fast heartbeat, and generous misses so a busy test machine does not lose agents.
SHARED_ENV = {
    "ORCH_DB": ":memory:",
    "TODO_SERVICE_URL": "",
    "GATEWAY_URL": "",
    "ORCH_ADMIN_TOKEN": ADMIN_TOKEN,
    "ORCH_HEARTBEAT_INTERVAL_S": "0.2",
    "ORCH_UNHEALTHY_AFTER_MISSED": "15",
    "ORCH_LOST_AFTER_MISSED": "50",
    "ORCH_HTTP_THREADS": "16",
}

_names = itertools.count(1)


@pytest.fixture(scope="session")
def shared_server() -> Iterator[ServerProcess]:
    server = start_server(SHARED_ENV)
    yield server
    server.stop()


@pytest.fixture
def url(shared_server: ServerProcess) -> str:
    return shared_server.url


@pytest.fixture
def admin(url: str) -> Iterator[OrchestratorClient]:
    with OrchestratorClient(url, token=ADMIN_TOKEN, timeout_s=10) as client:
        yield client


@pytest.fixture
def name() -> Callable[[str], str]:
    """Unique ids per test, so tests sharing the server never take each other's work."""
    number = next(_names)
    return lambda prefix: f"{prefix}-{number}"


def agent_client(url: str, agent_id: str, *capabilities: str, **options: Any) -> AgentClient:
    """An ``AgentClient`` that registers with the admin token the shared server wants."""
    return AgentClient(
        url,
        agent_id=agent_id,
        agent_type="implementation",
        capabilities=capabilities,
        admin_token=ADMIN_TOKEN,
        **options,
    )


@pytest.fixture
def server_factory() -> Iterator[Callable[..., ServerProcess]]:
    """Servers of their own, for tests that need other settings."""
    started: list[ServerProcess] = []

    def factory(**env: str) -> ServerProcess:
        server = start_server(
            {"ORCH_DB": ":memory:", "TODO_SERVICE_URL": "", "GATEWAY_URL": "", **env}
        )
        started.append(server)
        return server

    yield factory
    for server in started:
        reap(server.process)


class Line:
    """A TCP forwarder in front of a server whose line can be cut (a network partition).

    While cut, live connections are closed and new ones are accepted and dropped, so
    the client sees connection failures exactly as it would on a real outage.
    """

    def __init__(self, target_url: str) -> None:
        host, port = target_url.removeprefix("http://").split(":")
        self._target = (host, int(port))
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._cut = threading.Event()
        self._closed = threading.Event()
        self._sockets: set[socket.socket] = set()
        self._guard = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def cut(self) -> None:
        self._cut.set()
        self._close_all()

    def heal(self) -> None:
        self._cut.clear()

    def close(self) -> None:
        self._closed.set()
        self._listener.close()
        self._close_all()

    def _close_all(self) -> None:
        with self._guard:
            sockets, self._sockets = self._sockets, set()
        for sock in sockets:
            _close(sock)

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                downstream, _ = self._listener.accept()
            except OSError:
                return
            if self._cut.is_set():
                _close(downstream)
                continue
            try:
                upstream = socket.create_connection(self._target, timeout=5)
            except OSError:
                _close(downstream)
                continue
            upstream.settimeout(None)
            with self._guard:
                self._sockets |= {downstream, upstream}
            for source, sink in ((downstream, upstream), (upstream, downstream)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            _close(source)
            _close(sink)


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()


@pytest.fixture
def line_to() -> Iterator[Callable[[str], Line]]:
    lines: list[Line] = []

    def make(target_url: str) -> Line:
        line = Line(target_url)
        lines.append(line)
        return line

    yield make
    for line in lines:
        line.close()
