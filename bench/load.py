"""Load generators: wrk (the real one) and a small Python fallback for smoke runs.

wrk is a separate process written in C, so the load it makes does not compete with
the server for Python's GIL; without it the figures are the Python client's limits,
which the table says. ``make bench`` tells how to install wrk when it is missing.
"""

from __future__ import annotations

import http.client
import json
import re
import resource
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

WRK_HINT = "wrk not found: install it with `apt-get install wrk` (Debian) for real HTTP figures"


@dataclass(frozen=True)
class LoadResult:
    requests_per_s: float
    p99_ms: float
    errors: int
    tool: str


class Client:
    """One keep-alive HTTP/1.1 connection, for one client thread at a time.

    The scenarios that need answers (tokens, fencing tokens) drive the server from
    Python threads on the same 2 cores as the server, so the client's cost per call
    is taken from the server. ``requests`` capped them at ~540 calls/s against the
    bare-Falcon reference; ``http.client`` on a kept-alive connection does ~2,800
    with 32 threads (bench/README.md).
    """

    def __init__(self, url: str, timeout_s: float = 60.0) -> None:
        parts = urlsplit(url)
        self._conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout_s)
        self.retry_after_s: float | None = None  # the last answer's Retry-After, if any

    def post(
        self, path: str, body: object = None, headers: dict[str, str] | None = None
    ) -> tuple[int, bytes]:
        """``(status, body)``; an empty body unless ``body`` is given (sent as JSON)."""
        sent = {**(headers or {})}
        data = b""
        if body is not None:
            data = json.dumps(body).encode()
            sent["Content-Type"] = "application/json"
        self._conn.request("POST", path, body=data, headers=sent)
        answer = self._conn.getresponse()
        retry_after = answer.getheader("Retry-After")
        self.retry_after_s = float(retry_after) if retry_after else None
        return answer.status, answer.read()

    def get(self, path: str) -> tuple[int, bytes]:
        self._conn.request("GET", path)
        answer = self._conn.getresponse()
        return answer.status, answer.read()

    def ok(self, path: str, body: object = None, headers: dict[str, str] | None = None) -> bytes:
        """POST and raise unless the answer is 2xx."""
        status, data = self.post(path, body, headers)
        if not 200 <= status < 300:
            raise RuntimeError(f"POST {path} answered {status}: {data[:300]!r}")
        return data

    def close(self) -> None:
        self._conn.close()


def _raise_open_files_limit() -> None:
    """In wrk's process: room for as many connections as the hard limit allows."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _wrk(url: str, script: str, *, threads: int, connections: int, duration_s: float) -> str:
    """Run wrk with a Lua ``script`` for ``duration_s``; its standard output."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "load.lua"
        path.write_text(script)
        return subprocess.run(
            [
                "wrk",
                f"-t{threads}",
                f"-c{connections}",
                f"-d{max(1, round(duration_s))}s",
                "--latency",
                "-s",
                str(path),
                url,
            ],
            capture_output=True,
            text=True,
            check=True,
            preexec_fn=_raise_open_files_limit,
            timeout=duration_s + 60,
        ).stdout


def have_wrk() -> bool:
    return shutil.which("wrk") is not None


def _lua_requests(
    requests: list[tuple[str, str, dict[str, str], str]], delay_ms: float | None = None
) -> str:
    """A wrk script cycling through (method, path, headers, body) requests.

    With ``delay_ms`` each connection waits that long on average (uniformly 0 to
    twice that, so connections do not fire in step) before each request, which paces
    the load (wrk has no rate option; wrk2's fork does, but is not packaged).
    """

    def row(method: str, path: str, headers: dict[str, str], body: str) -> str:
        pairs = ", ".join(f"[{json.dumps(k)}]={json.dumps(v)}" for k, v in headers.items())
        return f"{{{json.dumps(method)}, {json.dumps(path)}, {{{pairs}}}, {json.dumps(body)}}}"

    rows = ",\n".join(row(*r) for r in requests)
    return f"""
local reqs = {{
{rows}
}}
local i = math.random(#reqs)
request = function()
  i = i % #reqs + 1
  local r = reqs[i]
  return wrk.format(r[1], r[2], r[3], r[4])
end
local errors = 0
response = function(status, headers, body)
  if status >= 500 then errors = errors + 1 end
end
""" + (f"delay = function() return math.random() * {2 * delay_ms:.3f} end\n" if delay_ms else "")


