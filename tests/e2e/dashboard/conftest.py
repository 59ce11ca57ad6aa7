"""The dashboard's tests: Debian's Chromium, driven by Playwright, against a real
server process (tests/e2e/conftest.py starts it).

Never a downloaded browser: ``executable_path`` is the Debian package's binary. When
it is missing the tests fail, naming the packages; ``make test`` installs them as
root (CI).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
from playwright.sync_api import Browser, Page, sync_playwright

from tests.e2e.conftest import ServerProcess

CHROMIUM = os.environ.get("ORCH_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
#: Where the tests leave screenshots (not committed: build/ is ignored).
BUILD = Path(__file__).resolve().parents[2] / "build"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(
            f"{CHROMIUM} is missing: the dashboard's tests need Debian's Chromium "
            "(apt-get install chromium chromium-driver; `make test` does it as root)",
            pytrace=False,
        )
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


@dataclass
class Watched:
    """A page with every console error, page error and request it made."""

    page: Page
    errors: list[str] = field(default_factory=list)
    requests: list[Any] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)


def watch(page: Page) -> Watched:
    watched = Watched(page)
    page.on(
        "console",
        lambda m: watched.errors.append(f"console: {m.text}") if m.type == "error" else None,
    )
    page.on("pageerror", lambda e: watched.errors.append(f"page error: {e}"))
    page.on("request", lambda request: watched.requests.append(request))

    def on_dialog(dialog: Any) -> None:
        watched.dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", on_dialog)
    return watched


@pytest.fixture
def tab(browser: Browser) -> Iterator[Watched]:
    """A fresh tab in its own context (its own sessionStorage)."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        yield watch(context.new_page())
    finally:
        context.close()


class Api:
    """The REST API as the tests seed it (admin token when the server has one)."""

    def __init__(self, url: str, admin_token: str | None = None) -> None:
        self.url = url
        self.session = requests.Session()
        if admin_token:
            self.session.headers["Authorization"] = f"Bearer {admin_token}"

    def call(self, method: str, path: str, body: Any = None, token: str | None = None) -> Any:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        answer = self.session.request(
            method, self.url + path, json=body, headers=headers, timeout=30
        )
        assert answer.status_code < 300, f"{method} {path}: {answer.status_code} {answer.text}"
        return answer.json()

    def register(self, agent_id: str, agent_type: str = "impl", start: bool = True, **fields):
        body = {"agent_id": agent_id, "agent_type": agent_type, **fields}
        token = self.call("POST", "/agents/register", body)["token"]
        if start:
            self.call("POST", f"/agents/{agent_id}/start")
            self.call("POST", f"/agents/{agent_id}/heartbeat", token=token)
        return token


@pytest.fixture
def api(server: ServerProcess) -> Api:
    return Api(server.url)
