"""Serving the API on waitress, with a shutdown that finishes what it accepted.

Waitress's own ``serve()`` stops its loop on a signal and cancels queued requests; a
control plane should instead stop accepting, let in-flight requests answer, then stop
the actors. ``Server`` runs waitress's loop itself so it can do exactly that.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import signal
import threading
import time
from types import FrameType
from typing import Any

import waitress
from waitress import wasyncore

from orch.config import Settings
from orch.http.app import create_app
from orch.http.media import MAX_BODY_BYTES
from orch.system import Orchestrator

logger = logging.getLogger("orch.http")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


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
        self._waitress: Any = waitress.create_server(
            create_app(orchestrator, self.settings),
            host=host or self.settings.host,
            port=self.settings.port if port is None else port,
            threads=self.settings.http_threads,
            # A backstop only: the app refuses bodies over the limit by Content-Length
            # with a problem+json 413 before reading them.
            max_request_body_size=2 * MAX_BODY_BYTES,
            ident="june-orchestrator",
            clear_untrusted_proxy_headers=True,
        )

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
        logger.info("June Orchestrator listening on http://%s:%d", self.host, self.port)
        server = self._waitress
        adj = server.adj
        try:
            while not self._stopping.is_set():
                wasyncore.loop(
                    timeout=adj.asyncore_loop_timeout,
                    map=server._map,
                    use_poll=adj.asyncore_use_poll,
                    count=1,
                )
        finally:
            self._shut_down(drain_timeout_s)

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
        return any(
            channel.requests or channel.total_outbufs_len
            for channel in list(server.active_channels.values())
        )

    def _poll(self, until: float) -> None:
        server = self._waitress
        while self._busy() and time.monotonic() < until:
            wasyncore.loop(timeout=0.05, map=server._map, use_poll=True, count=1)

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
    orchestrator.start()
    server = Server(orchestrator, settings, host=host, port=port)
    if handle_signals and threading.current_thread() is threading.main_thread():

        def on_signal(signum: int, frame: FrameType | None) -> None:
            logger.info("received %s; shutting down", signal.Signals(signum).name)
            server.stop()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
    server.serve_forever()
