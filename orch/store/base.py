"""The store protocol: what actors persist, how they rebuild from it, and what every
store promises about it. A new backend implements ``Store`` and joins the contract
tests (``tests/store/``); nothing else in the orchestrator knows which store it has.

"Stored" means the same on every store and every thread: a write is *durable* once
it would survive the process being killed (``kill -9``) and, with the store's
strongest sync setting, the machine losing power. The memory store is the exception
by its nature: it is as durable as the process, which is why it backs nothing up.

Three rules hold for every write method, whatever the store:

- **Durable when it returns.** A write method without ``_nowait`` returns only once
  its change is durable; a ``_nowait`` one returns a ``PendingWrite`` that says when.
- **All or nothing.** A write that fails raises ``orch.errors.StoreError`` (or its
  ``PendingWrite`` reports the failure) and leaves the store exactly as it was before
  that write, even when it carried several rows (``register_agent_nowait``,
  ``put_grant``, ``delete_agent``): the calling actor applies a change in memory only
  after storing it, or rebuilds from the store when a queued write failed
  (``Orchestrator.recover_from_failed_writes``). One failed write never takes writes
  queued beside it down with it.
- **In order.** Writes issued by one thread take effect in the order issued, queued
  or not (a ``put_task`` after a ``put_task_nowait`` of the same task wins), and a
  write issued after another one returned (or after its ``PendingWrite`` was done)
  takes effect after it. Writes from different threads are atomic with respect to
  each other, in some order.

Threads: every method may be called from any thread, concurrently. Writes come from
the actors' threads (or a caller running an actor's message in its own thread, see
``orch/runtime``); each actor writes only its own records. Loads run when actors
(re)build: at start-up, and after a failed queued write, while other writes may be in
flight. ``stats`` runs on whichever thread serves ``/metrics``; ``check`` on the
health monitor's. Stores keep their own locks; callers hold none of theirs.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, NotRequired, Protocol, TypedDict, TypeVar

from orch.model import AgentRecord, IdempotentAnswer, LockGrant, Task

T = TypeVar("T")

logger = logging.getLogger("orch.store")


class PendingWrite(Protocol):
    """A write the store accepted that may not be durable yet (a ``*_nowait`` write).

    It promises one outcome, reached once and never changed: either the write became
    durable, or it failed and changed nothing. The store reaches it on its own (no
    one needs to call ``wait`` for the write to happen), and a store that is closed
    first reaches it before ``close`` returns. Any thread may ask, any number of
    times; a handle may be kept long after the write ended.
    """

    def wait(self) -> None:
        """Return once the write is durable; raise ``StoreError`` if it failed.

        Blocks the calling thread until the outcome is reached (never forever: a store
        that can no longer reach it, its writer gone, raises ``StoreError`` instead).
        """
        ...

    def done(self) -> bool:
        """True once the write has ended, either way (never blocks)."""
        ...

    def failed(self) -> bool:
        """True once the write has ended in failure (never blocks); ``wait`` then raises."""
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

        This always waits, on every thread: "stored" means one thing everywhere.
        """
        for write in self.writes:
            write.wait()
        return self.value

    def result_holding(self, answer_writes: list[PendingWrite]) -> T:
        """The answer now, with the writes still in flight appended to ``answer_writes``.

        For a caller that holds the answer back itself until those writes are durable
        (the HTTP loop, ``orch/http/waitress_adapter.py``), so that the thread giving
        the answer need not block on the commit. It takes over the promise: nothing
        may leave the process before every collected write is done, and a failed one
        must turn the answer into a refusal and make the actors rebuild
        (``Orchestrator.recover_from_failed_writes``). A write already failed raises
        ``StoreError`` here, as ``result`` would.
        """
        for write in self.writes:
            if write.done():
                write.wait()  # returns at once, or raises for a failed write
            else:
                answer_writes.append(write)
        return self.value


class CommitSeconds(TypedDict):
    """A histogram of how long commits took, as Prometheus wants it."""

    buckets: list[tuple[float, int]]  # (upper bound in seconds, cumulative count)
    count: int  # every commit, those slower than the last bound included
    sum: float  # seconds, over every commit


class StoreStats(TypedDict):
    """What ``Store.stats`` reports (``orch/metrics.py``, ``StoreCollector``)."""

    writes: int  # writes made durable since the store was opened
    failed_writes: int  # writes refused or failed (each answered with StoreError)
    queued_writes: int  # writes accepted and not yet ended (0 for a store with no queue)
    commits: NotRequired[int]  # transactions committed, ``check`` probes included
    commit_seconds: NotRequired[CommitSeconds]
    bytes: NotRequired[int]  # size on disk (a database's files, its log included)


