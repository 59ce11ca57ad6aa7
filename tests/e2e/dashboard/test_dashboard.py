"""The dashboard in Debian's Chromium against a real server seeded over REST.

Every wait is Playwright's ``expect`` (it polls until a deadline), never a sleep.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from playwright.sync_api import expect

from bench.load import Client
from tests.e2e.conftest import ServerProcess
from tests.e2e.dashboard.conftest import BUILD, Api, Watched

#: "About 2 s" live updates, with room for a loaded 2-core machine.
LIVE_MS = 5000
LONG_MS = 15000


def open_view(tab: Watched, server: ServerProcess, view: str) -> None:
    tab.page.goto(f"{server.url}/ui/#/{view}")
    expect(tab.page.locator("#app")).to_be_visible(timeout=LONG_MS)
    expect(tab.page.locator("#live-status")).to_have_text("live", timeout=LONG_MS)


def go(tab: Watched, view: str) -> None:
    """Navigate inside the page (no reload), as a click on a link does."""
    tab.page.evaluate("view => { location.hash = '#/' + view; }", view)


def shot(tab: Watched, name: str) -> None:
    BUILD.mkdir(exist_ok=True)
    tab.page.screenshot(path=str(BUILD / f"dashboard-{name}.png"), full_page=True)


# ------------------------------------------------------------------ seeding


class Seeded:
    """A fleet with agents, tasks in every state, a held lock and its waiter."""

    def __init__(self, api: Api) -> None:
        self.api = api
        self.w1 = api.register(
            "w1",
            "impl",
            capabilities=["py", "git"],
            metadata={"host": "box-1", "pid": 4242},
            max_concurrent_tasks=4,
        )
        self.w2 = api.register("w2", "breakdown", capabilities=["plan"])
        api.register("r3", "impl", start=False)
        for task_id, extra in [
            ("t-run", {"payload": {"step": "build"}}),
            ("t-done", {"payload": {"step": "test"}}),
            ("t-dead", {"max_attempts": 1}),
        ]:
            answer = api.call(
                "POST", "/tasks/assign", {"task_id": task_id, "agent_id": "w1", **extra}
            )
            assert answer["status"] == "assigned", answer
        api.call("POST", "/agents/w1/heartbeat", token=self.w1)  # delivered: running
        api.call(
            "POST", "/tasks/t-done/complete", {"agent_id": "w1", "result": {"answer": 42}}, self.w1
        )
        api.call(
            "POST",
            "/tasks/t-dead/fail",
            {"agent_id": "w1", "error": "disk full", "retryable": False},
            self.w1,
        )
        api.call(
            "POST", "/tasks/assign", {"task_id": "t-low", "agent_type": "nobody", "priority": 2}
        )
        api.call(
            "POST",
            "/tasks/assign",
            {"task_id": "t-high", "agent_type": "nobody", "priority": 7, "capabilities": ["gpu"]},
        )
        api.call("POST", "/tasks/assign", {"task_id": "t-gone", "agent_type": "nobody"})
        api.call("POST", "/tasks/t-gone/cancel")
        self.grant = api.call("POST", "/locks/repo/acquire", {"agent_id": "w1"}, self.w1)
        self.waiter = threading.Thread(target=self._wait_for_repo)
        self.waiter.start()

    def _wait_for_repo(self) -> None:
        self.api.call("POST", "/locks/repo/acquire", {"agent_id": "w2", "wait_s": 25}, self.w2)

    def release(self) -> None:
        body = {"agent_id": "w1", "fencing_token": self.grant["fencing_token"]}
        self.api.call("POST", "/locks/repo/release", body, self.w1)
        self.waiter.join(30)


@pytest.fixture
def seeded(api: Api) -> Iterator[Seeded]:
    fleet = Seeded(api)
    try:
        yield fleet
    finally:
        if fleet.waiter.is_alive():
            fleet.release()


def rows(tab: Watched) -> Callable[[], list[str]]:
    return lambda: tab.page.locator("#fleet-list .vrow[data-agent-id]").evaluate_all(
        "rows => rows.map(r => r.dataset.agentId)"
    )


# ------------------------------------------------------------------- views


def test_every_view_shows_the_seeded_fleet_and_logs_no_error(tab, server, seeded):
    page = tab.page
    open_view(tab, server, "fleet")
    banner = page.locator("#health")
    expect(banner).to_contain_text("Store: ok")
    expect(banner).to_contain_text("TODO service")
    expect(banner).to_contain_text("Gateway")
    expect(page.locator("#counts [data-count=agents]")).to_have_text("3 agents")

    w1 = page.locator('#fleet-list .vrow[data-agent-id="w1"]')
    for text in ["busy", "impl", "git, py", "1 / 4", "box-1", "4242", "ago"]:
        expect(w1).to_contain_text(text)
    expect(page.locator("#fleet-summary")).to_contain_text("3 of 3 agents")
    shot(tab, "fleet")

    page.select_option("#filter-status", "registered")
    expect(page.locator("#fleet-summary")).to_contain_text("1 of 3")
    assert rows(tab)() == ["r3"]
    page.select_option("#filter-status", "")
    page.click("#counts [data-count=lost]")  # a count opens what it counts
    expect(page.locator("#fleet-summary")).to_contain_text("0 of 3")
    expect(page.locator("#filter-status")).to_have_value("lost")
    page.select_option("#filter-status", "")
    page.fill("#filter-capability", "plan")
    page.press("#filter-capability", "Enter")
    expect(page.locator("#fleet-summary")).to_contain_text("1 of 3")
    assert rows(tab)() == ["w2"]
    page.fill("#filter-capability", "")
    page.fill("#filter-type", "impl")
    page.press("#filter-type", "Enter")
    expect(page.locator("#fleet-summary")).to_contain_text("2 of 3")
    assert rows(tab)() == ["r3", "w1"]

    page.click('#fleet-list a:text-is("w1")')
    expect(page.locator("#agent-title")).to_have_text("w1")
    agent = page.locator("#agent-page")
    for text in ['"max_concurrent_tasks": 4', "box-1", "t-run", "task.assigned", "lock.granted"]:
        expect(agent).to_contain_text(text)
    shot(tab, "agent")

    go(tab, "tasks")
    pending = page.locator("#tasks-pending tbody tr")
    expect(pending).to_have_count(2)
    expect(pending.nth(0)).to_contain_text("t-high")
    expect(pending.nth(0)).to_contain_text("gpu")
    expect(pending.nth(1)).to_contain_text("t-low")
    expect(page.locator("#tasks-running")).to_contain_text("t-run")
    expect(page.locator("#tasks-running")).to_contain_text("w1")
    expect(page.locator("#tasks-dead")).to_contain_text("disk full")
    expect(page.locator("#tasks-completed")).to_contain_text("t-done")
    expect(page.locator("#tasks-cancelled")).to_contain_text("t-gone")
    shot(tab, "tasks")

    page.click('#tasks-completed a:text-is("t-done")')
    task = page.locator("#task-page")
    for text in ["completed", '"answer": 42', '"step": "test"', "1 of 3", "task.completed"]:
        expect(task).to_contain_text(text)

    go(tab, "locks")
    lock = page.locator("#locks-table tbody tr")
    expect(lock).to_have_count(1)
    for text in ["repo", "exclusive", "w1", f"token {seeded.grant['fencing_token']}", "in "]:
        expect(lock).to_contain_text(text)
    expect(lock).to_contain_text("w2 (exclusive)")  # the waiter
    shot(tab, "locks")

    go(tab, "events")
    events = page.locator("#event-list tbody tr")
    expect(events.first).to_be_visible()
    page.select_option("#event-type", "task.completed")
    expect(events).to_have_count(1)
    expect(events).to_contain_text("t-done")
    page.select_option("#event-type", "")
    page.fill("#event-text", "t-dead")
    expect(events.first).to_contain_text("t-dead")
    assert all("t-dead" in t for t in events.all_inner_texts())

    go(tab, "charts")
    expect(page.locator("#chart-queue-legend")).to_contain_text("pending 2")
    expect(page.locator("#chart-queue-legend")).to_contain_text("running 1")
    expect(page.locator("#chart-throughput-legend")).to_contain_text("completed")
    expect(page.locator("#chart-heartbeats-legend")).to_contain_text("heartbeats")
    drawn = page.locator("#chart-queue-canvas").evaluate(
        "c => c.getContext('2d').getImageData(0, 0, c.width, c.height).data.some(v => v)"
    )
    assert drawn
    shot(tab, "charts")
    assert tab.errors == [] and tab.dialogs == []


def test_changes_show_live_without_a_reload_and_without_a_request_per_agent(
    tab, server, api, seeded
):
    page = tab.page
    open_view(tab, server, "fleet")
    page.evaluate("window.__sameDocument = true")
    expect(page.locator("#fleet-summary")).to_contain_text("3 of 3")

    api.register("late-agent", "impl")
    expect(page.locator('#fleet-list .vrow[data-agent-id="late-agent"]')).to_contain_text(
        "idle", timeout=LIVE_MS
    )
    api.call("POST", "/agents/late-agent/stop", {"drain": False})
    expect(page.locator('#fleet-list .vrow[data-agent-id="late-agent"]')).to_contain_text(
        "stopped", timeout=LIVE_MS
    )
    per_agent = [r.url for r in tab.requests if re.search(r"/agents/[^/?]+", r.url)]
    assert per_agent == []

    go(tab, "tasks")
    expect(page.locator("#tasks-pending tbody tr")).to_have_count(2)
    api.call("POST", "/tasks/assign", {"task_id": "t-new", "agent_type": "nobody", "priority": 9})
    expect(page.locator("#tasks-pending tbody tr").first).to_contain_text("t-new", timeout=LIVE_MS)
    expect(page.locator("#counts [data-count=pending]")).to_have_text("3 pending", timeout=LIVE_MS)

    go(tab, "locks")
    expect(page.locator("#locks-table")).to_contain_text("w2 (exclusive)")
    seeded.release()
    expect(page.locator("#locks-table tbody tr")).to_contain_text("w2", timeout=LIVE_MS)
    expect(page.locator("#locks-table tbody tr")).not_to_contain_text("w1", timeout=LIVE_MS)

    go(tab, "events")
    api.call("POST", "/tasks/t-new/cancel")
    expect(page.locator("#event-list tbody tr").first).to_contain_text("t-new", timeout=LIVE_MS)

    go(tab, "charts")
    beating = threading.Event()

    def heartbeat() -> None:
        while not beating.is_set():
            api.call("POST", "/agents/w1/heartbeat", token=seeded.w1)
            beating.wait(0.05)

    beater = threading.Thread(target=heartbeat)
    beater.start()
    try:
        api.call("POST", "/tasks/t-run/complete", {"agent_id": "w1"}, seeded.w1)
        expect(page.locator("#chart-throughput-legend [data-series=completed]")).not_to_have_text(
            "completed 0.00/s", timeout=LONG_MS
        )
        expect(page.locator("#chart-heartbeats-legend")).not_to_have_text(
            "heartbeats 0.00/s", timeout=LONG_MS
        )
        expect(page.locator("#chart-queue-legend")).to_contain_text("running 0", timeout=LONG_MS)
    finally:
        beating.set()
        beater.join(10)
    assert page.evaluate("window.__sameDocument") is True  # never reloaded
    assert tab.errors == []


def test_the_health_banner_names_the_nodes_role_and_leader_when_health_does(tab, server):
    """A cluster node's /health adds ``role`` and ``leader`` (PostgreSQL cluster).

    This server has no cluster, so its real answer is passed through with the two
    fields added, as a standby would send them.
    """

    def as_standby(route) -> None:
        answer = route.fetch()
        body = {**answer.json(), "role": "standby", "leader": "http://10.0.0.7:8005"}
        route.fulfill(response=answer, json=body)

    tab.page.route("**/health", as_standby)
    open_view(tab, server, "fleet")
    banner = tab.page.locator("#health")
    expect(banner.locator("[data-check=role]")).to_have_text("Role: standby")
    expect(banner.locator("[data-check=leader]")).to_have_text("Leader: http://10.0.0.7:8005")
    expect(banner).to_contain_text("Store: ok")
    assert tab.errors == []


# ----------------------------------------------------------------- actions


def confirm(tab: Watched, button: str, expected_message: str) -> None:
    tab.page.click(button)
    dialog = tab.page.locator("#confirm")
    expect(dialog).to_be_visible()
    expect(tab.page.locator("#confirm-message")).to_contain_text(expected_message)


def notice(tab: Watched, *texts: str) -> None:
    box = tab.page.locator("#notice")
    expect(box).to_be_visible(timeout=LIVE_MS)
    for text in texts:
        expect(box).to_contain_text(text)
    tab.page.click("#notice-close")
    expect(box).to_be_hidden()


def test_agent_actions_ask_first_then_show_the_answer_or_the_problem(tab, server, api):
    api.register("a1", start=False)
    api.register("a2")
    page = tab.page
    open_view(tab, server, "agents/a1")
    expect(page.locator("#agent-page")).to_contain_text("registered")

    confirm(tab, "#action-start", "Admit agent a1")
    page.click("#confirm-cancel")
    expect(page.locator("#confirm")).to_be_hidden()
    assert api.call("GET", "/agents/a1")["status"] == "registered"  # cancelled: nothing sent

    confirm(tab, "#action-start", "Admit agent a1")
    page.click("#confirm-ok")
    notice(tab, "Start a1: done", '"status": "started"')
    assert api.call("GET", "/agents/a1")["status"] == "idle"
    expect(page.locator("#agent-page .state").first).to_have_text("idle", timeout=LIVE_MS)

    confirm(tab, "#action-stop-drain", "letting its running tasks finish")
    page.click("#confirm-ok")
    notice(tab, "Stop a1: done", "stop")
    assert api.call("GET", "/agents/a1")["status"] == "stopped"

    confirm(tab, "#action-start", "Admit")
    page.click("#confirm-ok")
    notice(tab, "started")
    confirm(tab, "#action-stop-now", "requeued")
    page.click("#confirm-ok")
    notice(tab, "Stop a1 now: done")
    assert api.call("GET", "/agents/a1")["status"] == "stopped"

    # The agent goes away while the operator reads the question: the 404 is shown.
    confirm(tab, "#action-start", "Admit")
    api.call("DELETE", "/agents/a1")
    page.click("#confirm-ok")
    notice(tab, "Start a1: refused", "404", "not_found", "a1")

    go(tab, "agents/a2")
    expect(page.locator("#agent-title")).to_have_text("a2")
    confirm(tab, "#action-deregister", "Deregister agent a2?")
    page.click("#confirm-ok")
    notice(tab, "Deregister a2: done")
    answer = api.session.get(f"{server.url}/agents/a2", timeout=10)
    assert answer.status_code == 404
    expect(page.locator("#agent-page .error")).to_contain_text("404", timeout=LIVE_MS)
    assert tab.errors == [] or all("404" in e for e in tab.errors)


def test_cancelling_a_task_asks_first_then_shows_the_answer_or_the_conflict(tab, server, api):
    for task_id in ("c1", "c2"):
        api.call("POST", "/tasks/assign", {"task_id": task_id, "agent_type": "nobody"})
    page = tab.page
    open_view(tab, server, "tasks")
    expect(page.locator("#tasks-pending tbody tr")).to_have_count(2)

    confirm(tab, '#tasks-pending .cancel-task[data-task-id="c1"]', "Cancel task c1?")
    page.click("#confirm-cancel")
    assert api.call("GET", "/tasks/c1")["status"] == "pending"

    confirm(tab, '#tasks-pending .cancel-task[data-task-id="c1"]', "Cancel task c1?")
    page.click("#confirm-ok")
    notice(tab, "Cancel task c1: done", '"status": "cancelled"')
    assert api.call("GET", "/tasks/c1")["status"] == "cancelled"
    expect(page.locator("#tasks-cancelled")).to_contain_text("c1", timeout=LIVE_MS)

    go(tab, "tasks/c2")
    expect(page.locator("#task-page")).to_contain_text("pending")
    confirm(tab, "#task-page .cancel-task", "Cancel task c2?")
    api.call("POST", "/tasks/c2/cancel")  # someone else was quicker
    page.click("#confirm-ok")
    notice(tab, "Cancel task c2: refused", "409")
    expect(page.locator("#task-page .state").first).to_have_text("cancelled", timeout=LIVE_MS)
    expect(page.locator("#task-page .cancel-task")).to_have_count(0)


def test_a_running_tasks_progress_shows_on_its_page_and_in_the_running_list(tab, server, api):
    """What a long task is doing is the first question at 3 a.m.: its holder's last
    progress report shows where the task does, and moves live."""
    token = api.register("p1", "impl")
    api.call("POST", "/tasks/assign", {"task_id": "long", "agent_id": "p1"})
    api.call("POST", "/agents/p1/heartbeat", token=token)  # delivered: running
    api.call("POST", "/tasks/long/progress", {"message": "tests pass", "percent": 60}, token)
    page = tab.page
    open_view(tab, server, "tasks")
    running = page.locator("#tasks-running tbody tr")
    expect(running).to_contain_text("60% tests pass")

    go(tab, "tasks/long")
    expect(page.locator("#task-page")).to_contain_text("60% tests pass")
    api.call("POST", "/tasks/long/progress", {"message": "writing docs", "percent": 90}, token)
    expect(page.locator("#task-page")).to_contain_text("90% writing docs", timeout=LIVE_MS)
    assert tab.errors == []


def test_a_server_that_stops_answering_is_said_in_the_banner_until_it_answers_again(
    tab, server_factory
):
    """The banner must not go on showing the last "Store: ok" of a server that is
    gone: the operator sees that it is unreachable, and since when."""
    first = server_factory()
    port = first.url.rsplit(":", 1)[1]
    tab.page.goto(f"{first.url}/ui/#/fleet")
    page = tab.page
    banner = page.locator("#health")
    expect(banner).to_contain_text("Store: ok", timeout=LONG_MS)

    first.stop()
    expect(banner).to_contain_text("unreachable", timeout=LONG_MS)
    expect(banner).to_contain_text("No answer from the server since")
    expect(banner).not_to_contain_text("Store: ok")
    expect(page.locator("#counts")).to_have_class(re.compile(r"\bstale\b"))

    server_factory(ORCHESTRATOR_PORT=port)  # back on the same address
    expect(banner).to_contain_text("Store: ok", timeout=LONG_MS)
    expect(page.locator("#counts")).not_to_have_class(re.compile(r"\bstale\b"))
    expect(page.locator("#live-status")).to_have_text("live", timeout=LONG_MS)


def test_an_address_with_a_stray_percent_opens_a_page_not_a_blank_one(tab, server):
    tab.page.goto(f"{server.url}/ui/#/agents/100%25done%")
    expect(tab.page.locator("#app")).to_be_visible(timeout=LONG_MS)
    expect(tab.page.locator("#view")).to_contain_text("done%", timeout=LONG_MS)
    assert not [e for e in tab.errors if "page error" in e], tab.errors


def test_a_queue_longer_than_the_list_says_how_much_is_shown(tab, server, api):
    for n in range(105):
        api.call("POST", "/tasks/assign", {"task_id": f"q{n}", "agent_type": "nobody"})
    open_view(tab, server, "tasks")
    page = tab.page
    expect(page.locator("#tasks-pending h3")).to_contain_text("(105, the first 100 shown)")
    expect(page.locator("#tasks-pending tbody tr")).to_have_count(100)
    expect(page.locator("#tasks-completed h3")).not_to_contain_text("shown")


def test_text_being_selected_is_not_redrawn_from_under_the_operator(tab, server, api):
    """Copying an agent's error or metadata at 3 a.m. must not fail because the page
    re-reads itself every 2 s."""
    api.register("sel", "impl", metadata={"host": "box-to-copy"})
    open_view(tab, server, "agents/sel")
    page = tab.page
    expect(page.locator("#agent-page")).to_contain_text("box-to-copy")
    page.evaluate(
        """() => {
          const pre = [...document.querySelectorAll('#agent-page pre')].find(
            (p) => p.textContent.includes('box-to-copy'));
          document.getSelection().selectAllChildren(pre);
        }"""
    )
    for _ in range(2):  # two periodic re-reads of the agent while the text is selected
        with page.expect_request(lambda r: r.url.endswith("/agents/sel"), timeout=LONG_MS):
            pass
    assert "box-to-copy" in page.evaluate("() => document.getSelection().toString()")


def test_the_page_stays_live_when_every_long_poll_slot_is_taken(tab, server_factory):
    """The server parks long polls on half its HTTP threads (one here) and refuses
    one more with 503; the page then polls without waiting and stays live."""
    server = server_factory(ORCH_HTTP_THREADS="2")
    api = Api(server.url)
    done = threading.Event()

    def hold_the_slot() -> None:
        while not done.is_set():
            after = api.call("GET", "/events?limit=1")["next"]
            answer = api.session.get(f"{server.url}/events?after={after}&wait=20", timeout=30)
            if answer.status_code != 200:
                done.wait(0.05)  # the page has it for now: try again

    holder = threading.Thread(target=hold_the_slot)
    holder.start()
    try:
        # Each probe takes the one slot itself while it waits, so probes are brief and
        # spaced: back to back, they kept winning the slot from the holder (which needs
        # two requests to take it) on a loaded machine, and the holder never got it.
        deadline = time.monotonic() + LONG_MS / 1000
        pause = threading.Event()
        while (
            api.session.get(f"{server.url}/events?after=0&wait=0.01", timeout=30).status_code != 503
        ):
            assert time.monotonic() < deadline, "the holder never took the long-poll slot"
            pause.wait(0.2)  # a gap in which the holder can take the slot
        open_view(tab, server, "events")
        api.call("POST", "/tasks/assign", {"task_id": "seen-live", "agent_type": "nobody"})
        expect(tab.page.locator("#event-list tbody tr").first).to_contain_text(
            "seen-live", timeout=LONG_MS
        )
        api.call("POST", "/tasks/seen-live/cancel")
        expect(tab.page.locator("#event-list tbody tr").first).to_contain_text(
            "task.cancelled", timeout=LONG_MS
        )
    finally:
        done.set()
        api.call("POST", "/tasks/assign", {"task_id": "wake-holder", "agent_type": "nobody"})
        holder.join(30)
    assert not [e for e in tab.errors if "page error" in e], tab.errors


# ---------------------------------------------------------------- security

ADMIN = "dashboard-admin-secret-0123456789"


def test_the_token_is_asked_for_first_kept_in_the_session_and_never_put_in_a_url(
    tab,
    server_factory,
    browser,
):
    server = server_factory(ORCH_ADMIN_TOKEN=ADMIN)
    Api(server.url, ADMIN).register("secret-agent")
    page = tab.page
    page.goto(f"{server.url}/ui/#/fleet")
    expect(page.locator("#login")).to_be_visible(timeout=LONG_MS)
    expect(page.locator("#app")).to_be_hidden()
    assert "secret-agent" not in page.content()

    page.fill("#token-input", "wrong-token")
    page.click("#token-submit")
    expect(page.locator("#login-error")).to_contain_text("refused")
    expect(page.locator("#app")).to_be_hidden()

    page.fill("#token-input", ADMIN)
    page.click("#token-submit")
    expect(page.locator("#app")).to_be_visible(timeout=LONG_MS)
    expect(page.locator('#fleet-list .vrow[data-agent-id="secret-agent"]')).to_be_visible()
    assert page.evaluate("Object.values(sessionStorage)") == [ADMIN]
    assert page.evaluate("localStorage.length") == 0

    page.reload()  # the same tab keeps it
    expect(page.locator('#fleet-list .vrow[data-agent-id="secret-agent"]')).to_be_visible(
        timeout=LONG_MS
    )
    expect(page.locator("#login")).to_be_hidden()

    api_calls = [r for r in tab.requests if re.search(r"/(stats|agents|events)\b", r.url)]
    assert api_calls
    assert all(ADMIN not in r.url for r in tab.requests)
    assert all(r.headers.get("authorization") == f"Bearer {ADMIN}" for r in api_calls[-5:])

    page.click("#sign-out")  # "Forget token": asked again at once
    expect(page.locator("#login")).to_be_visible(timeout=LONG_MS)
    assert page.evaluate("sessionStorage.length") == 0

    other = browser.new_context()  # another tab's session: asked again
    try:
        fresh = other.new_page()
        fresh.goto(f"{server.url}/ui/")
        expect(fresh.locator("#login")).to_be_visible(timeout=LONG_MS)
    finally:
        other.close()


HOSTILE = "<img src=x onerror=window.__pwned=1>"
SCRIPT = "<script>window.__pwned=2</script>"


def test_api_values_show_as_text_and_nothing_in_them_runs(tab, server, api):
    token = api.register(
        "x1", metadata={"host": HOSTILE, "pid": SCRIPT, "note": SCRIPT}, capabilities=["c"]
    )
    api.call(
        "POST",
        "/tasks/assign",
        {
            "task_id": "x-task",
            "agent_id": "x1",
            "max_attempts": 1,
            "payload": {"html": SCRIPT, "img": HOSTILE},
        },
    )
    api.call("POST", "/agents/x1/heartbeat", token=token)
    api.call("POST", "/tasks/x-task/fail", {"agent_id": "x1", "error": HOSTILE}, token)
    page = tab.page

    def no_markup_ran() -> None:
        assert page.evaluate("window.__pwned") is None
        assert page.locator("#view img, #view script").count() == 0

    open_view(tab, server, "fleet")
    row = page.locator('#fleet-list .vrow[data-agent-id="x1"]')
    expect(row).to_contain_text(HOSTILE)
    expect(row).to_contain_text(SCRIPT)
    no_markup_ran()
    go(tab, "agents/x1")
    expect(page.locator("#agent-page")).to_contain_text(HOSTILE)
    expect(page.locator("#agent-page")).to_contain_text("window.__pwned=2")
    no_markup_ran()
    go(tab, "tasks")
    expect(page.locator("#tasks-dead")).to_contain_text(HOSTILE)
    no_markup_ran()
    go(tab, "tasks/x-task")
    expect(page.locator("#task-page")).to_contain_text(SCRIPT.replace('"', '\\"'))
    expect(page.locator("#task-page")).to_contain_text(HOSTILE)
    no_markup_ran()
    go(tab, "events")
    page.fill("#event-text", "x-task")
    expect(page.locator("#event-list")).to_contain_text(HOSTILE)
    no_markup_ran()
    assert tab.errors == [] and tab.dialogs == []


# ------------------------------------------------------------------- scale

FLEET = 10_000


def register_many(url: str, count: int) -> float:
    """Register ``count`` agents over keep-alive connections, as bench/ does."""
    local = threading.local()

    def one(n: int) -> None:
        client = getattr(local, "client", None) or Client(url)
        local.client = client
        body = {"agent_id": f"agent-{n:05d}", "agent_type": "bulk", "capabilities": ["bulk"]}
        client.ok("/agents/register", body)

    started = time.monotonic()
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(one, range(count)))
    return time.monotonic() - started


def test_ten_thousand_agents_render_and_scroll(tab, server):
    register_many(server.url, FLEET)
    page = tab.page
    open_view(tab, server, "fleet")
    summary = page.locator("#fleet-summary")
    expect(summary).to_contain_text(f"{FLEET} of {FLEET} agents", timeout=LONG_MS)
    expect(page.locator('#fleet-list .vrow[data-agent-id="agent-00000"]')).to_be_visible()
    in_page = page.locator("#fleet-list .vrow").count()
    assert 10 < in_page < 200, in_page  # only the rows in sight exist

    viewport = page.locator("#fleet-list")
    viewport.evaluate("v => { v.scrollTop = v.scrollHeight; }")
    expect(page.locator('#fleet-list .vrow[data-agent-id="agent-09999"]')).to_be_visible(
        timeout=LONG_MS
    )
    viewport.evaluate("v => { v.scrollTop = v.scrollHeight / 2; }")
    expect(page.locator('#fleet-list .vrow[data-agent-id="agent-05000"]')).to_be_visible(
        timeout=LONG_MS
    )
    viewport.hover()
    page.mouse.wheel(0, 3000)  # as a person scrolls
    expect(page.locator('#fleet-list .vrow[data-agent-id="agent-05100"]')).to_be_visible(
        timeout=LONG_MS
    )
    assert page.locator("#fleet-list .vrow").count() < 200
    shot(tab, "fleet-10000")

    listing = [r.url for r in tab.requests if "/agents?" in r.url]
    assert len(listing) < 60, len(listing)  # pages of the list, not one request per agent
    assert all("limit=200" in url for url in listing)
    page.select_option("#filter-status", "registered")
    expect(summary).to_contain_text(f"{FLEET} of {FLEET}")
    assert tab.errors == []
