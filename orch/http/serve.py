"""Serving the API on waitress, with a shutdown that finishes what it accepted.

Waitress's own ``serve()`` stops its loop on a signal and cancels queued requests; a
control plane should instead stop accepting, let in-flight requests answer, then stop
the actors. ``Server`` runs waitress's loop itself so it can do exactly that.

Running the loop also lets it bound how long a client may take to *send* a request.
Waitress reads requests on its event loop, not on its worker threads, so a slow client
never holds a thread; but it holds a connection, and connections are capped
(``ORCH_HTTP_CONNECTION_LIMIT``). Waitress closes only connections that are silent for
``channel_timeout``; one that dribbles a byte now and then (slow-loris) would keep its
slot for ever. So a request must arrive whole within ``ORCH_HTTP_REQUEST_READ_TIMEOUT_S``
of its first byte, or it is answered 408 and its connection closed.

Waitress refuses some requests itself, before the app sees them: a body over
``ORCH_HTTP_MAX_BODY_BYTES`` (by ``Content-Length`` as soon as the headers are in, so
the body is never read; chunked ones once that much has arrived), headers far over
their limit, a malformed request. ``ProblemErrorTask`` gives those answers the app's
problem+json shape and codes, so a client handles a 413 one way whoever sent it.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import resource
import select
import signal
import threading
import time
from types import FrameType
from typing import Any

import msgspec
import waitress
from waitress import wasyncore
from waitress.channel import ClientDisconnected, HTTPChannel
from waitress.parser import HTTPRequestParser
from waitress.task import ErrorTask, WSGITask

from orch.config import Settings
from orch.errors import Invalid, Unavailable
from orch.http.app import create_app
from orch.http.errors import PROBLEM_JSON, PROBLEM_TYPE, HeadersTooLarge, PayloadTooLarge
from orch.http.inline import InlineAnswers
from orch.http.loop import EpollLoop, WatchedMap
from orch.system import Orchestrator

logger = logging.getLogger("orch.http")

#: Shorter admin tokens are warned about at start-up: guessing, even throttled, gets easy.
MIN_ADMIN_TOKEN_LENGTH = 16
#: How often the loop looks for requests that are taking too long to arrive.
SWEEP_INTERVAL_S = 0.25


class TimedRequestParser(HTTPRequestParser):
    """Waitress's parser, remembering when the request's first byte arrived."""

    def __init__(self, adj: Any) -> None:
        super().__init__(adj)
        self.started_at = time.monotonic()


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
    """Waitress's answer to a request it refused itself, as problem+json.

    Waitress writes these in text/plain with its own wording; the app answers the same
    failures (413, 431, 400) as problem+json with a stable ``code``. A request waitress
    refuses never reaches the app, so without this a client would see two formats for
    one failure, depending only on how far over a limit it was.
    """

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


class OneSendTask(WSGITask):
    """Waitress's WSGI task, sending the head of an answer with its first body bytes.

    Waitress writes the status line and headers, then the body, as two writes; its
    worker sends each at once (``send_bytes`` is 1), so every answer was two ``send``
    calls, each giving up the GIL and waiting to take it back. Held together they go
    in one: a small answer is one segment, one system call.
    """

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
    """A waitress connection whose partly received request carries its start time.

    It also keeps the event loop from spinning while a worker answers it. Waitress
    (``send_bytes`` is 1) has the worker send its own writes, holding the channel's
    output lock, and wakes the loop when the answer is done; yet ``writable()`` says
    yes as soon as the first bytes are buffered, so until the worker finishes, the loop
    polls the socket as writable, fails to take the lock, and polls again. That took a
    whole core and starved the workers of the GIL: heartbeats ran at 10% of a bare
    Falcon app on waitress, p99 over 500 ms (bench/README.md). The loop still flushes
    once the request is done (the worker's trigger wakes it), when the connection is
    closing, and when the buffer passes the high watermark, where a worker waits for it.

    Requests waitress refuses itself are answered by ``ProblemErrorTask``.
    """

    parser_class = TimedRequestParser
    error_task_class = ProblemErrorTask
    task_class = OneSendTask
    #: While set (by ``OneSendTask``), writes are gathered here instead of sent.
    held_writes: list[bytes] | None = None
    # For answers given on the loop's thread (``orch/http/inline.py``):
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
        """Say ``100 Continue`` only to a request that will be read.

        Waitress would say it to one it has already refused by its ``Content-Length``
        (the 413 follows), inviting the client to send the very body it will not read.
        """
        if self.request is not None and self.request.error is not None:
            self.request.expect_continue = False
            return
        super().send_continue()


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


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _raise_open_files_limit(connections: int) -> None:
    """Let the process hold ``connections`` sockets plus its own files, if the hard limit allows.

    Distributions often start services with a soft limit of 1024 open files, which a
    fleet of remote agents (one kept-alive connection each) would exhaust long before
    ``ORCH_HTTP_CONNECTION_LIMIT``; running out would refuse new connections, not
    queue them, so it is better to ask for room up front and warn if there is none.
    """
    wanted = connections + 256  # the database, logs, wake-up pipes, outgoing calls
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft != resource.RLIM_INFINITY and soft < wanted:
        logger.warning(
            "open-files limit is %d, below the %d that ORCH_HTTP_CONNECTION_LIMIT=%d needs; "
            "connections beyond it will be refused (raise it with ulimit -n)",
            soft,
            wanted,
            connections,
        )


class Server:
    """The REST API for one Orchestrator on waitress; ``stop()`` is safe from any thread."""

    def __init__(
        self,
        orchestrator: Orchestrator,
        settings: Settings | None = None,
        *,
        host: str | None = None,
        port: int | None = None,
    ) -> None:
        self.orchestrator = orchestrator
        self.settings = settings or orchestrator.settings
        self._stopping = threading.Event()
        _raise_open_files_limit(self.settings.http_connection_limit)
        socket_map = WatchedMap()
        self._waitress: Any = waitress.create_server(
            create_app(orchestrator, self.settings),
            map=socket_map,
            host=host or self.settings.host,
            port=self.settings.port if port is None else port,
            threads=self.settings.http_threads,
            connection_limit=self.settings.http_connection_limit,
            # poll(), not select(): select() cannot watch descriptors past 1024, and
            # every remote agent keeps a connection open between heartbeats.
            asyncore_use_poll=True,
            channel_timeout=self.settings.http_idle_timeout_s,
            # Idle connections are looked for this often; never later than they are due.
            cleanup_interval=max(1, min(30, self.settings.http_idle_timeout_s)),
            # Bodies: waitress enforces the app's limit itself, so one declared too
            # big is refused as soon as its headers are in, never read (the app would
            # only see it once read whole). Headers: the app refuses them over its
            # limit with a 431 naming it; waitress stops reading at twice that. Both
            # answer problem+json (ProblemErrorTask).
            max_request_header_size=2 * self.settings.http_max_header_bytes,
            max_request_body_size=waitress_body_limit(self.settings.http_max_body_bytes),
            ident="june-orchestrator",
            clear_untrusted_proxy_headers=True,
        )
        self._waitress.channel_class = GuardedChannel
        self._inline = (
            InlineAnswers(self._waitress, orchestrator, _problem_body)
            if self.settings.http_inline
            else None
        )
        # epoll where there is one (Linux); elsewhere waitress's own loop, O(connections).
        self._loop = EpollLoop(socket_map, self._waitress) if hasattr(select, "epoll") else None
        self._next_sweep = 0.0

    @property
    def host(self) -> str:
        return str(self._waitress.effective_host)

    @property
    def port(self) -> int:
        return int(self._waitress.effective_port)

    def serve_forever(self, drain_timeout_s: float = 5.0) -> None:
        """Answer requests until ``stop()``; then drain, stop the actors and return."""
        if self.settings.admin_token is None and not _is_loopback(self.host):
            logger.warning(
                "ORCH_ADMIN_TOKEN is not set and the API listens on %s: anyone who can "
                "reach it can register agents and submit tasks",
                self.host,
            )
        token = self.settings.admin_token
        if token is not None and len(token) < MIN_ADMIN_TOKEN_LENGTH:
            logger.warning(
                "ORCH_ADMIN_TOKEN is only %d characters; use at least %d random ones, "
                "e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))'",
                len(token),
                MIN_ADMIN_TOKEN_LENGTH,
            )
        logger.info("June Orchestrator listening on http://%s:%d", self.host, self.port)
        server = self._waitress
        adj = server.adj
        if self._inline is not None:
            self._inline.start()
        try:
            while not self._stopping.is_set():
                if self._loop is not None:
                    self._loop.poll(adj.asyncore_loop_timeout)
                else:
                    wasyncore.loop(
                        timeout=adj.asyncore_loop_timeout,
                        map=server._map,
                        use_poll=adj.asyncore_use_poll,
                        count=1,
                    )
                if self._inline is not None:
                    self._inline.run()
                self._close_slow_requests()
        finally:
            self._shut_down(drain_timeout_s)
            if self._loop is not None:
                self._loop.close()

    def _close_slow_requests(self) -> None:
        """Answer 408 and close connections whose request is taking too long to arrive.

        Runs on the loop's own thread, between its iterations, so it is the only one
        touching the channels' read side. A channel with a request being answered is
        left alone: the time is then the app's, not the client's.
        """
        now = time.monotonic()
        if now < self._next_sweep:
            return
        self._next_sweep = now + SWEEP_INTERVAL_S
        timeout_s = self.settings.http_request_read_timeout_s
        closed = 0
        for channel in list(self._waitress.active_channels.values()):
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
            if self._loop is not None:
                self._loop.touch(channel._fileno)  # no longer idle: closing
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

    def stop(self) -> None:
        """Begin shutdown: stop accepting; in-flight requests still get their answer."""
        self._stopping.set()
        with contextlib.suppress(OSError):  # the trigger is closed once shutdown is done
            self._waitress.pull_trigger()

    def _busy(self) -> bool:
        server = self._waitress
        dispatcher = server.task_dispatcher
        if dispatcher.active_count or dispatcher.queue:
            return True
        if self._inline is not None and self._inline.busy():
            return True
        return any(
            channel.requests or channel.total_outbufs_len
            for channel in list(server.active_channels.values())
        )

    def _poll(self, until: float) -> None:
        server = self._waitress
        while self._busy() and time.monotonic() < until:
            wasyncore.loop(timeout=0.05, map=server._map, use_poll=True, count=1)
            if self._inline is not None:
                self._inline.run()

    def _shut_down(self, drain_timeout_s: float) -> None:
        server = self._waitress
        # Close only the listening socket; the trigger keeps waking the loop for replies.
        wasyncore.dispatcher.close(server)
        self.orchestrator.interrupt_waits()
        self._poll(time.monotonic() + drain_timeout_s)
        # Whatever still waits (a lock wait, a slow actor) is answered 503 by the stop.
        self.orchestrator.stop()
        self._poll(time.monotonic() + 1.0)
        server.task_dispatcher.shutdown(timeout=1.0)
        wasyncore.close_all(server._map)
        logger.info("June Orchestrator stopped")


def serve(
    orchestrator: Orchestrator | None = None,
    settings: Settings | None = None,
    *,
    host: str | None = None,
    port: int | None = None,
    handle_signals: bool = True,
) -> None:
    """Serve the REST API until SIGTERM/SIGINT (or ``Server.stop``), then shut down cleanly.

    Without an ``orchestrator`` one is built from ``settings`` (default: the
    environment) and started; either way it is stopped on the way out.
    """
    settings = settings or (orchestrator.settings if orchestrator else Settings.from_env())
    orchestrator = orchestrator or Orchestrator(settings, connect_services=True)
    # Bind first: a port in use should stop start-up before any actor has started.
    try:
        server = Server(orchestrator, settings, host=host, port=port)
    except OSError as exc:
        orchestrator.store.close()
        where = f"{host or settings.host}:{settings.port if port is None else port}"
        raise Unavailable(
            f"cannot listen on {where}: {exc.strerror or exc}; "
            "set ORCHESTRATOR_HOST/ORCHESTRATOR_PORT to a free address"
        ) from None
    orchestrator.start()
    if handle_signals and threading.current_thread() is threading.main_thread():

        def on_signal(signum: int, frame: FrameType | None) -> None:
            logger.info("received %s; shutting down", signal.Signals(signum).name)
            server.stop()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
    server.serve_forever()
