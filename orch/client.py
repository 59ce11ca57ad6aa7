"""The Python client of the REST API: ``OrchestratorClient`` and ``AgentClient``.

``OrchestratorClient`` is one method per endpoint, named and shaped like the embedded
facade (``orch.Orchestrator``) so code can move between the two transports. Errors
come back as the same ``orch.errors`` classes the facade raises, rebuilt from the
problem+json ``code``; a server that cannot be reached is ``Unreachable`` (an
``Unavailable``), so callers never see a ``requests`` exception.

``AgentClient`` is what a remote agent runs: it registers, starts, heartbeats on a
background thread at the interval the orchestrator sends back, receives assignments
through the heartbeat, holds leased locks that renew themselves, and stops (drained)
on exit. The agent's token lives only in this object's memory.

    with AgentClient("http://127.0.0.1:8005", agent_id="worker-1",
                     agent_type="implementation", capabilities=["code"]) as agent:
        for task in agent.tasks(timeout=30):
            with agent.lock("repo:june", ttl_s=30):
                result = {"echo": task.payload}
            agent.complete(task, result=result)
"""

from __future__ import annotations

import collections
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any
from urllib.parse import quote

import requests

from orch.errors import (
    Conflict,
    Forbidden,
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

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "DEFAULT_URL",
    "TERMINAL_TASK_STATES",
    "AgentClient",
    "AssignedTask",
    "Heartbeat",
    "HeldLock",
    "LockGrant",
    "LockLost",
    "OrchestratorClient",
    "Registration",
    "Unreachable",
    "error_from_response",
]

logger = logging.getLogger("orch.client")

#: Where ``make run`` serves the API.
DEFAULT_URL = "http://127.0.0.1:8005"
#: How long any one call may take, unless it waits on purpose (long-poll, lock wait).
DEFAULT_TIMEOUT_S = 10.0
#: Task states that do not change any more.
TERMINAL_TASK_STATES = frozenset({"completed", "dead", "cancelled"})


class Unreachable(Unavailable):
    """No connection to the orchestrator (refused, reset, DNS, connect time-out).

    Separate from other ``Unavailable`` answers because the cure differs: the server
    is not there at all, rather than there and busy.
    """

    code = "unreachable"
    title = "Cannot connect"


class LockLost(Conflict):
    """A lock this agent held was lost (renewal refused, or the lease ran out).

    Raised in the thread that holds the lock, at its next SDK call or when its
    ``with`` block ends, so work done under a lock that was no longer held is not
    reported as if it had been.
    """

    code = "lock_lost"
    title = "Lock lost"


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

    @property
    def key(self) -> tuple[str, int]:
        """Identity of this assignment: ``123`` and ``"123"`` are the same task."""
        return (str(self.task_id), self.attempt)

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


def _segment(value: object) -> str:
    """A path segment; ids are letters, digits and ``._:-`` but quote whatever comes."""
    return quote(str(value), safe=":")


# ----------------------------------------------------------------- the API


