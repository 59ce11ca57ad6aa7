"""LockBroker: owns every lock and serialises all access to them.

A lock is a set of leases (grants) on one resource: one exclusive holder or any number
of shared ones. A *holder* is an agent acting for itself (``task_key`` None) or an agent
holding resources for one task the Scheduler leased to it; the two never merge, so a
task ending releases exactly the locks it took.

Fairness is FIFO without barging: a request that cannot be granted at once waits in the
queue of every resource it names, and a later request is not served ahead of it even
when it would fit (otherwise a steady stream of shared readers starves a writer). A
multi-resource request is granted only when it heads every queue it is in and fits every
resource at once, so it never holds a part while waiting for the rest (no deadlock from
partial holds).

Fencing tokens increase per resource across the broker's whole life and across restarts:
the counter is raised in the store in the same write as the grant that uses it.
Every change is written to the store before it is applied in memory; if a write of a
multi-resource grant fails half way, the written part is deleted again and the caller
gets ``StoreError`` with nothing granted.

Time: lease deadlines and wait deadlines are monotonic and kept in heaps with lazy
deletion, so ``tick`` costs O(expired · log n), not a scan of every lock.
"""

from __future__ import annotations

import collections
import contextlib
import heapq
import itertools
import logging
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import pykka

from orch.clock import Clock, wall_at
from orch.errors import Conflict, NotFound, OrchestratorError, StoreError, Unavailable
from orch.events import Events
from orch.model import LockGrant, LockMode
from orch.store.base import Store

if TYPE_CHECKING:
    from orch.actors.proxies import SchedulerProxy

logger = logging.getLogger("orch.locks")

# (agent_id, task_key): who holds a grant.
Holder = tuple[str, str | None]


@dataclass(eq=False)
class _Waiter:
    """One acquire call waiting in line for every resource it names."""

    seq: int
    agent_id: str
    requests: list[tuple[str, LockMode]]
    ttl_s: float
    deadline: float
    reply: pykka.Future[Any]
    done: bool = field(default=False)


def _fail(reply: pykka.Future[Any], exc: BaseException) -> None:
    reply.set_exception((type(exc), exc, exc.__traceback__))


def _compatible(mode: LockMode, others: list[LockGrant]) -> bool:
    if not others:
        return True
    return mode is LockMode.SHARED and all(g.mode is LockMode.SHARED for g in others)


