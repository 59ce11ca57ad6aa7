"""The dashboard: its static files, served from the package, and ``/`` pointing there.

The files (``orch/http/ui/``) are read once, when the app is built, into a table
keyed by their path under ``/ui/``; a request is answered from that table only, so no
path it names can reach another file (``..``, encoded slashes and absolute paths are
simply not keys, and the guard refuses them before that). They hold no data: the
page itself is public, and every call it makes to the API carries the admin token
the operator typed (see README, "Dashboard").
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable

import falcon

from orch.errors import NotFound
from orch.http.auth import Scope
from orch.http.resources.base import Resource

#: The package and folder the dashboard's files ship in (setup.cfg ``package_data``).
UI_PACKAGE = "orch.http"
UI_FOLDER = "ui"

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
}

#: Scripts and styles only from this origin, never inline; API calls only to it; no
#: framing, forms, plugins or base-URI tricks. Every value from the API is rendered
#: as text by the page; this is the net under that rule.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ]
)

SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    # Revalidate every time (a 304 is cheap): an upgraded server must not be shown
    # through yesterday's scripts.
    "Cache-Control": "no-cache",
}


@dataclass(frozen=True, slots=True)
class StaticFile:
    """One file of the dashboard as it is sent."""

    body: bytes
    content_type: str
    etag: str


def load_files(root: Traversable | None = None) -> dict[str, StaticFile]:
    """Every servable file under ``root`` by its path below it (``views/fleet.js``).

    Files of other types than ``CONTENT_TYPES`` are not served (nothing else ships).
    """
    root = root or resources.files(UI_PACKAGE) / UI_FOLDER
    found: dict[str, StaticFile] = {}

    def walk(folder: Traversable, prefix: str) -> None:
        for item in folder.iterdir():
            if item.is_dir():
                walk(item, f"{prefix}{item.name}/")
                continue
            suffix = "." + item.name.rpartition(".")[2]
            if suffix not in CONTENT_TYPES:
                continue
            body = item.read_bytes()
            etag = hashlib.sha256(body).hexdigest()[:32]
            found[prefix + item.name] = StaticFile(body, CONTENT_TYPES[suffix], etag)

    walk(root, "")
    if "index.html" not in found:
        raise RuntimeError(f"the dashboard's files are missing from {root}")
    return found


class _Files(Resource):
    """Shared by the dashboard's routes: the file table, sending one file."""

    scopes = {"GET": Scope.PUBLIC, "HEAD": Scope.PUBLIC}

    def _send(self, req: falcon.Request, resp: falcon.Response, path: str) -> None:
        static = self.options["ui_files"].get(path)
        if static is None:
            raise NotFound(f"the dashboard has no file {path!r}")
        resp.set_headers(SECURITY_HEADERS)
        resp.etag = static.etag
        if req.if_none_match and any(tag in ("*", static.etag) for tag in req.if_none_match):
            resp.status = falcon.HTTP_304  # the browser's copy is current: no body, no type
            return
        resp.content_type = static.content_type
        resp.data = static.body


class DashboardIndex(_Files):
    """``GET /ui/``: the page itself."""

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        """The dashboard's HTML page (public: it holds no data)."""
        self._send(req, resp, "index.html")

    on_head = on_get


class DashboardFile(_Files):
    """``GET /ui/{name}``: a script or style sheet of the page.

    ``name`` is checked as an id like every path parameter (``orch/http/guards.py``):
    letters, digits and ``._:-``, never only dots, so it cannot climb out of the
    folder even before the table is consulted.
    """

    folder = ""

    def on_get(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        """One of the dashboard's files, by its name below ``/ui/``."""
        self._send(req, resp, self.folder + name)

    on_head = on_get


class DashboardView(DashboardFile):
    """``GET /ui/views/{name}``: the module of one view."""

    folder = "views/"


class Root(Resource):
    """``GET /``: people type the address alone; send them to the dashboard."""

    scopes = {"GET": Scope.PUBLIC, "HEAD": Scope.PUBLIC}

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        """A redirect to ``/ui/``."""
        raise falcon.HTTPFound("/ui/")

    on_head = on_get
