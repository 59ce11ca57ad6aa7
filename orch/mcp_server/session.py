"""``AgentSession``: the one agent an MCP session acts for, and what each tool does.

Plain, synchronous Python over the SDK (``orch.client``): the MCP layer
(``orch/mcp_server/tools.py``) only describes the tools and runs these methods on
worker threads. The heartbeats, the deduplication of assignments and the recovery of
a lost registration are ``AgentClient``'s; a session that joins an existing
registration (the launcher made it) uses ``JoinedAgentClient``, which adopts the
token it is given and, at the end, leaves the agent as it found it.

Every refusal from the orchestrator leaves here as a ``Refusal`` whose text says
what happened and what to do next (``orch/mcp_server/refusals.py``), so that the
model can act on it and the server never crashes on one.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from orch.client import AgentClient, AssignedTask
from orch.client.endpoint import DEFAULT_TIMEOUT_S
from orch.errors import Forbidden, OrchestratorError, Unauthorized
from orch.mcp_server.refusals import Refusal, explain

__all__ = ["AgentSession", "JoinedAgentClient", "Registration"]

logger = logging.getLogger("orch.mcp")

T = TypeVar("T")

#: The longest ``next_task`` wait: an MCP client's request time-out is often 60 s.
MAX_NEXT_TASK_WAIT_S = 50.0

#: Payload keys of a TODO-service task (``orch/actors/intake.py``), surfaced as fields.
_TODO_FIELDS = {
    "title": ("title",),
    "instructions": ("task_instruction", "instructions"),
    "verification": ("verification_instruction", "verification"),
}


class JoinedAgentClient(AgentClient):
    """An ``AgentClient`` for a registration made by someone else (``ORCH_AGENT_TOKEN``).

    It neither registers nor starts the agent: the token it is given proves who it
    is, and the first heartbeat checks it. On ``close`` it only stops heartbeating;
    stopping the agent is its owner's decision (a launcher restarts the process and
    the next session carries on with the same tasks). If the orchestrator forgets the
    agent (lost, removed) it does not register it again, as no joined ``AgentClient``
    does: it knows neither the agent's type nor its capabilities, and the id it took
    would keep the owner from registering it again. Unlike ``AgentClient(token=...)``
    it does not start when the orchestrator cannot be reached, so that the command
    ends with its exit status before a client is told it is ready.
    """

    def __init__(self, url: str, *, agent_id: str, token: str, **options: Any) -> None:
        super().__init__(url, agent_id=agent_id, token=token, **options)
        self._joined_token = token

    def start(self) -> JoinedAgentClient:
        if self._beater is not None:
            return self
        self._token = self._joined_token
        self._absorb(self.client.heartbeat(self.agent_id, token=self._joined_token))
        self._beater = threading.Thread(
            target=self._heartbeat_loop, name=f"heartbeat-{self.agent_id}", daemon=True
        )
        self._beater.start()
        return self

    def close(self, drain: bool | None = None, *, error: BaseException | None = None) -> None:
        if self._beater is None or self._halt.is_set():
            return
        with self._state:
            self._closing = True
            self._inbox.clear()
            self._state.notify_all()
        self._halt.set()
        self._wake.set()
        if self._beater is not threading.current_thread():
            self._beater.join(self.client.timeout_s + 1)
        for held in list(self._held_locks):
            held.abandon()
        self.client.close()


@dataclass(frozen=True)
class Registration:
    """What ``--register`` registers: the session then owns the agent and stops it."""

    agent_type: str = "implementation"
    capabilities: tuple[str, ...] = ()
    max_concurrent_tasks: int | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


class AgentSession:
    """One agent, for the life of one MCP session: its tools as methods.

    ``registration`` given: the session registers and starts the agent (with
    ``admin_token``), and stops it, drained, when it ends. Otherwise it joins the
    registration ``token`` proves and leaves it running when it ends.
    """

    def __init__(
        self,
        url: str,
        *,
        agent_id: str,
        token: str | None = None,
        admin_token: str | None = None,
        registration: Registration | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        if (token is None) == (registration is None):
            raise ValueError("give either the agent's token (join) or a registration")
        self.url = url
        self.agent_id = agent_id
        self.self_registered = registration is not None
        options: dict[str, Any] = {
            "admin_token": admin_token,
            "timeout_s": timeout_s,
            # Nothing in this process finishes a task once the session is over: at the
            # end its tasks go straight back to the queue, no attempt counted.
            "drain_timeout_s": 0.0,
        }
        if registration is not None:
            self.agent: AgentClient = AgentClient(
                url,
                agent_id=agent_id,
                agent_type=registration.agent_type,
                capabilities=registration.capabilities,
                max_concurrent_tasks=registration.max_concurrent_tasks,
                metadata={"client": "june-orchestrator mcp", **registration.metadata},
                **options,
            )
        else:
            assert token is not None
            self.agent = JoinedAgentClient(url, agent_id=agent_id, token=token, **options)
        self._grants: dict[str, dict[str, Any]] = {}  # resource -> this session's lease
        self._grants_guard = threading.Lock()

    # -------------------------------------------------------------- lifecycle

    def open(self) -> AgentSession:
        """Join or register, send the first heartbeat, heartbeat in the background.

        Raises the orchestrator's error (a refused token, an id in use, no server).
        """
        self.agent.start()
        logger.info(
            "acting for agent %r at %s (%s)",
            self.agent_id,
            self.url,
            "registered by this session" if self.self_registered else "joined",
        )
        return self

    def close(self) -> None:
        """End the session: a self-registered agent is stopped, drained; tasks it was
        given and did not finish go back to the queue without counting an attempt.

        Safe to call after ``open`` failed or was interrupted: an agent this session
        registered is still stopped; one it did not (an id in use) is left alone.
        """
        agent = self.agent
        if agent._beater is None:  # open() did not finish
            if self.self_registered and agent.registrations:
                with contextlib.suppress(OrchestratorError):
                    agent.client.stop_agent(self.agent_id, drain=False)
            agent.client.close()
            return
        agent.close(drain=True)
        logger.info("session of agent %r ended (%s)", self.agent_id, agent.status)

    # ------------------------------------------------------------------ tools

    def next_task(self, wait_s: float) -> dict[str, Any]:
        """The next assignment, waiting up to ``wait_s``; ``{"task": None}`` if none came."""
        wait_s = max(0.0, min(float(wait_s), MAX_NEXT_TASK_WAIT_S))
        task = self._call("next_task", lambda: self.agent.next_task(timeout=wait_s))
        if task is None:
            message = f"No task was assigned within {wait_s:g} s."
            state = self.agent.status
            if state in _NO_WORK_STATES:
                message += (
                    f" This agent is {state}, so the orchestrator gives it no work until "
                    f"it is started again (june-orchestrator agents start {self.agent_id}). "
                    "Do not keep calling next_task: stop and tell the user."
                )
            elif state == "busy":
                message += (
                    " You still hold tasks (agent_status lists them): finish them with "
                    "complete_task or fail_task before asking for more."
                )
            else:
                message += " Call next_task again to keep waiting, or stop if there is nothing"
                message += " else to do."
            return {"task": None, "message": message}
        return {
            "task": _describe(task),
            "next_steps": "Do the work the payload describes. Call report_progress now and "
            "then on long work; finish with complete_task (a result) or fail_task (an "
            "error), quoting this task_id. Before writing to a shared resource, hold its "
            "lock (acquire_lock) and pass its fencing token to whatever you write.",
        }

    def report_progress(
        self, task_id: int | str, message: str, percent: float | None
    ) -> dict[str, Any]:
        return self._call("report_progress", lambda: self.agent.progress(task_id, message, percent))

    def complete_task(self, task_id: int | str, result: Any) -> dict[str, Any]:
        return self._call("complete_task", lambda: self.agent.complete(task_id, result))

    def fail_task(self, task_id: int | str, error: str, retryable: bool) -> dict[str, Any]:
        answer = self._call("fail_task", lambda: self.agent.fail(task_id, error, retryable))
        if answer.get("status") == "failed":
            answer["note"] = "It will be retried after a backoff, possibly by another agent."
        elif answer.get("status") == "dead":
            answer["note"] = (
                "No attempts are left (or it was not retryable): it will not run again."
            )
        return answer

    def acquire_lock(self, resource: str, mode: str, ttl_s: float, wait_s: float) -> dict[str, Any]:
        _check_resource("acquire_lock", resource)
        agent = self.agent

        def acquire() -> Any:
            return agent.client.acquire_lock(
                self.agent_id,
                resource,
                token=agent._current_token(),
                mode=mode,
                ttl_s=ttl_s,
                wait_s=wait_s,
            )

        grant = _grant(self._call("acquire_lock", acquire))
        self._remember(grant)
        return {**grant, "next_steps": _LEASE_ADVICE}

    def renew_lock(self, resource: str, fencing_token: int, ttl_s: float) -> dict[str, Any]:
        _check_resource("renew_lock", resource)
        agent = self.agent
        grant = _grant(
            self._call(
                "renew_lock",
                lambda: agent.client.renew_lock(
                    self.agent_id, resource, fencing_token, ttl_s, token=agent._current_token()
                ),
            )
        )
        self._remember(grant)
        return grant

    def release_lock(self, resource: str, fencing_token: int) -> dict[str, Any]:
        _check_resource("release_lock", resource)
        agent = self.agent
        answer = self._call(
            "release_lock",
            lambda: agent.client.release_lock(
                self.agent_id, resource, fencing_token, token=agent._current_token()
            ),
        )
        with self._grants_guard:
            held = self._grants.get(resource)
            if held is not None and held["fencing_token"] == fencing_token:
                del self._grants[resource]
        return answer

    def list_locks(self) -> dict[str, Any]:
        """Every lock, this agent's first; without the admin token, this session's leases."""
        try:
            locks = self.agent.client.locks()
        except (Unauthorized, Forbidden):
            return {
                "held_by_you": self._session_grants() + self._task_leases(),
                "all_locks": None,
                "note": "The orchestrator lists all locks only with the admin token "
                "(ORCH_ADMIN_TOKEN in this MCP server's environment); shown are the "
                "leases this session took and has not seen end, and those granted with "
                "the tasks you hold.",
            }
        except OrchestratorError as exc:
            raise Refusal(
                explain("list_locks", exc, self.url, self.agent_id, joined=not self.self_registered)
            ) from None
        mine = [
            {**holder, "resource": lock["resource"]}
            for lock in locks
            for holder in lock["holders"]
            if holder["agent_id"] == self.agent_id
        ]
        return {"held_by_you": mine, "all_locks": locks}

    def agent_status(self) -> dict[str, Any]:
        """The agent's state, its tasks and config version, as the orchestrator sees it."""
        agent = self.agent
        held = self._call(
            "agent_status",
            lambda: agent.client.agent_tasks(self.agent_id, token=agent._current_token()),
        )
        last_beat = agent.recent_heartbeats_at[-1] if agent.recent_heartbeats_at else None
        status: dict[str, Any] = {
            "agent_id": self.agent_id,
            "state": agent.status,
            "config_version": agent.config_version,
            "heartbeat_interval_s": agent.heartbeat_interval_s,
            "seconds_since_heartbeat": None
            if last_beat is None
            else round(time.monotonic() - last_beat, 3),
            "registered_by_this_session": self.self_registered,
            "tasks": [_task_summary(task) for task in held.get("tasks", ())],
            "locks_taken_in_this_session": self._session_grants(),
        }
        if agent.last_error is not None:
            status["last_error"] = agent.last_error.message
        return status

    # ------------------------------------------------------------- helpers

    def _call(self, tool: str, call: Callable[[], T]) -> T:
        try:
            return call()
        except OrchestratorError as exc:
            raise Refusal(
                explain(tool, exc, self.url, self.agent_id, joined=not self.self_registered)
            ) from None

    def _task_leases(self) -> list[dict[str, Any]]:
        """The locks granted with the tasks this agent holds: the model holds them too,
        and without the admin token nothing else would tell it so."""
        agent = self.agent
        held = self._call(
            "list_locks",
            lambda: agent.client.agent_tasks(self.agent_id, token=agent._current_token()),
        )
        return [
            {**lease, "task_id": task["task_id"]}
            for task in held.get("tasks", ())
            for lease in _resources(task.get("resources") or (), task.get("fencing_tokens") or {})
        ]

    def _remember(self, grant: dict[str, Any]) -> None:
        with self._grants_guard:
            self._grants[grant["resource"]] = grant

    def _session_grants(self) -> list[dict[str, Any]]:
        """The leases this session took and has not seen end, their time left counted
        now: the model plans its renew_lock from ``expires_in_s``."""
        now = time.time()
        with self._grants_guard:
            for resource in [r for r, g in self._grants.items() if g["expires_at"] <= now]:
                del self._grants[resource]
            return [
                {**grant, "expires_in_s": round(grant["expires_at"] - now, 3)}
                for grant in self._grants.values()
            ]


