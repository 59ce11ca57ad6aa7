"""The load a soak runs for minutes: wrk heartbeats, a paced task stream, workers.

Each piece starts in the background, stops by itself (wrk after its duration, the
stream and the workers when told) and keeps the counts the soak's verdict needs:
status classes of every answer, which tasks the server acknowledged and which ones
a worker was told were completed.
"""

from __future__ import annotations

import math
import re
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from bench import load
from orch.client import AgentClient, OrchestratorClient
from orch.errors import OrchestratorError, Timeout, Unavailable

#: The capability only the soak's workers have, so the wrk-driven fleet never holds tasks.
WORK_CAPABILITY = "soak-work"

# wrk runs the script in one Lua state per thread; the main state's ``done`` reads
# each thread's globals (``thread:get``) to add up the status classes it saw.
_STATUS_COUNTING = """
local threads = {}
function setup(thread) table.insert(threads, thread) end
status_2xx, status_4xx, status_5xx, status_other = 0, 0, 0, 0
response = function(status, headers, body)
  if status >= 500 then status_5xx = status_5xx + 1
  elseif status >= 400 then status_4xx = status_4xx + 1
  elseif status >= 200 and status < 300 then status_2xx = status_2xx + 1
  else status_other = status_other + 1 end
end
function done(summary, latency, requests)
  local c = {0, 0, 0, 0}
  for _, t in ipairs(threads) do
    c[1] = c[1] + t:get("status_2xx")
    c[2] = c[2] + t:get("status_4xx")
    c[3] = c[3] + t:get("status_5xx")
    c[4] = c[4] + t:get("status_other")
  end
  io.write(string.format("SOAK-STATUS 2xx=%d 4xx=%d 5xx=%d other=%d\\n", c[1], c[2], c[3], c[4]))
end
"""


