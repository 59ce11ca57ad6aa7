"""``AgentClient``: what a remote agent runs (the worker side of the SDK).

It registers, starts, heartbeats on a background thread at the interval the
orchestrator sends back, receives assignments through the heartbeat, holds leased
locks that renew themselves (``orch.client.leases``), and stops (drained) on exit.
The agent's token lives only in this object's memory. Every call to the server goes
through an ``OrchestratorClient`` (``orch.client.endpoint``); this module adds the
threads and the rules about them.

A little over 500 lines, kept whole on purpose: the heartbeat thread, the inbox, the
drain on exit and the lost-lock queue share one condition (``_state``), and splitting
the class would spread what that condition guards over several modules.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any

from orch.client.answers import AssignedTask, Heartbeat, Registration
from orch.client.endpoint import DEFAULT_TIMEOUT_S, DEFAULT_URL, OrchestratorClient
from orch.client.leases import HeldLock, LockLost
from orch.errors import (
    Conflict,
    Forbidden,
    Invalid,
    NotFound,
    OrchestratorError,
    Unauthorized,
    Unavailable,
    VersionMismatch,
)

__all__ = ["AgentClient"]

logger = logging.getLogger("orch.client")


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

    ``token`` joins a registration someone else made, as a launcher does for the
    processes it starts (``ORCH_AGENT_ID`` and ``ORCH_AGENT_TOKEN``): the agent is
    neither registered nor started nor stopped here, only heartbeated, because its
    lifecycle is the launcher's. If the orchestrator forgets it (lost, removed) it
    does not register again; the launcher, which sees that too, does.
    """

    def __init__(
        self,
        url: str | Sequence[str] = DEFAULT_URL,  # several: see OrchestratorClient
        *,
        agent_id: str,
        agent_type: str = "implementation",
        capabilities: Iterable[str] = (),
        metadata: Mapping[str, Any] | None = None,
        project_id: str | None = None,
        max_concurrent_tasks: int | None = None,
        admin_token: str | None = None,
        token: str | None = None,
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

        self._token: str | None = token
        self.joined = token is not None
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
        if self.joined:
            try:
                self._absorb(self.client.heartbeat(self.agent_id, token=self._current_token()))
            except Unavailable as exc:
                # The launcher keeps its processes through an outage; so does the agent:
                # the heartbeat thread retries with backoff until the server is back.
                self._failed_beat(exc)
            self._start_beating()
            return self
        self._register(take_over_stopped=True)
        try:
            self._absorb(self.client.heartbeat(self.agent_id, token=self._current_token()))
        except OrchestratorError:
            # Do not leave a started agent behind that nobody heartbeats for.
            with contextlib.suppress(OrchestratorError):
                self.client.stop_agent(self.agent_id, drain=False)
            raise
        self._start_beating()
        return self

    def _start_beating(self) -> None:
        self._beater = threading.Thread(
            target=self._heartbeat_loop, name=f"heartbeat-{self.agent_id}", daemon=True
        )
        self._beater.start()

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
            if self.joined:
                return  # the launcher stops the agent: stopping is not this process's call
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
                            return dataclasses.replace(task, agent=self)
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

    def progress(
        self, task: AssignedTask | int | str, message: str, percent: float | None = None
    ) -> dict[str, Any]:
        """Say how far ``task`` has come: a note (<= 1 KiB) and optionally 0-100 percent.

        The orchestrator keeps the latest report with the task (``GET /tasks/{id}``) and
        puts it in the event feed. It does not extend the task's lease.
        """
        task_id = task.task_id if isinstance(task, AssignedTask) else task
        return self.client.report_progress(
            self.agent_id, task_id, message, percent, token=self._current_token()
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
        if self._closing or self.joined:
            # Joined: the registration is the launcher's, which re-registers it.
            self._failed_beat(exc)
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
