"""What a node serves: the leader's own app, or the leader reached through this node.

A client may use any node of a cluster. ``NodeApp`` is the WSGI app a clustered
server runs: on the leader it hands every request to the term's app (the ordinary
Falcon app); on a standby it answers ``/health``, ``/health/ready`` and ``/metrics``
itself and forwards everything else to the leader unchanged (method, path, query,
headers with Authorization, body; the answer's status, headers and body back).

Every upstream call is bounded: a connection within ``CONNECT_TIMEOUT_S``, an answer
within the ask timeout and a margin, plus the wait the request itself asks for (a
lock wait's ``wait_s``, an event long poll's ``wait``, each capped as the leader caps
it), so a forwarded request pins a waitress worker hardly longer than the same
request at the leader would, even when the leader is frozen. Each worker has
its own pooled ``requests.Session``, so forwarding reuses connections without
locks. With no leader known, or a leader that does not answer, the answer is 503
``no_leader`` with ``Retry-After``: clients with several URLs move on.
"""

from __future__ import annotations

import bisect
import itertools
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from urllib.parse import parse_qs, quote

import msgspec
import requests
from prometheus_client import CollectorRegistry, exposition
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric

from orch.http.errors import PROBLEM_JSON, PROBLEM_TYPE
from orch.node import Node, NodeCollector

#: How long a forwarded request may take to reach the leader.
CONNECT_TIMEOUT_S = 2.0
#: Added to the longest wait a request may ask for: the leader's own work and the trip.
ANSWER_MARGIN_S = 10.0
#: A request forwarded once is never forwarded again (a stale view of the leader).
FORWARDED_HEADER = "X-June-Forwarded-By"
_FORWARDED_ENVIRON = "HTTP_X_JUNE_FORWARDED_BY"
#: Headers that belong to one connection, not to the request (RFC 9110, 7.6.1).
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)
#: Answer headers waitress sets itself for this connection (it would add a Via).
SERVER_SET = frozenset({"server", "date"})
#: Upper bounds (seconds) of the forwarded-request latency histogram.
FORWARD_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
#: Paths a standby answers itself.
LOCAL_PATHS = frozenset({"/health", "/health/ready", "/metrics"})

StartResponse = Callable[..., Any]
_encoder = msgspec.json.Encoder()


def _problem(start_response: StartResponse, detail: str) -> list[bytes]:
    body = _encoder.encode(
        {
            "type": PROBLEM_TYPE.format(code="no_leader"),
            "title": "Not the leader",
            "status": 503,
            "detail": detail,
            "code": "no_leader",
        }
    )
    start_response(
        "503 Service Unavailable",
        [
            ("Content-Type", PROBLEM_JSON),
            ("Content-Length", str(len(body))),
            ("Retry-After", "1"),
        ],
    )
    return [body]


def _json(start_response: StartResponse, status: str, body: dict[str, Any]) -> list[bytes]:
    data = _encoder.encode(body)
    start_response(
        status, [("Content-Type", "application/json"), ("Content-Length", str(len(data)))]
    )
    return [data]


def asked_wait_s(path: str, query: str, body: bytes | None) -> float:
    """The wait a request asks the leader for: ``wait`` of an event long poll,
    ``wait_s`` of a lock acquisition; 0 for anything else or anything unreadable
    (the leader, not the forwarder, refuses bad input)."""
    try:
        if path == "/events":
            return max(0.0, float(parse_qs(query).get("wait", ["0"])[-1]))
        if path.endswith("/acquire") and body:
            asked = msgspec.json.decode(body)
            return max(0.0, float(asked.get("wait_s", 0))) if isinstance(asked, dict) else 0.0
    except (ValueError, TypeError, msgspec.DecodeError):
        return 0.0
    return 0.0


