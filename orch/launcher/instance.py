"""What the launcher knows about one agent it runs (``NAME-i``): plain state.

Owned by the control loop's thread (``orch/launcher/control.py``) and changed only
there; the restart decision itself is ``orch.supervision.decide_restart``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from orch.launcher.config import Program
from orch.launcher.logs import AgentLog
from orch.launcher.process import ChildProcess

#: Agent states in which its process should run.
RUN_STATES = frozenset({"registered", "idle", "busy", "unhealthy"})


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