class OrchestratorClient:
    """Every endpoint of the REST API, as methods named like the embedded facade's.

    ``token`` is the admin token (needed when the server sets ``ORCH_ADMIN_TOKEN``);
    agent-scoped calls (heartbeat, complete, fail, locks) take the agent's own token
    in their ``token`` argument instead. Every call has a time limit: ``timeout_s``,
    plus the wait asked for where the server waits on purpose. Calls are not retried:
    what to do about an ``Unavailable`` is the caller's decision.
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        token: str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        session: requests.Session | None = None,
    ) -> None:
        if timeout_s <= 0:
            raise Invalid("timeout_s", "must be positive")
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self._token = token
        self._session = session or requests.Session()
        # Pool room for a heartbeat thread, lock renewers and the caller's threads.
        adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=32)
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)

    def __repr__(self) -> str:
        return f"OrchestratorClient({self.url!r})"

    def close(self) -> None:
        """Close pooled connections."""
        self._session.close()

    def __enter__(self) -> OrchestratorClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -------------------------------------------------------------- transport

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        token: str | None = None,
        headers: Mapping[str, str] | None = None,
        wait_s: float = 0.0,
        accept_statuses: Iterable[int] = (),
    ) -> requests.Response:
        """Send one request; raise the domain error an error answer stands for.

        ``wait_s`` lengthens the read time limit for calls the server holds on
        purpose; ``accept_statuses`` are error statuses whose body is an answer
        (``/health`` says ``unhealthy`` with a 503).
        """
        sent_headers = {"Accept": "application/json"}
        bearer = token if token is not None else self._token
        if bearer:
            sent_headers["Authorization"] = f"Bearer {bearer}"
        sent_headers.update(headers or {})
        query = {k: v for k, v in (params or {}).items() if v is not None}
        read_timeout_s = self.timeout_s + wait_s
        try:
            response = self._session.request(
                method,
                self.url + path,
                json=json,
                params=query,
                headers=sent_headers,
                timeout=(self.timeout_s, read_timeout_s),
            )
        except requests.ConnectionError as exc:
            raise Unreachable(f"cannot connect to {self.url} ({_reason(exc)})") from None
        except requests.Timeout:
            raise Timeout(
                f"{method} {path}: no answer from {self.url} within {read_timeout_s:g}s"
            ) from None
        except requests.RequestException as exc:
            raise Unavailable(f"{method} {path} failed: {exc}") from None
        if response.status_code >= 400 and response.status_code not in set(accept_statuses):
            raise error_from_response(response)
        return response

    def _json(self, method: str, path: str, **options: Any) -> Any:
        response = self.request(method, path, **options)
        try:
            return response.json()
        except ValueError:
            raise Unavailable(
                f"{method} {path}: the answer from {self.url} is not JSON "
                f"(HTTP {response.status_code}); is this a June Orchestrator?"
            ) from None

    # ------------------------------------------------------------ monitoring

    def health(self) -> dict[str, Any]:
        """``{status, checks, ...}``; an ``unhealthy`` server's 503 answer is returned too."""
        return self._json("GET", "/health", accept_statuses=(503,))

    def metrics(self, openmetrics: bool = False) -> str:
        """The Prometheus text exposition (OpenMetrics when asked)."""
        accept = "application/openmetrics-text" if openmetrics else "text/plain"
        return self.request("GET", "/metrics", headers={"Accept": accept}).text

    def stats(self) -> dict[str, Any]:
        """Counts of agents, tasks and locks."""
        return self._json("GET", "/stats")

    def openapi(self) -> dict[str, Any]:
        """The server's OpenAPI 3.1 document."""
        return self._json("GET", "/openapi.json")

    def events(self, after: int = 0, *, wait_s: float = 0.0, limit: int = 1000) -> dict[str, Any]:
        """``{events, next}``: events after ``after``, long-polling up to ``wait_s`` (<= 20).

        Numbering restarts at 1 with the server: an ``after`` beyond its newest event
        answers at once with ``reset: true``, the events from the ring's start and
        ``next`` in the new numbering, so a follower passing ``next`` on carries on.
        """
        params = {"after": after, "limit": limit, "wait": wait_s or None}
        return self._json("GET", "/events", params=params, wait_s=wait_s)

    # ---------------------------------------------------------------- agents

    def register_agent(
        self,
        agent_id: str,
        agent_type: str,
        *,
        capabilities: Iterable[str] = (),
        metadata: Mapping[str, Any] | None = None,
        project_id: str | None = None,
        max_concurrent_tasks: int | None = None,
    ) -> Registration:
        """Register a remote agent; the answer's token is shown only this once."""
        body: dict[str, Any] = {
            "agent_id": agent_id,
            "agent_type": agent_type,
            "capabilities": list(capabilities),
            "metadata": dict(metadata or {}),
        }
        if project_id is not None:
            body["project_id"] = project_id
        if max_concurrent_tasks is not None:
            body["max_concurrent_tasks"] = max_concurrent_tasks
        answer = self._json("POST", "/agents/register", json=body)
        return Registration(answer["agent_id"], answer["status"], answer["token"])

    def agents(
        self,
        *,
        state: str | None = None,
        agent_type: str | None = None,
        capability: str | None = None,
        limit: int | None = None,
    ) -> dict[str, Any]:
        """``{agents, total, active}``, filtered by state, type and capability."""
        params = {
            "status": state,
            "agent_type": agent_type,
            "capability": capability,
            "limit": limit,
        }
        return self._json("GET", "/agents", params=params)

    def agent(self, agent_id: str) -> dict[str, Any]:
        """One agent (never its token)."""
        return self._json("GET", f"/agents/{_segment(agent_id)}")

    def start_agent(self, agent_id: str) -> dict[str, Any]:
        """Admit the agent to scheduling: ``started`` or ``already_active``."""
        return self._json("POST", f"/agents/{_segment(agent_id)}/start")

    def stop_agent(self, agent_id: str, drain: bool = True) -> dict[str, Any]:
        """Stop the agent: ``stopping`` while it drains, else ``stopped``."""
        return self._json("POST", f"/agents/{_segment(agent_id)}/stop", json={"drain": drain})

    def deregister_agent(self, agent_id: str) -> dict[str, Any]:
        """Remove the agent; its tasks are requeued, its locks released, its id freed."""
        return self._json("DELETE", f"/agents/{_segment(agent_id)}")

    def heartbeat(self, agent_id: str, *, token: str) -> Heartbeat:
        """Prove liveness; the answer lists every current assignment."""
        answer = self._json("POST", f"/agents/{_segment(agent_id)}/heartbeat", token=token)
        return Heartbeat.from_dict(answer)

    def agent_tasks(self, agent_id: str, *, token: str | None = None) -> dict[str, Any]:
        """``{agent_id, tasks}``: what the agent holds now (its own token or the admin's)."""
        return self._json("GET", f"/agents/{_segment(agent_id)}/tasks", token=token)

    def agent_config(self, agent_id: str) -> dict[str, Any]:
        """The agent's config with its ``version``."""
        return self._json("GET", f"/agents/{_segment(agent_id)}/config")

    def update_agent_config(
        self,
        agent_id: str,
        changes: Mapping[str, Any],
        *,
        expected_version: int | None = None,
        replace_all: bool = False,
    ) -> dict[str, Any]:
        """PATCH (``replace_all``: PUT) the config; a stale version is ``VersionMismatch``."""
        headers = {} if expected_version is None else {"If-Match": f'"{expected_version}"'}
        method = "PUT" if replace_all else "PATCH"
        return self._json(
            method, f"/agents/{_segment(agent_id)}/config", json=dict(changes), headers=headers
        )

    def config_defaults(self) -> dict[str, Any]:
        """The config newly registered agents get."""
        return self._json("GET", "/config/defaults")

    def set_config_defaults(self, changes: Mapping[str, Any]) -> dict[str, Any]:
        """Change the config agents registered from now on get."""
        return self._json("PUT", "/config/defaults", json=dict(changes))

    # ----------------------------------------------------------------- tasks

    def assign_task(
        self,
        payload: Mapping[str, Any] | None = None,
        *,
        task_id: int | str | None = None,
        agent_id: str | None = None,
        priority: int = 0,
        agent_type: str | None = None,
        capabilities: Iterable[str] = (),
        resources: Iterable[str] = (),
        max_attempts: int = 3,
        timeout_s: float | None = None,
        force: bool = False,
    ) -> dict[str, Any]:
        """Assign to ``agent_id`` or queue: ``{task_id, status: assigned|queued, agent_id}``."""
        body: dict[str, Any] = {
            "payload": dict(payload or {}),
            "priority": priority,
            "capabilities": list(capabilities),
            "resources": list(resources),
            "max_attempts": max_attempts,
            "force": force,
        }
        optional = {
            "task_id": task_id,
            "agent_id": agent_id,
            "agent_type": agent_type,
            "timeout_s": timeout_s,
        }
        body.update({k: v for k, v in optional.items() if v is not None})
        return self._json("POST", "/tasks/assign", json=body)

    def tasks(
        self, *, state: str | None = None, agent_id: str | None = None, limit: int | None = None
    ) -> list[dict[str, Any]]:
        """Tasks oldest first, filtered by state and agent."""
        params = {"status": state, "agent_id": agent_id, "limit": limit}
        return self._json("GET", "/tasks", params=params)["tasks"]

    def pending_tasks(self, limit: int | None = None) -> dict[str, Any]:
        """``{pending_tasks, count}`` in the order they will be assigned."""
        return self._json("GET", "/tasks/pending", params={"limit": limit})

    def task(self, task_id: int | str) -> dict[str, Any]:
        """One task with its state, attempts, agent, result or error."""
        return self._json("GET", f"/tasks/{_segment(task_id)}")

    def wait_for_task(
        self, task_id: int | str, timeout_s: float = 60.0, *, poll_interval_s: float = 0.2
    ) -> dict[str, Any]:
        """Poll the task until it has ended (completed, dead, cancelled); ``Timeout`` if not.

        Returns the final task whatever its end: a dead task is an answer, not an error.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            task = self.task(task_id)
            if task["status"] in TERMINAL_TASK_STATES:
                return task
            remaining_s = deadline - time.monotonic()
            if remaining_s <= 0:
                raise Timeout(
                    f"task {task_id!r} has not ended after {timeout_s:g}s (it is {task['status']})",
                    task_id=task_id,
                    status=task["status"],
                )
            time.sleep(min(poll_interval_s, remaining_s))

    def complete_task(
        self, agent_id: str, task_id: int | str, result: Any = None, *, token: str
    ) -> dict[str, Any]:
        """Report success as the agent holding the task."""
        body = {"agent_id": agent_id, "result": result}
        return self._json("POST", f"/tasks/{_segment(task_id)}/complete", json=body, token=token)

    def fail_task(
        self, agent_id: str, task_id: int | str, error: str, retryable: bool = True, *, token: str
    ) -> dict[str, Any]:
        """Report failure as the agent holding the task; retried by policy if ``retryable``."""
        body = {"agent_id": agent_id, "error": error, "retryable": retryable}
        return self._json("POST", f"/tasks/{_segment(task_id)}/fail", json=body, token=token)

    def cancel_task(self, task_id: int | str) -> dict[str, Any]:
        """Cancel a task that has not ended."""
        return self._json("POST", f"/tasks/{_segment(task_id)}/cancel")

    # ----------------------------------------------------------------- locks

    def acquire_lock(
        self,
        agent_id: str,
        resource: str,
        *,
        token: str,
        mode: str = "exclusive",
        ttl_s: float = 30.0,
        wait_s: float = 0.0,
    ) -> LockGrant:
        """Lease one resource, waiting in line up to ``wait_s``; refusal is ``Conflict``."""
        body = {"agent_id": agent_id, "mode": mode, "ttl_s": ttl_s, "wait_s": wait_s}
        answer = self._json(
            "POST", f"/locks/{_segment(resource)}/acquire", json=body, token=token, wait_s=wait_s
        )
        return LockGrant.from_dict(answer)

    def acquire_locks(
        self,
        agent_id: str,
        resources: Iterable[str | tuple[str, str]],
        *,
        token: str,
        ttl_s: float = 30.0,
        wait_s: float = 0.0,
    ) -> list[LockGrant]:
        """Lease several resources, all or none; items are names or ``(name, mode)``."""
        wanted = []
        for item in resources:
            name, mode = (item, "exclusive") if isinstance(item, str) else item
            wanted.append({"resource": name, "mode": mode})
        body = {"agent_id": agent_id, "resources": wanted, "ttl_s": ttl_s, "wait_s": wait_s}
        answer = self._json("POST", "/locks/acquire", json=body, token=token, wait_s=wait_s)
        return [LockGrant.from_dict(g) for g in answer["grants"]]

    def renew_lock(
        self, agent_id: str, resource: str, fencing_token: int, ttl_s: float = 30.0, *, token: str
    ) -> LockGrant:
        """Extend the lease named by its fencing token."""
        body = {"agent_id": agent_id, "fencing_token": fencing_token, "ttl_s": ttl_s}
        path = f"/locks/{_segment(resource)}/renew"
        return LockGrant.from_dict(self._json("POST", path, json=body, token=token))

    def release_lock(
        self, agent_id: str, resource: str, fencing_token: int, *, token: str
    ) -> dict[str, Any]:
        """Give the lease back."""
        body = {"agent_id": agent_id, "fencing_token": fencing_token}
        path = f"/locks/{_segment(resource)}/release"
        return self._json("POST", path, json=body, token=token)

    def locks(self) -> list[dict[str, Any]]:
        """Every held or awaited resource with its holders, waiters and fencing counter."""
        return self._json("GET", "/locks")["locks"]


def _reason(exc: requests.ConnectionError) -> str:
    """The innermost cause of a connection failure, without urllib3's object reprs."""
    text = str(exc.args[0] if exc.args else exc)
    for marker in ("Connection refused", "Name or service not known", "timed out", "reset"):
        if marker in text:
            return marker.lower()
    return text if len(text) < 160 else text[:157] + "..."


