"""Request bodies as msgspec Structs: they validate requests and generate /openapi.json.

Unknown fields are ignored (a client written for the seed may send more than we read),
except in config changes, where a misspelt field would silently do nothing. The facade
validates again; these constraints exist so that a bad body is refused before any
actor is asked and so that the OpenAPI document states the same limits.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

import msgspec
from msgspec import UNSET, Meta, Struct, UnsetType

Id = Annotated[
    str,
    Meta(
        min_length=1,
        max_length=128,
        # Not only dots: "." and ".." are path segments with a meaning of their own.
        # No newline: Python's "$" (msgspec) would let one trailing "\n" through.
        pattern=r"^(?!\.+$)(?!.*\n)[A-Za-z0-9._:-]+$",
        description="1-128 letters, digits or '._:-', not only dots",
    ),
]
TaskId = Annotated[int, Meta(ge=-(2**63), le=2**63 - 1)] | Id
Seconds = Annotated[float, Meta(gt=0)]
Mode = Literal["exclusive", "shared"]


class RegisterAgent(Struct):
    """POST /agents/register."""

    agent_id: Id
    agent_type: Id
    capabilities: Annotated[list[Id], Meta(max_length=64)] = []
    metadata: dict[str, Any] = {}
    project_id: Id | None = None
    max_concurrent_tasks: Annotated[int, Meta(ge=1, le=1024)] | None = None


class StopAgent(Struct):
    """POST /agents/{id}/stop: ``drain=false`` requeues running tasks at once."""

    drain: bool = True


class AgentMetadata(Struct):
    """PUT /agents/{id}/metadata: the agent's new ``metadata``, replacing the old."""

    metadata: dict[str, Any]


ExitCode = Annotated[int, Meta(ge=-(2**31), le=2**31 - 1)]
SignalName = Annotated[str, Meta(min_length=1, max_length=32, pattern=r"^[A-Z0-9+]+$")]


class ProcessExit(Struct):
    """POST /agents/{id}/exits: a launcher saw the agent's process end.

    Exactly one of ``exit_code`` and ``signal`` (its name, e.g. ``SIGKILL``);
    ``restarting`` says whether the launcher starts the process again.
    """

    restarting: bool
    exit_code: ExitCode | UnsetType = UNSET
    signal: SignalName | UnsetType = UNSET

    #: What the document says and the controller checks: one of the two, not both.
    JSON_SCHEMA_RULES: ClassVar[dict[str, Any]] = {
        "oneOf": [{"required": ["exit_code"]}, {"required": ["signal"]}]
    }


class AssignTask(Struct):
    """POST /tasks/assign: to ``agent_id`` if named, else to the best eligible agent."""

    task_id: TaskId | None = None
    agent_id: Id | None = None
    priority: Annotated[int, Meta(ge=0, le=10)] = 0
    agent_type: Id | None = None
    capabilities: Annotated[list[Id], Meta(max_length=64)] = []
    payload: dict[str, Any] = {}
    # Unique: a task needs each resource once (msgspec does not check it; the facade does).
    resources: Annotated[
        list[Id], Meta(max_length=32, extra_json_schema={"uniqueItems": True})
    ] = []
    max_attempts: Annotated[int, Meta(ge=1, le=100)] = 3
    timeout_s: Annotated[float, Meta(gt=0, le=7 * 86_400)] | None = None
    force: bool = False


class CompleteTask(Struct):
    """POST /tasks/{id}/complete, by the agent holding the task (its token)."""

    agent_id: Id | None = None
    result: Any = None


class FailTask(Struct):
    """POST /tasks/{id}/fail: retried by policy unless ``retryable`` is false."""

    error: Annotated[str, Meta(min_length=1, max_length=4096)]
    agent_id: Id | None = None
    retryable: bool = True


class ReportProgress(Struct):
    """POST /tasks/{id}/progress, by the agent holding the task (its token)."""

    message: Annotated[
        str,
        Meta(
            min_length=1,
            max_length=1024,
            description="what the agent is doing now; at most 1024 bytes of UTF-8",
        ),
    ]
    percent: Annotated[float, Meta(ge=0, le=100)] | None = None
    agent_id: Id | None = None


class AcquireLock(Struct):
    """POST /locks/{resource}/acquire."""

    agent_id: Id | None = None
    mode: Mode = "exclusive"
    ttl_s: Seconds = 30.0
    wait_s: Annotated[float, Meta(ge=0)] = 0.0


class LockRequest(Struct):
    """One resource of a multi-resource acquire."""

    resource: Id
    mode: Mode = "exclusive"


class AcquireLocks(Struct):
    """POST /locks/acquire: every resource or none."""

    resources: Annotated[
        list[LockRequest],
        # JSON Schema cannot say "unique by one key"; the facade refuses a repeat (400).
        # The document says uniqueItems (build_document), which catches the exact ones.
        Meta(min_length=1, max_length=32, description="each resource at most once"),
    ]
    agent_id: Id | None = None
    ttl_s: Seconds = 30.0
    wait_s: Annotated[float, Meta(ge=0)] = 0.0


class RenewLock(Struct):
    """POST /locks/{resource}/renew: the fencing token names the lease."""

    fencing_token: Annotated[int, Meta(ge=1, le=2**63 - 1)]
    agent_id: Id | None = None
    ttl_s: Seconds = 30.0


class ReleaseLock(Struct):
    """POST /locks/{resource}/release."""

    fencing_token: Annotated[int, Meta(ge=1, le=2**63 - 1)]
    agent_id: Id | None = None


class ConfigChange(Struct, forbid_unknown_fields=True):
    """PUT/PATCH /agents/{id}/config and PUT /config/defaults: the editable fields."""

    max_concurrent_tasks: Annotated[int, Meta(ge=1, le=1024)] | UnsetType = UNSET
    heartbeat_interval_s: Annotated[float, Meta(ge=0.1, le=86_400)] | UnsetType = UNSET
    task_timeout_s: Annotated[float, Meta(gt=0, le=7 * 86_400)] | UnsetType = UNSET
    auto_restart: bool | UnsetType = UNSET
    resource_limits: dict[str, Any] | UnsetType = UNSET
    settings: dict[str, Any] | UnsetType = UNSET

    def changes(self) -> dict[str, Any]:
        """Only the fields the client sent."""
        return {
            name: value
            for name in self.__struct_fields__
            if (value := getattr(self, name)) is not UNSET
        }


class Problem(Struct):
    """RFC 9457 problem details, with a stable ``code``."""

    type: str
    title: str
    status: int
    detail: str
    code: str


REQUEST_BODIES: tuple[type[Struct], ...] = (
    RegisterAgent,
    StopAgent,
    AgentMetadata,
    ProcessExit,
    AssignTask,
    CompleteTask,
    FailTask,
    ReportProgress,
    AcquireLock,
    AcquireLocks,
    RenewLock,
    ReleaseLock,
    ConfigChange,
)

_decoders: dict[type[Struct], msgspec.json.Decoder[Any]] = {
    body: msgspec.json.Decoder(body) for body in REQUEST_BODIES
}


def decoder_for(body: type[Struct]) -> msgspec.json.Decoder[Any]:
    """The (cached) validating decoder of a request body type."""
    return _decoders[body]