@dataclass(frozen=True, slots=True)
class BackupSummary:
    """What a backup holds, for the operator to check it against what they expect."""

    source: str
    dest: str
    schema_version: int
    agents: int
    tasks: int
    unfinished_tasks: int
    lock_grants: int
    bytes: int

    def describe(self) -> str:
        """One line: ``backed up A to B: schema 2, 3 agents, 10 tasks (4 unfinished), ...``."""
        return (
            f"backed up {self.source} to {self.dest}: schema {self.schema_version},"
            f" {self.agents:,} agents, {self.tasks:,} tasks ({self.unfinished_tasks:,} unfinished),"
            f" {self.lock_grants:,} lock grants, {self.bytes:,} bytes"
        )


class CommitListeners:
    """The callbacks of ``Store.add_commit_listener``, for a store to call.

    Held as a tuple replaced whole on each change, so the committing thread reads it
    without a lock: a listener added during a call is called from the next one on.
    """

    __slots__ = ("_callbacks", "_lock")

    def __init__(self) -> None:
        self._callbacks: tuple[Callable[[], None], ...] = ()
        self._lock = threading.Lock()

    def add(self, callback: Callable[[], None]) -> None:
        with self._lock:
            self._callbacks = (*self._callbacks, callback)

    def remove(self, callback: Callable[[], None]) -> None:
        with self._lock:
            self._callbacks = tuple(c for c in self._callbacks if c != callback)

    def notify(self) -> None:
        """Call every listener; one that raises is logged, and the rest still called."""
        for callback in self._callbacks:
            try:
                callback()
            except Exception:
                logger.exception("a commit listener of the store failed")


