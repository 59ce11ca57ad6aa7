"""Scenarios over HTTP against the real server process (SQLite, full sync)."""

from __future__ import annotations

import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import requests

from bench import load, processes


def register_fleet(url: str, count: int, prefix: str, workers: int = 16) -> dict[str, str]:
    """Register and start ``count`` agents; returns their tokens."""
    local = threading.local()

    def one(n: int) -> tuple[str, str]:
        session = getattr(local, "session", None) or requests.Session()
        local.session = session
        agent_id = f"{prefix}-{n}"
        answer = session.post(
            f"{url}/agents/register",
            json={"agent_id": agent_id, "agent_type": "bench", "capabilities": ["bench"]},
            timeout=60,
        )
        answer.raise_for_status()
        session.post(f"{url}/agents/{agent_id}/start", timeout=60).raise_for_status()
        return agent_id, answer.json()["token"]

    with ThreadPoolExecutor(workers) as pool:
        return dict(pool.map(one, range(count)))


def heartbeats(
    agents: int, duration_s: float, connections: int, prefer_wrk: bool
) -> dict[str, Any]:
    """Heartbeat throughput and p99 vs the bare-Falcon ceiling, same threads."""
    with tempfile.TemporaryDirectory(prefix="orch-bench-") as tmp:
        ref = processes.reference()
        try:
            ceiling = load.run_load(
                ref.url,
                [("POST", "/agents/x/heartbeat", {}, "")],
                duration_s=duration_s,
                connections=connections,
                prefer_wrk=prefer_wrk,
            )
        finally:
            ref.stop()
        server = processes.orchestrator(str(Path(tmp) / "hb.db"))
        try:
            tokens = register_fleet(server.url, agents, "hb")
            reqs = [
                ("POST", f"/agents/{a}/heartbeat", {"Authorization": f"Bearer {t}"}, "")
                for a, t in tokens.items()
            ]
            measured = load.run_load(
                server.url,
                reqs,
                duration_s=duration_s,
                connections=connections,
                prefer_wrk=prefer_wrk,
            )
        finally:
            server.stop()
    return {
        "ceiling_per_s": ceiling.requests_per_s,
        "heartbeats_per_s": measured.requests_per_s,
        "ratio": measured.requests_per_s / ceiling.requests_per_s,
        "p99_ms": measured.p99_ms,
        "errors": measured.errors + ceiling.errors,
        "tool": measured.tool,
    }


def fleet(agents: int) -> dict[str, Any]:
    """Register and start a fleet over HTTP; time it and read the server's memory."""
    with tempfile.TemporaryDirectory(prefix="orch-bench-") as tmp:
        server = processes.orchestrator(str(Path(tmp) / "fleet.db"))
        try:
            base_rss = server.rss_mb()
            started = time.perf_counter()
            register_fleet(server.url, agents, "fleet", workers=32)
            elapsed = time.perf_counter() - started
            stats = requests.get(f"{server.url}/stats", timeout=60).json()
            return {
                "agents": agents,
                "register_and_start_s": elapsed,
                "active_agents": stats["active_agents"],
                "rss_mb": server.rss_mb(),
                "rss_idle_mb": base_rss,
            }
        finally:
            server.stop()


def task_cycle(agents: int, duration_s: float) -> dict[str, Any]:
    """assign (named agent) -> heartbeat delivers -> complete, one thread per agent."""
    with tempfile.TemporaryDirectory(prefix="orch-bench-") as tmp:
        server = processes.orchestrator(str(Path(tmp) / "cycle.db"))
        try:
            tokens = register_fleet(server.url, agents, "cyc")
            counts: list[int] = []
            lock = threading.Lock()
            stop = time.monotonic() + duration_s

            def loop(agent_id: str, token: str) -> None:
                session = requests.Session()
                auth = {"Authorization": f"Bearer {token}"}
                done = 0
                while time.monotonic() < stop:
                    task_id = f"{agent_id}:{done}"
                    session.post(
                        f"{server.url}/tasks/assign",
                        json={"task_id": task_id, "agent_id": agent_id},
                        timeout=60,
                    ).raise_for_status()
                    session.post(
                        f"{server.url}/agents/{agent_id}/heartbeat", headers=auth, timeout=60
                    ).raise_for_status()
                    session.post(
                        f"{server.url}/tasks/{task_id}/complete", json={}, headers=auth, timeout=60
                    ).raise_for_status()
                    done += 1
                with lock:
                    counts.append(done)

            started = time.monotonic()
            threads = [threading.Thread(target=loop, args=item) for item in tokens.items()]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            return {"agents": agents, "tasks_per_s": sum(counts) / (time.monotonic() - started)}
        finally:
            server.stop()


def http_locks(contenders: int, duration_s: float) -> dict[str, Any]:
    """Acquire/release pairs over HTTP on one resource."""
    with tempfile.TemporaryDirectory(prefix="orch-bench-") as tmp:
        server = processes.orchestrator(str(Path(tmp) / "locks.db"))
        try:
            tokens = register_fleet(server.url, contenders, "lk")
            counts: list[int] = []
            stop = time.monotonic() + duration_s

            def loop(token: str) -> None:
                session = requests.Session()
                auth = {"Authorization": f"Bearer {token}"}
                pairs = 0
                while time.monotonic() < stop:
                    grant = session.post(
                        f"{server.url}/locks/bench/acquire",
                        json={"ttl_s": 30, "wait_s": 25},
                        headers=auth,
                        timeout=60,
                    )
                    if grant.status_code in (409, 503):  # wait ran out / no waiting slot
                        continue
                    grant.raise_for_status()
                    session.post(
                        f"{server.url}/locks/bench/release",
                        json={"fencing_token": grant.json()["fencing_token"]},
                        headers=auth,
                        timeout=60,
                    ).raise_for_status()
                    pairs += 1
                counts.append(pairs)

            started = time.monotonic()
            threads = [threading.Thread(target=loop, args=(t,)) for t in tokens.values()]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            return {
                "contenders": contenders,
                "pairs_per_s": sum(counts) / (time.monotonic() - started),
            }
        finally:
            server.stop()
