"""The store protocol: what actors persist, and how they rebuild from it.

Every method that writes is durable when it returns (the memory store trivially so);
a write that fails raises ``orch.errors.StoreError`` and must leave the store as it
was, because the calling actor applies a change in memory only after storing it.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from orch.model import AgentRecord, LockGrant, Task

T = TypeVar("T")


class PendingWrite(Protocol):
    """A write handed to the store that may not be durable yet."""

    def wait(self) -> None:
        """Return once the write is durable; raise ``StoreError`` if it failed."""
        ...

    def done(self) -> bool:
        """True once the write has ended, either way (never blocks)."""
        ...

    def failed(self) -> bool:
        """True once the write has ended in failure (never blocks)."""
        ...


@dataclass(frozen=True, slots=True)
class Durable(Generic[T]):
    """An actor's answer with the writes that must be durable before it is given.

    The actor applies a change and moves on to its next message while the store
    commits; whoever delivers the answer (the facade) waits for ``writes`` first, so
    nothing is acknowledged before it is stored.
    """

    value: T
    writes: tuple[PendingWrite, ...] = ()

    def result(self) -> T:
        """The answer, once every write behind it is durable; ``StoreError`` otherwise.

        Inside ``deferring_writes`` (in this thread) writes still in flight are handed
        to the deferrer instead of waited for; one already failed still raises.
        """
        deferred: list[PendingWrite] | None = getattr(_deferred, "writes", None)
        for write in self.writes:
            if deferred is not None and not write.done():
                deferred.append(write)
            else:
                write.wait()
        return self.value


_deferred = threading.local()


@contextlib.contextmanager
def deferring_writes() -> Iterator[list[PendingWrite]]:
    """Collect, instead of waiting for, the writes behind answers given in this block.

    For a caller that can hold the answer back itself until the writes are durable
    (the HTTP loop's inline answers, ``orch/http/inline.py``), so that the thread
    giving the answer need not block on the commit. Whoever uses it takes over the
    promise: nothing may leave the process before every collected write is done, and
    a failed one must turn the answer into a refusal and make the actors rebuild
    (``Orchestrator.recover_from_failed_writes``).
    """
    writes: list[PendingWrite] = []
    outer = getattr(_deferred, "writes", None)
    _deferred.writes = writes
    try:
        yield writes
    finally:
        _deferred.writes = outer


class Store(Protocol):
    """Persistence used by the actors; each actor writes only its own records."""

    # agents (Supervisor and AgentActors)
    def put_agent(self, record: AgentRecord) -> None: ...
    def put_agent_nowait(self, record: AgentRecord) -> PendingWrite:
        """Queue an agent's record without waiting: for a start answered without a
        hand-off (``AgentActor.start_agent``), whose caller waits instead."""
        ...

    def delete_agent(self, agent_id: str) -> None: ...
    def load_agents(self) -> list[AgentRecord]: ...
    def put_credential(self, agent_id: str, token_hash: str) -> None: ...
    def register_agent_nowait(self, record: AgentRecord, token_hash: str) -> PendingWrite:
        """Queue a new agent's record and credential as one write, without waiting.

        The Supervisor registers every agent through one thread; waiting there for
        each commit made registration one sync per agent, whatever the concurrency
        (76 s for 10,000 agents over HTTP). The caller's answer waits instead.
        """
        ...

    def load_credentials(self) -> dict[str, str]: ...

    # tasks (Scheduler)
    def put_task(self, task: Task) -> None: ...
    def put_task_nowait(self, task: Task) -> PendingWrite:
        """Queue a task write without waiting for it to be durable.

        The Scheduler writes every task change through one thread; waiting for each
        commit there would serialise all commits and defeat group commit. Instead
        the caller's answer waits on the returned handle. Failures that can be seen
        at once (a failing store, an unstorable value) still raise here, before any
        change is applied.
        """
        ...

    def delete_task(self, key: str) -> None: ...
    def load_tasks(self) -> list[Task]: ...
    def prune_tasks(self, older_than_wall: float) -> int:
        """Delete finished tasks that ended before ``older_than_wall``; returns how many."""
        ...

    # locks (LockBroker)
    def put_grant(self, grant: LockGrant) -> None:
        """Store a grant and raise the resource's fencing counter to its token, atomically."""
        ...

    def delete_grant(self, grant: LockGrant) -> None: ...
    def load_grants(self) -> list[LockGrant]: ...
    def load_fencing_counters(self) -> dict[str, int]: ...

    # TODO-service reservations (Intake)
    def put_reservation(self, todo_id: str, data: Mapping[str, Any]) -> None: ...
    def delete_reservation(self, todo_id: str) -> None: ...
    def load_reservations(self) -> dict[str, dict[str, Any]]: ...

    # configuration defaults (Supervisor)
    def put_config_defaults(self, defaults: Mapping[str, Any]) -> None: ...
    def load_config_defaults(self) -> dict[str, Any]: ...

    def check(self) -> None:
        """Raise ``StoreError`` if the store cannot currently accept writes."""
        ...

    def stats(self) -> dict[str, Any]:
        """Counters for ``/metrics``, read at scrape time: ``writes``, ``failed_writes``
        and ``queued_writes`` always; ``commits``, ``commit_seconds`` (cumulative
        ``buckets`` as ``(bound, count)``, ``count``, ``sum``) and ``bytes`` where the
        store has them."""
        ...

    def close(self) -> None: ...
