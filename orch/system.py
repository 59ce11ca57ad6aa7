"""Orchestrator: builds, wires, starts and stops the actors; the embedded API.

This is the one facade both transports use: the HTTP resources call these methods,
and so does Python code embedding the orchestrator. Every method validates its
arguments first (raising ``orch.errors.Invalid`` naming the field), so nothing is
sent to an actor that could be half-applied. Each call makes at most one actor round
trip on the hot paths (heartbeat, complete): agents are found, and their tokens
checked, in the Supervisor's published Directory.

Time moves forward through ``tick()``: a background ticker calls it every
``tick_interval_s``; tests with a ``ManualClock`` call it themselves.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, cast

import msgspec
import pykka

from orch import gc_tuning
from orch.actors.directory import Directory, Entry
from orch.actors.health import HealthMonitor
from orch.actors.intake import Intake, todo_task_id
from orch.actors.lock_broker import LockBroker
from orch.actors.scheduler import Scheduler, TaskView, task_key_of_lock_owner
from orch.actors.supervisor import Supervisor
from orch.agent import Agent
from orch.clock import Clock, SystemClock
from orch.config import Settings
from orch.dependencies import DependencyChecks
from orch.errors import (
    Conflict,
    Forbidden,
    Invalid,
    NotFound,
    TaskCancelled,
    TaskFailed,
    Timeout,
    Unauthorized,
    Unavailable,
    VersionMismatch,
)
from orch.events import Event, Events
from orch.integrations.todo import TodoClient
from orch.logs import log_event
from orch.metrics import Metrics
from orch.model import (
    MAX_CAPABILITIES,
    MAX_RESOURCES_PER_REQUEST,
    AgentConfig,
    AgentRecord,
    AgentState,
    LockMode,
    Task,
    TaskId,
    TaskSpec,
    TaskState,
    task_key,
    validate_id,
    validate_int,
    validate_names,
    validate_positive,
    validate_task_id,
)
from orch.runtime import ActorGate, ActorHandle, Calls
from orch.store import Store, open_store

if TYPE_CHECKING:
    from orch.actors.proxies import (
        HealthMonitorProxy,
        IntakeProxy,
        LockBrokerProxy,
        SchedulerProxy,
        SupervisorProxy,
    )

logger = logging.getLogger("orch")

#: Task events the Intake must hear about for ``todo:`` tasks.
INTAKE_EVENTS = frozenset(
    {"task.completed", "task.dead", "task.cancelled", "task.requeued", "task.assigned"}
)

MAX_PAYLOAD_BYTES = 1024 * 1024

NOT_STARTED = "the orchestrator is not started; use `with Orchestrator() as orch` or call start()"
STOPPED = "the orchestrator has stopped; a stopped one cannot restart, create a new Orchestrator"


def hash_token(token: str) -> str:
    """Tokens are 256-bit random, so one SHA-256 round is enough to store them safely."""
    return hashlib.sha256(token.encode()).hexdigest()


def json_copy(field_name: str, value: Any, max_bytes: int) -> Any:
    """A deep copy of ``value`` that is proven JSON-serialisable and small enough."""
    try:
        encoded = msgspec.json.encode(value)
    except (TypeError, msgspec.EncodeError, OverflowError) as exc:
        raise Invalid(field_name, f"must be JSON-serialisable ({exc})") from None
    except RecursionError:
        raise Invalid(field_name, "is nested too deeply") from None
    if len(encoded) > max_bytes:
        raise Invalid(field_name, f"is {len(encoded)} bytes; the limit is {max_bytes}")
    return msgspec.json.decode(encoded)


class TaskHandle:
    """A submitted task: its id, its current status and, eventually, its result."""

    def __init__(self, orchestrator: Orchestrator, task_id: TaskId) -> None:
        self._orch = orchestrator
        self.task_id = task_id

    @property
    def status(self) -> str:
        """The task's state now (``pending``, ``assigned``, ... ``completed``)."""
        return self._orch.task(self.task_id)["status"]

    def result(self, timeout: float | None = None) -> Any:
        """Wait for the task to end and return its result.

        Raises ``TaskFailed`` if it ended ``dead``, ``TaskCancelled`` if cancelled,
        ``orch.errors.Timeout`` if it has not ended within ``timeout`` seconds.
        """
        task = self._orch.wait_for_task(self.task_id, timeout)
        if task.state is TaskState.COMPLETED:
            return task.result
        if task.state is TaskState.CANCELLED:
            raise TaskCancelled(f"task {self.task_id!r} was cancelled", task_id=self.task_id)
        raise TaskFailed(
            f"task {self.task_id!r} failed after {task.attempts} attempt(s): {task.error}",
            task_id=self.task_id,
            error=task.error,
        )

    def __repr__(self) -> str:
        return f"TaskHandle({self.task_id!r})"


class _NotRunning:
    """Stands in for the actor proxies while no actors run (before start, after stop).

    Every facade call that needs an actor reaches it through one of these attributes,
    so this one stand-in turns all of them into an ``Unavailable`` that says what to
    do, instead of an ``AttributeError`` (never started) or a call to a dead actor.
    """

    def __init__(self, message: str) -> None:
        self._message = message

    def __getattr__(self, name: str) -> Any:
        raise Unavailable(self._message)


