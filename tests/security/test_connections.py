"""Connection-level defences, against the real server process (``python -m orch``).

Slow or idle clients must not starve anyone else: waitress reads requests on its
event loop, so they hold no thread, but they hold connections, which are capped.
Idle connections are closed after ``ORCH_HTTP_IDLE_TIMEOUT_S``; a request that takes
longer than ``ORCH_HTTP_REQUEST_READ_TIMEOUT_S`` to arrive (slow-loris: a byte now and
then) is answered 408 and closed. Short timeouts in the environment keep these tests
fast; every wait polls with a deadline.
"""

from __future__ import annotations

import json
import re
import select
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests

from orch import Orchestrator, Settings
from orch.http.serve import Server
from orch.http.waitress_adapter import GuardedChannel, ProblemErrorTask
from orch.tokens import hash_token
from tests.conftest import reap, wait_until
from tests.e2e.conftest import ServerProcess, start_server

ADMIN_TOKEN = "connections-admin-token-0123456789"
QUIET = {"TODO_SERVICE_URL": "", "GATEWAY_URL": ""}


@pytest.fixture
def servers() -> Iterator[list[ServerProcess]]:
    started: list[ServerProcess] = []
    yield started
    for server in started:
        reap(server.process)


def serve(servers: list[ServerProcess], **env: str) -> ServerProcess:
    server = start_server({**QUIET, **env})
    servers.append(server)
    return server


def address(server: ServerProcess) -> tuple[str, int]:
    parts = urlsplit(server.url)
    assert parts.hostname is not None and parts.port is not None
    return parts.hostname, parts.port


class SlowLoris:
    """Sockets that start a request and then send one more header byte now and then.

    Each byte is activity, so an idle timeout alone never closes them; only the
    request read timeout does.
    """

    def __init__(self, server: ServerProcess, count: int, byte_interval_s: float = 0.2) -> None:
        self.sockets = [socket.create_connection(address(server), timeout=5) for _ in range(count)]
        for sock in self.sockets:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        self.closed: set[int] = set()
        self._stop = threading.Event()
        self._interval_s = byte_interval_s
        self._thread = threading.Thread(target=self._dribble, daemon=True)
        self._thread.start()

    def _dribble(self) -> None:
        while not self._stop.wait(self._interval_s):  # the attacker's pace, not a test wait
            for index, sock in enumerate(self.sockets):
                if index in self.closed:
                    continue
                try:
                    sock.sendall(b"a")
                except OSError:
                    self.closed.add(index)

    def answers(self, timeout_s: float) -> list[bytes]:
        """What each socket received before the server closed it (b"" if nothing)."""
        out = []
        deadline = time.monotonic() + timeout_s
        for sock in self.sockets:
            sock.settimeout(max(0.1, deadline - time.monotonic()))
            chunks = []
            try:
                while chunk := sock.recv(4096):
                    chunks.append(chunk)
            except (TimeoutError, ConnectionResetError):
                chunks.append(b"<still open>" if not chunks else b"")
            out.append(b"".join(chunks))
        return out

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for sock in self.sockets:
            sock.close()


def timed_get(url: str, **kwargs: object) -> tuple[requests.Response, float]:
    started = time.monotonic()
    answer = requests.get(url, timeout=15, **kwargs)  # type: ignore[arg-type]
    return answer, time.monotonic() - started


def test_slow_and_idle_connections_do_not_delay_a_normal_request(
    servers: list[ServerProcess],
) -> None:
    server = serve(servers, ORCH_HTTP_THREADS="2", ORCH_HTTP_CONNECTION_LIMIT="200")
    idle = [socket.create_connection(address(server), timeout=5) for _ in range(40)]
    loris = SlowLoris(server, 40)
    try:
        for _ in range(5):
            answer, elapsed_s = timed_get(server.url + "/health")
            assert answer.status_code == 200
            assert elapsed_s < 2.0, f"a normal request waited {elapsed_s:.2f}s"
    finally:
        loris.close()
        for sock in idle:
            sock.close()


