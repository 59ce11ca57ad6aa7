"""``LocksController``: leases on named resources, taken, renewed and given back by agents.

The LockBroker owns every lock. An acquire that may wait in line gets its answer on
a future of its own, so the ask itself never waits longer than the ask time-out.
The Scheduler also takes locks for tasks with resources, in the task's name; the
listing translates such an owner back to the task id as it was submitted.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import pykka

from orch.actors.scheduler import task_key_of_lock_owner
from orch.config import Settings
from orch.controllers.base import Actors
from orch.errors import Conflict, Timeout
from orch.events import Events
from orch.model import LockMode, validate_id, validate_int, validate_positive
from orch.validation import parse_lock_requests, validate_wait

#: Fencing tokens are positive 64-bit integers (they count grants of a resource).
MAX_FENCING_TOKEN = 2**63 - 1


class LocksController:
    """The locks' side of the embedded API (``Orchestrator.acquire_lock`` and kin)."""

    def __init__(self, actors: Actors, settings: Settings, events: Events) -> None:
        self._actors = actors
        self._calls = actors.calls
        self._settings = settings
        self._events = events

    def acquire_lock(
        self,
        agent_id: str,
        resource: str,
        *,
        mode: str = "exclusive",
        ttl_s: float = 30.0,
        wait_s: float = 0.0,
    ) -> dict[str, Any]:
        """Lease one resource: ``{resource, mode, agent_id, fencing_token, expires_at}``.

        Refused (``Conflict`` naming the holders) if it is held incompatibly and still
        is after ``wait_s`` seconds of waiting in line.
        """
        wanted = [(validate_id("resource", resource), LockMode.parse(mode))]
        return self._acquire(agent_id, wanted, ttl_s, wait_s)[0]

    def acquire_locks(
        self,
        agent_id: str,
        resources: Iterable[tuple[str, str]],
        *,
        ttl_s: float = 30.0,
        wait_s: float = 0.0,
    ) -> list[dict[str, Any]]:
        """Lease several resources at once, all or nothing.

        ``resources`` is a list of ``(resource, mode)`` pairs, e.g.
        ``[("db", "exclusive"), ("cache", "shared")]``; anything else is ``Invalid``
        naming ``resources``, refused before the LockBroker is asked.
        """
        return self._acquire(agent_id, parse_lock_requests(resources), ttl_s, wait_s)

    def _acquire(
        self, agent_id: str, wanted: list[tuple[str, LockMode]], ttl_s: float, wait_s: float
    ) -> list[dict[str, Any]]:
        self._actors.entry(agent_id)
        ttl_s = validate_positive("ttl_s", ttl_s, maximum=self._settings.lock_max_ttl_s)
        wait_s = validate_wait("wait_s", wait_s, self._settings.lock_max_wait_s)
        broker = self._actors.broker
        reply: pykka.ThreadingFuture[Any] = pykka.ThreadingFuture()
        started = time.perf_counter()
        self._calls.ask(broker.acquire(agent_id, wanted, ttl_s, wait_s, reply))
        try:
            grants = reply.get(timeout=wait_s + self._settings.ask_timeout_s)
        except pykka.Timeout:
            broker.cancel_wait.defer(reply)
            raise Timeout(f"lock broker did not answer within {wait_s}s + margin") from None
        except Conflict:
            self._events.signal("lock.refused")
            raise
        self._events.signal("lock.waited", seconds=time.perf_counter() - started)
        return [g.to_dict() for g in grants]

    def renew_lock(
        self, agent_id: str, resource: str, fencing_token: int, ttl_s: float = 30.0
    ) -> dict[str, Any]:
        """Extend a held lease; the fencing token proves which grant is meant."""
        self._validate_lease(agent_id, resource, fencing_token)
        ttl_s = validate_positive("ttl_s", ttl_s, maximum=self._settings.lock_max_ttl_s)
        grant = self._calls.ask(self._actors.broker.renew(agent_id, resource, fencing_token, ttl_s))
        return grant.to_dict()

    def release_lock(self, agent_id: str, resource: str, fencing_token: int) -> dict[str, Any]:
        """Give a lock back; the waiters in line are served."""
        self._validate_lease(agent_id, resource, fencing_token)
        self._calls.ask(self._actors.broker.release(agent_id, resource, fencing_token))
        return {"resource": resource, "status": "released"}

    @staticmethod
    def _validate_lease(agent_id: str, resource: str, fencing_token: int) -> None:
        validate_id("agent_id", agent_id)
        validate_id("resource", resource)
        validate_int("fencing_token", fencing_token, 1, MAX_FENCING_TOKEN)

    def locks(self) -> list[dict[str, Any]]:
        """Every held lock with its holders and waiters.

        A lock the Scheduler took for a task names the task by key; the answer names it
        by its id as submitted (``123``, not ``"123"``), as everywhere else.
        """
        locks: list[dict[str, Any]] = self._calls.ask(self._actors.broker.locks())
        for lock in locks:
            for holder in lock["holders"]:
                if "task_id" in holder:  # held as ``lock_owner``: key and submission
                    key = task_key_of_lock_owner(holder["task_id"])
                    holder["task_id"] = self._actors.task_id_of(key)
        return locks
