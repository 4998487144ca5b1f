"""SQL backend: SQLite embedded by default, any SQLAlchemy database by URL.

Each sealed blob is one row of ``gotstate_persist_records``. The per-key
bookkeeping row in ``gotstate_persist_keys`` is the compare-and-set: an append
updates it *only if* ``last_version`` is still the one the writer saw, in the
same transaction as the insert of the blob, so an append either wins
atomically or fails with ``VersionConflict`` — no check-then-write race.

SQLAlchemy provides the URL handling, the dialect, connection pooling for
server databases and the alembic migrations. The hot paths (head, put, get)
then run a handful of fixed statements straight on the DBAPI connection: for
an embedded database, SQLAlchemy's per-statement machinery would cost more
than SQLite's own work (the benchmark compares against raw ``sqlite3``).

SQLite runs in WAL mode (readers never block the writer) with a busy timeout
and ``synchronous=FULL`` by default, and every write transaction starts with
``BEGIN IMMEDIATE``: the write lock is taken up front, so writers from several
processes queue on it instead of deadlocking on a lock upgrade.
"""

from __future__ import annotations

import logging
import re
import sqlite3
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy import exc as sa_exc

from ..errors import BackendError, FormatError, InvalidArgument, NotFound, VersionConflict
from ..migrations import ensure_schema
from .base import Backend, Capabilities, KeyHead, Usage, VersionInfo

__all__ = ["SQLBackend"]

logger = logging.getLogger(__name__)

_WRITE = "gotstate_persist_write"
_SQLITE_SYNCHRONOUS = ("OFF", "NORMAL", "FULL", "EXTRA")
DEFAULT_BUSY_TIMEOUT_MS = 30_000
_MAX_IDLE_CONNECTIONS = 8

_R = "gotstate_persist_records"
_K = "gotstate_persist_keys"
_INFO = 'SELECT "key", version, kind, format_version, size, created_at_us'
_SQL = {
    "head": f'SELECT last_version, newest, kind FROM {_K} WHERE namespace = :ns AND "key" = :key',
    "bump": (
        f"UPDATE {_K} SET last_version = :version, newest = :version, kind = :kind "
        'WHERE namespace = :ns AND "key" = :key AND last_version = :prev '
        "AND (newest = 0 OR kind = :kind)"
    ),
    "bump_expected": (
        f"UPDATE {_K} SET last_version = :version, newest = :version, kind = :kind "
        'WHERE namespace = :ns AND "key" = :key AND last_version = :prev '
        "AND (newest = 0 OR kind = :kind) AND newest = :expected"
    ),
    "new_key": (
        f'INSERT INTO {_K} (namespace, "key", last_version, newest, kind) '
        "VALUES (:ns, :key, :version, :version, :kind)"
    ),
    "insert": (
        f'INSERT INTO {_R} (namespace, "key", version, kind, format_version, size, '
        "created_at_us, blob) VALUES (:ns, :key, :version, :kind, :format_version, :size, "
        ":created_at_us, :blob)"
    ),
    "newest": (
        f'{_INFO}, blob FROM {_R} WHERE namespace = :ns AND "key" = :key '
        "ORDER BY version DESC LIMIT 1"
    ),
    "one": f'{_INFO}, blob FROM {_R} WHERE namespace = :ns AND "key" = :key AND version = :version',
    "versions": f'{_INFO} FROM {_R} WHERE namespace = :ns AND "key" = :key ORDER BY version',
    "keys": f'SELECT DISTINCT "key" FROM {_R} WHERE namespace = :ns ORDER BY "key"',
    # A range on the primary key instead of LIKE: LIKE is case-insensitive on
    # SQLite and would need escaping of % and _.
    "keys_prefix": (
        f'SELECT DISTINCT "key" FROM {_R} WHERE namespace = :ns AND "key" >= :prefix '
        'AND substr("key", 1, :length) = :prefix ORDER BY "key"'
    ),
    "namespaces": f"SELECT DISTINCT namespace FROM {_R} ORDER BY namespace",
    "stored": f'SELECT version FROM {_R} WHERE namespace = :ns AND "key" = :key',
    "delete_one": f'DELETE FROM {_R} WHERE namespace = :ns AND "key" = :key AND version = :version',
    "set_newest": (
        f'UPDATE {_K} SET newest = :newest, kind = :kind WHERE namespace = :ns AND "key" = :key'
    ),
    "usage": (
        f'SELECT COALESCE(SUM(size), 0), COUNT(*), COUNT(DISTINCT "key") FROM {_R} '
        "WHERE namespace = :ns"
    ),
}


