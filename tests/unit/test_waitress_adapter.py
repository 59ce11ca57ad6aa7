"""``orch/http/waitress_adapter.py``: what it relies on in waitress, and what it changes.

The first half checks the installed waitress against the adapter's table of the
internals it relies on (``WAITRESS_INTERNALS``): each must be there with the shape
the adapter uses, or the test names it and says what to do. The rest tests each
adaptation: the guarded channel, one send per answer, the epoll loop, and what
waitress cannot parse answered 400 on a real server.
"""

from __future__ import annotations

import configparser
import importlib
import inspect
import json
import logging
import re
import socket
import threading
import types
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
import requests
from packaging.version import Version

from tests.conftest import wait_until

INSTALLED = version("waitress")
ADAPTER = "orch/http/waitress_adapter.py"


def changed(name: str, use: str, detail: str) -> str:
    """The one failure message for a waitress that no longer has what the adapter uses."""
    return (
        f"waitress {INSTALLED} changed {name}, which {ADAPTER} relies on ({use}): {detail}. "
        "Check the adapter against it, then widen TESTED_WAITRESS there and the pin in setup.cfg"
    )


try:
    import waitress
    from waitress.adjustments import Adjustments
    from waitress.buffers import OverflowableBuffer
    from waitress.channel import HTTPChannel
    from waitress.parser import HTTPRequestParser
    from waitress.task import ErrorTask

    from orch.http import waitress_adapter
    from orch.http.serve import Server
    from orch.http.waitress_adapter import (
        TESTED_WAITRESS,
        WAITRESS_INTERNALS,
        EpollLoop,
        GuardedChannel,
        WatchedMap,
    )
except ImportError as exc:  # a class or module the adapter imports has moved
    pytest.fail(changed(str(exc.name), "it imports it", str(exc)), pytrace=False)

# -- The waitress the adapter was checked against -----------------------------------


def test_the_installed_waitress_is_in_the_tested_range() -> None:
    low, high = TESTED_WAITRESS
    assert Version(low) <= Version(INSTALLED) < Version(high), (
        f"waitress {INSTALLED} is outside the range {ADAPTER} was checked on "
        f"(>={low},<{high}): run tests/unit/test_waitress_adapter.py, check the adapter "
        "against what it names, then widen TESTED_WAITRESS there and the pin in setup.cfg"
    )


def test_setup_cfg_pins_the_tested_range() -> None:
    config = configparser.ConfigParser()
    config.read(Path(__file__).parents[2] / "setup.cfg")
    requirements = config["options"]["install_requires"].split()
    [pin] = [line for line in requirements if line.startswith("waitress")]
    low, high = TESTED_WAITRESS
    tested = f"waitress>={low},<{high}"
    assert pin == tested, (
        f"setup.cfg pins {pin}; {ADAPTER} was checked on {tested} (TESTED_WAITRESS)"
    )


# -- Every internal in the table, with its shape ------------------------------------

#: Where each owner named in ``WAITRESS_INTERNALS`` lives.
OWNERS = {
    "HTTPChannel": "waitress.channel:HTTPChannel",
    "ClientDisconnected": "waitress.channel:ClientDisconnected",
    "HTTPRequestParser": "waitress.parser:HTTPRequestParser",
    "Task": "waitress.task:Task",
    "ErrorTask": "waitress.task:ErrorTask",
    "WSGITask": "waitress.task:WSGITask",
    "ThreadedTaskDispatcher": "waitress.task:ThreadedTaskDispatcher",
    "Error": "waitress.utilities:Error",
    "BaseWSGIServer": "waitress.server:BaseWSGIServer",
    "dispatcher": "waitress.wasyncore:dispatcher",
    "wasyncore": "waitress.wasyncore",
    "OverflowableBuffer": "waitress.buffers:OverflowableBuffer",
}
#: ``Owner[.member][(params)][: type]``, as the table writes them.
SPEC = re.compile(
    r"(?P<owner>\w+)(?:\.(?P<member>\w+))?(?:\((?P<params>[^)]*)\))?(?:: (?P<type>\w+))?"
)
TYPES = {"bool": bool, "int": int, "str": str, "list": list, "dict": dict}


