"""A real PostgreSQL server for the tests, started and stopped by the test session.

``postgres_server`` (session) runs ``initdb`` and ``pg_ctl`` from the newest
``/usr/lib/postgresql/<version>/bin`` (``scripts/test-services.sh`` installs
them) in a temporary directory: password authentication (scram-sha-256) for
every connection, listening on a free port of 127.0.0.1 only, its unix socket
inside that directory. As root it runs them as the ``postgres`` system user,
since PostgreSQL refuses to run as root. The server is stopped and its
directory removed when the session ends.

``postgres_url`` is the URL of the test role ``gsp`` (password protected, may
create databases, not a superuser) on its own database; ``pg_url`` gives each
test a fresh, empty database owned by ``gsp`` (with the linguistic ICU
collation ``en-US`` where the server has it), dropped after the test.

Set ``GOTSTATE_PERSIST_TEST_POSTGRES_URL`` to a URL whose role may create
databases to use an existing server instead. If no server can be started the
tests are skipped with the reason, except when ``CI`` is set: CI must fail,
never skip silently.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn
from urllib.parse import quote

import pytest

__all__ = ["pg_url", "postgres_server", "postgres_url"]

ROLE = "gsp"
DATABASE = "gsp"
EXTERNAL_URL_VARIABLE = "GOTSTATE_PERSIST_TEST_POSTGRES_URL"
_ADMIN = "postgres"
_START_ATTEMPTS = 3
_TIMEOUT_S = 60
_ICU_COLLATION = "LOCALE_PROVIDER icu ICU_LOCALE 'en-US'"


@dataclass(frozen=True)
class PostgresServer:
    """A running server: the superuser's URL for fixtures, the test role's for tests."""

    admin_url: str
    host: str
    port: int
    role: str
    password: str
    database: str = DATABASE

    def url(self, database: str, *, password: str | None = None) -> str:
        """A plain ``postgresql://`` URL of the test role (psycopg 3 under SQLAlchemy 2.1)."""
        role = quote(self.role, safe="")
        secret = quote(self.password if password is None else password, safe="")
        return f"postgresql://{role}:{secret}@{self.host}:{self.port}/{database}"


class _Unavailable(Exception):
    """The server cannot be started here; the message says why."""


def _unavailable(reason: str) -> NoReturn:
    message = f"PostgreSQL test server unavailable: {reason}"
    if os.environ.get("CI"):
        pytest.fail(message + " (CI is set: failing instead of skipping)", pytrace=False)
    pytest.skip(message)


def _bin_dir() -> Path:
    """Newest ``/usr/lib/postgresql/<version>/bin`` with initdb and pg_ctl, else $PATH."""

    def version(path: Path) -> tuple[int, ...]:
        return tuple(int(part) for part in re.findall(r"\d+", path.parent.name))

    candidates = [
        path
        for path in Path("/usr/lib/postgresql").glob("*/bin")
        if (path / "initdb").is_file() and (path / "pg_ctl").is_file()
    ]
    if candidates:
        return max(candidates, key=version)
    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    if initdb and pg_ctl and Path(initdb).parent == Path(pg_ctl).parent:
        return Path(initdb).parent
    raise _Unavailable(
        "no initdb/pg_ctl under /usr/lib/postgresql/*/bin or on PATH; "
        "run `bash scripts/test-services.sh` as root (or `make services`)"
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class _Runner:
    """Runs the server's programs, as the ``postgres`` user when we are root."""

    def __init__(self) -> None:
        self.as_root = os.geteuid() == 0
        if self.as_root:
            if shutil.which("runuser") is None:
                raise _Unavailable("running as root but `runuser` is missing")
            try:
                import pwd

                entry = pwd.getpwnam(_ADMIN)
            except KeyError:
                raise _Unavailable(
                    "running as root and there is no 'postgres' system user to run the "
                    "server as (PostgreSQL refuses to run as root); install postgresql"
                ) from None
            self.uid, self.gid = entry.pw_uid, entry.pw_gid

    def own(self, path: Path) -> None:
        if self.as_root:
            os.chown(path, self.uid, self.gid)

    def run(self, *argv: str | Path) -> subprocess.CompletedProcess[str]:
        command = [str(arg) for arg in argv]
        if self.as_root:
            command = ["runuser", "-u", _ADMIN, "--", *command]
        return subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=_TIMEOUT_S,
            check=False,
            cwd="/",
        )


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no server log)"


