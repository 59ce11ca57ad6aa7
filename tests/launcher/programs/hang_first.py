"""A launched agent that hangs on a task's first attempt and completes later ones.

So a test can kill it with SIGKILL while it runs a task, and see the task retried
and completed by the process the launcher starts next.
"""

import os
import threading

from orch.client import AgentClient

with AgentClient(
    os.environ["ORCH_URL"],
    agent_id=os.environ["ORCH_AGENT_ID"],
    token=os.environ["ORCH_AGENT_TOKEN"],
    poll_interval_s=0.1,
) as agent:
    print("ready", flush=True)
    for task in agent.tasks():
        print(f"task {task.task_id} attempt {task.attempt}", flush=True)
        if task.attempt == 1:
            threading.Event().wait()
        agent.complete(task, result={"attempt": task.attempt})
