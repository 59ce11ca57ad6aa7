"""``orch/http/loop.py``: the event loop asks only connections that may have changed."""

from __future__ import annotations

import socket
import threading

import requests

from orch.http.loop import EpollLoop
from orch.http.serve import Server
from tests.conftest import wait_until


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
    loop = server._loop
    assert isinstance(loop, EpollLoop)
    idle = [connect(server) for _ in range(50)]
    active = connect(server)
    try:
        assert get(active) == b"HTTP/1.1 200 OK"
        wait_until(lambda: len(server._waitress.active_channels) == 51, message="all accepted")
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
    wait_until(lambda: not server._waitress.active_channels, message="closed ones are gone")
    assert requests.get(f"http://{server.host}:{server.port}/health", timeout=5).ok


def test_a_burst_of_new_connections_is_accepted_in_a_few_turns(server: Server) -> None:
    loop = server._loop
    assert isinstance(loop, EpollLoop)
    listener = server._waitress
    released = threading.Event()
    readable = listener.readable

    def paused() -> bool:  # holds the loop in its turn while the burst arrives
        released.wait(10)
        return readable()

    listener.readable = paused
    burst: list[socket.socket] = []
    try:
        wait_until(lambda: loop.turns > 0, message="the loop turns")
        # The kernel completes each handshake and takes each request before any accept.
        burst = [connect(server) for _ in range(40)]
        for sock in burst:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        before = loop.turns
    finally:
        listener.readable = readable
        released.set()
    try:
        wait_until(lambda: len(listener.active_channels) == 40, message="all accepted")
        assert loop.turns - before <= 3  # waitress alone: a turn for each connection
        for sock in burst:
            assert read_answer(sock) == b"HTTP/1.1 200 OK"
    finally:
        for sock in burst:
            sock.close()
