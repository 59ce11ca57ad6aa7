"""Records as plain JSON data, for stores that keep them outside the process.

The model's records are frozen dataclasses holding enums, frozensets and tuples,
which JSON does not have; this module is the one place that knows how each record
is spelled on disk, so a stored record reads back equal to the one that was written.
Sets are written sorted so that the same record always encodes to the same bytes.

Two things do not survive, on purpose or by JSON's nature:

- ``AgentRecord.last_heartbeat`` is a monotonic reading, meaningless after a restart
  (DESIGN.md "Durability": recovery grants a fresh grace period); it reads back 0.0.
- Free-form values (payloads, results, metadata, settings) come back as JSON types:
  tuples and sets as lists, non-string keys as strings, NaN and infinity as None.
"""

from __future__ import annotations

from typing import Any

import msgspec

from orch.model import (
    AgentConfig,
    AgentRecord,
    AgentState,
    LockGrant,
    LockMode,
    Task,
    TaskSpec,
    TaskState,
)


def encode(data: Any) -> bytes:
    """JSON bytes for plain data; ``TypeError`` names a value JSON cannot hold."""
    return msgspec.json.encode(data)


def decode(raw: bytes | str) -> Any:
    """Plain data from JSON; ``msgspec.DecodeError`` if the text is not JSON."""
    return msgspec.json.decode(raw)


def _float_or_none(value: Any) -> float | None:
    # JSON writes 1.0 as 1.0 but a float field may have been given an int; keep types.
    return None if value is None else float(value)


# ------------------------------------------------------------------------ agents


def config_to_dict(config: AgentConfig) -> dict[str, Any]:
    """Every field of an ``AgentConfig``."""
    return {
        "version": config.version,
        "max_concurrent_tasks": config.max_concurrent_tasks,
        "heartbeat_interval_s": config.heartbeat_interval_s,
        "task_timeout_s": config.task_timeout_s,
        "auto_restart": config.auto_restart,
        "resource_limits": dict(config.resource_limits),
        "settings": dict(config.settings),
    }


def config_from_dict(data: dict[str, Any]) -> AgentConfig:
    """The inverse of ``config_to_dict``."""
    return AgentConfig(
        version=data["version"],
        max_concurrent_tasks=data["max_concurrent_tasks"],
        heartbeat_interval_s=float(data["heartbeat_interval_s"]),
        task_timeout_s=float(data["task_timeout_s"]),
        auto_restart=data["auto_restart"],
        resource_limits=data["resource_limits"],
        settings=data["settings"],
    )


def agent_to_dict(record: AgentRecord) -> dict[str, Any]:
    """Every stored field of an ``AgentRecord`` (not ``last_heartbeat``; see above)."""
    return {
        "agent_id": record.agent_id,
        "agent_type": record.agent_type,
        "capabilities": sorted(record.capabilities),
        "state": record.state.value,
        "config": config_to_dict(record.config),
        "metadata": dict(record.metadata),
        "project_id": record.project_id,
        "in_process": record.in_process,
        "registered_at": record.registered_at,
        "restarts": record.restarts,
        "task_keys": sorted(record.task_keys),
        "last_error": record.last_error,
    }


def agent_from_dict(data: dict[str, Any]) -> AgentRecord:
    """The inverse of ``agent_to_dict``; ``last_heartbeat`` is 0.0."""
    return AgentRecord(
        agent_id=data["agent_id"],
        agent_type=data["agent_type"],
        capabilities=frozenset(data["capabilities"]),
        state=AgentState(data["state"]),
        config=config_from_dict(data["config"]),
        metadata=data["metadata"],
        project_id=data["project_id"],
        in_process=data["in_process"],
        registered_at=float(data["registered_at"]),
        restarts=data["restarts"],
        task_keys=frozenset(data["task_keys"]),
        last_error=data["last_error"],
    )


# ------------------------------------------------------------------------- tasks


def spec_to_dict(spec: TaskSpec) -> dict[str, Any]:
    """Every field of a ``TaskSpec``; ``task_id`` keeps its type (int or str)."""
    return {
        "task_id": spec.task_id,
        "payload": dict(spec.payload),
        "priority": spec.priority,
        "agent_type": spec.agent_type,
        "capabilities": sorted(spec.capabilities),
        "resources": list(spec.resources),
        "max_attempts": spec.max_attempts,
        "timeout_s": spec.timeout_s,
        "submitter": spec.submitter,
    }


def spec_from_dict(data: dict[str, Any]) -> TaskSpec:
    """The inverse of ``spec_to_dict``."""
    return TaskSpec(
        task_id=data["task_id"],
        payload=data["payload"],
        priority=data["priority"],
        agent_type=data["agent_type"],
        capabilities=frozenset(data["capabilities"]),
        resources=tuple(data["resources"]),
        max_attempts=data["max_attempts"],
        timeout_s=_float_or_none(data["timeout_s"]),
        submitter=data.get("submitter"),  # absent in rows written before it existed
    )


def task_to_dict(task: Task) -> dict[str, Any]:
    """Every field of a ``Task``, monotonic ones included: the Scheduler re-derives them."""
    return {
        "spec": spec_to_dict(task.spec),
        "seq": task.seq,
        "state": task.state.value,
        "attempts": task.attempts,
        "agent_id": task.agent_id,
        "created_at": task.created_at,
        "assigned_at": task.assigned_at,
        "finished_at": task.finished_at,
        "result": task.result,
        "error": task.error,
        "fencing_tokens": dict(task.fencing_tokens),
        "lease_deadline": task.lease_deadline,
        "retry_at": task.retry_at,
        "queued_at": task.queued_at,
    }


def task_from_dict(data: dict[str, Any]) -> Task:
    """The inverse of ``task_to_dict``."""
    return Task(
        spec=spec_from_dict(data["spec"]),
        seq=data["seq"],
        state=TaskState(data["state"]),
        attempts=data["attempts"],
        agent_id=data["agent_id"],
        created_at=float(data["created_at"]),
        assigned_at=_float_or_none(data["assigned_at"]),
        finished_at=_float_or_none(data["finished_at"]),
        result=data["result"],
        error=data["error"],
        fencing_tokens=data["fencing_tokens"],
        lease_deadline=_float_or_none(data["lease_deadline"]),
        retry_at=_float_or_none(data["retry_at"]),
        queued_at=float(data["queued_at"]),
    )


# ------------------------------------------------------------------------- locks


def grant_to_dict(grant: LockGrant) -> dict[str, Any]:
    """Every field of a ``LockGrant``; the LockBroker re-derives ``deadline`` on start."""
    return {
        "resource": grant.resource,
        "mode": grant.mode.value,
        "agent_id": grant.agent_id,
        "fencing_token": grant.fencing_token,
        "expires_at": grant.expires_at,
        "deadline": grant.deadline,
        "task_key": grant.task_key,
    }


def grant_from_dict(data: dict[str, Any]) -> LockGrant:
    """The inverse of ``grant_to_dict``."""
    return LockGrant(
        resource=data["resource"],
        mode=LockMode(data["mode"]),
        agent_id=data["agent_id"],
        fencing_token=data["fencing_token"],
        expires_at=float(data["expires_at"]),
        deadline=float(data["deadline"]),
        task_key=data["task_key"],
    )