def test_a_full_connection_table_is_freed_by_the_request_read_timeout(
    servers: list[ServerProcess],
) -> None:
    server = serve(
        servers,
        ORCH_HTTP_CONNECTION_LIMIT="10",
        ORCH_HTTP_REQUEST_READ_TIMEOUT_S="1",
        ORCH_HTTP_IDLE_TIMEOUT_S="120",  # so only the read timeout can free them
    )
    loris = SlowLoris(server, 12)  # more than the limit: every slot is taken
    try:
        answer, elapsed_s = timed_get(server.url + "/health")
        assert answer.status_code == 200
        assert elapsed_s < 1.0 + 4.0, f"the normal request waited {elapsed_s:.2f}s"
        answers = loris.answers(timeout_s=10)
    finally:
        loris.close()
    for received in answers:
        head, _, body = received.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408 "), received[:200]
        assert b"application/problem+json" in head
        problem = json.loads(body)
        assert problem["status"] == 408 and problem["code"] == "request_timeout"
    assert any("took over 1s to arrive" in line for line in server.log)


def test_idle_connections_are_closed_after_the_idle_timeout(
    servers: list[ServerProcess],
) -> None:
    server = serve(servers, ORCH_HTTP_IDLE_TIMEOUT_S="1")
    silent = socket.create_connection(address(server), timeout=10)
    kept_alive = socket.create_connection(address(server), timeout=10)
    kept_alive.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    started = time.monotonic()
    assert silent.recv(1) == b""  # closed by the server, not timed out by us
    first = kept_alive.recv(65536)
    assert first.startswith(b"HTTP/1.1 200 ")
    while kept_alive.recv(65536):  # the rest of the answer, then the close
        pass
    assert time.monotonic() - started < 8.0
    silent.close()
    kept_alive.close()
    answer, _ = timed_get(server.url + "/health")
    assert answer.status_code == 200


def raw_request(server: ServerProcess, data: bytes) -> bytes:
    """Send ``data`` and read until the server closes; ``RESET`` if it reset the connection.

    A server that stops reading and closes with unread bytes pending makes the kernel
    send a reset, which may arrive before its answer is read.
    """
    chunks = []
    with socket.create_connection(address(server), timeout=10) as sock:
        try:
            sock.sendall(data)
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except (ConnectionResetError, BrokenPipeError):
            return b"".join(chunks) or RESET
    return b"".join(chunks)


RESET = b"<reset by the server>"


def test_oversized_headers_are_refused_and_the_server_carries_on(
    servers: list[ServerProcess],
) -> None:
    server = serve(servers, ORCH_HTTP_MAX_HEADER_BYTES="8192")
    over = requests.get(server.url + "/health", headers={"X-Pad": "x" * 10_000}, timeout=10)
    assert over.status_code == 431
    assert over.headers["Content-Type"] == "application/problem+json"
    assert over.json()["code"] == "headers_too_large"
    # Far over: waitress stops reading at twice the limit (its own plain 431) and
    # closes the connection; the server keeps serving everyone else.
    far = raw_request(
        server,
        b"GET /health HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"x" * 100_000 + b"\r\n\r\n",
    )
    assert far.startswith((b"HTTP/1.1 431 ", b"HTTP/1.0 431 ")) or far == RESET, far[:200]
    if far != RESET:  # waitress's own 431 has the app's shape and code too
        far_head, _, far_body = far.partition(b"\r\n\r\n")
        assert b"Content-Type: application/problem+json" in far_head
        assert json.loads(far_body)["code"] == "headers_too_large"
    assert requests.get(server.url + "/health", timeout=10).status_code == 200


def test_a_chunked_body_over_the_limit_is_413(servers: list[ServerProcess]) -> None:
    server = serve(servers, ORCH_HTTP_MAX_BODY_BYTES="2048")
    body = json.dumps({"agent_id": "a1", "agent_type": "i", "metadata": {"p": "x" * 3000}})

    def chunks() -> Iterator[bytes]:  # a generator body is sent chunked, no Content-Length
        data = body.encode()
        for offset in range(0, len(data), 500):
            yield data[offset : offset + 500]

    answer = requests.post(
        server.url + "/agents/register",
        data=chunks(),
        headers={"Content-Type": "application/json"},
        timeout=10,
    )
    assert answer.status_code == 413, answer.text
    assert answer.json()["code"] == "payload_too_large"
    assert requests.get(server.url + "/agents", timeout=10).json()["total"] == 0


