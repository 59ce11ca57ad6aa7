"""/openapi.json, generated from the routes and the Structs that validate requests.

Nothing here is written by hand per endpoint: the paths come from the route table,
summaries from the responders' docstrings, bodies from ``Resource.bodies`` and the
security requirement from ``Resource.scopes``, so the document cannot drift from
what the server enforces.
"""

from __future__ import annotations

import inspect
import re
from typing import Any

import msgspec

from orch.http.auth import Scope
from orch.http.resources.base import Resource
from orch.http.schemas import REQUEST_BODIES, Problem

_REF = "#/components/schemas/{name}"
_REASONS = {
    200: "OK",
    201: "Created",
    202: "Accepted (queued)",
    400: "Invalid request (names the field)",
    401: "Missing or unknown token",
    403: "Token of another identity",
    404: "Unknown id",
    409: "Conflicts with the current state",
    412: "If-Match names an old version",
    413: "Body over 1 MiB",
    415: "Body is not JSON",
    503: "Unavailable or timed out (Retry-After)",
}


def build_document(routes: list[tuple[str, type[Resource]]], version: str) -> dict[str, Any]:
    """The OpenAPI 3.1 document for ``routes`` (path template, resource class)."""
    (*_, problem), components = msgspec.json.schema_components(
        (*REQUEST_BODIES, Problem), ref_template=_REF
    )
    paths: dict[str, Any] = {}
    for template, resource in routes:
        item: dict[str, Any] = {}
        for field in re.findall(r"{(\w+)}", template):
            item.setdefault("parameters", []).append(
                {"name": field, "in": "path", "required": True, "schema": {"type": "string"}}
            )
        for method, scope in resource.scopes.items():
            responder = getattr(resource, f"on_{method.lower()}")
            doc = inspect.getdoc(responder) or ""
            operation: dict[str, Any] = {
                "operationId": f"{method.lower()}_{resource.__name__}",
                "summary": doc.splitlines()[0] if doc else method,
                "responses": _responses(resource.answers.get(method, (200,)), scope, problem),
            }
            if scope is not Scope.PUBLIC:
                operation["security"] = (
                    [{"agentToken": []}] if scope is Scope.AGENT else [{"adminToken": []}, {}]
                )
            body = resource.bodies.get(method)
            if body is not None:
                operation["requestBody"] = {
                    "required": False,
                    "content": {
                        "application/json": {"schema": {"$ref": _REF.format(name=body.__name__)}}
                    },
                }
            item[method.lower()] = operation
        paths[template] = item
    return {
        "openapi": "3.1.0",
        "info": {"title": "June Orchestrator", "version": version},
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "adminToken": {"type": "http", "scheme": "bearer"},
                "agentToken": {"type": "http", "scheme": "bearer"},
            },
        },
    }


def _responses(statuses: tuple[int, ...], scope: Scope, problem: Any) -> dict[str, Any]:
    codes = set(statuses) | {400, 503}
    if scope is not Scope.PUBLIC:
        codes |= {401, 403}
    out: dict[str, Any] = {}
    for status in sorted(codes):
        if status < 400:
            out[str(status)] = {"description": _REASONS.get(status, "OK")}
        else:
            out[str(status)] = {
                "description": _REASONS.get(status, "Error"),
                "content": {"application/problem+json": {"schema": problem}},
            }
    return out
