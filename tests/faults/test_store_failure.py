"""The store starts failing in the middle of a storm of work, then heals.

"Acknowledged means stored": a write the store refuses must answer ``StoreError``
(HTTP 503, code ``store_unavailable``) and change nothing, not even in memory — the
Scheduler applies task changes before their commit, so a commit that fails after the
fact makes it rebuild from the store. Meanwhile ``/health`` reports the store
failing; once it heals, work resumes and everything acknowledged is still there,
which a second Orchestrator opened on the same database proves.

The SQLite case fails every *commit*, after the Scheduler has applied the change, the
way a full disk does: another connection holds the file's write lock
(``tests/store/faults.py``). The HTTP case uses the memory store's ``fail_writes``,
which fails writes up front.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from typing import Any

import falcon.testing
import pytest

from orch import ManualClock, Orchestrator, Settings
from orch.errors import StoreError
from orch.http.app import create_app
from orch.store import MemoryStore, SQLiteStore
from tests.conftest import wait_until
from tests.store.faults import SQLITE_BUSY_TIMEOUT_S, LockedElsewhere

SEED = 7


def state(orch: Orchestrator) -> dict[str, Any]:
    """Everything a client can read back, minus what moves on its own."""
    return {
        "tasks": orch.tasks(limit=10_000),
        "agents": sorted(
            (e.record.to_dict() for e in orch.directory.entries()), key=lambda a: a["agent_id"]
        ),
        "locks": orch.locks(),
        "defaults": orch.config_defaults(),
        "counts": orch.stats()["tasks"]["tasks_by_state"],
    }


def settled(orch: Orchestrator) -> dict[str, Any]:
    """The state once in-flight work (told between actors) has landed."""
    previous = None
    for _ in range(100):
        orch.tick()
        current = state(orch)
        if current == previous:
            return current
        previous = current
    raise AssertionError("the orchestrator's state did not settle")


@pytest.fixture
def db_path(tmp_path: Any) -> str:
    return str(tmp_path / "orch.db")


@pytest.fixture
def sqlite_orch(db_path: str) -> Iterator[tuple[Orchestrator, LockedElsewhere, ManualClock]]:
    clock = ManualClock()
    store = SQLiteStore(db_path, busy_timeout_s=SQLITE_BUSY_TIMEOUT_S)
    locked = LockedElsewhere(db_path)
    settings = Settings(heartbeat_interval_s=1.0, dependency_check_interval_s=0.02)
    orch = Orchestrator(settings, store=store, clock=clock, auto_tick=False).start()
    try:
        yield orch, locked, clock
    finally:
        locked.on = False
        orch.stop()


def test_a_store_failing_mid_storm_refuses_writes_changes_nothing_and_loses_nothing(
    sqlite_orch: tuple[Orchestrator, LockedElsewhere, ManualClock], db_path: str
) -> None:
    orch, locked, clock = sqlite_orch
    rng = random.Random(SEED)
    agents = [f"a{n}" for n in range(3)]
    for agent_id in agents:
        orch.register_agent(agent_id, "implementation", ["x"], max_concurrent_tasks=3)
        orch.start_agent(agent_id)
    acknowledged: dict[str, str] = {}  # task id -> the last state we were told

    def storm(rounds: int) -> None:
        for _ in range(rounds):
            task_id = f"t{len(acknowledged)}"
            answer = orch.assign_task({"n": task_id}, task_id=task_id, capabilities=["x"])
            acknowledged[task_id] = answer["status"]
            agent_id = rng.choice(agents)
            for a in orch.heartbeat(agent_id)["assignments"]:
                if rng.random() < 0.5:
                    done = orch.complete_task(agent_id, a["task_id"], {"by": agent_id})
                    acknowledged[a["task_id"]] = done["status"]

    storm(30)
    grant = orch.acquire_lock("a0", "repo", ttl_s=600)
    before = settled(orch)
    assert orch.health()["status"] == "healthy"

    locked.on = True  # mid-storm: from here every commit fails
    running = next(t for t in before["tasks"] if t["status"] in ("assigned", "running"))
    holder = running["agent_id"]
    refused: list[tuple[str, Callable[[], Any]]] = [
        ("submit", lambda: orch.submit({}, task_id="never")),
        ("assign", lambda: orch.assign_task({}, task_id="never-2", capabilities=["x"])),
        ("complete", lambda: orch.complete_task(holder, running["task_id"], {"lost": True})),
        ("fail", lambda: orch.fail_task(holder, running["task_id"], "nope")),
        ("cancel", lambda: orch.cancel_task(before["tasks"][-1]["task_id"])),
        ("register", lambda: orch.register_agent("newcomer", "implementation")),
        ("stop", lambda: orch.stop_agent("a2", drain=False)),
        ("lock", lambda: orch.acquire_lock("a1", "other-repo")),
        ("release", lambda: orch.release_lock("a0", "repo", grant["fencing_token"])),
        ("config", lambda: orch.update_agent_config("a1", {"settings": {"k": 1}})),
        ("defaults", lambda: orch.set_config_defaults({"task_timeout_s": 60})),
    ]
    for name, call in refused:
        with pytest.raises(StoreError) as caught:
            call()
        assert caught.value.status == 503 and caught.value.code == "store_unavailable", name
        # Nothing half-applied: what a client reads is exactly what it was.
        wait_until(lambda: settled(orch) == before, message=f"{name} left no trace")
    health = wait_until(
        lambda: (h := orch.health())["checks"]["store"]["status"] == "failing" and h,
        message="the store check sees the failure",
    )
    assert health["status"] == "unhealthy"
    assert "database is locked" in health["checks"]["store"]["last_error"]
    assert orch.agent(holder)["status"] in ("idle", "busy")  # reads and liveness go on
    orch.heartbeat(holder)

    locked.on = False  # healed: the same calls work, and the storm goes on
    wait_until(lambda: orch.health()["status"] == "healthy", message="store healthy again")
    orch.submit({}, task_id="never")  # the refused id was never taken
    acknowledged["never"] = "queued"
    done = orch.complete_task(holder, running["task_id"], {"after": "heal"})
    acknowledged[running["task_id"]] = done["status"]
    storm(20)
    after = settled(orch)

    # Everything acknowledged is in the database: a new Orchestrator reads it back.
    orch.stop()
    reopened = Orchestrator(
        Settings(heartbeat_interval_s=1.0), store=SQLiteStore(db_path), clock=clock, auto_tick=False
    ).start()
    try:
        stored = {t["task_id"]: t for t in reopened.tasks(limit=10_000)}
        assert set(stored) == set(acknowledged)
        for task_id, status in acknowledged.items():
            if status == "completed":
                assert stored[task_id]["status"] == "completed", task_id
        assert stored[running["task_id"]]["result"] == {"after": "heal"}
        assert {t["task_id"]: t["status"] for t in after["tasks"]} == {
            t: s["status"] for t, s in stored.items()
        }
        assert sorted(e.record.agent_id for e in reopened.directory.entries()) == agents
        assert [(h["agent_id"], h["fencing_token"]) for h in reopened.locks()[0]["holders"]] == [
            ("a0", grant["fencing_token"])
        ]
    finally:
        reopened.stop()


def test_over_http_a_failing_store_answers_503_and_health_says_why() -> None:
    store = MemoryStore()
    orch = Orchestrator(
        Settings(heartbeat_interval_s=1.0, dependency_check_interval_s=0.02),
        store=store,
        clock=ManualClock(),
        auto_tick=False,
    ).start()
    client = falcon.testing.TestClient(create_app(orch))
    try:
        answer = client.simulate_post(
            "/agents/register", json={"agent_id": "a1", "agent_type": "implementation"}
        )
        token = answer.json["token"]
        auth = {"Authorization": f"Bearer {token}"}
        client.simulate_post("/agents/a1/start")
        client.simulate_post("/tasks/assign", json={"task_id": "kept", "agent_id": "a1"})
        before = {p: client.simulate_get(p).json for p in ("/tasks", "/agents", "/locks")}

        store.fail_writes = "disk full"
        for path, body, headers in (
            ("/tasks/assign", {"task_id": "refused", "payload": {}}, None),
            ("/tasks/kept/complete", {"agent_id": "a1", "result": {}}, auth),
            ("/agents/register", {"agent_id": "a2", "agent_type": "implementation"}, None),
            ("/locks/repo/acquire", {"agent_id": "a1"}, auth),
        ):
            answer = client.simulate_post(path, json=body, headers=headers)
            assert answer.status_code == 503, (path, answer.text)
            assert answer.json["code"] == "store_unavailable", answer.json
            after = {p: client.simulate_get(p).json for p in ("/tasks", "/agents", "/locks")}
            assert after == before, path
        health = wait_until(
            lambda: (r := client.simulate_get("/health")).status_code == 503 and r,
            message="/health turns 503",
        )
        assert health.json["status"] == "unhealthy"
        assert health.json["checks"]["store"]["status"] == "failing"

        store.fail_writes = None
        wait_until(lambda: client.simulate_get("/health").status_code == 200, message="healed")
        answer = client.simulate_post("/tasks/assign", json={"task_id": "refused"})
        assert answer.status_code == 202, answer.text
        answer = client.simulate_post(
            "/tasks/kept/complete", json={"agent_id": "a1", "result": {"ok": 1}}, headers=auth
        )
        assert answer.status_code == 200, answer.text
        stored = {t.key: str(t.state) for t in store.load_tasks()}
        assert stored.pop("kept") == "completed"
        assert stored == {"refused": stored["refused"]} and stored["refused"] != "cancelled"
    finally:
        orch.stop()


def test_a_start_whose_write_fails_after_the_fact_is_undone(
    sqlite_orch: tuple[Orchestrator, LockedElsewhere, ManualClock], db_path: str
) -> None:
    orch, locked, _clock = sqlite_orch
    orch.register_agent("a1", "implementation")
    locked.on = True  # the start is applied in memory, then its commit fails
    with pytest.raises(StoreError, match="database is locked"):
        orch.start_agent("a1")
    locked.on = False
    wait_until(
        lambda: orch.tick() or orch.agent("a1")["status"] == "registered",
        message="the start is undone",
    )
    # Not schedulable: a task for it is not assigned, it stays queued.
    orch.assign_task({"n": 1}, task_id="t1", agent_type="implementation")
    for _ in range(5):
        orch.tick()
    assert orch.task("t1")["status"] == "pending"
    # The store never had it started; a start now works, is stored and gets the task.
    assert [a.state.value for a in orch.store.load_agents()] == ["registered"]
    assert orch.start_agent("a1")["status"] == "started"
    wait_until(
        lambda: orch.tick() or orch.task("t1")["status"] == "assigned",
        message="the started agent is given the task",
    )
    assert [a.state.value for a in orch.store.load_agents()] in (["idle"], ["busy"])
