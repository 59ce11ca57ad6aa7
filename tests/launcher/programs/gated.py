"""A launched agent that finishes each task once the file its payload names exists.

So a test can hold a task running while it stops the agent, and see the process kept
until the drain ends.
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
        gate = str(task.payload["gate"])
        while not os.path.exists(gate):
            threading.Event().wait(0.05)
        agent.complete(task, result={"gate": gate})
        print(f"task {task.task_id} completed", flush=True)
