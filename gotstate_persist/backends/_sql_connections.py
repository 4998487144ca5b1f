"""The SQL backend's connections: opening, reads, write transactions, and every database error.

Why a module of its own: how a connection is taken and given back (our
SQLite pool, or SQLAlchemy's pool for a server), how a write transaction
begins, commits, and runs again after a serialization failure, and how a
driver's error becomes a ``BackendError`` or ``VersionConflict`` that never
shows a credential are rules every statement the backend runs must follow.
They live here once, in :class:`Connections`, which the backend and its
parts (usage counters, appends, a catalog's rows) share.
"""

from __future__ import annotations

import logging
import random
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from .._redact import mask_url, option_secrets, safe_cause, scrub, url_secrets
from ..errors import BackendError, InvalidArgument, NotFound, VersionConflict
from ..migrations import HEAD_REVISION, current_revision, ensure_schema
from ._sql_engine import (
    FSYNCS,
    MAX_TIMEOUT_MS,
    SQLITE_SYNCHRONOUS,
    WRITE,
    SQLiteConnections,
    checked_engine_options,
    install_lock_timeout,
    prepare_sqlite_path,
    remove_empty,
    sqlite_connections,
    sqlite_file_url,
)

__all__ = [
    "NOT_NULL_VIOLATION",
    "RETRYABLE_SQLSTATES",
    "UNIQUE_VIOLATION",
    "Connections",
    "leave_autocommit",
    "sqlstate",
]

# The SQL backend's logger, whichever of its parts writes the record.
logger = logging.getLogger("gotstate_persist.backends.sql")

#: SQLSTATE lock_not_available: a lock wait ran past lock_timeout.
_LOCK_NOT_AVAILABLE = "55P03"
#: A write transaction that lost a serialization race is run this often in all.
_MAX_TRANSACTION_ATTEMPTS = 8
_RETRY_BASE_S = 0.002
#: SQLSTATEs after which the whole transaction may simply run again:
#: serialization_failure and deadlock_detected.
RETRYABLE_SQLSTATES = frozenset({"40001", "40P01"})
UNIQUE_VIOLATION = "23505"
NOT_NULL_VIOLATION = "23502"
_T = TypeVar("_T")


def sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE a DBAPI error carries (psycopg: ``sqlstate``, psycopg2: ``pgcode``)."""
    code = getattr(exc, "sqlstate", None) or getattr(exc, "pgcode", None)
    return code if isinstance(code, str) else None


def _rollback_quietly(conn: Any) -> None:
    """Roll back after a failure; a connection too broken for that is discarded later."""
    with suppress(Exception):  # the original error is the one to report
        conn.rollback()


def leave_autocommit(conn: Any) -> None:
    """Hand the connection back to the pool in the driver's default transaction mode.

    SQLAlchemy's own users of the pool (schema checks, migrations) rely on
    transactions; a connection the server dropped raises here and is discarded.
    """
    if not conn.is_valid:  # already invalidated after a failure
        return
    try:
        conn.dbapi_connection.autocommit = False
    except Exception:  # a broken connection: make the pool drop it
        conn.invalidate()


class Connections:
    """One database's engine and connections; every database error is mapped here, once.

    Built in two steps, so that nothing is created before every argument was
    accepted: the constructor checks the arguments and creates the engine
    (which connects to nothing yet), :meth:`open` creates an SQLite file's
    directory, checks (or creates, or upgrades) the schema, and takes it all
    back if that fails.
    """

    def __init__(
        self,
        url: str | sa.URL,
        *,
        busy_timeout_ms: int,
        sqlite_synchronous: str,
        engine_options: dict[str, Any] | None,
    ) -> None:
        try:
            parsed = sa.make_url(url)
        except (sa_exc.ArgumentError, ValueError, TypeError) as exc:
            # the parser's message quotes the URL (or a password it took for a port)
            raise InvalidArgument(
                f"{mask_url(url)} is not a valid SQL URL ({type(exc).__name__}); write it as "
                "dialect://user:password@host:port/database, percent-encoding special "
                "characters of the user name and password (such as '@' as %40)"
            ) from None
        self.display_url = mask_url(parsed)
        if parsed.get_backend_name() == "sqlite":
            parsed = sqlite_file_url(parsed)
        options = checked_engine_options(engine_options)
        # what driver messages and chained errors must never show
        self._secrets = [
            *url_secrets(url),
            *url_secrets(parsed),
            *option_secrets(options.get("connect_args"), by_name=True),
        ]
        synchronous = str(sqlite_synchronous).upper()
        if synchronous not in SQLITE_SYNCHRONOUS:
            raise InvalidArgument(
                f"sqlite_synchronous must be one of {', '.join(SQLITE_SYNCHRONOUS)}, "
                f"got {sqlite_synchronous!r}"
            )
        if type(busy_timeout_ms) is not int or not 0 <= busy_timeout_ms <= MAX_TIMEOUT_MS:
            raise InvalidArgument(f"busy_timeout_ms must be an int in 0..{MAX_TIMEOUT_MS}")
        self._busy_timeout_ms = busy_timeout_ms
        self._synchronous = synchronous
        self._url = parsed
        self._options = options
        self._closed = False
        self.is_sqlite = parsed.get_backend_name() == "sqlite"
        try:
            self.engine = sa.create_engine(parsed, **options)  # connects to nothing yet
        except (sa_exc.NoSuchModuleError, ImportError) as exc:
            raise InvalidArgument(
                f"cannot use {self.display_url}: {scrub(str(exc), self._secrets)}; install "
                "the driver it needs (for PostgreSQL: pip install 'gotstate-persist[postgres]')"
            ) from self.cause(exc)
        except (sa_exc.ArgumentError, TypeError, ValueError, AttributeError) as exc:
            # name the options, never their values: connect_args may hold a password
            raise InvalidArgument(
                f"sqlalchemy.create_engine() refused engine_options "
                f"{sorted(options) or '(none)'} for {self.display_url} "
                f"({type(exc).__name__}); check their names and types in SQLAlchemy's "
                "create_engine() documentation"
            ) from None
        dialect = self.engine.dialect
        self.dbapi_error: type[Exception] = dialect.loaded_dbapi.Error
        self.dbapi_integrity: type[Exception] = dialect.loaded_dbapi.IntegrityError
        self._dbapi_operational: tuple[type[Exception], ...] = (
            dialect.loaded_dbapi.OperationalError,
            dialect.loaded_dbapi.InterfaceError,
            sa_exc.SQLAlchemyError,  # pool timeouts and the like
        )
        self._sqlite_pool: SQLiteConnections | None = None

    def open(self, *, upgrade: bool, create: bool) -> None:
        """Reach the database and make sure it holds the current schema (see ``SQLBackend``)."""
        # only once every argument was accepted; taken back if the open fails
        created = prepare_sqlite_path(self._url) if self.is_sqlite else []
        if self.engine.dialect.name == "postgresql":
            install_lock_timeout(self.engine, self._busy_timeout_ms)
        if self.is_sqlite:
            self._sqlite_pool = sqlite_connections(
                self.engine, self._url, self._busy_timeout_ms, self._synchronous
            )
        try:
            self._prepare_schema(upgrade, create)
        except sa_exc.SQLAlchemyError as exc:
            self.engine.dispose()
            remove_empty(created)
            raise self.backend_error(exc) from self.cause(exc)
        except TypeError as exc:
            self.engine.dispose()
            remove_empty(created)
            if "connect_args" not in self._options:
                raise
            # the driver's connect() refused an argument it was given
            raise InvalidArgument(
                f"the database driver refused engine_options['connect_args'] "
                f"{sorted(self._options['connect_args'])} ({type(exc).__name__}); check their "
                "names in the driver's documentation"
            ) from None
        except BaseException:
            self.engine.dispose()
            remove_empty(created)
            raise

    def _schema_is_current(self) -> bool:
        """Check the schema revision in a read transaction (no write lock taken)."""
        with self.engine.connect() as conn, conn.begin():
            return current_revision(conn) == HEAD_REVISION

    def _use_wal(self) -> None:
        """Put our SQLite database in WAL mode (persistent; needs no transaction open)."""
        assert self._sqlite_pool is not None
        # SQLite does not always call its busy handler for a journal mode change
        # (another process opening the same fresh file holds a lock for an
        # instant), so the wait that busy_timeout_ms promises is made here.
        deadline = time.monotonic() + self._busy_timeout_ms / 1000
        attempt = 0
        while True:
            conn = self._sqlite_pool.acquire()
            try:
                if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                    conn.execute("PRAGMA journal_mode = WAL")
                return
            except sqlite3.OperationalError as exc:
                # backend_error says what a lock held past busy_timeout_ms means
                if "database is locked" not in str(exc) or time.monotonic() >= deadline:
                    raise self.backend_error(exc) from self.cause(exc)
            finally:
                self._sqlite_pool.release(conn)
            attempt += 1
            time.sleep(random.uniform(0, min(0.05, _RETRY_BASE_S * 2**attempt)))  # noqa: S311

    def _prepare_schema(self, upgrade: bool, create: bool) -> None:
        """Check the schema cheaply; take the write lock only to create or upgrade it."""
        if self._schema_is_current():
            if self._sqlite_pool is not None:
                self._use_wal()
            return
        if not create:
            with self.engine.connect() as conn, conn.begin():
                fresh = current_revision(conn) is None
            if fresh:
                raise NotFound(
                    f"{self.display_url} holds no gotstate-persist store; check the URL "
                    "(nothing was created)"
                )
        options: dict[str, Any] = {WRITE: True}
        if not self.is_sqlite:
            # Each statement then sees what other sessions committed before it,
            # so a schema created while we waited for the schema lock is seen
            # (under REPEATABLE READ it would not be, and CREATE TABLE would fail).
            options["isolation_level"] = "READ COMMITTED"
        with self.engine.connect() as conn:
            if not hasattr(conn.connection.dbapi_connection, "execute"):
                raise InvalidArgument(
                    f"the database driver {self.engine.dialect.driver!r} of "
                    f"{self.display_url} is not supported; use sqlite:/// or "
                    "postgresql:// (psycopg 3)"
                )
            conn.execution_options(**options)
            with conn.begin():
                ensure_schema(conn, display_url=self.display_url, upgrade=upgrade)
        if self._sqlite_pool is not None:  # only once the schema is ours and current
            self._use_wal()

    def acquire(self) -> Any:
        """A connection for one read or one transaction; give it back with :meth:`release`."""
        if self._closed:
            raise BackendError("this store is closed; open a new one with open_store()")
        pool = self._sqlite_pool
        try:
            if pool is not None:
                return pool.acquire()
            return self.engine.raw_connection()
        except (sa_exc.SQLAlchemyError, self.dbapi_error) as exc:
            raise self.backend_error(exc) from self.cause(exc)

    def release(self, conn: Any) -> None:
        if self._sqlite_pool is not None:
            self._sqlite_pool.release(conn)
        else:
            conn.close()  # back to SQLAlchemy's pool

    def failed(self, conn: Any, exc: Exception) -> BackendError:
        """Map a driver error; a connection the server dropped never returns to the pool."""
        dialect = self.engine.dialect
        if self._sqlite_pool is None and dialect.is_disconnect(
            exc,  # type: ignore[arg-type]  # a DBAPI error, typed as the driver's base class
            conn.dbapi_connection,
            None,
        ):
            conn.invalidate(exc)
        return self.backend_error(exc)

    @contextmanager
    def read(self) -> Iterator[Any]:
        conn = self.acquire()
        server = self._sqlite_pool is None
        try:
            if server:
                # One round trip per read instead of BEGIN, SELECT, ROLLBACK: every
                # read is a single statement, consistent on its own.
                conn.dbapi_connection.autocommit = True  # the driver's, not the pool proxy's
            yield conn
        except self.dbapi_error as exc:
            raise self.failed(conn, exc) from self.cause(exc)
        finally:
            if server:
                leave_autocommit(conn)
            self.release(conn)

    def transaction(self, body: Callable[[Any], _T], *, durable: bool = True) -> _T:
        """Run ``body(conn)`` in one write transaction and commit it.

        ``durable=False`` (SQLite in WAL mode) lets the commit skip its fsync:
        it becomes durable with the next durable commit, or is lost in a power
        failure. Only for changes that recovery redoes anyway.

        A unique violation means another writer created the same row first:
        ``VersionConflict``. A serialization failure or deadlock (possible when
        the application runs PostgreSQL at REPEATABLE READ or SERIALIZABLE)
        rolled everything back, so the whole transaction runs again, a few
        times, with jittered backoff. Anything else is a ``BackendError``.
        """
        attempt = 0
        lazy = not durable and self._sqlite_pool is not None and self._synchronous in FSYNCS
        while True:
            attempt += 1
            conn = self.acquire()
            try:
                try:
                    if lazy:  # this commit may wait for the next durable one (WAL)
                        conn.execute("PRAGMA synchronous = NORMAL")
                    if self._sqlite_pool is not None:
                        conn.execute("BEGIN IMMEDIATE")
                    result = body(conn)
                    conn.commit()
                except BaseException:
                    _rollback_quietly(conn)
                    raise
                finally:
                    if lazy:
                        conn.execute(f"PRAGMA synchronous = {self._synchronous}")
                return result
            except self.dbapi_integrity as exc:
                state = sqlstate(exc)
                if state is not None and state != UNIQUE_VIOLATION:
                    raise self.failed(conn, exc) from self.cause(exc)
                raise VersionConflict(
                    "another writer created this version at the same time; retry the save"
                ) from self.cause(exc)
            except self.dbapi_error as exc:
                if sqlstate(exc) not in RETRYABLE_SQLSTATES or attempt >= _MAX_TRANSACTION_ATTEMPTS:
                    raise self.failed(conn, exc) from self.cause(exc)
                logger.debug("retrying a write transaction after %s", type(exc).__name__)
            finally:
                self.release(conn)
            delay = _RETRY_BASE_S * 2**attempt
            time.sleep(random.uniform(0, delay))  # noqa: S311 - jitter, not crypto

    def cause(self, exc: BaseException) -> BaseException | None:
        """``exc`` to chain, or None where its traceback would show a credential."""
        return safe_cause(exc, self._secrets)

    def backend_error(self, exc: BaseException) -> BackendError:
        reason = getattr(exc, "orig", None) or exc
        first_line = scrub(str(reason).splitlines()[0], self._secrets) if str(reason) else ""
        if sqlstate(reason) == _LOCK_NOT_AVAILABLE or (
            self.is_sqlite and "database is locked" in first_line
        ):
            return BackendError(
                f"the database at {self.display_url} stayed locked by another session for "
                f"longer than busy_timeout_ms ({self._busy_timeout_ms} ms); nothing was "
                "changed: retry, raise busy_timeout_ms, or find the session holding the lock"
            )
        if self.is_sqlite:
            hint = "check that it is reachable, writable and not full, then retry"
        elif isinstance(reason, self._dbapi_operational):
            hint = (
                "check that the server is reachable, that the URL's database, user and "
                "password are right, and that the database is writable and not full, then retry"
            )
        else:
            hint = "the database refused the operation; nothing was changed"
        return BackendError(
            f"the database at {self.display_url} failed: {type(reason).__name__}: "
            f"{first_line}; {hint}"
        )

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._sqlite_pool is not None:
            self._sqlite_pool.close()
        self.engine.dispose()
