"""orch/actors/matching.py: the index behind scheduling."""

from orch.actors.matching import AgentSlot, Matcher


def slot(agent_id, agent_type="impl", caps=("code",), max_slots=1):
    return AgentSlot(
        agent_id=agent_id,
        generation=1,
        actor=None,
        agent_type=agent_type,
        capabilities=frozenset(caps),
        max_slots=max_slots,
        task_timeout_s=60,
    )


def make():
    pending = {}
    matcher = Matcher(lambda key, seq: pending.get(key) == seq)

    def push(key, seq, priority=0, agent_type=None, caps=()):
        pending[key] = seq
        matcher.push_task(key, seq, priority, (agent_type, frozenset(caps)))

    def take():
        match = matcher.next_match()
        if match is None:
            return None
        key, s = match
        del pending[key]
        matcher.set_load(s, s.load + 1, assigned=True)
        return key, s.agent_id

    return matcher, push, take, pending


def test_highest_priority_first_then_fifo():
    matcher, push, take, _ = make()
    matcher.put_agent(slot("a", max_slots=10))
    push("low", 1, priority=0)
    push("high", 2, priority=9)
    push("low2", 3, priority=0)
    assert [take()[0] for _ in range(3)] == ["high", "low", "low2"]
    assert take() is None


def test_capabilities_and_type_are_required():
    matcher, push, take, _ = make()
    matcher.put_agent(slot("coder", caps=("code",)))
    matcher.put_agent(slot("tester", agent_type="qa", caps=("code", "test")))
    push("t1", 1, caps=("test",))
    push("t2", 2, agent_type="impl")
    assert sorted([take(), take()]) == [("t1", "tester"), ("t2", "coder")]


def test_unmatchable_task_does_not_block_others():
    matcher, push, take, _ = make()
    matcher.put_agent(slot("a"))
    push("needs-gpu", 1, priority=10, caps=("gpu",))
    push("normal", 2, priority=0)
    assert take() == ("normal", "a")
    assert take() is None


def test_least_loaded_then_least_recently_assigned():
    matcher, push, take, _ = make()
    for name in ("a", "b", "c"):
        matcher.put_agent(slot(name, max_slots=5))
    for i in range(6):
        push(f"t{i}", i)
    agents = [take()[1] for _ in range(6)]
    assert agents == ["a", "b", "c", "a", "b", "c"]


def test_not_ready_or_full_agents_are_skipped_and_stale_tasks_dropped():
    matcher, push, take, pending = make()
    a = slot("a")
    matcher.put_agent(a)
    matcher.set_ready(a, False)
    push("t1", 1)
    assert take() is None
    matcher.set_ready(a, True)
    push("t2", 2)
    del pending["t1"]  # cancelled meanwhile: its queue entry is stale
    assert take() == ("t2", "a")
    push("t3", 3)
    assert take() is None  # a is full (1/1)


def test_match_cost_does_not_scan_the_fleet():
    """One match looks at queue heads and pool heads, never at every agent."""
    matcher, push, take, _ = make()
    for i in range(2000):
        matcher.put_agent(slot(f"a{i}", caps=("code",)))
    push("warm", 0, caps=("code",))
    take()
    calls = 0
    original = AgentSlot.serves

    def counting(self, requirement):
        nonlocal calls
        calls += 1
        return original(self, requirement)

    AgentSlot.serves = counting
    try:
        for i in range(1, 200):
            push(f"t{i}", i, caps=("code",))
            assert take() is not None
    finally:
        AgentSlot.serves = original
    assert calls == 0
