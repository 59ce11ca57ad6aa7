"""Answers given on the event loop's thread are held until their writes are stored.

A real ``Server`` on a free port with a SQLite store, driven with ``requests`` and a
raw socket. Commits are held back (``SQLiteStore.commits_held``), so a test can see
an answer that is ready but not yet stored, and what the server does with it; they
fail for real while another connection holds the file's write lock
(``tests/store/faults.py``).
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from orch import ManualClock, Orchestrator, Settings
from orch.config import ConfigError
from orch.http.serve import Server
from orch.idempotency import key_digest
from orch.store import SQLiteStore
from tests.conftest import wait_until
from tests.store.faults import SQLITE_BUSY_TIMEOUT_S, LockedElsewhere


@dataclass
class Running:
    server: Server
    store: SQLiteStore
    url: str

    @property
    def inline(self) -> Any:
        return self.server.waitress.inline


def start(
    tmp_path: Path, clock: ManualClock | None = None, **overrides: Any
) -> tuple[Server, SQLiteStore, threading.Thread]:
    settings = Settings(heartbeat_interval_s=3600.0, **overrides)
    store = SQLiteStore(str(tmp_path / "orch.db"), busy_timeout_s=SQLITE_BUSY_TIMEOUT_S)
    orch = Orchestrator(settings, store=store, clock=clock)
    server = Server(orch, settings, host="127.0.0.1", port=0)
    orch.start()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server, store, thread


@pytest.fixture
def running(tmp_path: Path) -> Iterator[Running]:
    server, store, thread = start(tmp_path)
    try:
        yield Running(server, store, f"http://127.0.0.1:{server.port}")
    finally:
        server.stop()
        thread.join(10)
        assert not thread.is_alive()


def register(url: str, agent_id: str) -> str:
    answer = requests.post(
        f"{url}/agents/register", json={"agent_id": agent_id, "agent_type": "t"}, timeout=10
    )
    answer.raise_for_status()
    requests.post(f"{url}/agents/{agent_id}/start", timeout=10).raise_for_status()
    return str(answer.json()["token"])


class InBackground:
    """One request on its own thread, so the test can look while it is unanswered."""

    def __init__(self, method: str, url: str, **kwargs: Any) -> None:
        self.answer: requests.Response | None = None
        self.done = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(method, url), kwargs=kwargs)
        self._thread.start()

    def _run(self, method: str, url: str, **kwargs: Any) -> None:
        try:
            self.answer = requests.request(method, url, timeout=10, **kwargs)
        finally:
            self.done.set()

    def result(self) -> requests.Response:
        self._thread.join(10)
        assert self.answer is not None
        return self.answer


def answer_after_failed_commit(
    running: Running, method: str, url: str, **kwargs: Any
) -> requests.Response:
    """The answer to a request whose answer was held, then whose commit failed."""
    with LockedElsewhere(running.store.path):
        with running.store.commits_held():
            request = InBackground(method, url, **kwargs)
            wait_until(lambda: running.inline.busy(), message="the answer is held for its commit")
        return request.result()


def test_an_inline_answer_is_sent_only_once_stored_and_the_loop_serves_others_meanwhile(
    running: Running,
) -> None:
    register(running.url, "a1")
    token = register(running.url, "a2")
    answered_before = running.inline.answered
    writes_before = running.store.writes
    with running.store.commits_held():  # no commit can happen now
        assign = InBackground(
            "POST", f"{running.url}/tasks/assign", json={"task_id": "t1", "agent_id": "a1"}
        )
        wait_until(lambda: running.inline.busy(), message="the answer is held for its commit")
        # The loop is not blocked: a heartbeat that writes nothing is answered in place
        # (it runs on the loop too) while the assignment's answer waits.
        beat = requests.post(
            f"{running.url}/agents/a2/heartbeat",
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        )
        assert beat.status_code == 200, beat.text
        assert running.inline.answered == answered_before + 2
        assert not assign.done.is_set(), "answered before its write was stored"
        assert running.store.writes == writes_before  # and indeed nothing was stored
    answer = assign.result()
    assert answer.status_code == 200, answer.text
    assert [(t.key, t.state.value) for t in running.store.load_tasks()] == [("t1", "assigned")]
    # The loop sends a held answer, then forgets it: the client can read it in between.
    wait_until(lambda: not running.inline.busy(), message="the held answer is let go")


def test_a_commit_failing_after_the_answer_was_held_answers_503_and_changes_nothing(
    running: Running,
) -> None:
    register(running.url, "a1")
    answer = answer_after_failed_commit(
        running,
        "POST",
        f"{running.url}/tasks/assign",
        json={"task_id": "t2", "agent_id": "a1"},
    )
    assert answer.status_code == 503, answer.text
    assert answer.headers["Content-Type"] == "application/problem+json"
    assert answer.headers["Connection"] == "close"
    assert answer.json()["code"] == "store_unavailable"
    assert running.inline.refused == 1
    scrape = requests.get(f"{running.url}/metrics", timeout=10).text
    assert "orchestrator_http_answers_withdrawn_total 1.0" in scrape
    # The Scheduler had applied the assignment; it rebuilds from the store, which
    # never got it, so the task is unknown and the agent holds nothing.
    wait_until(
        lambda: requests.get(f"{running.url}/tasks/t2", timeout=10).status_code == 404,
        message="the Scheduler forgot what was not stored",
    )
    assert requests.get(f"{running.url}/agents/a1/tasks", timeout=10).json()["tasks"] == []
    assert running.store.load_tasks() == []
    # And the store works again: the same request now succeeds.
    again = requests.post(
        f"{running.url}/tasks/assign", json={"task_id": "t2", "agent_id": "a1"}, timeout=10
    )
    assert again.status_code == 200, again.text


def read_answers(sock: socket.socket, count: int) -> list[bytes]:
    """``count`` whole HTTP answers (each with a Content-Length) from ``sock``."""
    data = b""
    answers: list[bytes] = []
    while len(answers) < count:
        head, sep, rest = data.partition(b"\r\n\r\n")
        if sep:
            length = next(
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            if len(rest) >= length:
                answers.append(head + sep + rest[:length])
                data = rest[length:]
                continue
        chunk = sock.recv(65536)
        assert chunk, f"connection closed after {len(answers)} answers"
        data += chunk
    return answers


def test_pipelined_requests_are_answered_in_order_behind_a_held_answer(
    running: Running,
) -> None:
    register(running.url, "a1")
    body = b'{"task_id":"t3","agent_id":"a1"}'
    port = running.server.port
    pipelined = (
        b"POST /tasks/assign HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s"
        b"GET /tasks/t3 HTTP/1.1\r\nHost: x\r\n\r\n" % (len(body), body)
    )
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        with running.store.commits_held():
            sock.sendall(pipelined)
            wait_until(lambda: running.inline.busy(), message="the first answer is held")
        first, second = read_answers(sock, 2)
    assert first.startswith(b"HTTP/1.1 200 "), first
    assert second.startswith(b"HTTP/1.1 200 "), second
    assert b'"task_id":"t3"' in second and b'"status":"assigned"' in second


def test_inline_answers_can_be_turned_off(tmp_path: Path) -> None:
    assert Settings.from_env({}).http_inline is True
    assert Settings.from_env({"ORCH_HTTP_INLINE": "false"}).http_inline is False
    with pytest.raises(ConfigError, match="ORCH_HTTP_INLINE"):
        Settings.from_env({"ORCH_HTTP_INLINE": "sometimes"})
    server, store, thread = start(tmp_path, http_inline=False)
    try:
        assert server.waitress.inline is None
        url = f"http://127.0.0.1:{server.port}"
        register(url, "a1")
        with store.commits_held():
            assign = InBackground(
                "POST", f"{url}/tasks/assign", json={"task_id": "t4", "agent_id": "a1"}
            )
            # A worker thread waits for the commit; the answer still waits for it.
            wait_until(
                lambda: server.waitress.listener.task_dispatcher.active_count, message="a worker"
            )
            assert not assign.done.is_set()
        assert assign.result().status_code == 200
    finally:
        server.stop()
        thread.join(10)


def test_a_held_answer_is_still_given_when_the_server_shuts_down(tmp_path: Path) -> None:
    server, store, thread = start(tmp_path)
    url = f"http://127.0.0.1:{server.port}"
    try:
        register(url, "a1")
        with store.commits_held():
            assign = InBackground(
                "POST", f"{url}/tasks/assign", json={"task_id": "t5", "agent_id": "a1"}
            )
            wait_until(lambda: server.waitress.inline.busy(), message="the answer is held")
            server.stop()  # shutdown begins with an answer still waiting for its commit
        assert assign.result().status_code == 200
    finally:
        server.stop()
        thread.join(10)
    assert not thread.is_alive()
    reopened = SQLiteStore(str(tmp_path / "orch.db"))
    try:
        assert [(t.key, t.state.value) for t in reopened.load_tasks()] == [("t5", "assigned")]
    finally:
        reopened.close()


def test_a_client_gone_before_its_held_answer_leaves_the_change_stored_and_the_server_well(
    running: Running,
) -> None:
    register(running.url, "a1")
    body = b'{"task_id":"t6","agent_id":"a1"}'
    request = (
        b"POST /tasks/assign HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    port = running.server.port
    with (
        running.store.commits_held(),
        socket.create_connection(("127.0.0.1", port), timeout=10) as sock,
    ):
        sock.sendall(request)
        wait_until(lambda: running.inline.busy(), message="the answer is held")
    wait_until(lambda: not running.inline.busy(), message="the held answer is settled")
    # The change was acknowledged to no one, but it was stored, and nothing broke.
    task = requests.get(f"{running.url}/tasks/t6", timeout=10)
    assert task.status_code == 200 and task.json()["status"] == "assigned"
    assert [t.key for t in running.store.load_tasks()] == ["t6"]
    assert running.inline.refused == 0


def test_an_unhealthy_agents_heartbeat_is_answered_by_a_worker(tmp_path: Path) -> None:
    clock = ManualClock()
    server, _store, thread = start(tmp_path, clock=clock)
    url = f"http://127.0.0.1:{server.port}"
    orch = server.orchestrator
    try:
        token = register(url, "a1")
        auth = {"Authorization": f"Bearer {token}"}
        clock.advance(3600.0 * 3.5)  # past 3 missed intervals: unhealthy
        wait_until(
            lambda: orch.tick() or orch.agent("a1")["status"] == "unhealthy",
            message="the agent is unhealthy",
        )
        answered = server.waitress.inline.answered
        beat = requests.post(f"{url}/agents/a1/heartbeat", headers=auth, timeout=10)
        assert beat.status_code == 200, beat.text
        assert beat.json()["status"] == "idle"
        # Its recovery waited for a commit on a worker, not on the loop.
        assert server.waitress.inline.answered == answered
        again = requests.post(f"{url}/agents/a1/heartbeat", headers=auth, timeout=10)
        assert again.status_code == 200
        assert server.waitress.inline.answered == answered + 1  # healthy again: on the loop
    finally:
        server.stop()
        thread.join(10)


def test_a_start_is_answered_on_the_loop_once_stored_and_undone_if_its_commit_fails(
    running: Running,
) -> None:
    url = running.url
    for agent_id in ("a1", "a2"):
        answer = requests.post(
            f"{url}/agents/register", json={"agent_id": agent_id, "agent_type": "t"}, timeout=10
        )
        assert answer.status_code == 200, answer.text
    answered = running.inline.answered
    with running.store.commits_held():
        start = InBackground("POST", f"{url}/agents/a1/start")
        wait_until(lambda: running.inline.busy(), message="the start's answer is held")
        assert not start.done.is_set()
    assert start.result().json()["status"] == "started"
    assert running.inline.answered == answered + 1
    assert {a.agent_id: a.state.value for a in running.store.load_agents()}["a1"] == "idle"

    answer = answer_after_failed_commit(running, "POST", f"{url}/agents/a2/start")
    assert answer.status_code == 503 and answer.json()["code"] == "store_unavailable"
    wait_until(
        lambda: requests.get(f"{url}/agents/a2", timeout=10).json()["status"] == "registered",
        message="the start that was not stored is undone",
    )
    assert {a.agent_id: a.state.value for a in running.store.load_agents()}["a2"] == "registered"
    again = requests.post(f"{url}/agents/a2/start", timeout=10)
    assert again.status_code == 200 and again.json()["status"] == "started"


def test_a_keyed_write_is_answered_by_a_worker_and_kept_only_if_its_commit_holds(
    running: Running,
) -> None:
    # Its answer is kept once its writes are durable, which the loop must not wait
    # for (orch/http/idempotency.py): so it never runs there.
    register(running.url, "a1")
    answered = running.inline.answered
    keyed = {"Idempotency-Key": "assign-t1"}
    body = {"task_id": "t1", "agent_id": "a1"}
    with LockedElsewhere(running.store.path):
        refused = requests.post(f"{running.url}/tasks/assign", json=body, headers=keyed, timeout=10)
    assert refused.status_code == 503, refused.text
    assert refused.json()["code"] == "store_unavailable"
    assert (
        running.store.load_idempotent_answer("", key_digest("assign-t1")) is None
    )  # 503 is not kept
    retried = requests.post(f"{running.url}/tasks/assign", json=body, headers=keyed, timeout=10)
    assert retried.status_code == 200, retried.text
    assert "Idempotent-Replayed" not in retried.headers
    kept = running.store.load_idempotent_answer("", key_digest("assign-t1"))
    assert kept is not None and kept.status == 200
    assert running.inline.answered == answered  # neither ran on the loop
    unkeyed = requests.post(f"{running.url}/tasks/assign", json={"task_id": "t2"}, timeout=10)
    assert unkeyed.status_code == 202
    assert running.inline.answered == answered + 1  # while a request without a key does
