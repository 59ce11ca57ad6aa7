"""One place where failures become RFC 9457 ``application/problem+json`` answers.

Responders never format errors: domain errors (``orch.errors``) carry their status and
code, Falcon's own errors (unknown route, bad query parameter) are reshaped to the same
body, and anything unexpected is logged and answered as a 500 without internals.
"""

from __future__ import annotations

import logging
import math
import re
from typing import Any

import falcon
import msgspec

from orch.errors import Invalid, OrchestratorError, Unavailable
from orch.model import ID_RULE

logger = logging.getLogger("orch.http")

PROBLEM_JSON = "application/problem+json"
PROBLEM_TYPE = "https://june.dev/orchestrator/problems/{code}"

_encoder = msgspec.json.Encoder()


class PayloadTooLarge(OrchestratorError):
    """The request body is over the limit; it was not read."""

    code = "payload_too_large"
    status = 413
    title = "Payload too large"


class HeadersTooLarge(OrchestratorError):
    """The request's headers (with its request line) are over the limit."""

    code = "headers_too_large"
    status = 431
    title = "Request header fields too large"


class UnsupportedMediaType(OrchestratorError):
    """The request body is not JSON."""

    code = "unsupported_media_type"
    status = 415
    title = "Unsupported media type"


_FALCON_CODES = {
    400: "invalid",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    411: "length_required",
    412: "precondition_failed",
    413: "payload_too_large",
    414: "uri_too_long",
    415: "unsupported_media_type",
    428: "precondition_required",
    429: "too_many_requests",
    431: "headers_too_large",
}


def render(resp: falcon.Response, status: int, body: dict[str, Any]) -> None:
    resp.status = status
    resp.content_type = PROBLEM_JSON
    resp.data = _encoder.encode(body)


def problem(exc: OrchestratorError) -> dict[str, Any]:
    body = {
        "type": PROBLEM_TYPE.format(code=exc.code),
        "title": exc.title,
        "status": exc.status,
        "detail": exc.message,
        "code": exc.code,
    }
    body.update({k: v for k, v in exc.details.items() if k not in body})
    return body


def handle_domain_error(
    req: falcon.Request, resp: falcon.Response, exc: OrchestratorError, params: Any
) -> None:
    """Domain errors carry their own status and code; ``retry_after_s`` becomes Retry-After."""
    render(resp, exc.status, problem(exc))
    retry_after_s = exc.details.get("retry_after_s")
    if isinstance(retry_after_s, int | float) and not isinstance(retry_after_s, bool):
        resp.set_header("Retry-After", str(max(1, math.ceil(retry_after_s))))
    elif isinstance(exc, Unavailable):
        resp.set_header("Retry-After", "1")


def handle_falcon_error(
    req: falcon.Request, resp: falcon.Response, exc: falcon.HTTPError, params: Any
) -> None:
    """Falcon's own errors (routing, query parameters) in the same shape."""
    status = exc.status_code
    code = _FALCON_CODES.get(status, "error" if status < 500 else "internal")
    title = re.sub(r"^\d{3} ", "", exc.title or falcon.code_to_http_status(status))
    detail = exc.description
    if detail is None and status == 404:
        detail = f"no endpoint {req.path}; see /openapi.json"
    elif detail is None and status == 405:
        detail = f"{req.method} is not allowed on {req.path}"
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE.format(code=code),
        "title": title,
        "status": status,
        "detail": detail or title,
        "code": code,
    }
    if isinstance(exc, falcon.HTTPInvalidParam | falcon.HTTPMissingParam):
        match = re.search(r'"([^"]+)"', exc.description or "")
        if match:
            body["field"] = match.group(1)
    render(resp, status, body)
    for name, value in (exc.headers or {}).items():
        resp.set_header(name, value)


def handle_unexpected(
    req: falcon.Request, resp: falcon.Response, exc: Exception, params: Any
) -> None:
    """A bug: log it with the traceback, answer without internals."""
    logger.exception("unhandled error on %s %s", req.method, req.path)
    render(
        resp,
        500,
        {
            "type": PROBLEM_TYPE.format(code="internal"),
            "title": "Internal server error",
            "status": 500,
            "detail": "an unexpected error occurred; it has been logged",
            "code": "internal",
        },
    )


def invalid_body(
    exc: msgspec.ValidationError | msgspec.DecodeError, raw: bytes | None = None
) -> Invalid:
    """Name the offending field of a body msgspec refused, in words a reader can act on.

    msgspec states a pattern by its regular expression; an id refused so is said as
    ``validate_id`` says it, with the value (read back from ``raw``) it refused.
    """
    text = str(exc)
    at = re.search(r"at `\$\.?([^`]*)`", text)
    missing = re.search(r"missing required field `([^`]+)`", text)
    unknown = re.search(r"unknown field `([^`]+)`", text)
    if missing:
        prefix = at.group(1) + "." if at and at.group(1) else ""
        field = prefix + missing.group(1)
    elif unknown:
        field = unknown.group(1)
    elif at and at.group(1):
        field = at.group(1)
    else:
        field = "body"
    message = re.sub(r" - at `[^`]*`$", "", text)
    if isinstance(exc, msgspec.DecodeError) and not isinstance(exc, msgspec.ValidationError):
        message = f"is not valid JSON ({message})"
    elif "matching regex" in message:
        value = _value_at(raw, at.group(1) if at else "")
        shown = "" if value is None else f"{str(value)[:40]!r} "
        message = f"{shown}is not a valid id: {ID_RULE}"
    return Invalid(field, message)


def _value_at(raw: bytes | None, path: str) -> Any:
    """The value at msgspec's path (``items[0].resource``) in ``raw``, or None."""
    if not raw or not path:
        return None
    try:
        value: Any = msgspec.json.decode(raw)
        for name, index in re.findall(r"(?:^|\.)(\w+)|\[(\d+)\]", path):
            value = value[name] if name else value[int(index)]
    except (msgspec.DecodeError, LookupError, TypeError):
        return None
    return value


def install(app: falcon.App) -> None:
    """Register the handlers; later registrations win for more specific types."""
    app.add_error_handler(Exception, handle_unexpected)
    app.add_error_handler(falcon.HTTPError, handle_falcon_error)
    app.add_error_handler(OrchestratorError, handle_domain_error)
