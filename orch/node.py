"""A node of a cluster: one server on a PostgreSQL database that several servers share.

The node decides its role; the rest of the code does not know there is a cluster. A
standby runs no actors: it watches the lease (``orch/store/postgres_lease.py``) and
the HTTP layer forwards its requests to the leader (``orch/http/forward.py``). When
the lease is free, expired, or its holder's session ended, the node takes it over
and starts a *term*: a fresh ``Orchestrator`` on a store fenced with the new epoch,
which rebuilds from the store exactly as a server does after kill -9 (agents get a
fresh heartbeat grace; assignments, lock leases, fencing counters and tokens are
the stored ones). A leader renews the lease every third of ``ORCH_LEADER_LEASE_S``;
once the lease turns out to be another's (someone took over while it was frozen or
cut off from the database), it stops the term's actors and becomes a standby. Its
fenced store made sure nothing it answered meanwhile was acknowledged. While the
database cannot be reached at all, the leader keeps its term and its writes wait and
fail as on a lone server (README, "PostgreSQL store").

A term's Orchestrator is built and stopped whole, so a node may go leader, standby,
leader again in one process: stopping it stops only its own actors (never Pykka's
process-wide registry), its threads and its store's writer.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from orch.config import Settings
from orch.errors import NotLeader, StoreError
from orch.store.postgres import PostgresStore
from orch.store.postgres_lease import LeaderLease
from orch.system import Orchestrator

logger = logging.getLogger("orch.node")

#: Longest pause between a standby's looks at the lease: a dead leader's session
#: ends at once, so this bounds most of the time to a takeover after a crash.
STANDBY_POLL_S = 0.25


@dataclass(frozen=True)
class Term:
    """One leadership: the epoch, the Orchestrator running for it, and what serves it."""

    epoch: int
    orchestrator: Orchestrator
    app: Any  # the WSGI app serving ``orchestrator`` (None when embedded)


def default_advertise_url(host: str, port: int) -> str:
    """``http://host:port``; a wildcard address becomes this machine's name."""
    if host in ("0.0.0.0", "::", ""):
        host = socket.gethostname()
    return f"http://{host}:{port}"


class Node:
    """Elects, leads and steps down; ``term`` is the current leadership (None: standby).

    ``make_app`` builds the WSGI app for a new term's Orchestrator (the HTTP server's
    ``create_app``; None when embedded). ``advertise_url`` may be set until ``start``.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        advertise_url: str | None = None,
        make_app: Callable[[Orchestrator], Any] | None = None,
        connect_services: bool = False,
        orchestrator_options: dict[str, Any] | None = None,
    ) -> None:
        self.settings = settings
        self.advertise_url = advertise_url or settings.advertise_url or ""
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.term: Term | None = None
        #: The leader's URL as last seen in the lease (None: nobody leads).
        self.leader_url: str | None = None
        #: Times this node became leader or stopped being it.
        self.leader_changes = 0
        self._make_app = make_app
        self._connect_services = connect_services
        self._orchestrator_options = orchestrator_options or {}
        self._lease: LeaderLease | None = None
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def role(self) -> str:
        return "leader" if self.term is not None else "standby"

    def start(self) -> Node:
        """Look at the lease once (a lone node leads before it serves), then keep watching."""
        if self._thread is not None:
            return self
        self._lease = LeaderLease(
            self.settings.db, self.holder, self.advertise_url, self.settings.leader_lease_s
        )
        self._look()  # an unreachable database stops start-up here, naming it
        self._thread = threading.Thread(target=self._run, name="orch-node", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop watching, end the term (its actors, its store) and give the lease up."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout_s + self.settings.leader_lease_s)
        self._step_down("shutting down", timeout_s)
        if self._lease is not None:
            self._lease.close()

    def interrupt_waits(self) -> None:
        """Answer the term's long waits now: shutdown is coming (``Orchestrator``'s)."""
        term = self.term
        if term is not None:
            term.orchestrator.interrupt_waits()

    def orchestrator(self) -> Orchestrator:
        """The leader's Orchestrator; ``NotLeader`` naming the leader on a standby."""
        term = self.term
        if term is None:
            where = self.leader_url or "nobody leads right now"
            raise NotLeader(
                f"this node is a standby; the leader is {where}", leader=self.leader_url
            )
        return term.orchestrator

    # ------------------------------------------------------------------ the loop

    def _run(self) -> None:
        while not self._stopping.wait(self._pause()):
            try:
                self._look()
            except StoreError as exc:
                # A leader cut off from the database keeps its term: its writes wait
                # for the database and fail (503 store_unavailable) as on a lone
                # server, and any that reaches it after a takeover is fenced. It
                # steps down once it can ask and the lease is another's.
                logger.warning("cannot reach the lease: %s", exc)
            except Exception:  # the node must keep watching whatever went wrong
                logger.exception("node loop failed; trying again")

    def _pause(self) -> float:
        ttl = self.settings.leader_lease_s
        return ttl / 3 if self.term is not None else min(STANDBY_POLL_S, ttl / 4)

    def _look(self) -> None:
        lease = self._lease
        assert lease is not None
        if self.term is not None:
            if not lease.renew():
                self._step_down("the lease was taken over")
            return
        epoch = lease.try_lead()
        if epoch is None:
            seen = lease.leader()
            # An embedded leader serves no HTTP: nothing to forward to (no URL).
            self.leader_url = None if seen.expired or seen.holder is None else seen.url or None
            return
        self._lead(epoch)

    def _lead(self, epoch: int) -> None:
        s = self.settings
        store = PostgresStore(s.db, write_wait_s=s.db_write_wait_s, epoch=epoch)
        try:
            orchestrator = Orchestrator(
                s,
                store=store,
                connect_services=self._connect_services,
                **self._orchestrator_options,
            )
            orchestrator.start()
        except BaseException:
            store.close()
            assert self._lease is not None
            self._lease.resign()
            raise
        app = self._make_app(orchestrator) if self._make_app is not None else None
        self.term = Term(epoch, orchestrator, app)
        self.leader_url = self.advertise_url
        self.leader_changes += 1
        logger.info("leading the cluster (epoch %d) as %s", epoch, self.advertise_url)

    def _step_down(self, why: str, timeout_s: float = 5.0) -> None:
        term, self.term = self.term, None
        if term is None:
            return
        self.leader_url = None
        self.leader_changes += 1
        level = logging.INFO if self._stopping.is_set() else logging.WARNING
        logger.log(level, "stepping down (epoch %d): %s", term.epoch, why)
        try:
            term.orchestrator.interrupt_waits()
            term.orchestrator.stop(timeout_s)
        finally:
            if self._lease is not None:
                with contextlib.suppress(StoreError):
                    self._lease.resign()