def read_answer(sock: socket.socket) -> tuple[bytes, dict[str, Any]]:
    """Read one answer whose body is JSON (by its Content-Length): ``(head, body)``."""
    received = b""
    while b"\r\n\r\n" not in received:
        chunk = sock.recv(65536)
        assert chunk, f"closed before an answer: {received[:200]!r}"
        received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))  # type: ignore[union-attr]
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "closed in the middle of the answer"
        body += chunk
    return head, json.loads(body[:length])


def register_request(length: int, extra_headers: bytes = b"") -> bytes:
    """The head of a POST /agents/register declaring a body of ``length`` bytes."""
    return (
        b"POST /agents/register HTTP/1.1\r\nHost: x\r\n"
        b"Content-Type: application/json\r\n"
        + extra_headers
        + f"Content-Length: {length}\r\n\r\n".encode()
    )


def register_body(length: int) -> bytes:
    """A valid register body of exactly ``length`` bytes."""
    empty = json.dumps({"agent_id": "a1", "agent_type": "i", "metadata": {"p": ""}})
    body = empty.replace('"p": ""', '"p": "' + "x" * (length - len(empty)) + '"').encode()
    assert len(body) == length
    return body


def test_a_declared_body_over_the_limit_is_refused_unread_as_problem_json(
    servers: list[ServerProcess],
) -> None:
    server = serve(servers, ORCH_HTTP_MAX_BODY_BYTES="2048")
    for expect in (b"", b"Expect: 100-continue\r\n"):
        with socket.create_connection(address(server), timeout=10) as sock:
            sock.sendall(register_request(2049, expect))  # the body is never sent
            head, problem = read_answer(sock)
            # No "100 Continue" first: the client must not be invited to send it.
            assert head.startswith(b"HTTP/1.1 413 "), head
            assert b"Content-Type: application/problem+json" in head
            assert b"Connection: close" in head
            assert problem["status"] == 413 and problem["code"] == "payload_too_large"
            assert problem["type"].endswith("/payload_too_large")
            assert "the limit is 2048" in problem["detail"], problem
            assert sock.recv(1) == b""  # closed: the unsent body is not waited for
    # Exactly the limit is still read and served, on the same server.
    with socket.create_connection(address(server), timeout=10) as sock:
        sock.sendall(register_request(2048) + register_body(2048))
        head, answer = read_answer(sock)
    assert head.startswith(b"HTTP/1.1 200 "), (head, answer)
    assert requests.get(server.url + "/agents", timeout=10).json()["total"] == 1


