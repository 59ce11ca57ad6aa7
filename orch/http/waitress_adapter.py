"""Every adaptation of waitress's internals: the one module to check when waitress changes.

Waitress reads requests on one event-loop thread and runs the app on worker threads.
For a control plane whose hot requests are tiny, that model as waitress ships it
spends more on its own machinery than on the app, and it answers a few failures in
a shape of its own. Each adaptation below changes one such thing by reaching past
waitress's documented API (``create_server`` and its adjustments); the rest of
``orch/http`` uses only that API and this module. The figures behind each are in
bench/README.md.

This module is over 500 lines on purpose: its point is that one file holds every use
of waitress's internals, so that an upgrade is checked by reading one module against
one list (``WAITRESS_INTERNALS``). Inside it each adaptation is a class of its own.

Why each adaptation exists
--------------------------
Guarded channels (``GuardedChannel``). Waitress (``send_bytes`` is 1) has the worker
send its own writes, holding the channel's output lock, and wakes the loop when the
answer is done; yet ``writable()`` says yes as soon as the first bytes are buffered,
so until the worker finishes, the loop polls the socket as writable, fails to take
the lock, and polls again. That took a whole core and starved the workers of the GIL.
The loop still flushes once the request is done (the worker's trigger wakes it), when
the connection is closing, and when the buffer passes the high watermark, where a
worker waits for it. The channel also says ``100 Continue`` only to a request that
will be read: waitress says it to one it has already refused by its
``Content-Length``, inviting the client to send the very body it will not read.

One send per answer (``OneSendTask``). Waitress writes the status line and headers,
then the body, as two writes, and its worker sends each at once: every answer was two
``send`` calls, each giving up the GIL and waiting to take it back. Held together
they go in one: a small answer is one segment, one system call.

Waitress's refusals as problem+json (``ProblemErrorTask``). Waitress refuses some
requests itself, before the app sees them: a body over ``ORCH_HTTP_MAX_BODY_BYTES``
(by ``Content-Length`` as soon as the headers are in, so the body is never read;
chunked ones once that much has arrived), headers far over their limit, a request it
cannot parse. It writes those in text/plain with its own wording; the app answers
the same failures as problem+json with a stable ``code``. Without this a client
would see two formats for one failure, depending only on how far over a limit it was.

Requests timed from their first byte (``TimedRequestParser``, the sweep in
``WaitressServer``). A slow client holds no thread, but it holds a connection, and
connections are capped (``ORCH_HTTP_CONNECTION_LIMIT``). Waitress closes only
connections silent for ``channel_timeout``; one that dribbles a byte now and then
(slow-loris) would keep its slot for ever. So a request must arrive whole within
``ORCH_HTTP_REQUEST_READ_TIMEOUT_S`` of its first byte, or it is answered 408 and
its connection closed.

The epoll loop (``EpollLoop``, ``WatchedMap``). Waitress's own loop
(``wasyncore.poll2``) asks *every* connection ``readable()`` and ``writable()`` and
registers it anew on every turn. Remote agents keep their connection open between
heartbeats, so with a fleet connected that is thousands of Python calls per turn,
and there is a turn per request or more. Most connections are idle: nothing in
flight, nothing to send, only waiting to read. An idle connection's interest (read)
can change only through what the loop does itself (reading from it, the server's
maintenance closing it, the slow-request sweep), never from a worker thread, which
only touches connections with a request in flight. So idle connections stay
registered with epoll (level-triggered, read) and are not asked again until an event
or one of those steps touches them; connections with a request in flight, output or
a pending close are asked every turn, exactly as waitress would. A worker that
finishes pulls waitress's trigger, so the loop wakes to ask its connection again.

Answers on the loop thread (``InlineAnswers``). Waitress hands every request from
its loop thread to a worker, and the worker wakes the loop again when the answer is
written. On a 2-core host every such hand-off is a cross-core wake-up plus a turn at
the GIL, and together they cost more than the app itself. A heartbeat, an agent's
start, and a task submission, completion or failure never wait on anything but their
store commits and the actors' gates, so those are run in the loop, by the very code
waitress's workers run (``HTTPChannel.service``). Everything else (lock waits, event
long-polls, registration, reads, admin calls, what waitress could not parse) still
goes to the workers, as does whatever arrives on a worker's thread, a request with an
``Idempotency-Key`` (its answer is stored after its writes commit, see
``orch/http/idempotency.py``), the heartbeat of
an agent marked unhealthy (its recovery is a stored state change it waits for) and
the start of a failed agent (the Supervisor revives it). An answer is stored before
it is given (README, "Guarantees"), but the loop must not sleep through a commit:
the app runs collecting, instead of waiting for, the commits still in flight, and
the answer it writes is buffered on its connection (``GuardedChannel.buffer_only``)
and held there (``awaiting``) until every collected write has committed. The store's
writer calls back after each commit and the loop then sends what is ready. While an
answer is held its connection reads nothing more, so answers leave in request order.
A write that fails after all turns the held answer into ``503 store_unavailable``
(the connection is then closed: the client cannot tell how far its request got) and
makes the actors rebuild from the store, as a failed wait would
(``Orchestrator.recover_from_failed_writes``). Nothing is ever sent that was not
stored. The deviation from waitress's model, and its bound: while the loop runs one
of these no other connection is served. That is a few tens of microseconds, except
when an actor's gate is taken and the request asks the actor instead: the loop then
waits for that actor, at most the ask timeout (``ORCH_ASK_TIMEOUT_S``), as a worker
would. ``ORCH_HTTP_INLINE=false`` sends every request to the workers.

Running the loop turn by turn (``WaitressServer``). Waitress's ``serve()`` stops its
loop on a signal and cancels queued requests; a control plane should instead stop
accepting, let in-flight requests answer, then stop the actors (``orch.http.serve``
orders that). Turning the loop ourselves is also what lets the sweep and the inline
answers run between turns.

Waitress internals relied on
----------------------------
Everything this module reads, writes, subclasses or replaces that waitress does not
document, by the object it belongs to. Each is an entry of ``WAITRESS_INTERNALS``
below, with the adaptation that needs it; tests/unit/test_waitress_adapter.py checks
every entry (and that this list and the table agree) against the installed waitress,
whose tested range is ``TESTED_WAITRESS``, pinned in setup.cfg.

- ``HTTPChannel`` (subclassed): ``parser_class``, ``error_task_class``, ``task_class``,
  ``writable``, ``readable``, ``write_soon``, ``send_continue``, ``service``,
  ``handle_write``, ``received``, ``requests``, ``request``, ``requests_lock``,
  ``outbufs``, ``outbuf_lock``, ``total_outbufs_len``, ``current_outbuf_count``,
  ``will_close``, ``close_when_flushed``, ``connected``, ``adj``, ``_fileno``.
- ``HTTPRequestParser`` (subclassed): ``__init__``, ``command``, ``headers``, ``path``,
  ``version``, ``error``, ``content_length``, ``expect_continue``, ``close``.
- ``Task`` (through ``ErrorTask`` and ``WSGITask``): ``request``, ``channel``,
  ``status``, ``response_headers``, ``content_length``, ``wrote_header``,
  ``has_body``, ``set_close_on_finish``, ``write``.
- ``ErrorTask`` (subclassed): ``execute``.
- ``WSGITask`` (subclassed): ``write``, ``get_environment``.
- ``Error`` (what a refused request's ``error`` is): ``code``, ``reason``, ``body``.
- ``BaseWSGIServer``: ``channel_class``, ``add_task``, ``pull_trigger``, ``readable``,
  ``next_channel_cleanup``, ``active_channels``, ``task_dispatcher``, ``_map``,
  ``effective_host``, ``effective_port``.
- ``ThreadedTaskDispatcher``: ``active_count``, ``queue``, ``shutdown``.
- ``dispatcher`` (wasyncore's): ``add_channel``, ``del_channel``, ``accepting``,
  ``close``.
- ``wasyncore``: ``readwrite``, ``loop``, ``close_all``.
- ``OverflowableBuffer``: ``append``, ``close``.
- ``ClientDisconnected``.
"""

