"""The ``Idempotency-Key`` request header: a retried write gets its first answer again.

What a key means and where answers are kept is ``orch/idempotency.py``; this
middleware is the HTTP side: it reads the header (the IETF httpapi draft's String
structured field, ``Idempotency-Key: "8e03978e-..."``, or a bare token as Stripe
takes it), fingerprints the request (method, path with query, body), scopes the
key by the credential that sent it, and either replays the stored answer or lets
the request run and hands its answer over to be kept.

It runs after authentication (``AuthMiddleware``), so a key never lets a caller past
a check it would fail (agent-scoped calls, whose token the responder checks, are
replayed only for a token that is still an agent's), and the scope is a digest of
the whole ``Authorization`` header: a client holding another token can neither read
nor collide with this one's answers.

Keyed requests never take the HTTP loop's fast path (``InlineAnswers`` sends them to
the workers, and this middleware also takes the list of held writes away, so the
request waits for its commits wherever it runs). The answer must be stored after the
writes behind it are durable and before it is sent: on the loop that would mean a
store read and a second commit per request with the loop waiting on both, which is
what the fast path exists to avoid.
"""

from __future__ import annotations

import hashlib
import io
from typing import Any

import falcon

from orch.errors import Invalid
from orch.http.auth import Scope
from orch.http.errors import PayloadTooLarge
from orch.http.media import MAX_BODY_BYTES
from orch.http.resources.base import ANSWER_WRITES
from orch.idempotency import IdempotencyKeys
from orch.model import IdempotentAnswer

HEADER = "Idempotency-Key"
#: Methods a key applies to; on any other it is ignored (they change nothing).
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
MAX_KEY_CHARS = 255
#: The header's value as /openapi.json states it: exactly what ``parse_key`` accepts
#: (HTTP drops spaces around a value, so at least one character must be another).
KEY_SCHEMA = {
    "type": "string",
    "minLength": 1,
    "maxLength": MAX_KEY_CHARS,
    "pattern": "^[ -~]*[!-~][ -~]*$",
}
#: Answer headers that belong to the connection or the moment, not to the answer.
UNKEPT_HEADERS = frozenset(
    {"content-length", "date", "server", "connection", "transfer-encoding", "retry-after"}
)
#: Set on a replayed answer, as Stripe does, so a client can tell it from a fresh one.
REPLAYED_HEADER = "Idempotent-Replayed"


def parse_key(raw: str) -> str:
    """The key a header value carries; ``Invalid`` naming the header if it is unusable.

    The value must be 1 to 255 printable ASCII characters (``KEY_SCHEMA``). A value
    that is a well-formed RFC 8941 String (``"..."``, with ``\\"`` and ``\\\\``
    escaped, not empty), as the draft writes keys, stands for its content, so
    ``"abc"`` and ``abc`` are one key; any other value is the key as it stands.
    """
    value = raw.strip()
    if not value:
        raise Invalid(HEADER, "must not be empty")
    if len(value) > MAX_KEY_CHARS:
        raise Invalid(HEADER, f"must be at most {MAX_KEY_CHARS} characters, not {len(value)}")
    if not value.isascii() or not value.isprintable():
        raise Invalid(HEADER, "must be printable ASCII characters (a UUID is a good key)")
    return _unquoted(value) or value


def _unquoted(value: str) -> str | None:
    """The content of an RFC 8941 String, or None if ``value`` is not one."""
    if len(value) < 3 or value[0] != '"' or value[-1] != '"':
        return None
    content, escaped = [], False
    for char in value[1:-1]:
        if escaped:
            if char not in '"\\':
                return None
            content.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == '"':
            return None
        else:
            content.append(char)
    return None if escaped else "".join(content)


def fingerprint(method: str, target: str, body: bytes) -> str:
    """What makes two requests the same request: method, path with query, and body."""
    digest = hashlib.sha256()
    for part in (method.encode(), target.encode(), body):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


def credential_scope(req: falcon.Request) -> str:
    """Whose keys these are: a digest of the ``Authorization`` header, "" without one."""
    credential = req.get_header("Authorization")
    if credential is None:
        return ""
    return hashlib.sha256(credential.strip().encode()).hexdigest()


class IdempotencyMiddleware:
    """Replays a keyed write's stored answer, or keeps the answer of one that runs."""

    def __init__(self, keys: IdempotencyKeys) -> None:
        self._keys = keys

    def process_resource(
        self, req: falcon.Request, resp: falcon.Response, resource: Any, params: dict[str, Any]
    ) -> None:
        if resource is None or req.method not in WRITE_METHODS:
            return
        if req.method not in resource.scopes:
            return  # no responder runs: Falcon's 405, not a key's replay or refusal
        raw = req.get_header(HEADER)
        if raw is None:
            return
        key = parse_key(raw)
        if resource.scopes.get(req.method) is Scope.AGENT and not _live_agent_token(req, resource):
            # Agent-scoped calls check the token in the responder: a replay must not
            # skip that, so a token that is nobody's now is refused there (401).
            return
        body = _take_body(req)
        scope = credential_scope(req)
        request_fingerprint = fingerprint(req.method, req.relative_uri, body)
        stored = self._keys.begin(scope, key, request_fingerprint)
        if stored is not None:
            _replay(resp, stored)
            resp.complete = True
            return
        # Wait for the commits here, wherever this runs: the answer is kept only once
        # the writes behind it are durable (see the module doc).
        req.env.pop(ANSWER_WRITES, None)
        req.context.idempotency = (scope, key, request_fingerprint)

    def process_response(
        self, req: falcon.Request, resp: falcon.Response, resource: Any, req_succeeded: bool
    ) -> None:
        pending = getattr(req.context, "idempotency", None)
        if pending is None:
            return
        req.context.idempotency = None
        scope, key, request_fingerprint = pending
        try:
            body = resp.render_body() or b""
            headers = [
                (name, value)
                for name, value in resp.headers.items()
                if name.lower() not in UNKEPT_HEADERS
            ]
        except BaseException:
            self._keys.abandon(scope, key)
            raise
        self._keys.finish(scope, key, request_fingerprint, resp.status_code, headers, body)


def _live_agent_token(req: falcon.Request, resource: Any) -> bool:
    token = getattr(req.context, "token", None)
    return token is not None and resource.orch.controllers.tokens.owner(token) is not None


def _take_body(req: falcon.Request) -> bytes:
    """Read the whole body for its fingerprint and put it back for the resource.

    Read from the WSGI stream before anything wrapped it, then replaced by a copy,
    so the resource's ``read_body`` reads exactly these bytes. Falcon reads as many
    bytes as ``Content-Length`` says (none without it), and so does this.
    """
    limit = getattr(req.context, "max_body_bytes", MAX_BODY_BYTES)
    length = req.content_length or 0
    if length > limit:
        raise PayloadTooLarge(f"the body is {length} bytes; the limit is {limit}")
    if length == 0:
        return b""
    raw = bytes(req.stream.read(length))
    copy = io.BytesIO(raw)
    req.stream = req.env["wsgi.input"] = copy  # Falcon wraps the environ's stream
    return raw


def _replay(resp: falcon.Response, stored: IdempotentAnswer) -> None:
    resp.status = stored.status
    for name, value in stored.headers:
        resp.set_header(name, value)
    resp.set_header(REPLAYED_HEADER, "true")
    resp.data = stored.body