def test_a_chunked_body_is_refused_as_problem_json_once_over_the_limit(
    servers: list[ServerProcess],
) -> None:
    server = serve(servers, ORCH_HTTP_MAX_BODY_BYTES="2048")
    head = (
        b"POST /agents/register HTTP/1.1\r\nHost: x\r\n"
        b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    chunk = b"200\r\n" + b" " * 0x200 + b"\r\n"  # 512 bytes of JSON whitespace
    with socket.create_connection(address(server), timeout=10) as sock:
        sock.sendall(head)
        for _ in range(4):  # 2076 bytes, framing included: just over the limit
            assert not select.select([sock], [], [], 0)[0], "answered under the limit"
            sock.sendall(chunk)
        # The body is unfinished (no last chunk) and nothing more is sent: an answer
        # now is the server's refusal at the limit, not after reading it all.
        answer_head, problem = read_answer(sock)
        assert sock.recv(1) == b""
    assert answer_head.startswith(b"HTTP/1.1 413 "), answer_head
    assert b"Content-Type: application/problem+json" in answer_head
    assert problem["status"] == 413 and problem["code"] == "payload_too_large"
    assert problem["detail"] == "the body is over the limit of 2048 bytes"
    assert requests.get(server.url + "/agents", timeout=10).json()["total"] == 0


def test_a_malformed_request_is_refused_as_problem_json(servers: list[ServerProcess]) -> None:
    server = serve(servers)
    answer = raw_request(
        server,
        b"POST /agents/register HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"zz\r\n{}\r\n0\r\n\r\n",  # "zz" is not a chunk size
    )
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 "), answer[:200]
    assert b"Content-Type: application/problem+json" in head
    problem = json.loads(body)
    assert problem["status"] == 400 and problem["code"] == "invalid"
    assert problem["detail"] == "Invalid chunk size"


def test_the_server_log_never_shows_tokens(servers: list[ServerProcess]) -> None:
    server = serve(
        servers,
        ORCH_ADMIN_TOKEN=ADMIN_TOKEN,
        ORCH_ACCESS_LOG="true",
        LOG_LEVEL="DEBUG",
        ORCH_AUTH_MAX_FAILURES="3",
    )
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    registered = requests.post(
        server.url + "/agents/register",
        json={"agent_id": "a1", "agent_type": "implementation"},
        headers=admin,
        timeout=10,
    )
    token = registered.json()["token"]
    url = server.url
    requests.post(f"{url}/agents/a1/start", headers=admin, timeout=10)
    beat = requests.post(
        f"{url}/agents/a1/heartbeat", headers={"Authorization": f"Bearer {token}"}, timeout=10
    )
    assert beat.status_code == 200
    guesses = [token[:-1] + "x", ADMIN_TOKEN + "x", "guess"]
    for guessed in guesses:
        requests.get(f"{url}/stats", headers={"Authorization": f"Bearer {guessed}"}, timeout=10)
    assert requests.get(f"{url}/stats", headers=admin, timeout=10).status_code == 429
    assert server.stop() == 0
    log = "".join(server.log)
    assert "orch.access" in log and "refused for" in log
    for secret in [token, ADMIN_TOKEN, *guesses]:
        assert secret not in log
        assert hash_token(secret) not in log


def test_a_newline_in_a_path_cannot_forge_a_log_line(servers: list[ServerProcess]) -> None:
    server = serve(servers, ORCH_ACCESS_LOG="true")
    forged = "2030-01-01 00:00:00,000 WARNING orch.http: FORGED"
    answer = requests.get(server.url + "/agents/x%0A" + forged.replace(" ", "%20"), timeout=10)
    assert answer.status_code == 400
    wait_until(lambda: any("orch.access" in line and "x\\x0a" in line for line in server.log))
    assert not any(line.startswith(forged[:10]) and "FORGED" in line for line in server.log)


def test_the_server_gives_waitress_its_limits() -> None:
    settings = Settings(
        port=0,
        http_connection_limit=42,
        http_idle_timeout_s=7,
        http_max_header_bytes=4096,
        http_max_body_bytes=8192,
    )
    server = Server(Orchestrator(settings), settings)
    listener = server.waitress.listener
    try:
        adj = listener.adj
        assert adj.connection_limit == 42
        assert adj.channel_timeout == 7 and adj.cleanup_interval <= 7
        # Headers: a backstop at twice the app's limit, which answers first with its
        # size. Bodies: the app's limit exactly (waitress refuses at >=, hence + 1),
        # so waitress refuses a declared one before reading it.
        assert adj.max_request_header_size == 2 * 4096
        assert adj.max_request_body_size == 8192 + 1
        assert adj.clear_untrusted_proxy_headers is True
        assert listener.channel_class is GuardedChannel
        assert GuardedChannel.error_task_class is ProblemErrorTask
    finally:
        server.waitress.close()


def test_a_short_admin_token_is_warned_about_at_start_up(servers: list[ServerProcess]) -> None:
    server = serve(servers, ORCH_ADMIN_TOKEN="short")
    assert server.stop() == 0
    warnings = [line for line in server.log if "ORCH_ADMIN_TOKEN is only 5 characters" in line]
    assert warnings and "short" not in warnings[0].replace("ORCH_ADMIN_TOKEN is only", "")
