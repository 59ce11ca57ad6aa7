"""``AgentsController``: registering agents, their lifecycle, heartbeats and listings.

In-process agents (``attach``) and remote ones (``register_agent``) are registered the
same way and both become supervised AgentActors; only a remote agent gets a token.
Reads come from the Supervisor's published ``Directory``, without an ask; a
heartbeat is one call to the agent's own actor, run through its gate when it is idle.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from orch.agent import Agent
from orch.clock import Clock
from orch.config import Settings
from orch.controllers.base import Actors
from orch.errors import Invalid
from orch.events import Events
from orch.model import (
    MAX_CAPABILITIES,
    AgentRecord,
    AgentState,
    validate_id,
    validate_int,
    validate_names,
)
from orch.store.base import PendingWrite
from orch.tokens import hash_token, new_token
from orch.validation import json_copy, parse_enum, validate_bool


class AgentsController:
    """The agents' side of the embedded API (``Orchestrator.register_agent`` and kin)."""

    def __init__(self, actors: Actors, settings: Settings, events: Events, clock: Clock) -> None:
        self._actors = actors
        # Only to tell when a heartbeat came, from the monotonic reading the record holds.
        self._clock = clock
        self._calls = actors.calls
        self._settings = settings
        self._events = events

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
        metadata = json_copy("metadata", dict(metadata or {}), self._settings.max_metadata_bytes)
        if project_id is not None:
            validate_id("project_id", project_id)
        overrides = {}
        if max_concurrent_tasks is not None:
            overrides["max_concurrent_tasks"] = validate_int(
                "max_concurrent_tasks", max_concurrent_tasks, 1, 1024
            )
        token = new_token()
        self._calls.ask(
            self._actors.supervisor.register(
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

    def start_agent(
        self, agent_id: str, *, answer_writes: list[PendingWrite] | None = None
    ) -> dict[str, Any]:
        """Admit an agent to scheduling: status ``started`` or ``already_active``.

        ``answer_writes``: only for a transport that holds the answer itself until it
        is stored (``Calls.settle``); left out, the answer is stored when it returns.
        """
        entry = self._actors.entry(agent_id)
        if entry.actor is None:
            status = self._calls.ask(self._actors.supervisor.revive(agent_id), answer_writes)
        else:
            status = self._actors.agent_call(entry, "start_agent", answer_writes=answer_writes)
        return {"agent_id": agent_id, "status": status}

    def stop_agent(self, agent_id: str, drain: bool = True) -> dict[str, Any]:
        """Stop an agent: ``stopping`` while it drains, then ``stopped``."""
        validate_bool("drain", drain)
        status = self._calls.ask(self._actors.live_entry(agent_id).actor.stop_agent(drain))
        return {"agent_id": agent_id, "status": status}

    def deregister_agent(self, agent_id: str) -> dict[str, Any]:
        """Remove an agent; its tasks are requeued and its locks released."""
        validate_id("agent_id", agent_id)
        self._calls.ask(self._actors.supervisor.deregister(agent_id))
        return {"agent_id": agent_id, "status": "deregistered"}

    def update_agent_metadata(self, agent_id: str, metadata: Mapping[str, Any]) -> dict[str, Any]:
        """Replace an agent's ``metadata``; returns the agent (a launcher's pid, host, ...)."""
        if not isinstance(metadata, Mapping):
            raise Invalid("metadata", "must be an object")
        copy = json_copy("metadata", dict(metadata), self._settings.max_metadata_bytes)
        entry = self._actors.live_entry(agent_id)
        record = self._calls.ask(entry.actor.update_metadata(copy))
        return record.to_dict(self._actors.task_id_of)

    def process_exited(
        self,
        agent_id: str,
        *,
        restarting: bool,
        exit_code: int | None = None,
        signal: str | None = None,
    ) -> dict[str, Any]:
        """A launcher reports that the agent's process ended (exit status or signal).

        Its tasks are failed with that as the error and retried by policy; with
        ``restarting`` the restart is counted, else the agent is ``failed``
        (``AgentActor.process_exited``). Returns ``{agent_id, status, restarts}``.
        """
        validate_bool("restarting", restarting)
        if (exit_code is None) == (signal is None):
            raise Invalid("exit_code", "give exactly one of exit_code and signal")
        if exit_code is not None:
            validate_int("exit_code", exit_code, -(2**31), 2**31 - 1)
            error = f"process exited with status {exit_code}"
        else:
            validate_id("signal", signal)
            error = f"process killed by {signal}"
        entry = self._actors.live_entry(agent_id)
        record = self._calls.ask(entry.actor.process_exited(error, restarting))
        return {"agent_id": agent_id, "status": str(record.state), "restarts": record.restarts}

    def heartbeat(
        self, agent_id: str, *, answer_writes: list[PendingWrite] | None = None
    ) -> dict[str, Any]:
        """Prove liveness; returns state, current assignments and config version.

        ``answer_writes``: only for a transport that holds the answer itself until it
        is stored (``Calls.settle``); left out, the answer is stored when it returns.
        """
        entry = self._actors.live_entry(agent_id)
        answer = self._actors.agent_call(entry, "heartbeat", answer_writes=answer_writes)
        self._events.signal("heartbeat")
        return answer

    def agent(self, agent_id: str) -> dict[str, Any]:
        """One agent as plain data (never its token)."""
        return self._describe(self._actors.entry(agent_id).record, self._wall_offset())

    def _wall_offset(self) -> float:
        """Wall-clock time minus monotonic time, to a tenth of a second.

        Rounded so that two reads of an unchanged agent answer the same
        ``last_heartbeat_at`` (the two clocks are read a few microseconds apart), and
        read each time so that a wall clock set right is followed.
        """
        return round(self._clock.time() - self._clock.monotonic(), 1)

    def _describe(self, record: AgentRecord, wall_offset: float) -> dict[str, Any]:
        """The record as plain data, with when it last sent a heartbeat.

        The record keeps a monotonic reading, meaningless to a reader; it is given as
        wall-clock time like ``registered_at``. None when no heartbeat is expected (an
        in-process agent, or one not admitted yet, whose reading is 0).
        """
        out = record.to_dict(self._actors.task_id_of)
        seen = record.last_heartbeat
        out["last_heartbeat_at"] = (
            None if record.in_process or seen <= 0 else round(wall_offset + seen, 3)
        )
        return out

    def agents(
        self,
        *,
        state: str | None = None,
        agent_type: str | None = None,
        capability: str | None = None,
        limit: int = 1000,
        offset: int = 0,
    ) -> dict[str, Any]:
        """``{agents, total, active, matched}``: filtered, ordered by id, at most ``limit``
        agents from the ``offset``-th on (a page of a fleet too large for one answer).

        ``matched`` counts the agents the filters select, so a reader paging through
        them (the dashboard's virtual list) knows how many there are.
        """
        self._actors.check_running()  # not started, the Directory is not recovered: empty
        wanted_state = None if state is None else parse_enum(AgentState, "state", state)
        if agent_type is not None:
            validate_id("agent_type", agent_type)
        if capability is not None:
            validate_id("capability", capability)
        limit = validate_int("limit", limit, 1, 100_000)
        offset = validate_int("offset", offset, 0, 2**31 - 1)
        records = [e.record for e in self._actors.directory.entries()]
        active = sum(1 for r in records if r.state in (AgentState.IDLE, AgentState.BUSY))
        selected = [
            r
            for r in records
            if (wanted_state is None or r.state is wanted_state)
            and (agent_type is None or r.agent_type == agent_type)
            and (capability is None or capability in r.capabilities)
        ]
        selected.sort(key=lambda r: r.agent_id)
        wall_offset = self._wall_offset()
        return {
            "agents": [self._describe(r, wall_offset) for r in selected[offset : offset + limit]],
            "total": len(records),
            "active": active,
            "matched": len(selected),
        }

    def agent_tasks(self, agent_id: str) -> dict[str, Any]:
        """``{agent_id, tasks}``: the tasks an agent holds now."""
        self._actors.entry(agent_id)
        tasks = self._calls.ask(self._actors.scheduler.tasks_of(agent_id))
        return {"agent_id": agent_id, "tasks": [t.to_dict() for t in tasks]}
