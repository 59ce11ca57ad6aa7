"""A store that keeps everything in process memory.

Used by the embedded API by default and by tests. It honours the store contract
exactly (a write that fails changes nothing), and offers ``fail_writes`` so tests can
make it fail the way a full disk would. What it cannot offer is what it does not
have: nothing outlives the process, so it has no schema (``schema_version`` 0) and
refuses to back up.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any

from orch.errors import BackupError, StoreError
from orch.model import AgentRecord, IdempotentAnswer, LockGrant, Task
from orch.store.base import BackupSummary, CommitListeners, StoreStats


class Done:
    """A write that was durable (as durable as memory is) before it was returned."""

    def wait(self) -> None:
        return None

    def done(self) -> bool:
        return True

    def failed(self) -> bool:
        return False


DONE = Done()


class MemoryStore:
    """Dict-backed ``Store``; safe to share between actors (one internal lock).

    Every write is done when it returns, so ``*_nowait`` writes hand back a handle
    that is already done, and commit listeners are called after each write, on the
    writing thread, once the lock is released.
    """

    schema_version = 0  # nothing is written anywhere, so there is no layout to version

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._agents: dict[str, AgentRecord] = {}
        self._credentials: dict[str, str] = {}
        self._tasks: dict[str, Task] = {}
        self._grants: dict[tuple[str, str, str | None], LockGrant] = {}
        self._fencing: dict[str, int] = {}
        self._defaults: dict[str, Any] = {}
        self._reservations: dict[str, dict[str, Any]] = {}
        self._answers: dict[tuple[str, str], IdempotentAnswer] = {}
        self.fail_writes: str | None = None  # set to a reason to make every write fail
        self.writes = 0
        self.failed_writes = 0
        self._listeners = CommitListeners()
        self._notify = self._listeners.notify
        self._closed = False

    def _write(self) -> None:
        # Called with the lock held, before anything changes.
        if self._closed:
            raise StoreError("store is closed")
        if self.fail_writes is not None:
            self.failed_writes += 1
            raise StoreError(f"store write failed: {self.fail_writes}")
        self.writes += 1

    def _read(self) -> None:
        if self._closed:
            raise StoreError("store is closed")

    def stats(self) -> StoreStats:
        """What ``/metrics`` shows of a store that has no commits, queue or file."""
        return {"writes": self.writes, "failed_writes": self.failed_writes, "queued_writes": 0}

    def add_commit_listener(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` after each write, on the writing thread; see ``Store``."""
        self._listeners.add(callback)

    def remove_commit_listener(self, callback: Callable[[], None]) -> None:
        """Stop calling ``callback``; see ``Store``."""
        self._listeners.remove(callback)

    def backup(self, dest: str) -> BackupSummary:
        """Refused: this store keeps nothing outside the process to copy.

        An operator who wants backups wants a store that survives a restart in the
        first place, so the refusal says how to get one rather than writing a file
        that nothing was ever read from.
        """
        raise BackupError(
            "the memory store keeps nothing to back up; give the orchestrator a"
            " database file (ORCH_DB, or store=SQLiteStore(path)) to have backups"
        )

    def put_agent(self, record: AgentRecord) -> None:
        with self._lock:
            self._write()
            self._agents[record.agent_id] = record
        self._notify()

    def delete_agent(self, agent_id: str) -> None:
        with self._lock:
            self._write()
            self._agents.pop(agent_id, None)
            self._credentials.pop(agent_id, None)
        self._notify()

    def load_agents(self) -> list[AgentRecord]:
        with self._lock:
            self._read()
            return list(self._agents.values())

    def put_credential(self, agent_id: str, token_hash: str) -> None:
        with self._lock:
            self._write()
            self._credentials[agent_id] = token_hash
        self._notify()

    def put_agent_nowait(self, record: AgentRecord) -> Done:
        self.put_agent(record)
        return DONE

    def register_agent_nowait(self, record: AgentRecord, token_hash: str) -> Done:
        with self._lock:
            self._write()
            self._credentials[record.agent_id] = token_hash
            self._agents[record.agent_id] = record
        self._notify()
        return DONE

    def load_credentials(self) -> dict[str, str]:
        with self._lock:
            self._read()
            return dict(self._credentials)

    def put_task(self, task: Task) -> None:
        with self._lock:
            self._write()
            self._tasks[task.key] = task
        self._notify()

    def put_task_nowait(self, task: Task) -> Done:
        self.put_task(task)
        return DONE

    def delete_task(self, key: str) -> None:
        with self._lock:
            self._write()
            self._tasks.pop(key, None)
        self._notify()

    def prune_tasks(self, older_than_wall: float) -> int:
        with self._lock:
            self._read()
            old = [
                key
                for key, task in self._tasks.items()
                if task.terminal and (task.finished_at or 0.0) < older_than_wall
            ]
            if old:
                self._write()
            for key in old:
                del self._tasks[key]
        if old:
            self._notify()
        return len(old)

    def load_tasks(self) -> list[Task]:
        with self._lock:
            self._read()
            return sorted(self._tasks.values(), key=lambda t: t.seq)

    def put_grant(self, grant: LockGrant) -> None:
        with self._lock:
            self._write()
            self._grants[(grant.resource, grant.agent_id, grant.task_key)] = grant
            if grant.fencing_token > self._fencing.get(grant.resource, 0):
                self._fencing[grant.resource] = grant.fencing_token
        self._notify()

    def delete_grant(self, grant: LockGrant) -> None:
        with self._lock:
            self._write()
            self._grants.pop((grant.resource, grant.agent_id, grant.task_key), None)
        self._notify()

    def load_grants(self) -> list[LockGrant]:
        with self._lock:
            self._read()
            return list(self._grants.values())

    def load_fencing_counters(self) -> dict[str, int]:
        with self._lock:
            self._read()
            return dict(self._fencing)

    def put_reservation(self, todo_id: str, data: Mapping[str, Any]) -> None:
        with self._lock:
            self._write()
            self._reservations[todo_id] = dict(data)
        self._notify()

    def delete_reservation(self, todo_id: str) -> None:
        with self._lock:
            self._write()
            self._reservations.pop(todo_id, None)
        self._notify()

    def load_reservations(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            self._read()
            return {k: dict(v) for k, v in self._reservations.items()}

    def put_config_defaults(self, defaults: Mapping[str, Any]) -> None:
        with self._lock:
            self._write()
            self._defaults = dict(defaults)
        self._notify()

    def load_config_defaults(self) -> dict[str, Any]:
        with self._lock:
            self._read()
            return dict(self._defaults)

    def put_idempotent_answer(self, answer: IdempotentAnswer) -> None:
        with self._lock:
            self._write()
            self._answers[(answer.scope, answer.key)] = answer
        self._notify()

    def load_idempotent_answer(self, scope: str, key: str) -> IdempotentAnswer | None:
        with self._lock:
            self._read()
            return self._answers.get((scope, key))

    def prune_idempotent_answers(self, expired_before_wall: float) -> int:
        with self._lock:
            self._read()
            old = [k for k, a in self._answers.items() if a.expires_at < expired_before_wall]
            if old:
                self._write()
            for k in old:
                del self._answers[k]
        if old:
            self._notify()
        return len(old)

    def check(self) -> None:
        """Raise ``StoreError`` while ``fail_writes`` is set, or once closed."""
        self._read()
        if self.fail_writes is not None:
            raise StoreError(f"store failing: {self.fail_writes}")

    def close(self) -> None:
        """Refuse every later write and load, as every store does once closed."""
        with self._lock:
            self._closed = True
