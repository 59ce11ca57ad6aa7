"""``orch/actors/proxies.py``: each typed proxy names exactly its actor's messages,
with the actor's own signatures, so type checkers see every message and no other."""

from __future__ import annotations

import inspect

import pykka
import pytest

from orch.actors import proxies
from orch.runtime import messages_of

TYPED = [
    (proxies.AgentProxy, "AgentActor"),
    (proxies.SupervisorProxy, "Supervisor"),
    (proxies.SchedulerProxy, "Scheduler"),
    (proxies.LockBrokerProxy, "LockBroker"),
    (proxies.HealthMonitorProxy, "HealthMonitor"),
    (proxies.IntakeProxy, "Intake"),
]


@pytest.mark.parametrize(("typed", "actor_name"), TYPED, ids=[name for _, name in TYPED])
def test_a_typed_proxy_declares_every_message_of_its_actor(typed, actor_name):
    (actor,) = [
        base.__args__[0]
        for base in typed.__orig_bases__
        if getattr(base, "__origin__", None) is pykka.ActorProxy
    ]
    assert actor.__name__ == actor_name
    declared = {
        name: value
        for name, value in vars(typed).items()
        if not name.startswith("_") and inspect.isfunction(value)
    }
    assert set(declared) == messages_of(actor), "declare each message with message()"
    for name, value in declared.items():
        assert value is getattr(actor, name), f"{typed.__name__}.{name} is not {actor_name}'s"
