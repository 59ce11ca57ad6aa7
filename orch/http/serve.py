"""Serving the API on waitress, with a shutdown that finishes what it accepted.

Waitress's own ``serve()`` stops its loop on a signal and cancels queued requests; a
control plane should instead stop accepting, let in-flight requests answer, then stop
the actors. ``Server`` turns waitress's loop itself so it can do exactly that.

Everything that reaches past waitress's documented API (the guarded channels, the
epoll loop, answers on the loop thread, requests timed from their first byte,
waitress's refusals as problem+json) is in ``orch.http.waitress_adapter``; this
module gives it the settings and decides when to turn, drain and close.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import resource
import signal
import threading
import time
from types import FrameType
from typing import Any

from orch.config import Settings
from orch.errors import Unavailable
from orch.http.app import create_app
from orch.http.forward import NodeApp
from orch.http.waitress_adapter import WaitressServer, waitress_body_limit
from orch.node import Node, default_advertise_url
from orch.store import POSTGRES_SCHEMES
from orch.system import Orchestrator

logger = logging.getLogger("orch.http")

#: Shorter admin tokens are warned about at start-up: guessing, even throttled, gets easy.
MIN_ADMIN_TOKEN_LENGTH = 16


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
    """The REST API for one Orchestrator on waitress; ``stop()`` is safe from any thread.

    ``waitress`` is the adapted waitress server (``orch.http.waitress_adapter``).
    """

    def __init__(
        self,
        orchestrator: Orchestrator | Node,
        settings: Settings | None = None,
        *,
        host: str | None = None,
        port: int | None = None,
    ) -> None:
        self.orchestrator = orchestrator
        self.settings = settings or orchestrator.settings
        self._stopping = threading.Event()
        _raise_open_files_limit(self.settings.http_connection_limit)
        if isinstance(orchestrator, Node):
            # A node's Orchestrator changes with each term: no answers on the loop,
            # which would hold one store's commit listener.
            app: Any = NodeApp(orchestrator)
            inline = False
        else:
            app = create_app(orchestrator, self.settings)
            inline = self.settings.http_inline
        self.waitress = WaitressServer(
            app,
            orchestrator if isinstance(orchestrator, Orchestrator) else None,
            inline=inline,
            request_read_timeout_s=self.settings.http_request_read_timeout_s,
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

    @property
    def host(self) -> str:
        return self.waitress.host

    @property
    def port(self) -> int:
        return self.waitress.port

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
        self.waitress.start()
        try:
            while not self._stopping.is_set():
                self.waitress.turn()
        finally:
            self._shut_down(drain_timeout_s)

    def stop(self) -> None:
        """Begin shutdown: stop accepting; in-flight requests still get their answer."""
        self._stopping.set()
        self.waitress.wake()

    def _shut_down(self, drain_timeout_s: float) -> None:
        waitress = self.waitress
        try:
            waitress.stop_accepting()
            self.orchestrator.interrupt_waits()
            waitress.drain(time.monotonic() + drain_timeout_s)
            # Whatever still waits (a lock wait, a slow actor) is answered 503 by the stop.
            self.orchestrator.stop()
            waitress.drain(time.monotonic() + 1.0)
        finally:
            waitress.close(worker_timeout_s=1.0)
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
    if orchestrator is None and settings.db.startswith(POSTGRES_SCHEMES):
        _serve_node(settings, host=host, port=port, handle_signals=handle_signals)
        return
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
    _serve_until_signalled(server, handle_signals)


def _serve_until_signalled(server: Server, handle_signals: bool) -> None:
    if handle_signals and threading.current_thread() is threading.main_thread():

        def on_signal(signum: int, frame: FrameType | None) -> None:
            logger.info("received %s; shutting down", signal.Signals(signum).name)
            server.stop()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
    server.serve_forever()


def _serve_node(
    settings: Settings, *, host: str | None, port: int | None, handle_signals: bool
) -> None:
    """Serve as a node of a cluster on ``settings.db`` (a PostgreSQL database): lead
    if nobody does, else forward to the leader and take over when it is gone."""
    node = Node(settings, make_app=lambda orch: create_app(orch, settings), connect_services=True)
    try:
        server = Server(node, settings, host=host, port=port)
    except OSError as exc:
        where = f"{host or settings.host}:{settings.port if port is None else port}"
        raise Unavailable(
            f"cannot listen on {where}: {exc.strerror or exc}; "
            "set ORCHESTRATOR_HOST/ORCHESTRATOR_PORT to a free address"
        ) from None
    # Known once bound (port 0 picks one): how the other nodes reach this one.
    node.advertise_url = settings.advertise_url or default_advertise_url(server.host, server.port)
    try:
        node.start()
    except BaseException:
        server.waitress.close(worker_timeout_s=1.0)
        raise
    logger.info(
        "cluster node %s is the %s (lease %.1fs)",
        node.advertise_url,
        node.role,
        settings.leader_lease_s,
    )
    _serve_until_signalled(server, handle_signals)
