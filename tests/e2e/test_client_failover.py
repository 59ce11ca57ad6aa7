"""The client with several URLs: it moves on from a dead server or one with no leader.

Real processes and sockets throughout: orchestrator servers (``python -m orch``), a
closed port, and two tiny HTTP servers written here: a node that answers 503
``no_leader`` (what a cluster node without a leader says), and a node that forwards a
request to the real server and then drops the connection before answering (a
leader that died after applying a write). Waits between rounds go through an
injected clock, so no test sleeps for its backoff.
"""

from __future__ import annotations

import http.server
import json
import socket
import threading
import uuid
from collections.abc import Iterator

import pytest
import requests

from orch.client import OrchestratorClient, Unreachable
from orch.client.endpoint import BACKOFF_INITIAL_S, BACKOFF_MAX_S

KEY = "Idempotency-Key"


def dead_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}"  # nothing listens once closed


class FakeClock:
    """``sleep`` and ``monotonic`` for the client: time passes only when it sleeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds

    def monotonic(self) -> float:
        return self.now


class Node(http.server.ThreadingHTTPServer):
    """A tiny HTTP server on a free port that records what it was sent."""

    daemon_threads = True

    def __init__(self, handler: type[http.server.BaseHTTPRequestHandler]) -> None:
        super().__init__(("127.0.0.1", 0), handler)
        self.seen: list[tuple[str, str, str | None]] = []  # method, path, Idempotency-Key
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def close(self) -> None:
        self.shutdown()
        self.server_close()
        self.thread.join(5)


class Handler(http.server.BaseHTTPRequestHandler):
    server: Node

    def log_message(self, *args: object) -> None:  # quiet
        pass

    def _read(self) -> bytes:
        self.server.seen.append((self.command, self.path, self.headers.get(KEY)))
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))


class NoLeader(Handler):
    """What a cluster node says while no leader is known."""

    def _answer(self) -> None:
        self._read()
        body = json.dumps(
            {
                "type": "https://june.dev/orchestrator/problems/no_leader",
                "title": "No leader",
                "status": 503,
                "detail": "no leader is known; retry",
                "code": "no_leader",
            }
        ).encode()
        self.send_response(503)
        self.send_header("Content-Type", "application/problem+json")
        self.send_header("Retry-After", "1")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _answer


class LosesTheAnswer(Handler):
    """Forwards to ``target`` and drops the connection instead of answering."""

    target = ""

    def _forward(self) -> None:
        body = self._read()
        headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
        requests.request(
            self.command, self.target + self.path, data=body, headers=headers, timeout=10
        )
        self.close_connection = True  # the client gets no answer at all

    do_POST = do_PUT = do_PATCH = do_DELETE = _forward


@pytest.fixture
def no_leader() -> Iterator[Node]:
    node = Node(NoLeader)
    yield node
    node.close()


def test_the_client_passes_a_dead_url_and_a_no_leader_node_to_reach_a_live_one(
    server_factory, no_leader
):
    live = server_factory()
    clock = FakeClock()
    dead = dead_url()
    client = OrchestratorClient(
        [dead, no_leader.url, live.url], sleep=clock.sleep, monotonic=clock.monotonic
    )
    with client:
        answer = client.assign_task({"n": 1}, capabilities=["nobody-has-this"])
        assert answer["status"] == "queued"
        assert client.url == live.url  # the next call starts where this one succeeded
        assert clock.slept == []  # a live server was found in the first round
        [(method, path, key)] = no_leader.seen
        assert (method, path) == ("POST", "/tasks/assign")
        assert key is not None and uuid.UUID(key.strip('"'))  # writes carry a key
        assert client.health()["status"] in ("healthy", "degraded")
        assert len(no_leader.seen) == 1  # not asked again
    assert len(requests.get(f"{live.url}/tasks", timeout=10).json()["tasks"]) == 1


def test_when_the_server_in_use_dies_the_client_moves_to_the_next(server_factory):
    first, second = server_factory(), server_factory()
    with OrchestratorClient(f"{first.url}, {second.url}") as client:
        client.register_agent("a1", "implementation")
        assert client.url == first.url
        first.process.kill()
        first.process.wait(10)
        # The agent was on the first server (these two share no store): the second
        # answers for itself, which shows the call reached it.
        assert client.agents()["total"] == 0
        assert client.url == second.url


def test_a_write_whose_answer_was_lost_is_retried_with_its_key_and_applied_once(
    server_factory,
):
    live = server_factory()
    LosesTheAnswer.target = live.url
    losing = Node(LosesTheAnswer)
    try:
        with OrchestratorClient([losing.url, live.url]) as client:
            answer = client.assign_task({"n": 1}, capabilities=["nobody-has-this"])
        [(_, _, key)] = losing.seen
        assert key is not None
    finally:
        losing.close()
    tasks = requests.get(f"{live.url}/tasks", timeout=10).json()["tasks"]
    assert [t["task_id"] for t in tasks] == [answer["task_id"]]  # once, not twice
    replayed = requests.post(
        f"{live.url}/tasks/assign",
        json={
            "payload": {"n": 1},
            "priority": 0,
            "capabilities": ["nobody-has-this"],
            "resources": [],
            "max_attempts": 3,
            "force": False,
        },
        headers={KEY: key},
        timeout=10,
    )
    assert replayed.headers.get("Idempotent-Replayed") == "true"  # the key was the one kept
    assert replayed.json() == answer


def test_giving_up_respects_the_total_wait_and_names_every_url(no_leader):
    clock = FakeClock()
    dead = dead_url()
    client = OrchestratorClient(
        f"{dead},{no_leader.url}",
        failover_wait_s=5.0,
        sleep=clock.sleep,
        monotonic=clock.monotonic,
    )
    with client, pytest.raises(Unreachable) as unreachable:
        client.cancel_task("t1")
    assert sum(clock.slept) <= 5.0
    # The node's Retry-After (1 s) while the backoff is shorter; the next pause,
    # the backoff's 1.6 s, would pass the 5 s bound, so the client gives up instead.
    assert clock.slept == [1.0] * 4
    assert unreachable.value.message == (
        f"cannot connect to {dead} (connection refused) or {no_leader.url} (503 no_leader)"
    )
    keys = {key for _, _, key in no_leader.seen}
    assert len(no_leader.seen) == 5 and len(keys) == 1  # every try, one key


def test_backoff_doubles_up_to_its_cap_between_rounds_of_dead_urls():
    clock = FakeClock()
    urls = [dead_url(), dead_url()]
    client = OrchestratorClient(
        urls, failover_wait_s=10.0, sleep=clock.sleep, monotonic=clock.monotonic
    )
    with client, pytest.raises(Unreachable) as unreachable:
        client.health()
    expected, total = [], 0.0
    pause = BACKOFF_INITIAL_S
    while total + pause <= 10.0:
        expected.append(pause)
        total += pause
        pause = min(BACKOFF_MAX_S, pause * 2)
    assert clock.slept == pytest.approx(expected)
    assert max(clock.slept) == BACKOFF_MAX_S
    assert all(url in unreachable.value.message for url in urls)


def test_heartbeats_carry_no_key_and_other_writes_a_fresh_one_each(no_leader):
    clock = FakeClock()
    client = OrchestratorClient(
        no_leader.url, failover_wait_s=0, sleep=clock.sleep, monotonic=clock.monotonic
    )
    with client:
        for call in (
            lambda: client.heartbeat("a1", token="t"),
            lambda: client.start_agent("a1"),
            lambda: client.start_agent("a1"),
            lambda: client.agents(),
        ):
            with pytest.raises(Unreachable):
                call()
    keys = [key for _, _, key in no_leader.seen]
    assert keys[0] is None  # heartbeat
    assert keys[1] is not None and keys[2] is not None and keys[1] != keys[2]
    assert keys[3] is None  # a read