def _render(sql: str, paramstyle: str, *, is_sqlite: bool) -> str:
    """Adapt ``:name`` placeholders to the driver's style (psycopg wants %(name)s)."""
    if is_sqlite or paramstyle == "named":  # sqlite3 accepts :name whatever it advertises
        return sql
    if paramstyle == "pyformat":
        return re.sub(r":(\w+)", r"%(\1)s", sql)
    raise InvalidArgument(f"database drivers with paramstyle {paramstyle!r} are not supported")


def _info(row: Sequence[Any]) -> VersionInfo:
    return VersionInfo(row[0], row[1], row[2], row[3], row[4], row[5])


def _positional(sql: str, order: tuple[str, ...], paramstyle: str) -> str:
    """``sql`` with its ``:name`` placeholders, which must appear in ``order``, made positional."""
    found = tuple(re.findall(r":(\w+)", sql))
    if found != order:  # pragma: no cover - a programming error caught by any test run
        raise AssertionError(f"placeholders {found} are not in the order {order}")
    mark = "%s" if paramstyle in ("pyformat", "format") else "?"
    return re.sub(r":\w+", lambda _m: mark, sql)


class _SQLiteConnections:
    """A tiny LIFO pool of sqlite3 connections, one user at a time each.

    Cheaper than a general pool on the hot path (a list pop under a lock), and
    it lets us own the connection settings: autocommit mode so that we issue
    BEGIN IMMEDIATE ourselves, WAL, busy timeout, synchronous level.
    """

    def __init__(self, connect: Callable[[], sqlite3.Connection]) -> None:
        self._connect = connect
        self._idle: list[sqlite3.Connection] = []
        self._closed = False

    def acquire(self) -> sqlite3.Connection:
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


