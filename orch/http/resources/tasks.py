"""Tasks: assignment and queueing, outcomes reported by agents, cancel, reads."""

from __future__ import annotations

import falcon

from orch.http.auth import Scope, acting_agent
from orch.http.media import read_body, send
from orch.http.resources.base import (
    ID,
    LIMIT,
    MAX_LIMIT,
    TASK_STATE,
    Resource,
    answer_writes,
    status_param,
)
from orch.http.schemas import AssignTask, CompleteTask, FailTask, ReportProgress
from orch.model import TaskState


def _limit(req: falcon.Request, default: int = 100) -> int:
    return req.get_param_as_int("limit", min_value=1, max_value=MAX_LIMIT) or default


class TaskAssignment(Resource):
    scopes = {"POST": Scope.ADMIN}
    bodies = {"POST": AssignTask}
    answers = {"POST": (200, 202, 400, 404, 409)}

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Assign to the named agent (409 if it cannot take it) or queue: 200 / 202."""
        body = read_body(req, AssignTask)
        answer = self.orch.assign_task(
            body.payload,
            task_id=body.task_id,
            agent_id=body.agent_id,
            priority=body.priority,
            agent_type=body.agent_type,
            capabilities=body.capabilities,
            resources=body.resources,
            max_attempts=body.max_attempts,
            timeout_s=body.timeout_s,
            force=body.force,
            # The client's address: one flooding client is capped, not everyone.
            submitter=req.remote_addr or "unknown",
            answer_writes=answer_writes(req),
        )
        send(resp, answer, 200 if answer["status"] == "assigned" else 202)


class TaskCollection(Resource):
    scopes = {"GET": Scope.ADMIN}
    queries = {"GET": {"status": TASK_STATE, "agent_id": ID, "limit": LIMIT}}

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Tasks oldest first: ``{tasks, count}``; filters status and agent_id."""
        found = self.orch.tasks(
            state=status_param(req, TaskState),
            agent_id=req.get_param("agent_id"),
            limit=_limit(req),
        )
        send(resp, {"tasks": found, "count": len(found)})


class PendingTasks(Resource):
    scopes = {"GET": Scope.ADMIN}
    queries = {"GET": {"limit": LIMIT}}

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Queued tasks in the order they will be assigned: ``{pending_tasks, count}``."""
        send(resp, self.orch.pending_tasks(limit=_limit(req)))


class TaskItem(Resource):
    scopes = {"GET": Scope.ADMIN}
    answers = {"GET": (200, 404)}

    def on_get(self, req: falcon.Request, resp: falcon.Response, task_id: str) -> None:
        """One task with its state, attempts, agent, result or error."""
        send(resp, self.orch.task(task_id))


class TaskCompletion(Resource):
    scopes = {"POST": Scope.AGENT}
    bodies = {"POST": CompleteTask}
    answers = {"POST": (200, 400, 401, 403, 404, 409)}

    def on_post(self, req: falcon.Request, resp: falcon.Response, task_id: str) -> None:
        """The agent holding the task reports success, with an optional ``result``."""
        body = read_body(req, CompleteTask)
        agent_id = acting_agent(req, self.orch, body.agent_id)
        send(
            resp,
            self.orch.complete_task(
                agent_id, task_id, body.result, answer_writes=answer_writes(req)
            ),
        )


class TaskFailure(Resource):
    scopes = {"POST": Scope.AGENT}
    bodies = {"POST": FailTask}
    answers = {"POST": (200, 400, 401, 403, 404, 409)}

    def on_post(self, req: falcon.Request, resp: falcon.Response, task_id: str) -> None:
        """The agent holding the task reports failure; it is retried by policy."""
        body = read_body(req, FailTask)
        agent_id = acting_agent(req, self.orch, body.agent_id)
        answer = self.orch.fail_task(
            agent_id, task_id, body.error, body.retryable, answer_writes=answer_writes(req)
        )
        send(resp, answer)


class TaskProgressReport(Resource):
    scopes = {"POST": Scope.AGENT}
    bodies = {"POST": ReportProgress}
    answers = {"POST": (200, 400, 401, 403, 404)}

    def on_post(self, req: falcon.Request, resp: falcon.Response, task_id: str) -> None:
        """The agent holding the task says how far it is: ``message`` and ``percent``."""
        body = read_body(req, ReportProgress)
        agent_id = acting_agent(req, self.orch, body.agent_id)
        send(resp, self.orch.report_progress(agent_id, task_id, body.message, body.percent))


class TaskCancellation(Resource):
    scopes = {"POST": Scope.ADMIN}
    answers = {"POST": (200, 404, 409)}

    def on_post(self, req: falcon.Request, resp: falcon.Response, task_id: str) -> None:
        """Cancel a task that has not ended; its agent and locks are freed."""
        send(resp, self.orch.cancel_task(task_id))
