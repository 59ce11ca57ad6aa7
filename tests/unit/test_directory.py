"""orch/actors/directory.py: the published agent view, with no actors running.

``Directory`` is plain data behind a lock, so each rule is checked by calling it
directly: who may replace an entry (by generation), the token-hash index and the
counts by state staying in step with the entries through every kind of write.
"""

from __future__ import annotations

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from orch.actors.directory import Directory, Entry
from orch.model import AgentRecord, AgentState

#: Stand-ins for an actor proxy and its gate: the Directory only stores them.
ACTOR, GATE = object(), object()


def record(
    agent_id: str, state: AgentState = AgentState.IDLE, restarts: int = 0, agent_type: str = "impl"
) -> AgentRecord:
    return AgentRecord(
        agent_id=agent_id,
        agent_type=agent_type,
        capabilities=frozenset(),
        state=state,
        restarts=restarts,
    )


def entry(
    agent_id: str,
    generation: int = 1,
    state: AgentState = AgentState.IDLE,
    restarts: int = 0,
    actor: object = ACTOR,
    gate: object = None,
) -> Entry:
    return Entry(
        record(agent_id, state, restarts),
        actor,
        generation,
        token_hash=f"hash-of-{agent_id}-{generation}",
        gate=gate,
    )


def recount(directory: Directory) -> tuple[dict[AgentState, int], int, int]:
    """What ``counts()`` must say, worked out the slow way from the entries."""
    entries = directory.entries()
    by_state = Counter(e.record.state for e in entries)
    return dict(by_state), sum(e.record.restarts for e in entries), len(entries)


def counts(directory: Directory) -> tuple[dict[AgentState, int], int, int]:
    """``counts()`` without the states that have dropped to zero."""
    by_state, restarts, total = directory.counts()
    return {s: n for s, n in by_state.items() if n}, restarts, total


def test_put_makes_an_agent_visible_by_id_and_by_token_hash():
    directory = Directory()
    added = entry("a1")
    directory.put(added)
    assert directory.get("a1") is added
    assert directory.agent_with_token_hash(added.token_hash) == "a1"
    assert directory.agent_with_token_hash("hash of nobody") is None
    assert directory.get("ghost") is None
    assert directory.entries() == [added] and len(directory) == 1


def test_put_over_an_entry_replaces_its_credential_and_its_counts():
    directory = Directory()
    first = entry("a1", generation=1, state=AgentState.LOST, restarts=2)
    directory.put(first)
    second = entry("a1", generation=2, state=AgentState.IDLE, restarts=0)
    directory.put(second)
    assert directory.get("a1") is second
    # The old token no longer names anyone: a re-registered agent's old token is void.
    assert directory.agent_with_token_hash(first.token_hash) is None
    assert directory.agent_with_token_hash(second.token_hash) == "a1"
    assert counts(directory) == ({AgentState.IDLE: 1}, 0, 1)


def test_remove_drops_the_entry_its_token_and_its_counts():
    directory = Directory()
    gone, kept = entry("a1", restarts=3), entry("a2", state=AgentState.BUSY)
    directory.put(gone)
    directory.put(kept)
    directory.remove("a1")
    assert directory.get("a1") is None
    assert directory.agent_with_token_hash(gone.token_hash) is None
    assert counts(directory) == ({AgentState.BUSY: 1}, 0, 1)
    directory.remove("a1")  # removing what is not there changes nothing
    directory.remove("never-there")
    assert counts(directory) == ({AgentState.BUSY: 1}, 0, 1)


def test_publish_by_the_current_generation_replaces_only_the_record():
    directory = Directory()
    directory.put(entry("a1", generation=4, gate=GATE))
    busy = record("a1", AgentState.BUSY, restarts=1)
    assert directory.publish(4, busy) is True
    published = directory.get("a1")
    assert published is not None and published.record is busy
    # What only the Supervisor may set is kept as it was.
    assert (published.actor, published.gate, published.generation) == (ACTOR, GATE, 4)
    assert directory.agent_with_token_hash("hash-of-a1-4") == "a1"
    assert counts(directory) == ({AgentState.BUSY: 1}, 1, 1)


def test_a_stale_generation_cannot_publish_over_its_successor():
    directory = Directory()
    directory.put(entry("a1", generation=1))
    directory.put(entry("a1", generation=2, state=AgentState.REGISTERED))
    current = directory.get("a1")
    assert directory.publish(1, record("a1", AgentState.BUSY, restarts=5)) is False
    assert directory.get("a1") is current
    assert counts(directory) == ({AgentState.REGISTERED: 1}, 0, 1)


def test_a_retired_actor_cannot_republish_its_removed_agent():
    directory = Directory()
    directory.put(entry("a1", generation=1))
    directory.remove("a1")
    assert directory.publish(1, record("a1", AgentState.IDLE)) is False
    assert directory.get("a1") is None and len(directory) == 0
    assert counts(directory) == ({}, 0, 0)


def test_attach_actor_fills_in_the_actor_of_its_own_generation_only():
    directory = Directory()
    waiting = entry("a1", generation=3, actor=None)
    directory.put(waiting)
    directory.attach_actor("a1", 2, ACTOR, GATE)  # an older start finishing late
    assert directory.get("a1") is waiting
    directory.attach_actor("a1", 3, ACTOR, GATE)
    attached = directory.get("a1")
    assert attached is not None and (attached.actor, attached.gate) == (ACTOR, GATE)
    assert attached.record is waiting.record and attached.token_hash == waiting.token_hash
    directory.attach_actor("ghost", 1, ACTOR)  # no entry: nothing is created
    assert directory.get("ghost") is None
    assert counts(directory) == ({AgentState.IDLE: 1}, 0, 1)


# Every write in any order, then the counts against a recount from the entries.
AGENT_IDS = st.sampled_from(["a1", "a2", "a3"])
GENERATIONS = st.integers(min_value=1, max_value=3)
STATES = st.sampled_from(list(AgentState))
RESTARTS = st.integers(min_value=0, max_value=4)
WRITES = st.one_of(
    st.tuples(st.just("put"), AGENT_IDS, GENERATIONS, STATES, RESTARTS),
    st.tuples(st.just("publish"), AGENT_IDS, GENERATIONS, STATES, RESTARTS),
    st.tuples(st.just("remove"), AGENT_IDS),
    st.tuples(st.just("attach"), AGENT_IDS, GENERATIONS),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(WRITES, max_size=30))
def test_counts_stay_in_step_with_the_entries_through_any_writes(writes):
    directory = Directory()
    hashes_given: set[str] = set()
    for write in writes:
        match write:
            case ("put", agent_id, generation, state, restarts):
                added = entry(agent_id, generation, state, restarts)
                hashes_given.add(added.token_hash)
                directory.put(added)
            case ("publish", agent_id, generation, state, restarts):
                directory.publish(generation, record(agent_id, state, restarts))
            case ("remove", agent_id):
                directory.remove(agent_id)
            case ("attach", agent_id, generation):
                directory.attach_actor(agent_id, generation, ACTOR)
        assert counts(directory) == recount(directory)
        current = {e.token_hash: e.record.agent_id for e in directory.entries()}
        for token_hash in hashes_given:
            assert directory.agent_with_token_hash(token_hash) == current.get(token_hash)
