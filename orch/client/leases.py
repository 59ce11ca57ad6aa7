"""``HeldLock``: a leased lock an agent holds, renewed on its own thread until released.

Kept apart from the heartbeat loop (``orch.client.agent``) because a lease has its
own clock: it is renewed at a third of its ttl whatever the heartbeat cadence, and
its loss is told to the one thread that holds it (``LockLost``), not to the agent.
"""

from __future__ import annotations

import logging
import threading
import time
from types import TracebackType
from typing import TYPE_CHECKING

from orch.client.answers import LockGrant
from orch.errors import Conflict, Forbidden, NotFound, OrchestratorError, Unauthorized

if TYPE_CHECKING:
    from orch.client.agent import AgentClient

__all__ = ["HeldLock", "LockLost"]

logger = logging.getLogger("orch.client")


class LockLost(Conflict):
    """A lock this agent held was lost (renewal refused, or the lease ran out).

    Raised in the thread that holds the lock, at its next SDK call or when its
    ``with`` block ends, so work done under a lock that was no longer held is not
    reported as if it had been.
    """

    code = "lock_lost"
    title = "Lock lost"


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
                    # Trying other servers past the lease's end would only hide its loss.
                    failover_wait_s=max(0.0, self._lease_deadline - sent_at),
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