CYCLE_LUA = """
-- One connection per wrk thread, each driving one agent through
-- assign (to itself) -> heartbeat (must deliver that task) -> complete.
local agents = {
%(agents)s
}
local next_index, threads = 1, {}
function setup(thread)
  thread:set("index", next_index)
  next_index = next_index + 1
  table.insert(threads, thread)
end
cycles, bad = 0, 0  -- globals: done() reads them with thread:get
local step, agent, auth, task = 0, nil, nil, nil
function init(args)
  agent = agents[index][1]
  auth = {["Authorization"] = "Bearer " .. agents[index][2],
          ["Content-Type"] = "application/json"}
end
function request()
  if step == 0 then
    task = agent .. ":" .. cycles
    return wrk.format("POST", "/tasks/assign", {["Content-Type"] = "application/json"},
      '{"task_id":"' .. task .. '","agent_id":"' .. agent .. '"}')
  elseif step == 1 then
    return wrk.format("POST", "/agents/" .. agent .. "/heartbeat", auth, "")
  end
  return wrk.format("POST", "/tasks/" .. task .. "/complete", auth, "{}")
end
function response(status, headers, body)
  if status >= 300 then
    bad = bad + 1
  elseif step == 1 and not string.find(body, '"' .. task .. '"', 1, true) then
    bad = bad + 1  -- the heartbeat did not deliver the task just assigned
  elseif step == 2 then
    cycles = cycles + 1
  end
  step = (step + 1) %% 3
end
function done(summary, latency, requests)
  local total_cycles, total_bad = 0, 0
  for _, thread in ipairs(threads) do
    total_cycles = total_cycles + thread:get("cycles")
    total_bad = total_bad + thread:get("bad")
  end
  io.write(string.format("CYCLES %%d BAD %%d SECONDS %%.3f\\n",
    total_cycles, total_bad, summary.duration / 1e6))
end
"""


def run_wrk_cycle(url: str, tokens: dict[str, str], *, duration_s: float) -> tuple[float, int]:
    """Task cycles per second driven by wrk, one connection per agent; and the errors.

    wrk calls ``request()`` without saying for which connection, so each agent gets
    a wrk thread of its own (C threads: cheap), whose Lua state is its cycle.
    """
    rows = ",\n".join(f"{{{json.dumps(a)}, {json.dumps(t)}}}" for a, t in tokens.items())
    out = _wrk(
        url,
        CYCLE_LUA % {"agents": rows},
        threads=len(tokens),
        connections=len(tokens),
        duration_s=duration_s,
    )
    found = re.search(r"CYCLES (\d+) BAD (\d+) SECONDS ([\d.]+)", out)
    if found is None:
        raise RuntimeError(f"wrk printed no cycle count:\n{out[-2000:]}")
    cycles, bad, seconds = int(found.group(1)), int(found.group(2)), float(found.group(3))
    return cycles / seconds, bad


def _ms(value: str, unit: str) -> float:
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def run_wrk(
    url: str,
    requests: list[tuple[str, str, dict[str, str], str]],
    *,
    duration_s: float,
    connections: int,
    threads: int = 2,
    rate_per_s: float | None = None,
) -> LoadResult:
    delay_ms = 1000.0 * connections / rate_per_s if rate_per_s else None
    out = _wrk(
        url,
        _lua_requests(requests, delay_ms),
        threads=threads,
        connections=connections,
        duration_s=duration_s,
    )
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out
    )
    errors = int(non_2xx.group(1)) if non_2xx else 0
    if socket_errors:
        errors += sum(int(g) for g in socket_errors.groups())
    return LoadResult(rate, _ms(*p99.groups()) if p99 else float("nan"), errors, "wrk")


def run_python(
    url: str,
    requests: list[tuple[str, str, dict[str, str], str]],
    *,
    duration_s: float,
    connections: int,
    rate_per_s: float | None = None,
) -> LoadResult:
    """Keep-alive connections from threads; good enough to prove a scenario runs."""
    pause_s = connections / rate_per_s if rate_per_s else 0.0
    parts = urlsplit(url)
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    stop = time.monotonic() + duration_s

    def worker(offset: int) -> None:
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        i = offset
        mine: list[float] = []
        while time.monotonic() < stop:
            if pause_s:
                time.sleep(pause_s)  # pacing the load, as wrk's delay() does
            method, path, headers, body = requests[i % len(requests)]
            i += 1
            started = time.perf_counter()
            conn.request(method, path, body=body or None, headers=headers)
            answer = conn.getresponse()
            answer.read()
            mine.append(time.perf_counter() - started)
            if answer.status >= 500:
                with lock:
                    errors[0] += 1
        conn.close()
        with lock:
            latencies.extend(mine)

    started = time.monotonic()
    threads = [threading.Thread(target=worker, args=(n * 7,)) for n in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    latencies.sort()
    p99 = latencies[int(len(latencies) * 0.99) - 1] * 1000 if latencies else float("nan")
    return LoadResult(len(latencies) / elapsed, p99, errors[0], "python")


def run_load(
    url, requests, *, duration_s, connections, prefer_wrk=True, rate_per_s=None
) -> LoadResult:
    """wrk when there is one, else the Python client; ``rate_per_s`` paces the load."""
    if prefer_wrk and have_wrk():
        return run_wrk(
            url, requests, duration_s=duration_s, connections=connections, rate_per_s=rate_per_s
        )
    return run_python(
        url,
        requests,
        duration_s=duration_s,
        connections=min(connections, 16),
        rate_per_s=rate_per_s,
    )
