"""Scenarios over HTTP against the real server process (SQLite, full sync)."""

from __future__ import annotations

import json
import statistics
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench import load, processes


def register_fleet(url: str, count: int, prefix: str, workers: int = 16) -> dict[str, str]:
    """Register and start ``count`` agents; returns their tokens."""
    local = threading.local()

    def one(n: int) -> tuple[str, str]:
        client = getattr(local, "client", None) or load.Client(url)
        local.client = client
        agent_id = f"{prefix}-{n}"
        answer = client.ok(
            "/agents/register",
            {"agent_id": agent_id, "agent_type": "bench", "capabilities": ["bench"]},
        )
        client.ok(f"/agents/{agent_id}/start")
        return agent_id, json.loads(answer)["token"]

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


def fleet(
    agents: int, heartbeat_rate_per_s: float, duration_s: float, connections: int, prefer_wrk: bool
) -> dict[str, Any]:
    """Register and start a fleet over HTTP; time it and read the server's memory.

    Then the whole fleet heartbeats at ``heartbeat_rate_per_s`` (paced, rotating
    every agent and its token) to read the latency a fleet this size sees.
    """
    with tempfile.TemporaryDirectory(prefix="orch-bench-") as tmp:
        server = processes.orchestrator(str(Path(tmp) / "fleet.db"))
        try:
            base_rss = server.rss_mb()
            started = time.perf_counter()
            tokens = register_fleet(server.url, agents, "fleet", workers=32)
            elapsed = time.perf_counter() - started
            stats = json.loads(load.Client(server.url).get("/stats")[1])
            rss_mb = server.rss_mb()
            beats = load.run_load(
                server.url,
                [
                    ("POST", f"/agents/{a}/heartbeat", {"Authorization": f"Bearer {t}"}, "")
                    for a, t in tokens.items()
                ],
                duration_s=duration_s,
                connections=connections,
                prefer_wrk=prefer_wrk,
                rate_per_s=heartbeat_rate_per_s,
            )
            return {
                "agents": agents,
                "register_and_start_s": elapsed,
                "active_agents": stats["active_agents"],
                "rss_mb": rss_mb,
                "rss_idle_mb": base_rss,
                "heartbeats_per_s": beats.requests_per_s,
                "heartbeat_p99_ms": beats.p99_ms,
                "heartbeat_errors": beats.errors,
                "tool": beats.tool,
            }
        finally:
            server.stop()


def task_cycle(agents: int, duration_s: float, prefer_wrk: bool) -> dict[str, Any]:
    """assign (named agent) -> heartbeat delivers -> complete, one client per agent.

    The client is wrk when there is one (``load.run_wrk_cycle``), else a Python
    thread per agent, whose cost on the same two cores the table then includes.
    """
    with tempfile.TemporaryDirectory(prefix="orch-bench-") as tmp:
        server = processes.orchestrator(str(Path(tmp) / "cycle.db"))
        try:
            tokens = register_fleet(server.url, agents, "cyc")
            if prefer_wrk and load.have_wrk():
                rate, errors = load.run_wrk_cycle(server.url, tokens, duration_s=duration_s)
                if errors:
                    raise RuntimeError(f"{errors} task cycles went wrong under wrk")
                return {"agents": agents, "tasks_per_s": rate, "tool": "wrk"}
            rate = _python_cycle(server.url, tokens, duration_s, keyed=False, round_=0)
            return {"agents": agents, "tasks_per_s": rate, "tool": "python"}
        finally:
            server.stop()


