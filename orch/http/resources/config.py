"""Versioned agent configuration (ETag / If-Match) and the defaults new agents get."""

from __future__ import annotations

import falcon

from orch.controllers.config import MAX_CONFIG_VERSION
from orch.errors import Invalid
from orch.http.auth import Scope
from orch.http.media import read_body, send
from orch.http.resources.base import Resource
from orch.http.schemas import ConfigChange
from orch.model import validate_int


def _etag(config: dict) -> str:
    return f'"{config["version"]}"'


def _expected_version(req: falcon.Request) -> int | None:
    """The version an ``If-Match`` header insists on (``*`` or absent: any)."""
    header = req.get_header("If-Match")
    if header is None or header.strip() == "*":
        return None
    value = header.strip().removeprefix("W/").strip('"')
    if not (value.isascii() and value.isdigit()):
        raise Invalid("If-Match", f"must be a version ETag such as '\"3\"', got {header!r}")
    return validate_int("If-Match", int(value), 1, MAX_CONFIG_VERSION)


class AgentConfigResource(Resource):
    scopes = {"GET": Scope.ADMIN, "PUT": Scope.ADMIN, "PATCH": Scope.ADMIN}
    bodies = {"PUT": ConfigChange, "PATCH": ConfigChange}
    answers = {"GET": (200, 404), "PUT": (200, 400, 404, 412), "PATCH": (200, 400, 404, 412)}

    def on_get(self, req: falcon.Request, resp: falcon.Response, agent_id: str) -> None:
        """The agent's config; its ``version`` is also the ETag."""
        config = self.orch.agent_config(agent_id)
        send(resp, config)
        resp.etag = _etag(config)

    def on_patch(self, req: falcon.Request, resp: falcon.Response, agent_id: str) -> None:
        """Change the fields sent, keep the rest; ``If-Match`` guards against lost updates."""
        self._update(req, resp, agent_id, replace_all=False)

    def on_put(self, req: falcon.Request, resp: falcon.Response, agent_id: str) -> None:
        """Replace the config: fields not sent go back to the current defaults."""
        self._update(req, resp, agent_id, replace_all=True)

    def _update(
        self, req: falcon.Request, resp: falcon.Response, agent_id: str, *, replace_all: bool
    ) -> None:
        changes = read_body(req, ConfigChange).changes()
        config = self.orch.update_agent_config(
            agent_id,
            changes,
            expected_version=_expected_version(req),
            replace_all=replace_all,
        )
        send(resp, config)
        resp.etag = _etag(config)


class ConfigDefaults(Resource):
    scopes = {"GET": Scope.ADMIN, "PUT": Scope.ADMIN}
    bodies = {"PUT": ConfigChange}
    answers = {"GET": (200,), "PUT": (200, 400)}

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        """The config newly registered agents start from."""
        send(resp, self.orch.config_defaults())

    def on_put(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Change the defaults for agents registered from now on (fields sent only)."""
        send(resp, self.orch.set_config_defaults(read_body(req, ConfigChange).changes()))
