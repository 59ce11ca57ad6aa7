"""What a launcher keeps on disk so that the next one takes its agents back as they are.

An agent's token is shown only at registration, so a launcher that forgot it could
only remove the agent and register it again, losing its ``restarts`` and an
operator's ``stop``. Like a Nomad client's data dir, the launcher keeps, per agent,
the token and whether a launcher's own shutdown stopped the agent (``resume``: the
next launcher starts it again; any other stopped agent, an operator's stop, even
one made while no launcher ran, stays stopped), in ``<log-dir>/launcher-state.json``,
readable by the launcher's user only and replaced atomically, so a launcher killed
at any moment leaves either the old file or the new one.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from dataclasses import dataclass

logger = logging.getLogger("orch.launcher")

STATE_FILE = "launcher-state.json"


@dataclass(frozen=True, slots=True)
class Kept:
    """One agent as the launcher left it: its token, and whether to start it again."""

    token: str
    resume: bool


class LauncherState:
    """The kept agents of one ``--log-dir``; every change is written at once."""

    def __init__(self, log_dir: str) -> None:
        os.makedirs(log_dir, exist_ok=True)
        self.path = os.path.join(log_dir, STATE_FILE)
        self._agents: dict[str, Kept] = self._read()

    def _read(self) -> dict[str, Kept]:
        try:
            with open(self.path, encoding="utf-8") as file:
                document = json.load(file)
            return {
                agent_id: Kept(str(entry["token"]), bool(entry["resume"]))
                for agent_id, entry in document["agents"].items()
            }
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            # Unreadable: its agents are registered afresh, as with no file at all.
            logger.warning("ignoring %s: %s", self.path, exc)
            return {}

    def get(self, agent_id: str) -> Kept | None:
        """The kept entry of ``agent_id``, if this launcher's dir has one."""
        return self._agents.get(agent_id)

    def keep(self, agent_id: str, token: str, *, resume: bool) -> None:
        """Remember (or update) an agent; written only when something changed."""
        entry = Kept(token, resume)
        if self._agents.get(agent_id) != entry:
            self._agents[agent_id] = entry
            self._write()

    def set_resume(self, agent_id: str, resume: bool) -> None:
        """Whether a launcher started later should start the agent again if it is stopped."""
        entry = self._agents.get(agent_id)
        if entry is not None:
            self.keep(agent_id, entry.token, resume=resume)

    def forget(self, agent_id: str) -> None:
        """The agent is no longer ours (retired, removed, or registered again)."""
        if self._agents.pop(agent_id, None) is not None:
            self._write()

    def _write(self) -> None:
        document = {
            "agents": {
                agent_id: {"token": kept.token, "resume": kept.resume}
                for agent_id, kept in sorted(self._agents.items())
            }
        }
        temporary = f"{self.path}.{os.getpid()}.tmp"
        try:
            descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(descriptor, "w", encoding="utf-8") as file:
                json.dump(document, file)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, self.path)
        except OSError as exc:
            # Not fatal: the agents run; a later launcher registers them afresh.
            logger.error("cannot write %s: %s", self.path, exc)
            with contextlib.suppress(OSError):
                os.unlink(temporary)
