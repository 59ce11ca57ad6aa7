"""``OrchestratorClient``: one method per REST endpoint, and nothing that runs an agent.

Named and shaped like the embedded facade (``orch.Orchestrator``) so code can move
between the two transports. Errors come back as the same ``orch.errors`` classes the
facade raises (``orch.client.answers``); a server that cannot be reached is
``Unreachable`` (an ``Unavailable``), so callers never see a ``requests`` exception.

A script that only submits and watches work imports this module and never the agent
runtime (``orch.client.agent``): no heartbeat or renewal threads come with it.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import quote, urlsplit

import requests

from orch.client.answers import Heartbeat, LockGrant, Registration, error_from_response
from orch.errors import Invalid, Timeout, Unavailable

__all__ = [
    "DEFAULT_FAILOVER_WAIT_S",
    "DEFAULT_TIMEOUT_S",
    "DEFAULT_URL",
    "TERMINAL_TASK_STATES",
    "OrchestratorClient",
    "Unreachable",
    "parse_urls",
]

#: Where ``make run`` serves the API.
DEFAULT_URL = "http://127.0.0.1:8005"
#: How long any one call may take, unless it waits on purpose (long-poll, lock wait).
DEFAULT_TIMEOUT_S = 10.0
#: How long one call keeps trying the servers it was given (moving on from one that
#: cannot be reached or has no leader) before it gives up: a failover, or a server
#: restarting, takes seconds.
DEFAULT_FAILOVER_WAIT_S = 10.0
#: The first pause after every server failed once, doubled after each round, up to the max.
BACKOFF_INITIAL_S = 0.1
BACKOFF_MAX_S = 2.0
#: Methods whose calls carry an ``Idempotency-Key`` unless told otherwise.
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
IDEMPOTENCY_KEY = "Idempotency-Key"
#: The problem codes that mean "this server cannot answer now, another may":
#: a cluster node without a leader, and a retry that overtook its own first try.
MOVE_ON_CODES = frozenset({"no_leader", "idempotency_key_in_use"})
#: Task states that do not change any more.
TERMINAL_TASK_STATES = frozenset({"completed", "dead", "cancelled"})


class Unreachable(Unavailable):
    """No server given could be used (refused, reset, DNS, connect time-out, no leader).

    Raised once every URL has been tried for the client's ``failover_wait_s``; the
    message names each with what it last said. Separate from other ``Unavailable``
    answers because the cure differs: the server is not there at all, rather than
    there and busy.
    """

    code = "unreachable"
    title = "Cannot connect"


def parse_urls(urls: str | Sequence[str]) -> tuple[str, ...]:
    """The servers to try, in order: ``ORCH_URL`` may list several, separated by commas."""
    items = urls.split(",") if isinstance(urls, str) else list(urls)
    parsed = tuple(item.strip().rstrip("/") for item in items if item.strip())
    if not parsed:
        raise Invalid("url", "give at least one URL (several are separated by commas)")
    for url in parsed:
        # Checked here, not at the first call: requests would only say "No connection
        # adapters were found", which names neither the value's fault nor its fix.
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise Invalid(
                "url",
                f"{url!r} is not an orchestrator URL; give http:// or https:// and a host,"
                f" like {DEFAULT_URL}",
            )
    return parsed


def _segment(value: object) -> str:
    """A path segment; ids are letters, digits and ``._:-`` but quote whatever comes.

    A segment of dots only is refused here: requests and urllib3 undo ``%2E`` and then
    drop dot segments, so ``/locks/../acquire`` would leave as ``/acquire`` (another
    endpoint), and the server never accepts such an id anyway.
    """
    text = str(value)
    if text.strip(".") == "":
        raise Invalid("id", f"{text!r} cannot be an id: ids are not made of dots only")
    return quote(text, safe=":")


class OrchestratorClient:
    """Every endpoint of the REST API, as methods named like the embedded facade's.

    ``token`` is the admin token (needed when the server sets ``ORCH_ADMIN_TOKEN``);
    agent-scoped calls (heartbeat, complete, fail, locks) take the agent's own token
    in their ``token`` argument instead. Every call has a time limit: ``timeout_s``,
    plus the wait asked for where the server waits on purpose.

    ``url`` may name several servers (a list, or one string with commas, as
    ``ORCH_URL`` does): the nodes of a cluster, any of which forwards to the leader.
    A call goes to the one that answered last; when it cannot be reached, or answers
    503 ``no_leader``, the call moves on to the next, and after a round where every
    one failed it waits (0.1 s, doubling up to 2 s, or the ``Retry-After`` asked for)
    and goes round again, for ``failover_wait_s`` at most in all. Then it raises
    ``Unreachable`` naming every server and what each said. Writes carry an
    ``Idempotency-Key`` (a fresh UUID per call, the same on each of its tries), so a
    write whose answer was lost on the way is never applied twice. Other failures
    (4xx, other 5xx, a time-out while waiting for the answer) are not retried: what
    to do about them is the caller's decision. ``sleep`` and ``monotonic`` are the
    clock the waits use (tests pass their own).
    """

    def __init__(
        self,
        url: str | Sequence[str] = DEFAULT_URL,
        *,
        token: str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        failover_wait_s: float = DEFAULT_FAILOVER_WAIT_S,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if timeout_s <= 0:
            raise Invalid("timeout_s", "must be positive")
        if failover_wait_s < 0:
            raise Invalid("failover_wait_s", "must not be negative")
        self.urls = parse_urls(url)
        #: The server calls go to first: the one that answered last.
        self.url = self.urls[0]
        self.timeout_s = timeout_s
        self.failover_wait_s = failover_wait_s
        self._sleep = sleep
        self._monotonic = monotonic
        self._token = token
        self._session = session or requests.Session()
        # Pool room for a heartbeat thread, lock renewers and the caller's threads.
        adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=32)
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)

    def __repr__(self) -> str:
        return f"OrchestratorClient({','.join(self.urls)!r})"

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
        keyed: bool | None = None,
        failover_wait_s: float | None = None,
    ) -> requests.Response:
        """Send one request (trying each server, see the class doc); raise the domain
        error an error answer stands for.

        ``wait_s`` lengthens the read time limit for calls the server holds on
        purpose; ``accept_statuses`` are error statuses whose body is an answer
        (``/health`` says ``unhealthy`` with a 503). ``keyed`` says whether the call
        carries an ``Idempotency-Key`` (default: writes do; one given in ``headers``
        is kept). ``failover_wait_s`` bounds this call's retries instead of the
        client's (a lock renewal must not outlast its lease).
        """
        sent_headers = {"Accept": "application/json"}
        bearer = token if token is not None else self._token
        if bearer:
            sent_headers["Authorization"] = f"Bearer {bearer}"
        sent_headers.update(headers or {})
        if (method in WRITE_METHODS if keyed is None else keyed) and not any(
            name.lower() == IDEMPOTENCY_KEY.lower() for name in sent_headers
        ):
            # One key for every try of this call: a retry is the same request.
            sent_headers[IDEMPOTENCY_KEY] = f'"{uuid.uuid4()}"'
        query = {k: v for k, v in (params or {}).items() if v is not None}
        read_timeout_s = self.timeout_s + wait_s
        budget_s = self.failover_wait_s if failover_wait_s is None else failover_wait_s
        deadline = self._monotonic() + budget_s
        failures: dict[str, str] = {}
        rounds = 0
        while True:
            retry_after_s = 0.0
            for url in self._in_turn():
                try:
                    response = self._session.request(
                        method,
                        url + path,
                        json=json,
                        params=query,
                        headers=sent_headers,
                        timeout=(self.timeout_s, read_timeout_s),
                    )
                except requests.ConnectionError as exc:
                    failures[url] = _reason(exc)
                    continue
                except requests.Timeout:
                    raise Timeout(
                        f"{method} {path}: no answer from {url} within {read_timeout_s:g}s"
                    ) from None
                except requests.RequestException as exc:
                    raise Unavailable(f"{method} {path} failed: {exc}") from None
                code = _move_on_code(response)
                if code is None:
                    self.url = url
                    break
                failures[url] = f"{response.status_code} {code}"
                retry_after_s = max(retry_after_s, _retry_after_s(response))
            else:
                pause_s = max(min(BACKOFF_MAX_S, BACKOFF_INITIAL_S * 2**rounds), retry_after_s)
                if self._monotonic() + pause_s > deadline:
                    raise Unreachable(_unreachable_message(failures))
                self._sleep(pause_s)
                rounds += 1
                continue
            break
        if response.status_code >= 400 and response.status_code not in set(accept_statuses):
            raise error_from_response(response)
        return response

    def _in_turn(self) -> list[str]:
        """The servers in the order to try them: the last one that answered first."""
        start = self.urls.index(self.url)
        return [*self.urls[start:], *self.urls[:start]]

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

    def events(
        self,
        after: int = 0,
        *,
        wait_s: float = 0.0,
        limit: int = 1000,
        epoch: str | None = None,
    ) -> dict[str, Any]:
        """``{events, next, epoch}``: events after ``after``, long-polling up to ``wait_s``.

        Numbering restarts at 1 with the server, so pass the last answer's ``epoch``
        back: from a restarted server the answer comes at once with ``reset: true``,
        the events from the ring's start and ``next`` in the new numbering. An
        ``after`` beyond the newest event answers at once with ``ahead: true``, no
        events and ``next`` the newest seq.
        """
        params = {"after": after, "limit": limit, "wait": wait_s or None, "epoch": epoch}
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

    def update_agent_metadata(self, agent_id: str, metadata: Mapping[str, Any]) -> dict[str, Any]:
        """Replace the agent's ``metadata``; returns the agent."""
        return self._json(
            "PUT", f"/agents/{_segment(agent_id)}/metadata", json={"metadata": dict(metadata)}
        )

    def process_exited(
        self,
        agent_id: str,
        *,
        restarting: bool,
        exit_code: int | None = None,
        signal: str | None = None,
    ) -> dict[str, Any]:
        """Report that the agent's process ended (a launcher's call): ``{status, restarts}``."""
        body: dict[str, Any] = {"restarting": restarting}
        if exit_code is not None:
            body["exit_code"] = exit_code
        if signal is not None:
            body["signal"] = signal
        return self._json("POST", f"/agents/{_segment(agent_id)}/exits", json=body)

    def heartbeat(self, agent_id: str, *, token: str) -> Heartbeat:
        """Prove liveness; the answer lists every current assignment.

        Sent without an ``Idempotency-Key``: a heartbeat sent twice is two proofs of
        life, each answered with the assignments as they are, and keeping a day of
        every agent's heartbeat answers would cost the store more than all the rest.
        """
        answer = self._json(
            "POST", f"/agents/{_segment(agent_id)}/heartbeat", token=token, keyed=False
        )
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

    def report_progress(
        self,
        agent_id: str,
        task_id: int | str,
        message: str,
        percent: float | None = None,
        *,
        token: str,
    ) -> dict[str, Any]:
        """Say how far the task has come, as the agent holding it (message <= 1 KiB)."""
        body: dict[str, Any] = {"agent_id": agent_id, "message": message}
        if percent is not None:
            body["percent"] = percent
        return self._json("POST", f"/tasks/{_segment(task_id)}/progress", json=body, token=token)

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
        self,
        agent_id: str,
        resource: str,
        fencing_token: int,
        ttl_s: float = 30.0,
        *,
        token: str,
        failover_wait_s: float | None = None,
    ) -> LockGrant:
        """Extend the lease named by its fencing token (retrying for ``failover_wait_s``)."""
        body = {"agent_id": agent_id, "fencing_token": fencing_token, "ttl_s": ttl_s}
        path = f"/locks/{_segment(resource)}/renew"
        answer = self._json("POST", path, json=body, token=token, failover_wait_s=failover_wait_s)
        return LockGrant.from_dict(answer)

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


