"""Supervisor: owns the AgentActors and restarts them, Erlang/OTP style.

Strategy ``one_for_one``: a crashed AgentActor is restarted alone, from its last
published record (an in-process agent object is rebuilt from its factory), after a
backoff that starts at ``restart_backoff_initial_s`` and doubles up to
``restart_backoff_max_s``. Restart intensity: at most ``max_restarts`` restarts
within ``restart_window_s``; one more crash and the agent is marked ``failed``
(its tasks were already failed back to the queue by the Scheduler) — escalation
stops at the agent, the rest of the system carries on.

The Supervisor also keeps the ``Directory`` — the published view that lets the hot
paths find an agent and check its token without asking any actor.
"""

from __future__ import annotations

import collections
import contextlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any, cast

import pykka

from orch.actors.agent import AgentActor, AgentDeps
from orch.actors.directory import Directory, Entry
from orch.agent import Agent
from orch.clock import Clock
from orch.config import Settings
from orch.errors import Conflict, NotFound, OrchestratorError, Unavailable
from orch.events import Events
from orch.model import AgentConfig, AgentRecord, AgentState
from orch.runtime import ActorGate, ActorPool, LightProxy
from orch.store.base import Durable, PendingWrite, Store
from orch.supervision import RestartPolicy, decide_restart

if TYPE_CHECKING:
    from orch.actors.proxies import AgentProxy, LockBrokerProxy, SchedulerProxy, SupervisorProxy

logger = logging.getLogger("orch.supervisor")


