"""Locks: leases on named resources, taken and given back by agents with their tokens."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import falcon

from orch.errors import Unavailable
from orch.http.auth import Scope, acting_agent
from orch.http.media import read_body, send
from orch.http.resources.base import Resource
from orch.http.schemas import AcquireLock, AcquireLocks, ReleaseLock, RenewLock


@contextlib.contextmanager
def waiting(slots: threading.BoundedSemaphore, wait_s: float) -> Iterator[None]:
    """Hold a waiting slot for a call that may wait; 503 when none is free.

    A lock held by one agent is released by another request; if waiters could take
    every waitress thread, that release would queue behind them until their waits
    ran out, and the lease with it.
    """
    if wait_s <= 0:
        yield
        return
    if not slots.acquire(blocking=False):
        raise Unavailable(
            "too many calls are waiting already; retry shortly or without wait_s",
            retry_after_s=1,
        )
    try:
        yield
    finally:
        slots.release()


class LockAcquisition(Resource):
    scopes = {"POST": Scope.AGENT}
    bodies = {"POST": AcquireLock}
    answers = {"POST": (200, 400, 401, 403, 404, 409)}

    def on_post(self, req: falcon.Request, resp: falcon.Response, resource: str) -> None:
        """Lease one resource, waiting in line up to ``wait_s``; 409 names the holders."""
        body = read_body(req, AcquireLock)
        agent_id = acting_agent(req, self.orch, body.agent_id)
        with waiting(self.options["wait_slots"], body.wait_s):
            grant = self.orch.acquire_lock(
                agent_id, resource, mode=body.mode, ttl_s=body.ttl_s, wait_s=body.wait_s
            )
        send(resp, grant)


class MultiLockAcquisition(Resource):
    scopes = {"POST": Scope.AGENT}
    bodies = {"POST": AcquireLocks}
    answers = {"POST": (200, 400, 401, 403, 404, 409)}

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Lease several resources at once, all or nothing: ``{grants}``."""
        body = read_body(req, AcquireLocks)
        agent_id = acting_agent(req, self.orch, body.agent_id)
        with waiting(self.options["wait_slots"], body.wait_s):
            grants = self.orch.acquire_locks(
                agent_id,
                [(r.resource, r.mode) for r in body.resources],
                ttl_s=body.ttl_s,
                wait_s=body.wait_s,
            )
        send(resp, {"grants": grants})


class LockRenewal(Resource):
    scopes = {"POST": Scope.AGENT}
    bodies = {"POST": RenewLock}
    answers = {"POST": (200, 400, 401, 403, 404, 409)}

    def on_post(self, req: falcon.Request, resp: falcon.Response, resource: str) -> None:
        """Extend the lease named by its fencing token."""
        body = read_body(req, RenewLock)
        agent_id = acting_agent(req, self.orch, body.agent_id)
        send(resp, self.orch.renew_lock(agent_id, resource, body.fencing_token, body.ttl_s))


class LockRelease(Resource):
    scopes = {"POST": Scope.AGENT}
    bodies = {"POST": ReleaseLock}
    answers = {"POST": (200, 400, 401, 403, 404, 409)}

    def on_post(self, req: falcon.Request, resp: falcon.Response, resource: str) -> None:
        """Give the lease back; the next in line is served."""
        body = read_body(req, ReleaseLock)
        agent_id = acting_agent(req, self.orch, body.agent_id)
        send(resp, self.orch.release_lock(agent_id, resource, body.fencing_token))


class LockCollection(Resource):
    scopes = {"GET": Scope.ADMIN}

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Every held or awaited resource with holders, waiters and fencing counter."""
        found = self.orch.locks()
        send(resp, {"locks": found, "count": len(found)})
