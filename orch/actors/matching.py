"""The Scheduler's index: pending tasks by requirement, free agents per requirement.

Matching must not cost more as the fleet or the queue grows. Tasks are grouped by
their requirement (agent type, capability set); each group is a heap ordered by
priority then submission order. For each group the index keeps a heap of the agents
able to serve it, ordered least loaded then least recently assigned. One dispatch
step looks only at the head of each group, so its cost is O(groups · log n), and the
number of distinct requirements is small in practice. Heaps use lazy deletion:
stale entries are recognised by a version stamp and skipped when they surface.

Owned by the Scheduler actor; not thread-safe by design.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

Requirement = tuple[str | None, frozenset[str]]
MAX_IDLE_REQUIREMENTS = 256


@dataclass(slots=True)
class AgentSlot:
    """The Scheduler's view of one schedulable agent."""

    agent_id: str
    generation: int
    actor: Any  # AgentActor proxy
    agent_type: str
    capabilities: frozenset[str]
    max_slots: int
    task_timeout_s: float
    load: int = 0
    last_assigned: int = 0
    ready: bool = True
    version: int = 0
    requirements: list[Requirement] = field(default_factory=list)
    gate: Any = None  # the actor's Gate: messages run without a hand-off when it is idle
    # In-process agents get an assignment the moment they accept it, so it is leased
    # ``running`` at once (no delivery report, no second write).
    in_process: bool = False

    def serves(self, requirement: Requirement) -> bool:
        agent_type, capabilities = requirement
        return (agent_type is None or agent_type == self.agent_type) and (
            capabilities <= self.capabilities
        )

    @property
    def free(self) -> bool:
        return self.ready and self.load < self.max_slots


class Matcher:
    """Pairs the best pending task with the best free agent; see the module docstring."""

    def __init__(self, is_pending: Callable[[str, int], bool]) -> None:
        self._is_pending = is_pending
        self._queues: dict[Requirement, list[tuple[int, int, str]]] = {}
        self._pools: dict[Requirement, list[tuple[int, int, str, int]]] = {}
        self._agents: dict[str, AgentSlot] = {}
        self._assign_counter = 0

    # ----------------------------------------------------------------- agents

    def agent(self, agent_id: str) -> AgentSlot | None:
        return self._agents.get(agent_id)

    def agents(self) -> Iterator[AgentSlot]:
        return iter(self._agents.values())

    def put_agent(self, slot: AgentSlot) -> None:
        """Add an agent or replace its view (new generation, new config)."""
        old = self._agents.get(slot.agent_id)
        if old is not None:
            slot.load = old.load
            slot.last_assigned = old.last_assigned
            slot.version = old.version + 1
        slot.requirements = [r for r in self._pools if slot.serves(r)]
        self._agents[slot.agent_id] = slot
        self._offer(slot)

    def remove_agent(self, agent_id: str) -> AgentSlot | None:
        return self._agents.pop(agent_id, None)  # its heap entries go stale

    def set_ready(self, slot: AgentSlot, ready: bool) -> None:
        slot.ready = ready
        self._changed(slot)

    def set_load(self, slot: AgentSlot, load: int, *, assigned: bool = False) -> None:
        slot.load = load
        if assigned:
            self._assign_counter += 1
            slot.last_assigned = self._assign_counter
        self._changed(slot)

    def _changed(self, slot: AgentSlot) -> None:
        slot.version += 1
        self._offer(slot)

    def _offer(self, slot: AgentSlot) -> None:
        if not slot.free:
            return
        entry = (slot.load, slot.last_assigned, slot.agent_id, slot.version)
        for requirement in slot.requirements:
            pool = self._pools[requirement]
            heapq.heappush(pool, entry)
            if len(pool) > 4 * len(self._agents) + 64:
                self._rebuild_pool(requirement)

    def _rebuild_pool(self, requirement: Requirement) -> None:
        pool = [
            (s.load, s.last_assigned, s.agent_id, s.version)
            for s in self._agents.values()
            if s.free and s.serves(requirement)
        ]
        heapq.heapify(pool)
        self._pools[requirement] = pool

    def _best_agent(self, requirement: Requirement) -> AgentSlot | None:
        pool = self._pools[requirement]
        while pool:
            _, _, agent_id, version = pool[0]
            slot = self._agents.get(agent_id)
            if slot is not None and slot.version == version and slot.free:
                return slot
            heapq.heappop(pool)
        return None

    # ------------------------------------------------------------------ tasks

    def push_task(self, key: str, seq: int, priority: int, requirement: Requirement) -> None:
        """Queue a pending task; higher ``priority`` first, then lower ``seq``."""
        if requirement not in self._pools:
            self._add_requirement(requirement)
        heapq.heappush(self._queues.setdefault(requirement, []), (-priority, seq, key))

    def _add_requirement(self, requirement: Requirement) -> None:
        if len(self._pools) >= MAX_IDLE_REQUIREMENTS:
            self._forget_idle_requirements()
        self._pools[requirement] = []
        for slot in self._agents.values():
            if slot.serves(requirement):
                slot.requirements.append(requirement)
        self._rebuild_pool(requirement)

    def _forget_idle_requirements(self) -> None:
        idle = [r for r in self._pools if not self._queues.get(r)]
        for requirement in idle:
            del self._pools[requirement]
            self._queues.pop(requirement, None)
        for slot in self._agents.values():
            slot.requirements = [r for r in slot.requirements if r in self._pools]

    def next_match(self) -> tuple[str, AgentSlot] | None:
        """Remove and return the best (task key, agent) pair, or None.

        The task leaves the queue; the caller either assigns it (and reports the new
        load with ``set_load``) or pushes it back / parks it.
        """
        best: tuple[tuple[int, int, str], Requirement, AgentSlot] | None = None
        for requirement, queue in list(self._queues.items()):
            while queue and not self._is_pending(queue[0][2], queue[0][1]):
                heapq.heappop(queue)
            if not queue:
                del self._queues[requirement]
                continue
            if best is not None and queue[0] >= best[0]:
                continue
            slot = self._best_agent(requirement)
            if slot is not None:
                best = (queue[0], requirement, slot)
        if best is None:
            return None
        head, requirement, slot = best
        heapq.heappop(self._queues[requirement])
        return head[2], slot
