"""The domain: records, states and the rules for moving between them.

Pure by design: no I/O, no threads, no clocks. Records are frozen dataclasses; an
actor changes one by building its successor with ``dataclasses.replace``, storing it,
and only then keeping it, so a failed store write leaves nothing half-applied.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from orch.errors import Conflict, Invalid

# Not only dots: "." and ".." mean something in a path, and ids end up in paths.
ID_PATTERN = re.compile(r"(?!\.+\Z)[A-Za-z0-9._:-]{1,128}")
#: What ``ID_PATTERN`` allows, in words: a refusal says this, never the expression.
ID_RULE = "use 1-128 letters, digits or '._:-' (not only dots)"
MAX_CAPABILITIES = 64
MAX_RESOURCES_PER_REQUEST = 32
MIN_HEARTBEAT_INTERVAL_S = 0.1

TaskId = int | str


# --------------------------------------------------------------------------- ids


def validate_id(field_name: str, value: object) -> str:
    """Check an agent id, resource name or capability: 1-128 of ``[A-Za-z0-9._:-]``."""
    if not isinstance(value, str):
        raise Invalid(field_name, f"must be a string, got {type(value).__name__}")
    if not ID_PATTERN.fullmatch(value):
        raise Invalid(
            field_name,
            f"{value[:40]!r} is not a valid id: {ID_RULE}",
        )
    return value


def validate_task_id(value: object) -> TaskId:
    """Task ids are integers or id strings and are echoed back exactly as given."""
    if isinstance(value, bool):
        raise Invalid("task_id", "must be an integer or a string, not a boolean")
    if isinstance(value, int):
        if not -(2**63) <= value < 2**63:
            raise Invalid("task_id", "integer task ids must fit in 64 bits")
        return value
    return validate_id("task_id", value)


def task_key(task_id: TaskId) -> str:
    """The lookup key of a task: ``123`` and ``"123"`` name the same task.

    URLs carry ids as text, so the key must not depend on the type the id was
    submitted with; the original value is kept on the record for echoing back.
    """
    return str(task_id)


def validate_names(field_name: str, values: Iterable[object], limit: int) -> frozenset[str]:
    """Validate a collection of ids (capabilities, resources)."""
    if isinstance(values, str | bytes):
        raise Invalid(field_name, "must be a list of strings, not a single string")
    items = list(values)
    if len(items) > limit:
        raise Invalid(field_name, f"at most {limit} entries allowed, got {len(items)}")
    return frozenset(validate_id(field_name, v) for v in items)


def validate_positive(field_name: str, value: object, *, maximum: float | None = None) -> float:
    """A finite number above zero (ttl, timeout, interval)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Invalid(field_name, f"must be a number, got {type(value).__name__}")
    if not math.isfinite(value) or value <= 0:
        raise Invalid(field_name, f"must be a positive number, got {value}")
    if maximum is not None and value > maximum:
        raise Invalid(field_name, f"must be at most {maximum}, got {value}")
    return float(value)


