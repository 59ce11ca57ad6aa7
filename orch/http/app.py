"""``create_app``: the Falcon application for one Orchestrator."""

from __future__ import annotations

import logging
import threading
import time
from importlib import metadata

import falcon
import falcon.media
import msgspec

from orch.config import Settings
from orch.events import Events
from orch.http import errors
from orch.http.auth import AuthMiddleware, FailedTokenThrottle
from orch.http.guards import RequestGuard
from orch.http.idempotency import IdempotencyMiddleware
from orch.http.media import BodyLimit
from orch.http.openapi import build_document
from orch.http.resources import agents, config, events, locks, monitoring, tasks, ui
from orch.http.resources.base import Resource
from orch.system import Orchestrator

ROUTES: list[tuple[str, type[Resource]]] = [
    ("/health", monitoring.Health),
    ("/health/ready", monitoring.HealthReady),
    ("/metrics", monitoring.Metrics),
    ("/stats", monitoring.Stats),
    ("/openapi.json", monitoring.OpenAPI),
    ("/events", events.EventFeed),
    ("/agents/register", agents.AgentRegistration),
    ("/agents", agents.AgentCollection),
    ("/agents/{agent_id}", agents.AgentItem),
    ("/agents/{agent_id}/start", agents.AgentStart),
    ("/agents/{agent_id}/stop", agents.AgentStop),
    ("/agents/{agent_id}/heartbeat", agents.AgentHeartbeat),
    ("/agents/{agent_id}/tasks", agents.AgentTasks),
    ("/agents/{agent_id}/metadata", agents.AgentMetadataResource),
    ("/agents/{agent_id}/exits", agents.AgentExits),
    ("/agents/{agent_id}/config", config.AgentConfigResource),
    ("/config/defaults", config.ConfigDefaults),
    ("/tasks/assign", tasks.TaskAssignment),
    ("/tasks", tasks.TaskCollection),
    ("/tasks/pending", tasks.PendingTasks),
    ("/tasks/{task_id}", tasks.TaskItem),
    ("/tasks/{task_id}/complete", tasks.TaskCompletion),
    ("/tasks/{task_id}/fail", tasks.TaskFailure),
    ("/tasks/{task_id}/progress", tasks.TaskProgressReport),
    ("/tasks/{task_id}/cancel", tasks.TaskCancellation),
    ("/locks", locks.LockCollection),
    ("/locks/acquire", locks.MultiLockAcquisition),
    ("/locks/{resource}/acquire", locks.LockAcquisition),
    ("/locks/{resource}/renew", locks.LockRenewal),
    ("/locks/{resource}/release", locks.LockRelease),
]

#: The dashboard (``orch/http/ui/``): public static files, not part of the API's
#: OpenAPI document. ``/ui/`` is ``/ui`` here: trailing slashes are stripped.
UI_ROUTES: list[tuple[str, type[Resource]]] = [
    ("/", ui.Root),
    ("/ui", ui.DashboardIndex),
    ("/ui/{name}", ui.DashboardFile),
    ("/ui/views/{name}", ui.DashboardView),
]

access_logger = logging.getLogger("orch.access")


class RequestMetrics:
    """Latency and count of every request, labelled by route template (never the path).

    With ``ORCH_ACCESS_LOG`` it also logs one line per request on ``orch.access``.
    """

    def __init__(self, events: Events, access_log: bool = False) -> None:
        self._events = events
        self._access_log = access_log

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        req.context.started = time.perf_counter()

    def process_response(
        self, req: falcon.Request, resp: falcon.Response, resource: object, succeeded: bool
    ) -> None:
        started = getattr(req.context, "started", None)
        if started is None:
            return
        elapsed_s = time.perf_counter() - started
        self._events.signal(
            "http.request",
            route=req.uri_template or "unmatched",
            method=req.method,
            status=resp.status_code,
            seconds=elapsed_s,
        )
        if self._access_log:
            access_logger.info(
                "%s %s %d %.1fms", req.method, req.path, resp.status_code, elapsed_s * 1000
            )


def _version() -> str:
    try:
        return metadata.version("june-orchestrator")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def create_app(orchestrator: Orchestrator, settings: Settings | None = None) -> falcon.App:
    """A WSGI app serving ``orchestrator``; holds no state of its own beyond wiring."""
    settings = settings or orchestrator.settings
    app = falcon.App(
        middleware=[
            RequestMetrics(orchestrator.events_log, settings.access_log),
            RequestGuard(settings.http_max_header_bytes),
            BodyLimit(settings.http_max_body_bytes),
            AuthMiddleware(
                settings.admin_token,
                FailedTokenThrottle(
                    orchestrator.clock,
                    max_failures=settings.auth_max_failures,
                    window_s=settings.auth_failure_window_s,
                    lockout_s=settings.auth_lockout_s,
                ),
            ),
            # After authentication: a key never lets a request past a check.
            IdempotencyMiddleware(orchestrator.idempotency),
        ]
    )
    json_handler = falcon.media.JSONHandler(
        dumps=msgspec.json.Encoder().encode, loads=msgspec.json.decode
    )
    app.req_options.media_handlers[falcon.MEDIA_JSON] = json_handler
    app.resp_options.media_handlers[falcon.MEDIA_JSON] = json_handler
    app.req_options.strip_url_path_trailing_slash = True
    errors.install(app)
    options = {
        "registry": orchestrator.metrics.registry,
        "document": build_document(ROUTES, _version(), settings),
        # Lock waits and event long-polls park a waitress thread each; together they
        # may take at most half, so releases and everything else always find one.
        "wait_slots": threading.BoundedSemaphore(max(1, settings.http_threads // 2)),
        "ui_files": ui.load_files(),
    }
    for template, resource in ROUTES + UI_ROUTES:
        app.add_route(template, resource(orchestrator, **options))
    return app
