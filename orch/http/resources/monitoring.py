"""Health, Prometheus metrics, statistics and the OpenAPI document."""

from __future__ import annotations

import falcon
from prometheus_client import exposition

from orch.http.auth import Scope
from orch.http.media import send
from orch.http.resources.base import Resource


class Health(Resource):
    scopes = {"GET": Scope.PUBLIC}
    answers = {"GET": (200, 503)}

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        """``status`` healthy/degraded/unhealthy with a check per dependency; 503 if unhealthy."""
        health = self.orch.health()
        # A server that answers here leads: a lone one always, a cluster's node while
        # it holds the lease (a standby answers /health itself, orch/http/forward.py).
        health["role"] = "leader"
        send(resp, health, 503 if health["status"] == "unhealthy" else 200)


class HealthReady(Resource):
    scopes = {"GET": Scope.PUBLIC}

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        """200 on the node that answers writes (the leader); a standby answers 503.

        For load balancers that should send traffic to the leader only.
        """
        send(resp, {"ready": True, "role": "leader"})


class Metrics(Resource):
    scopes = {"GET": Scope.PUBLIC}

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Prometheus text exposition, or OpenMetrics when the scraper asks for it."""
        encoder, content_type = exposition.choose_encoder(req.get_header("Accept") or "")
        resp.data = encoder(self.options["registry"])
        resp.content_type = content_type


class Stats(Resource):
    scopes = {"GET": Scope.ADMIN}

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Counts of agents, tasks and locks."""
        send(resp, self.orch.stats())


class OpenAPI(Resource):
    scopes = {"GET": Scope.ADMIN}

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        """This API's OpenAPI 3.1 document, generated from the request Structs."""
        send(resp, self.options["document"])
