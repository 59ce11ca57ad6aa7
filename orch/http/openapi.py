"""/openapi.json, generated from the routes and the Structs that validate requests.

The paths come from the route table, summaries from the responders' docstrings, bodies
from ``Resource.bodies``, statuses from ``Resource.answers`` and the security
requirement from ``Resource.scopes``, so the document cannot drift from what the server
enforces. Two tables below are written by hand because no code states them: the
shape of the answers other calls build on (``_ANSWERS``) and the OpenAPI ``links``
saying which answer feeds which call (``_LINKS``); schema fuzzing follows those links
to test register → start → heartbeat → deregister and the like as sequences.
"""

from __future__ import annotations

import inspect
import re
from typing import Any

import msgspec

from orch.config import Settings
from orch.http.auth import Scope
from orch.http.idempotency import KEY_SCHEMA
from orch.http.resources.base import Resource
from orch.http.schemas import REQUEST_BODIES, Id, Problem, TaskId

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
    422: "Idempotency-Key already used for another request",
    429: "Too many unknown tokens from this address (Retry-After)",
    503: "Unavailable or timed out (Retry-After)",
}

#: Methods that take an ``Idempotency-Key`` (orch/http/idempotency.py).
_KEYED_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": (
        "Makes a retry safe (IETF httpapi draft): the first answer is kept for"
        " ORCH_IDEMPOTENCY_TTL_S and a retry with the same key, credential, method,"
        " path and body gets it again (with Idempotent-Replayed: true) instead of"
        " being applied twice. The same key with another request is 422; a retry"
        " while the first is being answered is 409 (Retry-After). 1 to 255 printable"
        ' ASCII characters, such as a UUID; a quoted string ("...", the draft\'s form)'
        " stands for its content."
    ),
    "schema": KEY_SCHEMA,
}

_ID = msgspec.json.schema(Id)
_TASK_ID = msgspec.json.schema(TaskId)
_OBJECT: dict[str, Any] = {"type": "object"}


def _object(**required: dict[str, Any]) -> dict[str, Any]:
    """A JSON object with at least these properties (more may come)."""
    return {"type": "object", "properties": required, "required": sorted(required)}


_GRANT = _object(
    resource=_ID,
    mode={"enum": ["exclusive", "shared"]},
    agent_id=_ID,
    fencing_token={"type": "integer", "minimum": 1},
    expires_at={"type": "number"},
)

#: Event numbering restarts at 1 with the server; ``epoch`` names the numbering, so a
#: follower tells a restart (``reset``) from an ``after`` beyond the newest (``ahead``).
_EVENT_FEED: dict[str, Any] = {
    "type": "object",
    "properties": {
        "events": {
            "type": "array",
            "items": _object(
                seq={"type": "integer", "minimum": 1},
                type={"type": "string"},
                at={"type": "number"},
            ),
        },
        "next": {"type": "integer", "minimum": 0},
        "epoch": {
            "type": "string",
            "description": "Names this numbering (it restarts with the server): pass it "
            "back as `epoch` with `next` as `after`.",
        },
        "reset": {
            "const": True,
            "description": "Only when `epoch` named an earlier numbering (the server "
            "restarted): `events` are from the ring's start, continue from `next`.",
        },
        "ahead": {
            "const": True,
            "description": "Only when `after` was beyond the newest event: no events, "
            "and `next` is the newest seq.",
        },
    },
    "required": ["epoch", "events", "next"],
}

#: The 2xx bodies that links read from, by (method, route), and the event feed's
#: (its ``reset`` flag is part of following it); every other JSON answer is
#: documented as an object.
_ANSWERS: dict[tuple[str, str], dict[str, Any]] = {
    ("GET", "/events"): _EVENT_FEED,
    ("POST", "/agents/register"): _object(
        agent_id=_ID, status={"const": "registered"}, token={"type": "string", "minLength": 1}
    ),
    ("POST", "/tasks/assign"): _object(
        task_id=_TASK_ID,
        status={"enum": ["assigned", "queued"]},
        agent_id={"anyOf": [_ID, {"type": "null"}]},
    ),
    ("POST", "/locks/{resource}/acquire"): _GRANT,
    ("POST", "/locks/{resource}/renew"): _GRANT,
    ("POST", "/locks/acquire"): _object(grants={"type": "array", "items": _GRANT}),
}

_HEALTH = ("GET", "/health")

#: Answers that are not JSON: (method, route) -> media type -> schema.
_MEDIA: dict[tuple[str, str], dict[str, dict[str, Any]]] = {
    ("GET", "/metrics"): {
        "text/plain": {"schema": {"type": "string"}},
        "application/openmetrics-text": {"schema": {"type": "string"}},
    },
}


