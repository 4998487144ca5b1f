"""Reaching a SQL database: URL and option checks, and each database's connection settings.

Why a module of its own: what must hold before the SQL backend touches a
database (an SQLite URL names a file, ``engine_options`` are what
``sqlalchemy.create_engine`` can take, the file's directory exists) and how
every connection is set up (SQLite's autocommit mode, busy timeout and
synchronous level on our own small pool and on SQLAlchemy's connections;
PostgreSQL's lock timeout) are decided once, here, for every connection the
backend and its migrations open. Using the connections is
:mod:`._sql_connections`'s business.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event

from ..errors import BackendError, InvalidArgument

__all__ = [
    "FSYNCS",
    "MAX_TIMEOUT_MS",
    "SQLITE_SYNCHRONOUS",
    "WRITE",
    "SQLiteConnections",
    "checked_engine_options",
    "install_lock_timeout",
    "prepare_sqlite_path",
    "remove_empty",
    "sqlite_connections",
    "sqlite_file_url",
]

#: Execution option of a SQLAlchemy connection that will write: SQLite begins with BEGIN IMMEDIATE.
WRITE = "gotstate_persist_write"
SQLITE_SYNCHRONOUS = ("OFF", "NORMAL", "FULL", "EXTRA")
#: Levels at which every commit is fsynced (in WAL mode NORMAL syncs at checkpoints).
FSYNCS = frozenset({"FULL", "EXTRA"})
#: PostgreSQL's lock_timeout is a 32-bit count of milliseconds (about 24 days).
MAX_TIMEOUT_MS = 2**31 - 1
_MAX_IDLE_CONNECTIONS = 8


def sqlite_file_url(url: sa.URL) -> sa.URL:
    """An SQLite URL that names a file, ``~`` expanded; anything else is refused.

    Checked before anything is created: a path the operating system would
    refuse (a NUL byte) never gets as far as a ``mkdir``.
    """
    database = url.database or ""
    memory = (
        database in ("", ":memory:")
        or "mode=memory" in database
        or url.query.get("mode") == "memory"
    )
    if memory:
        raise InvalidArgument(
            "in-memory SQLite cannot hold a store: each of the connections a store uses "
            "would see its own empty database, and all of it would vanish at close. Use a "
            "file (sqlite:///path/state.db; in tests, a file in a temporary directory), or "
            "memory://name for a store that lives as long as the process"
        )
    if "\x00" in database:
        raise InvalidArgument(
            "the SQLite path contains a NUL byte, which no file name can hold; check where "
            "the URL was built"
        )
    if database.startswith("~"):
        return url.set(database=os.path.expanduser(database))
    return url


def checked_engine_options(engine_options: object) -> dict[str, Any]:
    """``engine_options`` checked to be what ``sqlalchemy.create_engine`` can take at all."""
    if engine_options is None:
        return {}
    if not isinstance(engine_options, Mapping) or not all(
        isinstance(name, str) for name in engine_options
    ):
        raise InvalidArgument(
            "engine_options must be a dict of sqlalchemy.create_engine() keyword arguments, "
            f"got {type(engine_options).__name__}"
        )
    connect_args = engine_options.get("connect_args")
    if connect_args is not None and not (
        isinstance(connect_args, Mapping) and all(isinstance(k, str) for k in connect_args)
    ):
        raise InvalidArgument(
            "engine_options['connect_args'] must be a dict of the driver's connect() "
            f"keyword arguments, got {type(connect_args).__name__}"
        )
    return dict(engine_options)


def install_lock_timeout(engine: sa.Engine, busy_timeout_ms: int) -> None:
    """PostgreSQL: bound every lock wait of every connection, as SQLite's busy timeout does.

    Without it a save behind another session's row or table lock waits
    forever. Set once per new connection, outside any transaction (a SET
    inside one would be undone by the pool's rollback).
    """
    # lock_timeout = 0 means "wait forever" to PostgreSQL, "never wait" to us
    setting = f"SET lock_timeout = {max(busy_timeout_ms, 1)}"

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        autocommit = dbapi_connection.autocommit
        dbapi_connection.autocommit = True
        try:
            cursor = dbapi_connection.cursor()
            try:
                cursor.execute(setting)
            finally:
                cursor.close()
        finally:
            dbapi_connection.autocommit = autocommit


def prepare_sqlite_path(url: sa.URL) -> list[Path]:
    """Create the database file's directory, so ``sqlite:///.gotstate/x.db`` just works.

    Returns the directories it created, innermost first, for an open that
    then fails to take back: a refused open leaves nothing behind.
    """
    database = url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return []
    try:
        parent = Path(database).resolve().parent
        missing = []
        probe = parent
        while not probe.exists() and probe != probe.parent:
            missing.append(probe)
            probe = probe.parent
        parent.mkdir(parents=True, exist_ok=True)
        return missing
    except OSError as exc:
        raise BackendError(
            f"cannot create the directory for SQLite database {database!r}: {exc.strerror}; "
            "choose a writable path"
        ) from exc


def remove_empty(directories: Sequence[Path]) -> None:
    """Remove directories an open created, innermost first, where still empty."""
    for directory in directories:
        try:
            directory.rmdir()
        except OSError:  # not empty (the database file was made) or already gone
            return


def _configure_sqlite(conn: Any, busy_timeout_ms: int, synchronous: str) -> None:
    # WAL is set once, persistently, on databases that hold our schema
    # (Connections._use_wal): opening someone else's file must not convert it.
    conn.isolation_level = None  # autocommit: we issue BEGIN [IMMEDIATE] ourselves
    conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
    conn.execute(f"PRAGMA synchronous = {synchronous}")


def _connect_sqlite(
    cargs: Sequence[Any], cparams: Mapping[str, Any], busy_timeout_ms: int, synchronous: str
) -> sqlite3.Connection:
    conn: sqlite3.Connection = sqlite3.connect(*cargs, **{**cparams, "check_same_thread": False})
    try:
        _configure_sqlite(conn, busy_timeout_ms, synchronous)
    except BaseException:
        conn.close()
        raise
    return conn


def _install_sqlite_hooks(engine: sa.Engine, busy_timeout_ms: int, synchronous: str) -> None:
    """Same settings for SQLAlchemy's own connections (used by migrations)."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        _configure_sqlite(dbapi_connection, busy_timeout_ms, synchronous)

    @event.listens_for(engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        if conn.get_execution_options().get(WRITE):
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            conn.exec_driver_sql("BEGIN")


class SQLiteConnections:
    """A tiny LIFO pool of sqlite3 connections, one user at a time each.

    Cheaper than a general pool on the hot path (a list pop under a lock), and
    it lets us own the connection settings: autocommit mode so that we issue
    BEGIN IMMEDIATE ourselves, WAL, busy timeout, synchronous level.
    """

    def __init__(self, connect: Callable[[], sqlite3.Connection]) -> None:
        self._connect = connect
        self._idle: list[sqlite3.Connection] = []
        self._closed = False
        self._pid = os.getpid()

    def acquire(self) -> sqlite3.Connection:
        if os.getpid() != self._pid:
            # After fork() the parent's connections must not be used (SQLite's
            # rule); forget them without closing them under the parent's feet.
            self._idle, self._pid = [], os.getpid()
        try:
            return self._idle.pop()  # list.pop is atomic under the GIL
        except IndexError:
            return self._connect()

    def release(self, conn: sqlite3.Connection) -> None:
        idle = self._idle
        if len(idle) < _MAX_IDLE_CONNECTIONS:
            idle.append(conn)  # atomic under the GIL, like pop() in acquire()
            if self._closed:  # raced with close(): drain again
                self.close()
            return
        conn.close()

    def close(self) -> None:
        self._closed = True
        while True:
            try:
                conn = self._idle.pop()
            except IndexError:
                return
            conn.close()


def sqlite_connections(
    engine: sa.Engine, url: sa.URL, busy_timeout_ms: int, synchronous: str
) -> SQLiteConnections:
    """Our pool of sqlite3 connections to ``url``; SQLAlchemy's own get the same settings."""
    _install_sqlite_hooks(engine, busy_timeout_ms, synchronous)
    cargs, cparams = engine.dialect.create_connect_args(url)
    return SQLiteConnections(lambda: _connect_sqlite(cargs, cparams, busy_timeout_ms, synchronous))
