"""orch/actors/records.py: ``evolve`` gives what ``dataclasses.replace`` gives."""

from __future__ import annotations

import dataclasses

import pytest

from orch.actors.records import evolve
from orch.model import AgentRecord, AgentState, TaskState
from tests.store.records import make_agent, make_task


@pytest.mark.parametrize(
    "changes",
    [{}, {"state": TaskState.RUNNING}, {"attempts": 3, "agent_id": None, "result": {"ok": 1}}],
)
def test_a_task_evolved_equals_the_task_replaced(changes):
    task = make_task("t1", seq=7)
    evolved = evolve(task, **changes)
    assert evolved == dataclasses.replace(task, **changes)
    assert type(evolved) is type(task)
    assert evolved is not task


def test_an_agent_record_evolved_equals_the_record_replaced():
    record = make_agent("a1")
    changes = {"state": AgentState.BUSY, "restarts": 2}
    assert evolve(record, **changes) == dataclasses.replace(record, **changes)


def test_the_original_is_left_as_it_was():
    task = make_task("t1", seq=7)
    before = dataclasses.asdict(task)
    evolve(task, state=TaskState.COMPLETED, attempts=9)
    assert dataclasses.asdict(task) == before


def test_every_field_is_copied_including_ones_added_later():
    # evolve walks ``__slots__``; a record that gained a field without a slot would
    # silently lose it in copies.
    for cls in (AgentRecord, type(make_task("t", seq=1))):
        assert {f.name for f in dataclasses.fields(cls)} == set(cls.__slots__)
