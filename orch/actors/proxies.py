"""Typed proxies: what type checkers see through each actor's proxy (``pykka.typing``).

A Pykka proxy answers any attribute with ``Any``. Declared here, the Mopidy way
(``CoreProxy(ActorMemberMixin, pykka.ActorProxy[Core])``), each message is seen with
its own arguments and a ``Future`` of its answer, and its ``defer`` with the same
arguments (``orch.runtime.message``: ``pykka.typing.proxy_method`` with
``defer``). The classes are never built: a proxy is made by Pykka (``ref.proxy()``)
or, for agents, by the runtime (``LightProxy``), and cast to its class here. Actor
modules import this module only for type checking (it imports them);
``tests/unit/test_proxies.py`` checks that each class names exactly its actor's
messages.
"""

from __future__ import annotations

import pykka
from pykka.typing import ActorMemberMixin

from orch.actors.agent import AgentActor
from orch.actors.health import HealthMonitor
from orch.actors.intake import Intake
from orch.actors.lock_broker import LockBroker
from orch.actors.scheduler import Scheduler
from orch.actors.supervisor import Supervisor
from orch.runtime import message


class SupervisorProxy(ActorMemberMixin, pykka.ActorProxy[Supervisor]):
    """The Supervisor: registration and supervision of agents."""

    check_writes = message(Supervisor.check_writes)
    child_failed = message(Supervisor.child_failed)
    config_defaults = message(Supervisor.config_defaults)
    deregister = message(Supervisor.deregister)
    recover = message(Supervisor.recover)
    register = message(Supervisor.register)
    restarting = message(Supervisor.restarting)
    revive = message(Supervisor.revive)
    set_config_defaults = message(Supervisor.set_config_defaults)
    stop_children = message(Supervisor.stop_children)
    tick = message(Supervisor.tick)
    watch_start = message(Supervisor.watch_start)
    wire = message(Supervisor.wire)


class AgentProxy(ActorMemberMixin, pykka.ActorProxy[AgentActor]):
    """One agent's actor, reached through a ``LightProxy`` (``orch/runtime/proxy.py``)."""

    assign = message(AgentActor.assign)
    check_liveness = message(AgentActor.check_liveness)
    describe = message(AgentActor.describe)
    heartbeat = message(AgentActor.heartbeat)
    process_exited = message(AgentActor.process_exited)
    release = message(AgentActor.release)
    retire = message(AgentActor.retire)
    start_agent = message(AgentActor.start_agent)
    stop_agent = message(AgentActor.stop_agent)
    sync_assignments = message(AgentActor.sync_assignments)
    task_crashed = message(AgentActor.task_crashed)
    task_done = message(AgentActor.task_done)
    undo_start = message(AgentActor.undo_start)
    update_config = message(AgentActor.update_config)
    update_metadata = message(AgentActor.update_metadata)


class SchedulerProxy(ActorMemberMixin, pykka.ActorProxy[Scheduler]):
    """The Scheduler: tasks, the queue and assignments."""

    agent_gone = message(Scheduler.agent_gone)
    agent_ready = message(Scheduler.agent_ready)
    agent_unready = message(Scheduler.agent_unready)
    assignment_refused = message(Scheduler.assignment_refused)
    cancel = message(Scheduler.cancel)
    check_writes = message(Scheduler.check_writes)
    complete = message(Scheduler.complete)
    complete_from_agent = message(Scheduler.complete_from_agent)
    fail = message(Scheduler.fail)
    fail_from_agent = message(Scheduler.fail_from_agent)
    get = message(Scheduler.get)
    list_tasks = message(Scheduler.list_tasks)
    mark_running = message(Scheduler.mark_running)
    pending = message(Scheduler.pending)
    recover_orphans = message(Scheduler.recover_orphans)
    report_progress = message(Scheduler.report_progress)
    resources_freed = message(Scheduler.resources_freed)
    set_lock_broker = message(Scheduler.set_lock_broker)
    stats = message(Scheduler.stats)
    submit = message(Scheduler.submit)
    tasks_of = message(Scheduler.tasks_of)
    tick = message(Scheduler.tick)
    watch = message(Scheduler.watch)


class LockBrokerProxy(ActorMemberMixin, pykka.ActorProxy[LockBroker]):
    """The LockBroker: every lock."""

    acquire = message(LockBroker.acquire)
    cancel_wait = message(LockBroker.cancel_wait)
    holders_of = message(LockBroker.holders_of)
    locks = message(LockBroker.locks)
    refuse_waiters = message(LockBroker.refuse_waiters)
    release = message(LockBroker.release)
    release_agent = message(LockBroker.release_agent)
    release_task = message(LockBroker.release_task)
    renew = message(LockBroker.renew)
    set_scheduler = message(LockBroker.set_scheduler)
    stats = message(LockBroker.stats)
    tick = message(LockBroker.tick)
    try_acquire_for_task = message(LockBroker.try_acquire_for_task)


class HealthMonitorProxy(ActorMemberMixin, pykka.ActorProxy[HealthMonitor]):
    """The HealthMonitor: missed heartbeats."""

    tick = message(HealthMonitor.tick)


class IntakeProxy(ActorMemberMixin, pykka.ActorProxy[Intake]):
    """Intake: work pulled from the TODO service."""

    recover = message(Intake.recover)
    set_scheduler = message(Intake.set_scheduler)
    status = message(Intake.status)
    task_event = message(Intake.task_event)
    tick = message(Intake.tick)
