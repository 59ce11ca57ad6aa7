"""Fixtures for the REST API: a real Orchestrator on a ManualClock behind a TestClient.

Time moves only with ``clock.advance(s)`` followed by ``orch.tick()``; calls that hand
work to other actors (``tell``) finish on their own threads, so tests that look at
their effects poll with ``wait_until``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import falcon.testing
import pykka
import pytest

from orch import ManualClock, Orchestrator, Settings
from orch.http.app import create_app
from orch.http.errors import PROBLEM_JSON
from orch.store import MemoryStore

ADMIN_TOKEN = "admin-secret"
PROBLEM_KEYS = {"type", "title", "status", "detail", "code"}


def bearer(token: str) -> dict[str, str]:
    """The header that presents ``token``."""
    return {"Authorization": f"Bearer {token}"}


def register(
    client: falcon.testing.TestClient,
    agent_id: str,
    agent_type: str = "implementation",
    capabilities: tuple[str, ...] = ("code",),
    *,
    start: bool = False,
    headers: dict[str, str] | None = None,
    **fields: Any,
) -> str:
    """Register ``agent_id`` over HTTP (and start it if asked); returns its token."""
    body = {"agent_id": agent_id, "agent_type": agent_type, "capabilities": list(capabilities)}
    answer = client.simulate_post("/agents/register", json={**body, **fields}, headers=headers)
    assert answer.status_code == 200, answer.text
    if start:
        started = client.simulate_post(f"/agents/{agent_id}/start", headers=headers)
        assert started.status_code == 200, started.text
    return answer.json["token"]


def assert_problem(
    answer: falcon.testing.Result,
    status: int,
    code: str | None = None,
    field: str | None = None,
) -> dict[str, Any]:
    """Check an RFC 9457 problem answer; returns its body."""
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == PROBLEM_JSON
    body = answer.json
    assert body.keys() >= PROBLEM_KEYS, body
    assert body["status"] == status
    assert isinstance(body["detail"], str) and body["detail"]
    assert isinstance(body["title"], str) and body["title"]
    assert body["type"].endswith("/" + body["code"])
    if code is not None:
        assert body["code"] == code, body
    if field is not None:
        assert body.get("field") == field, body
    return body


SNAPSHOT_PATHS = ("/stats", "/agents", "/locks", "/tasks")


def settle(orch: Orchestrator) -> None:
    """Let every agent actor work through its mailbox (its record is then published)."""
    for entry in orch.directory.entries():
        if entry.actor is not None:
            try:
                entry.actor.describe().get(timeout=5)
            except pykka.ActorDeadError:
                continue


def snapshot(
    client: falcon.testing.TestClient,
    orch: Orchestrator,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    """What GET /stats, /agents, /locks and /tasks show once work in flight has settled.

    Calls hand work on between actors with tells, so a read right after a write may
    catch it half-way. Reads are repeated (each one also drains the actors' mailboxes)
    until two in a row agree.
    """
    previous = None
    for _ in range(50):
        settle(orch)
        current = {path: client.simulate_get(path, headers=headers).json for path in SNAPSHOT_PATHS}
        if current == previous:
            return current
        previous = current
    raise AssertionError(f"the orchestrator's state did not settle: {previous}")


def differences(before: Any, after: Any, where: str = "") -> dict[str, tuple[Any, Any]]:
    """The leaves of two JSON values that differ, by path (for readable failures)."""
    if isinstance(before, dict) and isinstance(after, dict):
        out: dict[str, tuple[Any, Any]] = {}
        for key in before.keys() | after.keys():
            path = f"{where}.{key}" if where else str(key)
            out.update(differences(before.get(key), after.get(key), path))
        return out
    if isinstance(before, list) and isinstance(after, list) and len(before) == len(after):
        out = {}
        for index, (old, new) in enumerate(zip(before, after, strict=True)):
            out.update(differences(old, new, f"{where}[{index}]"))
        return out
    return {} if before == after else {where: (before, after)}


def build(
    settings: Settings, store: MemoryStore | None = None, clock: ManualClock | None = None
) -> tuple[Orchestrator, falcon.testing.TestClient]:
    """A started orchestrator on a manual clock and a client for its app."""
    orch = Orchestrator(
        settings, store=store or MemoryStore(), clock=clock or ManualClock(), auto_tick=False
    ).start()
    return orch, falcon.testing.TestClient(create_app(orch))


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
def orch(store: MemoryStore, clock: ManualClock) -> Iterator[Orchestrator]:
    """An orchestrator without an admin token; time moves with clock.advance + orch.tick."""
    o = Orchestrator(
        Settings(heartbeat_interval_s=1.0), store=store, clock=clock, auto_tick=False
    ).start()
    try:
        yield o
    finally:
        o.stop()


@pytest.fixture
def client(orch: Orchestrator) -> falcon.testing.TestClient:
    return falcon.testing.TestClient(create_app(orch))


@pytest.fixture
def admin_orch(clock: ManualClock) -> Iterator[Orchestrator]:
    """An orchestrator whose API needs ``ADMIN_TOKEN`` for everything not agent-scoped."""
    o = Orchestrator(
        Settings(heartbeat_interval_s=1.0, admin_token=ADMIN_TOKEN),
        store=MemoryStore(),
        clock=clock,
        auto_tick=False,
    ).start()
    try:
        yield o
    finally:
        o.stop()


@pytest.fixture
def admin_client(admin_orch: Orchestrator) -> falcon.testing.TestClient:
    return falcon.testing.TestClient(create_app(admin_orch))


@pytest.fixture
def agent(client: falcon.testing.TestClient) -> str:
    """The token of ``my-agent``, registered with the seed's body and started."""
    return register(client, "my-agent", capabilities=("code", "git", "testing"), start=True)
