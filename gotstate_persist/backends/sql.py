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

PostgreSQL (psycopg 3, the driver SQLAlchemy >= 2.1 picks for a plain
``postgresql://`` URL) uses SQLAlchemy's connection pool and the default READ
COMMITTED isolation: a racing append waits for the row lock on the key's
bookkeeping row, re-reads it and finds ``last_version`` moved on, so it fails
with ``VersionConflict``; two creators of a new key collide on its primary key
(a unique violation, also ``VersionConflict``). Under a stricter isolation
level set by the application, serialization failures and deadlocks roll the
transaction back and run it again. Keys and namespaces are compared and listed
in code-point order (``COLLATE "C"``) whatever the database's collation, as on
SQLite and the object stores.

``SQLBackend`` is the ``Backend`` contract, composed of parts it owns, each in
a private module: the statements (``_sql_statements``, built from the table
description in ``_sql_tables``), the connections and their errors
(``_sql_connections``, ``_sql_engine``), the row checks (``_sql_rows``), the
usage counters and quotas (``_sql_usage``), writes (``_sql_writes``) and a
catalog's rows (``_sql_catalog``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Any

import sqlalchemy as sa

from .._quota_rules import Quota
from ..errors import FormatError, IntegrityError, NotFound
from ._sql_catalog import CatalogRows
from ._sql_connections import Connections, leave_autocommit
from ._sql_rows import ObjectRef, blob_of, info_of, shown, where
from ._sql_statements import Statements
from ._sql_usage import UsageLedger
from ._sql_writes import Writes
from .base import (
    Backend,
    Capabilities,
    KeyHead,
    NewVersion,
    ReadFailure,
    Replacement,
    Usage,
    VersionInfo,
)

# ObjectRef: which object a catalog row names (backends.catalog imports it from here).
__all__ = ["ObjectRef", "SQLBackend"]

# The SQL backend's logger; its parts (usage counters, transactions) log to it by name.
logger = logging.getLogger(__name__)

DEFAULT_BUSY_TIMEOUT_MS = 30_000
#: Rows per page when a whole namespace is read (migrate, reseal, copy, verify).
_PAGE = 500


class SQLBackend(Backend):
    """Versioned blobs in a SQL database reached through SQLAlchemy.

    ``url`` is any SQLAlchemy URL. Options: ``upgrade`` (upgrade an outdated
    schema in place), ``busy_timeout_ms`` and ``sqlite_synchronous`` (SQLite
    durability, default ``FULL``: a save that returned survives power loss),
    ``engine_options`` (passed to ``sqlalchemy.create_engine``: pool sizes,
    ``isolation_level``, ``connect_args``; where a server or proxy closes idle
    connections, ``pool_pre_ping=True`` or ``pool_recycle`` keeps the pool
    fresh, otherwise a connection found dropped fails one call with
    ``BackendError`` and is discarded), ``create`` (default True; False refuses
    to create a schema in a database that has none, for read-only tools).

    ``busy_timeout_ms`` (default 30 s) bounds every wait for a lock another
    session holds, on every database: SQLite's busy timeout, PostgreSQL's
    ``lock_timeout`` (at least 1 ms there, where 0 would mean "forever").
    A wait that runs out is a ``BackendError`` and nothing is written.

    A leading ``~`` in an SQLite path is the user's home directory, as in a
    shell. In-memory SQLite (``sqlite://``, ``sqlite:///:memory:``) is
    refused with ``InvalidArgument``: each of the several connections a
    store uses would see its own empty database, and everything would vanish
    at close. Use a file, or ``memory://name`` for a store that lives as long
    as the process.
    """

    capabilities = Capabilities(
        transactions=True,
        list_is_consistent=True,
        cross_process=True,
        exact_quota=True,
        atomic_put_many=True,
    )

    def __init__(
        self,
        url: str | sa.URL,
        *,
        upgrade: bool = False,
        busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS,
        sqlite_synchronous: str = "FULL",
        engine_options: dict[str, Any] | None = None,
        create: bool = True,
    ) -> None:
        connections = Connections(
            url,
            busy_timeout_ms=busy_timeout_ms,
            sqlite_synchronous=sqlite_synchronous,
            engine_options=engine_options,
        )
        statements = Statements(connections.engine.dialect)
        self._connections = connections
        self._sql = statements
        self._usage = UsageLedger(connections, statements)
        self._writes = Writes(connections, statements, self._usage)
        self._catalog_rows = CatalogRows(connections, statements, self._writes, self._usage)
        connections.open(upgrade=upgrade, create=create)

    def __repr__(self) -> str:
        return f"SQLBackend({self._connections.display_url!r})"

    @property
    def engine(self) -> sa.Engine:
        """The SQLAlchemy engine (for migrations and tooling)."""
        return self._connections.engine

    # The Backend contract.

    def head(self, namespace: str, key: str) -> KeyHead:
        with self._connections.read() as conn:
            row = conn.execute(self._sql.head, (namespace, key)).fetchone()
        if row is None:
            return KeyHead()
        if type(row[0]) is int and type(row[1]) is int and (row[2] is None or type(row[2]) is str):
            return KeyHead(row[0], row[1], row[2])
        raise IntegrityError(
            f"the bookkeeping row of key {key!r} in namespace {namespace!r} is damaged "
            f"(last_version {shown(row[0])}, newest {shown(row[1])}, kind {shown(row[2])}); "
            "the database was altered outside gotstate-persist: restore it from a backup"
        )

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
        item = NewVersion(key, version, blob, kind, format_version, created_at_us, expected_newest)
        self._writes.put(_append_params(namespace, item))
        return VersionInfo(key, version, kind, format_version, len(blob), created_at_us)

    def put_many(self, namespace: str, items: Sequence[NewVersion]) -> list[VersionInfo]:
        """All of ``items`` in one transaction: every version is created, or none."""
        self._writes.append_many([_append_params(namespace, item) for item in items])
        return [
            VersionInfo(
                item.key,
                item.version,
                item.kind,
                item.format_version,
                len(item.blob),
                item.created_at_us,
            )
            for item in items
        ]

    def get(
        self, namespace: str, key: str, version: int | None = None
    ) -> tuple[VersionInfo, bytes]:
        # The hottest read: no context manager, one statement, one row.
        connections = self._connections
        conn = connections.acquire()
        server = not connections.is_sqlite
        try:
            if server:
                conn.dbapi_connection.autocommit = True  # one round trip, as in read()
            if version is None:
                cursor = conn.execute(self._sql.newest, (namespace, key))
            else:
                cursor = conn.execute(self._sql.one, (namespace, key, version))
            row = cursor.fetchone()
        except connections.dbapi_error as exc:
            raise connections.failed(conn, exc) from connections.cause(exc)
        finally:
            if server:
                leave_autocommit(conn)
            connections.release(conn)
        if row is None:
            which = "no stored version" if version is None else f"no version {version}"
            raise NotFound(f"key {key!r} in namespace {namespace!r} has {which}")
        return info_of(row), blob_of(row)

    def versions(self, namespace: str, key: str) -> list[VersionInfo]:
        with self._connections.read() as conn:
            rows = conn.execute(self._sql["versions"], {"ns": namespace, "key": key}).fetchall()
        return [info_of(row) for row in rows]

    def keys(self, namespace: str, prefix: str = "") -> list[str]:
        with self._connections.read() as conn:
            if prefix:
                params = {"ns": namespace, "prefix": prefix, "length": len(prefix)}
                rows = conn.execute(self._sql["keys_prefix"], params).fetchall()
            else:
                rows = conn.execute(self._sql["keys"], {"ns": namespace}).fetchall()
        return [row[0] for row in rows]

    def namespaces(self) -> list[str]:
        with self._connections.read() as conn:
            rows = conn.execute(self._sql["namespaces"]).fetchall()
        return [row[0] for row in rows]

    def delete(self, namespace: str, key: str, versions: Sequence[int] | None = None) -> int:
        return len(self.delete_rows(namespace, key, versions))

    def delete_rows(
        self,
        namespace: str,
        key: str,
        versions: Sequence[int] | None = None,
        *,
        reserved_only: bool = False,
    ) -> list[ObjectRef]:
        """``delete``, returning the objects named by what went (reservations too)."""
        return self._writes.delete_rows(namespace, key, versions, reserved_only=reserved_only)

    def iter_namespace(
        self, namespace: str, *, on_error: ReadFailure | None = None
    ) -> Iterator[tuple[VersionInfo, bytes]]:
        """Every readable version of the namespace with its blob, in pages (primary-key order).

        A damaged row goes to ``on_error`` (see :meth:`Backend.iter_namespace`).
        """
        params: dict[str, Any] = {"ns": namespace, "key": "", "version": 0, "limit": _PAGE}
        while True:
            with self._connections.read() as conn:
                rows = conn.execute(self._sql["page"], params).fetchall()
            for row in rows:
                try:
                    found = info_of(row), blob_of(row)
                except (FormatError, IntegrityError) as exc:
                    if on_error is None:
                        raise
                    on_error(*where(row), exc)
                    continue
                yield found
            if len(rows) < _PAGE:
                return
            params["key"], params["version"] = rows[-1][0], rows[-1][1]

    def replace(self, namespace: str, replacements: Sequence[Replacement]) -> list[bool]:
        return self.swap_rows(
            namespace,
            [
                (r.key, r.version, r.blob, len(r.blob), r.format_version, r.expected)
                for r in replacements
            ],
        )

    def swap_rows(
        self, namespace: str, rows: Sequence[tuple[str, int, bytes, int, int, bytes]]
    ) -> list[bool]:
        """``replace`` in one transaction: ``(key, version, blob, size, format, expected)``."""
        return self._writes.swap_rows(namespace, rows)

    # Usage and quotas: kept in the namespaces table by the usage ledger.

    def usage(self, namespace: str) -> Usage:
        return self._usage.usage(namespace)

    def recount(self, namespace: str) -> Usage:
        return self._usage.recount(namespace)

    def load_quota(self, namespace: str) -> Quota | None:
        return self._usage.load_quota(namespace)

    def store_quota(self, namespace: str, quota: Quota | None, *, replace: bool) -> Quota | None:
        return self._usage.store_quota(namespace, quota, replace=replace)

    def close(self) -> None:
        self._connections.close()

    @property
    def catalog_rows(self) -> CatalogRows:
        """A catalog's side of this database, for ``backends.catalog`` (see ``_sql_catalog``)."""
        return self._catalog_rows


def _append_params(namespace: str, item: NewVersion) -> dict[str, Any]:
    """The bound parameters of one append (``_sql_writes.Writes``)."""
    return {
        "ns": namespace,
        "key": item.key,
        "version": item.version,
        "kind": item.kind,
        "expected": item.expected_newest,
        "format_version": item.format_version,
        "size": len(item.blob),
        "created_at_us": item.created_at_us,
        "blob": item.blob,
        "reserved_at_us": None,
    }
