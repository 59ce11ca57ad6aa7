"""Checks every request passes before routing: header size and path tricks.

Ids in paths are validated here, once, for every route, before authentication or any
responder runs, so a bad id is refused the same way (400 naming the parameter)
whichever endpoint it was sent to. Waitress has already decoded the path, so an
encoded ``/`` (``%2F``) would otherwise silently become a separator and route the
request somewhere its sender did not name: such paths are refused from the raw URI.
"""

from __future__ import annotations

import re
from typing import Any

import falcon

from orch.errors import Invalid
from orch.http.errors import HeadersTooLarge
from orch.model import validate_id, validate_task_id

#: ``%2F`` and ``%5C``: ``/`` and ``\\``, path separators in disguise.
ENCODED_SEPARATOR = re.compile(r"%(?:2f|5c)", re.IGNORECASE)


def header_bytes(env: dict[str, Any]) -> int:
    """The request line and headers' size, about as the client sent them."""
    size = len(env.get("REQUEST_METHOD", "")) + len(env.get("REQUEST_URI") or "") + 12
    if not env.get("REQUEST_URI"):
        size += len(env.get("PATH_INFO", "")) + len(env.get("QUERY_STRING", "")) + 1
    for name, value in env.items():
        if name.startswith("HTTP_") or name in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            size += len(name) + len(value) + 4  # "Name: value\r\n"
    return size


class RequestGuard:
    """Refuses oversized headers (431) and path tricks (400) before anything else runs."""

    def __init__(self, max_header_bytes: int) -> None:
        self._max_header_bytes = max_header_bytes

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        size = header_bytes(req.env)
        if size > self._max_header_bytes:
            raise HeadersTooLarge(
                f"the request line and headers are about {size} bytes; "
                f"the limit is {self._max_header_bytes}",
                limit_bytes=self._max_header_bytes,
            )
        raw_uri = req.env.get("REQUEST_URI") or req.env.get("RAW_URI") or ""
        raw_path = raw_uri.split("?", 1)[0]
        if ENCODED_SEPARATOR.search(raw_path):
            raise Invalid(
                "path",
                "an encoded '/' or '\\' (%2F, %5C) is not allowed in a path; ids never "
                "contain them",
            )

    def process_resource(
        self, req: falcon.Request, resp: falcon.Response, resource: Any, params: dict[str, Any]
    ) -> None:
        """Validate every id the route template captured, naming the parameter."""
        for name, value in params.items():
            if name == "task_id":
                validate_task_id(value)
            else:
                validate_id(name, value)
