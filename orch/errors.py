"""Domain errors shared by the embedded API and the HTTP layer.

Each error carries a stable machine-readable ``code`` and the HTTP ``status`` the
REST layer answers with, so both transports report the same failure the same way.
Messages are written for a person: they say what was wrong and, where it helps,
what to do instead.
"""

from __future__ import annotations

from typing import Any


class OrchestratorError(Exception):
    """Base of every error the orchestrator raises on purpose."""

    code = "error"
    status = 500
    title = "Orchestrator error"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        """The error as plain data (the body of a problem+json answer)."""
        return {"code": self.code, "title": self.title, "detail": self.message, **self.details}


class Invalid(OrchestratorError):
    """An argument is malformed or out of range; nothing was changed."""

    code = "invalid"
    status = 400
    title = "Invalid request"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}", field=field)
        self.field = field


class NotFound(OrchestratorError):
    """The named agent, task or lock does not exist."""

    code = "not_found"
    status = 404
    title = "Not found"


class Conflict(OrchestratorError):
    """The request clashes with the current state (busy agent, held lock, ...)."""

    code = "conflict"
    status = 409
    title = "Conflict"


class VersionMismatch(Conflict):
    """An update named a version that is no longer current (HTTP If-Match failed)."""

    code = "version_mismatch"
    status = 412
    title = "Precondition failed"


class IdempotencyKeyInUse(Conflict):
    """A request with this ``Idempotency-Key`` is still being answered; retry shortly.

    The IETF draft's answer to a retry that overtakes the original (409): the first
    one's answer will be kept, and a retry after it has ended gets that answer.
    """

    code = "idempotency_key_in_use"
    title = "Request with this key in progress"

    def __init__(self, message: str, retry_after_s: float = 1.0, **details: Any) -> None:
        super().__init__(message, retry_after_s=retry_after_s, **details)


class IdempotencyKeyReused(OrchestratorError):
    """An ``Idempotency-Key`` already used for another request (method, path or body).

    The IETF draft's 422: a key names one request; a different one needs a new key.
    """

    code = "idempotency_key_reused"
    status = 422
    title = "Idempotency key reused"


class Unauthorized(OrchestratorError):
    """No credentials, or credentials that do not match any identity."""

    code = "unauthorized"
    status = 401
    title = "Unauthorized"


class Forbidden(OrchestratorError):
    """Valid credentials that do not allow this action (another agent's token)."""

    code = "forbidden"
    status = 403
    title = "Forbidden"


class TooManyRequests(OrchestratorError):
    """The caller is over a limit (queued tasks, failed logins); retry after ``retry_after_s``.

    Distinct from ``Unavailable``: the service is fine, this caller must slow down.
    """

    code = "too_many_requests"
    status = 429
    title = "Too many requests"

    def __init__(self, message: str, retry_after_s: float = 1.0, **details: Any) -> None:
        super().__init__(message, retry_after_s=retry_after_s, **details)
        self.retry_after_s = retry_after_s


class Unavailable(OrchestratorError):
    """The orchestrator cannot answer now (overloaded, stopping, store failing)."""

    code = "unavailable"
    status = 503
    title = "Service unavailable"


class Timeout(Unavailable, TimeoutError):
    """An operation did not finish within its time limit."""

    code = "timeout"
    title = "Timed out"


class StoreError(Unavailable):
    """The store refused or failed a write; the change was not applied."""

    code = "store_unavailable"
    title = "Store unavailable"


class NotLeader(Unavailable):
    """This node of a cluster is a standby: only the leader answers (``leader`` names
    its URL, or is None while nobody leads). Over HTTP a standby forwards to the
    leader, so clients see this only as 503 ``no_leader`` while nobody leads."""

    code = "no_leader"
    title = "Not the leader"

    def __init__(self, message: str, leader: str | None = None, **details: Any) -> None:
        super().__init__(message, leader=leader, **details)
        self.leader = leader


class BackupError(StoreError):
    """A backup of the store could not be made; nothing was left at its destination."""

    code = "backup_failed"
    title = "Backup failed"


class TaskFailed(OrchestratorError):
    """A task ended ``dead``: it failed and has no attempts left."""

    code = "task_failed"
    status = 409
    title = "Task failed"


class TaskCancelled(OrchestratorError):
    """A task was cancelled before it completed."""

    code = "task_cancelled"
    status = 409
    title = "Task cancelled"


class LoggedFailure(Exception):
    """An actor's failure whose cause was already logged where it happened.

    The runtime stops the actor as for any failure but does not log Pykka's
    "Unhandled exception" traceback, which would show only the orchestrator's own
    frames, a second time, instead of the cause.
    """


class AgentCrashed(LoggedFailure):
    """In-process agent code raised; the agent's actor dies and is restarted.

    Deliberately not an ``OrchestratorError``: it never reaches a caller, it is the
    reason an AgentActor stops so that its Supervisor restarts it. The user's
    exception, with its own traceback, was logged by the runner that caught it.
    """
