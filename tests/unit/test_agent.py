"""orch/agent.py: an in-process agent is its own factory, so a restart builds a fresh one."""

from __future__ import annotations

from typing import Any

import pytest

from orch import Agent


class Counting(Agent):
    agent_type = "breakdown"
    capabilities = frozenset({"split"})

    def __init__(self, agent_id: str, *, step: int = 1) -> None:
        super().__init__(agent_id)
        self.step = step
        self.handled = 0

    def handle(self, task: Any) -> Any:
        self.handled += self.step
        return self.handled


def test_the_factory_builds_a_fresh_agent_with_the_same_arguments():
    original = Counting("c1", step=5)
    original.handle(None)
    fresh = original.factory()()
    assert type(fresh) is Counting and fresh is not original
    assert (fresh.agent_id, fresh.step, fresh.handled) == ("c1", 5, 0)  # state is not copied
    again = original.factory()()
    assert again is not fresh and again.handled == 0


def test_a_fresh_agent_is_its_own_factory_too():
    fresh = Counting("c1", step=2).factory()()
    assert fresh.factory()().step == 2


def test_the_defaults_describe_a_plain_one_at_a_time_agent():
    class Plain(Agent):
        def handle(self, task: Any) -> Any:
            return None

    plain = Plain("p1")
    assert (plain.agent_type, plain.capabilities, plain.max_concurrent_tasks) == (
        "implementation",
        frozenset(),
        1,
    )
    plain.on_start()
    plain.on_stop()


def test_an_agent_without_handle_cannot_be_built():
    class Idle(Agent):
        pass

    with pytest.raises(TypeError, match="handle"):
        Idle("i1")  # type: ignore[abstract]
