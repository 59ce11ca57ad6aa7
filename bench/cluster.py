"""A cluster's figures: failover time after SIGKILL of the leader, and heartbeats
answered through a standby as a ratio of heartbeats to the leader itself.

Both nodes are real server processes on a database of the tests' private PostgreSQL
(``tests/pg/server.py``). Failover time is from SIGKILL of the leader to the first
write the new leader acknowledges, as a client that tries the standby in a loop sees
it; the median of ``ROUNDS`` takeovers, each on a fresh database and pair of nodes.
A frozen leader (SIGSTOP) is replaced once its lease expires: one round of that too.
"""

from __future__ import annotations

import os
import signal
import statistics
import time
from typing import Any

import requests

from bench import http_scenarios, load, processes
from tests.pg.server import databases_for_tests

#: Takeovers measured for the failover median.
ROUNDS = 5
#: The lease the nodes run with (the default).
LEASE_S = 5.0


def _pair(db_url: str) -> tuple[processes.Process, processes.Process]:
    env = {"ORCH_LEADER_LEASE_S": str(LEASE_S)}
    first = processes.orchestrator(db_url, **env)
    second = processes.orchestrator(db_url, **env)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        role = requests.get(f"{first.url}/health", timeout=5).json().get("role")
        if role == "leader":
            return first, second
        if requests.get(f"{second.url}/health", timeout=5).json().get("role") == "leader":
            return second, first
        time.sleep(0.05)
    raise RuntimeError("no leader elected within 30 s")


def _failover_s(db_url: str) -> float:
    leader, standby = _pair(db_url)
    try:
        session = requests.Session()
        killed = time.monotonic()
        leader.popen.kill()
        n = 0
        while time.monotonic() - killed < 60:
            n += 1
            try:
                answer = session.post(
                    f"{standby.url}/tasks/assign", json={"task_id": f"after-{n}"}, timeout=10
                )
            except requests.RequestException:
                continue
            if answer.status_code < 300:
                return time.monotonic() - killed
        raise RuntimeError("no write acknowledged within 60 s of the leader's death")
    finally:
        leader.stop()
        standby.stop()


def _frozen_failover_s(db_url: str) -> float:
    """SIGSTOP of the leader to the first write the standby's term acknowledges.

    The standby is watched through its own ``/health`` (a write sent to it earlier
    would be forwarded to the frozen leader and wait for it).
    """
    leader, standby = _pair(db_url)
    try:
        frozen = time.monotonic()
        os.kill(leader.popen.pid, signal.SIGSTOP)
        while time.monotonic() - frozen < 60:
            role = requests.get(f"{standby.url}/health", timeout=5).json().get("role")
            if role == "leader":
                answer = requests.post(
                    f"{standby.url}/tasks/assign", json={"task_id": "after"}, timeout=10
                )
                if answer.status_code < 300:
                    return time.monotonic() - frozen
            time.sleep(0.02)
        raise RuntimeError("the frozen leader was not replaced within 60 s")
    finally:
        os.kill(leader.popen.pid, signal.SIGCONT)
        leader.stop()
        standby.stop()


def run(rounds: int, hb_agents: int, duration_s: float, connections: int) -> dict[str, Any]:
    with databases_for_tests() as databases:
        times = []
        for _ in range(rounds):
            with databases.fresh() as url:
                times.append(_failover_s(url))
        with databases.fresh() as url:
            frozen_s = _frozen_failover_s(url)
        with databases.fresh() as url:
            leader, standby = _pair(url)
            try:
                tokens = http_scenarios.register_fleet(leader.url, hb_agents, "hb")
                reqs = [
                    ("POST", f"/agents/{a}/heartbeat", {"Authorization": f"Bearer {t}"}, "")
                    for a, t in tokens.items()
                ]
                rates = {}
                for name, node in (("leader", leader), ("standby", standby)):
                    rates[name] = load.run_load(
                        node.url,
                        reqs,
                        duration_s=duration_s,
                        connections=connections,
                        prefer_wrk=False,
                    )
            finally:
                leader.stop()
                standby.stop()
    return {
        "failover_s": times,
        "failover_median_s": statistics.median(times),
        "frozen_failover_s": frozen_s,
        "heartbeats_leader_per_s": rates["leader"].requests_per_s,
        "heartbeats_standby_per_s": rates["standby"].requests_per_s,
        "standby_ratio": rates["standby"].requests_per_s / rates["leader"].requests_per_s,
        "errors": rates["leader"].errors + rates["standby"].errors,
    }
