"""A real PostgreSQL for the tests: Debian's server, started in a temp dir on a free loopback port.

One server per test session (`postgres_server`), a fresh database per test made from a migrated
template (`postgres_url`), and `catalog_url`, parametrised over both backends, for the catalog
and end-to-end tests. Run as root, the server runs as the `postgres` user (it refuses root).
Missing binaries fail the tests that need them: nothing here skips.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

BIN = Path(os.environ.get("WITHCACHE_PG_BIN", "/usr/lib/postgresql/15/bin"))
TEMPLATE = "withcache_template"
START_TIMEOUT = 30.0
STOP_GRACE = 10.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    """One throwaway cluster (trust authentication on 127.0.0.1 only); start, restart, stop."""

    def __init__(self) -> None:
        for tool in ("initdb", "postgres", "pg_isready"):
            if not (BIN / tool).exists():
                raise RuntimeError(
                    f"PostgreSQL is not installed ({BIN / tool} missing): apt-get install"
                    " postgresql (./dev test and .ci/run do)"
                )
        self.root = Path(tempfile.mkdtemp(prefix="withcache-pg-"))
        self.data = self.root / "data"
        self.port = 0
        self.process: subprocess.Popen | None = None
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(self.root, user.pw_uid, user.pw_gid)
            self._as_user = ["runuser", "-u", "postgres", "--"]
        subprocess.run(
            [*self._as_user, str(BIN / "initdb"), "-D", str(self.data), "-A", "trust",
             "-U", "postgres", "--no-sync", "-E", "UTF8", "--locale", "C"],
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        """Start on a free port (a new one unless restarting), waiting until it accepts."""
        for _attempt in range(5):
            self.port = self.port or free_port()
            with open(self.root / "log", "ab") as log:
                self.process = self._spawn(log)
            if self._wait_ready():
                return
            self.stop()
            self.port = 0  # another process took the port meanwhile: try another
        raise RuntimeError(f"PostgreSQL did not start; see {self.root / 'log'}")

    def _spawn(self, log) -> subprocess.Popen:
        return subprocess.Popen(
                [*self._as_user, str(BIN / "postgres"), "-D", str(self.data),
                 "-c", "listen_addresses=127.0.0.1", "-p", str(self.port), "-k", str(self.root),
                 # A test cluster: durability is not what is tested here; speed is welcome.
                 "-c", "fsync=off", "-c", "synchronous_commit=off",
                 "-c", "full_page_writes=off", "-c", "max_connections=200"],
                stdout=subprocess.DEVNULL, stderr=log, start_new_session=True,
            )  # fmt: skip

    def _wait_ready(self) -> bool:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                return False
            ready = subprocess.run(
                [str(BIN / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port)],
                timeout=10,
            )
            if ready.returncode == 0:
                return True
            time.sleep(0.1)
        return False

    def stop(self) -> None:
        """Fast shutdown (SIGINT); SIGKILL of its process group after a grace period."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(STOP_GRACE)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(STOP_GRACE)

    def restart(self) -> None:
        """Stop and start again on the same port and data (what an operator's restart does)."""
        self.stop()
        self.start()

    def sql(self, statement: str, database: str = "postgres") -> None:
        """One statement in autocommit (CREATE/DROP DATABASE cannot run in a transaction)."""
        import psycopg

        with psycopg.connect(self.url(database), autocommit=True) as conn:
            conn.execute(statement)

    def make_template(self) -> None:
        """A database migrated to the newest schema, that each test's database is copied from."""
        from withcache import catalog as cat

        self.sql(f"CREATE DATABASE {TEMPLATE}")
        conn = cat.connect(self.url(TEMPLATE))
        conn.close()

    def new_database(self) -> str:
        name = f"t_{secrets.token_hex(6)}"
        self.sql(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE}")
        return name

    def drop_database(self, name: str) -> None:
        self.sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def running_server(template: bool = True):
    server = PostgresServer()
    try:
        server.start()
        if template:
            server.make_template()
        yield server
    finally:
        server.remove()


@pytest.fixture(scope="session")
def postgres_server():
    """The session's PostgreSQL server (started on first use)."""
    with running_server() as server:
        yield server


@pytest.fixture
def postgres_url(postgres_server):
    """A fresh, migrated PostgreSQL catalog for one test: its URL."""
    name = postgres_server.new_database()
    yield postgres_server.url(name)
    postgres_server.drop_database(name)


@pytest.fixture(params=["sqlite", "postgresql"])
def catalog_url(request, tmp_path):
    """A fresh catalog on each backend: a SQLite file's path, or a PostgreSQL database's URL."""
    if request.param == "sqlite":
        return str(tmp_path / "cache.db")
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def conn(catalog_url):
    """A connection to a fresh catalog on each backend (withcache.catalog.connect), closed after."""
    from withcache import catalog as cat

    c = cat.connect(catalog_url)
    yield c
    c.close()