class Supervisor(pykka.ThreadingActor):
    """Registration, deregistration and one_for_one supervision of agents."""

    use_daemon_thread = True

    def __init__(
        self,
        store: Store,
        clock: Clock,
        events: Events,
        directory: Directory,
        settings: Settings,
    ) -> None:
        super().__init__()
        self._store = store
        self._clock = clock
        self._events = events
        self._directory = directory
        self._settings = settings
        self._deps: AgentDeps | None = None
        self._children: dict[str, pykka.ActorRef[AgentActor]] = {}
        self._factories: dict[str, Callable[[], Agent] | None] = {}
        self._generation = 0
        self._restart_history: dict[str, tuple[float, ...]] = {}
        self._restart_policy = RestartPolicy(
            max_restarts=settings.max_restarts,
            restart_window_s=settings.restart_window_s,
            backoff_initial_s=settings.restart_backoff_initial_s,
            backoff_max_s=settings.restart_backoff_max_s,
        )
        self._due_restarts: dict[str, float] = {}
        self._config_defaults: dict[str, Any] = {}
        # Registrations whose write may not be durable yet, oldest first:
        # (agent id, generation, the entry it replaced, write).
        self._unconfirmed: collections.deque[tuple[str, int, Entry | None, PendingWrite]] = (
            collections.deque()
        )
        # Starts answered before their write committed, oldest first (``watch_start``):
        # (agent id, generation, write, the record as stored before the start).
        self._unconfirmed_starts: collections.deque[tuple[str, int, PendingWrite, AgentRecord]] = (
            collections.deque()
        )

    def on_start(self) -> None:
        self._config_defaults = self._store.load_config_defaults()
        self._pool = ActorPool(self._settings.agent_threads)

    def on_stop(self) -> None:
        self._pool.close()

    def wire(
        self,
        scheduler: SchedulerProxy,
        lock_broker: LockBrokerProxy,
        scheduler_gate: ActorGate | None = None,
    ) -> None:
        """Give the Supervisor what its children need; called once by the Orchestrator."""
        self._deps = AgentDeps(
            store=self._store,
            clock=self._clock,
            events=self._events,
            directory=self._directory,
            settings=self._settings,
            scheduler=scheduler,
            lock_broker=lock_broker,
            supervisor=cast("SupervisorProxy", self.actor_ref.proxy()),
            pool=self._pool,
            scheduler_gate=scheduler_gate,
        )

    # ------------------------------------------------------------ recovery

    def recover(self) -> list[str]:
        """Bring back the stored agents; returns the ids that will take work again.

        Every remote agent gets a fresh heartbeat grace period (heartbeat times are
        not stored). Agents that were busy or unhealthy come back idle and receive
        their recovered assignments from the Scheduler; ``failed`` and ``lost`` ones
        come back without an actor, as they were. An in-process agent's code lived in
        the old process, so it comes back ``lost``: ``attach`` registers it again.
        """
        credentials = self._store.load_credentials()
        now = self._clock.monotonic()
        takes_work = []
        for record in self._store.load_agents():
            token_hash = credentials.get(record.agent_id)
            if token_hash is None:
                logger.error("agent %s has no stored credential; skipped", record.agent_id)
                continue
            record = replace(record, task_keys=frozenset(), last_heartbeat=now)
            state = record.state
            if record.in_process:
                state = AgentState.LOST
            elif state in (AgentState.BUSY, AgentState.UNHEALTHY):
                state = AgentState.IDLE
            elif state is AgentState.STOPPING:
                state = AgentState.STOPPED  # its drain ends here; its tasks are requeued
            record = replace(record, state=state)
            if state in (AgentState.FAILED, AgentState.LOST):
                self._generation += 1
                self._directory.put(Entry(record, None, self._generation, token_hash))
                continue
            self._factories[record.agent_id] = None
            self._spawn(record, token_hash)
            if state is AgentState.IDLE:
                takes_work.append(record.agent_id)
        if len(self._directory):
            logger.info("recovered %d agents", len(self._directory))
        return takes_work

    # ------------------------------------------------------------ registry

    def register(
        self,
        *,
        agent_id: str,
        agent_type: str,
        capabilities: frozenset[str],
        token_hash: str,
        metadata: Mapping[str, Any] | None = None,
        project_id: str | None = None,
        config_overrides: Mapping[str, Any] | None = None,
        factory: Callable[[], Agent] | None = None,
    ) -> Durable[AgentRecord]:
        """Create an agent and its actor. A live agent's id is a ``Conflict``.

        The answer is ``Durable``: the registration write is queued, not awaited (see
        ``check_writes``).
        """
        entry = self._directory.get(agent_id)
        if entry is not None and entry.record.state is not AgentState.LOST:
            raise Conflict(
                f"agent {agent_id!r} is already registered ({entry.record.state}); "
                "deregister it first",
                agent_id=agent_id,
            )
        config = self.config_defaults()
        if config_overrides:
            config = replace(config.updated(config_overrides), version=1)
        record = AgentRecord(
            agent_id=agent_id,
            agent_type=agent_type,
            capabilities=capabilities,
            config=config,
            metadata=dict(metadata or {}),
            project_id=project_id,
            in_process=factory is not None,
            registered_at=self._clock.time(),
        )
        write = self._store.register_agent_nowait(record, token_hash)
        if entry is not None:
            self._stop_child(agent_id)
        self._factories[agent_id] = factory
        self._restart_history.pop(agent_id, None)
        self._due_restarts.pop(agent_id, None)
        generation = self._spawn(record, token_hash, registered=write)
        if not write.done() or write.failed():
            self._unconfirmed.append((agent_id, generation, entry, write))
        self._events.emit(
            "agent.registered",
            agent_id=agent_id,
            agent_type=agent_type,
            in_process=factory is not None,
        )
        return Durable(record, (write,))

    def check_writes(self) -> int:
        """Undo registrations and starts whose write failed after the fact; returns how many.

        ``register`` does not wait for its commit (one sync per agent, serialised in
        this actor, was what bounded registration), so the agent's actor and entry
        exist before the write is durable. The caller's answer waits for it; if it
        fails, the caller got ``StoreError`` and the agent must not stay: its actor
        is stopped and the entry it replaced (a lost agent's) put back. A start
        (``AgentActor.start_agent``) does not wait for its commit either; if that
        fails, the agent's actor is told to put the agent back as stored. Called
        every tick, and at once by the facade when an answer's write failed.
        """
        undone = 0
        starts = self._unconfirmed_starts
        while starts and starts[0][2].done():
            agent_id, generation, write, stored = starts.popleft()
            current = self._directory.get(agent_id)
            if not write.failed() or current is None or current.generation != generation:
                continue
            if current.actor is not None:
                with contextlib.suppress(pykka.ActorDeadError):
                    current.actor.undo_start.defer(write, stored)
                undone += 1
        while self._unconfirmed and self._unconfirmed[0][3].done():
            agent_id, generation, previous, write = self._unconfirmed.popleft()
            current = self._directory.get(agent_id)
            if not write.failed() or current is None or current.generation != generation:
                continue
            self._stop_child(agent_id)
            self._factories.pop(agent_id, None)
            if previous is not None:
                self._directory.put(replace(previous, actor=None, gate=None))
            else:
                self._directory.remove(agent_id)
            logger.error("registration of agent %s was not stored; undone", agent_id)
            undone += 1
        return undone

    def watch_start(
        self, agent_id: str, generation: int, write: PendingWrite, stored: AgentRecord
    ) -> None:
        """Watch the write of a start its agent answered before it committed.

        Told by the agent's actor (``AgentActor.start_agent``); ``stored`` is the
        agent's record as the store still holds it. If the write fails,
        ``check_writes`` has the start undone.
        """
        self._unconfirmed_starts.append((agent_id, generation, write, stored))

    def deregister(self, agent_id: str) -> None:
        """Remove an agent; its tasks are requeued and its locks released."""
        entry = self._directory.get(agent_id)
        if entry is None:
            raise NotFound(f"no agent {agent_id!r}")
        self._store.delete_agent(agent_id)
        self._directory.remove(agent_id)
        self._factories.pop(agent_id, None)
        self._restart_history.pop(agent_id, None)
        self._due_restarts.pop(agent_id, None)
        if entry.actor is not None:
            try:
                entry.actor.retire.defer()
            except pykka.ActorDeadError:
                entry = replace(entry, actor=None)
        if entry.actor is None and self._deps is not None:
            self._deps.scheduler.agent_gone.defer(agent_id, entry.generation, "released", None)
            self._deps.lock_broker.release_agent.defer(agent_id)
        self._stop_child(agent_id)
        self._events.emit("agent.deregistered", agent_id=agent_id)

    def revive(self, agent_id: str) -> str:
        """Start a ``failed`` agent afresh (an operator's explicit start)."""
        entry = self._directory.get(agent_id)
        if entry is None:
            raise NotFound(f"no agent {agent_id!r}")
        if entry.actor is not None:
            return "already_active"
        if agent_id in self._due_restarts:
            raise Unavailable(f"agent {agent_id!r} is restarting; try again shortly")
        if entry.record.state is not AgentState.FAILED:
            raise Conflict(f"agent {agent_id!r} is {entry.record.state}")
        record = replace(
            entry.record,
            state=AgentState.IDLE,
            last_heartbeat=self._clock.monotonic(),
            task_keys=frozenset(),
        )
        self._store.put_agent(record)
        self._restart_history.pop(agent_id, None)
        self._spawn(record, entry.token_hash)
        self._events.emit("agent.started", agent_id=agent_id, revived=True)
        return "started"

    # ----------------------------------------------------------- supervision

    def child_failed(self, agent_id: str, generation: int, error: str) -> None:
        """A child died: schedule its restart, or give up on it (restart intensity)."""
        entry = self._directory.get(agent_id)
        if entry is None or entry.generation != generation:
            return
        self._children.pop(agent_id, None)
        now = self._clock.monotonic()
        decision = decide_restart(
            self._restart_policy, self._restart_history.get(agent_id, ()), now
        )
        self._restart_history[agent_id] = decision.history
        record = replace(entry.record, last_error=error, task_keys=frozenset())
        if not record.config.auto_restart or decision.restart_in_s is None:
            self._give_up(entry, record)
            return
        backoff_s = decision.restart_in_s
        self._due_restarts[agent_id] = now + backoff_s
        self._directory.put(replace(entry, record=record, actor=None, gate=None))
        self._events.emit("agent.crashed", agent_id=agent_id, error=error, restart_in_s=backoff_s)

    def tick(self) -> None:
        """Restart children whose backoff has run out; settle unconfirmed registrations
        and starts."""
        if self._unconfirmed or self._unconfirmed_starts:
            self.check_writes()
        now = self._clock.monotonic()
        for agent_id, due in list(self._due_restarts.items()):
            if due <= now:
                del self._due_restarts[agent_id]
                self._restart(agent_id)

    def restarting(self) -> list[str]:
        """Agents waiting out their restart backoff."""
        return sorted(self._due_restarts)

    def _restart(self, agent_id: str) -> None:
        entry = self._directory.get(agent_id)
        if entry is None:
            return
        state = entry.record.state
        if state is AgentState.BUSY:
            state = AgentState.IDLE
        elif state is AgentState.STOPPING:
            state = AgentState.STOPPED
        record = replace(entry.record, state=state, restarts=entry.record.restarts + 1)
        try:
            self._store.put_agent(record)
        except OrchestratorError as exc:
            logger.warning("restart of %s postponed, store failing: %s", agent_id, exc)
            self._due_restarts[agent_id] = self._clock.monotonic() + 1.0
            return
        self._spawn(record, entry.token_hash)
        self._events.emit("agent.restarted", agent_id=agent_id, restarts=record.restarts)

    def _give_up(self, entry: Entry, record: AgentRecord) -> None:
        failed = replace(record, state=AgentState.FAILED)
        try:
            self._store.put_agent(failed)
        except OrchestratorError as exc:
            logger.error("could not store failure of agent %s: %s", record.agent_id, exc)
        self._directory.put(replace(entry, record=failed, actor=None, gate=None))
        if self._deps is not None:
            self._deps.lock_broker.release_agent.defer(record.agent_id)
        self._events.emit(
            "agent.failed",
            agent_id=record.agent_id,
            error=record.last_error,
            restarts=record.restarts,
        )

    def _spawn(
        self, record: AgentRecord, token_hash: str, registered: PendingWrite | None = None
    ) -> int:
        """Start the agent's actor; returns its generation.

        ``registered`` is the agent's registration write when it may not be durable
        yet: the actor waits for it before its own first write.
        """
        if self._deps is None:
            raise Unavailable("the orchestrator is not started")
        self._generation += 1
        generation = self._generation
        # The entry goes in first so the actor's first publish finds its generation.
        self._directory.put(Entry(record, None, generation, token_hash))
        gate = ActorGate()
        ref = AgentActor.start(
            record,
            generation,
            self._deps,
            self._factories.get(record.agent_id),
            gate,
            registered,
        )
        self._children[record.agent_id] = ref
        proxy = cast("AgentProxy", LightProxy(ref))
        self._directory.attach_actor(record.agent_id, generation, proxy, gate)
        return generation

    def _stop_child(self, agent_id: str) -> None:
        ref = self._children.pop(agent_id, None)
        if ref is not None:
            with contextlib.suppress(pykka.ActorDeadError):
                ref.stop(block=False)

    # --------------------------------------------------------- configuration

    def config_defaults(self) -> AgentConfig:
        """The config new agents start from."""
        base = AgentConfig(
            heartbeat_interval_s=self._settings.heartbeat_interval_s,
            task_timeout_s=self._settings.task_timeout_s,
        )
        return replace(base, **self._config_defaults)

    def set_config_defaults(self, changes: Mapping[str, Any]) -> AgentConfig:
        """Change the defaults for agents registered from now on."""
        AgentConfig().updated(changes)  # validates, naming the bad field
        merged = {**self._config_defaults, **changes}
        self._store.put_config_defaults(merged)
        self._config_defaults = merged
        return self.config_defaults()

    # -------------------------------------------------------------- shutdown

    def stop_children(self, timeout_s: float) -> None:
        """Stop every child; used when the Orchestrator shuts down."""
        futures = []
        for ref in list(self._children.values()):
            try:
                futures.append(ref.stop(block=False))
            except pykka.ActorDeadError:
                continue
        for future in futures:
            try:
                future.get(timeout=timeout_s)
            except pykka.Timeout:
                logger.warning("an agent actor did not stop within %.1fs", timeout_s)
        self._children.clear()
