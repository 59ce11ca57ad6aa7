"""The published view of every agent, read without asking any actor.

The heartbeat and completion paths must not pay an actor round trip just to find an
agent and check its token, so the Supervisor keeps this directory. Each entry is an
immutable snapshot. Writers are few and fixed: the Supervisor adds and removes
entries; an agent's own AgentActor replaces its record (``publish``) and nothing else.
Readers take entries lock-free (a dict read is atomic in CPython); writers take a
small lock so an actor being retired cannot republish over its removal.
"""

from __future__ import annotations

import collections
import threading
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from orch.model import AgentRecord, AgentState

if TYPE_CHECKING:
    from orch.actors.proxies import AgentProxy
    from orch.runtime import ActorGate


@dataclass(frozen=True, slots=True)
class Entry:
    """One agent: its latest record, its live actor (if any) and its credential."""

    record: AgentRecord
    actor: AgentProxy | None  # None while the agent is failed or awaiting restart
    generation: int
    token_hash: str = field(repr=False)  # as good as the token to a reader: never shown
    gate: ActorGate | None = None  # for direct calls; None without a live actor


class Directory:
    """Agent id -> ``Entry``; see the module docstring for who may write."""

    def __init__(self) -> None:
        self._entries: dict[str, Entry] = {}
        self._by_token_hash: dict[str, str] = {}
        self._write_lock = threading.Lock()
        # Kept as entries change so /stats and /health need no pass over 10,000 agents
        # (a pass cost ~4 ms; a poller of /stats slowed assignment at scale).
        self._by_state: collections.Counter[AgentState] = collections.Counter()
        self._restarts = 0

    def get(self, agent_id: str) -> Entry | None:
        return self._entries.get(agent_id)

    def agent_with_token_hash(self, token_hash: str) -> str | None:
        """The id of the agent whose credential hashes to ``token_hash`` (O(1))."""
        return self._by_token_hash.get(token_hash)

    def entries(self) -> list[Entry]:
        return list(self._entries.values())

    def counts(self) -> tuple[dict[AgentState, int], int, int]:
        """``(agents by state, total restarts, total agents)``, in O(states)."""
        with self._write_lock:
            return dict(self._by_state), self._restarts, len(self._entries)

    def _count(self, old: AgentRecord | None, new: AgentRecord | None) -> None:
        # Under _write_lock.
        if old is not None:
            self._by_state[old.state] -= 1
            self._restarts -= old.restarts
        if new is not None:
            self._by_state[new.state] += 1
            self._restarts += new.restarts

    def __len__(self) -> int:
        return len(self._entries)

    def put(self, entry: Entry) -> None:
        """Add or replace an entry (Supervisor only)."""
        with self._write_lock:
            old = self._entries.get(entry.record.agent_id)
            if old is not None:
                self._by_token_hash.pop(old.token_hash, None)
            self._count(old.record if old is not None else None, entry.record)
            self._entries[entry.record.agent_id] = entry
            self._by_token_hash[entry.token_hash] = entry.record.agent_id

    def remove(self, agent_id: str) -> None:
        """Drop an entry (Supervisor only)."""
        with self._write_lock:
            old = self._entries.pop(agent_id, None)
            if old is not None:
                self._by_token_hash.pop(old.token_hash, None)
                self._count(old.record, None)

    def attach_actor(
        self, agent_id: str, generation: int, actor: AgentProxy, gate: ActorGate | None = None
    ) -> None:
        """Record the proxy (and gate) of a just-started actor without touching its record."""
        with self._write_lock:
            entry = self._entries.get(agent_id)
            if entry is not None and entry.generation == generation:
                self._entries[agent_id] = replace(entry, actor=actor, gate=gate)

    def publish(self, generation: int, record: AgentRecord) -> bool:
        """Replace the record of the agent's current generation (its AgentActor only).

        Returns False, changing nothing, when the publisher is no longer the agent's
        current actor (it was restarted, retired or deregistered meanwhile).
        """
        with self._write_lock:
            entry = self._entries.get(record.agent_id)
            if entry is None or entry.generation != generation:
                return False
            self._count(entry.record, record)
            # Built directly: ``dataclasses.replace`` cost more than the rest of a
            # heartbeat's bookkeeping (profile in bench/README.md).
            self._entries[record.agent_id] = Entry(
                record, entry.actor, entry.generation, entry.token_hash, entry.gate
            )
            return True
