"""The launcher's control loop: registration, supervision, the orchestrator's decisions.

One thread (the process's main thread) owns every ``Instance`` and every child
process: it starts them (so ``PR_SET_PDEATHSIG`` follows a thread that lives as long
as the launcher), reaps them, decides restarts, and talks to the orchestrator
through ``orch.client`` only. A second thread follows the event feed
(``orch/launcher/feed.py``) and only tells this loop which agents to read again.
Signal handlers only set flags the loop reads.

What the orchestrator decides, the loop reads from the agent's status:
``stopped``/``failed`` — the process is stopped (SIGTERM to its group, SIGKILL after
``stop_grace_s``); ``registered``/``idle``/``busy``/``unhealthy`` — it runs; a
``lost`` agent's process is stopped and the agent registered again; a deregistered
one stays stopped until the file is read again. What the launcher decides — a crash
and its restart, or giving up — it tells the orchestrator (``POST
/agents/{id}/exits``), later if the server is away: nothing is dropped.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import signal
import socket
import time
from collections.abc import Callable
from typing import Any

from orch.client import OrchestratorClient
from orch.errors import (
    Conflict,
    Forbidden,
    NotFound,
    OrchestratorError,
    Timeout,
    Unauthorized,
    Unavailable,
)
from orch.launcher.config import LauncherConfig, LauncherConfigError, load_config
from orch.launcher.feed import EventFeed, Notice
from orch.launcher.instance import RUN_STATES, Instance, LaunchContext
from orch.launcher.logs import AgentLog
from orch.launcher.process import kill_strays
from orch.launcher.state import Kept, LauncherState

logger = logging.getLogger("orch.launcher")

#: How often every agent is read again even without an event (a safety net).
RECONCILE_INTERVAL_S = 5.0
_LOOP_WAIT_S = 0.05


class ServerAway(Exception):
    """The orchestrator cannot be reached now; the loop retries with backoff."""


class FatalRefusal(Exception):
    """The orchestrator refuses the launcher itself (its admin token): exit 1."""


#: How long one call may go round the server URLs before the loop's own backoff takes
#: over (``OrchestratorClient.failover_wait_s``).
LOOP_FAILOVER_WAIT_S = 1.0


class Launcher:
    """Runs the programs of one file as supervised agent processes."""

    def __init__(
        self,
        config_path: str,
        config: LauncherConfig,
        *,
        url: str,
        admin_token: str | None,
        log_dir: str,
        launcher_id: str | None = None,
        timeout_s: float = 5.0,
        feed_wait_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config_path = config_path
        self.config = config
        self.url = url.rstrip("/")
        self.log_dir = log_dir
        self.host = socket.gethostname()
        self.launcher_id = launcher_id or self.host
        self._admin_token = admin_token
        self._clock = clock
        # A short failover wait: the client still tries every URL of ORCH_URL once
        # (and backs off briefly), but an outage is the loop's to ride out with its own
        # backoff, so that a call never holds up signals, reaping and restarts for long.
        self.client = OrchestratorClient(
            url, token=admin_token, timeout_s=timeout_s, failover_wait_s=LOOP_FAILOVER_WAIT_S
        )
        self._notices: queue.Queue[Notice] = queue.Queue()
        self.instances: dict[str, Instance] = {}
        self._feed = EventFeed(
            OrchestratorClient(
                url, token=admin_token, timeout_s=timeout_s, failover_wait_s=LOOP_FAILOVER_WAIT_S
            ),
            lambda agent_id: agent_id in self.instances,
            self._notices.put,
            wait_s=feed_wait_s,
        )
        self._shutdown_requested = False
        self._reload_requested = False
        self._shutting_down = False
        self._server_up = True
        self._retry_at = 0.0
        self._backoff_s = 0.1
        self._next_reconcile_at = 0.0
        self._deregistered_seen: set[str] = set()
        self._state = LauncherState(log_dir)
        self._skip_warned: set[str] = set()
        self._context = LaunchContext(
            url=self.url,
            # The admin token is the launcher's alone: its processes never see it.
            base_env={k: v for k, v in os.environ.items() if k != "ORCH_ADMIN_TOKEN"},
            identity={"launcher": self.launcher_id, "host": self.host},
        )

    # -------------------------------------------------------------- lifecycle

    def run(self) -> int:
        """Run until SIGTERM or SIGINT, then stop every process gracefully; returns 0."""
        self._install_signal_handlers()
        self._adopt(self.config)
        self._feed.start()
        logger.info(
            "launcher %s: %d agent(s) from %s, orchestrator %s",
            self.launcher_id,
            len(self.instances),
            self.config_path,
            self.url,
        )
        try:
            while True:
                if self._reload_requested:
                    self._reload_requested = False
                    self._reload()
                if self._shutdown_requested and not self._shutting_down:
                    self._begin_shutdown()
                self.step()
                if self._shutting_down and not any(i.child for i in self.instances.values()):
                    break
                self._wait_for_notice(_LOOP_WAIT_S)
        except FatalRefusal as exc:
            logger.error("%s", exc)
            self._kill_everything()
            return 1
        finally:
            self._feed.stop()
        self._requeue_what_is_left()
        for instance in self.instances.values():
            instance.log.close()
        self.client.close()
        logger.info("launcher %s stopped", self.launcher_id)
        return 0

    def _install_signal_handlers(self) -> None:
        def shutdown(signum: int, frame: object) -> None:
            self._shutdown_requested = True

        def reload(signum: int, frame: object) -> None:
            self._reload_requested = True

        signal.signal(signal.SIGTERM, shutdown)
        signal.signal(signal.SIGINT, shutdown)
        signal.signal(signal.SIGHUP, reload)

    def _wait_for_notice(self, timeout_s: float) -> None:
        try:
            notice = self._notices.get(timeout=timeout_s)
        except queue.Empty:
            return
        self._take_notice(notice)
        while True:
            try:
                self._take_notice(self._notices.get_nowait())
            except queue.Empty:
                return

    def _take_notice(self, notice: Notice) -> None:
        if notice is None:
            for instance in self.instances.values():
                instance.needs_read = True
            return
        agent_id, kind = notice
        instance = self.instances.get(agent_id)
        if instance is not None:
            instance.needs_read = True
            if kind == "agent.deregistered":
                self._deregistered_seen.add(agent_id)

    # ----------------------------------------------------------- the file

    def _adopt(self, config: LauncherConfig) -> None:
        """Make the instances match ``config``: new ones join, removed ones retire."""
        wanted = config.instances()
        for agent_id, program in wanted.items():
            instance = self.instances.get(agent_id)
            if instance is None:
                log = AgentLog(self.log_dir, agent_id, program.log_max_bytes, program.log_backups)
                self.instances[agent_id] = Instance(agent_id, program, log)
            else:
                instance.program = program  # applies from the next launch
                instance.retiring = False
                if instance.removed:
                    instance.removed = False
                    instance.needs_registration = True
        for agent_id, instance in self.instances.items():
            if agent_id not in wanted and not instance.retiring:
                logger.info("%s is no longer in the file; stopping it", agent_id)
                instance.retiring = True
                instance.needs_read = True
        self.config = config

    def _reload(self) -> None:
        try:
            config = load_config(self.config_path)
        except LauncherConfigError as exc:
            logger.error("SIGHUP: %s; keeping the running configuration", exc)
            return
        logger.info("SIGHUP: %s read again", self.config_path)
        self._adopt(config)

    # ------------------------------------------------------------ one turn

    def step(self) -> None:
        """One turn of the loop: reap, tell the server, act on its decisions, launch."""
        now = self._clock()
        for instance in list(self.instances.values()):
            instance.reap(now, shutting_down=self._shutting_down)
        if now >= self._next_reconcile_at:
            self._next_reconcile_at = now + RECONCILE_INTERVAL_S
            for instance in self.instances.values():
                instance.needs_read = True
                instance.skipped = None  # another launcher's agent may be free by now
        if now >= self._retry_at:
            try:
                for instance in list(self.instances.values()):
                    try:
                        self._talk(instance, now)
                    except OrchestratorError as exc:
                        # A refusal about this agent alone (the server's answer says
                        # why): the others carry on, and it is read again next turn.
                        logger.error("%s: %s", instance.agent_id, exc.message)
                        instance.needs_read = True
                if not self._server_up:
                    logger.info("orchestrator %s reachable again", self.url)
                self._server_up = True
                self._backoff_s = 0.1
            except ServerAway as exc:
                if self._server_up:
                    logger.warning("orchestrator unreachable (%s); retrying", exc)
                self._server_up = False
                self._retry_at = now + self._backoff_s
                self._backoff_s = min(5.0, self._backoff_s * 2)
        for instance in list(self.instances.values()):
            instance.act(
                self._clock(),
                self._context,
                shutting_down=self._shutting_down,
                server_up=self._server_up,
            )

    def _call(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """A call to the server; away (unreachable, 503, time-out) is ``ServerAway``."""
        try:
            return function(*args, **kwargs)
        except (Unavailable, Timeout) as exc:
            raise ServerAway(exc.message) from None
        except (Unauthorized, Forbidden) as exc:
            raise FatalRefusal(
                f"the orchestrator refuses the launcher: {exc.message} "
                "(set ORCH_ADMIN_TOKEN to the server's admin token)"
            ) from None

    def _talk(self, instance: Instance, now: float) -> None:
        """Everything this instance has to tell or ask the server, in order."""
        if instance.skipped is not None:
            return
        while instance.pending_exits:
            report = instance.pending_exits[0]
            try:
                answer = self._call(self.client.process_exited, instance.agent_id, **report)
                instance.server_state = answer["status"]
            except (NotFound, Conflict):
                pass  # nothing left to settle (removed, failed or restarted meanwhile)
            instance.pending_exits.pop(0)
        if instance.retiring:
            self._retire(instance, now)
            return
        if (
            instance.needs_registration
            and instance.child is None
            and not self._shutting_down
            and not instance.removed
        ):
            self._register(instance)
        if instance.pending_metadata is not None and instance.token is not None:
            with contextlib.suppress(NotFound, Conflict):  # gone or failed: read below
                self._call(
                    self.client.update_agent_metadata, instance.agent_id, instance.pending_metadata
                )
            instance.pending_metadata = None
        if self._shutting_down and instance.child is not None and not instance.drain_requested:
            self._request_drain(instance, now)
        if instance.needs_read and not instance.needs_registration:
            instance.needs_read = False
            try:
                record = self._call(self.client.agent, instance.agent_id)
            except NotFound:
                record = None
            self._apply(instance, record)

    def _register(self, instance: Instance) -> None:
        """Register the agent (taking back one of ours) and start it."""
        program = instance.program
        agent_id = instance.agent_id
        kept = self._state.get(agent_id)
        if kept is not None:
            kill_strays(kept.token)  # what outlived a launcher killed with SIGKILL
        try:
            existing = self._call(self.client.agent, agent_id)
        except NotFound:
            existing = None
        if existing is not None:
            owner = (existing.get("metadata") or {}).get("launcher")
            if owner not in (None, self.launcher_id) and existing["status"] in RUN_STATES | {
                "stopping"
            }:
                if agent_id not in self._skip_warned:
                    self._skip_warned.add(agent_id)
                    logger.error(
                        "%s is %s and belongs to launcher %s; not running it here",
                        agent_id,
                        existing["status"],
                        owner,
                    )
                instance.skipped = f"belongs to launcher {owner}"
                return
            if (
                kept is not None
                and owner == self.launcher_id
                and existing["status"] != "lost"
                and self._token_works(agent_id, kept.token)
            ):
                self._take_back(instance, existing["status"], kept)
                return
            with contextlib.suppress(NotFound):
                self._call(self.client.deregister_agent, agent_id)
        try:
            registration = self._call(
                self.client.register_agent,
                agent_id,
                program.agent_type,
                capabilities=program.capabilities,
                metadata={**self._context.identity, "program": program.name},
                max_concurrent_tasks=program.max_concurrent_tasks,
            )
            self._call(self.client.start_agent, agent_id)
        except Conflict as exc:
            logger.error("cannot register %s: %s", agent_id, exc.message)
            instance.skipped = exc.message
            return
        self._state.keep(agent_id, registration.token, resume=False)
        self._ours(instance, registration.token, "idle")
        logger.info("%s registered and started", agent_id)

    def _ours(self, instance: Instance, token: str, status: str) -> None:
        """The agent is this launcher's now, with ``token``, as the server has it."""
        instance.token = token
        self._skip_warned.discard(instance.agent_id)
        instance.needs_registration = False
        instance.server_state = status
        instance.gave_up = False
        instance.restart_history = ()
        instance.restart_at = None
        instance.needs_read = False
        self._deregistered_seen.discard(instance.agent_id)

    def _token_works(self, agent_id: str, token: str) -> bool:
        """Does the kept token still belong to the agent (not registered again since)?"""
        try:
            self.client.agent_tasks(agent_id, token=token)
        except (Unavailable, Timeout) as exc:
            raise ServerAway(exc.message) from None
        except (Unauthorized, Forbidden, NotFound):
            return False
        return True

    def _take_back(self, instance: Instance, status: str, kept: Kept) -> None:
        """Take back an agent a previous launcher of ours ran, keeping its record.

        Its ``restarts`` and ``last_error`` stay, and an agent an operator stopped
        stays stopped until started. A process it had died with that launcher
        (``PR_SET_PDEATHSIG``): that is reported as any kill is, so the task it held
        is retried by policy at once rather than when the agent would be lost.
        """
        agent_id = instance.agent_id
        if status == "stopping" or (status in RUN_STATES and status != "registered"):
            with contextlib.suppress(NotFound, Conflict):
                answer = self._call(
                    self.client.process_exited,
                    agent_id,
                    signal="SIGKILL",
                    restarting=status != "stopping",
                )
                status = answer["status"]
        if status == "stopped" and not kept.resume:
            logger.info("%s taken back; it stays stopped (not stopped by a launcher)", agent_id)
        elif status not in RUN_STATES or status == "registered":
            self._call(self.client.start_agent, agent_id)  # answers "started", not a status
            status = "idle"
            logger.info("%s taken back and started", agent_id)
        else:
            logger.info("%s taken back", agent_id)
        self._state.keep(agent_id, kept.token, resume=False)
        self._ours(instance, kept.token, status)
        instance.needs_read = True  # the status as the server has it after all this
        instance.pending_metadata = {**self._context.identity, "program": instance.program.name}

    def _apply(self, instance: Instance, record: dict[str, Any] | None) -> None:
        """Act on the agent as the server has it now."""
        agent_id = instance.agent_id
        if record is None:
            if agent_id in self._deregistered_seen:
                if not instance.removed:
                    logger.info("%s was removed by an operator; stopping it", agent_id)
                instance.removed = True
                self._state.forget(agent_id)
            else:  # the server forgot it (restarted without its store): register again
                instance.needs_registration = True
            instance.server_state = None
            instance.token = None if instance.removed else instance.token
            instance.stop(self._clock())
            return
        status = record["status"]
        instance.server_state = status
        if status in ("stopped", "failed"):
            instance.restart_at = None
            if status == "stopped":
                instance.gave_up = False  # a start after a stop is a fresh start
            instance.stop(self._clock())
        elif status == "lost":
            instance.stop(self._clock())
            instance.needs_registration = True
        elif status in RUN_STATES and instance.gave_up:
            logger.info("%s was started again; launching it", agent_id)
            instance.gave_up = False
            instance.restart_history = ()

    def _request_drain(self, instance: Instance, now: float) -> None:
        """Ask the server to drain the agent; SIGTERM follows when it is stopped."""
        instance.drain_requested = True
        instance.draining_until = now + instance.program.stop_grace_s
        try:
            answer = self._call(self.client.stop_agent, instance.agent_id, True)
            instance.server_state = answer["status"]
        except (NotFound, Conflict):
            instance.server_state = "stopped"

    def _retire(self, instance: Instance, now: float) -> None:
        """Removed from the file: drain, stop the process, then deregister."""
        if instance.child is not None:
            if not instance.drain_requested:
                self._request_drain(instance, now)
            elif instance.needs_read:
                instance.needs_read = False
                try:
                    instance.server_state = self._call(self.client.agent, instance.agent_id)[
                        "status"
                    ]
                except NotFound:
                    instance.server_state = None
            return
        if instance.token is not None or instance.server_state is not None:
            with contextlib.suppress(NotFound):
                self._call(self.client.deregister_agent, instance.agent_id)
        self._state.forget(instance.agent_id)
        logger.info("%s retired", instance.agent_id)
        instance.log.close()
        del self.instances[instance.agent_id]

    # -------------------------------------------------------------- shutdown

    def _begin_shutdown(self) -> None:
        logger.info("stopping every process")
        self._shutting_down = True
        now = self._clock()
        for instance in self.instances.values():
            instance.restart_at = None
            if instance.server_state in RUN_STATES:
                # Stopped by this shutdown, not by an operator: the next launcher
                # starts it again (any other stopped agent stays stopped).
                self._state.set_resume(instance.agent_id, True)
            if instance.child is not None and not self._server_up:
                instance.stop(now)

    def _requeue_what_is_left(self) -> None:
        """Tell what is still untold; agents still draining give their tasks back."""
        for instance in self.instances.values():
            for report in instance.pending_exits:
                try:
                    self.client.process_exited(instance.agent_id, **report)
                except OrchestratorError as exc:
                    logger.warning(
                        "could not report the exit of %s: %s", instance.agent_id, exc.message
                    )
                    break
            instance.pending_exits.clear()
            if instance.server_state != "stopping" or instance.token is None:
                continue
            try:
                self.client.stop_agent(instance.agent_id, False)
            except OrchestratorError as exc:
                logger.warning("could not stop %s: %s", instance.agent_id, exc.message)

    def _kill_everything(self) -> None:
        for instance in self.instances.values():
            if instance.child is not None:
                instance.child.signal_group(signal.SIGKILL)
                instance.child.process.wait(5)
