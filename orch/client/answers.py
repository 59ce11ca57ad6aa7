"""What the server's answers become: records for successes, ``orch.errors`` for problems.

The answers the SDK itself acts on (a registration, a heartbeat and its assignments,
a lock grant) are frozen records built from the JSON (``from_dict``); the other
endpoints answer plain dicts. Errors are rebuilt from the problem+json ``code`` into
the same classes the embedded facade raises, so code moves between the two
transports without changing its ``except`` clauses.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import requests

from orch.errors import (
    Conflict,
    Forbidden,
    IdempotencyKeyInUse,
    IdempotencyKeyReused,
    Invalid,
    NotFound,
    OrchestratorError,
    StoreError,
    Timeout,
    TooManyRequests,
    Unauthorized,
    Unavailable,
    VersionMismatch,
)

__all__ = ["AssignedTask", "Heartbeat", "LockGrant", "Registration", "error_from_response"]

# ----------------------------------------------------------------- results


@dataclass(frozen=True, slots=True)
class Registration:
    """The answer to a registration; ``token`` is shown only this once."""

    agent_id: str
    status: str
    token: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class AssignedTask:
    """One assignment handed to a remote agent in a heartbeat answer."""

    task_id: int | str
    payload: dict[str, Any]
    attempt: int
    priority: int = 0
    resources: tuple[str, ...] = ()
    fencing_tokens: dict[str, int] = field(default_factory=dict)
    timeout_s: float | None = None
    # The AgentClient that handed it out, so that ``task.progress(...)`` needs no more.
    agent: Any = field(default=None, repr=False, compare=False)

    @property
    def key(self) -> tuple[str, int]:
        """Identity of this assignment: ``123`` and ``"123"`` are the same task."""
        return (str(self.task_id), self.attempt)

    def progress(self, message: str, percent: float | None = None) -> dict[str, Any]:
        """Report how far this task has come (``AgentClient.progress``)."""
        if self.agent is None:
            raise Unavailable(
                f"task {self.task_id!r} was not handed out by an AgentClient; "
                "report with OrchestratorClient.report_progress(agent_id, task_id, ...)"
            )
        return self.agent.progress(self, message, percent)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AssignedTask:
        return cls(
            task_id=data["task_id"],
            payload=dict(data.get("payload") or {}),
            attempt=int(data.get("attempt", 1)),
            priority=int(data.get("priority", 0)),
            resources=tuple(data.get("resources") or ()),
            fencing_tokens=dict(data.get("fencing_tokens") or {}),
            timeout_s=data.get("timeout_s"),
        )


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """The answer to a heartbeat: the agent's state, its assignments, its config version."""

    agent_id: str
    status: str
    config_version: int
    heartbeat_interval_s: float
    assignments: tuple[AssignedTask, ...] = ()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Heartbeat:
        return cls(
            agent_id=data["agent_id"],
            status=data["status"],
            config_version=int(data.get("config_version", 0)),
            heartbeat_interval_s=float(data.get("heartbeat_interval_s", 30.0)),
            assignments=tuple(AssignedTask.from_dict(a) for a in data.get("assignments", ())),
        )


@dataclass(frozen=True, slots=True)
class LockGrant:
    """A lease on a resource; ``fencing_token`` names it in renew and release."""

    resource: str
    mode: str
    agent_id: str
    fencing_token: int
    expires_at: float
    task_id: str | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LockGrant:
        return cls(
            resource=data["resource"],
            mode=data["mode"],
            agent_id=data["agent_id"],
            fencing_token=int(data["fencing_token"]),
            expires_at=float(data["expires_at"]),
            task_id=data.get("task_id"),
        )


# ------------------------------------------------------------------ errors

_ERRORS_BY_CODE: dict[str, type[OrchestratorError]] = {
    error.code: error
    for error in (
        NotFound,
        Conflict,
        VersionMismatch,
        Unauthorized,
        Forbidden,
        Unavailable,
        Timeout,
        StoreError,
        TooManyRequests,
        IdempotencyKeyInUse,
        IdempotencyKeyReused,
    )
}
_ERRORS_BY_CODE["precondition_failed"] = VersionMismatch
# Answers that are not problem+json (a proxy in between, say): judged by status alone.
_CODES_BY_STATUS = {
    400: "invalid",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    409: "conflict",
    412: "version_mismatch",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "too_many_requests",
    502: "unavailable",
    503: "unavailable",
    504: "timeout",
}
_INVALID_CODES = frozenset({"invalid", "payload_too_large", "unsupported_media_type"})
_PROBLEM_KEYS = frozenset({"type", "title", "status", "detail", "code"})


def error_from_response(response: requests.Response) -> OrchestratorError:
    """The ``orch.errors`` exception an error answer stands for, rebuilt from its body.

    Problem details other than the standard ones (``holders`` of a refused lock,
    ``version`` of a stale config) are kept in ``error.details``.
    """
    status = response.status_code
    body: dict[str, Any] = {}
    try:
        parsed = response.json()
    except ValueError:
        parsed = None
    if isinstance(parsed, dict):
        body = parsed
    code = str(body.get("code") or _CODES_BY_STATUS.get(status, "error"))
    detail = str(body.get("detail") or response.reason or f"HTTP {status}")
    extras = {k: v for k, v in body.items() if k not in _PROBLEM_KEYS}
    error: OrchestratorError
    if code in _INVALID_CODES:
        field_name = str(extras.pop("field", "body"))
        error = Invalid(field_name, detail.removeprefix(f"{field_name}: "))
    elif code in _ERRORS_BY_CODE:
        error = _ERRORS_BY_CODE[code](detail)
    else:
        error = OrchestratorError(detail)
        error.code = code
        error.status = status
        if status >= 500:
            error.title = "Server error"
    error.details.update(extras)
    retry_after = response.headers.get("Retry-After")
    if retry_after is not None:
        with contextlib.suppress(ValueError):
            error.details["retry_after_s"] = float(retry_after)
    return error
