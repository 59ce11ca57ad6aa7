"""One agent the launcher runs (``NAME-i``): its state and its process's supervision.

An ``Instance`` starts its process, stops it (SIGTERM to its group, SIGKILL after
``stop_grace_s``), reaps it and decides what an exit means — a restart after the
backoff, or giving up, by ``orch.supervision.decide_restart`` — without talking to
the server: what the server must hear is queued (``pending_exits``,
``pending_metadata``) and told by the control loop (``orch/launcher/control.py``),
whose thread owns every instance.
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from orch.launcher.config import Program
from orch.launcher.logs import AgentLog
from orch.launcher.process import ChildProcess, describe_exit
from orch.supervision import decide_restart

logger = logging.getLogger("orch.launcher")

#: Agent states in which its process should run.
RUN_STATES = frozenset({"registered", "idle", "busy", "unhealthy"})


@dataclass(frozen=True, slots=True)
class LaunchContext:
    """What every launch needs from the launcher: its URL, environment and identity."""

    url: str
    base_env: Mapping[str, str]  # the launcher's environment, without its admin token
    identity: Mapping[str, str]  # metadata ``launcher`` and ``host``


@dataclass
class Instance:
    """One agent: its registration, its process, its restarts, what is still to tell."""

    agent_id: str
    program: Program
    log: AgentLog
    token: str | None = None  # the agent's token; only the launcher and its process see it
    needs_registration: bool = True
    skipped: str | None = None  # why it is not ours to run (another launcher's live agent)
    server_state: str | None = None  # the agent's status as last read from the server
    removed: bool = False  # deregistered by an operator: stays stopped until SIGHUP
    child: ChildProcess | None = None
    restart_history: tuple[float, ...] = ()
    restart_at: float | None = None  # when the backoff after a crash runs out
    gave_up: bool = False  # restart intensity exceeded: failed until started again
    term_sent_at: float | None = None  # SIGTERM sent (a stop we asked for)
    kill_at: float | None = None  # SIGKILL due if the process is still there
    draining_until: float | None = None  # a drain we asked for; SIGTERM at the latest then
    drain_requested: bool = False
    retiring: bool = False  # removed from the file: stop gracefully, then deregister
    pending_exits: list[dict[str, Any]] = field(default_factory=list)
    pending_metadata: dict[str, Any] | None = None
    needs_read: bool = True  # read the agent from the server and act on it

    def wants_process(self, shutting_down: bool) -> bool:
        """Should a process run now (ignoring backoff)?"""
        return (
            not shutting_down
            and not self.retiring
            and not self.removed
            and not self.gave_up
            and self.skipped is None
            and self.token is not None
            and not self.needs_registration
            and self.server_state in RUN_STATES
        )

    # ------------------------------------------------------------ the process

    def act(
        self, now: float, context: LaunchContext, *, shutting_down: bool, server_up: bool
    ) -> None:
        """Local decisions: escalate a stop, end a drain, launch when it should run."""
        child = self.child
        if child is not None:
            if self.kill_at is not None and now >= self.kill_at:
                logger.warning(
                    "%s did not stop within %gs; SIGKILL", self.agent_id, self.program.stop_grace_s
                )
                child.signal_group(signal.SIGKILL)
                self.kill_at = None
            elif self.term_sent_at is None and self.draining_until is not None:
                if self.server_state != "stopping" or now >= self.draining_until:
                    self.stop(now)
            elif self.term_sent_at is None and shutting_down and not server_up:
                self.stop(now)  # cannot drain through an absent server
            return
        if not self.wants_process(shutting_down):
            return
        if self.restart_at is not None and now < self.restart_at:
            return
        self.launch(now, context)

    def launch(self, now: float, context: LaunchContext) -> None:
        """Start the process; its token and ids go in its environment, never its argv."""
        program = self.program
        assert self.token is not None
        env = {**context.base_env, **program.env}
        env.update(ORCH_URL=context.url, ORCH_AGENT_ID=self.agent_id, ORCH_AGENT_TOKEN=self.token)
        self.restart_at = None
        try:
            self.child = ChildProcess(self.agent_id, program.command, env, program.cwd, self.log)
        except OSError as exc:
            logger.error("%s: cannot start %s: %s", self.agent_id, program.command[0], exc)
            self.log.note(f"cannot start {program.command[0]}: {exc}")
            self.crashed({"exit_code": 127}, now)  # as a shell says "command not found"
            return
        self.term_sent_at = self.kill_at = self.draining_until = None
        self.drain_requested = False
        self.pending_metadata = {
            **context.identity,
            "program": program.name,
            "pid": self.child.pid,
            "launched_at": time.time(),
        }
        self.log.note(f"launched pid {self.child.pid}")
        logger.info("%s launched (pid %d)", self.agent_id, self.child.pid)

    def stop(self, now: float) -> None:
        """SIGTERM to the process group; SIGKILL after ``stop_grace_s`` (``act``)."""
        child = self.child
        if child is None or self.term_sent_at is not None:
            return
        self.term_sent_at = now
        self.kill_at = now + self.program.stop_grace_s
        self.log.note("stopping: SIGTERM")
        child.signal_group(signal.SIGTERM)

    def reap(self, now: float, *, shutting_down: bool) -> None:
        """If the process ended: a stop we asked for, or a crash to restart or report."""
        child = self.child
        if child is None:
            return
        returncode = child.poll()
        if returncode is None:
            return
        child.reap()
        self.child = None
        outcome = describe_exit(returncode)
        how = f"signal {outcome['signal']}" if "signal" in outcome else f"status {returncode}"
        self.log.note(f"pid {child.pid} exited ({how})")
        expected = self.term_sent_at is not None
        self.term_sent_at = self.kill_at = self.draining_until = None
        self.drain_requested = False
        if expected:
            logger.info("%s stopped (%s)", self.agent_id, how)
            return
        if self.server_state == "stopping" or shutting_down or self.retiring:
            logger.warning("%s exited while stopping (%s)", self.agent_id, how)
            self.pending_exits.append({**outcome, "restarting": False})
            return
        if self.server_state not in RUN_STATES:
            return  # stopped or failed already: nothing to restart or settle
        self.crashed(outcome, now)

    def crashed(self, outcome: dict[str, Any], now: float) -> None:
        """An unexpected exit: restart after the backoff, or give up (restart intensity)."""
        policy = self.program.restart
        decision = decide_restart(policy, self.restart_history, now)
        self.restart_history = decision.history
        what = ", ".join(f"{k} {v}" for k, v in outcome.items())
        if decision.restart_in_s is None:
            logger.error(
                "%s exited (%s): more than %d restarts in %gs; giving up (failed)",
                self.agent_id,
                what,
                policy.max_restarts,
                policy.restart_window_s,
            )
            self.gave_up = True
            self.server_state = "failed"
            self.pending_exits.append({**outcome, "restarting": False})
            return
        logger.warning(
            "%s exited (%s); restarting in %gs", self.agent_id, what, decision.restart_in_s
        )
        self.restart_at = now + decision.restart_in_s
        self.pending_exits.append({**outcome, "restarting": True})