def _link(operation_id: str, **parameters: str) -> dict[str, Any]:
    return {"operationId": operation_id, "parameters": parameters}


_AGENT_ID = "$response.body#/agent_id"
_TASK_ID_FROM_ANSWER = "$response.body#/task_id"
# The new agent's token, shown once in the registration answer, is what its calls carry.
_AGENT_TOKEN = "Bearer {$response.body#/token}"


def _lease_links(resource: str, fencing_token: str) -> dict[str, Any]:
    """Renew and release of the lease just granted, named by its fencing token."""
    body = {"fencing_token": fencing_token}
    return {
        "RenewLease": {**_link("post_LockRenewal", resource=resource), "requestBody": body},
        "ReleaseLease": {**_link("post_LockRelease", resource=resource), "requestBody": body},
    }


#: OpenAPI links: (method, route, status) -> link name -> link. Each says where the id
#: of what was just created or granted goes in the calls that act on it.
_LINKS: dict[tuple[str, str, int], dict[str, Any]] = {
    ("POST", "/agents/register", 200): {
        "StartAgent": _link("post_AgentStart", agent_id=_AGENT_ID),
        "GetAgent": _link("get_AgentItem", agent_id=_AGENT_ID),
        "StopAgent": _link("post_AgentStop", agent_id=_AGENT_ID),
        "DeregisterAgent": _link("delete_AgentItem", agent_id=_AGENT_ID),
        "Heartbeat": _link(
            "post_AgentHeartbeat", agent_id=_AGENT_ID, **{"header.Authorization": _AGENT_TOKEN}
        ),
        "AgentTasks": _link(
            "get_AgentTasks", agent_id=_AGENT_ID, **{"header.Authorization": _AGENT_TOKEN}
        ),
        "GetConfig": _link("get_AgentConfigResource", agent_id=_AGENT_ID),
        "PatchConfig": _link("patch_AgentConfigResource", agent_id=_AGENT_ID),
        "PutConfig": _link("put_AgentConfigResource", agent_id=_AGENT_ID),
    },
    # A listed agent can be read and started, and another of its type registered; a
    # deregistered id may be registered again.
    ("GET", "/agents", 200): {
        "GetFirstAgent": _link("get_AgentItem", agent_id="$response.body#/agents/0/agent_id"),
        "StartFirstAgent": _link("post_AgentStart", agent_id="$response.body#/agents/0/agent_id"),
        "RegisterOfSameType": {
            "operationId": "post_AgentRegistration",
            "requestBody": {"agent_type": "$response.body#/agents/0/agent_type"},
        },
        "FirstAgentConfig": _link(
            "get_AgentConfigResource", agent_id="$response.body#/agents/0/agent_id"
        ),
    },
    ("DELETE", "/agents/{agent_id}", 200): {
        "RegisterAgain": {
            "operationId": "post_AgentRegistration",
            "requestBody": {"agent_id": "$response.body#/agent_id"},
        },
    },
    **{
        ("POST", "/tasks/assign", status): {
            "GetTask": _link("get_TaskItem", task_id=_TASK_ID_FROM_ANSWER),
            "CancelTask": _link("post_TaskCancellation", task_id=_TASK_ID_FROM_ANSWER),
            "CompleteTask": _link("post_TaskCompletion", task_id=_TASK_ID_FROM_ANSWER),
            "FailTask": _link("post_TaskFailure", task_id=_TASK_ID_FROM_ANSWER),
            "ReportProgress": _link("post_TaskProgressReport", task_id=_TASK_ID_FROM_ANSWER),
        }
        for status in (200, 202)
    },
    ("POST", "/locks/{resource}/acquire", 200): _lease_links(
        "$request.path.resource", "$response.body#/fencing_token"
    ),
    ("POST", "/locks/{resource}/renew", 200): _lease_links(
        "$request.path.resource", "$response.body#/fencing_token"
    ),
    # A multi-resource grant names each lease in grants[i]; the first stands for all.
    ("POST", "/locks/acquire", 200): _lease_links(
        "$response.body#/grants/0/resource", "$response.body#/grants/0/fencing_token"
    ),
}