class Store(Protocol):
    """Persistence used by the actors; each actor writes only its own records.

    Opening a store (its constructor, chosen by ``orch.store.open_store``) brings what
    it holds to the current ``schema_version``: forward migrations, applied in one
    transaction with the version they reach, so an interrupted upgrade leaves the old
    schema whole. A store holding a newer schema than the code knows is refused with
    a ``StoreError`` that names both versions, before anything is changed. Records are
    spelled as ``orch.store.codec`` writes them, so a row means the same on every
    store that keeps rows.
    """

    @property
    def schema_version(self) -> int:
        """The version of the stored layout this store reads and writes, once opened.

        Counts migrations (append only; a released one never changes), so two stores
        at one version hold the same tables. A store that keeps nothing (memory) is 0.
        """
        ...

    # ---------------------------------------------------- agents (Supervisor, AgentActors)

    def put_agent(self, record: AgentRecord) -> None:
        """Store ``record`` under its ``agent_id``, replacing any earlier version.

        An agent replaced keeps its place in ``load_agents``. ``last_heartbeat`` need
        not survive (a monotonic reading; stores that encode records read it back 0.0,
        see ``orch.store.codec``), and nothing rebuilt from the store relies on it.
        """
        ...

    def put_agent_nowait(self, record: AgentRecord) -> PendingWrite:
        """``put_agent``, queued: for a start answered without a hand-off
        (``AgentActor.start_agent``), whose caller waits instead.

        A failure seen at once (a failing store, a value JSON cannot hold) raises
        ``StoreError`` here and queues nothing.
        """
        ...

    def register_agent_nowait(self, record: AgentRecord, token_hash: str) -> PendingWrite:
        """Queue a new agent's record and credential as one write, without waiting.

        Both rows or neither. The Supervisor registers every agent through one thread;
        waiting there for each commit made registration one sync per agent, whatever
        the concurrency (bench/README.md). The caller's answer waits instead. Failures
        seen at once raise here, as for ``put_agent_nowait``.
        """
        ...

    def delete_agent(self, agent_id: str) -> None:
        """Forget an agent and its credential together; a missing one is no error."""
        ...

    def load_agents(self) -> list[AgentRecord]:
        """Every stored agent, in the order each was first stored."""
        ...

    def put_credential(self, agent_id: str, token_hash: str) -> None:
        """Store the hash of an agent's token, replacing any earlier one."""
        ...

    def load_credentials(self) -> dict[str, str]:
        """Token hashes by agent id."""
        ...

    # ------------------------------------------------------------------- tasks (Scheduler)

    def put_task(self, task: Task) -> None:
        """Store ``task`` under its ``key``, replacing any earlier version."""
        ...

    def put_task_nowait(self, task: Task) -> PendingWrite:
        """Queue a task write without waiting for it to be durable.

        The Scheduler writes every task change through one thread; waiting for each
        commit there would serialise all commits and defeat group commit. Instead
        the caller's answer waits on the returned handle. Failures that can be seen
        at once (a failing store, an unstorable value) still raise here, before any
        change is applied.
        """
        ...

    def delete_task(self, key: str) -> None:
        """Forget a task; a missing one is no error."""
        ...

    def load_tasks(self) -> list[Task]:
        """Every stored task, in submission order (``seq``)."""
        ...

    def prune_tasks(self, older_than_wall: float) -> int:
        """Delete finished tasks that ended before ``older_than_wall``; returns how many.

        Only tasks in a terminal state (``TERMINAL_TASK_STATES``) with a ``finished_at``
        before the cutoff (wall clock): a pending, running or retrying task is an
        acknowledged promise, never garbage. A store may delete in several
        transactions, so that pruning never holds writers up for long; each is
        durable when it ends, and the count covers them all.
        """
        ...

    # ------------------------------------------------------------------- locks (LockBroker)

    def put_grant(self, grant: LockGrant) -> None:
        """Store a grant and raise the resource's fencing counter to its token, atomically.

        Grants are keyed by ``(resource, agent_id, task_key)``. The counter never goes
        down (an older grant stored again leaves it), and a token of 0 records none,
        so tokens keep increasing across restarts.
        """
        ...

    def delete_grant(self, grant: LockGrant) -> None:
        """Forget a grant (by its key); its resource's fencing counter stays."""
        ...

    def load_grants(self) -> list[LockGrant]:
        """Every stored grant, in the order each was first stored."""
        ...

    def load_fencing_counters(self) -> dict[str, int]:
        """The highest fencing token ever stored, by resource; kept for good."""
        ...

    # --------------------------------------------------------- TODO-service reservations (Intake)

    def put_reservation(self, todo_id: str, data: Mapping[str, Any]) -> None:
        """Store (or replace) the Intake's record of one TODO-service reservation."""
        ...

    def delete_reservation(self, todo_id: str) -> None:
        """Forget a reservation; a missing one is no error."""
        ...

    def load_reservations(self) -> dict[str, dict[str, Any]]:
        """Every stored reservation by TODO task id, its values as JSON types."""
        ...

    # ------------------------------------------------------ configuration defaults (Supervisor)

    def put_config_defaults(self, defaults: Mapping[str, Any]) -> None:
        """Replace the stored configuration defaults, whole."""
        ...

    def load_config_defaults(self) -> dict[str, Any]:
        """The stored defaults as JSON types; empty if none were ever stored."""
        ...

    # ------------------------------------------------ idempotent answers (orch/controllers)

    def put_idempotent_answer(self, answer: IdempotentAnswer) -> None:
        """Store the answer under ``(scope, key)``, replacing any earlier one.

        Durable when it returns, like every write without ``_nowait``: the HTTP layer
        sends the answer only afterwards, so a retry after any crash finds it.
        """
        ...

    def load_idempotent_answer(self, scope: str, key: str) -> IdempotentAnswer | None:
        """The answer stored under ``(scope, key)``, expired or not; None if there is none.

        Unlike the other loads this is a point read, made while serving a request with
        a key (never on the HTTP loop's thread), so it must be an indexed look-up.
        """
        ...

    def prune_idempotent_answers(self, expired_before_wall: float) -> int:
        """Delete answers whose ``expires_at`` is before the cutoff; returns how many.

        As ``prune_tasks``, a store may delete in several transactions.
        """
        ...

    # ---------------------------------------------------------------------------- operation

    def add_commit_listener(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` whenever queued writes may have ended, from now on.

        For whoever holds answers back until their ``PendingWrite``s are done (the
        HTTP loop, ``orch/http/waitress_adapter.py``) instead of blocking a thread on ``wait``:
        the call says "look again", so it must be quick and must never block (a
        trigger, not work). A store calls it on the thread that ended the writes,
        after each commit or failed commit, once the outcomes are visible through
        ``done``/``failed``; a store whose writes are durable before they return
        (memory) calls it after each write. An exception it raises is logged and
        never reaches the store's writer or a caller's write.
        """
        ...

    def remove_commit_listener(self, callback: Callable[[], None]) -> None:
        """Stop calling ``callback`` (a server that stopped); no error if it was not added."""
        ...

    def check(self) -> None:
        """Raise ``StoreError`` unless a write can commit right now (the health check).

        May block for as long as one commit takes; it is not counted in ``writes``.
        """
        ...

    def stats(self) -> StoreStats:
        """Counters for ``/metrics``, read at scrape time; never waits on a write."""
        ...

    def backup(self, dest: str) -> BackupSummary:
        """Write a consistent copy of everything stored to the new file ``dest``.

        The copy holds exactly the writes durable before it began and none half; it
        is complete before it takes the name ``dest``, which is never overwritten.
        Writes go on meanwhile. Raises ``orch.errors.BackupError`` (a ``StoreError``)
        saying why not, leaving nothing at ``dest``; a store that keeps its data
        elsewhere (memory: nothing to keep; a database server: its own tools, such as
        ``pg_dump``) refuses, naming what to use instead.
        """
        ...

    def close(self) -> None:
        """Make every accepted write end (durable or failed), then release the store.

        Idempotent. Afterwards every write, load, ``check`` and ``backup`` raises
        ``StoreError("store is closed")``; ``stats`` still answers.
        """
        ...
