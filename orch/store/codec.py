"""Records as JSON bytes, for stores that keep them outside the process.

The model's records are frozen dataclasses holding enums, frozensets and tuples,
which JSON does not have. Each stored shape is declared here once, as a msgspec
``Struct`` whose fields are named and ordered as the record's: msgspec writes it and,
reading it back, checks every field's type (a row with a missing or mistyped field is
a ``msgspec.ValidationError``, never a half-built record), then ``msgspec.convert``
turns the row into the record field by field. ``Row.of`` is the other direction, the
one place that decides how a record is written: sets sorted, so that the same record
always encodes to the same bytes, and free-form mappings copied into plain dicts.

The bytes are those of the dictionaries this module wrote before it used Structs, key
for key and in the same order, so databases written by earlier versions read back
unchanged (``tests/unit/test_codec.py`` holds rows written by that code).

Two things do not survive, on purpose or by JSON's nature:

- ``AgentRecord.last_heartbeat`` is a monotonic reading, meaningless after a restart
  (recovery grants a fresh grace period: README, "How it works"); it reads back 0.0.
- Free-form values (payloads, results, metadata, settings) come back as JSON types:
  tuples and sets as lists, non-string keys as strings, NaN and infinity as None.
"""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec

from orch.model import (
    AgentConfig,
    AgentRecord,
    AgentState,
    LockGrant,
    LockMode,
    Task,
    TaskProgress,
    TaskSpec,
    TaskState,
)

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder()


def encode(data: Any) -> bytes:
    """JSON bytes for plain data; ``TypeError`` names a value JSON cannot hold."""
    return _encoder.encode(data)


def decode(raw: bytes | str) -> Any:
    """Plain data from JSON; ``msgspec.DecodeError`` if the text is not JSON."""
    return _decoder.decode(raw)


# Nothing a row holds refers back to it, so a row is never part of a reference cycle
# and the garbage collector need not track it: ``gc=False`` makes each one cheaper.

# ------------------------------------------------------------------------ agents


class ConfigRow(msgspec.Struct, gc=False):
    """An ``AgentConfig`` as stored, inside its agent's row."""

    version: int
    max_concurrent_tasks: int
    heartbeat_interval_s: float
    task_timeout_s: float
    auto_restart: bool
    resource_limits: dict[str, Any]
    settings: dict[str, Any]

    @classmethod
    def of(cls, config: AgentConfig) -> ConfigRow:
        """The row of ``config``; its mappings as plain dicts, which JSON can hold."""
        return cls(
            config.version,
            config.max_concurrent_tasks,
            config.heartbeat_interval_s,
            config.task_timeout_s,
            config.auto_restart,
            dict(config.resource_limits),
            dict(config.settings),
        )


class AgentRow(msgspec.Struct, gc=False):
    """An ``AgentRecord`` as stored: every field but ``last_heartbeat`` (see above)."""

    agent_id: str
    agent_type: str
    capabilities: list[str]
    state: AgentState
    config: ConfigRow
    metadata: dict[str, Any]
    project_id: str | None
    in_process: bool
    registered_at: float
    restarts: int
    task_keys: list[str]
    last_error: str | None

    @classmethod
    def of(cls, record: AgentRecord) -> AgentRow:
        """The row of ``record``: sets sorted, mappings as plain dicts, no heartbeat."""
        return cls(
            record.agent_id,
            record.agent_type,
            sorted(record.capabilities),
            record.state,
            ConfigRow.of(record.config),
            dict(record.metadata),
            record.project_id,
            record.in_process,
            record.registered_at,
            record.restarts,
            sorted(record.task_keys),
            record.last_error,
        )


# ------------------------------------------------------------------------- tasks


class SpecRow(msgspec.Struct, gc=False):
    """A ``TaskSpec`` as stored, inside its task's row; ``task_id`` keeps its type."""

    task_id: int | str
    payload: dict[str, Any]
    priority: int
    agent_type: str | None
    capabilities: list[str]
    resources: tuple[str, ...]
    max_attempts: int
    timeout_s: float | None
    submitter: str | None = None  # absent in rows written before it existed

    @classmethod
    def of(cls, spec: TaskSpec) -> SpecRow:
        """The row of ``spec``: capabilities sorted, the payload as a plain dict."""
        return cls(
            spec.task_id,
            dict(spec.payload),
            spec.priority,
            spec.agent_type,
            sorted(spec.capabilities),
            spec.resources,
            spec.max_attempts,
            spec.timeout_s,
            spec.submitter,
        )


