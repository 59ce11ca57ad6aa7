"""The check Schemathesis does not have: every error is our RFC 9457 problem."""

from __future__ import annotations

from schemathesis import Case, CheckContext, Response

PROBLEM_JSON = "application/problem+json"
PROBLEM_KEYS = {"type", "title", "status", "detail", "code"}


def problem_json_errors(ctx: CheckContext, response: Response, case: Case) -> bool | None:
    """Every 4xx/5xx is ``application/problem+json`` with the problem keys and its status.

    The one exception is documented: an unhealthy ``GET /health`` answers 503 with the
    health document itself, because that is a report, not an error.
    """
    if response.status_code < 400:
        return None
    content_type = response.headers.get("content-type", [""])[0]
    media_type = content_type.split(";")[0].strip()
    if (case.operation.label, response.status_code, media_type) == (
        "GET /health",
        503,
        "application/json",
    ):
        return True
    assert media_type == PROBLEM_JSON, (
        f"{response.status_code} answered as {content_type!r}, not {PROBLEM_JSON}"
    )
    body = response.json()
    assert isinstance(body, dict) and body.keys() >= PROBLEM_KEYS, body
    assert body["status"] == response.status_code, body
    assert body["type"].endswith("/" + body["code"]), body
    return True