class Forwarder:
    """Sends one WSGI request to the leader and its answer back; counts what it did.

    The leader gets ``answer_timeout_s`` to answer, plus the wait the request asked
    for, up to ``max_wait_s`` (the longest wait the API grants).
    """

    def __init__(
        self,
        answer_timeout_s: float,
        advertise_url: Callable[[], str],
        max_wait_s: float = 0.0,
    ) -> None:
        self._answer_timeout_s = answer_timeout_s
        self._max_wait_s = max_wait_s
        self._local = threading.local()
        self._advertise_url = advertise_url
        # Plain numbers, written by workers, read at scrape time (each += is one
        # bytecode on an int under the GIL in practice; a lost increment would only
        # make a metric a touch low, so no lock on the forwarding path).
        self._counts: dict[str, int] = {}
        self._buckets = [0] * (len(FORWARD_BUCKETS_S) + 1)
        self._seconds = 0.0

    def _session(self) -> requests.Session:
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.trust_env = False  # the leader is reached directly, never via a proxy
            session.headers.clear()  # send the client's headers, not requests' defaults
            self._local.session = session
        return session

    def __call__(
        self, environ: dict[str, Any], start_response: StartResponse, leader: str | None
    ) -> Iterable[bytes]:
        if leader is None:
            return _problem(start_response, "no node leads the cluster right now; retry")
        if environ.get(_FORWARDED_ENVIRON):
            return _problem(
                start_response,
                "this node is not the leader any more; retry (the cluster is changing leader)",
            )
        started = time.perf_counter()
        headers = {
            key[5:].replace("_", "-").title(): value
            for key, value in environ.items()
            if key.startswith("HTTP_") and key[5:].replace("_", "-").lower() not in HOP_BY_HOP
        }
        if environ.get("CONTENT_TYPE"):
            headers["Content-Type"] = environ["CONTENT_TYPE"]
        headers[FORWARDED_HEADER] = self._advertise_url()
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length > 0 else None
        # PATH_INFO is the path's bytes decoded as latin-1 (PEP 3333): quote those bytes.
        raw_path = (environ.get("PATH_INFO") or "/").encode("latin-1")
        path = quote(raw_path, safe="/:@!$&'()*+,;=-._~")
        query = environ.get("QUERY_STRING")
        url = f"{leader}{path}{'?' + query if query else ''}"
        waits = min(
            self._max_wait_s, asked_wait_s(environ.get("PATH_INFO") or "/", query or "", body)
        )
        timeout = (CONNECT_TIMEOUT_S, self._answer_timeout_s + waits)
        try:
            answer = self._session().request(
                environ["REQUEST_METHOD"],
                url,
                headers=headers,
                data=body,
                stream=True,
                allow_redirects=False,
                timeout=timeout,
            )
            try:
                content = answer.raw.read(decode_content=False)
            finally:
                answer.close()
        except requests.RequestException as exc:
            self._count("failed", started)
            return _problem(
                start_response,
                f"the leader at {leader} did not answer ({type(exc).__name__}); retry",
            )
        self._count(f"{answer.status_code // 100}xx", started)
        out = [
            (name, value)
            for name, value in answer.raw.headers.items()
            if name.lower() not in HOP_BY_HOP and name.lower() not in SERVER_SET
        ]
        out.append(("Content-Length", str(len(content))))
        start_response(f"{answer.status_code} {answer.reason or ''}".rstrip(), out)
        return [content]

    def _count(self, outcome: str, started: float) -> None:
        took = time.perf_counter() - started
        self._counts[outcome] = self._counts.get(outcome, 0) + 1
        self._buckets[bisect.bisect_left(FORWARD_BUCKETS_S, took)] += 1
        self._seconds += took

    def metrics(self) -> Iterator[Metric]:
        counts = CounterMetricFamily(
            "orchestrator_forwarded_requests",
            "Requests this standby forwarded to the leader, by the leader's answer"
            " (failed: the leader did not answer).",
            labels=["outcome"],
        )
        for outcome, count in sorted(self._counts.items()):
            counts.add_metric([outcome], float(count))
        yield counts
        buckets = list(self._buckets)
        cumulative = [
            (str(bound), float(count))
            for bound, count in zip(FORWARD_BUCKETS_S, itertools.accumulate(buckets), strict=False)
        ]
        cumulative.append(("+Inf", float(sum(buckets))))
        latency = HistogramMetricFamily(
            "orchestrator_forwarded_request_seconds",
            "Time to forward a request to the leader and have its answer.",
            buckets=cumulative,
            sum_value=self._seconds,
        )
        yield latency


class NodeApp:
    """The WSGI app of a clustered server: the term's app on the leader, forwarding
    (and its own health and metrics) on a standby. The node's role decides."""

    def __init__(self, node: Node) -> None:
        self.node = node
        s = node.settings
        self.forwarder = Forwarder(
            s.ask_timeout_s + ANSWER_MARGIN_S,
            lambda: node.advertise_url,
            max_wait_s=max(s.lock_max_wait_s, s.events_max_wait_s),
        )
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(NodeCollector(node, self.forwarder.metrics))

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = (environ.get("PATH_INFO") or "/").rstrip("/") or "/"
        term = self.node.term
        if path == "/metrics":
            return self._metrics(environ, start_response, term)
        if term is not None and term.app is not None:
            return term.app(environ, start_response)  # type: ignore[no-any-return]
        if path == "/health" and environ["REQUEST_METHOD"] in ("GET", "HEAD"):
            # "healthy" as the leader says it: a standby that answers is a healthy node
            # (the CLI's health command and container checks read this word).
            return _json(
                start_response,
                "200 OK",
                {"status": "healthy", "role": "standby", "leader": self.node.leader_url},
            )
        if path == "/health/ready" and environ["REQUEST_METHOD"] in ("GET", "HEAD"):
            return _json(
                start_response,
                "503 Service Unavailable",
                {"ready": False, "role": "standby", "leader": self.node.leader_url},
            )
        return self.forwarder(environ, start_response, self.node.leader_url)

    def _metrics(
        self, environ: dict[str, Any], start_response: StartResponse, term: Any
    ) -> list[bytes]:
        """The node's metrics, and on the leader the term's too, in one exposition."""
        encoder, content_type = exposition.choose_encoder(environ.get("HTTP_ACCEPT") or "")
        parts = [encoder(self.registry)]
        if term is not None:
            parts.insert(0, encoder(term.orchestrator.metrics.registry))
        if content_type.startswith("application/openmetrics"):
            # One "# EOF" only, at the end.
            parts = [part.replace(b"# EOF\n", b"") for part in parts] + [b"# EOF\n"]
        data = b"".join(parts)
        start_response(
            "200 OK", [("Content-Type", content_type), ("Content-Length", str(len(data)))]
        )
        return [data]