def each_internal_once() -> list[tuple[str, str]]:
    """``(spec, uses)``: each internal of the table once, with every adaptation using it."""
    uses: dict[str, list[str]] = {}
    for use, specs in WAITRESS_INTERNALS.items():
        for spec in specs:
            uses.setdefault(spec, []).append(use)
    return [(spec, "; ".join(by)) for spec, by in uses.items()]


CASES = each_internal_once()


def resolve(owner: str) -> Any:
    module_name, _, attribute = OWNERS[owner].partition(":")
    found: Any = importlib.import_module(module_name)
    return getattr(found, attribute) if attribute else found


def hello_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
    return [b"hello"]


@pytest.fixture(scope="module")
def live() -> Iterator[dict[str, Any]]:
    """One live object of each owner, built as the adapter's code meets them."""
    server = waitress.create_server(hello_app, map={}, host="127.0.0.1", port=0, threads=1)
    ours, peer = socket.socketpair()
    channel = HTTPChannel(server, ours, ("127.0.0.1", 1), server.adj, map={})
    parsed = HTTPRequestParser(server.adj)
    parsed.received(b"POST /tasks HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
    refused = HTTPRequestParser(server.adj)
    refused.received(b"GARBAGE\r\n\r\n")
    objects = {
        "HTTPChannel": channel,
        "HTTPRequestParser": parsed,
        "Task": ErrorTask(channel, refused),
        "Error": refused.error,
        "BaseWSGIServer": server,
        "ThreadedTaskDispatcher": server.task_dispatcher,
        "OverflowableBuffer": OverflowableBuffer(server.adj.outbuf_overflow),
    }
    try:
        yield objects
    finally:
        channel.close()
        peer.close()
        server.task_dispatcher.shutdown(timeout=1)
        server.close()


def parameters(function: Any) -> list[str]:
    names = [
        parameter.name
        for parameter in inspect.signature(function).parameters.values()
        if parameter.kind not in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD)
    ]
    return names[1:] if names[:1] == ["self"] else names


@pytest.mark.parametrize(("spec", "use"), CASES, ids=[f"{spec}" for spec, _ in CASES])
def test_each_internal_the_adapter_relies_on_is_there_as_it_expects(
    spec: str, use: str, live: dict[str, Any]
) -> None:
    shape = SPEC.fullmatch(spec)
    assert shape is not None and shape["owner"] in OWNERS, f"{spec!r}: write it as OWNERS knows"
    owner, member = shape["owner"], shape["member"]
    name = f"{owner}.{member}" if member else owner
    try:
        cls = resolve(owner)
    except (ImportError, AttributeError) as exc:
        pytest.fail(changed(name, use, f"{OWNERS[owner]} is gone ({exc})"), pytrace=False)
    if member is None:
        if not inspect.isclass(cls):
            pytest.fail(changed(name, use, "it is no longer a class"), pytrace=False)
        return
    holder = live.get(owner, cls)
    if not hasattr(holder, member):
        pytest.fail(changed(name, use, f"{owner} has no {member} any more"), pytrace=False)
    value = getattr(holder, member)
    if shape["params"] is not None:
        expected = [p.strip() for p in shape["params"].split(",") if p.strip()]
        if not callable(value) or parameters(value) != expected:
            found = parameters(value) if callable(value) else "not callable"
            detail = f"it takes {found}, not {expected}"
            pytest.fail(changed(name, use, detail), pytrace=False)
    elif shape["type"] is not None and not isinstance(value, TYPES[shape["type"]]):
        detail = f"it is a {type(value).__name__}, not a {shape['type']}"
        pytest.fail(changed(name, use, detail), pytrace=False)


def names_in_the_docstring() -> set[str]:
    """``Owner`` and ``Owner.member`` for every name in the doc's list of internals."""
    doc = waitress_adapter.__doc__ or ""
    section = doc.partition("Waitress internals relied on")[2]
    names: set[str] = set()
    for bullet in re.split(r"\n- ", section)[1:]:
        head, _, members = bullet.partition(":")
        owner = re.search(r"``(\w+)``", head).group(1)  # type: ignore[union-attr]
        names.add(owner)
        names.update(f"{owner}.{member}" for member in re.findall(r"``(\w+)``", members))
    return names


