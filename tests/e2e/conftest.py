"""Start the real server process (``python -m orch``) on a free port."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest
import requests

from tests.conftest import reap

LISTENING = re.compile(r"listening on http://([\d.]+):(\d+)")


@dataclass
class ServerProcess:
    """A running ``python -m orch`` with its captured log."""

    process: subprocess.Popen[str]
    url: str = ""
    log: list[str] = field(default_factory=list)

    def stop(self, timeout_s: float = 10.0) -> int:
        if self.process.poll() is None:
            self.process.terminate()
        return self.process.wait(timeout_s)


def start_server(env: dict[str, str] | None = None, timeout_s: float = 20.0) -> ServerProcess:
    environ = {
        **os.environ,
        "ORCHESTRATOR_HOST": "127.0.0.1",
        "ORCHESTRATOR_PORT": "0",
        "ORCH_DB": ":memory:",
        "LOG_LEVEL": "INFO",
        **(env or {}),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "orch", "serve"],
        env=environ,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    server = ServerProcess(process)
    found = threading.Event()

    def read_log() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            server.log.append(line)
            match = LISTENING.search(line)
            if match and not found.is_set():
                server.url = f"http://{match.group(1)}:{match.group(2)}"
                found.set()

    threading.Thread(target=read_log, daemon=True).start()
    deadline = time.monotonic() + timeout_s
    while not found.wait(0.05):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise AssertionError("server did not start:\n" + "".join(server.log))
    requests.get(server.url + "/health", timeout=5).raise_for_status()
    return server


@pytest.fixture
def server_factory() -> Iterator[Callable[..., ServerProcess]]:
    started: list[ServerProcess] = []

    def factory(**env: str) -> ServerProcess:
        server = start_server(env)
        started.append(server)
        return server

    yield factory
    for server in started:
        reap(server.process)


@pytest.fixture
def server(server_factory: Callable[..., ServerProcess]) -> ServerProcess:
    return server_factory()