#: Agent states in which no assignment can come, however long next_task waits.
_NO_WORK_STATES = frozenset({"stopped", "failed"})  # stopping: its tasks go on

_LEASE_ADVICE = (
    "Pass fencing_token with every write to this resource, renew_lock before expires_at "
    "if you need longer, and release_lock when done."
)


def _check_resource(tool: str, resource: str) -> None:
    """A name of dots only would travel as a path segment of its own ("..")."""
    if not resource.strip("."):
        raise Refusal(
            "a resource name cannot be only dots. Nothing was changed. "
            f"Correct `resource` and call {tool} again."
        )


def _grant(grant: Any) -> dict[str, Any]:
    return {
        "resource": grant.resource,
        "mode": grant.mode,
        "fencing_token": grant.fencing_token,
        "expires_at": grant.expires_at,
        "expires_in_s": round(max(0.0, grant.expires_at - time.time()), 3),
    }


def _todo_fields(payload: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for name, keys in _TODO_FIELDS.items():
        for key in keys:
            if isinstance(payload.get(key), str):
                out[name] = payload[key]
                break
    return out


def _describe(task: AssignedTask) -> dict[str, Any]:
    """An assignment as the model reads it: the TODO task's text first, then the rest."""
    return {
        "task_id": task.task_id,
        "attempt": task.attempt,
        **_todo_fields(task.payload),
        "payload": task.payload,
        "priority": task.priority,
        "resources": [
            {"resource": resource, "fencing_token": task.fencing_tokens.get(resource)}
            for resource in task.resources
        ],
        "timeout_s": task.timeout_s,
    }


def _task_summary(task: dict[str, Any]) -> dict[str, Any]:
    payload = task.get("payload") or {}
    return {
        "task_id": task["task_id"],
        "status": task["status"],
        "attempt": task.get("attempts"),
        **_todo_fields(payload),
        "resources": _resources(task.get("resources") or (), task.get("fencing_tokens") or {}),
        "progress": task.get("progress"),
    }


def _resources(names: Iterable[str], tokens: dict[str, int]) -> list[dict[str, Any]]:
    return [{"resource": name, "fencing_token": tokens.get(name)} for name in names]
