"""Fixtures for the security tests: apps with chosen limits on a ManualClock.

Application-level defences are tested through ``falcon.testing`` (fast, and the
clock is injected, so lockouts end by ``clock.advance`` rather than by sleeping);
connection-level ones need the real server process (``tests.e2e.conftest``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import falcon.testing
import pytest

from orch import ManualClock, Orchestrator, Settings
from orch.http.app import create_app
from orch.store import MemoryStore

ADMIN_TOKEN = "security-admin-token-0123456789"

AppFactory = Callable[..., tuple[Orchestrator, falcon.testing.TestClient]]


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def make_app(clock: ManualClock) -> Iterator[AppFactory]:
    """Build a started orchestrator with ``Settings(**overrides)`` and a client of its app.

    The admin token is set unless ``admin_token=None`` is passed; every orchestrator
    built is stopped at the end of the test.
    """
    built: list[Orchestrator] = []

    def factory(**overrides: Any) -> tuple[Orchestrator, falcon.testing.TestClient]:
        values: dict[str, Any] = {"heartbeat_interval_s": 1.0, "admin_token": ADMIN_TOKEN}
        values.update(overrides)
        orch = Orchestrator(
            Settings(**values), store=MemoryStore(), clock=clock, auto_tick=False
        ).start()
        built.append(orch)
        return orch, falcon.testing.TestClient(create_app(orch))

    yield factory
    for orch in built:
        orch.stop()
