"""Records with every field set away from its default, and what the store tests do with them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from orch.model import (
    AgentConfig,
    AgentRecord,
    AgentState,
    IdempotentAnswer,
    LockGrant,
    LockMode,
    Task,
    TaskId,
    TaskProgress,
    TaskSpec,
    TaskState,
)
from orch.store import Store


def make_agent(agent_id: str = "a1", **changes: Any) -> AgentRecord:
    """An agent with every field set away from its default (``changes`` overrides)."""
    record = AgentRecord(
        agent_id=agent_id,
        agent_type="worker",
        capabilities=frozenset({"gpu", "py"}),
        state=AgentState.BUSY,
        config=AgentConfig(
            version=3,
            max_concurrent_tasks=4,
            heartbeat_interval_s=2.5,
            task_timeout_s=90.0,
            auto_restart=False,
            resource_limits={"cpu": 2, "memory": {"gb": 4.5}},
            settings={"model": "x", "tags": ["a", "b"]},
        ),
        metadata={"host": "h1", "nested": {"k": [1, 2.5, None, True, "s"]}},
        project_id="p1",
        in_process=True,
        registered_at=1_700_000_000.25,
        restarts=2,
        task_keys=frozenset({"7", "job-1"}),
        last_error="boom",
    )
    return replace(record, **changes)


def make_task(
    task_id: TaskId = 7, seq: int = 1, state: TaskState = TaskState.RUNNING, **changes: Any
) -> Task:
    """A task with every field set away from its default (``changes`` overrides)."""
    spec = TaskSpec(
        task_id=task_id,
        payload={"n": 1, "deep": {"list": [1, "two", 3.5, None, False]}},
        priority=5,
        agent_type="worker",
        capabilities=frozenset({"gpu", "py"}),
        resources=("db", "disk"),
        max_attempts=4,
        timeout_s=30.0,
        submitter="10.0.0.7",
    )
    task = Task(
        spec=spec,
        seq=seq,
        state=state,
        attempts=2,
        agent_id="a1",
        created_at=1_700_000_000.5,
        assigned_at=1_700_000_001.0,
        finished_at=None,
        result=None,
        error=None,
        fencing_tokens={"db": 3, "disk": 9},
        lease_deadline=1030.5,
        retry_at=None,
        queued_at=1000.25,
        progress=TaskProgress("tests pass; writing docs", 62.5, 1_700_000_002.25),
    )
    return replace(task, **changes)


def finished_task(task_id: TaskId, seq: int, state: TaskState, finished_at: float) -> Task:
    """A task in a terminal state that ended at ``finished_at`` (wall clock)."""
    return make_task(
        task_id,
        seq,
        state,
        finished_at=finished_at,
        result={"ok": [1, 2]},
        error=None if state is TaskState.COMPLETED else "gave up",
        lease_deadline=None,
    )


def make_grant(resource: str = "db", token: int = 1, **changes: Any) -> LockGrant:
    """An exclusive grant of ``resource`` to agent ``a1`` with fencing token ``token``."""
    grant = LockGrant(
        resource=resource,
        mode=LockMode.EXCLUSIVE,
        agent_id="a1",
        fencing_token=token,
        expires_at=1_700_000_060.75,
        deadline=1060.75,
        task_key=None,
    )
    return replace(grant, **changes)


def make_answer(key: str = "k1", scope: str = "scope-1", **changes: Any) -> IdempotentAnswer:
    """A stored first answer to a keyed write, expiring a day after 1_700_000_000."""
    answer = IdempotentAnswer(
        scope=scope,
        key=key,
        fingerprint="fp-" + key,
        status=201,
        headers=(("content-type", "application/json"), ("etag", '"3"')),
        body=b'{"agent_id":"a1","status":"registered"}',
        created_at=1_700_000_000.0,
        expires_at=1_700_086_400.0,
    )
    return replace(answer, **changes)


#: The (scope, key) of every answer ``fill`` and ``every_write`` store, for ``snapshot``.
ANSWER_KEYS = (("scope-1", "k1"), ("scope-1", "k2"))


def snapshot(store: Store) -> tuple[Any, ...]:
    """Everything a store holds, as its loads return it."""
    return (
        store.load_agents(),
        store.load_credentials(),
        store.load_tasks(),
        store.load_grants(),
        store.load_fencing_counters(),
        store.load_config_defaults(),
        store.load_reservations(),
        [store.load_idempotent_answer(scope, key) for scope, key in ANSWER_KEYS],
    )


def fill(store: Store) -> None:
    """One record of every kind."""
    store.put_agent(make_agent("a1"))
    store.put_credential("a1", "hash-1")
    store.put_task(make_task(7, seq=1))
    store.put_grant(make_grant("db", token=5))
    store.put_config_defaults({"max_concurrent_tasks": 2})
    store.put_reservation("todo-1", {"task_key": "7", "claimed_at": 1.5})
    store.put_idempotent_answer(make_answer("k1"))


def every_write(store: Store) -> list[Callable[[], Any]]:
    """One call of each write method, each of which would change a ``fill``ed store."""
    return [
        lambda: store.put_agent(make_agent("a2")),
        lambda: store.put_agent_nowait(make_agent("a3")).wait(),
        lambda: store.register_agent_nowait(make_agent("a4"), "hash-4").wait(),
        lambda: store.delete_agent("a1"),
        lambda: store.put_credential("a1", "other-hash"),
        lambda: store.put_task(make_task(8, seq=2)),
        lambda: store.put_task_nowait(make_task(9, seq=3)).wait(),
        lambda: store.delete_task("7"),
        lambda: store.put_grant(make_grant("db", token=50)),
        lambda: store.delete_grant(make_grant("db", token=5)),
        lambda: store.put_config_defaults({"changed": True}),
        lambda: store.put_reservation("todo-2", {"task_key": "8"}),
        lambda: store.delete_reservation("todo-1"),
        lambda: store.put_idempotent_answer(make_answer("k2")),
        lambda: store.prune_idempotent_answers(1_700_086_400.5),  # k1 has expired by then
    ]