def validate_int(field_name: str, value: object, low: int, high: int) -> int:
    """An integer within ``[low, high]``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise Invalid(field_name, f"must be an integer, got {type(value).__name__}")
    if not low <= value <= high:
        raise Invalid(field_name, f"must be between {low} and {high}, got {value}")
    return value


# ------------------------------------------------------------------------ agents


class AgentState(enum.StrEnum):
    """Where an agent is in its life; see README, "How it works"."""

    REGISTERED = "registered"
    IDLE = "idle"
    BUSY = "busy"
    STOPPING = "stopping"
    STOPPED = "stopped"
    UNHEALTHY = "unhealthy"
    LOST = "lost"
    FAILED = "failed"


#: States in which an agent has been started and not yet stopped or given up on.
ACTIVE_STATES = frozenset({AgentState.IDLE, AgentState.BUSY, AgentState.UNHEALTHY})
#: States from which the agent's id may be registered again.
REUSABLE_STATES = frozenset({AgentState.LOST})

_AGENT_TRANSITIONS: dict[AgentState, frozenset[AgentState]] = {
    AgentState.REGISTERED: frozenset({AgentState.IDLE, AgentState.STOPPED, AgentState.FAILED}),
    AgentState.IDLE: frozenset(
        {
            AgentState.BUSY,
            AgentState.STOPPING,
            AgentState.STOPPED,
            AgentState.UNHEALTHY,
            AgentState.LOST,
            AgentState.FAILED,
        }
    ),
    AgentState.BUSY: frozenset(
        {
            AgentState.IDLE,
            AgentState.STOPPING,
            AgentState.STOPPED,
            AgentState.UNHEALTHY,
            AgentState.LOST,
            AgentState.FAILED,
        }
    ),
    AgentState.UNHEALTHY: frozenset(
        {
            AgentState.IDLE,
            AgentState.BUSY,
            AgentState.LOST,
            AgentState.STOPPING,
            AgentState.STOPPED,
            AgentState.FAILED,
        }
    ),
    AgentState.STOPPING: frozenset(
        {AgentState.STOPPED, AgentState.IDLE, AgentState.BUSY, AgentState.LOST, AgentState.FAILED}
    ),
    AgentState.STOPPED: frozenset({AgentState.IDLE, AgentState.FAILED}),
    AgentState.LOST: frozenset(),
    AgentState.FAILED: frozenset({AgentState.IDLE}),
}


def check_agent_transition(agent_id: str, old: AgentState, new: AgentState) -> None:
    """Raise ``Conflict`` unless ``old -> new`` is a legal agent transition."""
    if new is not old and new not in _AGENT_TRANSITIONS[old]:
        raise Conflict(f"agent {agent_id!r} cannot go from {old} to {new}", state=str(old))


@dataclass(frozen=True, slots=True)
class AgentConfig:
    """Per-agent settings; every change bumps ``version`` so agents know to reload."""

    version: int = 1
    max_concurrent_tasks: int = 1
    heartbeat_interval_s: float = 30.0
    task_timeout_s: float = 3600.0
    auto_restart: bool = True
    resource_limits: Mapping[str, Any] = field(default_factory=dict)
    settings: Mapping[str, Any] = field(default_factory=dict)

    EDITABLE = (
        "max_concurrent_tasks",
        "heartbeat_interval_s",
        "task_timeout_s",
        "auto_restart",
        "resource_limits",
        "settings",
    )

    def updated(self, changes: Mapping[str, Any]) -> AgentConfig:
        """Validate ``changes`` and return the next version of this config."""
        clean: dict[str, Any] = {}
        for name, value in changes.items():
            if name not in self.EDITABLE:
                raise Invalid(name, f"unknown config field; editable: {', '.join(self.EDITABLE)}")
            if name == "max_concurrent_tasks":
                clean[name] = validate_int(name, value, 1, 1024)
            elif name == "heartbeat_interval_s":
                clean[name] = validate_positive(name, value, maximum=86_400)
                if clean[name] < MIN_HEARTBEAT_INTERVAL_S:
                    raise Invalid(name, f"must be at least {MIN_HEARTBEAT_INTERVAL_S}")
            elif name == "task_timeout_s":
                clean[name] = validate_positive(name, value, maximum=7 * 86_400)
            elif name == "auto_restart":
                if not isinstance(value, bool):
                    raise Invalid(name, "must be true or false")
                clean[name] = value
            else:
                if not isinstance(value, Mapping):
                    raise Invalid(name, "must be an object")
                clean[name] = dict(value)
        return replace(self, version=self.version + 1, **clean)

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "max_concurrent_tasks": self.max_concurrent_tasks,
            "heartbeat_interval_s": self.heartbeat_interval_s,
            "task_timeout_s": self.task_timeout_s,
            "auto_restart": self.auto_restart,
            "resource_limits": dict(self.resource_limits),
            "settings": dict(self.settings),
        }


@dataclass(frozen=True, slots=True)
class AgentRecord:
    """An agent as stored and as published to readers. Never carries the token."""

    agent_id: str
    agent_type: str
    capabilities: frozenset[str]
    state: AgentState = AgentState.REGISTERED
    config: AgentConfig = field(default_factory=AgentConfig)
    metadata: Mapping[str, Any] = field(default_factory=dict)
    project_id: str | None = None
    in_process: bool = False
    registered_at: float = 0.0
    restarts: int = 0
    task_keys: frozenset[str] = frozenset()
    last_heartbeat: float = 0.0  # monotonic; not stored: recovery grants a fresh grace period
    last_error: str | None = None

    @property
    def free_slots(self) -> int:
        return max(0, self.config.max_concurrent_tasks - len(self.task_keys))

    def to_dict(self, task_id_of: Callable[[str], TaskId] | None = None) -> dict[str, Any]:
        """The agent as plain data; ``current_tasks`` as ids when ``task_id_of`` is given.

        The record holds its tasks by key (``"123"`` for task ``123``), but a task id is
        echoed back as it was submitted, and only the task table knows that: the
        facade passes ``task_id_of`` to turn each key back into its task's id.
        """
        keys = sorted(self.task_keys)
        return {
            "agent_id": self.agent_id,
            "agent_type": self.agent_type,
            "capabilities": sorted(self.capabilities),
            "status": str(self.state),
            "metadata": dict(self.metadata),
            "project_id": self.project_id,
            "in_process": self.in_process,
            "registered_at": self.registered_at,
            "restarts": self.restarts,
            "current_tasks": keys if task_id_of is None else [task_id_of(k) for k in keys],
            "config": self.config.to_dict(),
            "last_error": self.last_error,
        }


# ------------------------------------------------------------------------- tasks


class TaskState(enum.StrEnum):
    """Where a task is; see README, "How it works"."""

    PENDING = "pending"
    ASSIGNED = "assigned"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"  # failed, waiting out its retry backoff before going back to pending
    DEAD = "dead"
    CANCELLED = "cancelled"


TERMINAL_TASK_STATES = frozenset({TaskState.COMPLETED, TaskState.DEAD, TaskState.CANCELLED})
LEASED_TASK_STATES = frozenset({TaskState.ASSIGNED, TaskState.RUNNING})

#: Every move a task record makes; ``None`` is "not submitted yet". A submission is
#: queued, or leased at once to the agent it names (``running`` at once if that agent
#: is in-process). A lease ends completed, failed (waiting out its backoff), dead (a
#: failure with no attempt left, or not retryable), back in the queue (agent lost,
#: stopped or gone; lease timed out; assignment refused) or cancelled. A resubmission
#: of the same id is a new record (a new ``seq``): its old record ends first.
_TASK_TRANSITIONS: dict[TaskState | None, frozenset[TaskState]] = {
    None: frozenset({TaskState.PENDING, TaskState.ASSIGNED, TaskState.RUNNING}),
    TaskState.PENDING: frozenset({TaskState.ASSIGNED, TaskState.RUNNING, TaskState.CANCELLED}),
    TaskState.ASSIGNED: frozenset(
        {
            TaskState.RUNNING,
            TaskState.COMPLETED,
            TaskState.FAILED,
            TaskState.DEAD,
            TaskState.PENDING,
            TaskState.CANCELLED,
        }
    ),
    TaskState.RUNNING: frozenset(
        {
            TaskState.COMPLETED,
            TaskState.FAILED,
            TaskState.DEAD,
            TaskState.PENDING,
            TaskState.CANCELLED,
        }
    ),
    TaskState.FAILED: frozenset({TaskState.PENDING, TaskState.CANCELLED}),
    TaskState.COMPLETED: frozenset(),
    TaskState.DEAD: frozenset(),
    TaskState.CANCELLED: frozenset(),
}


def check_task_transition(task_id: TaskId, old: TaskState | None, new: TaskState) -> None:
    """Raise ``Conflict`` unless ``old -> new`` is a legal task transition.

    ``old`` is None for a record being submitted. Staying in a state is no
    transition: nothing in the lifecycle re-enters the state it is in.
    """
    if new not in _TASK_TRANSITIONS[old]:
        if old is None:
            raise Conflict(f"task {task_id!r} cannot be submitted {new}")
        raise Conflict(f"task {task_id!r} cannot go from {old} to {new}", task_status=str(old))


@dataclass(frozen=True, slots=True)
class TaskSpec:
    """What a submitter asks for; validated once, by ``TaskSpec.build``."""

    task_id: TaskId
    payload: Mapping[str, Any]
    priority: int = 0
    agent_type: str | None = None
    capabilities: frozenset[str] = frozenset()
    resources: tuple[str, ...] = ()
    max_attempts: int = 3
    timeout_s: float | None = None
    # Who queued it (the HTTP client's address); capped per submitter. None: uncapped.
    submitter: str | None = None

    @classmethod
    def build(
        cls,
        *,
        task_id: object,
        payload: object,
        priority: object = 0,
        agent_type: object = None,
        capabilities: Iterable[object] = (),
        resources: Iterable[object] = (),
        max_attempts: object = 3,
        timeout_s: object = None,
        submitter: object = None,
    ) -> TaskSpec:
        """Validate every field, naming the first one that is wrong."""
        if not isinstance(payload, Mapping):
            raise Invalid("payload", "must be an object (a dict)")
        resource_list = list(resources) if not isinstance(resources, str) else resources
        names = validate_names("resources", resource_list, MAX_RESOURCES_PER_REQUEST)
        if len(names) != len(resource_list):
            raise Invalid("resources", "lists the same resource twice")
        return cls(
            task_id=validate_task_id(task_id),
            payload=payload,
            priority=validate_int("priority", priority, 0, 10),
            agent_type=None if agent_type is None else validate_id("agent_type", agent_type),
            capabilities=validate_names("capabilities", capabilities, MAX_CAPABILITIES),
            resources=tuple(sorted(names)),
            max_attempts=validate_int("max_attempts", max_attempts, 1, 100),
            timeout_s=None
            if timeout_s is None
            else validate_positive("timeout_s", timeout_s, maximum=7 * 86_400),
            submitter=_validate_submitter(submitter),
        )


def _validate_submitter(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not 1 <= len(value) <= 256:
        raise Invalid("submitter", "must be a string of 1-256 characters")
    return value


#: The longest progress message an agent may report, in bytes of UTF-8.
MAX_PROGRESS_MESSAGE_BYTES = 1024


@dataclass(frozen=True, slots=True)
class TaskProgress:
    """The latest word from the agent working on a task: a note and how far along it is.

    Kept with the task (stored, recovered) so that whoever looks at a long task sees
    the last report, even after a restart; a new attempt starts without one.
    """

    message: str
    percent: float | None
    at: float  # wall clock, when it was reported

    @classmethod
    def build(cls, message: object, percent: object, at: float) -> TaskProgress:
        """Validate a report, naming the field that is wrong."""
        if not isinstance(message, str) or not message.strip():
            raise Invalid("message", "must be a non-empty string")
        try:
            size = len(message.encode("utf-8"))
        except UnicodeEncodeError:
            raise Invalid("message", "must be valid Unicode text (no lone surrogates)") from None
        if size > MAX_PROGRESS_MESSAGE_BYTES:
            raise Invalid(
                "message", f"must be at most {MAX_PROGRESS_MESSAGE_BYTES} bytes, got {size}"
            )
        if percent is not None:
            if isinstance(percent, bool) or not isinstance(percent, int | float):
                raise Invalid("percent", f"must be a number, got {type(percent).__name__}")
            if not math.isfinite(percent) or not 0 <= percent <= 100:
                raise Invalid("percent", f"must be between 0 and 100, got {percent}")
            percent = float(percent)
        return cls(message=message, percent=percent, at=at)

    def to_dict(self) -> dict[str, Any]:
        return {"message": self.message, "percent": self.percent, "at": self.at}


@dataclass(frozen=True, slots=True)
class Task:
    """A task and everything that happened to it so far."""

    spec: TaskSpec
    seq: int  # submission order: FIFO within a priority
    state: TaskState = TaskState.PENDING
    attempts: int = 0
    agent_id: str | None = None
    created_at: float = 0.0
    assigned_at: float | None = None
    finished_at: float | None = None
    result: Any = None
    error: str | None = None
    fencing_tokens: Mapping[str, int] = field(default_factory=dict)
    lease_deadline: float | None = None  # monotonic
    retry_at: float | None = None  # monotonic
    queued_at: float = 0.0  # monotonic, for time-in-queue
    progress: TaskProgress | None = None  # the current attempt's latest report

    @property
    def key(self) -> str:
        return task_key(self.spec.task_id)

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_TASK_STATES

    def to_dict(self) -> dict[str, Any]:
        spec = self.spec
        return {
            "task_id": spec.task_id,
            "status": str(self.state),
            "priority": spec.priority,
            "agent_type": spec.agent_type,
            "capabilities": sorted(spec.capabilities),
            "resources": list(spec.resources),
            "payload": dict(spec.payload),
            "max_attempts": spec.max_attempts,
            "timeout_s": spec.timeout_s,
            "attempts": self.attempts,
            "agent_id": self.agent_id,
            "created_at": self.created_at,
            "assigned_at": self.assigned_at,
            "finished_at": self.finished_at,
            "result": self.result,
            "error": self.error,
            "fencing_tokens": dict(self.fencing_tokens),
            "progress": None if self.progress is None else self.progress.to_dict(),
        }


@dataclass(frozen=True, slots=True)
class Assignment:
    """What an agent is handed: enough to do the work, nothing of the scheduler's."""

    task_id: TaskId
    payload: Mapping[str, Any]
    attempt: int
    priority: int
    resources: tuple[str, ...]
    fencing_tokens: Mapping[str, int]
    timeout_s: float

    @property
    def key(self) -> str:
        return task_key(self.task_id)

    def to_dict(self) -> dict[str, Any]:
        return {
            "task_id": self.task_id,
            "payload": dict(self.payload),
            "attempt": self.attempt,
            "priority": self.priority,
            "resources": list(self.resources),
            "fencing_tokens": dict(self.fencing_tokens),
            "timeout_s": self.timeout_s,
        }