class Orchestrator:
    """The control plane in one object; use as a context manager or start()/stop()."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        store: Store | None = None,
        clock: Clock | None = None,
        auto_tick: bool = True,
        connect_services: bool = False,
    ) -> None:
        self.settings = settings or Settings()
        self.clock: Clock = clock or SystemClock()
        self.store: Store = store or open_store(self.settings)
        self.events_log = Events(self.clock)
        self.directory = Directory()
        self._tasks = TaskView()
        self._scheduler_gate = ActorGate()
        self._calls = Calls(self.settings.ask_timeout_s, self.recover_from_failed_writes)
        self.metrics = Metrics(self.events_log, self.stats, lambda: self.store.stats())
        self.events_log.subscribe(log_event)
        self.dependencies = DependencyChecks(
            self.settings.dependency_check_interval_s, wall=self.clock.time
        )
        self.dependencies.add("store", self.store.check, critical=True)
        if connect_services:
            for name, url in (
                ("todo_service", self.settings.todo_service_url),
                ("gateway", self.settings.gateway_url),
            ):
                if url:
                    self.dependencies.add_http(name, url)
        self._auto_tick = auto_tick
        self._connect_services = connect_services
        self._intake: Any = None
        self._set_proxies(_NotRunning(NOT_STARTED))
        self._refs: list[pykka.ActorRef[Any]] = []
        self._ticker: threading.Thread | None = None
        self._stopping = threading.Event()
        self._started = False
        self.started_at = 0.0

    # ------------------------------------------------------------- lifecycle

    def start(self) -> Orchestrator:
        """Start the actors (and the ticker); returns self."""
        if self._started:
            return self
        if self._refs:
            raise Unavailable("a stopped Orchestrator cannot be restarted; create a new one")
        try:
            self._start_actors()
        except BaseException:
            # Half started is worse than not started: stop what did start, so a caller
            # that handles the error is not left with live actors and threads.
            for ref in self._refs:
                with contextlib.suppress(pykka.Timeout, pykka.ActorDeadError):
                    ref.stop(block=True, timeout=self.settings.ask_timeout_s)
            self._set_proxies(_NotRunning(STOPPED))
            raise
        self._started = True
        self.started_at = self.clock.time()
        if self.settings.gc_thresholds is not None:
            gc_tuning.hold(self.settings.gc_thresholds)
        self.dependencies.start()
        if self._auto_tick:
            self._ticker = threading.Thread(target=self._tick_loop, name="orch-ticker", daemon=True)
            self._ticker.start()
        return self

    def _start_actors(self) -> None:
        s = self.settings
        broker_ref = LockBroker.start(
            self.store, self.clock, self.events_log, max_ttl_s=s.lock_max_ttl_s
        )
        self._scheduler_gate = ActorGate()
        scheduler_ref = Scheduler.start(
            self.store, self.clock, self.events_log, s, self._tasks, self._scheduler_gate
        )
        supervisor_ref = Supervisor.start(
            self.store, self.clock, self.events_log, self.directory, s
        )
        health_ref = HealthMonitor.start(
            self.directory, self.clock, s, check_interval_s=min(1.0, s.heartbeat_interval_s / 2)
        )
        self._refs = [supervisor_ref, scheduler_ref, broker_ref, health_ref]
        self._broker = cast("LockBrokerProxy", broker_ref.proxy())
        self._scheduler = cast("SchedulerProxy", scheduler_ref.proxy())
        self._supervisor = cast("SupervisorProxy", supervisor_ref.proxy())
        self._health = cast("HealthMonitorProxy", health_ref.proxy())
        pykka.get_all(
            [
                self._scheduler.set_lock_broker(self._broker),
                self._broker.set_scheduler(self._scheduler),
                self._supervisor.wire(self._scheduler, self._broker, self._scheduler_gate),
            ],
            timeout=s.ask_timeout_s,
        )
        takes_work = self._supervisor.recover().get(timeout=s.ask_timeout_s)
        self._scheduler.recover_orphans(takes_work).get(timeout=s.ask_timeout_s)
        if self._connect_services and s.todo_service_url:
            self._start_intake()

    def _start_intake(self) -> None:
        """Pull work from the TODO service (only when serving with services connected)."""
        s = self.settings
        intake_ref = Intake.start(
            TodoClient(s.todo_service_url, timeout_s=s.todo_timeout_s),
            self.store,
            self.clock,
            self.events_log,
            self.directory,
            s,
        )
        self._refs.append(intake_ref)
        self._intake = cast("IntakeProxy", intake_ref.proxy())
        self._intake.set_scheduler(self._scheduler).get(timeout=s.ask_timeout_s)
        self._intake.recover().get(timeout=s.ask_timeout_s)
        intake = self._intake

        def forward(event: Event) -> None:
            if event.type in INTAKE_EVENTS and todo_task_id(event.data.get("task_id")):
                with contextlib.suppress(pykka.ActorDeadError):
                    intake.task_event.defer(
                        event.type, event.data["task_id"], event.data.get("agent_id")
                    )

        self.events_log.subscribe(forward)

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop this orchestrator's actors only (never the process-wide registry)."""
        if not self._started:
            return
        self._started = False
        if self.settings.gc_thresholds is not None:
            gc_tuning.release()  # first, so that a failure below cannot keep the hold
        self._stopping.set()
        self.dependencies.stop()
        if self._ticker is not None:
            self._ticker.join(timeout_s)
        try:
            self._supervisor.stop_children(timeout_s).get(timeout=timeout_s + 1)
        except (pykka.Timeout, pykka.ActorDeadError):
            logger.warning("agents did not all stop within %.1fs", timeout_s)
        for ref in self._refs:
            with contextlib.suppress(pykka.Timeout, pykka.ActorDeadError):
                ref.stop(block=True, timeout=timeout_s)
        self._set_proxies(_NotRunning(STOPPED))
        self.store.close()

    def _set_proxies(self, stand_in: _NotRunning) -> None:
        """Put ``stand_in`` where the actor proxies go, so calls fail as ``Unavailable``."""
        self._supervisor: Any = stand_in
        self._scheduler: Any = stand_in
        self._broker: Any = stand_in
        self._health: Any = stand_in
        self._intake = None

    def interrupt_waits(self) -> None:
        """Answer long waits now (lock waits with 503, event polls empty): shutdown is coming.

        Nothing waiting has been granted or changed, so refusing it loses nothing; the
        HTTP server calls this before draining so that draining takes milliseconds.
        """
        self.events_log.close()
        if self._started:
            with contextlib.suppress(pykka.ActorDeadError):
                self._ask(self._broker.refuse_waiters("the orchestrator is shutting down"))

    def __enter__(self) -> Orchestrator:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def tick(self) -> None:
        """Let time-driven work happen now: retries, time-outs, leases, health, restarts."""
        self._running()
        futures = [
            self._supervisor.tick(),
            self._scheduler.tick(),
            self._broker.tick(),
            self._health.tick(force=True),
        ]
        if self._intake is not None:
            futures.append(self._intake.tick())
        self._ask_all(futures)

    def _tick_loop(self) -> None:
        actors = [self._supervisor, self._scheduler, self._broker, self._health]
        if self._intake is not None:
            actors.append(self._intake)
        outstanding: list[pykka.Future[Any] | None] = [None] * len(actors)
        while not self._stopping.wait(self.settings.tick_interval_s):
            try:
                for i, actor in enumerate(actors):
                    # Skip a beat of a busy actor rather than pile its ticks up, but
                    # only its own: an Intake stuck on a hung TODO service must not
                    # stop restarts, time-outs, leases and health checks.
                    if outstanding[i] is None or _done(outstanding[i]):
                        outstanding[i] = actor.tick()
            except pykka.ActorDeadError:
                return

    # ------------------------------------------------------ in-process agents

    def attach(self, agent: Agent | Callable[[], Agent], *, start: bool = True) -> dict[str, Any]:
        """Run an in-process agent as a supervised actor (started unless ``start=False``).

        ``agent`` is an ``Agent`` instance (rebuilt on restart from its constructor
        arguments) or a zero-argument factory returning one.
        """
        if isinstance(agent, Agent):
            factory, sample = agent.factory(), agent
        elif callable(agent):
            factory, sample = agent, agent()
            if not isinstance(sample, Agent):
                raise Invalid("agent", "the factory must return an orch.Agent")
        else:
            raise Invalid("agent", "must be an orch.Agent or a factory returning one")
        self._register(
            agent_id=sample.agent_id,
            agent_type=sample.agent_type,
            capabilities=sample.capabilities,
            metadata=sample.metadata,
            project_id=None,
            max_concurrent_tasks=sample.max_concurrent_tasks,
            factory=factory,
        )
        if start:
            self.start_agent(sample.agent_id)
        return self.agent(sample.agent_id)

    def submit(
        self,
        payload: Mapping[str, Any] | None = None,
        *,
        task_id: TaskId | None = None,
        priority: int = 0,
        capabilities: Iterable[str] = (),
        agent_type: str | None = None,
        resources: Iterable[str] = (),
        max_attempts: int = 3,
        timeout_s: float | None = None,
        force: bool = False,
    ) -> TaskHandle:
        """Queue a task for the best eligible agent; returns a ``TaskHandle``."""
        task = self._submit(
            payload,
            task_id=task_id,
            priority=priority,
            capabilities=capabilities,
            agent_type=agent_type,
            resources=resources,
            max_attempts=max_attempts,
            timeout_s=timeout_s,
            force=force,
            agent_id=None,
        )
        return TaskHandle(self, task.spec.task_id)

    def wait_for_task(self, task_id: TaskId, timeout: float | None = None) -> Task:
        """Block until the task ends; ``Timeout`` if it does not within ``timeout``."""
        task_id = validate_task_id(task_id)
        self._running()
        ended = self._tasks.get(task_key(task_id))
        if ended is not None and ended.terminal:
            return ended  # no ask needed to learn that (``TaskView``)
        future: pykka.ThreadingFuture[Task] = pykka.ThreadingFuture()
        self._ask(self._scheduler.watch(task_id, future))
        try:
            return future.get(timeout=timeout)
        except pykka.Timeout:
            raise Timeout(f"task {task_id!r} has not ended after {timeout}s") from None

    # ---------------------------------------------------------- remote agents

    def register_agent(
        self,
        agent_id: str,
        agent_type: str,
        capabilities: Iterable[str] = (),
        metadata: Mapping[str, Any] | None = None,
        project_id: str | None = None,
        max_concurrent_tasks: int | None = None,
    ) -> dict[str, Any]:
        """Register a remote agent: ``{agent_id, status: "registered", token}``.

        The token is shown once, here; only its hash is kept. A live agent's id is a
        ``Conflict``; a lost or deregistered agent's id may be registered again.
        """
        token = self._register(
            agent_id=agent_id,
            agent_type=agent_type,
            capabilities=capabilities,
            metadata=metadata,
            project_id=project_id,
            max_concurrent_tasks=max_concurrent_tasks,
            factory=None,
        )
        return {"agent_id": agent_id, "status": "registered", "token": token}

    def _register(
        self,
        *,
        agent_id: str,
        agent_type: str,
        capabilities: Iterable[str],
        metadata: Mapping[str, Any] | None,
        project_id: str | None,
        max_concurrent_tasks: int | None,
        factory: Callable[[], Agent] | None,
    ) -> str:
        validate_id("agent_id", agent_id)
        validate_id("agent_type", agent_type)
        caps = validate_names("capabilities", capabilities, MAX_CAPABILITIES)
        if metadata is not None and not isinstance(metadata, Mapping):
            raise Invalid("metadata", "must be an object")
        metadata = json_copy("metadata", dict(metadata or {}), self.settings.max_metadata_bytes)
        if project_id is not None:
            validate_id("project_id", project_id)
        overrides = {}
        if max_concurrent_tasks is not None:
            overrides["max_concurrent_tasks"] = validate_int(
                "max_concurrent_tasks", max_concurrent_tasks, 1, 1024
            )
        token = secrets.token_urlsafe(32)
        self._ask(
            self._supervisor.register(
                agent_id=agent_id,
                agent_type=agent_type,
                capabilities=caps,
                token_hash=hash_token(token),
                metadata=metadata,
                project_id=project_id,
                config_overrides=overrides,
                factory=factory,
            )
        )
        return token

    def authenticate(self, agent_id: str, token: str | None) -> None:
        """Check that ``token`` is ``agent_id``'s own.

        ``Unauthorized`` without a token or with one that is nobody's; ``Forbidden``
        with another agent's token. Used by the HTTP layer on agent-scoped calls.
        """
        owner = self.identify(token)
        if owner != agent_id:
            raise Forbidden(
                f"this token belongs to agent {owner!r}; an agent cannot act as {agent_id!r}"
            )

    def identify(self, token: str | None) -> str:
        """The id of the agent ``token`` belongs to; ``Unauthorized`` if it is nobody's.

        Tokens are stored as SHA-256 hashes, and the look-up is by hash, so no
        comparison of secrets leaks timing about the token's characters.
        """
        if not token:
            raise Unauthorized("this call needs the agent's token: Authorization: Bearer <token>")
        owner = self.directory.agent_with_token_hash(hash_token(token))
        if owner is None:
            raise Unauthorized("the token does not belong to any registered agent")
        entry = self.directory.get(owner)
        if entry is None or not hmac.compare_digest(hash_token(token), entry.token_hash):
            raise Unauthorized("the token does not belong to any registered agent")
        return owner

    def start_agent(self, agent_id: str) -> dict[str, Any]:
        """Admit an agent to scheduling: status ``started`` or ``already_active``."""
        entry = self._entry(agent_id)
        if entry.actor is None:
            status = self._ask(self._supervisor.revive(agent_id))
        else:
            status = self._agent_call(entry, "start_agent")
        return {"agent_id": agent_id, "status": status}

    def stop_agent(self, agent_id: str, drain: bool = True) -> dict[str, Any]:
        """Stop an agent: ``stopping`` while it drains, then ``stopped``."""
        if not isinstance(drain, bool):
            raise Invalid("drain", "must be true or false")
        status = self._ask(self._live_actor(agent_id).stop_agent(drain))
        return {"agent_id": agent_id, "status": status}

    def deregister_agent(self, agent_id: str) -> dict[str, Any]:
        """Remove an agent; its tasks are requeued and its locks released."""
        validate_id("agent_id", agent_id)
        self._ask(self._supervisor.deregister(agent_id))
        return {"agent_id": agent_id, "status": "deregistered"}

    def heartbeat(self, agent_id: str) -> dict[str, Any]:
        """Prove liveness; returns state, current assignments and config version."""
        answer = self._agent_call(self._live_entry(agent_id), "heartbeat")
        self.events_log.signal("heartbeat")
        return answer

    def agent(self, agent_id: str) -> dict[str, Any]:
        """One agent as plain data (never its token)."""
        return self._entry(agent_id).record.to_dict(self._task_id_of)

    def agents(
        self,
        *,
        state: str | None = None,
        agent_type: str | None = None,
        capability: str | None = None,
        limit: int = 1000,
    ) -> dict[str, Any]:
        """``{agents, total, active}``: filtered listing, at most ``limit`` agents."""
        self._running()  # not started, the Directory is not yet recovered: empty, wrongly
        wanted_state = None if state is None else _parse_enum(AgentState, "status", state)
        if agent_type is not None:
            validate_id("agent_type", agent_type)
        if capability is not None:
            validate_id("capability", capability)
        limit = validate_int("limit", limit, 1, 100_000)
        records = [e.record for e in self.directory.entries()]
        active = sum(1 for r in records if r.state in (AgentState.IDLE, AgentState.BUSY))
        selected = [
            r
            for r in records
            if (wanted_state is None or r.state is wanted_state)
            and (agent_type is None or r.agent_type == agent_type)
            and (capability is None or capability in r.capabilities)
        ]
        selected.sort(key=lambda r: r.agent_id)
        return {
            "agents": [r.to_dict(self._task_id_of) for r in selected[:limit]],
            "total": len(records),
            "active": active,
        }

    def agent_tasks(self, agent_id: str) -> dict[str, Any]:
        """``{tasks}``: the tasks an agent holds now."""
        self._entry(agent_id)
        tasks = self._ask(self._scheduler.tasks_of(agent_id))
        return {"agent_id": agent_id, "tasks": [t.to_dict() for t in tasks]}

    def agent_config(self, agent_id: str) -> dict[str, Any]:
        """An agent's config, with its ``version``."""
        return self._entry(agent_id).record.config.to_dict()

    def update_agent_config(
        self,
        agent_id: str,
        changes: Mapping[str, Any],
        *,
        expected_version: int | None = None,
        replace_all: bool = False,
    ) -> dict[str, Any]:
        """Change an agent's config; ``expected_version`` guards against lost updates.

        With ``replace_all`` the fields not named in ``changes`` go back to the
        current defaults (HTTP ``PUT``); otherwise they are kept (``PATCH``).
        """
        if not isinstance(changes, Mapping):
            raise Invalid("config", "must be an object")
        if expected_version is not None:
            validate_int("If-Match", expected_version, 1, 2**63 - 1)
        entry = self._entry(agent_id)
        if replace_all:
            defaults = self.config_defaults()
            changes = {
                **{k: v for k, v in defaults.items() if k in AgentConfig.EDITABLE},
                **changes,
            }
        current = entry.record.config
        if expected_version is not None and expected_version != current.version:
            raise VersionMismatch(
                f"config of {agent_id!r} is at version {current.version}, not {expected_version}",
                version=current.version,
            )
        new = current.updated(changes)
        if entry.actor is None:
            raise Unavailable(f"agent {agent_id!r} has no running actor ({entry.record.state})")
        record: AgentRecord = self._ask(entry.actor.update_config(new))
        return record.config.to_dict()

    def config_defaults(self) -> dict[str, Any]:
        """The config newly registered agents get."""
        return self._ask(self._supervisor.config_defaults()).to_dict()

    def set_config_defaults(self, changes: Mapping[str, Any]) -> dict[str, Any]:
        """Change the config newly registered agents get."""
        if not isinstance(changes, Mapping):
            raise Invalid("config", "must be an object")
        return self._ask(self._supervisor.set_config_defaults(dict(changes))).to_dict()

    # ------------------------------------------------------------------ tasks

    def assign_task(
        self,
        payload: Mapping[str, Any] | None = None,
        *,
        task_id: TaskId | None = None,
        agent_id: str | None = None,
        priority: int = 0,
        agent_type: str | None = None,
        capabilities: Iterable[str] = (),
        resources: Iterable[str] = (),
        max_attempts: int = 3,
        timeout_s: float | None = None,
        force: bool = False,
        submitter: str | None = None,
    ) -> dict[str, Any]:
        """Assign to a named agent, or queue: ``{task_id, status, agent_id}``.

        ``status`` is ``assigned`` when an agent holds it now, else ``queued``. A
        ``submitter`` (the REST API passes the client's address) may have at most
        ``max_queued_tasks_per_submitter`` tasks queued; beyond, ``TooManyRequests``.
        """
        if agent_id is not None:
            self._entry(agent_id)
        task = self._submit(
            payload,
            task_id=task_id,
            priority=priority,
            capabilities=capabilities,
            agent_type=agent_type,
            resources=resources,
            max_attempts=max_attempts,
            timeout_s=timeout_s,
            force=force,
            agent_id=agent_id,
            submitter=submitter,
        )
        status = "assigned" if task.state in (TaskState.ASSIGNED, TaskState.RUNNING) else "queued"
        return {"task_id": task.spec.task_id, "status": status, "agent_id": task.agent_id}

    def _submit(self, payload: Any, *, agent_id: str | None, force: bool, **fields: Any) -> Task:
        if not isinstance(force, bool):
            raise Invalid("force", "must be true or false")
        if fields["task_id"] is None:
            fields["task_id"] = f"task-{secrets.token_hex(8)}"
        if payload is not None and not isinstance(payload, Mapping):
            raise Invalid("payload", "must be an object (a dict)")
        spec = TaskSpec.build(
            payload=json_copy("payload", dict(payload or {}), MAX_PAYLOAD_BYTES), **fields
        )
        return self._scheduler_call("submit", spec, agent_id, force)

    def complete_task(self, agent_id: str, task_id: TaskId, result: Any = None) -> dict[str, Any]:
        """The agent holding the task reports success: ``{task_id, status: "completed"}``."""
        validate_id("agent_id", agent_id)
        task_id = validate_task_id(task_id)
        result = json_copy("result", result, MAX_PAYLOAD_BYTES)
        task: Task = self._scheduler_call("complete", agent_id, task_id, result)
        return {"task_id": task.spec.task_id, "status": str(task.state)}

    def fail_task(
        self, agent_id: str, task_id: TaskId, error: str, retryable: bool = True
    ) -> dict[str, Any]:
        """The agent holding the task reports failure; retried by policy unless not retryable."""
        validate_id("agent_id", agent_id)
        task_id = validate_task_id(task_id)
        if not isinstance(error, str) or not error:
            raise Invalid("error", "must be a non-empty string")
        if not isinstance(retryable, bool):
            raise Invalid("retryable", "must be true or false")
        task: Task = self._scheduler_call("fail", agent_id, task_id, error[:4096], retryable)
        return {"task_id": task.spec.task_id, "status": str(task.state), "attempts": task.attempts}

    def cancel_task(self, task_id: TaskId) -> dict[str, Any]:
        """Cancel a task that has not ended."""
        task: Task = self._scheduler_call("cancel", validate_task_id(task_id))
        return {"task_id": task.spec.task_id, "status": str(task.state)}

    def task(self, task_id: TaskId) -> dict[str, Any]:
        """One task as plain data."""
        return self._scheduler_call("get", validate_task_id(task_id)).to_dict()

    def tasks(
        self, *, state: str | None = None, agent_id: str | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        """Tasks, oldest first, optionally filtered by state or agent."""
        wanted = None if state is None else _parse_enum(TaskState, "status", state)
        if agent_id is not None:
            validate_id("agent_id", agent_id)
        limit = validate_int("limit", limit, 1, 100_000)
        found = self._ask(self._scheduler.list_tasks(wanted, agent_id, limit))
        return [t.to_dict() for t in found]

    def pending_tasks(self, limit: int = 100) -> dict[str, Any]:
        """``{pending_tasks, count}`` in the order they would be assigned."""
        limit = validate_int("limit", limit, 1, 100_000)
        found = self._ask(self._scheduler.pending(limit))
        return {"pending_tasks": [t.to_dict() for t in found], "count": len(found)}

    # ------------------------------------------------------------------ locks

    def acquire_lock(
        self,
        agent_id: str,
        resource: str,
        *,
        mode: str = "exclusive",
        ttl_s: float = 30.0,
        wait_s: float = 0.0,
    ) -> dict[str, Any]:
        """Lease one resource: ``{resource, mode, agent_id, fencing_token, expires_at}``.

        Refused (``Conflict`` naming the holders) if it is held incompatibly and still
        is after ``wait_s`` seconds of waiting in line.
        """
        wanted = [(validate_id("resource", resource), LockMode.parse(mode))]
        return self._acquire(agent_id, wanted, ttl_s, wait_s)[0]

    def acquire_locks(
        self,
        agent_id: str,
        resources: Iterable[tuple[str, str]],
        *,
        ttl_s: float = 30.0,
        wait_s: float = 0.0,
    ) -> list[dict[str, Any]]:
        """Lease several resources at once, all or nothing.

        ``resources`` is a list of ``(resource, mode)`` pairs, e.g.
        ``[("db", "exclusive"), ("cache", "shared")]``; anything else is ``Invalid``
        naming ``resources``, refused before the LockBroker is asked.
        """
        return self._acquire(agent_id, _parse_lock_requests(resources), ttl_s, wait_s)

    def _acquire(
        self, agent_id: str, wanted: list[tuple[str, LockMode]], ttl_s: float, wait_s: float
    ) -> list[dict[str, Any]]:
        self._entry(agent_id)
        ttl_s = validate_positive("ttl_s", ttl_s, maximum=self.settings.lock_max_ttl_s)
        if (
            isinstance(wait_s, bool)
            or not isinstance(wait_s, int | float)
            or not (0 <= wait_s <= self.settings.lock_max_wait_s)
        ):
            raise Invalid("wait_s", f"must be between 0 and {self.settings.lock_max_wait_s}")
        reply: pykka.ThreadingFuture[Any] = pykka.ThreadingFuture()
        started = time.perf_counter()
        self._ask(self._broker.acquire(agent_id, wanted, ttl_s, float(wait_s), reply))
        try:
            grants = reply.get(timeout=wait_s + self.settings.ask_timeout_s)
        except pykka.Timeout:
            self._broker.cancel_wait.defer(reply)
            raise Timeout(f"lock broker did not answer within {wait_s}s + margin") from None
        except Conflict:
            self.events_log.signal("lock.refused")
            raise
        self.events_log.signal("lock.waited", seconds=time.perf_counter() - started)
        return [g.to_dict() for g in grants]

    def renew_lock(
        self, agent_id: str, resource: str, fencing_token: int, ttl_s: float = 30.0
    ) -> dict[str, Any]:
        """Extend a held lease; the fencing token proves which grant is meant."""
        validate_id("agent_id", agent_id)
        validate_id("resource", resource)
        validate_int("fencing_token", fencing_token, 1, 2**63 - 1)
        ttl_s = validate_positive("ttl_s", ttl_s, maximum=self.settings.lock_max_ttl_s)
        grant = self._ask(self._broker.renew(agent_id, resource, fencing_token, ttl_s))
        return grant.to_dict()

    def release_lock(self, agent_id: str, resource: str, fencing_token: int) -> dict[str, Any]:
        """Give a lock back; the waiters in line are served."""
        validate_id("agent_id", agent_id)
        validate_id("resource", resource)
        validate_int("fencing_token", fencing_token, 1, 2**63 - 1)
        self._ask(self._broker.release(agent_id, resource, fencing_token))
        return {"resource": resource, "status": "released"}

    def locks(self) -> list[dict[str, Any]]:
        """Every held lock with its holders and waiters.

        A lock the Scheduler took for a task names the task by key; the answer names it
        by its id as submitted (``123``, not ``"123"``), as everywhere else.
        """
        locks: list[dict[str, Any]] = self._ask(self._broker.locks())
        for lock in locks:
            for holder in lock["holders"]:
                if "task_id" in holder:  # held as ``lock_owner``: key and submission
                    key = task_key_of_lock_owner(holder["task_id"])
                    holder["task_id"] = self._task_id_of(key)
        return locks

    # ----------------------------------------------------------- observation

    def stats(self) -> dict[str, Any]:
        """Counts of agents, tasks and locks (the seed's keys and more)."""
        task_stats, lock_stats, restarting = self._ask_all(
            [self._scheduler.stats(), self._broker.stats(), self._supervisor.restarting()]
        )
        counts, restarts, total = self.directory.counts()
        by_state = Counter({str(s): n for s, n in counts.items()})
        by_task_state = task_stats["tasks_by_state"]
        return {
            "total_agents": total,
            "active_agents": by_state["idle"] + by_state["busy"],
            "idle_agents": by_state["idle"],
            "busy_agents": by_state["busy"],
            "agents_by_state": {str(s): by_state[str(s)] for s in AgentState},
            "pending_tasks": by_task_state["pending"],
            "assigned_tasks": by_task_state["assigned"] + by_task_state["running"],
            "total_tasks_completed": task_stats["total_tasks_completed"],
            "total_tasks_failed": task_stats["total_tasks_failed"],
            "tasks": task_stats,
            "locks": lock_stats,
            "restarts": restarts,
            "restarting_agents": restarting,
            "intake": self._intake_status(),
            "uptime_s": round(self.clock.time() - self.started_at, 3),
        }

    def events(self, after: int = 0, *, limit: int = 1000, wait_s: float = 0.0) -> dict[str, Any]:
        """Events numbered after ``after``, waiting up to ``wait_s`` for the first (long-poll).

        ``next`` is the ``after`` to pass next time; the ring keeps the last 10,000
        events, so a reader that falls further behind sees a gap in ``seq``. An ``after``
        beyond the newest event (a reader of a previous process: numbering restarts
        with the server) is answered at once from the start, with ``reset: true``.
        """
        after = validate_int("after", after, 0, 2**63 - 1)
        limit = validate_int("limit", limit, 1, 1000)
        if isinstance(wait_s, bool) or not isinstance(wait_s, int | float) or not 0 <= wait_s <= 60:
            raise Invalid("wait", "must be between 0 and 60 seconds")
        return self.events_log.page(after, limit, float(wait_s))

    def _intake_status(self) -> dict[str, Any] | None:
        if self._intake is None:
            return None
        try:
            # Briefly: the Intake may be stuck calling a hung service; /stats is not.
            return self._intake.status().get(timeout=min(0.1, self.settings.ask_timeout_s))
        except (pykka.Timeout, pykka.ActorDeadError):
            return {"status": "busy"}  # polling a slow service; counts come next time

    def health(self) -> dict[str, Any]:
        """``healthy``, ``degraded`` (a service we use is unreachable) or ``unhealthy``
        (the store failing or an actor dead), with one check per dependency.

        Dependency checks run in the background; this only reads their last results,
        so it answers at once even when a dependency hangs.
        """
        self._running()  # stopped, every actor is dead: that is not news about health
        dead = [r.actor_class.__name__ for r in self._refs if not r.is_alive()]
        checks: dict[str, Any] = {"actors": {"status": "failing" if dead else "ok", "dead": dead}}
        checks.update({name: r.to_dict() for name, r in self.dependencies.results().items()})
        status = "unhealthy" if dead else self.dependencies.status()
        counts, _, total = self.directory.counts()
        out: dict[str, Any] = {
            "status": status,
            "checks": checks,
            "total_agents": total,
            "active_agents": counts.get(AgentState.IDLE, 0) + counts.get(AgentState.BUSY, 0),
        }
        if not dead:
            out["pending_tasks"] = self._ask(self._scheduler.stats())["tasks_by_state"]["pending"]
        return out

    # ------------------------------------------------------------- internals

    def _running(self) -> None:
        """For the calls that need no actor (they read the Directory): same answer."""
        if not self._started:
            raise Unavailable(STOPPED if self._refs else NOT_STARTED)

    def _task_id_of(self, key: str) -> TaskId:
        """A held task's id as submitted (``123``, not ``"123"``), read without an ask.

        An agent's record names its tasks by key; the Scheduler's ``TaskView`` has the
        tasks themselves. A task an agent holds is never pruned, so the key is only a
        fallback, for the moment the Scheduler spends rebuilding its table.
        """
        task = self._tasks.get(key)
        return key if task is None else task.spec.task_id

    def _entry(self, agent_id: str) -> Entry:
        self._running()
        validate_id("agent_id", agent_id)
        entry = self.directory.get(agent_id)
        if entry is None:
            raise NotFound(f"no agent {agent_id!r}")
        return entry

    def _live_actor(self, agent_id: str) -> Any:
        return self._live_entry(agent_id).actor

    def _live_entry(self, agent_id: str) -> Entry:
        """The agent's entry, if it has a running actor (``Conflict``/``Unavailable`` if not)."""
        entry = self._entry(agent_id)
        if entry.actor is None:
            if entry.record.state is AgentState.FAILED:
                raise Conflict(
                    f"agent {agent_id!r} failed (restart intensity exceeded); start it again",
                    state="failed",
                )
            raise Unavailable(f"agent {agent_id!r} is restarting; try again shortly")
        return entry

    def _agent_call(self, entry: Entry, method: str, *args: Any) -> Any:
        """Run an AgentActor message here if its actor is idle (``Gate``), else ask it."""
        return self._calls.call(ActorHandle(entry.actor, entry.gate), method, *args)

    def _scheduler_call(self, method: str, *args: Any) -> Any:
        """Run a Scheduler message here if it is idle (``ActorGate``), else ask it."""
        return self._calls.call(ActorHandle(self._scheduler, self._scheduler_gate), method, *args)

    def _ask(self, future: pykka.Future[Any]) -> Any:
        return self._calls.ask(future)

    def _ask_all(self, futures: list[pykka.Future[Any]]) -> list[Any]:
        return self._calls.ask_all(futures)

    def recover_from_failed_writes(self) -> None:
        """Make the actors rebuild from the store: a write behind an answer failed.

        The Scheduler and Supervisor apply a change before its commit; one that did
        not commit must not stay in memory. ``_settle`` calls this when a write it
        waited for failed, and so does whoever deferred the wait
        (``orch.store.base.deferring_writes``).
        """
        with contextlib.suppress(pykka.ActorDeadError):
            self._scheduler.check_writes.defer()
            self._supervisor.check_writes.defer()

    def _settle(self, answers: list[Any]) -> list[Any]:
        return self._calls.settle(answers)


def _done(future: pykka.Future[Any]) -> bool:
    try:
        future.get(timeout=0)
    except pykka.Timeout:
        return False
    except Exception:
        return True
    return True


def _parse_enum(enum_type: Any, field_name: str, value: str) -> Any:
    try:
        return enum_type(value)
    except ValueError:
        choices = ", ".join(str(m) for m in enum_type)
        raise Invalid(field_name, f"must be one of {choices}; got {value!r}") from None


def _parse_lock_requests(resources: object) -> list[tuple[str, LockMode]]:
    """``resources`` as checked ``(resource, LockMode)`` pairs, or ``Invalid("resources")``.

    Unpacking blindly would raise a bare ``ValueError``/``TypeError`` for a dict, None
    or a 3-tuple (and read a 2-character string as a pair); every such shape is told
    apart here, naming the field and the item, before any actor is asked.
    """
    shape = "a list of (resource, mode) pairs, e.g. [('db', 'exclusive'), ('cache', 'shared')]"
    if isinstance(resources, str | bytes | Mapping) or not isinstance(resources, Iterable):
        raise Invalid("resources", f"must be {shape}; got {type(resources).__name__}")
    parsed: list[tuple[str, LockMode]] = []
    for i, item in enumerate(resources):
        if len(parsed) == MAX_RESOURCES_PER_REQUEST:
            raise Invalid("resources", f"at most {MAX_RESOURCES_PER_REQUEST} per request")
        if not isinstance(item, tuple | list) or len(item) != 2:
            got = f"{len(item)} items" if isinstance(item, tuple | list) else type(item).__name__
            raise Invalid("resources", f"item {i} must be a (resource, mode) pair; got {got}")
        try:
            parsed.append((validate_id("resource", item[0]), LockMode.parse(item[1])))
        except Invalid as exc:
            raise Invalid("resources", f"item {i}: {exc.message}") from None
    if not parsed:
        raise Invalid("resources", "name at least one resource")
    if len({r for r, _ in parsed}) != len(parsed):
        raise Invalid("resources", "lists the same resource twice")
    return parsed
