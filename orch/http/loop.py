"""Waitress's event loop on epoll, asking only the connections that may have changed.

Why: waitress's own loop (``wasyncore.poll2``) asks *every* connection ``readable()``
and ``writable()`` and registers it anew on every turn. Remote agents keep their
connection open between heartbeats, so with a fleet connected that is thousands of
Python calls per turn, and there is a turn per request or more: with 100 connections
the loop was a third of the server's CPU in the HTTP task cycle (bench/README.md), and
it grows with the fleet.

Most connections are idle: nothing in flight, nothing to send, only waiting to read.
An idle connection's interest (read) can change only through what this loop does
itself — reading from it, the server's maintenance closing it, the slow-request sweep
— never from a worker thread, which only touches connections with a request in
flight. So idle connections stay registered with epoll (level-triggered, read) and
are not asked again until an event or one of those steps touches them; connections
with a request in flight, output or a pending close are asked every turn, exactly as
waitress would. A worker that finishes pulls waitress's trigger, so the loop wakes to
ask its connection again, as it does under waitress's loop.
"""

from __future__ import annotations

import contextlib
import select
from typing import Any

from waitress import wasyncore
from waitress.channel import HTTPChannel

READ = select.POLLIN | select.POLLPRI
WRITE = select.POLLOUT
#: New connections taken in one turn at most, so a flood cannot stall the others.
ACCEPTS_PER_TURN = 64


class WatchedMap(dict):  # type: ignore[type-arg]
    """Waitress's socket map (fd -> dispatcher), noting which fds came or went."""

    def __init__(self) -> None:
        super().__init__()
        self.changed: set[int] = set()

    def __setitem__(self, fd: int, dispatcher: Any) -> None:
        super().__setitem__(fd, dispatcher)
        self.changed.add(fd)

    def __delitem__(self, fd: int) -> None:
        super().__delitem__(fd)
        self.changed.add(fd)

    def pop(self, fd: int, *default: Any) -> Any:
        self.changed.add(fd)
        return super().pop(fd, *default)


def interest(dispatcher: Any) -> int:
    """The poll flags ``wasyncore.poll2`` would register ``dispatcher`` with."""
    flags = READ if dispatcher.readable() else 0
    if dispatcher.writable() and not dispatcher.accepting:
        flags |= WRITE
    return flags


class EpollLoop:
    """Turns of waitress's loop over ``socket_map`` (a ``WatchedMap``), on epoll."""

    def __init__(self, socket_map: WatchedMap, server: Any) -> None:
        self._map = socket_map
        self._server = server
        self._epoll = select.epoll()
        self._watched: dict[int, tuple[Any, int]] = {}  # fd -> (dispatcher, flags), flags != 0
        self._busy: set[int] = set()  # fds asked every turn: not idle
        self._dormant: set[int] = set()  # watched, but wanting nothing now
        self._full_pass = True
        #: How many times a connection was asked for its interest, and how many turns
        #: the loop made (tests, profiling).
        self.asked = 0
        self.turns = 0

    def touch(self, fd: int) -> None:
        """Ask this connection again next turn: something outside an event changed it."""
        self._busy.add(fd)

    def close(self) -> None:
        self._epoll.close()

    def poll(self, timeout_s: float) -> None:
        """One turn: update what epoll watches, wait up to ``timeout_s``, handle events."""
        self.turns += 1
        cleanup_due = getattr(self._server, "next_channel_cleanup", None)
        fds = self._busy | self._map.changed
        self._map.changed.clear()
        if self._full_pass:
            fds |= set(self._map) | set(self._watched)
            self._full_pass = False
        for fd in fds:
            self._update(fd)
        if getattr(self._server, "next_channel_cleanup", None) != cleanup_due:
            # The server's maintenance ran (inside its readable()) and may have marked
            # idle connections to close: ask them all once more, now.
            for fd in list(self._map):
                self._update(fd)
        try:
            events = self._epoll.poll(timeout_s)
        except InterruptedError:
            return
        for fd, flags in events:
            dispatcher = self._map.get(fd)
            if dispatcher is None:
                continue
            if fd in self._dormant:
                # It wanted nothing when last asked (see ``_update``); most often its
                # answer has gone out since and this is its client's next request.
                self._update(fd)
                if fd in self._dormant:  # still nothing: poll2 would not report it
                    self._unwatch(fd)
                    continue
                flags &= self._watched[fd][1] | select.POLLHUP | select.POLLERR
                if not flags:
                    continue
            self._busy.add(fd)  # what it handles may change its interest
            if dispatcher is self._server:
                self._accept(flags)
            else:
                wasyncore.readwrite(dispatcher, flags)

    def _accept(self, flags: int) -> None:
        """Take every waiting connection (up to ``ACCEPTS_PER_TURN``), not one a turn.

        Waitress accepts one connection per readiness event. Under load a turn of the
        loop takes tens of milliseconds, so a burst of new connections (a fleet coming
        back after a restart) waited in the backlog, with their requests already sent,
        for one turn each: seconds, for the last of a few hundred.
        """
        for _ in range(ACCEPTS_PER_TURN):
            before = len(self._map)
            wasyncore.readwrite(self._server, flags)
            if len(self._map) == before or not self._server.readable():
                return

    def _update(self, fd: int) -> None:
        dispatcher = self._map.get(fd)
        watched = self._watched.get(fd)
        if dispatcher is None:
            self._busy.discard(fd)
            if watched is not None:
                self._unwatch(fd)
            return
        self.asked += 1
        flags = interest(dispatcher)
        if watched is not None and watched[0] is not dispatcher:
            self._unwatch(fd)  # the fd number was reused by a new connection
            watched = None
        if flags and watched is None:
            self._epoll.register(fd, flags)
            self._watched[fd] = (dispatcher, flags)
        elif flags and watched is not None and watched[1] != flags:
            self._epoll.modify(fd, flags)
            self._watched[fd] = (dispatcher, flags)
        if not flags and watched is not None:
            # It wants nothing while a worker answers it. poll2 leaves such a connection
            # out; unregistering it now and registering it again when the answer is sent
            # would cost two epoll_ctl calls a request, each giving up the GIL. So it
            # stays registered, dormant, and is unregistered only if epoll reports it.
            self._dormant.add(fd)
        else:
            self._dormant.discard(fd)
        if isinstance(dispatcher, HTTPChannel) and flags == READ:
            self._busy.discard(fd)  # idle: only an event or ``touch`` changes that
        else:
            self._busy.add(fd)

    def _unwatch(self, fd: int) -> None:
        del self._watched[fd]
        self._dormant.discard(fd)
        with contextlib.suppress(OSError, ValueError):  # closed fds leave epoll by themselves
            self._epoll.unregister(fd)
