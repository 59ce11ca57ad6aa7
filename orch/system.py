"""Orchestrator: builds, wires, starts and stops the actors; exposes the controllers.

This is the one facade both transports use: the HTTP resources call its methods,
and so does Python code embedding the orchestrator. It composes controllers, as
Mopidy's ``Core`` does (``orch/controllers/``): agents, tasks, locks, configuration
and observation, plus the agents' tokens (``orch/tokens.py``). Each method of the
embedded API (README) *is* one controller's method, bound here by name; none is
implemented twice. Controllers validate every argument first (raising
``orch.errors.Invalid`` naming the field), so nothing is sent to an actor that could
be half-applied, and reach the actors only through ``orch.runtime.Calls``.

Time moves forward through ``tick()``: a background ticker calls it every
``tick_interval_s``; tests with a ``ManualClock`` call it themselves.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Concatenate, Generic, ParamSpec, TypeVar, cast, overload

import pykka

from orch import gc_tuning
from orch.actors.directory import Directory
from orch.actors.health import HealthMonitor
from orch.actors.intake import Intake, todo_task_id
from orch.actors.intake_view import IntakeView
from orch.actors.lock_broker import LockBroker
from orch.actors.scheduler import Scheduler, TaskView
from orch.actors.supervisor import Supervisor
from orch.clock import Clock, SystemClock
from orch.config import OFF_SWITCHES, Settings
from orch.controllers import (
    Actors,
    AgentsController,
    ConfigController,
    Controllers,
    LocksController,
    ObservationController,
    TaskHandle,
    TasksController,
    Tokens,
)
from orch.controllers.base import STOPPED
from orch.dependencies import DependencyChecks
from orch.errors import Unavailable
from orch.events import Event, Events
from orch.idempotency import IdempotencyKeys
from orch.integrations.todo import TodoClient
from orch.logs import log_event
from orch.metrics import Metrics
from orch.runtime import ActorGate, Calls
from orch.store import POSTGRES_SCHEMES, Store, open_store

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

__all__ = ["Orchestrator", "TaskHandle"]

P = ParamSpec("P")
R = TypeVar("R")


class _ControllerMethod(Generic[P, R]):
    """An embedded-API name for one controller's own method, never a second implementation.

    Read on the class, it is the controller's function itself, so
    ``help(Orchestrator.submit)`` shows its signature and docstring. Read on an
    Orchestrator, it is that Orchestrator's controller's bound method, kept in the
    instance on first use, so a call costs what any method call costs. Type checkers
    see the controller method's own signature.
    """

    __slots__ = ("_controller", "_function", "_name")

    def __init__(self, controller: str, function: Callable[Concatenate[Any, P], R]) -> None:
        self._controller = controller  # a field of ``Controllers``
        self._function = function
        self._name = function.__name__

    def __set_name__(self, owner: type, name: str) -> None:
        self._name = name

    @overload
    def __get__(
        self, instance: None, owner: type | None = None
    ) -> Callable[Concatenate[Any, P], R]: ...

    @overload
    def __get__(self, instance: Orchestrator, owner: type | None = None) -> Callable[P, R]: ...

    def __get__(self, instance: Orchestrator | None, owner: type | None = None) -> Any:
        if instance is None:
            return self._function
        controller = getattr(instance.controllers, self._controller)
        method = getattr(controller, self._function.__name__)
        instance.__dict__[self._name] = method
        return method


class Orchestrator:
    """The control plane in one object; use as a context manager or start()/stop()."""

    def __new__(cls, settings: Settings | None = None, *, store: Any = None, **options: Any) -> Any:
        """A PostgreSQL URL as ``store`` makes a node of a cluster (``orch.node``)."""
        if isinstance(store, str) and store.startswith(POSTGRES_SCHEMES):
            from orch.node import EmbeddedNode  # it builds Orchestrators itself

            return EmbeddedNode(dataclasses.replace(settings or Settings(), db=store), **options)
        return super().__new__(cls)

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        store: Store | str | None = None,
        clock: Clock | None = None,
        auto_tick: bool = True,
        connect_services: bool = False,
    ) -> None:
        self.settings = settings or Settings()
        if isinstance(store, str):  # ORCH_DB's forms: ":memory:" or a SQLite file
            self.settings = dataclasses.replace(self.settings, db=store)
            store = None
        self.clock: Clock = clock or SystemClock()
        self.store: Store = store or open_store(self.settings)
        self.events_log = Events(self.clock)
        self.directory = Directory()
        self.dependencies = DependencyChecks(
            self.settings.dependency_check_interval_s, wall=self.clock.time
        )
        calls = Calls(self.settings.ask_timeout_s, self.recover_from_failed_writes)
        #: The running actors as the controllers reach them (stand-ins while none run).
        self.actors = Actors(calls, self.directory, TaskView())
        self.controllers = Controllers(
            agents=AgentsController(self.actors, self.settings, self.events_log, self.clock),
            tasks=TasksController(self.actors),
            locks=LocksController(self.actors, self.settings, self.events_log),
            config=ConfigController(self.actors),
            observation=ObservationController(
                self.actors, self.settings, self.events_log, self.dependencies, self.clock
            ),
            tokens=Tokens(self.directory),
        )
        self.metrics = Metrics(
            self.events_log, self.controllers.observation.stats, lambda: self.store.stats()
        )
        self.events_log.subscribe(log_event)
        #: Keyed writes under way and their stored answers (the HTTP layer's retries).
        self.idempotency = IdempotencyKeys(
            self.store, self.clock, self.events_log, self.settings.idempotency_ttl_s
        )
        self.dependencies.add("store", self.store.check, critical=True)
        if connect_services:
            for name, url in (
                ("todo_service", self.settings.todo_service_url),
                ("gateway", self.settings.gateway_url),
            ):
                if url:
                    self.dependencies.add_http(name, url, off_hint=OFF_SWITCHES[name])
        #: What the Intake holds and how it is doing, read without an ask (None: no intake).
        self.intake_view: IntakeView | None = None
        if connect_services and self.settings.todo_service_url:
            self.intake_view = IntakeView(
                self.settings.todo_service_url, self.clock, self.settings.todo_poll_s
            )
            self.dependencies.add("intake", self.intake_view.check, critical=False)
        self._auto_tick = auto_tick
        self._connect_services = connect_services
        self._ticker: threading.Thread | None = None
        self._stopping = threading.Event()

    # ------------------------------------------------------- the embedded API
    # Each name is one controller's method (see ``_ControllerMethod``).

    attach = _ControllerMethod("agents", AgentsController.attach)
    register_agent = _ControllerMethod("agents", AgentsController.register_agent)
    start_agent = _ControllerMethod("agents", AgentsController.start_agent)
    stop_agent = _ControllerMethod("agents", AgentsController.stop_agent)
    deregister_agent = _ControllerMethod("agents", AgentsController.deregister_agent)
    heartbeat = _ControllerMethod("agents", AgentsController.heartbeat)
    update_agent_metadata = _ControllerMethod("agents", AgentsController.update_agent_metadata)
    process_exited = _ControllerMethod("agents", AgentsController.process_exited)
    agent = _ControllerMethod("agents", AgentsController.agent)
    agents = _ControllerMethod("agents", AgentsController.agents)
    agent_tasks = _ControllerMethod("agents", AgentsController.agent_tasks)

    submit = _ControllerMethod("tasks", TasksController.submit)
    assign_task = _ControllerMethod("tasks", TasksController.assign_task)
    wait_for_task = _ControllerMethod("tasks", TasksController.wait_for_task)
    complete_task = _ControllerMethod("tasks", TasksController.complete_task)
    fail_task = _ControllerMethod("tasks", TasksController.fail_task)
    report_progress = _ControllerMethod("tasks", TasksController.report_progress)
    cancel_task = _ControllerMethod("tasks", TasksController.cancel_task)
    task = _ControllerMethod("tasks", TasksController.task)
    tasks = _ControllerMethod("tasks", TasksController.tasks)
    pending_tasks = _ControllerMethod("tasks", TasksController.pending_tasks)

    acquire_lock = _ControllerMethod("locks", LocksController.acquire_lock)
    acquire_locks = _ControllerMethod("locks", LocksController.acquire_locks)
    renew_lock = _ControllerMethod("locks", LocksController.renew_lock)
    release_lock = _ControllerMethod("locks", LocksController.release_lock)
    locks = _ControllerMethod("locks", LocksController.locks)

    agent_config = _ControllerMethod("config", ConfigController.agent_config)
    update_agent_config = _ControllerMethod("config", ConfigController.update_agent_config)
    config_defaults = _ControllerMethod("config", ConfigController.config_defaults)
    set_config_defaults = _ControllerMethod("config", ConfigController.set_config_defaults)

    stats = _ControllerMethod("observation", ObservationController.stats)
    events = _ControllerMethod("observation", ObservationController.events)
    health = _ControllerMethod("observation", ObservationController.health)

    identify = _ControllerMethod("tokens", Tokens.identify)
    authenticate = _ControllerMethod("tokens", Tokens.authenticate)

    # ------------------------------------------------------------- lifecycle

    def start(self) -> Orchestrator:
        """Start the actors (and the ticker); returns self."""
        if self.actors.started:
            return self
        if self.actors.refs:
            raise Unavailable("a stopped Orchestrator cannot be restarted; create a new one")
        try:
            self._start_actors()
        except BaseException:
            # Half started is worse than not started: stop what did start, so a caller
            # that handles the error is not left with live actors and threads.
            for ref in self.actors.refs:
                with contextlib.suppress(pykka.Timeout, pykka.ActorDeadError):
                    ref.stop(block=True, timeout=self.settings.ask_timeout_s)
            self.actors.stand_in(STOPPED)
            raise
        self.actors.started = True
        self.actors.started_at = self.clock.time()
        if self.settings.gc_thresholds is not None:
            gc_tuning.hold(self.settings.gc_thresholds)
        self.dependencies.start()
        if self._auto_tick:
            self._ticker = threading.Thread(target=self._tick_loop, name="orch-ticker", daemon=True)
            self._ticker.start()
        return self

    def _start_actors(self) -> None:
        s = self.settings
        actors = self.actors
        broker_ref = LockBroker.start(
            self.store, self.clock, self.events_log, max_ttl_s=s.lock_max_ttl_s
        )
        scheduler_gate = ActorGate()
        scheduler_ref = Scheduler.start(
            self.store, self.clock, self.events_log, s, actors.task_view, scheduler_gate
        )
        supervisor_ref = Supervisor.start(
            self.store, self.clock, self.events_log, self.directory, s
        )
        health_ref = HealthMonitor.start(
            self.directory, self.clock, s, check_interval_s=min(1.0, s.heartbeat_interval_s / 2)
        )
        actors.refs = [supervisor_ref, scheduler_ref, broker_ref, health_ref]
        actors.connect(
            supervisor=cast("SupervisorProxy", supervisor_ref.proxy()),
            scheduler=cast("SchedulerProxy", scheduler_ref.proxy()),
            scheduler_gate=scheduler_gate,
            broker=cast("LockBrokerProxy", broker_ref.proxy()),
            health=cast("HealthMonitorProxy", health_ref.proxy()),
        )
        pykka.get_all(
            [
                actors.scheduler.set_lock_broker(actors.broker),
                actors.broker.set_scheduler(actors.scheduler),
                actors.supervisor.wire(actors.scheduler, actors.broker, scheduler_gate),
            ],
            timeout=s.ask_timeout_s,
        )
        takes_work = actors.supervisor.recover().get(timeout=s.ask_timeout_s)
        actors.scheduler.recover_orphans(takes_work).get(timeout=s.ask_timeout_s)
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
            self.intake_view,
        )
        self.actors.refs.append(intake_ref)
        self.actors.intake_view = self.intake_view
        intake = self.actors.intake = cast("IntakeProxy", intake_ref.proxy())
        intake.set_scheduler(self.actors.scheduler).get(timeout=s.ask_timeout_s)
        intake.recover().get(timeout=s.ask_timeout_s)

        def forward(event: Event) -> None:
            if event.type in INTAKE_EVENTS and todo_task_id(event.data.get("task_id")):
                with contextlib.suppress(pykka.ActorDeadError):
                    intake.task_event.defer(
                        event.type, event.data["task_id"], event.data.get("agent_id")
                    )

        self.events_log.subscribe(forward)

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop this orchestrator's actors only (never the process-wide registry)."""
        if not self.actors.started:
            return
        self.actors.started = False
        if self.settings.gc_thresholds is not None:
            gc_tuning.release()  # first, so that a failure below cannot keep the hold
        self._stopping.set()
        self.dependencies.stop()
        if self._ticker is not None:
            self._ticker.join(timeout_s)
        try:
            self.actors.supervisor.stop_children(timeout_s).get(timeout=timeout_s + 1)
        except (pykka.Timeout, pykka.ActorDeadError):
            logger.warning("agents did not all stop within %.1fs", timeout_s)
        for ref in self.actors.refs:
            with contextlib.suppress(pykka.Timeout, pykka.ActorDeadError):
                ref.stop(block=True, timeout=timeout_s)
        self.actors.stand_in(STOPPED)
        self.store.close()

    def interrupt_waits(self) -> None:
        """Answer long waits now (lock waits with 503, event polls empty): shutdown is coming.

        Nothing waiting has been granted or changed, so refusing it loses nothing; the
        HTTP server calls this before draining so that draining takes milliseconds.
        """
        self.events_log.close()
        if self.actors.started:
            with contextlib.suppress(pykka.ActorDeadError):
                broker = self.actors.broker
                self.actors.calls.ask(broker.refuse_waiters("the orchestrator is shutting down"))

    def __enter__(self) -> Orchestrator:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def tick(self) -> None:
        """Let time-driven work happen now: retries, time-outs, leases, health, restarts."""
        self.actors.check_running()
        a = self.actors
        futures = [a.supervisor.tick(), a.scheduler.tick(), a.broker.tick()]
        futures.append(a.health.tick(force=True))
        if a.intake is not None:
            futures.append(a.intake.tick())
        self.idempotency.tick()
        a.calls.ask_all(futures)

    def _ticking(self) -> list[Any]:
        """The actors time drives, in the order they are ticked."""
        a = self.actors
        actors = [a.supervisor, a.scheduler, a.broker, a.health]
        if a.intake is not None:
            actors.append(a.intake)
        return actors

    def _tick_loop(self) -> None:
        actors = self._ticking()
        outstanding: list[pykka.Future[Any] | None] = [None] * len(actors)
        while not self._stopping.wait(self.settings.tick_interval_s):
            try:
                for i, actor in enumerate(actors):
                    # Skip a beat of a busy actor rather than pile its ticks up, but
                    # only its own: an Intake stuck on a hung TODO service must not
                    # stop restarts, time-outs, leases and health checks.
                    if outstanding[i] is None or _done(outstanding[i]):
                        outstanding[i] = actor.tick()
                self.idempotency.tick()
            except pykka.ActorDeadError:
                return

    def recover_from_failed_writes(self) -> None:
        """Make the actors rebuild from the store: a write behind an answer failed.

        The Scheduler and Supervisor apply a change before its commit; one that did
        not commit must not stay in memory. ``Calls.settle`` calls this when a write
        it waited for failed, and so does a transport that held an answer for its
        writes itself (``Durable.result_holding``).
        """
        with contextlib.suppress(pykka.ActorDeadError):
            self.actors.scheduler.check_writes.defer()
            self.actors.supervisor.check_writes.defer()


def _done(future: pykka.Future[Any]) -> bool:
    try:
        future.get(timeout=0)
    except pykka.Timeout:
        return False
    except Exception:
        return True
    return True