class SQLBackend(Backend):
    """Versioned blobs in a SQL database reached through SQLAlchemy.

    ``url`` is any SQLAlchemy URL. Options: ``upgrade`` (upgrade an outdated
    schema in place), ``busy_timeout_ms`` and ``sqlite_synchronous`` (SQLite
    durability, default ``FULL``: a save that returned survives power loss),
    ``engine_options`` (passed to ``sqlalchemy.create_engine``).
    """

    capabilities = Capabilities(transactions=True, list_is_consistent=True, cross_process=True)

    def __init__(
        self,
        url: str | sa.URL,
        *,
        upgrade: bool = False,
        busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS,
        sqlite_synchronous: str = "FULL",
        engine_options: dict[str, Any] | None = None,
    ) -> None:
        try:
            parsed = sa.make_url(url)
        except (sa_exc.ArgumentError, ValueError) as exc:
            raise InvalidArgument(f"not a valid SQL URL: {exc}") from None
        self._display_url = parsed.render_as_string(hide_password=True)
        synchronous = str(sqlite_synchronous).upper()
        if synchronous not in _SQLITE_SYNCHRONOUS:
            raise InvalidArgument(
                f"sqlite_synchronous must be one of {', '.join(_SQLITE_SYNCHRONOUS)}, "
                f"got {sqlite_synchronous!r}"
            )
        if type(busy_timeout_ms) is not int or busy_timeout_ms < 0:
            raise InvalidArgument("busy_timeout_ms must be an int >= 0")
        self._closed = False
        self._is_sqlite = parsed.get_backend_name() == "sqlite"
        if self._is_sqlite:
            _prepare_sqlite_path(parsed)
        try:
            self._engine = sa.create_engine(parsed, **(engine_options or {}))
        except (sa_exc.ArgumentError, sa_exc.NoSuchModuleError, ImportError) as exc:
            raise InvalidArgument(
                f"cannot use {self._display_url}: {exc}; install the driver it needs "
                "(for PostgreSQL: pip install 'gotstate-persist[postgres]')"
            ) from exc
        dialect = self._engine.dialect
        self._dbapi_error: type[Exception] = dialect.loaded_dbapi.Error
        self._dbapi_integrity: type[Exception] = dialect.loaded_dbapi.IntegrityError
        self._sql = {
            name: _render(sql, dialect.paramstyle, is_sqlite=self._is_sqlite)
            for name, sql in _SQL.items()
        }
        # The hottest statements also in positional form (cheaper to bind).
        self._sql_newest = _positional(_SQL["newest"], ("ns", "key"), dialect.paramstyle)
        self._sql_one = _positional(_SQL["one"], ("ns", "key", "version"), dialect.paramstyle)
        self._sql_head = _positional(_SQL["head"], ("ns", "key"), dialect.paramstyle)
        self._sqlite_pool: _SQLiteConnections | None = None
        if self._is_sqlite:
            _install_sqlite_hooks(self._engine, busy_timeout_ms, synchronous)
            cargs, cparams = dialect.create_connect_args(parsed)
            self._sqlite_pool = _SQLiteConnections(
                lambda: _connect_sqlite(cargs, cparams, busy_timeout_ms, synchronous)
            )
        try:
            with self._engine.connect() as conn:
                conn.execution_options(**{_WRITE: True})
                with conn.begin():
                    ensure_schema(conn, display_url=self._display_url, upgrade=upgrade)
        except sa_exc.SQLAlchemyError as exc:
            self._engine.dispose()
            raise self._backend_error(exc) from exc
        except BaseException:
            self._engine.dispose()
            raise

    def __repr__(self) -> str:
        return f"SQLBackend({self._display_url!r})"

    @property
    def engine(self) -> sa.Engine:
        """The SQLAlchemy engine (for migrations and tooling)."""
        return self._engine

    # Connections and transactions; every database error is mapped here, once.

    def _acquire(self) -> Any:
        if self._closed:
            raise BackendError("this store is closed; open a new one with open_store()")
        pool = self._sqlite_pool
        try:
            if pool is not None:
                return pool.acquire()
            return self._engine.raw_connection()
        except (sa_exc.SQLAlchemyError, self._dbapi_error) as exc:
            raise self._backend_error(exc) from exc

    def _release(self, conn: Any) -> None:
        if self._sqlite_pool is not None:
            self._sqlite_pool.release(conn)
        else:
            conn.close()  # back to SQLAlchemy's pool

    @contextmanager
    def _read(self) -> Iterator[Any]:
        conn = self._acquire()
        try:
            yield conn
            if self._sqlite_pool is None:
                conn.rollback()  # end the read transaction a server driver opened
        except self._dbapi_error as exc:
            raise self._backend_error(exc) from exc
        finally:
            self._release(conn)

    @contextmanager
    def _write(self) -> Iterator[Any]:
        conn = self._acquire()
        try:
            if self._sqlite_pool is not None:
                conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.rollback()
                raise
            conn.commit()
        except self._dbapi_integrity as exc:
            raise VersionConflict(
                "another writer created this version at the same time; retry the save"
            ) from exc
        except self._dbapi_error as exc:
            raise self._backend_error(exc) from exc
        finally:
            self._release(conn)

    def _backend_error(self, exc: BaseException) -> BackendError:
        reason = getattr(exc, "orig", None) or exc
        first_line = str(reason).splitlines()[0] if str(reason) else ""
        return BackendError(
            f"the database at {self._display_url} failed: {type(reason).__name__}: "
            f"{first_line}; check that it is reachable, writable and not full, then retry"
        )

    # The Backend contract.

    def head(self, namespace: str, key: str) -> KeyHead:
        with self._read() as conn:
            row = conn.execute(self._sql_head, (namespace, key)).fetchone()
        if row is None:
            return KeyHead()
        return KeyHead(row[0], row[1], row[2])

    def put(
        self,
        namespace: str,
        key: str,
        version: int,
        blob: bytes,
        *,
        kind: str,
        format_version: int,
        created_at_us: int,
        expected_newest: int | None = None,
    ) -> VersionInfo:
        micros = created_at_us
        params = {
            "ns": namespace,
            "key": key,
            "version": version,
            "prev": version - 1,
            "kind": kind,
            "expected": expected_newest,
            "format_version": format_version,
            "size": len(blob),
            "created_at_us": micros,
            "blob": blob,
        }
        bump = self._sql["bump" if expected_newest is None else "bump_expected"]
        with self._write() as conn:
            if conn.execute(bump, params).rowcount != 1:
                if version == 1 and not expected_newest:
                    conn.execute(self._sql["new_key"], params)  # a racing creator -> conflict
                else:
                    self._explain_refusal(conn, namespace, key, version, kind, expected_newest)
            conn.execute(self._sql["insert"], params)
        return VersionInfo(key, version, kind, format_version, len(blob), micros)

    def _explain_refusal(
        self,
        conn: Any,
        namespace: str,
        key: str,
        version: int,
        kind: str,
        expected_newest: int | None,
    ) -> None:
        row = conn.execute(self._sql["head"], {"ns": namespace, "key": key}).fetchone()
        last, newest, stored_kind = (0, 0, None) if row is None else row
        if expected_newest is not None and newest != expected_newest:
            raise VersionConflict(
                f"key {key!r} is at version {newest}, not {expected_newest}: "
                "reload it and retry, or save without expected_version",
                expected=expected_newest,
                actual=newest,
            )
        if newest and stored_kind != kind:
            raise FormatError(
                f"key {key!r} holds records of kind {stored_kind!r}; a {kind!r} record "
                "cannot be saved under it: use another key, or delete the key first"
            )
        raise VersionConflict(
            f"version {version} of key {key!r} cannot be created: the key's last version "
            f"is {last}; retry the save",
            expected=version - 1,
            actual=newest,
        )

    def get(
        self, namespace: str, key: str, version: int | None = None
    ) -> tuple[VersionInfo, bytes]:
        # The hottest read: no context manager, one statement, one row.
        conn = self._acquire()
        try:
            if version is None:
                cursor = conn.execute(self._sql_newest, (namespace, key))
            else:
                cursor = conn.execute(self._sql_one, (namespace, key, version))
            row = cursor.fetchone()
            if self._sqlite_pool is None:
                conn.rollback()
        except self._dbapi_error as exc:
            raise self._backend_error(exc) from exc
        finally:
            self._release(conn)
        if row is None:
            which = "no stored version" if version is None else f"no version {version}"
            raise NotFound(f"key {key!r} in namespace {namespace!r} has {which}")
        blob = row[6]
        if type(blob) is not bytes:
            if not isinstance(blob, (bytearray, memoryview)):
                raise FormatError(
                    f"version {row[1]} of key {key!r} is not stored as binary data; "
                    "the database was altered outside gotstate-persist"
                )
            blob = bytes(blob)
        return VersionInfo(row[0], row[1], row[2], row[3], row[4], row[5]), blob

    def versions(self, namespace: str, key: str) -> list[VersionInfo]:
        with self._read() as conn:
            rows = conn.execute(self._sql["versions"], {"ns": namespace, "key": key}).fetchall()
        return [_info(row) for row in rows]

    def keys(self, namespace: str, prefix: str = "") -> list[str]:
        with self._read() as conn:
            if prefix:
                params = {"ns": namespace, "prefix": prefix, "length": len(prefix)}
                rows = conn.execute(self._sql["keys_prefix"], params).fetchall()
            else:
                rows = conn.execute(self._sql["keys"], {"ns": namespace}).fetchall()
        return [row[0] for row in rows]

    def namespaces(self) -> list[str]:
        with self._read() as conn:
            rows = conn.execute(self._sql["namespaces"]).fetchall()
        return [row[0] for row in rows]

    def delete(self, namespace: str, key: str, versions: Sequence[int] | None = None) -> int:
        params: dict[str, Any] = {"ns": namespace, "key": key}
        with self._write() as conn:
            stored = {row[0] for row in conn.execute(self._sql["stored"], params).fetchall()}
            if not stored:
                raise NotFound(f"key {key!r} in namespace {namespace!r} has no stored version")
            doomed = stored if versions is None else set(versions)
            missing = doomed - stored
            if missing:
                raise NotFound(
                    f"key {key!r} has no version(s) {sorted(missing)}; nothing was deleted"
                )
            for version in sorted(doomed):
                conn.execute(self._sql["delete_one"], {**params, "version": version})
            remaining = stored - doomed
            head = conn.execute(self._sql["head"], params).fetchone()
            conn.execute(
                self._sql["set_newest"],
                {
                    **params,
                    "newest": max(remaining, default=0),
                    "kind": head[2] if remaining else None,
                },
            )
        return len(doomed)

    def usage(self, namespace: str) -> Usage:
        with self._read() as conn:
            total, records, keys = conn.execute(self._sql["usage"], {"ns": namespace}).fetchone()
        return Usage(bytes=int(total), records=int(records), keys=int(keys))

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._sqlite_pool is not None:
            self._sqlite_pool.close()
        self._engine.dispose()


def _prepare_sqlite_path(url: sa.URL) -> None:
    """Create the database file's directory, so ``sqlite:///.gotstate/x.db`` just works."""
    database = url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    try:
        Path(database).expanduser().resolve().parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BackendError(
            f"cannot create the directory for SQLite database {database!r}: {exc.strerror}; "
            "choose a writable path"
        ) from exc


def _configure_sqlite(conn: Any, busy_timeout_ms: int, synchronous: str) -> None:
    conn.isolation_level = None  # autocommit: we issue BEGIN [IMMEDIATE] ourselves
    conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
    conn.execute("PRAGMA journal_mode = WAL")
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
        if conn.get_execution_options().get(_WRITE):
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            conn.exec_driver_sql("BEGIN")