def build_document(
    routes: list[tuple[str, type[Resource]]], version: str, settings: Settings | None = None
) -> dict[str, Any]:
    """The OpenAPI 3.1 document for ``routes`` (path template, resource class).

    ``settings`` are this server's: with ``ORCH_ADMIN_TOKEN`` set admin calls need the
    admin token (otherwise they may go without one), and the lock limits are stated.
    """
    settings = settings or Settings()
    admin_token_required = settings.admin_token is not None
    (*_, problem), components = msgspec.json.schema_components(
        (*REQUEST_BODIES, Problem), ref_template=_REF
    )
    _state_lock_limits(components, settings)
    # msgspec has no uniqueItems; a resource named twice is refused (AcquireLocks).
    components["AcquireLocks"]["properties"]["resources"]["uniqueItems"] = True
    for body in REQUEST_BODIES:  # rules across fields, which a Struct cannot state
        rules = getattr(body, "JSON_SCHEMA_RULES", None)
        if rules:
            components[body.__name__].update(rules)
    required_bodies = {
        body.__name__
        for body in REQUEST_BODIES
        if any(field.required for field in msgspec.structs.fields(body))
    }
    paths: dict[str, Any] = {}
    for template, resource in routes:
        item: dict[str, Any] = {}
        for field in re.findall(r"{(\w+)}", template):
            item.setdefault("parameters", []).append(
                {"name": field, "in": "path", "required": True, "schema": _ID}
            )
        for method, scope in resource.scopes.items():
            responder = getattr(resource, f"on_{method.lower()}")
            doc = inspect.getdoc(responder) or ""
            body = resource.bodies.get(method)
            statuses = set(resource.answers.get(method, (200,)))
            if body is not None:
                statuses |= {400, 413, 415}
            if method in _KEYED_METHODS:
                statuses |= {409, 422}
            responses = _responses(statuses, scope, problem, (method, template))
            for (link_method, link_template, status), links in _LINKS.items():
                if (link_method, link_template) == (method, template):
                    responses[str(status)]["links"] = links
            operation: dict[str, Any] = {
                "operationId": f"{method.lower()}_{resource.__name__}",
                "summary": doc.splitlines()[0] if doc else method,
                "responses": responses,
            }
            queries = resource.queries.get(method, {})
            if queries:
                if "wait" in queries:  # the long-poll limit is a setting
                    wait = {**queries["wait"], "maximum": settings.events_max_wait_s}
                    queries = {**queries, "wait": wait}
                operation["parameters"] = [
                    {"name": name, "in": "query", "required": False, "schema": schema}
                    for name, schema in queries.items()
                ]
            if method in _KEYED_METHODS:
                operation.setdefault("parameters", []).append(_IDEMPOTENCY_KEY)
            if scope is not Scope.PUBLIC:
                operation["security"] = _security(scope, admin_token_required)
            if body is not None:
                operation["requestBody"] = {
                    "required": body.__name__ in required_bodies,
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


def _state_lock_limits(components: dict[str, Any], settings: Settings) -> None:
    """Lease and wait limits are settings (``ORCH_LOCK_MAX_*``), so no Struct states them."""
    for name in ("AcquireLock", "AcquireLocks", "RenewLock"):
        properties = components[name]["properties"]
        properties["ttl_s"]["maximum"] = settings.lock_max_ttl_s
        if "wait_s" in properties:
            properties["wait_s"]["maximum"] = settings.lock_max_wait_s


def _security(scope: Scope, admin_token_required: bool) -> list[dict[str, list[str]]]:
    """Who may call: an agent's token, the admin token, or (no admin token set) anyone."""
    if scope is Scope.AGENT:
        return [{"agentToken": []}]
    accepted: list[dict[str, list[str]]] = [{"adminToken": []}]
    if scope is Scope.AGENT_OR_ADMIN:
        accepted.append({"agentToken": []})
    return accepted if admin_token_required else [*accepted, {}]


def _responses(
    statuses: set[int], scope: Scope, problem: Any, operation: tuple[str, str]
) -> dict[str, Any]:
    codes = statuses | {400, 503}
    if scope is not Scope.PUBLIC:
        codes |= {401, 403, 429}
    out: dict[str, Any] = {}
    for status in sorted(codes):
        if status < 400:
            content = _MEDIA.get(operation) or {
                "application/json": {"schema": _ANSWERS.get(operation, _OBJECT)}
            }
            out[str(status)] = {"description": _REASONS.get(status, "OK"), "content": content}
        else:
            content = {"application/problem+json": {"schema": problem}}
            if operation == _HEALTH and status == 503:
                # Unhealthy is a report, not an error: the health document, with 503.
                content = {"application/json": {"schema": _OBJECT}, **content}
            out[str(status)] = {"description": _REASONS.get(status, "Error"), "content": content}
    return out