# -------------------------------------------------------------- the agent


class HeldLock:
    """A lease held by an ``AgentClient``, renewed at a third of its ttl until released.

    Use it as a context manager (``with agent.lock(...)``): leaving the block releases
    it. If a renewal is refused, or the lease runs out because renewals could not get
    through, the lock is *lost*: the holder's thread gets ``LockLost`` at its next SDK
    call or when the block ends, whichever comes first.
    """

    def __init__(self, agent: AgentClient, grant: LockGrant, ttl_s: float, granted_at: float):
        self.resource = grant.resource
        self.mode = grant.mode
        self.fencing_token = grant.fencing_token
        self.expires_at = grant.expires_at
        self.ttl_s = ttl_s
        self.renewals = 0
        self.lost: LockLost | None = None
        self._agent = agent
        self._holder = threading.get_ident()
        self._reported = False
        self._lease_deadline = granted_at + ttl_s  # monotonic, as seen from here
        self._done = threading.Event()
        self._renewer = threading.Thread(
            target=self._renew_until_done, name=f"lock-renewer-{self.resource}", daemon=True
        )
        self._renewer.start()

    def __repr__(self) -> str:
        state = "lost" if self.lost else ("released" if self._done.is_set() else "held")
        return f"<HeldLock {self.resource!r} token={self.fencing_token} {state}>"

    @property
    def held(self) -> bool:
        """True while the lease is held (not released, not lost)."""
        return self.lost is None and not self._done.is_set()

    def check(self) -> None:
        """Raise ``LockLost`` if the lock has been lost (for long work between SDK calls)."""
        if self.lost is not None:
            self._reported = True
            raise self.lost

    def __enter__(self) -> HeldLock:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
        if exc_type is None and self.lost is not None and not self._reported:
            self._reported = True
            raise self.lost

    def release(self) -> None:
        """Stop renewing and give the lease back (a no-op once released or lost)."""
        if self._done.is_set():
            return
        self._done.set()
        if self._renewer is not threading.current_thread():
            self._renewer.join(self._agent.client.timeout_s + 1)
        self._agent._forget_lock(self)
        if self.lost is not None:
            return
        try:
            self._agent.client.release_lock(
                self._agent.agent_id,
                self.resource,
                self.fencing_token,
                token=self._agent._current_token(),
            )
        except (NotFound, Unauthorized, Forbidden) as exc:
            # The lease was already gone: whatever ran under it ran without it.
            self._mark_lost(f"it was gone when released ({exc.message})", notify=False)
        except OrchestratorError as exc:
            # Unreachable: the lease runs out on its own at its ttl.
            logger.warning("could not release lock %r: %s", self.resource, exc.message)

    def abandon(self) -> None:
        """Stop renewing without releasing (the agent is stopping; the server frees it)."""
        self._done.set()

    def _renew_until_done(self) -> None:
        interval_s = self.ttl_s / 3
        wait_s = interval_s
        while not self._done.wait(wait_s):
            sent_at = time.monotonic()
            try:
                grant = self._agent.client.renew_lock(
                    self._agent.agent_id,
                    self.resource,
                    self.fencing_token,
                    self.ttl_s,
                    token=self._agent._current_token(),
                )
            except (NotFound, Conflict, Unauthorized, Forbidden) as exc:
                if not self._done.is_set():
                    self._mark_lost(f"renewal was refused: {exc.message}")
                return
            except OrchestratorError as exc:
                remaining_s = self._lease_deadline - time.monotonic()
                if remaining_s <= 0:
                    self._mark_lost(f"the lease ran out while renewals failed ({exc.message})")
                    return
                logger.warning("renewing lock %r failed (%s); retrying", self.resource, exc)
                wait_s = max(0.05, min(interval_s, remaining_s / 3))
                continue
            except Exception:  # a bug must not end renewals silently
                logger.exception("renewing lock %r failed", self.resource)
                self._mark_lost("renewal failed unexpectedly")
                return
            self.renewals += 1
            self.expires_at = grant.expires_at
            self._lease_deadline = sent_at + self.ttl_s
            wait_s = interval_s

    def _mark_lost(self, why: str, notify: bool = True) -> None:
        lost = LockLost(
            f"lock on {self.resource!r} (fencing token {self.fencing_token}) was lost: {why}",
            resource=self.resource,
            fencing_token=self.fencing_token,
        )
        if notify:
            # Set and queued for the holder in one step: whoever sees ``lost`` set can
            # rely on the holder's next SDK call raising it.
            self._agent._note_lost_lock(self, lost)
        else:
            self.lost = lost
        logger.warning("%s", lost.message)


