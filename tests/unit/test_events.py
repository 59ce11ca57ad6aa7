"""orch/events.py through the facade: ordered, gap-free, and prompt long-polls."""

from __future__ import annotations

import json
import logging
import threading
import time

from orch.events import Events
from orch.logs import JsonFormatter, log_event


def test_lifecycle_events_arrive_in_order_without_gaps(orch, clock):
    orch.register_agent("a", "implementation", ["x"])
    orch.start_agent("a")
    orch.assign_task({}, task_id="t", agent_id="a")
    orch.complete_task("a", "t")
    grant = orch.acquire_lock("a", "r", ttl_s=5)
    clock.advance(6)
    orch.tick()
    orch.stop_agent("a")
    feed = orch.events(0)["events"]
    seqs = [e["seq"] for e in feed]
    assert seqs == list(range(1, len(seqs) + 1))
    types = [e["type"] for e in feed]
    expected = [
        "agent.registered",
        "agent.started",
        "task.queued",
        "task.assigned",
        "task.completed",
        "lock.granted",
        "lock.expired",
        "agent.stopped",
    ]
    positions = [types.index(t) for t in expected]
    assert positions == sorted(positions)
    assert feed[types.index("lock.granted")]["fencing_token"] == grant["fencing_token"]


def test_a_long_poll_returns_as_soon_as_an_event_arrives(live_orch):
    after = live_orch.events(0)["next"]
    answers = []
    poller = threading.Thread(target=lambda: answers.append(live_orch.events(after, wait_s=30)))
    started = time.monotonic()
    poller.start()
    live_orch.register_agent("late", "implementation")
    poller.join(10)
    assert time.monotonic() - started < 5  # far below the 30 s it was allowed to wait
    assert [e["type"] for e in answers[0]["events"]] == ["agent.registered"]


def test_a_closed_feed_releases_waiting_readers(clock):
    events = Events(clock)
    answers = []
    reader = threading.Thread(target=lambda: answers.append(events.since(0, wait_s=30)))
    reader.start()
    events.close()
    reader.join(5)
    assert answers == [[]]


def test_events_log_as_json_with_their_ids(caplog, clock):
    events = Events(clock)
    events.subscribe(log_event)
    with caplog.at_level(logging.INFO, logger="orch.events"):
        events.emit("agent.lost", agent_id="a7", missed_intervals=10.0)
        events.emit("task.assigned", task_id="t1", agent_id="a7")  # DEBUG: not at INFO
    assert len(caplog.records) == 1
    parsed = json.loads(JsonFormatter().format(caplog.records[0]))
    assert parsed["level"] == "INFO" and parsed["logger"] == "orch.events"
    assert parsed["agent_id"] == "a7" and parsed["event"] == "agent.lost"
    assert "agent.lost" in parsed["message"] and parsed["timestamp"]


def test_heartbeats_log_nothing_at_info(orch, caplog):
    orch.register_agent("a1", "implementation", ["code"])
    orch.start_agent("a1")
    with caplog.at_level(logging.INFO):
        for _ in range(20):
            orch.heartbeat("a1")
    assert [record.getMessage() for record in caplog.records] == []


def test_a_reader_of_an_earlier_numbering_gets_the_ring_at_once_marked_reset(clock):
    # It followed an earlier server process (another epoch); this one numbers from 1.
    events = Events(clock)
    for n in range(3):
        events.emit("agent.registered", agent_id=f"a{n}")
    started = time.monotonic()
    answer = events.page(2, wait_s=5, epoch="of-an-earlier-process")
    assert [e["seq"] for e in answer["events"]] == [1, 2, 3]
    assert answer["next"] == 3 and answer["reset"] is True
    assert answer["epoch"] == events.epoch != "of-an-earlier-process"
    assert time.monotonic() - started < 2  # not the 5 s each was allowed to wait
    # Its own epoch: the usual answer.
    assert events.page(3, epoch=events.epoch) == {"events": [], "next": 3, "epoch": events.epoch}


def test_a_reset_from_an_empty_ring_answers_at_once_from_zero(clock):
    events = Events(clock)
    started = time.monotonic()
    answer = events.page(42, wait_s=5, epoch="earlier")
    assert answer == {"events": [], "next": 0, "epoch": events.epoch, "reset": True}
    assert time.monotonic() - started < 2
    events.emit("agent.registered", agent_id="a")
    assert [e["seq"] for e in events.page(0)["events"]] == [1]


def test_a_reader_ahead_of_the_numbering_gets_nothing_at_once_not_a_replay(clock):
    events = Events(clock)
    for n in range(3):
        events.emit("agent.registered", agent_id=f"a{n}")
    for epoch in (None, events.epoch):  # with nothing to tell a restart, or the same numbering
        started = time.monotonic()
        answer = events.page(500, wait_s=5, epoch=epoch)
        assert answer == {"events": [], "next": 3, "epoch": events.epoch, "ahead": True}
        assert time.monotonic() - started < 2


def test_two_processes_number_their_events_under_different_epochs(clock):
    assert Events(clock).epoch != Events(clock).epoch


def test_the_facade_answers_a_reader_ahead_of_the_numbering_at_once(orch):
    orch.register_agent("a", "implementation")
    started = time.monotonic()
    answer = orch.events(10_000, wait_s=5)
    assert time.monotonic() - started < 2
    assert answer["events"] == [] and answer["ahead"] is True
    assert answer["next"] == orch.events(0)["next"] < 10_000
    restarted = orch.events(10_000, wait_s=5, epoch="earlier")
    assert restarted["reset"] is True and restarted["events"][0]["seq"] == 1


def test_a_signal_reaches_every_signal_listener_in_order_and_never_the_ring(clock):
    events = Events(clock)
    heard: list[tuple[str, str, dict]] = []
    seen_events: list[object] = []
    events.subscribe(seen_events.append)
    events.subscribe_signals(lambda kind, data: heard.append(("first", kind, data)))
    events.subscribe_signals(lambda kind, data: heard.append(("second", kind, data)))
    events.signal("lock.waited", seconds=0.5)
    assert heard == [
        ("first", "lock.waited", {"seconds": 0.5}),
        ("second", "lock.waited", {"seconds": 0.5}),
    ]
    assert events.last_seq == 0 and events.since(0) == [] and seen_events == []
    events.emit("agent.registered", agent_id="a")
    assert [kind for _, kind, _ in heard] == ["lock.waited"] * 2  # events are not signals


def test_a_failing_signal_listener_is_logged_and_the_others_still_hear(clock, caplog):
    events = Events(clock)
    heard: list[str] = []

    def broken(kind: str, data: dict) -> None:
        raise RuntimeError("metrics are down")

    events.subscribe_signals(broken)
    events.subscribe_signals(lambda kind, data: heard.append(kind))
    with caplog.at_level(logging.ERROR, logger="orch.events"):
        events.signal("heartbeat")  # raises nothing in the caller
    assert heard == ["heartbeat"]
    assert "signal listener failed on heartbeat" in caplog.text
    assert "metrics are down" in caplog.text
