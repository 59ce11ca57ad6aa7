"""Hot requests answered on the event loop's own thread, each answer held until stored.

Why: waitress hands every request from its loop thread to a worker thread and the
worker wakes the loop again when the answer is written. On a 2-core host every such
hand-off is a cross-core wake-up plus a turn at the GIL, and together they cost more
than the app itself: a bare Falcon app answered 3,500-4,100 requests/s through the
worker pool and 8,500-11,000/s when the same loop ran it in place (bench/README.md).
A heartbeat, an agent's start, and a task submission, completion or failure never
wait on anything but their store commits and the actors' gates, so those are run
here, in the loop, by the very code waitress's workers run (``HTTPChannel.service``).
Everything else (lock waits, event long-polls, registration, reads, admin calls)
still goes to the workers, as does whatever arrives on a worker's thread, the
heartbeat of an agent marked unhealthy (its recovery is a stored state change it
waits for) and the start of a failed agent (the Supervisor revives it).

An answer is stored before it is given (DESIGN.md "Durability"), but the loop must
not sleep through a commit. So the app runs inside ``deferring_writes``: a commit
still in flight is not waited for but collected, and the answer the app writes is
buffered on its connection (``GuardedChannel.buffer_only``) and held there
(``awaiting``) until every collected write has committed. The store's writer
pulls the loop's trigger after each commit (``SQLiteStore.on_commit``), and the loop
then sends what is ready. While an answer is held its connection reads nothing more,
so answers leave in request order. A write that fails after all turns the held
answer into ``503 store_unavailable`` (the connection is then closed: the client
cannot tell how far its request got) and makes the actors rebuild from the store, as
a failed wait would (``Orchestrator.recover_from_failed_writes``). Nothing is ever
sent that was not stored.

Deviation from waitress's model, and its bound: the loop itself runs these requests,
so while one runs no other connection is served. That is a few tens of microseconds,
except when an actor's gate is taken and the request asks the actor instead
(``Orchestrator._gated_call``): the loop then waits for that actor, at most the ask
timeout (``ORCH_ASK_TIMEOUT_S``, 5 s by default), as a worker would. ``ORCH_HTTP_INLINE=false``
sends every request to the workers, as waitress alone does.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
from typing import Any

from waitress.buffers import OverflowableBuffer
from waitress.channel import ClientDisconnected

from orch.errors import StoreError
from orch.http.errors import PROBLEM_JSON
from orch.model import AgentState
from orch.store.base import PendingWrite, deferring_writes
from orch.system import Orchestrator

logger = logging.getLogger("orch.http")

#: POST routes that never wait on anything but commits and gates (see the module doc).
INLINE_ROUTES = re.compile(
    r"^/(?:agents/[^/]+/(?:heartbeat|start)|tasks|tasks/assign|tasks/[^/]+/(?:complete|fail))/?$"
)
_AGENT_CALL = re.compile(r"^/agents/([^/]+)/(heartbeat|start)/?$")


class InlineAnswers:
    """Takes waitress's ``add_task`` and ``pull_trigger`` for one server; see the module doc.

    Everything here runs on the loop's thread, except ``add_task`` (called on a worker
    for a connection's next request) and ``_commit_done`` (on the store's writer).
    """

    def __init__(self, server: Any, orchestrator: Orchestrator, problem: Any) -> None:
        self._server = server
        self._orchestrator = orchestrator
        self._problem = problem  # (status, code, title, detail) -> problem+json bytes
        self._dispatch = server.add_task
        self._trigger = server.pull_trigger
        self._loop_thread: int | None = None
        self._pending: list[Any] = []  # channels whose request runs here next
        self._held: list[Any] = []  # channels with an answer waiting for its commits
        self._servicing: Any = None  # the channel whose request runs right now
        self._follow_up = False  # service() asked to run that channel's next request
        #: Answers given here, and those of them a failed commit turned into a 503.
        self.answered = 0
        self.refused = 0
        server.add_task = self.add_task
        server.pull_trigger = self.pull_trigger
        orchestrator.store.add_commit_listener(self._commit_done)

    def start(self) -> None:
        """Bind to the calling thread: the one that runs the loop from now on."""
        self._loop_thread = threading.get_ident()

    def busy(self) -> bool:
        """True while a request waits to run here or an answer waits for its commits."""
        return bool(self._pending or self._held)

    def add_task(self, channel: Any) -> None:
        """Waitress's ``add_task``: run the request here if it is a hot one, else hand it on."""
        if channel is self._servicing:
            self._follow_up = True  # pipelined: decided once this answer is settled
            return
        if threading.get_ident() == self._loop_thread and self._runs_here(channel.requests[0]):
            self._pending.append(channel)
        else:
            self._dispatch(channel)

    def _runs_here(self, request: Any) -> bool:
        if request.command != "POST" or request.error is not None:
            return False
        path = request.path
        if not INLINE_ROUTES.match(path):
            return False
        call = _AGENT_CALL.match(path)
        if call is not None:
            entry = self._orchestrator.directory.get(call.group(1))
            if entry is None:
                return True  # answered 404 at once
            if call.group(2) == "start":
                # A failed agent is revived by the Supervisor, which stores it first.
                return entry.actor is not None
            # An unhealthy agent's heartbeat stores its recovery and waits for that
            # commit (``AgentActor._transition``). Here a fleet coming back at once
            # would commit one agent at a time; the workers commit them together.
            return entry.record.state is not AgentState.UNHEALTHY
        return True

    def pull_trigger(self) -> None:
        """Waitress's ``pull_trigger``, which a request run here needs not: the loop is awake."""
        if self._servicing is None or threading.get_ident() != self._loop_thread:
            self._trigger()

    def run(self) -> None:
        """Run the requests queued here, then send or refuse the answers now settled."""
        while self._pending:
            self._service(self._pending.pop(0))
        if not self._held:
            return
        waiting = []
        for channel in self._held:
            writes: list[PendingWrite] = channel.awaiting
            if not all(write.done() for write in writes):
                waiting.append(channel)
                continue
            channel.awaiting = None
            if any(write.failed() for write in writes):
                self._refuse(channel)
            elif channel.connected:
                channel.handle_write()
                self._next(channel)
        self._held = waiting

    def _commit_done(self) -> None:
        if self._held:
            self._trigger()  # wake the loop: an answer may be ready to go

    def _service(self, channel: Any) -> None:
        version = channel.requests[0].version
        self._servicing = channel
        channel.buffer_only = True
        try:
            with deferring_writes() as writes:
                channel.service()
        finally:
            channel.buffer_only = False
            self._servicing = None
        self.answered += 1
        channel.follow_up, self._follow_up = self._follow_up, False
        if writes:
            channel.awaiting = writes
            channel.answer_version = version
            self._held.append(channel)
        elif channel.connected:
            channel.handle_write()
            self._next(channel)

    def _next(self, channel: Any) -> None:
        """Start the connection's next (pipelined) request, now that this answer is out."""
        if channel.follow_up:
            channel.follow_up = False
            if channel.connected and channel.requests:
                self.add_task(channel)

    def _refuse(self, channel: Any) -> None:
        """Replace a held answer whose write failed by a 503, and close the connection."""
        self.refused += 1
        self._orchestrator.events_log.signal("http.answer_withdrawn")
        self._orchestrator.recover_from_failed_writes()
        logger.warning(
            "a store write behind an answer failed after it was applied; answered 503 instead"
        )
        if not channel.connected:
            return
        with channel.outbuf_lock:
            for outbuf in channel.outbufs:
                outbuf.close()
            channel.outbufs = [OverflowableBuffer(channel.adj.outbuf_overflow)]
            channel.total_outbufs_len = 0
            channel.current_outbuf_count = 0
        with channel.requests_lock:
            channel.close_when_flushed = True  # pipelined requests behind it are dropped
            for request in channel.requests:
                request.close()
            channel.requests = []
        body = self._problem(
            503, StoreError.code, StoreError.title, "the change could not be stored; not applied"
        )
        head = (
            f"HTTP/{channel.answer_version} 503 Service Unavailable\r\n"
            f"Content-Type: {PROBLEM_JSON}\r\n"
            f"Content-Length: {len(body)}\r\n"
            "Retry-After: 1\r\n"
            "Connection: close\r\n\r\n"
        )
        with contextlib.suppress(ClientDisconnected):
            channel.write_soon(head.encode("latin-1") + body)
        channel.handle_write()