def _move_on_code(response: requests.Response) -> str | None:
    """The problem code of an answer that says "try another server", else None."""
    if response.status_code not in (409, 503):
        return None
    if not response.headers.get("Content-Type", "").startswith("application/problem+json"):
        return None
    try:
        code = response.json().get("code")
    except (ValueError, AttributeError):
        return None
    return code if code in MOVE_ON_CODES else None


def _retry_after_s(response: requests.Response) -> float:
    """The wait a ``Retry-After`` of whole seconds asks for (0 without one), at most 60 s."""
    try:
        return min(60.0, max(0.0, float(response.headers.get("Retry-After", 0))))
    except ValueError:
        return 0.0


def _unreachable_message(failures: Mapping[str, str]) -> str:
    """``cannot connect to URL (why)``, naming every server tried and its last failure."""
    tried = [f"{url} ({why})" for url, why in failures.items()]
    return "cannot connect to " + " or ".join(tried)


def _reason(exc: requests.ConnectionError) -> str:
    """The innermost cause of a connection failure, without urllib3's object reprs."""
    text = str(exc.args[0] if exc.args else exc)
    for marker in ("Connection refused", "Name or service not known", "timed out", "reset"):
        if marker in text:
            return marker.lower()
    return text if len(text) < 160 else text[:157] + "..."
