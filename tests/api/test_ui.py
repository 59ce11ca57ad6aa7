"""The dashboard's files: served from the package, typed, cached, fenced by a CSP.

What the page does with them is tested in Chromium (tests/e2e/test_dashboard.py);
here, what the server sends, and that a non-editable install would ship it.
"""

import os
import re
import subprocess
import sys
from importlib import resources
from pathlib import Path

import falcon.testing
import pytest

from orch import Orchestrator, Settings
from orch.http.app import create_app
from orch.http.resources.ui import CONTENT_TYPES, load_files
from tests.api.conftest import ADMIN_TOKEN, assert_problem

REPO = Path(__file__).resolve().parents[2]
UI_DIR = REPO / "orch" / "http" / "ui"
UI_FILES = sorted(p.relative_to(UI_DIR).as_posix() for p in UI_DIR.rglob("*") if p.is_file())


def test_every_file_of_the_dashboard_is_found_through_importlib_resources():
    served = load_files()
    assert sorted(served) == UI_FILES
    assert "index.html" in served and "app.js" in served and "views/fleet.js" in served
    packaged = resources.files("orch.http") / "ui" / "app.js"
    assert packaged.read_bytes() == (UI_DIR / "app.js").read_bytes()


def test_a_built_package_ships_every_file_of_the_dashboard(tmp_path):
    """What a wheel (a non-editable install) would hold: setuptools' ``build_py``
    copies the packages and their ``package_data`` from setup.cfg; the copy must
    serve every file, found through importlib.resources from there."""
    built = subprocess.run(
        [
            sys.executable,
            "-c",
            "from setuptools import setup; setup()",
            "-q",
            "build_py",
            "--build-lib",
            str(tmp_path),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert built.returncode == 0, built.stderr
    shipped = tmp_path / "orch" / "http" / "ui"
    assert (
        sorted(p.relative_to(shipped).as_posix() for p in shipped.rglob("*") if p.is_file())
        == UI_FILES
    )
    probe = (
        "import orch.http.resources.ui as ui, orch; "
        "print(orch.__file__); print(sorted(ui.load_files()))"
    )
    found = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
        timeout=60,
    )
    assert found.returncode == 0, found.stderr
    where, names = found.stdout.splitlines()
    assert where.startswith(str(tmp_path))  # the built copy, not this checkout
    assert names == repr(UI_FILES)


def test_root_redirects_to_the_dashboard(client):
    answer = client.simulate_get("/")
    assert answer.status_code == 302
    assert answer.headers["Location"] == "/ui/"


@pytest.mark.parametrize("path", ["/ui/", "/ui"])
def test_the_page_is_html_with_a_strict_content_security_policy(client, path):
    answer = client.simulate_get(path)
    assert answer.status_code == 200
    assert answer.headers["Content-Type"] == "text/html; charset=utf-8"
    assert answer.content == (UI_DIR / "index.html").read_bytes()
    policy = answer.headers["Content-Security-Policy"]
    assert "default-src 'none'" in policy
    assert "script-src 'self'" in policy and "style-src 'self'" in policy
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
    assert "frame-ancestors 'none'" in policy
    assert answer.headers["X-Content-Type-Options"] == "nosniff"
    assert answer.headers["Cache-Control"] == "no-cache"


@pytest.mark.parametrize("name", UI_FILES)
def test_each_file_is_served_with_its_type_and_an_etag(client, name):
    answer = client.simulate_get(f"/ui/{name}")
    assert answer.status_code == 200, answer.text
    assert answer.content == (UI_DIR / name).read_bytes()
    assert answer.headers["Content-Type"] == CONTENT_TYPES["." + name.rpartition(".")[2]]
    assert "Content-Security-Policy" in answer.headers
    etag = answer.headers["ETag"]
    again = client.simulate_get(f"/ui/{name}", headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""
    other = client.simulate_get(f"/ui/{name}", headers={"If-None-Match": '"stale"'})
    assert other.status_code == 200 and other.content == answer.content


def test_head_answers_without_a_body(client):
    answer = client.simulate_head("/ui/app.js")
    assert answer.status_code == 200 and answer.content == b""
    assert answer.headers["Content-Type"] == CONTENT_TYPES[".js"]


@pytest.mark.parametrize(
    "path, status",
    [
        ("/ui/nothing.js", 404),
        ("/ui/app.py", 404),
        ("/ui/views/../app.js", 404),
        ("/ui/..", 400),
        ("/ui/%2e%2e", 400),
        ("/ui/views/..", 400),
        ("/ui/views/%2e%2e%2fapp.js", 400),
        ("/ui/..%2f..%2fsetup.cfg", 400),
        ("/ui/views", 404),
        ("/ui/views/views", 404),
        ("/ui/__init__.py", 404),
    ],
)
def test_no_path_reaches_outside_the_dashboards_files(client, path, status):
    answer = client.simulate_get(path)
    assert_problem(answer, status)
    assert b"[metadata]" not in answer.content


def test_the_page_loads_without_the_admin_token_but_the_api_does_not():
    orch = Orchestrator(Settings(admin_token=ADMIN_TOKEN)).start()
    try:
        client = falcon.testing.TestClient(create_app(orch))
        assert client.simulate_get("/ui/").status_code == 200
        assert client.simulate_get("/ui/api.js").status_code == 200
        assert client.simulate_get("/").status_code == 302
        assert_problem(client.simulate_get("/stats"), 401)
        assert_problem(client.simulate_get("/agents"), 401)
    finally:
        orch.stop()


def test_the_dashboards_routes_are_not_in_the_api_document(client):
    paths = client.simulate_get("/openapi.json").json["paths"]
    assert not [p for p in paths if p == "/" or p.startswith("/ui")]


# ------------------------------------------------ what the sources never do

#: Ways to turn a string into markup or code; the page renders API values as text.
MARKUP_SINKS = re.compile(
    r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|\beval\(|new Function|"
    r"setAttribute\(\s*[\"'](?:on|style|href|src)"
)


@pytest.mark.parametrize("name", [n for n in UI_FILES if n.endswith(".js")])
def test_scripts_never_turn_data_into_markup(name):
    source = (UI_DIR / name).read_text()
    assert not MARKUP_SINKS.search(source), MARKUP_SINKS.search(source)


def test_the_page_has_no_inline_script_style_or_handler():
    page = (UI_DIR / "index.html").read_text()
    scripts = re.findall(r"<script\b[^>]*>", page)
    assert scripts and all("src=" in tag for tag in scripts)
    assert "<style" not in page
    assert not re.search(r"\sstyle=", page)
    assert not re.search(r"\son[a-z]+=", page)


def test_the_token_never_goes_into_a_url():
    """It is kept in sessionStorage and sent only in the Authorization header."""
    api = (UI_DIR / "api.js").read_text()
    assert "sessionStorage" in api and "Authorization" in api
    assert "localStorage" not in "".join((UI_DIR / n).read_text() for n in UI_FILES)
    for name in UI_FILES:
        text = (UI_DIR / name).read_text()
        assert not re.search(r"[?&](token|access_token)=", text), name
