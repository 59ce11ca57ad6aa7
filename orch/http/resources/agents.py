"""Agents: registration, listing, lifecycle, heartbeats and their current tasks."""

from __future__ import annotations

import falcon
from msgspec import UNSET

from orch.http.auth import Scope, acting_agent
from orch.http.media import read_body, send
from orch.http.resources.base import (
    AGENT_STATE,
    ID,
    LIMIT,
    MAX_LIMIT,
    Resource,
    answer_writes,
    status_param,
)
from orch.http.schemas import AgentMetadata, ProcessExit, RegisterAgent, StopAgent
from orch.model import AgentState


class AgentRegistration(Resource):
    scopes = {"POST": Scope.ADMIN}
    bodies = {"POST": RegisterAgent}
    # 200, not 201: the seed answered 200 and clients written for it check for it.
    answers = {"POST": (200, 400, 409)}

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Register a remote agent; the answer carries its token, shown only this once."""
        body = read_body(req, RegisterAgent)
        answer = self.orch.register_agent(
            body.agent_id,
            body.agent_type,
            capabilities=body.capabilities,
            metadata=body.metadata,
            project_id=body.project_id,
            max_concurrent_tasks=body.max_concurrent_tasks,
        )
        send(resp, answer, 200)
        resp.location = f"/agents/{body.agent_id}"


class AgentCollection(Resource):
    scopes = {"GET": Scope.ADMIN}
    queries = {
        "GET": {
            "status": AGENT_STATE,
            "agent_type": ID,
            "capability": ID,
            "limit": LIMIT,
            "offset": {"type": "integer", "minimum": 0, "maximum": 2**31 - 1},
        }
    }

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        """List agents by id: ``{agents, total, active, matched}``; filters status,
        agent_type, capability; a page of ``limit`` from ``offset`` (the dashboard's)."""
        send(
            resp,
            self.orch.agents(
                state=status_param(req, AgentState),
                agent_type=req.get_param("agent_type"),
                capability=req.get_param("capability"),
                limit=req.get_param_as_int("limit", min_value=1, max_value=MAX_LIMIT) or 1000,
                offset=req.get_param_as_int("offset", min_value=0, max_value=2**31 - 1) or 0,
            ),
        )


class AgentItem(Resource):
    scopes = {"GET": Scope.ADMIN, "DELETE": Scope.ADMIN}
    answers = {"GET": (200, 404), "DELETE": (200, 404)}

    def on_get(self, req: falcon.Request, resp: falcon.Response, agent_id: str) -> None:
        """One agent (never its token)."""
        send(resp, self.orch.agent(agent_id))

    def on_delete(self, req: falcon.Request, resp: falcon.Response, agent_id: str) -> None:
        """Deregister: its tasks are requeued, its locks released, its id free again."""
        send(resp, self.orch.deregister_agent(agent_id))


class AgentStart(Resource):
    scopes = {"POST": Scope.ADMIN}
    answers = {"POST": (200, 404, 409)}

    def on_post(self, req: falcon.Request, resp: falcon.Response, agent_id: str) -> None:
        """Admit the agent to scheduling: ``started`` or ``already_active``."""
        send(resp, self.orch.start_agent(agent_id, answer_writes=answer_writes(req)))


class AgentStop(Resource):
    scopes = {"POST": Scope.ADMIN}
    bodies = {"POST": StopAgent}
    answers = {"POST": (200, 404, 409)}

    def on_post(self, req: falcon.Request, resp: falcon.Response, agent_id: str) -> None:
        """Stop the agent: it drains (``stopping``) unless ``drain`` is false."""
        body = read_body(req, StopAgent)
        send(resp, self.orch.stop_agent(agent_id, drain=body.drain))


class AgentHeartbeat(Resource):
    scopes = {"POST": Scope.AGENT}
    answers = {"POST": (200, 401, 403, 404)}

    def on_post(self, req: falcon.Request, resp: falcon.Response, agent_id: str) -> None:
        """Prove liveness; the answer lists the agent's assignments and config version."""
        agent_id = acting_agent(req, self.orch, agent_id)
        send(resp, self.orch.heartbeat(agent_id, answer_writes=answer_writes(req)))


class AgentTasks(Resource):
    scopes = {"GET": Scope.AGENT_OR_ADMIN}
    answers = {"GET": (200, 404)}

    def on_get(self, req: falcon.Request, resp: falcon.Response, agent_id: str) -> None:
        """The tasks the agent holds now."""
        send(resp, self.orch.agent_tasks(agent_id))


class AgentMetadataResource(Resource):
    scopes = {"PUT": Scope.ADMIN}
    bodies = {"PUT": AgentMetadata}
    answers = {"PUT": (200, 400, 404, 409)}

    def on_put(self, req: falcon.Request, resp: falcon.Response, agent_id: str) -> None:
        """Replace the agent's metadata (a launcher's pid, host and program per launch)."""
        body = read_body(req, AgentMetadata)
        send(resp, self.orch.update_agent_metadata(agent_id, body.metadata))


class AgentExits(Resource):
    scopes = {"POST": Scope.ADMIN}
    bodies = {"POST": ProcessExit}
    answers = {"POST": (200, 400, 404, 409)}

    def on_post(self, req: falcon.Request, resp: falcon.Response, agent_id: str) -> None:
        """A launcher reports the agent's process ended: its tasks fail and are retried."""
        body = read_body(req, ProcessExit)
        send(
            resp,
            self.orch.process_exited(
                agent_id,
                restarting=body.restarting,
                exit_code=None if body.exit_code is UNSET else body.exit_code,
                signal=None if body.signal is UNSET else body.signal,
            ),
        )
