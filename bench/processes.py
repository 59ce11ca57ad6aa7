"""Start the servers a benchmark measures, each in its own process."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

LISTENING = re.compile(r"listening on (http://[\d.]+:\d+)")


@dataclass
class Process:
    popen: subprocess.Popen[str]
    url: str = ""
    output: list[str] = field(default_factory=list)
    # Warnings and errors apart: ``output`` keeps only the first lines, and a long run
    # (make soak) logs its warnings after them.
    warnings: list[str] = field(default_factory=list)

    def rss_mb(self) -> float:
        """Resident memory of the process now, from /proc."""
        with open(f"/proc/{self.popen.pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(15)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)


def start(args: list[str], env: dict[str, str] | None = None, timeout_s: float = 30) -> Process:
    popen = subprocess.Popen(
        [sys.executable, *args],
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    process = Process(popen)
    found = threading.Event()

    def read() -> None:
        assert popen.stdout is not None
        for line in popen.stdout:
            if len(process.output) < 2000:
                process.output.append(line)
            if (" WARNING " in line or " ERROR " in line) and len(process.warnings) < 2000:
                process.warnings.append(line)
            match = LISTENING.search(line)
            if match and not found.is_set():
                process.url = match.group(1)
                found.set()

    threading.Thread(target=read, daemon=True).start()
    deadline = time.monotonic() + timeout_s
    while not found.wait(0.05):
        if popen.poll() is not None or time.monotonic() > deadline:
            popen.kill()
            raise RuntimeError("server did not start:\n" + "".join(process.output[-20:]))
    return process


def orchestrator(db_path: str, threads: int = 8, **env: str) -> Process:
    return start(
        ["-m", "orch", "serve"],
        {
            "ORCHESTRATOR_HOST": "127.0.0.1",
            "ORCHESTRATOR_PORT": "0",
            "ORCH_DB": db_path,
            "ORCH_DB_SYNC": "full",
            "ORCH_HTTP_THREADS": str(threads),
            "TODO_SERVICE_URL": "",
            "GATEWAY_URL": "",
            "LOG_LEVEL": "INFO",
            "ORCH_HEARTBEAT_INTERVAL_S": "3600",
            **env,
        },
    )


def reference(threads: int = 8) -> Process:
    return start(["-m", "bench.reference", "--port", "0", "--threads", str(threads)])