class ProgressRow(msgspec.Struct, gc=False):
    """A ``TaskProgress`` as stored, inside its task's row."""

    message: str
    percent: float | None
    at: float


# ``omit_defaults``: a task without progress is written without the key, byte for byte
# as before progress existed; a row without it reads back with none.
class TaskRow(msgspec.Struct, gc=False, omit_defaults=True):
    """A ``Task`` as stored, monotonic fields included: the Scheduler re-derives them."""

    spec: SpecRow
    seq: int
    state: TaskState
    attempts: int
    agent_id: str | None
    created_at: float
    assigned_at: float | None
    finished_at: float | None
    result: Any
    error: str | None
    fencing_tokens: dict[str, int]
    lease_deadline: float | None
    retry_at: float | None
    queued_at: float
    progress: ProgressRow | None = None

    @classmethod
    def of(cls, task: Task) -> TaskRow:
        """The row of ``task``; every field, so that recovery needs nothing else."""
        return cls(
            SpecRow.of(task.spec),
            task.seq,
            task.state,
            task.attempts,
            task.agent_id,
            task.created_at,
            task.assigned_at,
            task.finished_at,
            task.result,
            task.error,
            dict(task.fencing_tokens),
            task.lease_deadline,
            task.retry_at,
            task.queued_at,
            None if task.progress is None else ProgressRow(*_progress_fields(task.progress)),
        )


def _progress_fields(progress: TaskProgress) -> tuple[str, float | None, float]:
    return progress.message, progress.percent, progress.at


# ------------------------------------------------------------------------- locks


class GrantRow(msgspec.Struct, gc=False):
    """A ``LockGrant`` as stored; the LockBroker re-derives ``deadline`` on start."""

    resource: str
    mode: LockMode
    agent_id: str
    fencing_token: int
    expires_at: float
    deadline: float
    task_key: str | None

    @classmethod
    def of(cls, grant: LockGrant) -> GrantRow:
        """The row of ``grant``; its mode as the enum's value."""
        return cls(
            grant.resource,
            grant.mode,
            grant.agent_id,
            grant.fencing_token,
            grant.expires_at,
            grant.deadline,
            grant.task_key,
        )


# --------------------------------------------------------------- the records

Record = TypeVar("Record")


def _record(row: msgspec.Struct, record_type: type[Record]) -> Record:
    # Fields are matched by name, lists become the record's frozensets, and a field
    # the row lacks (``last_heartbeat``) takes the record's default. Faster than
    # calling the frozen dataclasses' constructors by hand (bench/README.md, "Codec").
    return msgspec.convert(row, record_type, from_attributes=True)


_agent_rows = msgspec.json.Decoder(AgentRow)
_task_rows = msgspec.json.Decoder(TaskRow)
_grant_rows = msgspec.json.Decoder(GrantRow)


def encode_agent(record: AgentRecord) -> bytes:
    """An agent's row; ``TypeError`` if a free-form value cannot be JSON."""
    return _encoder.encode(AgentRow.of(record))


def decode_agent(raw: bytes | str) -> AgentRecord:
    """The agent ``encode_agent`` wrote; ``last_heartbeat`` is 0.0."""
    return _record(_agent_rows.decode(raw), AgentRecord)


def encode_task(task: Task) -> bytes:
    """A task's row; ``TypeError`` if its payload or result cannot be JSON."""
    return _encoder.encode(TaskRow.of(task))


def decode_task(raw: bytes | str) -> Task:
    """The task ``encode_task`` wrote."""
    return _record(_task_rows.decode(raw), Task)


def encode_grant(grant: LockGrant) -> bytes:
    """A lock grant's row."""
    return _encoder.encode(GrantRow.of(grant))


def decode_grant(raw: bytes | str) -> LockGrant:
    """The grant ``encode_grant`` wrote."""
    return _record(_grant_rows.decode(raw), LockGrant)