class AgentClient:
    """A remote agent: registers, starts, heartbeats, takes work, holds locks, stops.

    * The heartbeat thread beats at the ``heartbeat_interval_s`` each answer carries
      (so an operator's config change takes effect at the next beat), and while a
      caller waits in ``tasks()`` with nothing to do it asks every
      ``poll_interval_s`` too, because the heartbeat is how assignments arrive.
    * When the orchestrator has declared the agent lost (heartbeat 409) or it was
      deregistered (heartbeat 401/404), the agent registers again, with a new
      token, and starts; its old assignments and locks are void.
    * When the config version changes, the config is read again and handed to
      ``on_config_change``.
    * On exit the agent is stopped. With ``drain`` (default) tasks still being worked
      on by other threads get ``drain_timeout_s`` to finish; tasks received but never
      handed out go back to the queue. If the ``with`` block ends with an exception,
      the tasks its thread was working on are failed (retryable) with it; on
      ``KeyboardInterrupt`` they are requeued without counting an attempt.

    ``admin_token`` is needed when the server sets ``ORCH_ADMIN_TOKEN`` (registration
    and start/stop are operator calls). The agent's own token is kept in memory only.
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        agent_id: str,
        agent_type: str = "implementation",
        capabilities: Iterable[str] = (),
        metadata: Mapping[str, Any] | None = None,
        project_id: str | None = None,
        max_concurrent_tasks: int | None = None,
        admin_token: str | None = None,
        drain: bool = True,
        drain_timeout_s: float = 30.0,
        poll_interval_s: float = 0.5,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        on_config_change: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        if poll_interval_s <= 0:
            raise Invalid("poll_interval_s", "must be positive")
        self.agent_id = agent_id
        self.agent_type = agent_type
        self.capabilities = list(capabilities)
        self.metadata = dict(metadata or {})
        self.project_id = project_id
        self.max_concurrent_tasks = max_concurrent_tasks
        self.drain = drain
        self.drain_timeout_s = drain_timeout_s
        self.poll_interval_s = poll_interval_s
        self.on_config_change = on_config_change
        self.client = OrchestratorClient(url, token=admin_token, timeout_s=timeout_s)

        self._token: str | None = None
        self._state = threading.Condition()
        self._inbox: collections.deque[AssignedTask] = collections.deque()
        self._current: dict[tuple[str, int], AssignedTask] = {}
        self._delivered: set[tuple[str, int]] = set()
        self._in_progress: dict[tuple[str, int], threading.Thread] = {}
        self._waiting_consumers = 0
        self._lost_locks: dict[int, list[HeldLock]] = {}
        self._held_locks: set[HeldLock] = set()
        self._closing = False
        self._beat_now = False
        self._wake = threading.Event()
        self._halt = threading.Event()
        self._beater: threading.Thread | None = None
        self._failures = 0
        self._last_beat_at = 0.0

        self.status = "unregistered"
        self.heartbeat_interval_s = 30.0
        self.config_version: int | None = None
        self.config: dict[str, Any] = {}
        self.registrations = 0
        self.heartbeats = 0
        self.recent_heartbeats_at: collections.deque[float] = collections.deque(maxlen=64)
        self.last_error: OrchestratorError | None = None

    def __repr__(self) -> str:
        return f"<AgentClient {self.agent_id!r} at {self.client.url} {self.status}>"

    # -------------------------------------------------------------- lifecycle

    def __enter__(self) -> AgentClient:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close(error=exc)

    def start(self) -> AgentClient:
        """Register, start and send the first heartbeat; then heartbeat in the background.

        Raises what the server answers (``Unauthorized`` without the admin token it
        needs, ``Conflict`` when the id belongs to a live agent).
        """
        if self._beater is not None:
            return self
        self._register(take_over_stopped=True)
        try:
            self._absorb(self.client.heartbeat(self.agent_id, token=self._current_token()))
        except OrchestratorError:
            # Do not leave a started agent behind that nobody heartbeats for.
            with contextlib.suppress(OrchestratorError):
                self.client.stop_agent(self.agent_id, drain=False)
            raise
        self._beater = threading.Thread(
            target=self._heartbeat_loop, name=f"heartbeat-{self.agent_id}", daemon=True
        )
        self._beater.start()
        return self

    def close(self, drain: bool | None = None, *, error: BaseException | None = None) -> None:
        """Stop the agent (draining by default), stop heartbeating, release resources.

        Errors talking to the server are logged, not raised: ``close`` runs on the way
        out, often while another exception is propagating.
        """
        if self._beater is None or self._halt.is_set():
            return
        drain = self.drain if drain is None else drain
        me = threading.current_thread()
        with self._state:
            self._closing = True
            self._inbox.clear()
            mine = [key for key, owner in self._in_progress.items() if owner is me]
            self._state.notify_all()
        stopped = False
        try:
            if isinstance(error, Exception) and mine:
                self._fail_abandoned(mine, error)
            answer = self.client.stop_agent(self.agent_id, drain=drain)
            if answer["status"] == "stopping":
                self._wait_for_others(me, time.monotonic() + self.drain_timeout_s)
                # What is left was never handed out or is abandoned: back to the queue.
                self.client.stop_agent(self.agent_id, drain=False)
            stopped = True
        except OrchestratorError as exc:
            logger.warning("stopping agent %r failed: %s", self.agent_id, exc.message)
        finally:
            self._halt.set()
            self._wake.set()
            if self._beater is not threading.current_thread():
                self._beater.join(self.client.timeout_s + 1)
            # After the join: a beat in flight during the stop must not overwrite this.
            if stopped:
                self.status = "stopped"
            for held in list(self._held_locks):
                held.abandon()
            self.client.close()

    def _fail_abandoned(self, keys: list[tuple[str, int]], error: Exception) -> None:
        for task_id, _attempt in keys:
            try:
                self.client.fail_task(
                    self.agent_id,
                    task_id,
                    f"agent stopped by {type(error).__name__}: {error}"[:4096],
                    True,
                    token=self._current_token(),
                )
            except OrchestratorError as exc:
                logger.warning("could not report task %r failed: %s", task_id, exc.message)
            with self._state:
                self._in_progress.pop((task_id, _attempt), None)

    def _wait_for_others(self, me: threading.Thread, deadline: float) -> None:
        """Let tasks other live threads are working on finish, until ``deadline``."""
        with self._state:
            while True:
                others = [t for t in self._in_progress.values() if t is not me and t.is_alive()]
                remaining_s = deadline - time.monotonic()
                if not others or remaining_s <= 0 or self.status == "stopped":
                    return
                self._state.wait(min(remaining_s, 0.5))

    # ------------------------------------------------------------------ work

    def tasks(self, timeout: float | None = None) -> Iterator[AssignedTask]:
        """Yield assignments as they arrive; end after ``timeout`` s without one.

        ``timeout=None`` waits for ever (until the agent is closed). Each assignment
        is yielded once (deduplicated by task id and attempt).
        """
        while True:
            task = self.next_task(timeout)
            if task is None:
                return
            yield task

    def next_task(self, timeout: float | None = None) -> AssignedTask | None:
        """The next assignment, or ``None`` if none arrives within ``timeout`` s."""
        self._raise_if_lock_lost()
        self._require_started()
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._state:
            self._waiting_consumers += 1
            self._wake.set()  # the heartbeat thread may now poll sooner
            try:
                while True:
                    while self._inbox:
                        task = self._inbox.popleft()
                        if task.key in self._current:  # not cancelled or requeued meanwhile
                            self._in_progress[task.key] = threading.current_thread()
                            return task
                    if self._closing:
                        return None
                    remaining_s = None if deadline is None else deadline - time.monotonic()
                    if remaining_s is not None and remaining_s <= 0:
                        return None
                    self._state.wait(remaining_s)
            finally:
                self._waiting_consumers -= 1

    def complete(self, task: AssignedTask | int | str, result: Any = None) -> dict[str, Any]:
        """Report ``task`` done with ``result`` (JSON-serialisable)."""
        self._raise_if_lock_lost()
        return self._report(
            task,
            lambda task_id: self.client.complete_task(
                self.agent_id, task_id, result, token=self._current_token()
            ),
        )

    def fail(
        self, task: AssignedTask | int | str, error: str, retryable: bool = True
    ) -> dict[str, Any]:
        """Report ``task`` failed; it is retried by policy unless ``retryable`` is false."""
        self._raise_if_lock_lost()
        return self._report(
            task,
            lambda task_id: self.client.fail_task(
                self.agent_id, task_id, error, retryable, token=self._current_token()
            ),
        )

    def _report(
        self, task: AssignedTask | int | str, send: Callable[[int | str], dict[str, Any]]
    ) -> dict[str, Any]:
        task_id = task.task_id if isinstance(task, AssignedTask) else task
        try:
            answer = send(task_id)
        except (NotFound, Conflict, Forbidden):
            self._finished(task_id)  # no longer ours: nothing left to report
            raise
        self._finished(task_id)
        return answer

    def _finished(self, task_id: int | str) -> None:
        with self._state:
            for key in [k for k in self._in_progress if k[0] == str(task_id)]:
                del self._in_progress[key]
            self._beat_now = True  # a slot is free: ask for the next task at once
            self._state.notify_all()
        self._wake.set()

    def lock(
        self,
        resource: str,
        ttl_s: float = 30.0,
        *,
        mode: str = "exclusive",
        wait_s: float = 0.0,
    ) -> HeldLock:
        """Lease ``resource`` now (waiting in line up to ``wait_s``); use as ``with``.

        A refusal raises ``Conflict`` whose ``details["holders"]`` names the holders.
        """
        self._raise_if_lock_lost()
        self._require_started()
        if ttl_s <= 0:
            raise Invalid("ttl_s", "must be positive")
        granted_at = time.monotonic()
        grant = self.client.acquire_lock(
            self.agent_id,
            resource,
            token=self._current_token(),
            mode=mode,
            ttl_s=ttl_s,
            wait_s=wait_s,
        )
        held = HeldLock(self, grant, ttl_s, granted_at)
        with self._state:
            self._held_locks.add(held)
        return held

    # --------------------------------------------------------- lost locks

    def _note_lost_lock(self, held: HeldLock, lost: LockLost) -> None:
        with self._state:
            held.lost = lost
            self._lost_locks.setdefault(held._holder, []).append(held)

    def _forget_lock(self, held: HeldLock) -> None:
        with self._state:
            self._held_locks.discard(held)

    def _raise_if_lock_lost(self) -> None:
        """Raise ``LockLost`` in a thread whose lock was lost and has not been told."""
        with self._state:
            lost = self._lost_locks.pop(threading.get_ident(), [])
        for held in lost:
            if not held._reported:
                held.check()

    # ------------------------------------------------------------- heartbeats

    def _current_token(self) -> str:
        if self._token is None:
            raise Unavailable(f"agent {self.agent_id!r} is not registered; call start() first")
        return self._token

    def _require_started(self) -> None:
        if self._beater is None:
            raise Unavailable(f"agent {self.agent_id!r} is not started; use it in a with block")
        if self._halt.is_set():
            raise Unavailable(f"agent {self.agent_id!r} has been closed")

    def _register(self, *, take_over_stopped: bool) -> None:
        def register() -> Registration:
            return self.client.register_agent(
                self.agent_id,
                self.agent_type,
                capabilities=self.capabilities,
                metadata=self.metadata,
                project_id=self.project_id,
                max_concurrent_tasks=self.max_concurrent_tasks,
            )

        try:
            registration = register()
        except Conflict as exc:
            if not take_over_stopped or not self._take_over(exc):
                raise
            registration = register()
        with self._state:
            self._token = registration.token
            # Whatever was assigned before belongs to an earlier registration.
            self._inbox.clear()
            self._current.clear()
            self._delivered.clear()
            self.config_version = None
        self.client.start_agent(self.agent_id)
        self.registrations += 1
        self.status = "idle"

    def _take_over(self, refusal: Conflict) -> bool:
        """A stopped or failed agent of this id is nobody's: deregister it and go again.

        Anything else (idle, busy, unhealthy) may be another live process; that is
        refused with advice, not taken over.
        """
        try:
            existing = self.client.agent(self.agent_id)
        except NotFound:
            return True  # gone in between
        state = existing["status"]
        if state in ("stopped", "failed"):
            self.client.deregister_agent(self.agent_id)
            return True
        refusal.message = (
            f"agent {self.agent_id!r} is already registered and {state}: another process may "
            f"be running it. If that process is gone, remove it (june-orchestrator agents "
            f"remove {self.agent_id}) or wait until the orchestrator declares it lost"
        )
        refusal.args = (refusal.message,)
        return False

    def _heartbeat_loop(self) -> None:
        while not self._halt.is_set():
            delay_s = self._next_beat_in()
            if delay_s > 0 and self._wake.wait(delay_s):
                self._wake.clear()
                continue  # something changed: work out the delay again
            if self._halt.is_set():
                return
            self._beat_once()

    def _next_beat_in(self) -> float:
        with self._state:
            if self._beat_now:
                self._beat_now = False
                return 0.0
            interval_s = self.heartbeat_interval_s
            if self._failures:
                interval_s = min(interval_s, 0.1 * 2 ** min(self._failures, 6))
            elif self._waiting_consumers and not self._inbox and not self._closing:
                interval_s = min(interval_s, self.poll_interval_s)
            return self._last_beat_at + interval_s - time.monotonic()

    def _beat_once(self) -> None:
        self._last_beat_at = time.monotonic()
        try:
            answer = self.client.heartbeat(self.agent_id, token=self._current_token())
        except VersionMismatch as exc:  # never expected from a heartbeat
            self._failed_beat(exc)
        except (Conflict, NotFound, Unauthorized) as exc:
            self._recover(exc)
        except OrchestratorError as exc:
            self._failed_beat(exc)
        except Exception:  # a bug must not end heartbeats silently
            logger.exception("heartbeat of %r failed", self.agent_id)
            self._failures += 1
        else:
            self._absorb(answer)

    def _failed_beat(self, exc: OrchestratorError) -> None:
        if self._failures == 0:
            logger.warning("heartbeat of %r failed: %s; retrying", self.agent_id, exc.message)
        self._failures += 1
        self.last_error = exc

    def _recover(self, exc: OrchestratorError) -> None:
        """The orchestrator no longer knows this agent as live: become it again."""
        if self._closing:
            self._failures += 1
            return
        try:
            if exc.details.get("state") == "failed":
                logger.warning("agent %r had failed; starting it again", self.agent_id)
                self.client.start_agent(self.agent_id)
            else:
                logger.warning("%s; registering %r again", exc.message, self.agent_id)
                self._register(take_over_stopped=False)
            self._failures = 0
            with self._state:
                self._beat_now = True
        except OrchestratorError as again:
            self._failed_beat(again)

    def _absorb(self, beat: Heartbeat) -> None:
        """Take in a heartbeat answer: state, cadence, new assignments, config version."""
        now = time.monotonic()
        with self._state:
            self._failures = 0
            self.last_error = None
            self.heartbeats += 1
            self.recent_heartbeats_at.append(now)
            self.status = beat.status
            self.heartbeat_interval_s = beat.heartbeat_interval_s
            current = {task.key: task for task in beat.assignments}
            self._current = current
            self._delivered &= current.keys()
            if not self._closing:
                for task in beat.assignments:
                    if task.key not in self._delivered:
                        self._delivered.add(task.key)
                        self._inbox.append(task)
            self._state.notify_all()
            config_changed = beat.config_version != self.config_version
            self.config_version = beat.config_version
        if config_changed:
            self._reload_config(beat)

    def _reload_config(self, beat: Heartbeat) -> None:
        try:
            config = self.client.agent_config(self.agent_id)
        except (Unauthorized, Forbidden):
            # Reading config is an operator call: make do with what the heartbeat says.
            config = {**self.config, "version": beat.config_version}
            config["heartbeat_interval_s"] = beat.heartbeat_interval_s
        except OrchestratorError as exc:
            logger.warning("could not read the config of %r: %s", self.agent_id, exc.message)
            with self._state:
                self.config_version = None  # try again at the next beat
            return
        self.config = config
        if self.on_config_change is not None:
            try:
                self.on_config_change(dict(config))
            except Exception:
                logger.exception("on_config_change of %r raised", self.agent_id)