class EmbeddedNode:
    """``Orchestrator(store="postgresql://...")``: a node of a cluster in this process.

    It elects like any server on that database; while it leads, the embedded API's
    calls run on the current term's Orchestrator; while it is a standby they raise
    ``orch.errors.NotLeader`` naming the leader's URL (``ORCH_ADVERTISE_URL`` of the
    node that leads; None when nobody does or the leader serves no HTTP).
    """

    def __init__(self, settings: Settings, **orchestrator_options: Any) -> None:
        connect_services = bool(orchestrator_options.pop("connect_services", False))
        self.settings = settings
        self.node = Node(
            settings,
            connect_services=connect_services,
            orchestrator_options=orchestrator_options,
        )

    @property
    def role(self) -> str:
        """``leader`` or ``standby``."""
        return self.node.role

    @property
    def leader_url(self) -> str | None:
        return self.node.leader_url

    def start(self) -> EmbeddedNode:
        self.node.start()
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        self.node.stop(timeout_s)

    def __enter__(self) -> EmbeddedNode:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __getattr__(self, name: str) -> Any:
        # Only the embedded API's methods (the facade's class attributes), each
        # looked up on the leader's Orchestrator at call time: a term may end.
        if name.startswith("_") or not callable(getattr(Orchestrator, name, None)):
            raise AttributeError(name)

        def call(*args: Any, **kwargs: Any) -> Any:
            return getattr(self.node.orchestrator(), name)(*args, **kwargs)

        call.__name__ = name
        return call


class NodeCollector(Collector):
    """The node's own metrics, read at scrape time: on a standby they are all there is."""

    def __init__(self, node: Node, forwarded: Callable[[], Iterator[Metric]]) -> None:
        self._node = node
        self._forwarded = forwarded

    def collect(self) -> Iterator[Metric]:
        leader = GaugeMetricFamily(
            "orchestrator_leader", "1 on the node that leads the cluster, 0 on a standby."
        )
        leader.add_metric([], 1.0 if self._node.term is not None else 0.0)
        yield leader
        changes = CounterMetricFamily(
            "orchestrator_leader_changes",
            "Times this node became the leader or stopped being it.",
        )
        changes.add_metric([], float(self._node.leader_changes))
        yield changes
        yield from self._forwarded()
