"""``evolve``: ``dataclasses.replace`` for the records actors change on hot paths.

``dataclasses.replace`` re-derives the fields and goes through ``__init__`` on every
call; on the task cycle it was the largest single cost in the Scheduler's thread
(four copies per task, ~18 µs each against ~7 µs here; bench/README.md). The records
it copies are frozen, slotted and have no ``__post_init__`` (checked below, at
import), so copying the slots is the same result.
"""

from __future__ import annotations

from typing import Any, TypeVar

from orch.model import AgentRecord, Task

R = TypeVar("R", Task, AgentRecord)

for _cls in (Task, AgentRecord):
    # evolve skips __init__; a record that validates itself must go through replace.
    if hasattr(_cls, "__post_init__"):
        raise TypeError(f"{_cls.__name__} validates itself; evolve would skip that")

_set = object.__setattr__


def evolve(record: R, **changes: Any) -> R:
    """A copy of ``record`` with ``changes`` (field names are not checked: callers own them)."""
    cls = type(record)
    new = object.__new__(cls)
    for name in cls.__slots__:
        _set(new, name, changes[name] if name in changes else getattr(record, name))
    return new