class LockBroker(pykka.ThreadingActor):
    """Exclusive/shared leased locks with fencing tokens and FIFO waiters."""

    use_daemon_thread = True

    def __init__(self, store: Store, clock: Clock, events: Events, *, max_ttl_s: float) -> None:
        super().__init__()
        self._store = store
        self._clock = clock
        self._events = events
        self._max_ttl_s = max_ttl_s
        self._scheduler: SchedulerProxy | None = None
        self._grants: dict[str, dict[Holder, LockGrant]] = {}
        self._by_agent: dict[str, set[tuple[str, Holder]]] = collections.defaultdict(set)
        self._by_task: dict[str, set[str]] = collections.defaultdict(set)
        self._fencing: dict[str, int] = {}
        self._queues: dict[str, collections.deque[_Waiter]] = {}
        self._waiters_by_reply: dict[int, _Waiter] = {}
        self._lease_heap: list[tuple[float, int, str, Holder]] = []
        self._wait_heap: list[tuple[float, int, _Waiter]] = []
        self._seq = itertools.count(1)
        # Resources a task was refused on: the Scheduler hears when they come free.
        self._watched: set[str] = set()
        self._granted_total = 0
        self._expired_total = 0

    # -------------------------------------------------------------- lifecycle

    def on_start(self) -> None:
        """Rebuild from the store: held grants keep their tokens, counters keep rising."""
        self._fencing = dict(self._store.load_fencing_counters())
        now_mono = self._clock.monotonic()
        now_wall = self._clock.time()
        for stored in self._store.load_grants():
            # Monotonic time does not survive a restart; re-derive it from wall time.
            grant = replace(stored, deadline=now_mono + (stored.expires_at - now_wall))
            self._hold(grant)
            if grant.fencing_token > self._fencing.get(grant.resource, 0):
                self._fencing[grant.resource] = grant.fencing_token

    def on_stop(self) -> None:
        self.refuse_waiters("the lock broker is stopping")

    def refuse_waiters(self, reason: str) -> int:
        """Answer every waiting acquire with ``Unavailable`` (shutdown: nothing was granted)."""
        waiters = list(self._waiters_by_reply.values())
        for waiter in waiters:
            self._answer(waiter, Unavailable(reason))
        return len(waiters)

    def set_scheduler(self, scheduler: SchedulerProxy) -> None:
        self._scheduler = scheduler

    # ------------------------------------------------------------ agents' API

    def acquire(
        self,
        agent_id: str,
        requests: list[tuple[str, LockMode]],
        ttl_s: float,
        wait_s: float,
        reply: pykka.Future[Any],
    ) -> None:
        """Grant every request at once, or queue for up to ``wait_s``, or refuse.

        The answer goes to ``reply``: a list of ``LockGrant`` in request order, or the
        error (``Conflict`` naming the holders). Errors of the call itself (a failing
        store) are raised to the asker as well.
        """
        ttl_s = min(ttl_s, self._max_ttl_s)
        holder: Holder = (agent_id, None)
        if self._fits(holder, requests) and not self._anyone_queued(requests):
            try:
                grants = self._grant(holder, requests, ttl_s)
            except OrchestratorError as exc:
                _fail(reply, exc)
                raise
            reply.set(grants)
            return
        if wait_s <= 0:
            _fail(reply, self._refusal(holder, requests))
            return
        waiter = _Waiter(
            seq=next(self._seq),
            agent_id=agent_id,
            requests=list(requests),
            ttl_s=ttl_s,
            deadline=self._clock.monotonic() + wait_s,
            reply=reply,
        )
        for resource, _ in requests:
            self._queues.setdefault(resource, collections.deque()).append(waiter)
        self._waiters_by_reply[id(reply)] = waiter
        heapq.heappush(self._wait_heap, (waiter.deadline, waiter.seq, waiter))

    def cancel_wait(self, reply: pykka.Future[Any]) -> None:
        """The caller gave up waiting: leave the queues (and let whoever is next in)."""
        waiter = self._waiters_by_reply.get(id(reply))
        if waiter is not None:
            self._answer(waiter, Conflict("gave up waiting for the lock"))
            self._serve([r for r, _ in waiter.requests])

    def renew(self, agent_id: str, resource: str, fencing_token: int, ttl_s: float) -> LockGrant:
        """Extend the lease identified by its fencing token."""
        grant = self._owned(agent_id, resource, fencing_token)
        renewed = self._lease(grant, min(ttl_s, self._max_ttl_s))
        self._store.put_grant(renewed)
        self._hold(renewed)
        self._events.emit(
            "lock.renewed", resource=resource, agent_id=agent_id, fencing_token=fencing_token
        )
        return renewed

    def release(self, agent_id: str, resource: str, fencing_token: int) -> None:
        """Give back the lease identified by its fencing token."""
        grant = self._owned(agent_id, resource, fencing_token)
        self._drop([grant], "lock.released")

    def release_agent(self, agent_id: str) -> int:
        """The agent stopped, was lost or deregistered: free all it holds, end its waits."""
        grants = [self._grants[r][h] for r, h in list(self._by_agent.get(agent_id, ()))]
        for waiter in [w for w in self._waiters_by_reply.values() if w.agent_id == agent_id]:
            self._answer(waiter, Conflict(f"agent {agent_id!r} left while waiting for a lock"))
            self._serve([r for r, _ in waiter.requests])
        self._drop(grants, "lock.released")
        return len(grants)

    # --------------------------------------------------------- Scheduler's API

    def try_acquire_for_task(
        self, agent_id: str, task_key: str, resources: list[str] | tuple[str, ...], ttl_s: float
    ) -> dict[str, int] | None:
        """Exclusive leases on a task's resources for its agent, now or not at all.

        Returns ``{resource: fencing_token}``, or None when any is taken or queued for;
        then the Scheduler is told ``resources_freed`` once one of them comes free.
        """
        requests = [(r, LockMode.EXCLUSIVE) for r in resources]
        holder: Holder = (agent_id, task_key)
        if not self._fits(holder, requests) or self._anyone_queued(requests):
            self._watched.update(resources)
            return None
        # A task's locks live as long as its lease; the Scheduler releases them at its end.
        grants = self._grant(holder, requests, ttl_s)
        return {g.resource: g.fencing_token for g in grants}

    def release_task(self, task_key: str) -> int:
        """The task ended or lost its lease: release the locks taken for it."""
        grants = [
            g
            for resource in list(self._by_task.get(task_key, ()))
            for g in self._grants.get(resource, {}).values()
            if g.task_key == task_key
        ]
        self._drop(grants, "lock.released")
        return len(grants)

    # ------------------------------------------------------------------ time

    def tick(self) -> int:
        """Expire leases and waits that ran out; returns how many leases expired."""
        now = self._clock.monotonic()
        expired: list[LockGrant] = []
        while self._lease_heap and self._lease_heap[0][0] <= now:
            _deadline, token, resource, holder = heapq.heappop(self._lease_heap)
            grant = self._grants.get(resource, {}).get(holder)
            if grant is not None and grant.fencing_token == token and grant.deadline <= now:
                expired.append(grant)
        if expired:
            self._expired_total += len(expired)
            for grant in expired:
                logger.info(
                    "lease on %s held by %s expired (token %d)",
                    grant.resource,
                    grant.agent_id,
                    grant.fencing_token,
                )
            self._drop(expired, "lock.expired")
        while self._wait_heap and self._wait_heap[0][0] <= now:
            _, _, waiter = heapq.heappop(self._wait_heap)
            if not waiter.done:
                refusal = self._refusal((waiter.agent_id, None), waiter.requests)
                self._answer(waiter, refusal)
                self._serve([r for r, _ in waiter.requests])
        return len(expired)

    # ----------------------------------------------------------- observation

    def locks(self) -> list[dict[str, Any]]:
        """Every resource that is held or waited for, with holders and waiters."""
        out = []
        for resource in sorted(set(self._grants) | set(self._queues)):
            holders = sorted(self._grants.get(resource, {}).values(), key=lambda g: g.fencing_token)
            queue = self._queues.get(resource, ())
            mode = holders[0].mode if holders else None
            out.append(
                {
                    "resource": resource,
                    "mode": str(mode) if mode else None,
                    "holders": [g.to_dict() for g in holders],
                    "waiters": [
                        {"agent_id": w.agent_id, "mode": str(dict(w.requests)[resource])}
                        for w in queue
                    ],
                    "fencing_token": self._fencing.get(resource, 0),
                }
            )
        return out

    def holders_of(self, resource: str) -> list[LockGrant]:
        return list(self._grants.get(resource, {}).values())

    def stats(self) -> dict[str, Any]:
        return {
            "locks_held": sum(len(h) for h in self._grants.values()),
            "resources_locked": len(self._grants),
            "waiters": len(self._waiters_by_reply),
            "granted_total": self._granted_total,
            "expired_total": self._expired_total,
        }

    # --------------------------------------------------------------- helpers

    def _others(self, resource: str, holder: Holder) -> list[LockGrant]:
        return [g for h, g in self._grants.get(resource, {}).items() if h != holder]

    def _fits(self, holder: Holder, requests: list[tuple[str, LockMode]]) -> bool:
        return all(_compatible(mode, self._others(r, holder)) for r, mode in requests)

    def _anyone_queued(self, requests: list[tuple[str, LockMode]]) -> bool:
        return any(self._queues.get(r) for r, _ in requests)

    def _refusal(self, holder: Holder, requests: list[tuple[str, LockMode]]) -> Conflict:
        blocking = [
            g
            for r, mode in requests
            for g in self._others(r, holder)
            if mode is LockMode.EXCLUSIVE or g.mode is LockMode.EXCLUSIVE
        ]
        queued = sorted({r for r, _ in requests if self._queues.get(r)})
        reasons = []
        if blocking:
            names = sorted({f"{g.resource} ({g.agent_id}, {g.mode})" for g in blocking})
            reasons.append(f"held by {', '.join(names)}")
        if queued:
            reasons.append(f"others are already waiting for {', '.join(queued)}")
        message = "; ".join(reasons)
        return Conflict(
            f"lock refused: {message}",
            holders=[g.to_dict() for g in blocking],
            waiting_for=queued,
        )

    def _lease(self, grant: LockGrant, ttl_s: float) -> LockGrant:
        deadline = self._clock.monotonic() + ttl_s
        return replace(grant, deadline=deadline, expires_at=wall_at(self._clock, deadline))

    def _grant(
        self, holder: Holder, requests: list[tuple[str, LockMode]], ttl_s: float
    ) -> list[LockGrant]:
        """Store then hold a grant per request; all or nothing."""
        agent_id, task_key = holder
        grants = []
        for resource, mode in requests:
            current = self._grants.get(resource, {}).get(holder)
            if current is not None and current.mode is mode:
                # Re-acquiring what one holds refreshes the lease and keeps the token.
                grants.append(self._lease(current, ttl_s))
                continue
            token = self._fencing.get(resource, 0) + 1
            grant = LockGrant(resource, mode, agent_id, token, 0.0, 0.0, task_key)
            grants.append(self._lease(grant, ttl_s))
        written: list[LockGrant] = []
        try:
            for grant in grants:
                self._store.put_grant(grant)
                written.append(grant)
        except StoreError:
            for grant in written:
                previous = self._grants.get(grant.resource, {}).get(holder)
                with contextlib.suppress(StoreError):
                    if previous is not None:
                        self._store.put_grant(previous)
                    else:
                        self._store.delete_grant(grant)
            raise
        for grant in grants:
            replaced = self._grants.get(grant.resource, {}).get(holder)
            self._hold(grant)
            if grant.fencing_token > self._fencing.get(grant.resource, 0):
                self._fencing[grant.resource] = grant.fencing_token
            if replaced is None or replaced.fencing_token != grant.fencing_token:
                self._granted_total += 1
                self._events.emit(
                    "lock.granted",
                    resource=grant.resource,
                    mode=str(grant.mode),
                    agent_id=agent_id,
                    fencing_token=grant.fencing_token,
                    task_id=task_key,
                )
        return grants

    def _hold(self, grant: LockGrant) -> None:
        holder: Holder = (grant.agent_id, grant.task_key)
        self._grants.setdefault(grant.resource, {})[holder] = grant
        self._by_agent[grant.agent_id].add((grant.resource, holder))
        if grant.task_key is not None:
            self._by_task[grant.task_key].add(grant.resource)
        heapq.heappush(
            self._lease_heap, (grant.deadline, grant.fencing_token, grant.resource, holder)
        )

    def _owned(self, agent_id: str, resource: str, fencing_token: int) -> LockGrant:
        mine = [g for g in self._grants.get(resource, {}).values() if g.agent_id == agent_id]
        if not mine:
            raise NotFound(
                f"agent {agent_id!r} holds no lock on {resource!r} (released or expired)",
                resource=resource,
            )
        for grant in mine:
            if grant.fencing_token == fencing_token:
                return grant
        current = ", ".join(str(g.fencing_token) for g in mine)
        raise Conflict(
            f"fencing token {fencing_token} is not current for {resource!r} "
            f"(agent {agent_id!r} holds token {current})",
            resource=resource,
        )

    def _drop(self, grants: list[LockGrant], event: str) -> None:
        """Delete grants from the store, then from memory; serve who waits for them."""
        if not grants:
            return
        for grant in grants:
            self._store.delete_grant(grant)
            holder: Holder = (grant.agent_id, grant.task_key)
            held = self._grants.get(grant.resource, {})
            held.pop(holder, None)
            if not held:
                self._grants.pop(grant.resource, None)
            owned = self._by_agent.get(grant.agent_id)
            if owned is not None:
                owned.discard((grant.resource, holder))
                if not owned:
                    del self._by_agent[grant.agent_id]
            if grant.task_key is not None:
                resources = self._by_task.get(grant.task_key)
                if resources is not None:
                    resources.discard(grant.resource)
                    if not resources:
                        del self._by_task[grant.task_key]
            self._events.emit(
                event,
                resource=grant.resource,
                agent_id=grant.agent_id,
                fencing_token=grant.fencing_token,
                task_id=grant.task_key,
            )
        self._serve(sorted({g.resource for g in grants}))

    def _serve(self, resources: list[str]) -> None:
        """Grant queue heads that now fit, then tell the Scheduler what is still free."""
        pending = list(resources)
        touched = set(pending)
        while pending:
            resource = pending.pop()
            queue = self._queues.get(resource)
            while queue:
                head = queue[0]
                if head.done:
                    queue.popleft()
                    continue
                heads_everywhere = all(self._queues[r][0] is head for r, _ in head.requests)
                holder: Holder = (head.agent_id, None)
                if not heads_everywhere or not self._fits(holder, head.requests):
                    break
                try:
                    grants = self._grant(holder, head.requests, head.ttl_s)
                except StoreError as exc:
                    self._answer(head, exc)
                else:
                    self._answer(head, grants)
                # Its other queues have a new head that may fit now.
                for r, _ in head.requests:
                    if r not in touched:
                        touched.add(r)
                        pending.append(r)
            if queue is not None and not queue:
                self._queues.pop(resource, None)
        freed = [
            r
            for r in sorted(touched & self._watched)
            if not self._queues.get(r) and not self._grants.get(r)
        ]
        if freed and self._scheduler is not None:
            self._watched.difference_update(freed)
            with contextlib.suppress(pykka.ActorDeadError):
                self._scheduler.resources_freed.defer(freed)

    def _answer(self, waiter: _Waiter, outcome: list[LockGrant] | OrchestratorError) -> None:
        """Leave every queue and resolve the caller's future."""
        waiter.done = True
        self._waiters_by_reply.pop(id(waiter.reply), None)
        for resource, _ in waiter.requests:
            queue = self._queues.get(resource)
            if queue is not None:
                with contextlib.suppress(ValueError):
                    queue.remove(waiter)
                if not queue:
                    self._queues.pop(resource, None)
        if isinstance(outcome, OrchestratorError):
            _fail(waiter.reply, outcome)
        else:
            waiter.reply.set(outcome)