def _python_cycle(
    url: str, tokens: dict[str, str], duration_s: float, *, keyed: bool, round_: int
) -> float:
    """Tasks/s of the assign -> heartbeat -> complete cycle, a Python thread per agent.

    ``keyed``: the assign and the complete carry an ``Idempotency-Key``, as the SDK
    sends them (the heartbeat does not). ``round_`` keeps task ids apart between runs.
    """
    counts: list[int] = []
    lock = threading.Lock()
    stop = time.monotonic() + duration_s

    def loop(agent_id: str, token: str) -> None:
        client = load.Client(url)
        auth = {"Authorization": f"Bearer {token}"}
        done = 0
        while time.monotonic() < stop:
            task_id = f"{agent_id}:{round_}:{done}"
            assign_headers = {"Idempotency-Key": f"a-{task_id}"} if keyed else None
            complete_headers = {**auth, "Idempotency-Key": f"c-{task_id}"} if keyed else auth
            client.ok("/tasks/assign", {"task_id": task_id, "agent_id": agent_id}, assign_headers)
            delivered = json.loads(client.ok(f"/agents/{agent_id}/heartbeat", None, auth))
            if not any(a["task_id"] == task_id for a in delivered["assignments"]):
                raise RuntimeError(f"heartbeat did not deliver {task_id}")
            client.ok(f"/tasks/{task_id}/complete", {}, complete_headers)
            done += 1
        client.close()
        with lock:
            counts.append(done)

    started = time.monotonic()
    threads = [threading.Thread(target=loop, args=item) for item in tokens.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts) / (time.monotonic() - started)


#: Runs of each kind in ``keyed_cycle``, alternated so that a noisy neighbour hits both.
KEYED_ROUNDS = 3


def keyed_cycle(agents: int, duration_s: float) -> dict[str, Any]:
    """The HTTP task cycle with an ``Idempotency-Key`` on its writes, against without.

    What keeping answers costs: a keyed write is answered by a worker (never on the
    loop) after a store read, and its answer is a second commit. Both cycles use the
    Python client on one server (SQLite, full sync), in turns; medians are compared.
    """
    with tempfile.TemporaryDirectory(prefix="orch-bench-") as tmp:
        server = processes.orchestrator(str(Path(tmp) / "keyed.db"))
        try:
            tokens = register_fleet(server.url, agents, "key")
            plain, keyed = [], []
            for round_ in range(KEYED_ROUNDS):
                plain.append(
                    _python_cycle(server.url, tokens, duration_s, keyed=False, round_=2 * round_)
                )
                keyed.append(
                    _python_cycle(server.url, tokens, duration_s, keyed=True, round_=2 * round_ + 1)
                )
            plain_rate, keyed_rate = statistics.median(plain), statistics.median(keyed)
            return {
                "agents": agents,
                "plain_per_s": plain_rate,
                "keyed_per_s": keyed_rate,
                "ratio": keyed_rate / plain_rate if plain_rate else 0.0,
            }
        finally:
            server.stop()


def http_locks(contenders: int, duration_s: float) -> dict[str, Any]:
    """Acquire/release pairs over HTTP on one resource.

    Contenders wait in line (``wait_s``) while the server has a waiting slot for
    them (half its HTTP threads); the others are answered 503 with a Retry-After,
    and pause that long before asking again, as a client should. Retrying at once
    measured the server answering 503s: 35 pairs/s with 32 contenders.
    """
    with tempfile.TemporaryDirectory(prefix="orch-bench-") as tmp:
        server = processes.orchestrator(str(Path(tmp) / "locks.db"))
        try:
            tokens = register_fleet(server.url, contenders, "lk")
            counts: list[int] = []
            told_to_retry: list[int] = []
            stop = time.monotonic() + duration_s

            def loop(token: str) -> None:
                client = load.Client(server.url)
                auth = {"Authorization": f"Bearer {token}"}
                pairs = retries = 0
                while time.monotonic() < stop:
                    status, grant = client.post(
                        "/locks/bench/acquire", {"ttl_s": 30, "wait_s": 25}, auth
                    )
                    if status == 503:  # no waiting slot: pause as the server asks
                        retries += 1
                        pause = client.retry_after_s or 1.0
                        time.sleep(max(0.0, min(pause, stop - time.monotonic())))
                        continue
                    if status == 409:  # the wait ran out
                        continue
                    if status != 200:
                        raise RuntimeError(f"acquire answered {status}: {grant[:300]!r}")
                    token_ = json.loads(grant)["fencing_token"]
                    client.ok("/locks/bench/release", {"fencing_token": token_}, auth)
                    pairs += 1
                client.close()
                counts.append(pairs)
                told_to_retry.append(retries)

            started = time.monotonic()
            threads = [threading.Thread(target=loop, args=(t,)) for t in tokens.values()]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            return {
                "contenders": contenders,
                "pairs_per_s": sum(counts) / (time.monotonic() - started),
                "answered_503": sum(told_to_retry),
            }
        finally:
            server.stop()