def _start(runner: _Runner, bin_dir: Path, root: Path, admin_password: str) -> tuple[int, Path]:
    """initdb in ``root`` and start the server; return its port and data dir."""
    data, sockets, log = root / "data", root / "sockets", root / "server.log"
    pwfile = root / "pwfile"
    sockets.mkdir()
    runner.own(sockets)
    pwfile.write_text(admin_password + "\n")
    runner.own(pwfile)
    done = runner.run(
        bin_dir / "initdb",
        "--pgdata",
        data,
        "--username",
        _ADMIN,
        "--pwfile",
        pwfile,
        "--auth",
        "scram-sha-256",
        "--encoding",
        "UTF8",
        "--locale",
        "C",
        "--no-sync",
    )
    pwfile.unlink()
    if done.returncode != 0:
        raise _Unavailable(f"initdb failed ({done.returncode}): {done.stderr.strip()}")
    failures = []
    for _attempt in range(_START_ATTEMPTS):
        port = _free_port()
        options = (
            f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={sockets} "
            "-c fsync=off -c full_page_writes=off -c max_connections=200 "
            "-c log_min_messages=warning"
        )
        started = runner.run(
            bin_dir / "pg_ctl",
            "--pgdata",
            data,
            "--log",
            log,
            "--options",
            options,
            "--wait",
            "--timeout",
            str(_TIMEOUT_S),
            "start",
        )
        if started.returncode == 0:
            return port, data
        failures.append(f"port {port}: {started.stderr.strip() or started.stdout.strip()}")
    raise _Unavailable(f"pg_ctl start failed: {'; '.join(failures)}\nserver log:\n{_tail(log)}")


def _stop(runner: _Runner, bin_dir: Path, data: Path) -> None:
    runner.run(bin_dir / "pg_ctl", "--pgdata", data, "--mode", "immediate", "--wait", "stop")


_ADMIN_CONNECT_S = 60


def _admin_execute(admin_url: str, *statements: str) -> None:
    import psycopg

    # generous: a loaded two-core machine running two suites at once was seen to
    # need more than 10 s to accept a connection (a fixture error, not a test's)
    with psycopg.connect(admin_url, autocommit=True, connect_timeout=_ADMIN_CONNECT_S) as conn:
        for statement in statements:
            conn.execute(statement)


def _wait_until_accepting(admin_url: str) -> None:
    import psycopg

    deadline = time.monotonic() + _TIMEOUT_S
    while True:
        try:
            with psycopg.connect(admin_url, connect_timeout=5):
                return
        except psycopg.OperationalError as exc:
            if time.monotonic() > deadline:
                raise _Unavailable(f"the server does not accept connections: {exc}") from exc
            time.sleep(0.1)


def _external(url: str) -> PostgresServer:
    """Use a server given by URL; its role creates and drops the test databases."""
    from sqlalchemy import make_url

    parsed = make_url(url)
    return PostgresServer(
        admin_url=parsed.set(drivername="postgresql").render_as_string(hide_password=False),
        host=parsed.host or "127.0.0.1",
        port=parsed.port or 5432,
        role=parsed.username or ROLE,
        password=parsed.password or "",
        database=parsed.database or DATABASE,
    )


@contextmanager
def _running_server() -> Iterator[PostgresServer]:
    """Start a throw-away server; stop it and remove its files on exit."""
    runner = _Runner()
    bin_dir = _bin_dir()
    root = Path(tempfile.mkdtemp(prefix="gsp-pg-"))
    data: Path | None = None
    try:
        runner.own(root)
        admin_password = secrets.token_hex(16)
        port, data = _start(runner, bin_dir, root, admin_password)
        admin_url = f"postgresql://{_ADMIN}:{admin_password}@127.0.0.1:{port}/postgres"
        _wait_until_accepting(admin_url)
        server = PostgresServer(
            admin_url=admin_url,
            host="127.0.0.1",
            port=port,
            role=ROLE,
            password=f"pw-{secrets.token_hex(12)}",
        )
        _admin_execute(
            admin_url,
            f"CREATE ROLE {ROLE} LOGIN CREATEDB PASSWORD '{server.password}'",
            f"CREATE DATABASE {DATABASE} OWNER {ROLE} TEMPLATE template0",
        )
        yield server
    finally:
        if data is not None:
            _stop(runner, bin_dir, data)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """The session's PostgreSQL server (see the module docstring)."""
    external = os.environ.get(EXTERNAL_URL_VARIABLE)
    if external:
        yield _external(external)
        return
    try:
        import psycopg  # noqa: F401
    except ImportError:
        _unavailable("psycopg is not installed: pip install 'gotstate-persist[postgres]'")
    with ExitStack() as stack:
        try:
            server = stack.enter_context(_running_server())
        except _Unavailable as exc:
            _unavailable(str(exc))
        yield server


@pytest.fixture(scope="session")
def postgres_url(postgres_server: PostgresServer) -> str:
    """``postgresql://gsp:<password>@127.0.0.1:<port>/gsp``: the test role's own database."""
    return postgres_server.url(postgres_server.database)


@pytest.fixture
def pg_url(postgres_server: PostgresServer) -> Iterator[str]:
    """A fresh, empty database for this test only, owned by the test role."""
    import psycopg

    name = f"gsp_test_{secrets.token_hex(6)}"
    create = f"CREATE DATABASE {name} OWNER {postgres_server.role} TEMPLATE template0"
    try:
        # A linguistic default collation, as most production databases have:
        # code that needs byte order (listings sorted like Python's sorted())
        # must ask for it. Needs PostgreSQL >= 15 built with ICU.
        _admin_execute(postgres_server.admin_url, f"{create} {_ICU_COLLATION}")
    except psycopg.Error:
        _admin_execute(postgres_server.admin_url, create)
    try:
        yield postgres_server.url(name)
    finally:
        # FORCE: a backend a failing test left open must not keep the database alive.
        _admin_execute(postgres_server.admin_url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
