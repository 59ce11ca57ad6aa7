"""The waitress channel of ``orch/http/serve.py``: when the event loop polls it for writing."""

from __future__ import annotations

import socket
import types
from collections.abc import Iterator

import pytest
from waitress.adjustments import Adjustments
from waitress.channel import HTTPChannel

from orch.http.serve import GuardedChannel
from tests.conftest import wait_until


@pytest.fixture
def sockets() -> Iterator[tuple[socket.socket, socket.socket]]:
    ours, peer = socket.socketpair()
    yield ours, peer
    ours.close()
    peer.close()


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
    assert channel_with_answer_buffered(HTTPChannel, sockets[0]).writable()


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


def test_an_answer_leaves_in_one_send(server, monkeypatch) -> None:
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
