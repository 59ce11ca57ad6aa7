"""Typed proxies: what type checkers see through each actor's proxy (``pykka.typing``).

A Pykka proxy answers any attribute with ``Any``. Declared here, the Mopidy way
(``CoreProxy(ActorMemberMixin, pykka.ActorProxy[Core])``), each message is seen with
its own arguments and a ``Future`` of its answer. The classes are never built: a
proxy is made by Pykka (``ref.proxy()``) or, for agents, by the runtime
(``LightProxy``), and cast to its class here. Actor modules import this module only
for type checking (it imports them); ``tests/unit/test_proxies.py`` checks that
each class names exactly its actor's messages.
"""

from __future__ import annotations

import pykka
from pykka.typing import ActorMemberMixin, proxy_method

from orch.actors.agent import AgentActor
from orch.actors.health import HealthMonitor
from orch.actors.intake import Intake
from orch.actors.lock_broker import LockBroker
from orch.actors.scheduler import Scheduler
from orch.actors.supervisor import Supervisor


class SupervisorProxy(ActorMemberMixin, pykka.ActorProxy[Supervisor]):
    """The Supervisor: registration and supervision of agents."""

    check_writes = proxy_method(Supervisor.check_writes)
    child_failed = proxy_method(Supervisor.child_failed)
    config_defaults = proxy_method(Supervisor.config_defaults)
    deregister = proxy_method(Supervisor.deregister)
    recover = proxy_method(Supervisor.recover)
    register = proxy_method(Supervisor.register)
    restarting = proxy_method(Supervisor.restarting)
    revive = proxy_method(Supervisor.revive)
    set_config_defaults = proxy_method(Supervisor.set_config_defaults)
    stop_children = proxy_method(Supervisor.stop_children)
    tick = proxy_method(Supervisor.tick)
    watch_start = proxy_method(Supervisor.watch_start)
    wire = proxy_method(Supervisor.wire)


class AgentProxy(ActorMemberMixin, pykka.ActorProxy[AgentActor]):
    """One agent's actor, reached through a ``LightProxy`` (``orch/runtime/proxy.py``)."""

    assign = proxy_method(AgentActor.assign)
    check_liveness = proxy_method(AgentActor.check_liveness)
    describe = proxy_method(AgentActor.describe)
    heartbeat = proxy_method(AgentActor.heartbeat)
    release = proxy_method(AgentActor.release)
    retire = proxy_method(AgentActor.retire)
    start_agent = proxy_method(AgentActor.start_agent)
    stop_agent = proxy_method(AgentActor.stop_agent)
    sync_assignments = proxy_method(AgentActor.sync_assignments)
    task_crashed = proxy_method(AgentActor.task_crashed)
    task_done = proxy_method(AgentActor.task_done)
    undo_start = proxy_method(AgentActor.undo_start)
    update_config = proxy_method(AgentActor.update_config)


class SchedulerProxy(ActorMemberMixin, pykka.ActorProxy[Scheduler]):
    """The Scheduler: tasks, the queue and assignments."""

    agent_gone = proxy_method(Scheduler.agent_gone)
    agent_ready = proxy_method(Scheduler.agent_ready)
    agent_unready = proxy_method(Scheduler.agent_unready)
    assignment_refused = proxy_method(Scheduler.assignment_refused)
    cancel = proxy_method(Scheduler.cancel)
    check_writes = proxy_method(Scheduler.check_writes)
    complete = proxy_method(Scheduler.complete)
    complete_from_agent = proxy_method(Scheduler.complete_from_agent)
    fail = proxy_method(Scheduler.fail)
    fail_from_agent = proxy_method(Scheduler.fail_from_agent)
    get = proxy_method(Scheduler.get)
    list_tasks = proxy_method(Scheduler.list_tasks)
    mark_running = proxy_method(Scheduler.mark_running)
    pending = proxy_method(Scheduler.pending)
    recover_orphans = proxy_method(Scheduler.recover_orphans)
    resources_freed = proxy_method(Scheduler.resources_freed)
    set_lock_broker = proxy_method(Scheduler.set_lock_broker)
    stats = proxy_method(Scheduler.stats)
    submit = proxy_method(Scheduler.submit)
    tasks_of = proxy_method(Scheduler.tasks_of)
    tick = proxy_method(Scheduler.tick)
    watch = proxy_method(Scheduler.watch)


class LockBrokerProxy(ActorMemberMixin, pykka.ActorProxy[LockBroker]):
    """The LockBroker: every lock."""

    acquire = proxy_method(LockBroker.acquire)
    cancel_wait = proxy_method(LockBroker.cancel_wait)
    holders_of = proxy_method(LockBroker.holders_of)
    locks = proxy_method(LockBroker.locks)
    refuse_waiters = proxy_method(LockBroker.refuse_waiters)
    release = proxy_method(LockBroker.release)
    release_agent = proxy_method(LockBroker.release_agent)
    release_task = proxy_method(LockBroker.release_task)
    renew = proxy_method(LockBroker.renew)
    set_scheduler = proxy_method(LockBroker.set_scheduler)
    stats = proxy_method(LockBroker.stats)
    tick = proxy_method(LockBroker.tick)
    try_acquire_for_task = proxy_method(LockBroker.try_acquire_for_task)


class HealthMonitorProxy(ActorMemberMixin, pykka.ActorProxy[HealthMonitor]):
    """The HealthMonitor: missed heartbeats."""

    tick = proxy_method(HealthMonitor.tick)


class IntakeProxy(ActorMemberMixin, pykka.ActorProxy[Intake]):
    """Intake: work pulled from the TODO service."""

    recover = proxy_method(Intake.recover)
    set_scheduler = proxy_method(Intake.set_scheduler)
    status = proxy_method(Intake.status)
    task_event = proxy_method(Intake.task_event)
    tick = proxy_method(Intake.tick)
