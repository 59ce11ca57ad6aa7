"""Nodes of a cluster: real server processes (``python -m orch serve``) on one database.

Each test gets its own database (``pg_url``) and its own nodes; every process is
reaped in the finalizer, a stopped one sent SIGCONT first so that it can die.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator

import pytest
import requests

from tests.conftest import reap, wait_until
from tests.e2e.conftest import ServerProcess, start_server

#: Short leases keep the tests quick; bounds below are generous for a loaded machine.
LEASE_S = 1.5


def health(node: ServerProcess) -> dict:
    try:
        return requests.get(f"{node.url}/health", timeout=5).json()
    except requests.RequestException:
        return {}


def leader_of(nodes: list[ServerProcess], timeout_s: float = 20.0) -> ServerProcess:
    """The one node that says it leads, once every live node agrees on it."""

    def agreed() -> ServerProcess | None:
        live = [node for node in nodes if node.process.poll() is None]
        answers = {node.url: health(node) for node in live}
        leaders = [node for node in live if answers[node.url].get("role") == "leader"]
        if len(leaders) != 1:
            return None
        others = [answers[node.url].get("leader") for node in live if node is not leaders[0]]
        return leaders[0] if all(url == leaders[0].url for url in others) else None

    return wait_until(agreed, timeout_s=timeout_s, message="one leader the others agree on")


@pytest.fixture
def cluster(pg_url: str) -> Iterator[Callable[..., ServerProcess]]:
    started: list[ServerProcess] = []

    def node(**env: str) -> ServerProcess:
        server = start_server(
            {
                "ORCH_DB": pg_url,
                "ORCH_LEADER_LEASE_S": str(LEASE_S),
                "ORCH_DB_WRITE_WAIT_S": "3",
                **env,
            },
            timeout_s=60,
        )
        started.append(server)
        return server

    yield node
    for server in started:
        if server.process.poll() is None:
            os.kill(server.process.pid, signal.SIGCONT)
        reap(server.process)