from __future__ import annotations

import contextlib
import logging
import re
import select
import threading
import time
from typing import Any

import msgspec
import waitress
from waitress import wasyncore
from waitress.buffers import OverflowableBuffer
from waitress.channel import ClientDisconnected, HTTPChannel
from waitress.parser import HTTPRequestParser
from waitress.task import ErrorTask, WSGITask

from orch.errors import Invalid, StoreError
from orch.http.errors import PROBLEM_JSON, PROBLEM_TYPE, HeadersTooLarge, PayloadTooLarge
from orch.http.resources.base import ANSWER_WRITES
from orch.model import AgentState
from orch.store.base import PendingWrite
from orch.system import Orchestrator

logger = logging.getLogger("orch.http")

#: The waitress releases this module was checked against: from the first, up to (not
#: including) the second. setup.cfg pins the same range.
TESTED_WAITRESS = ("3.0.2", "3.1")

#: What of waitress's undocumented inside each adaptation relies on, checked by
#: tests/unit/test_waitress_adapter.py. ``Owner.name(params)`` is a method taking those
#: parameters (after self), ``Owner.name: type`` an attribute of that type on a live
#: object, ``Owner.name`` one of any type, a bare ``Owner`` a class used by name.
WAITRESS_INTERNALS: dict[str, tuple[str, ...]] = {
    "guarded channels (GuardedChannel)": (
        "HTTPChannel",
        "BaseWSGIServer.channel_class",
        "HTTPChannel.writable()",
        "HTTPChannel.requests: list",
        "HTTPChannel.will_close: bool",
        "HTTPChannel.close_when_flushed: bool",
        "HTTPChannel.total_outbufs_len: int",
        "HTTPChannel.adj",
        "HTTPChannel.send_continue()",
        "HTTPChannel.request",
        "HTTPRequestParser.error",
        "HTTPRequestParser.expect_continue: bool",
    ),
    "one send per answer (OneSendTask)": (
        "HTTPChannel.task_class",
        "WSGITask",
        "WSGITask.write(data)",
        "Task.channel",
        "Task.wrote_header: bool",
        "Task.has_body: bool",
        "HTTPChannel.write_soon(data)",
    ),
    "waitress's refusals as problem+json (ProblemErrorTask)": (
        "HTTPChannel.error_task_class",
        "ErrorTask",
        "ErrorTask.execute()",
        "Task.request",
        "Task.channel",
        "Task.status: str",
        "Task.response_headers: list",
        "Task.content_length",
        "Task.set_close_on_finish()",
        "Task.write(data)",
        "HTTPRequestParser.error",
        "HTTPRequestParser.content_length: int",
        "Error.code: int",
        "Error.reason: str",
        "Error.body: str",
    ),
    "requests timed from their first byte (TimedRequestParser, the 408 sweep)": (
        "HTTPChannel.parser_class",
        "HTTPRequestParser",
        "HTTPRequestParser.__init__(adj)",
        "BaseWSGIServer.active_channels: dict",
        "HTTPChannel.request",
        "HTTPChannel.requests: list",
        "HTTPChannel.will_close: bool",
        "HTTPChannel.close_when_flushed: bool",
        "HTTPChannel.requests_lock",
        "HTTPChannel.total_outbufs_len: int",
        "HTTPChannel.write_soon(data)",
        "HTTPChannel._fileno: int",
        "ClientDisconnected",
    ),
    "the epoll loop (EpollLoop, WatchedMap)": (
        "HTTPChannel",
        "dispatcher.add_channel(map)",
        "dispatcher.del_channel(map)",
        "dispatcher.accepting: bool",
        "HTTPChannel.readable()",
        "HTTPChannel.writable()",
        "BaseWSGIServer.readable()",
        "BaseWSGIServer.next_channel_cleanup",
        "wasyncore.readwrite(obj, flags)",
    ),
    "answers on the loop thread (InlineAnswers)": (
        "WSGITask.get_environment()",
        "BaseWSGIServer.add_task(task)",
        "BaseWSGIServer.pull_trigger()",
        "HTTPChannel.received(data)",
        "HTTPChannel.service()",
        "HTTPChannel.handle_write()",
        "HTTPChannel.connected: bool",
        "HTTPChannel.requests: list",
        "HTTPChannel.requests_lock",
        "HTTPChannel.outbufs: list",
        "HTTPChannel.outbuf_lock",
        "HTTPChannel.total_outbufs_len: int",
        "HTTPChannel.current_outbuf_count: int",
        "HTTPChannel.close_when_flushed: bool",
        "HTTPChannel.write_soon(data)",
        "HTTPChannel.adj",
        "HTTPRequestParser.command: str",
        "HTTPRequestParser.headers: dict",
        "HTTPRequestParser.path: str",
        "HTTPRequestParser.version: str",
        "HTTPRequestParser.error",
        "HTTPRequestParser.close()",
        "OverflowableBuffer.append(s)",
        "OverflowableBuffer.close()",
        "ClientDisconnected",
    ),
    "running the loop turn by turn (WaitressServer)": (
        "wasyncore.loop(timeout, use_poll, map, count)",
        "wasyncore.close_all(map, ignore_all)",
        "dispatcher.close()",
        "BaseWSGIServer._map: dict",
        "BaseWSGIServer.effective_host: str",
        "BaseWSGIServer.effective_port",
        "BaseWSGIServer.pull_trigger()",
        "BaseWSGIServer.active_channels: dict",
        "BaseWSGIServer.task_dispatcher",
        "ThreadedTaskDispatcher.active_count: int",
        "ThreadedTaskDispatcher.queue",
        "ThreadedTaskDispatcher.shutdown(cancel_pending, timeout)",
        "HTTPChannel.requests: list",
        "HTTPChannel.total_outbufs_len: int",
    ),
}


