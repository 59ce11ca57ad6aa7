"""orch/system.py: the embedded API as the README shows it, tokens, bad input."""

import subprocess
import sys
import textwrap

import pytest

from orch import (
    Agent,
    Forbidden,
    Invalid,
    NotFound,
    Orchestrator,
    TaskFailed,
    Unauthorized,
    Unavailable,
)
from tests.conftest import wait_until


class Echo(Agent):
    agent_type = "implementation"
    capabilities = {"echo"}

    def handle(self, task):
        if task.payload.get("crash"):
            raise RuntimeError("boom")
        return {"echo": task.payload}


def test_readme_snippet_works_as_written(live_orch):
    orch = live_orch
    orch.attach(Echo("echo-1"))
    handle = orch.submit({"msg": "hi"}, capabilities={"echo"})
    assert handle.result(timeout=5) == {"echo": {"msg": "hi"}}
    bad = orch.submit({"crash": True}, capabilities={"echo"}, max_attempts=1)
    with pytest.raises(TaskFailed, match="boom"):
        bad.result(timeout=5)
    assert orch.submit({"n": 2}, capabilities={"echo"}).result(timeout=5) == {"echo": {"n": 2}}
    assert orch.agent("echo-1")["restarts"] >= 1


def test_readme_snippet_as_a_script():
    script = textwrap.dedent(
        """
        from orch import Orchestrator, Agent

        class Echo(Agent):
            agent_type = "implementation"
            capabilities = {"echo"}

            def handle(self, task):
                if task.payload.get("crash"):
                    raise RuntimeError("boom")
                return {"echo": task.payload}

        with Orchestrator() as orch:
            orch.attach(Echo("echo-1"))
            handle = orch.submit({"msg": "hi"}, capabilities={"echo"})
            print(handle.result(timeout=5))
            bad = orch.submit({"crash": True}, capabilities={"echo"}, max_attempts=1)
            try:
                bad.result(timeout=5)
            except Exception as exc:
                print(type(exc).__name__)
            print(orch.submit({"n": 2}, capabilities={"echo"}).result(timeout=5))
            print(orch.agent("echo-1")["restarts"] >= 1)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    ).stdout.splitlines()
    assert out == ["{'echo': {'msg': 'hi'}}", "TaskFailed", "{'echo': {'n': 2}}", "True"]


def test_many_orchestrators_in_one_process_do_not_touch_each_other():
    first = Orchestrator().start()
    second = Orchestrator().start()
    try:
        first.attach(Echo("same-id"))
        second.attach(Echo("same-id"))
        assert first.submit({"o": 1}, capabilities={"echo"}).result(5) == {"echo": {"o": 1}}
        first.stop()
        assert second.submit({"o": 2}, capabilities={"echo"}).result(5) == {"echo": {"o": 2}}
        wait_until(lambda: second.agent("same-id")["status"] == "idle")
        assert first.directory.get("same-id") is not second.directory.get("same-id")
    finally:
        first.stop()
        second.stop()


def test_tokens_authenticate_only_their_own_agent(orch):
    t1 = orch.register_agent("a1", "implementation", ["code"])["token"]
    t2 = orch.register_agent("a2", "implementation", ["code"])["token"]
    orch.authenticate("a1", t1)
    with pytest.raises(Forbidden):
        orch.authenticate("a1", t2)
    with pytest.raises(Unauthorized):
        orch.authenticate("a1", "not-a-token")
    with pytest.raises(Unauthorized):
        orch.authenticate("a1", None)
    listing = str(orch.agents()) + str(orch.agent("a1"))
    assert t1 not in listing and "token" not in listing


def test_facade_names_the_bad_field_and_changes_nothing(orch, store):
    writes = store.writes
    cases = [
        (lambda: orch.register_agent("bad id", "implementation"), "agent_id"),
        (lambda: orch.register_agent("ok", "implementation", ["a b"]), "capabilities"),
        (lambda: orch.register_agent("ok", "implementation", metadata={"x": object()}), "metadata"),
        (lambda: orch.register_agent("ok", "impl", max_concurrent_tasks=0), "max_concurrent_tasks"),
    ]
    for call, field in cases:
        with pytest.raises(Invalid) as info:
            call()
        assert info.value.field == field
    assert store.writes == writes and orch.agents()["total"] == 0
    orch.register_agent("a1", "implementation")
    orch.start_agent("a1")
    for kwargs, field in [
        ({"ttl_s": 0}, "ttl_s"),
        ({"mode": "sideways"}, "mode"),
        ({"wait_s": 10_000}, "wait_s"),
    ]:
        with pytest.raises(Invalid) as info:
            orch.acquire_lock("a1", "res", **kwargs)
        assert info.value.field == field
    with pytest.raises(Invalid) as info:
        orch.acquire_lock("a1", "../etc/passwd")
    assert info.value.field == "resource"
    with pytest.raises(NotFound):
        orch.acquire_lock("ghost", "res")
    with pytest.raises(NotFound):
        orch.heartbeat("ghost")
    with pytest.raises(Invalid):
        orch.agents(state="sleepy")
    assert orch.locks() == []


def test_agent_listing_filters_and_limits(orch):
    for i in range(5):
        orch.register_agent(f"a{i}", "implementation" if i % 2 else "breakdown", ["code"])
    orch.start_agent("a1")
    listing = orch.agents(agent_type="implementation")
    assert [a["agent_id"] for a in listing["agents"]] == ["a1", "a3"]
    assert listing["total"] == 5 and listing["active"] == 1
    assert len(orch.agents(limit=2)["agents"]) == 2
    assert [a["agent_id"] for a in orch.agents(state="idle")["agents"]] == ["a1"]


def test_config_versions_and_defaults(orch):
    orch.register_agent("a1", "implementation")
    assert orch.agent_config("a1")["version"] == 1
    updated = orch.update_agent_config("a1", {"max_concurrent_tasks": 3})
    assert updated["version"] == 2 and updated["max_concurrent_tasks"] == 3
    from orch import Conflict

    with pytest.raises(Conflict, match="version 2"):
        orch.update_agent_config("a1", {"max_concurrent_tasks": 4}, expected_version=1)
    orch.start_agent("a1")
    assert orch.heartbeat("a1")["config_version"] == 2
    orch.set_config_defaults({"task_timeout_s": 60})
    orch.register_agent("a2", "implementation")
    assert orch.agent_config("a2")["task_timeout_s"] == 60


def test_stats_and_health_carry_the_seed_keys(orch):
    orch.register_agent("a1", "implementation")
    orch.start_agent("a1")
    orch.assign_task({}, task_id=1)
    stats = orch.stats()
    for key in (
        "total_agents",
        "active_agents",
        "idle_agents",
        "pending_tasks",
        "assigned_tasks",
        "total_tasks_completed",
        "total_tasks_failed",
    ):
        assert key in stats
    wait_until(lambda: orch.stats()["assigned_tasks"] == 1)
    health = orch.health()
    assert health["status"] == "healthy"
    assert {"active_agents", "total_agents", "pending_tasks"} <= health.keys()


def test_health_reports_a_failing_store(orch, store):
    store.fail_writes = "disk full"
    assert orch.health()["status"] == "healthy"  # read, not performed, by the request
    orch.dependencies.run_once()  # what the background thread does every interval
    health = orch.health()
    assert health["status"] == "unhealthy"
    assert "disk full" in health["checks"]["store"]["last_error"]
    store.fail_writes = None
    orch.dependencies.run_once()
    assert orch.health()["status"] == "healthy"


def test_result_timeout(orch):
    from orch import Timeout

    handle = orch.submit({}, capabilities={"nobody-has-this"})
    with pytest.raises(Timeout):
        handle.result(timeout=0.05)
    assert handle.status == "pending"


def test_events_are_numbered_and_paged(orch):
    orch.register_agent("a", "implementation")
    orch.start_agent("a")
    first = orch.events(0, limit=1)
    assert [e["type"] for e in first["events"]] == ["agent.registered"]
    rest = orch.events(first["next"])
    assert "agent.started" in [e["type"] for e in rest["events"]]
    epoch = rest["epoch"]
    assert orch.events(rest["next"]) == {"events": [], "next": rest["next"], "epoch": epoch}
    with pytest.raises(Invalid, match="after"):
        orch.events(-1)
    with pytest.raises(Invalid, match="epoch"):
        orch.events(0, epoch="not an epoch")


@pytest.mark.parametrize(
    "call",
    [
        lambda o: o.attach(Echo("e1")),
        lambda o: o.register_agent("a1", "implementation"),
        lambda o: o.submit({"n": 1}),
        lambda o: o.stats(),
        lambda o: o.health(),
        lambda o: o.locks(),
        lambda o: o.agent("a1"),
        lambda o: o.agents(),
        lambda o: o.task(1),
        lambda o: o.config_defaults(),
        lambda o: o.deregister_agent("a1"),
        lambda o: o.tick(),
    ],
    ids=[
        "attach",
        "register_agent",
        "submit",
        "stats",
        "health",
        "locks",
        "agent",
        "agents",
        "task",
        "config_defaults",
        "deregister_agent",
        "tick",
    ],
)
def test_an_orchestrator_not_running_is_unavailable_saying_what_to_do(call, store):
    never_started = Orchestrator(store=store, auto_tick=False)
    with pytest.raises(Unavailable, match=r"not started; use `with Orchestrator\(\) as orch`"):
        call(never_started)
    stopped = Orchestrator(auto_tick=False).start()
    stopped.stop()
    with pytest.raises(Unavailable, match=r"has stopped; .* create a new Orchestrator"):
        call(stopped)


@pytest.mark.parametrize(
    "resources",
    [
        None,
        {"r1": "exclusive"},
        "r1",
        [{"resource": "r1", "mode": "exclusive"}],
        [None],
        [("r1", "exclusive", "extra")],
        [("r1",)],
        ["ab"],
        [("r1", "sideways")],
        [("r1", None)],
        [(None, "exclusive")],
        [("../etc", "shared")],
        [],
        [("r1", "exclusive"), ("r1", "shared")],
        [(f"r{i}", "shared") for i in range(100)],
    ],
)
def test_acquire_locks_refuses_malformed_resources_naming_the_field(orch, store, resources):
    orch.register_agent("a1", "implementation")
    orch.start_agent("a1")
    writes = store.writes
    with pytest.raises(Invalid) as info:
        orch.acquire_locks("a1", resources)
    assert info.value.field == "resources"
    assert orch.locks() == [] and store.writes == writes
    grants = orch.acquire_locks("a1", [("r1", "exclusive"), ["r2", "shared"]])
    assert [(g["resource"], g["mode"]) for g in grants] == [("r1", "exclusive"), ("r2", "shared")]


def test_a_start_that_fails_stops_what_it_started():
    from orch.errors import StoreError
    from orch.store.memory import MemoryStore

    class UnreadableStore(MemoryStore):
        def load_credentials(self):  # read during the Supervisor's recovery
            raise StoreError("disk I/O error")

    orch = Orchestrator(store=UnreadableStore())
    with pytest.raises(StoreError):
        orch.start()
    assert orch.actors.refs and not any(ref.is_alive() for ref in orch.actors.refs)
    with pytest.raises(Unavailable, match="stopped"):
        orch.submit({})


# ------------------------------------------------- one implementation per method

#: The embedded API as README.md lists it, with the controller each method is from.
EMBEDDED_API = {
    "agents": [
        "attach",
        "register_agent",
        "start_agent",
        "stop_agent",
        "deregister_agent",
        "heartbeat",
        "agent",
        "agents",
        "agent_tasks",
    ],
    "tasks": [
        "submit",
        "assign_task",
        "wait_for_task",
        "complete_task",
        "fail_task",
        "report_progress",
        "cancel_task",
        "task",
        "tasks",
        "pending_tasks",
    ],
    "locks": ["acquire_lock", "acquire_locks", "renew_lock", "release_lock", "locks"],
    "config": ["agent_config", "update_agent_config", "config_defaults", "set_config_defaults"],
    "observation": ["stats", "events", "health"],
    "tokens": ["identify", "authenticate"],
}


def test_the_readmes_embedded_api_is_the_one_bound_here():
    import pathlib
    import re

    readme = (pathlib.Path(__file__).parents[2] / "README.md").read_text()
    section = readme.split("## Embedded API", 1)[1].split("\n## ", 1)[0]
    methods = section.split("have the same operations as methods:", 1)[1].split("event ring")[0]
    documented = {"attach", "submit", *re.findall(r"`(\w+)", methods)}
    bound = {name for names in EMBEDDED_API.values() for name in names}
    assert documented <= bound, documented - bound


def test_every_embedded_api_method_is_its_controllers_own(orch):
    for field, names in EMBEDDED_API.items():
        controller = getattr(orch.controllers, field)
        for name in names:
            function = getattr(type(controller), name)
            # On the class: the controller's function itself, so help() shows its docs.
            assert getattr(Orchestrator, name) is function, name
            # On an instance: bound to this Orchestrator's controller, and kept, so a call
            # allocates nothing a plain method call would not.
            method = getattr(orch, name)
            assert method.__func__ is function and method.__self__ is controller, name
            assert getattr(orch, name) is method, name


def test_no_operation_is_defined_twice():
    import inspect

    from orch import controllers

    # The Orchestrator defines no embedded-API function of its own ...
    own = {n for n, v in vars(Orchestrator).items() if inspect.isfunction(v)}
    api = {name for names in EMBEDDED_API.values() for name in names}
    assert not own & api
    # ... binds every name in the class body to a controller, each function once ...
    bound = [getattr(Orchestrator, n) for n in vars(Orchestrator) if n in api]
    assert len(bound) == len(api) == len(set(bound))
    # ... and no two controllers offer the same public operation.
    classes = [
        controllers.AgentsController,
        controllers.TasksController,
        controllers.LocksController,
        controllers.ConfigController,
        controllers.ObservationController,
        controllers.Tokens,
    ]
    public = [n for c in classes for n, v in vars(c).items() if inspect.isfunction(v)]
    public = [n for n in public if not n.startswith("_")]
    assert len(public) == len(set(public))


def test_help_shows_the_controllers_docstring_and_signature():
    import inspect
    import pydoc

    from orch.controllers import LocksController, TasksController

    assert Orchestrator.submit.__doc__ == TasksController.submit.__doc__
    assert "payload" in inspect.signature(Orchestrator.submit).parameters
    page = pydoc.render_doc(Orchestrator, renderer=pydoc.plaintext)
    assert "Lease one resource" in page and "Queue a task for the best eligible agent" in page
    assert inspect.getdoc(Orchestrator.acquire_lock) == inspect.getdoc(LocksController.acquire_lock)


def test_a_task_handle_reads_through_the_tasks_controller(orch):
    from orch.controllers import TaskHandle

    handle = orch.submit({"n": 1}, task_id=7)
    assert isinstance(handle, TaskHandle) and handle.status == "pending"
    assert TaskHandle(orch, 7).status == "pending"  # built on an Orchestrator, as before