def test_the_docstring_lists_exactly_what_the_table_holds() -> None:
    in_table: set[str] = set()
    for spec, _ in CASES:
        shape = SPEC.fullmatch(spec)
        assert shape is not None, spec
        in_table.add(shape["owner"])
        if shape["member"]:
            in_table.add(f"{shape['owner']}.{shape['member']}")
    in_doc = names_in_the_docstring()
    assert in_doc == in_table, (
        f"{ADAPTER}: its docstring's list and WAITRESS_INTERNALS disagree; "
        f"only in the docstring: {sorted(in_doc - in_table)}, "
        f"only in the table: {sorted(in_table - in_doc)}"
    )


# -- What waitress does that the adapter builds on ----------------------------------


@pytest.fixture
def sockets() -> Iterator[tuple[socket.socket, socket.socket]]:
    ours, peer = socket.socketpair()
    yield ours, peer
    ours.close()
    peer.close()


def test_waitress_hands_the_channel_to_add_task_and_wakes_the_loop_after_service(
    sockets: tuple[socket.socket, socket.socket],
) -> None:
    # InlineAnswers takes add_task and pull_trigger: it is given channels, one per run
    # of requests, the next pipelined one by service() itself, then the trigger.
    use = "answers on the loop thread (InlineAnswers)"
    server = waitress.create_server(hello_app, map={}, host="127.0.0.1", port=0, threads=1)
    calls: list[Any] = []
    server.add_task = calls.append
    server.pull_trigger = lambda: calls.append("trigger")
    try:
        channel = HTTPChannel(server, sockets[0], ("127.0.0.1", 1), server.adj, map={})
        channel.received(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n")
        assert calls == [channel], changed(
            "HTTPChannel.received", use, f"two pipelined requests made {calls}, not [channel]"
        )
        assert [r.path for r in channel.requests] == ["/a", "/b"], changed(
            "HTTPChannel.requests", use, "complete requests no longer wait there in order"
        )
        calls.clear()
        channel.service()
        assert calls == [channel, "trigger"], changed(
            "HTTPChannel.service", use, f"after the first answer it called {calls}"
        )
        assert [r.path for r in channel.requests] == ["/b"]
    finally:
        server.task_dispatcher.shutdown(timeout=1)
        server.close()


def test_a_request_waitress_cannot_parse_is_complete_with_an_error() -> None:
    # Then it has no command or path; the adapter must look at ``error`` first.
    use = "answers on the loop thread (InlineAnswers), ProblemErrorTask"
    for line in (b"GARBAGE", b"\x00GET / HTTP/1.1", b"GET / HTTP/1.1\r\nHost x"):
        request = HTTPRequestParser(Adjustments())
        request.received(line + b"\r\n\r\n")
        assert request.completed and getattr(request.error, "code", None) == 400, changed(
            "HTTPRequestParser.error", use, f"{line!r} did not complete with a 400 error"
        )


def test_the_socket_map_sees_every_connection_come_and_go(
    sockets: tuple[socket.socket, socket.socket],
) -> None:
    use = "the epoll loop (EpollLoop, WatchedMap)"
    socket_map = WatchedMap()
    server = types.SimpleNamespace(active_channels={})  # all a channel's constructor needs
    channel = HTTPChannel(server, sockets[0], ("127.0.0.1", 1), Adjustments(), map=socket_map)
    fd = sockets[0].fileno()  # the key waitress files the channel under
    assert socket_map.changed == {fd}, changed("dispatcher.add_channel", use, "not seen")
    socket_map.changed.clear()
    channel.close()
    assert fd not in socket_map and socket_map.changed == {fd}, changed(
        "dispatcher.del_channel", use, "a closed connection left the map unseen"
    )


def test_the_servers_maintenance_runs_inside_readable() -> None:
    server = waitress.create_server(hello_app, map={}, host="127.0.0.1", port=0, threads=1)
    try:
        before = server.next_channel_cleanup
        server.readable()
        assert server.next_channel_cleanup != before, changed(
            "BaseWSGIServer.next_channel_cleanup",
            "the epoll loop (EpollLoop, WatchedMap)",
            "readable() no longer moves it when the maintenance runs",
        )
    finally:
        server.task_dispatcher.shutdown(timeout=1)
        server.close()


# -- Guarded channels and one send per answer ---------------------------------------


def channel_with_answer_buffered(cls: type[HTTPChannel], sock: socket.socket) -> HTTPChannel:
    """A channel a worker is answering: its request in service, a few bytes buffered."""
    server = types.SimpleNamespace(active_channels={})  # all a channel's constructor needs
    channel = cls(server, sock, ("127.0.0.1", 1), Adjustments(), map={})
    channel.requests = [object()]  # type: ignore[list-item]
    channel.outbufs[-1].append(b"HTTP/1.1 200 OK\r\n")
    channel.total_outbufs_len = len(b"HTTP/1.1 200 OK\r\n")
    return channel


def test_waitress_itself_polls_a_channel_whose_worker_is_still_writing(sockets) -> None:
    # The behaviour GuardedChannel exists to change: with this, the loop spins.
    assert channel_with_answer_buffered(HTTPChannel, sockets[0]).writable(), changed(
        "HTTPChannel.writable", "guarded channels (GuardedChannel)", "the loop no longer spins"
    )


def test_a_channel_being_answered_is_not_polled_for_writing(sockets) -> None:
    channel = channel_with_answer_buffered(GuardedChannel, sockets[0])
    assert not channel.writable()


def test_the_loop_flushes_once_the_worker_is_done(sockets) -> None:
    channel = channel_with_answer_buffered(GuardedChannel, sockets[0])
    channel.requests = []
    assert channel.writable()


@pytest.mark.parametrize("flag", ["will_close", "close_when_flushed"])
def test_a_closing_channel_is_polled_for_writing(sockets, flag: str) -> None:
    channel = channel_with_answer_buffered(GuardedChannel, sockets[0])
    setattr(channel, flag, True)
    assert channel.writable()


def test_a_buffer_past_the_high_watermark_is_flushed_by_the_loop(sockets) -> None:
    # A worker past the watermark waits for the loop to drain it; the loop must look.
    channel = channel_with_answer_buffered(GuardedChannel, sockets[0])
    channel.total_outbufs_len = channel.adj.outbuf_high_watermark + 1
    assert channel.writable()


def test_an_answer_leaves_in_one_send(server: Server, monkeypatch) -> None:
    sends: list[int] = []
    real_send = GuardedChannel.send

    def counting_send(self, data, do_close=True):
        sent = real_send(self, data, do_close)
        sends.append(sent)
        return sent

    monkeypatch.setattr(GuardedChannel, "send", counting_send)
    with socket.create_connection((server.host, server.port), timeout=5) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            answer += sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 200 OK")
    # The loop thread records the send after the bytes are on the wire, so the
    # answer can reach us first.
    wait_until(lambda: sends, message="the loop recorded its send")
    assert len(sends) == 1 and sends[0] == len(answer)  # head and body together


# -- The epoll loop: it asks only connections that may have changed ----------------


def connect(server: Server) -> socket.socket:
    return socket.create_connection((server.host, server.port), timeout=5)


def get(sock: socket.socket, path: str = "/health") -> bytes:
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    return read_answer(sock)


def read_answer(sock: socket.socket) -> bytes:
    """The status line of the next answer on ``sock``, read whole."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(
        next(
            line for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")
        ).split(b":")[1]
    )
    while len(body) < length:
        body += sock.recv(65536)
    return head.split(b"\r\n")[0]


def test_idle_connections_are_not_asked_on_every_turn(server: Server) -> None:
    loop = server.waitress.epoll
    assert isinstance(loop, EpollLoop)
    idle = [connect(server) for _ in range(50)]
    active = connect(server)
    try:
        assert get(active) == b"HTTP/1.1 200 OK"
        wait_until(
            lambda: len(server.waitress.listener.active_channels) == 51, message="all accepted"
        )
        get(active)  # the idle ones have been seen once, as new
        before = loop.asked
        for _ in range(20):
            assert get(active) == b"HTTP/1.1 200 OK"
        # waitress's own loop asks all 51 connections every turn, at least once a request
        assert loop.asked - before < 20 * 10
    finally:
        for sock in [*idle, active]:
            sock.close()


def test_idle_connections_still_answer_when_they_speak(server: Server) -> None:
    idle = [connect(server) for _ in range(20)]
    try:
        for sock in reversed(idle):
            assert get(sock) == b"HTTP/1.1 200 OK"
    finally:
        for sock in idle:
            sock.close()


def test_a_closed_connection_number_reused_by_a_new_one_is_served(server: Server) -> None:
    for _ in range(30):  # the kernel hands the freed descriptor number to the next one
        sock = connect(server)
        assert get(sock) == b"HTTP/1.1 200 OK"
        sock.close()
    wait_until(lambda: not server.waitress.listener.active_channels, message="closed ones are gone")
    assert requests.get(f"http://{server.host}:{server.port}/health", timeout=5).ok


def test_a_burst_of_new_connections_is_accepted_in_a_few_turns(server: Server) -> None:
    loop = server.waitress.epoll
    assert isinstance(loop, EpollLoop)
    listener = server.waitress.listener
    released = threading.Event()
    readable = listener.readable

    def paused() -> bool:  # holds the loop in its turn while the burst arrives
        released.wait(10)
        return readable()

    listener.readable = paused
    burst: list[socket.socket] = []
    try:
        wait_until(lambda: loop.turns > 0, message="the loop turns")
        # The kernel completes each handshake before any accept. The requests go out
        # only after the count: each answer wakes the loop for a turn of its own, and on
        # a loaded machine those turns would land inside the count (a flaky bound).
        burst = [connect(server) for _ in range(40)]
        before = loop.turns
    finally:
        listener.readable = readable
        released.set()
    try:
        wait_until(lambda: len(listener.active_channels) == 40, message="all accepted")
        assert loop.turns - before <= 3  # waitress alone: a turn for each connection
        for sock in burst:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        for sock in burst:
            assert read_answer(sock) == b"HTTP/1.1 200 OK"
    finally:
        for sock in burst:
            sock.close()


# -- What waitress cannot parse -----------------------------------------------------

#: Request heads plain waitress answers ``400 Bad Request``.
MALFORMED = {
    "garbage": b"GARBAGE\r\n\r\n",
    "NUL bytes first": b"\x00\x00\x00\x00GET /health HTTP/1.1\r\n\r\n",
    "a bad HTTP version": b"GET /health HTTP/x.y\r\nHost: x\r\n\r\n",
    "a truncated HTTP version": b"GET /health HTTP/1.\r\nHost: x\r\n\r\n",
    "no path": b"GET\r\nHost: x\r\n\r\n",
    "a lowercase method": b"get /health HTTP/1.1\r\nHost: x\r\n\r\n",
    "a word after the version": b"GET /health HTTP/1.1 extra\r\nHost: x\r\n\r\n",
    "a header line with no colon": b"GET /health HTTP/1.1\r\nHost x\r\n\r\n",
    "a hot route, a bad header": b"POST /tasks HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
    "a hot route, a bad version": b"POST /tasks/assign HTTP/1.x\r\nHost: x\r\n\r\n",
}


def answer_to(server: Server, data: bytes) -> bytes:
    """Send ``data`` on a new connection and read until the server closes it."""
    chunks = []
    with connect(server) as sock:
        sock.sendall(data)
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_what_waitress_cannot_parse_is_answered_400_as_problem_json(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    assert server.waitress.inline is not None  # answers on the loop thread are on
    caplog.set_level(logging.INFO)
    for what, data in MALFORMED.items():
        answer = answer_to(server, data)
        head, _, body = answer.partition(b"\r\n\r\n")
        assert re.match(rb"HTTP/1\.[01] 400 Bad Request\r\n", head), (what, answer[:300])
        assert b"Content-Type: application/problem+json" in head, (what, head)
        assert b"Connection: close" in head, (what, head)
        problem = json.loads(body)
        assert problem["status"] == 400 and problem["code"] == "invalid", (what, problem)
        assert problem["type"].endswith("/invalid") and problem["detail"], (what, problem)
    uncaptured = [r.getMessage() for r in caplog.records if "uncaptured" in r.getMessage()]
    assert not uncaptured, uncaptured
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    assert requests.get(f"http://{server.host}:{server.port}/health", timeout=5).ok
