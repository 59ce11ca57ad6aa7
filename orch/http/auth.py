"""Who may call what: the admin token, agents' own tokens, and public reads.

Each resource declares a ``scopes`` map (HTTP method -> ``Scope``); this middleware
enforces ``ADMIN`` and ``AGENT_OR_ADMIN`` before the responder runs. ``AGENT`` calls
name their agent in the path or body, so the responder resolves it with
``acting_agent`` once it has read the body. An agent's token is never a substitute for
another agent's, and the admin token never acts as an agent: a write made in an
agent's name is always made by that agent.
"""

from __future__ import annotations

import enum
import hmac
from typing import Any

import falcon

from orch.errors import Forbidden, Unauthorized
from orch.system import Orchestrator, hash_token


class Scope(enum.Enum):
    PUBLIC = "public"  # /health, /metrics
    ADMIN = "admin"  # every other write and read, when ORCH_ADMIN_TOKEN is set
    AGENT = "agent"  # the agent's own token, always
    AGENT_OR_ADMIN = "agent_or_admin"  # an agent reading its own data, or an operator


def bearer_token(req: falcon.Request) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, if any."""
    header = req.get_header("Authorization")
    if header is None:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("the Authorization header must be 'Bearer <token>'")
    return token.strip()


class AuthMiddleware:
    """Enforces each resource's declared scope before its responder runs."""

    def __init__(self, admin_token: str | None) -> None:
        self._admin_token = admin_token

    def is_admin(self, token: str | None) -> bool:
        if self._admin_token is None or token is None:
            return False
        return hmac.compare_digest(token.encode(), self._admin_token.encode())

    def process_resource(
        self, req: falcon.Request, resp: falcon.Response, resource: Any, params: dict[str, Any]
    ) -> None:
        if resource is None:
            return
        method = "GET" if req.method == "HEAD" else req.method
        scope = resource.scopes.get(method, Scope.ADMIN)
        token = bearer_token(req) if scope is not Scope.PUBLIC else None
        req.context.token = token
        if self._admin_token is None or scope in (Scope.PUBLIC, Scope.AGENT):
            return
        if self.is_admin(token):
            return
        if scope is Scope.AGENT_OR_ADMIN and token is not None:
            resource.orch.authenticate(params["agent_id"], token)
            return
        if token is None:
            raise Unauthorized("this call needs the admin token: Authorization: Bearer <token>")
        if resource.orch.directory.agent_with_token_hash(hash_token(token)) is None:
            raise Unauthorized("the token is neither the admin token nor any agent's")
        raise Forbidden("this call needs the admin token; an agent's token does not allow it")


def acting_agent(req: falcon.Request, orch: Orchestrator, claimed: str | None) -> str:
    """The agent making an agent-scoped call, proven by its token.

    ``claimed`` (from the path or body) must be the token's owner; without a claim the
    token alone says who is calling.
    """
    token = req.context.token
    if claimed is None:
        return orch.identify(token)
    orch.authenticate(claimed, token)
    return claimed
