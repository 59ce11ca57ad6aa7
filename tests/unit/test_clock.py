"""orch/clock.py: deadlines on the monotonic clock, wall time only for people."""

from __future__ import annotations

import threading

import pytest
from freezegun import freeze_time

from orch.clock import ManualClock, SystemClock, wall_at


def test_a_manual_clock_moves_only_when_told_and_both_clocks_together():
    clock = ManualClock(start=1_000.0)
    wall, mono = clock.time(), clock.monotonic()
    assert (clock.time(), clock.monotonic()) == (wall, mono)  # no time passes by itself
    clock.advance(2.5)
    assert (clock.time(), clock.monotonic()) == (wall + 2.5, mono + 2.5)


def test_time_passing_cannot_be_negative():
    clock = ManualClock()
    with pytest.raises(ValueError, match="jump_wall"):
        clock.advance(-1)
    assert clock.monotonic() == 1000.0


def test_a_wall_clock_jump_moves_no_deadline():
    clock = ManualClock(start=5_000.0)
    deadline = clock.monotonic() + 30
    clock.jump_wall(-3_600)  # an NTP step back
    assert clock.time() == 1_400.0
    assert clock.monotonic() == deadline - 30  # the deadline is as far as it was
    clock.jump_wall(7_200)
    assert clock.time() == 8_600.0 and clock.monotonic() == deadline - 30


def test_a_deadline_is_shown_in_wall_time_as_far_ahead_as_it_is():
    clock = ManualClock(start=1_700_000_000.0)
    deadline = clock.monotonic() + 45
    assert wall_at(clock, deadline) == 1_700_000_045.0
    clock.advance(15)
    assert wall_at(clock, deadline) == 1_700_000_045.0
    clock.jump_wall(100)  # shown where the new wall clock will be when it runs out
    assert wall_at(clock, deadline) == 1_700_000_145.0


def test_many_threads_advancing_lose_no_step():
    clock = ManualClock()
    start = clock.monotonic()

    def step() -> None:
        for _ in range(1_000):
            clock.advance(1)

    threads = [threading.Thread(target=step) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert clock.monotonic() == start + 4_000


def test_the_system_clock_reads_time_at_call_time_so_freezegun_reaches_it():
    clock = SystemClock()
    with freeze_time("2030-01-01 00:00:00"):
        assert clock.time() == 1_893_456_000.0
        frozen = clock.monotonic()
        assert clock.monotonic() == frozen
    assert clock.time() < 1_893_456_000.0
