"""Who may call what: the admin token, agents' own tokens, and public reads.

Each resource declares a ``scopes`` map (HTTP method -> ``Scope``); this middleware
enforces ``ADMIN`` and ``AGENT_OR_ADMIN`` before the responder runs. ``AGENT`` calls
name their agent in the path or body, so the responder resolves it with
``acting_agent`` once it has read the body. An agent's token is never a substitute for
another agent's, and the admin token never acts as an agent: a write made in an
agent's name is always made by that agent.

Secrets are compared as SHA-256 digests in constant time (``orch.tokens``), so
neither the admin token's characters nor its length leak through timing. Guessing is
slowed by ``FailedTokenThrottle``: an address that presents too many unknown tokens is
refused (429) for a cool-down.
"""

from __future__ import annotations

import collections
import enum
import logging
import math
import threading
from typing import Any

import falcon

from orch.clock import Clock, SystemClock
from orch.errors import Forbidden, TooManyRequests, Unauthorized
from orch.system import Orchestrator
from orch.tokens import digest, same_secret

logger = logging.getLogger("orch.http.auth")

#: Addresses the throttle remembers at most; beyond it the quietest are forgotten.
MAX_TRACKED_ADDRESSES = 10_000


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


class _Failures:
    """One address's recent unknown tokens (digest -> monotonic time) and its lockout."""

    __slots__ = ("locked_until", "tokens")

    def __init__(self) -> None:
        self.tokens: dict[bytes, float] = {}
        self.locked_until = 0.0


class FailedTokenThrottle:
    """Locks out a client address that presents too many unknown tokens.

    ``max_failures`` distinct unknown tokens (admin or agent) within ``window_s`` lock
    the address out for ``lockout_s``: every request from it that carries a token is
    then refused with 429 and ``Retry-After`` *before* the token is checked, so a guess
    made during the cool-down learns nothing. The same unknown token again is not a new
    guess (an agent whose token went stale retries it on every heartbeat) and is not
    counted twice. Successes do not reset the count: otherwise a rogue agent could
    interleave its own valid token with guesses at the admin token. Time comes from
    ``clock`` (a ``ManualClock`` in tests); the table is bounded.
    """

    def __init__(
        self,
        clock: Clock | None = None,
        *,
        max_failures: int = 30,
        window_s: float = 60.0,
        lockout_s: float = 300.0,
        max_addresses: int = MAX_TRACKED_ADDRESSES,
    ) -> None:
        self._clock = clock or SystemClock()
        self.max_failures = max_failures
        self.window_s = window_s
        self.lockout_s = lockout_s
        self._max_addresses = max_addresses
        self._lock = threading.Lock()
        self._by_address: collections.OrderedDict[str, _Failures] = collections.OrderedDict()

    @property
    def tracked_addresses(self) -> int:
        """How many client addresses the table holds now: at most ``max_addresses``
        unless more than that are locked out. What the bound costs, for operators."""
        return len(self._by_address)

    def retry_after_s(self, address: str) -> float | None:
        """Seconds left of ``address``'s lockout; None when it may try."""
        now = self._clock.monotonic()
        with self._lock:
            failures = self._by_address.get(address)
            if failures is None or failures.locked_until <= now:
                return None
            return failures.locked_until - now

    def record_failure(self, address: str, token: str) -> bool:
        """Count ``token``, unknown, from ``address``; True if this locks the address out."""
        now = self._clock.monotonic()
        token_digest = digest(token)  # only digests are kept, never the token itself
        with self._lock:
            failures = self._by_address.pop(address, None) or _Failures()
            self._by_address[address] = failures  # most recently failing last
            cutoff = now - self.window_s
            failures.tokens = {d: t for d, t in failures.tokens.items() if t > cutoff}
            failures.tokens[token_digest] = now
            locked = len(failures.tokens) >= self.max_failures
            if locked:
                failures.locked_until = now + self.lockout_s
                failures.tokens.clear()
            self._forget_quiet(now)
        if locked:
            logger.warning(
                "client %s presented %d unknown tokens within %gs; refused for %gs",
                address,
                self.max_failures,
                self.window_s,
                self.lockout_s,
            )
        return locked

    def _forget_quiet(self, now: float) -> None:
        """Keep the table bounded: drop the least recently failing unlocked addresses."""
        while len(self._by_address) > self._max_addresses:
            address, failures = next(iter(self._by_address.items()))
            if failures.locked_until > now:
                # Locked addresses are kept; move it to the back and stop if all are.
                self._by_address.move_to_end(address)
                if all(f.locked_until > now for f in self._by_address.values()):
                    return
                continue
            del self._by_address[address]


class AuthMiddleware:
    """Enforces each resource's declared scope before its responder runs.

    It also feeds the ``FailedTokenThrottle``: every answer 401 to a request that
    carried a token other than the admin token is one failed guess for its address.
    """

    def __init__(
        self, admin_token: str | None, throttle: FailedTokenThrottle | None = None
    ) -> None:
        self._admin_digest = None if admin_token is None else digest(admin_token)
        self._throttle = throttle or FailedTokenThrottle()

    def is_admin(self, token: str | None) -> bool:
        """Whether ``token`` is the admin token, compared in constant time as digests."""
        if self._admin_digest is None or token is None:
            return False
        return same_secret(token, self._admin_digest)

    def process_resource(
        self, req: falcon.Request, resp: falcon.Response, resource: Any, params: dict[str, Any]
    ) -> None:
        if resource is None:
            return
        method = "GET" if req.method == "HEAD" else req.method
        if method not in resource.scopes:
            # No responder will run: Falcon answers 405 with the Allow header, as the
            # document promises for an undeclared method (a 401 would say a token
            # could make TRACE /health work).
            return
        scope = resource.scopes[method]
        token = bearer_token(req) if scope is not Scope.PUBLIC else None
        if token is not None:
            retry_after_s = self._throttle.retry_after_s(_address(req))
            if retry_after_s is not None:
                raise TooManyRequests(
                    "too many unknown tokens came from this address; wait before retrying",
                    retry_after_s=math.ceil(retry_after_s),
                )
        req.context.token = token
        if self._admin_token_unset or scope in (Scope.PUBLIC, Scope.AGENT):
            return
        if self.is_admin(token):
            return
        if scope is Scope.AGENT_OR_ADMIN and token is not None:
            resource.orch.authenticate(params["agent_id"], token)
            return
        if token is None:
            raise Unauthorized("this call needs the admin token: Authorization: Bearer <token>")
        if resource.orch.controllers.tokens.owner(token) is None:
            raise Unauthorized("the token is neither the admin token nor any agent's")
        raise Forbidden("this call needs the admin token; an agent's token does not allow it")

    def process_response(
        self, req: falcon.Request, resp: falcon.Response, resource: Any, req_succeeded: bool
    ) -> None:
        if resp.status_code != 401:
            return
        token = getattr(req.context, "token", None)
        if token is None or self.is_admin(token):
            return  # no guess was made (or the admin token was used on an agent's call)
        self._throttle.record_failure(_address(req), token)

    @property
    def _admin_token_unset(self) -> bool:
        return self._admin_digest is None


def _address(req: falcon.Request) -> str:
    """The client's address as waitress saw it (proxy headers are not trusted)."""
    return req.remote_addr or "unknown"


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
