"""``ConfigController``: agents' versioned configuration and the defaults new agents get.

Every change bumps the config's ``version``; the heartbeat answer carries it, so an
agent knows to reload. ``expected_version`` refuses a change made against a version
that is no longer current (a lost update), before the agent's actor is asked.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from orch.controllers.base import Actors
from orch.errors import Unavailable, VersionMismatch
from orch.model import AgentConfig, AgentRecord, validate_int
from orch.validation import validate_mapping

#: Versions count changes from 1.
MAX_CONFIG_VERSION = 2**63 - 1


class ConfigController:
    """The configuration side of the embedded API (``Orchestrator.agent_config`` and kin)."""

    def __init__(self, actors: Actors) -> None:
        self._actors = actors
        self._calls = actors.calls

    def agent_config(self, agent_id: str) -> dict[str, Any]:
        """An agent's config, with its ``version``."""
        return self._actors.entry(agent_id).record.config.to_dict()

    def update_agent_config(
        self,
        agent_id: str,
        changes: Mapping[str, Any],
        *,
        expected_version: int | None = None,
        replace_all: bool = False,
    ) -> dict[str, Any]:
        """Change an agent's config; ``expected_version`` guards against lost updates.

        With ``replace_all`` the fields not named in ``changes`` go back to the
        current defaults (HTTP ``PUT``); otherwise they are kept (``PATCH``).
        """
        validate_mapping("config", changes)
        if expected_version is not None:
            validate_int("expected_version", expected_version, 1, MAX_CONFIG_VERSION)
        entry = self._actors.entry(agent_id)
        if replace_all:
            defaults = self.config_defaults()
            changes = {
                **{k: v for k, v in defaults.items() if k in AgentConfig.EDITABLE},
                **changes,
            }
        current = entry.record.config
        if expected_version is not None and expected_version != current.version:
            raise VersionMismatch(
                f"config of {agent_id!r} is at version {current.version}, not {expected_version}",
                version=current.version,
            )
        new = current.updated(changes)
        if entry.actor is None:
            raise Unavailable(f"agent {agent_id!r} has no running actor ({entry.record.state})")
        record: AgentRecord = self._calls.ask(entry.actor.update_config(new))
        return record.config.to_dict()

    def config_defaults(self) -> dict[str, Any]:
        """The config newly registered agents get."""
        return self._calls.ask(self._actors.supervisor.config_defaults()).to_dict()

    def set_config_defaults(self, changes: Mapping[str, Any]) -> dict[str, Any]:
        """Change the config newly registered agents get."""
        validate_mapping("config", changes)
        return self._calls.ask(self._actors.supervisor.set_config_defaults(dict(changes))).to_dict()
