"""Fixtures that build real Orchestrators; clocks are injected, never slept on."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from orch import ManualClock, Orchestrator, Settings
from orch.store import MemoryStore
from tests.fakes.todo_service import FakeTodoService
from tests.pg.server import Databases, PrivateServer, databases_for_tests


def wait_until(
    predicate: Callable[[], Any],
    timeout_s: float = 5.0,
    message: str = "",
    *,
    interval_s: float = 0.002,
) -> Any:
    """Poll ``predicate`` until it returns something truthy (other threads at work).

    ``interval_s`` is how long to pause between polls: short for threads in this
    process, longer where each poll asks another process (``/proc``, a server).
    """
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s}s: {message}")
        time.sleep(interval_s)


def reap(process: subprocess.Popen[Any]) -> None:
    """Kill ``process`` if a test left it running (it failed before stopping it), and wait."""
    if process.poll() is None:
        process.kill()
        process.wait(5)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
def settings() -> Settings:
    return Settings(heartbeat_interval_s=1.0, retry_backoff_initial_s=1.0)


@pytest.fixture
def orch(settings: Settings, store: MemoryStore, clock: ManualClock) -> Iterator[Orchestrator]:
    """An orchestrator on a manual clock: time moves only with clock.advance + orch.tick."""
    o = Orchestrator(settings, store=store, clock=clock, auto_tick=False).start()
    try:
        yield o
    finally:
        o.stop()


@pytest.fixture
def live_orch() -> Iterator[Orchestrator]:
    """An orchestrator on the real clock with its ticker running."""
    o = Orchestrator(Settings(retry_backoff_initial_s=0.01)).start()
    try:
        yield o
    finally:
        o.stop()


@pytest.fixture
def todo() -> Iterator[FakeTodoService]:
    """The fake TODO MCP service on a loopback port (tests/fakes/todo_service.py)."""
    service = FakeTodoService().start()
    try:
        yield service
    finally:
        service.stop()


@pytest.fixture(scope="session")
def pg_databases() -> Iterator[Databases]:
    """Fresh PostgreSQL databases: on ``$ORCH_TEST_PG_URL``'s server, or on a private
    server started once per session (tests/pg/server.py) and stopped at its end."""
    with databases_for_tests() as databases:
        yield databases


@pytest.fixture
def pg_url(pg_databases: Databases) -> Iterator[str]:
    """A new, empty PostgreSQL database for one test, dropped after it."""
    with pg_databases.fresh() as url:
        yield url


@pytest.fixture
def restartable_pg() -> Iterator[PrivateServer]:
    """A private PostgreSQL server of this test's own, for tests that stop and start it
    (never ``$ORCH_TEST_PG_URL``'s, which others share)."""
    server = PrivateServer()
    try:
        yield server
    finally:
        server.close()