def retry_delay_s(attempts: int, initial_s: float = 1.0, cap_s: float = 60.0) -> float:
    """Backoff before the next attempt: ``initial_s`` doubling per attempt, capped."""
    return min(cap_s, initial_s * 2 ** max(0, attempts - 1))


# ------------------------------------------------------------------------- locks


class LockMode(enum.StrEnum):
    EXCLUSIVE = "exclusive"
    SHARED = "shared"

    @classmethod
    def parse(cls, value: object, field_name: str = "mode") -> LockMode:
        try:
            return cls(value)
        except ValueError:
            raise Invalid(field_name, f"must be 'exclusive' or 'shared', got {value!r}") from None


@dataclass(frozen=True, slots=True)
class LockGrant:
    """One holder's lease on one resource."""

    resource: str
    mode: LockMode
    agent_id: str
    fencing_token: int
    expires_at: float  # wall clock, for people and storage
    deadline: float  # monotonic, for expiry
    task_key: str | None = None  # set when the Scheduler took the lock for a task

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "resource": self.resource,
            "mode": str(self.mode),
            "agent_id": self.agent_id,
            "fencing_token": self.fencing_token,
            "expires_at": self.expires_at,
        }
        if self.task_key is not None:
            out["task_id"] = self.task_key
        return out


# ------------------------------------------------------------------ idempotent answers


@dataclass(frozen=True, slots=True)
class IdempotentAnswer:
    """The first answer to a write that carried an ``Idempotency-Key``, kept for its retries.

    A retry of the same request (same ``fingerprint``: method, path, body) under the
    same key and credential (``scope``) gets this answer back instead of being applied
    again, until ``expires_at`` (wall clock, ``ORCH_IDEMPOTENCY_TTL_S`` after it was
    given). ``headers`` are those that describe the answer (content type, ETag,
    Location), never hop-by-hop ones; ``body`` is the bytes as they were sent, which
    the store holds sealed (``orch.idempotency.seal``): they may hold a token.
    """

    scope: str  # whose key: a digest of the Authorization header ("" without one)
    key: str  # in the store, a digest of the client's key (orch/idempotency.py)
    fingerprint: str
    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes
    created_at: float  # wall clock
    expires_at: float  # wall clock

    def expired(self, wall: float) -> bool:
        """Whether the answer is past its keeping at wall-clock time ``wall``."""
        return self.expires_at <= wall