def _problem_body(status: int, code: str, title: str, detail: str) -> bytes:
    """An RFC 9457 body shaped as ``orch.http.errors.problem`` shapes the app's."""
    return msgspec.json.encode(
        {
            "type": PROBLEM_TYPE.format(code=code),
            "title": title,
            "status": status,
            "detail": detail,
            "code": code,
        }
    )


# -- Requests timed from their first byte ------------------------------------------


class TimedRequestParser(HTTPRequestParser):
    """Waitress's parser, remembering when the request's first byte arrived."""

    def __init__(self, adj: Any) -> None:
        super().__init__(adj)
        self.started_at = time.monotonic()


def _request_timeout_answer(timeout_s: float) -> bytes:
    body = _problem_body(
        408,
        "request_timeout",
        "Request timeout",
        f"the request did not arrive whole within {timeout_s:g}s",
    )
    head = (
        "HTTP/1.1 408 Request Timeout\r\n"
        f"Content-Type: {PROBLEM_JSON}\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode("latin-1") + body


# -- Waitress's refusals as problem+json --------------------------------------------

#: Waitress's own refusals (``waitress.utilities.Error.code``) as the app's code and title.
WAITRESS_PROBLEMS = {
    400: (Invalid.code, Invalid.title),
    413: (PayloadTooLarge.code, PayloadTooLarge.title),
    431: (HeadersTooLarge.code, HeadersTooLarge.title),
    501: ("not_implemented", "Not implemented"),
}


def waitress_body_limit(max_body_bytes: int) -> int:
    """Waitress's ``max_request_body_size`` for the app's limit of ``max_body_bytes``.

    Waitress refuses a body of ``max_request_body_size`` bytes or more, the app one of
    more than its limit; one byte more makes both allow exactly the same bodies.
    """
    return max_body_bytes + 1


class ProblemErrorTask(ErrorTask):
    """Waitress's answer to a request it refused itself, as problem+json (see the module doc)."""

    def execute(self) -> None:
        error = self.request.error
        code, title = WAITRESS_PROBLEMS.get(error.code, ("internal", "Internal server error"))
        if error.code == 413:
            limit = self.channel.adj.max_request_body_size - 1  # see waitress_body_limit
            declared = self.request.content_length
            detail = (
                f"the body is {declared} bytes; the limit is {limit}; it was not read"
                if declared
                else f"the body is over the limit of {limit} bytes"
            )
        elif error.code == 500:
            # Waitress has logged it; its text may hold a traceback (expose_tracebacks).
            detail = "an unexpected error occurred; it has been logged"
        else:
            detail = str(error.body)
        body = _problem_body(error.code, code, title, detail)
        self.status = f"{error.code} {error.reason}"
        self.response_headers.append(("Content-Type", PROBLEM_JSON))
        self.set_close_on_finish()  # waitress stopped reading mid-request: no next one
        self.content_length = len(body)
        self.write(body)


# -- One send per answer, guarded channels ------------------------------------------


class OneSendTask(WSGITask):
    """Waitress's WSGI task, sending the head of an answer with its first body bytes.

    It also hands the app the list collecting an inline answer's writes
    (``InlineAnswers._service_collecting_writes``) under ``ANSWER_WRITES``.
    """

    def get_environment(self) -> dict[str, Any]:
        environ: dict[str, Any] = super().get_environment()
        writes = self.channel.answer_writes
        if writes is not None:
            environ[ANSWER_WRITES] = writes
        return environ

    def write(self, data: bytes) -> None:
        channel = self.channel
        if self.wrote_header or not data or not self.has_body:
            super().write(data)
            return
        channel.held_writes = []
        try:
            super().write(data)
            held = b"".join(channel.held_writes)
        finally:
            channel.held_writes = None
        channel.write_soon(held)


class GuardedChannel(HTTPChannel):
    """A waitress connection adapted as the module doc says: every channel is one of these.

    Not polled for writing while a worker answers it, ``100 Continue`` only to a request
    that will be read, requests timed from their first byte, waitress's refusals in
    problem+json, one send per answer, and answers held for their commits.
    """

    parser_class = TimedRequestParser
    error_task_class = ProblemErrorTask
    task_class = OneSendTask
    #: While set (by ``OneSendTask``), writes are gathered here instead of sent.
    held_writes: list[bytes] | None = None
    #: While the loop runs this channel's request, the store writes its answer waits for.
    answer_writes: list[PendingWrite] | None = None
    # For answers given on the loop's thread (``InlineAnswers``):
    #: while true, the answer being written is buffered, not sent;
    buffer_only = False
    #: while set, the buffered answer waits for these store writes and nothing is sent;
    awaiting: list[Any] | None = None
    #: the answer's HTTP version, and whether a pipelined request waits behind it.
    answer_version = "1.1"
    follow_up = False

    def write_soon(self, data: bytes) -> int:
        if self.held_writes is not None:
            self.held_writes.append(bytes(data))
            return len(data)
        if self.buffer_only and data:
            if not self.connected:
                raise ClientDisconnected
            with self.outbuf_lock:
                self.outbufs[-1].append(data)
                self.current_outbuf_count += len(data)
                self.total_outbufs_len += len(data)
            return len(data)
        return int(super().write_soon(data))

    def writable(self) -> bool:
        if self.awaiting is not None:
            return False  # an answer not yet stored is never sent
        if (
            self.requests
            and not (self.will_close or self.close_when_flushed)
            and self.total_outbufs_len <= self.adj.outbuf_high_watermark
        ):
            return False
        return bool(super().writable())

    def send_continue(self) -> None:
        """Say ``100 Continue`` only to a request that will be read (see the module doc)."""
        if self.request is not None and self.request.error is not None:
            self.request.expect_continue = False
            return
        super().send_continue()


# -- The epoll loop -----------------------------------------------------------------

READ = select.POLLIN | select.POLLPRI
WRITE = select.POLLOUT
#: New connections taken in one turn at most, so a flood cannot stall the others.
ACCEPTS_PER_TURN = 64


class WatchedMap(dict):  # type: ignore[type-arg]
    """Waitress's socket map (fd -> dispatcher), noting which fds came or went."""

    def __init__(self) -> None:
        super().__init__()
        self.changed: set[int] = set()

    def __setitem__(self, fd: int, dispatcher: Any) -> None:
        super().__setitem__(fd, dispatcher)
        self.changed.add(fd)

    def __delitem__(self, fd: int) -> None:
        super().__delitem__(fd)
        self.changed.add(fd)

    def pop(self, fd: int, *default: Any) -> Any:
        self.changed.add(fd)
        return super().pop(fd, *default)


def interest(dispatcher: Any) -> int:
    """The poll flags ``wasyncore.poll2`` would register ``dispatcher`` with."""
    flags = READ if dispatcher.readable() else 0
    if dispatcher.writable() and not dispatcher.accepting:
        flags |= WRITE
    return flags


class EpollLoop:
    """Turns of waitress's loop over ``socket_map`` (a ``WatchedMap``), on epoll."""

    def __init__(self, socket_map: WatchedMap, server: Any) -> None:
        self._map = socket_map
        self._server = server
        self._epoll = select.epoll()
        self._watched: dict[int, tuple[Any, int]] = {}  # fd -> (dispatcher, flags), flags != 0
        self._busy: set[int] = set()  # fds asked every turn: not idle
        self._dormant: set[int] = set()  # watched, but wanting nothing now
        self._full_pass = True
        #: How many times a connection was asked for its interest, and how many turns
        #: the loop made (tests, profiling).
        self.asked = 0
        self.turns = 0

    def touch(self, fd: int) -> None:
        """Ask this connection again next turn: something outside an event changed it."""
        self._busy.add(fd)

    def close(self) -> None:
        self._epoll.close()

    def poll(self, timeout_s: float) -> None:
        """One turn: update what epoll watches, wait up to ``timeout_s``, handle events."""
        self.turns += 1
        cleanup_due = getattr(self._server, "next_channel_cleanup", None)
        fds = self._busy | self._map.changed
        self._map.changed.clear()
        if self._full_pass:
            fds |= set(self._map) | set(self._watched)
            self._full_pass = False
        for fd in fds:
            self._update(fd)
        if getattr(self._server, "next_channel_cleanup", None) != cleanup_due:
            # The server's maintenance ran (inside its readable()) and may have marked
            # idle connections to close: ask them all once more, now.
            for fd in list(self._map):
                self._update(fd)
        try:
            events = self._epoll.poll(timeout_s)
        except InterruptedError:
            return
        for fd, flags in events:
            dispatcher = self._map.get(fd)
            if dispatcher is None:
                continue
            if fd in self._dormant:
                # It wanted nothing when last asked (see ``_update``); most often its
                # answer has gone out since and this is its client's next request.
                self._update(fd)
                if fd in self._dormant:  # still nothing: poll2 would not report it
                    self._unwatch(fd)
                    continue
                flags &= self._watched[fd][1] | select.POLLHUP | select.POLLERR
                if not flags:
                    continue
            self._busy.add(fd)  # what it handles may change its interest
            if dispatcher is self._server:
                self._accept(flags)
            else:
                wasyncore.readwrite(dispatcher, flags)

    def _accept(self, flags: int) -> None:
        """Take every waiting connection (up to ``ACCEPTS_PER_TURN``), not one a turn.

        Waitress accepts one connection per readiness event. Under load a turn of the
        loop takes tens of milliseconds, so a burst of new connections (a fleet coming
        back after a restart) waited in the backlog, with their requests already sent,
        for one turn each: seconds, for the last of a few hundred.
        """
        for _ in range(ACCEPTS_PER_TURN):
            before = len(self._map)
            wasyncore.readwrite(self._server, flags)
            if len(self._map) == before or not self._server.readable():
                return

    def _update(self, fd: int) -> None:
        dispatcher = self._map.get(fd)
        watched = self._watched.get(fd)
        if dispatcher is None:
            self._busy.discard(fd)
            if watched is not None:
                self._unwatch(fd)
            return
        self.asked += 1
        flags = interest(dispatcher)
        if watched is not None and watched[0] is not dispatcher:
            self._unwatch(fd)  # the fd number was reused by a new connection
            watched = None
        if flags and watched is None:
            self._epoll.register(fd, flags)
            self._watched[fd] = (dispatcher, flags)
        elif flags and watched is not None and watched[1] != flags:
            self._epoll.modify(fd, flags)
            self._watched[fd] = (dispatcher, flags)
        if not flags and watched is not None:
            # It wants nothing while a worker answers it. poll2 leaves such a connection
            # out; unregistering it now and registering it again when the answer is sent
            # would cost two epoll_ctl calls a request, each giving up the GIL. So it
            # stays registered, dormant, and is unregistered only if epoll reports it.
            self._dormant.add(fd)
        else:
            self._dormant.discard(fd)
        if isinstance(dispatcher, HTTPChannel) and flags == READ:
            self._busy.discard(fd)  # idle: only an event or ``touch`` changes that
        else:
            self._busy.add(fd)

    def _unwatch(self, fd: int) -> None:
        del self._watched[fd]
        self._dormant.discard(fd)
        with contextlib.suppress(OSError, ValueError):  # closed fds leave epoll by themselves
            self._epoll.unregister(fd)


# -- Answers on the loop thread -----------------------------------------------------

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

    def __init__(self, server: Any, orchestrator: Orchestrator) -> None:
        self._server = server
        self._orchestrator = orchestrator
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
        self._listen_for_commits()

    def _listen_for_commits(self) -> None:
        """The Store seam for commit notices: the store's writer calls back after each."""
        self._orchestrator.store.add_commit_listener(self._commit_done)

    def close(self) -> None:
        """Stop hearing of commits: the server is gone, its held answers with it."""
        self._orchestrator.store.remove_commit_listener(self._commit_done)

    @staticmethod
    def _service_collecting_writes(channel: Any) -> list[PendingWrite]:
        """Run the request, and return the writes its answer must wait for.

        The list reaches the app through the request's environ (``ANSWER_WRITES``, set
        by ``OneSendTask``): the resources hand it to the facade, which appends the
        writes still in flight there instead of waiting for them. Passed explicitly,
        never through a thread-local: a call that is not given it waits for its commit.
        """
        writes: list[PendingWrite] = []
        channel.answer_writes = writes
        try:
            channel.service()
        finally:
            channel.answer_writes = None
        return writes

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
        # What waitress could not parse has its ``error`` and no command or path: it is
        # answered by a worker (``ProblemErrorTask``), as waitress alone would.
        if request.error is not None or request.command != "POST":
            return False
        if "IDEMPOTENCY_KEY" in request.headers:
            # Its answer is kept only after its writes are durable, and is read from the
            # store first: work the loop must not wait on (orch/http/idempotency.py).
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
            writes = self._service_collecting_writes(channel)
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
        body = _problem_body(
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


# -- Running the loop turn by turn --------------------------------------------------

#: How often the loop looks for requests that are taking too long to arrive.
SWEEP_INTERVAL_S = 0.25


class WaitressServer:
    """Waitress's server with every adaptation above in place, its loop run turn by turn.

    ``orch.http.serve.Server`` decides when to turn, drain and close; this knows how.
    ``listener`` is waitress's server object (its ``adj`` holds the adjustments),
    ``inline`` the answers given on the loop (None when turned off), ``epoll`` the
    epoll loop (None where there is no epoll: waitress's own loop, O(connections)).
    """

    def __init__(
        self,
        app: Any,
        orchestrator: Orchestrator | None,
        *,
        inline: bool,
        request_read_timeout_s: float,
        **adjustments: Any,
    ) -> None:
        socket_map = WatchedMap()
        self.listener: Any = waitress.create_server(app, map=socket_map, **adjustments)
        self.listener.channel_class = GuardedChannel
        self.inline = (
            InlineAnswers(self.listener, orchestrator)
            if inline and orchestrator is not None
            else None
        )
        self.epoll = EpollLoop(socket_map, self.listener) if hasattr(select, "epoll") else None
        self._request_read_timeout_s = request_read_timeout_s
        self._next_sweep = 0.0

    @property
    def host(self) -> str:
        return str(self.listener.effective_host)

    @property
    def port(self) -> int:
        return int(self.listener.effective_port)

    @property
    def open_sockets(self) -> int:
        """Sockets the loop still watches (listener, trigger, connections); 0 once closed."""
        return len(self.listener._map)

    def start(self) -> None:
        """Bind to the calling thread: the one that turns the loop from now on."""
        if self.inline is not None:
            self.inline.start()

    def turn(self) -> None:
        """One turn of the loop, then the answers given on it, then the slow-request sweep."""
        adj = self.listener.adj
        if self.epoll is not None:
            self.epoll.poll(adj.asyncore_loop_timeout)
        else:
            wasyncore.loop(
                timeout=adj.asyncore_loop_timeout,
                map=self.listener._map,
                use_poll=adj.asyncore_use_poll,
                count=1,
            )
        if self.inline is not None:
            self.inline.run()
        self._close_slow_requests()

    def wake(self) -> None:
        """Wake the loop from any thread (a no-op once it is closed)."""
        with contextlib.suppress(OSError):  # the trigger is closed once shutdown is done
            self.listener.pull_trigger()

    def stop_accepting(self) -> None:
        """Close only the listening socket; the trigger keeps waking the loop for replies."""
        wasyncore.dispatcher.close(self.listener)

    def busy(self) -> bool:
        """True while any accepted request is queued, running, held or being sent."""
        dispatcher = self.listener.task_dispatcher
        if dispatcher.active_count or dispatcher.queue:
            return True
        if self.inline is not None and self.inline.busy():
            return True
        return any(
            channel.requests or channel.total_outbufs_len
            for channel in list(self.listener.active_channels.values())
        )

    def drain(self, until: float) -> None:
        """Turn the loop while ``busy()``, until the monotonic time ``until`` at most."""
        while self.busy() and time.monotonic() < until:
            wasyncore.loop(timeout=0.05, map=self.listener._map, use_poll=True, count=1)
            if self.inline is not None:
                self.inline.run()

    def close(self, worker_timeout_s: float = 1.0) -> None:
        """Stop the workers (up to ``worker_timeout_s``) and close every socket."""
        try:
            self.listener.task_dispatcher.shutdown(timeout=worker_timeout_s)
            wasyncore.close_all(self.listener._map)
        finally:
            if self.epoll is not None:
                self.epoll.close()
            if self.inline is not None:
                self.inline.close()

    def _close_slow_requests(self) -> None:
        """Answer 408 and close connections whose request is taking too long to arrive.

        Runs on the loop's own thread, between its turns, so it is the only one touching
        the channels' read side. A channel with a request being answered is left alone:
        the time is then the app's, not the client's.
        """
        now = time.monotonic()
        if now < self._next_sweep:
            return
        self._next_sweep = now + SWEEP_INTERVAL_S
        timeout_s = self._request_read_timeout_s
        closed = 0
        for channel in list(self.listener.active_channels.values()):
            request = channel.request
            if (
                request is None
                or channel.requests
                or channel.will_close
                or channel.close_when_flushed
                or now - getattr(request, "started_at", now) <= timeout_s
            ):
                continue
            closed += 1
            if self.epoll is not None:
                self.epoll.touch(channel._fileno)  # no longer idle: closing
            with channel.requests_lock:
                channel.request = None  # what arrived of it is dropped, never served
                channel.close_when_flushed = True  # and nothing more is read
            if not channel.total_outbufs_len:
                # Nothing else is being written, so this cannot block the loop.
                with contextlib.suppress(ClientDisconnected):
                    channel.write_soon(_request_timeout_answer(timeout_s))
        if closed:
            # One line per sweep, not per connection: a slow-loris must not flood the log.
            logger.info(
                "answered 408 and closed %d connection(s) whose request took over %gs to arrive",
                closed,
                timeout_s,
            )