def _ms(match: re.Match[str] | None) -> float:
    if match is None:
        return float("nan")
    return float(match.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[match.group(2)]


class Heartbeats:
    """Heartbeats for ``duration_s``, rotating through every agent and its token.

    wrk when installed (a C process, so the load does not compete for the server's
    GIL); otherwise the Python fallback of ``bench.load``, whose figures are the
    client's limits. ``stop()`` ends it early (Ctrl-C, a failure elsewhere).
    """

    def __init__(
        self, url: str, tokens: dict[str, str], duration_s: float, connections: int
    ) -> None:
        self.url = url
        self.requests = [
            ("POST", f"/agents/{agent}/heartbeat", {"Authorization": f"Bearer {token}"}, "")
            for agent, token in tokens.items()
        ]
        self.duration_s = duration_s
        self.connections = connections
        self.tool = "wrk" if load.have_wrk() else "python"
        self._popen: subprocess.Popen[str] | None = None
        self._tmp = tempfile.TemporaryDirectory(prefix="orch-soak-")
        self._python_result: load.LoadResult | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self.tool == "wrk":
            script = Path(self._tmp.name) / "soak.lua"
            script.write_text(load._lua_requests(self.requests) + _STATUS_COUNTING)
            self._popen = subprocess.Popen(
                [
                    "wrk",
                    "-t2",
                    f"-c{self.connections}",
                    f"-d{max(1, round(self.duration_s))}s",
                    "--timeout",
                    "30s",  # a slow answer is a figure (latency), not an error
                    "--latency",
                    "-s",
                    str(script),
                    self.url,
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        else:
            self._thread = threading.Thread(target=self._run_python, daemon=True)
            self._thread.start()

    def _run_python(self) -> None:
        self._python_result = load.run_python(
            self.url,
            self.requests,
            duration_s=self.duration_s,
            connections=min(self.connections, 16),
        )

    def result(self) -> dict[str, Any]:
        """Wait for the end of the run; rate, latency and every status class seen."""
        if self._popen is not None:
            out, _ = self._popen.communicate(timeout=self.duration_s + 60)
            self._tmp.cleanup()
            return self._parse_wrk(out)
        assert self._thread is not None
        self._thread.join(self.duration_s + 60)
        found = self._python_result
        if found is None:
            raise RuntimeError("the Python heartbeat load did not finish")
        return {
            "tool": "python",
            "requests_per_s": found.requests_per_s,
            "p50_ms": float("nan"),
            "p99_ms": found.p99_ms,
            "status_5xx": found.errors,
            "status_4xx": None,
            "socket_errors": {},
        }

    def _parse_wrk(self, out: str) -> dict[str, Any]:
        rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
        total = re.search(r"(\d+) requests in", out)
        statuses = re.search(r"SOAK-STATUS 2xx=(\d+) 4xx=(\d+) 5xx=(\d+) other=(\d+)", out)
        if rate is None or statuses is None:
            raise RuntimeError("wrk did not report its figures:\n" + out[-2000:])
        sockets = re.search(
            r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out
        )
        names = ("connect", "read", "write", "timeout")
        return {
            "tool": "wrk",
            "requests": int(total.group(1)) if total else None,
            "requests_per_s": float(rate.group(1)),
            "p50_ms": _ms(re.search(r"50%\s+([\d.]+)(us|ms|s)", out)),
            "p99_ms": _ms(re.search(r"99%\s+([\d.]+)(us|ms|s)", out)),
            "status_2xx": int(statuses.group(1)),
            "status_4xx": int(statuses.group(2)),
            "status_5xx": int(statuses.group(3)),
            "status_other": int(statuses.group(4)),
            "socket_errors": dict(zip(names, map(int, sockets.groups()), strict=True))
            if sockets
            else {},
        }

    def stop(self) -> None:
        """End the load now (idempotent); wrk is killed if it does not stop at once."""
        if self._popen is not None and self._popen.poll() is None:
            self._popen.terminate()
            try:
                self._popen.wait(5)
            except subprocess.TimeoutExpired:
                self._popen.kill()
                self._popen.wait(5)
        self._tmp.cleanup()


@dataclass
class Tally:
    """What the task stream and the workers saw, shared between their threads."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    acknowledged: dict[str, float] = field(default_factory=dict)  # task id -> submitted at
    uncertain: set[str] = field(default_factory=set)  # no answer: may or may not exist
    refused: int = 0  # a 4xx to a submission: a bug in the soak or the server
    completed: dict[str, float] = field(default_factory=dict)  # task id -> completed at
    complete_errors: int = 0
    python_5xx: int = 0
    python_5xx_routes: dict[str, int] = field(default_factory=dict)

    def count_response(self, response: requests.Response, *_: Any, **__: Any) -> None:
        """A ``requests`` response hook: count 5xx answers by method and path."""
        if response.status_code >= 500:
            key = f"{response.request.method} {response.request.path_url.split('?')[0]}"
            with self.lock:
                self.python_5xx += 1
                self.python_5xx_routes[key] = self.python_5xx_routes.get(key, 0) + 1


class TaskStream:
    """Submits tasks at ``rate_per_s`` from ``submitters`` threads until stopped.

    The schedule is absolute (task n is due at start + n / rate), so a slow answer
    delays one task, not the rate; when the server cannot keep up the achieved rate
    falls behind and the report shows it.
    """

    def __init__(self, url: str, tally: Tally, rate_per_s: float) -> None:
        self.url = url
        self.tally = tally
        self.rate_per_s = rate_per_s
        # Under full heartbeat load one submission can take a second: about one
        # thread per task a second keeps the schedule.
        self.submitters = min(32, max(2, math.ceil(rate_per_s)))
        self._stop = threading.Event()
        self._next = 0
        self._next_lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self.started_at = 0.0
        self.stopped_at = 0.0

    def start(self) -> None:
        self.started_at = time.monotonic()
        self._threads = [
            threading.Thread(target=self._submit_loop, name=f"soak-submit-{n}", daemon=True)
            for n in range(self.submitters)
        ]
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(40)
        self.stopped_at = time.monotonic()

    def _submit_loop(self) -> None:
        session = requests.Session()
        session.hooks["response"].append(self.tally.count_response)
        client = OrchestratorClient(self.url, timeout_s=30, session=session)
        try:
            while not self._stop.is_set():
                with self._next_lock:
                    n = self._next
                    self._next += 1
                due = self.started_at + n / self.rate_per_s
                if self._stop.wait(max(0.0, due - time.monotonic())):
                    return
                self._submit(client, f"soak-{n}")
        finally:
            client.close()

    def _submit(self, client: OrchestratorClient, task_id: str) -> None:
        submitted_at = time.monotonic()
        try:
            answer = client.assign_task(
                {"n": task_id}, task_id=task_id, capabilities=[WORK_CAPABILITY]
            )
        except (Timeout, Unavailable):  # no answer, or a 503: it may exist; checked at the end
            with self.tally.lock:
                self.tally.uncertain.add(task_id)
            return
        except OrchestratorError:
            with self.tally.lock:
                self.tally.refused += 1
            return
        if answer.get("status") in ("assigned", "queued"):
            with self.tally.lock:
                self.tally.acknowledged[task_id] = submitted_at


class Workers:
    """Real remote agents (``AgentClient``) that take the stream's tasks and complete them.

    Assignments arrive in heartbeat answers, as for any agent; each worker has one
    thread consuming them, so completions are reported while the wrk load runs.
    """

    def __init__(self, url: str, tally: Tally, count: int, max_concurrent_tasks: int = 4) -> None:
        self.url = url
        self.tally = tally
        self.count = count
        self.max_concurrent_tasks = max_concurrent_tasks
        self._stop = threading.Event()
        self._ready = threading.Barrier(count + 1)
        self._threads: list[threading.Thread] = []
        self.errors: list[str] = []

    def start(self, timeout_s: float = 60) -> None:
        """Start every worker; return once all are registered and heartbeating."""
        self._threads = [
            threading.Thread(target=self._work, args=(n,), name=f"soak-worker-{n}", daemon=True)
            for n in range(self.count)
        ]
        for thread in self._threads:
            thread.start()
        try:
            self._ready.wait(timeout_s)
        except threading.BrokenBarrierError:
            raise RuntimeError("workers did not start: " + "; ".join(self.errors)) from None

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)

    def _work(self, n: int) -> None:
        agent = AgentClient(
            self.url,
            agent_id=f"soak-worker-{n}",
            agent_type="soak-worker",
            capabilities=[WORK_CAPABILITY],
            max_concurrent_tasks=self.max_concurrent_tasks,
            poll_interval_s=0.2,
            timeout_s=30,
        )
        try:
            agent.start()
        except OrchestratorError as exc:
            self.errors.append(f"worker {n} did not start: {exc}")
            self._ready.abort()
            return
        try:
            self._ready.wait()
        except threading.BrokenBarrierError:
            agent.close(drain=False)
            return
        with agent:
            while not self._stop.is_set():
                try:
                    task = agent.next_task(timeout=0.5)
                    if task is None:
                        continue
                    answer = agent.complete(task, result={"done": task.payload.get("n")})
                except OrchestratorError as exc:
                    with self.tally.lock:
                        self.tally.complete_errors += 1
                    if len(self.errors) < 100:
                        self.errors.append(f"worker {n}: {exc}")
                    continue
                if answer.get("status") == "completed":
                    with self.tally.lock:
                        self.tally.completed[str(task.task_id)] = time.monotonic()
