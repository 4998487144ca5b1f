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
"""

from __future__ import annotations

import logging
import os
import random
import re
import secrets
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy import exc as sa_exc

from .._redact import mask_url, option_secrets, safe_cause, scrub, url_secrets
from ..errors import (
    BackendError,
    FormatError,
    IntegrityError,
    InvalidArgument,
    NotFound,
    VersionConflict,
)
from ..migrations import HEAD_REVISION, current_revision, ensure_schema
from ..quota import Quota, check_write, quota_exceeded
from .base import (
    Backend,
    Capabilities,
    KeyHead,
    ReadFailure,
    Replacement,
    Usage,
    VersionInfo,
    kind_mismatch,
    usage_drift,
)

__all__ = ["SQLBackend"]

logger = logging.getLogger(__name__)

_WRITE = "gotstate_persist_write"
_SQLITE_SYNCHRONOUS = ("OFF", "NORMAL", "FULL", "EXTRA")
#: Levels at which every commit is fsynced (in WAL mode NORMAL syncs at checkpoints).
_FSYNCS = frozenset({"FULL", "EXTRA"})
DEFAULT_BUSY_TIMEOUT_MS = 30_000
#: PostgreSQL's lock_timeout is a 32-bit count of milliseconds (about 24 days).
_MAX_TIMEOUT_MS = 2**31 - 1
#: SQLSTATE lock_not_available: a lock wait ran past lock_timeout.
_LOCK_NOT_AVAILABLE = "55P03"
_MAX_IDLE_CONNECTIONS = 8
#: A write transaction that lost a serialization race is run this often in all.
_MAX_TRANSACTION_ATTEMPTS = 8
_RETRY_BASE_S = 0.002
#: SQLSTATEs after which the whole transaction may simply run again:
#: serialization_failure and deadlock_detected.
_RETRYABLE_SQLSTATES = frozenset({"40001", "40P01"})
_UNIQUE_VIOLATION = "23505"
_NOT_NULL_VIOLATION = "23502"
#: Rows per page when a whole namespace is read (migrate, reseal, copy, verify).
_PAGE = 500
_T = TypeVar("_T")
_CATALOG_ID = "catalog_id"
#: ``(version, format_version, object_token)``: which object a catalog row names.
ObjectRef = tuple[int, int, int | None]

_R = "gotstate_persist_records"
_K = "gotstate_persist_keys"
_N = "gotstate_persist_namespaces"
#: Quota fields, stored one column each (NULL: no limit), in Quota's order.
_QUOTA_FIELDS = (
    "max_bytes",
    "max_records",
    "max_keys",
    "max_blob_bytes",
    "max_versions_per_key",
    "retention",
    "max_writes_per_second",
    "max_reads_per_second",
)
_QUOTA_COLUMNS = ", ".join(_QUOTA_FIELDS)
# What one write adds to its namespace's counters, and the condition that keeps
# the result within every limit: the conditional update *is* the check, so
# concurrent writers cannot overshoot. :grow is bytes added (net of pruning),
# :more records added, :new_key 1 if the key had no stored version,
# :key_versions what the key holds afterwards; :add_bytes and :add_records
# are what the counters take now (the same, unless a catalog prunes later).
_CHARGE = "bytes = bytes + :add_bytes, records = records + :add_records, keys = keys + :new_key"
# A limit binds only a write that needs more of it (quota.check_write says the
# same): after a limit was lowered below usage, a write that prunes as much as
# it adds, or adds to an existing key, is not refused by that limit.
#
# Every limit is read as "limit + 0": on SQLite, whose columns take any type, a
# limit overwritten with text would otherwise compare greater than every number
# and silently lift the limit; as a number (0) it refuses the write, and the
# refusal's explanation (_quota_of) reports the damaged quota.
_WITHIN_LIMITS = (
    "(max_blob_bytes IS NULL OR :size <= max_blob_bytes + 0) "
    "AND (max_bytes IS NULL OR :grow <= 0 OR bytes + :grow <= max_bytes + 0) "
    "AND (max_records IS NULL OR :more <= 0 OR records + :more <= max_records + 0) "
    "AND (max_keys IS NULL OR :new_key = 0 OR keys + :new_key <= max_keys + 0) "
    "AND (max_versions_per_key IS NULL OR :key_versions <= max_versions_per_key + 0)"
)
# PostgreSQL's single-statement append (no pruning): the bump's RETURNING
# feeds the charge, and the blob is inserted only if the charge happened;
# otherwise the blob is NULL, the NOT NULL constraint aborts the whole
# statement (bump included), and the transactional path decides and explains.
_NEW_KEY_OF_BUMP = "(SELECT CASE WHEN versions = 1 THEN 1 ELSE 0 END FROM bump)"
_APPEND_ONE = (
    "WITH bump AS (UPDATE " + _K + " SET last_version = :version, newest = :version, "
    'kind = :kind, versions = versions + 1 WHERE namespace = :ns AND "key" = :key '
    "AND last_version < :version AND (newest = 0 OR kind = :kind){expected} "
    "RETURNING versions), "
    "charge AS (UPDATE "
    + _N
    + " SET "
    + _CHARGE.replace(":add_bytes", ":size")
    .replace(":add_records", "1")
    .replace(":new_key", _NEW_KEY_OF_BUMP)
    + " WHERE namespace = :ns AND EXISTS (SELECT 1 FROM bump) AND "
    + _WITHIN_LIMITS.replace(":grow", ":size")
    .replace(":more", "1")
    .replace(":new_key", _NEW_KEY_OF_BUMP)
    .replace(":key_versions", "(SELECT versions FROM bump)")
    + " RETURNING 1) "
    "INSERT INTO " + _R + ' (namespace, "key", version, kind, format_version, size, '
    "created_at_us, blob) SELECT :ns, :key, :version, :kind, :format_version, :size, "
    ":created_at_us, CASE WHEN EXISTS (SELECT 1 FROM charge) THEN :blob END FROM bump"
)
_INFO = 'SELECT "key", version, kind, format_version, size, created_at_us'
# Rows a reader may see: a catalog's reservation (a blob still being written
# to the object store) is counted in usage but not listed or read.
_STORED = " AND reserved_at_us IS NULL"
# Where keys and namespaces are compared or sorted. Replaced by the dialect's
# byte-order collation (nothing on SQLite, whose default is already binary).
_BYTES = " <byte-order>"
# Where a write locks the key's bookkeeping row (nothing on SQLite, whose
# BEGIN IMMEDIATE already holds the database's write lock).
_LOCK = " <lock-row>"
_SQL = {
    "head": f'SELECT last_version, newest, kind FROM {_K} WHERE namespace = :ns AND "key" = :key',
    "bump": (
        f"UPDATE {_K} SET last_version = :version, newest = :version, kind = :kind, "
        'versions = versions + 1 WHERE namespace = :ns AND "key" = :key '
        "AND last_version < :version AND (newest = 0 OR kind = :kind) RETURNING versions"
    ),
    "bump_expected": (
        f"UPDATE {_K} SET last_version = :version, newest = :version, kind = :kind, "
        'versions = versions + 1 WHERE namespace = :ns AND "key" = :key '
        "AND last_version < :version AND (newest = 0 OR kind = :kind) AND newest = :expected "
        "RETURNING versions"
    ),
    # PostgreSQL only (SQLite has no data-modifying CTEs): the bump, the usage
    # charge and the insert as one atomic statement, see SQLBackend._append_postgres.
    "append_one": _APPEND_ONE.format(expected=""),
    "append_one_expected": _APPEND_ONE.format(expected=" AND newest = :expected"),
    "new_key": (
        f'INSERT INTO {_K} (namespace, "key", last_version, newest, kind, versions) '
        "VALUES (:ns, :key, :version, :version, :kind, 1)"
    ),
    "retention": f"SELECT max_versions_per_key, retention FROM {_N} WHERE namespace = :ns{_LOCK}",
    "new_namespace": (
        f"INSERT INTO {_N} (namespace) VALUES (:ns) ON CONFLICT (namespace) DO NOTHING"
    ),
    "charge": f"UPDATE {_N} SET {_CHARGE} WHERE namespace = :ns AND {_WITHIN_LIMITS}",
    # The common case in one statement: nothing for retention to prune.
    "charge_unpruned": (
        f"UPDATE {_N} SET {_CHARGE} WHERE namespace = :ns AND {_WITHIN_LIMITS} "
        "AND NOT (retention = 'prune-oldest' AND max_versions_per_key IS NOT NULL "
        "AND :key_versions > max_versions_per_key)"
    ),
    "prune": (
        f'DELETE FROM {_R} WHERE namespace = :ns AND "key" = :key AND version IN '
        f'(SELECT version FROM {_R} WHERE namespace = :ns AND "key" = :key{_STORED} '
        "ORDER BY version LIMIT :count) RETURNING version, size, format_version, object_token"
    ),
    "oldest": (
        f"SELECT version, size, format_version FROM {_R} WHERE namespace = :ns "
        f'AND "key" = :key{_STORED} ORDER BY version LIMIT :count'
    ),
    "reserved_versions": (
        f'SELECT version FROM {_R} WHERE namespace = :ns AND "key" = :key '
        "AND reserved_at_us IS NOT NULL"
    ),
    "key_versions": f'SELECT versions FROM {_K} WHERE namespace = :ns AND "key" = :key',
    # Keyset pagination in the primary key's own order (any stable order will do
    # for a walk, and this one is an index range scan on every database).
    "page": (
        f"{_INFO}, blob FROM {_R} WHERE namespace = :ns{_STORED} "
        f'AND ("key", version) > (:key, :version) ORDER BY "key", version LIMIT :limit'
    ),
    "row_size": (
        f'SELECT size FROM {_R} WHERE namespace = :ns AND "key" = :key '
        f"AND version = :version{_STORED}"
    ),
    "swap_returning": (
        f"UPDATE {_R} SET blob = :blob, size = :size, format_version = :format_version "
        'WHERE namespace = :ns AND "key" = :key AND version = :version '
        f"AND blob = :expected{_STORED} RETURNING version"
    ),
    "swap": (
        f"UPDATE {_R} SET blob = :blob, size = :size, format_version = :format_version "
        'WHERE namespace = :ns AND "key" = :key AND version = :version '
        f"AND blob = :expected{_STORED}"
    ),
    "newest_stored": (
        f'SELECT version, kind FROM {_R} WHERE namespace = :ns AND "key" = :key{_STORED} '
        "ORDER BY version DESC LIMIT 1"
    ),
    "known_namespaces": (
        f"SELECT namespace{_BYTES} FROM {_N} UNION SELECT namespace{_BYTES} FROM {_R} ORDER BY 1"
    ),
    "pruned": (
        f'UPDATE {_K} SET versions = versions - :count WHERE namespace = :ns AND "key" = :key'
    ),
    "release": (
        f"UPDATE {_N} SET bytes = bytes - :bytes, records = records - :records, "
        "keys = keys - :keys WHERE namespace = :ns"
    ),
    "counters": f"SELECT bytes, records, keys FROM {_N} WHERE namespace = :ns",
    "set_counters": (
        f"UPDATE {_N} SET bytes = :bytes, records = :records, keys = :keys WHERE namespace = :ns"
    ),
    "recount_keys": (
        f"UPDATE {_K} SET versions = (SELECT COUNT(*) FROM {_R} r "
        f'WHERE r.namespace = {_K}.namespace AND r."key" = {_K}."key") WHERE namespace = :ns'
    ),
    "limits": (
        f"SELECT bytes, records, keys, {_QUOTA_COLUMNS} FROM {_N} WHERE namespace = :ns{_LOCK}"
    ),
    "quota": f"SELECT bytes, records, keys, {_QUOTA_COLUMNS} FROM {_N} WHERE namespace = :ns",
    "set_limits": (
        f"UPDATE {_N} SET "
        + ", ".join(f"{name} = :{name}" for name in _QUOTA_FIELDS)
        + " WHERE namespace = :ns"
    ),
    "insert": (
        f'INSERT INTO {_R} (namespace, "key", version, kind, format_version, size, '
        "created_at_us, blob, reserved_at_us) VALUES (:ns, :key, :version, :kind, "
        ":format_version, :size, :created_at_us, :blob, :reserved_at_us)"
    ),
    "newest": (
        f'{_INFO}, blob FROM {_R} WHERE namespace = :ns AND "key" = :key{_STORED} '
        "ORDER BY version DESC LIMIT 1"
    ),
    "one": (
        f'{_INFO}, blob FROM {_R} WHERE namespace = :ns AND "key" = :key '
        f"AND version = :version{_STORED}"
    ),
    "versions": (
        f'{_INFO} FROM {_R} WHERE namespace = :ns AND "key" = :key{_STORED} ORDER BY version'
    ),
    # A catalog's reservations (see SQLBackend.reserve).
    "confirm": (
        f"UPDATE {_R} SET reserved_at_us = NULL WHERE namespace = :ns "
        'AND "key" = :key AND version = :version AND reserved_at_us IS NOT NULL'
    ),
    "stale": (
        f'SELECT "key", version, format_version FROM {_R} WHERE namespace = :ns '
        "AND reserved_at_us IS NOT NULL AND reserved_at_us < :cutoff"
    ),
    "rows": (
        f'SELECT "key", version, format_version, object_token, pending_token FROM {_R} '
        "WHERE namespace = :ns"
    ),
    # A catalog's rewrites (see SQLBackend.announce): announced before the new
    # object exists, switched to it by compare-and-set on the announcement.
    "catalog_newest": (
        f'{_INFO}, object_token FROM {_R} WHERE namespace = :ns AND "key" = :key{_STORED} '
        "ORDER BY version DESC LIMIT 1"
    ),
    "catalog_one": (
        f'{_INFO}, object_token FROM {_R} WHERE namespace = :ns AND "key" = :key '
        f"AND version = :version{_STORED}"
    ),
    "announce": (
        f"UPDATE {_R} SET pending_token = :pending, pending_at_us = :now "
        'WHERE namespace = :ns AND "key" = :key AND version = :version '
        "AND format_version = :format_version AND COALESCE(object_token, 0) = :token "
        f"AND (pending_token IS NULL OR pending_at_us < :cutoff){_STORED}"
    ),
    "announced_size": (
        f'SELECT size FROM {_R} WHERE namespace = :ns AND "key" = :key '
        f"AND version = :version AND pending_token = :pending{_STORED}"
    ),
    "switch": (
        f"UPDATE {_R} SET format_version = :format_version, object_token = :pending, "
        "size = :size, pending_token = NULL, pending_at_us = NULL "
        'WHERE namespace = :ns AND "key" = :key AND version = :version '
        "AND pending_token = :pending"
    ),
    "unannounce": (
        f"UPDATE {_R} SET pending_token = NULL, pending_at_us = NULL "
        'WHERE namespace = :ns AND "key" = :key AND version = :version '
        "AND pending_token = :pending"
    ),
    "touch": f"UPDATE {_N} SET bytes = bytes WHERE namespace = :ns",
    "meta_get": "SELECT value FROM gotstate_persist_meta WHERE name = :name",
    "meta_put": (
        "INSERT INTO gotstate_persist_meta (name, value) VALUES (:name, :value) "
        "ON CONFLICT (name) DO NOTHING"
    ),
    "last_versions": f'SELECT "key", last_version FROM {_K} WHERE namespace = :ns',
    "stale_announcements": (
        f'SELECT "key", version, pending_token FROM {_R} WHERE namespace = :ns '
        "AND pending_token IS NOT NULL AND pending_at_us < :cutoff"
    ),
    "head_locked": (
        f'SELECT last_version, newest, kind FROM {_K} WHERE namespace = :ns AND "key" = :key{_LOCK}'
    ),
    "keys": (
        f'SELECT DISTINCT "key"{_BYTES} FROM {_R} WHERE namespace = :ns{_STORED} '
        f'ORDER BY "key"{_BYTES}'
    ),
    # A range on the primary key instead of LIKE: LIKE is case-insensitive on
    # SQLite and would need escaping of % and _.
    "keys_prefix": (
        f'SELECT DISTINCT "key"{_BYTES} FROM {_R} WHERE namespace = :ns{_STORED} '
        f'AND "key"{_BYTES} >= :prefix AND substr("key", 1, :length) = :prefix '
        f'ORDER BY "key"{_BYTES}'
    ),
    "namespaces": (
        f"SELECT DISTINCT namespace{_BYTES} FROM {_R} WHERE reserved_at_us IS NULL "
        f"ORDER BY namespace{_BYTES}"
    ),
    "delete_one": f'DELETE FROM {_R} WHERE namespace = :ns AND "key" = :key AND version = :version',
    "set_newest": (
        f"UPDATE {_K} SET newest = :newest, kind = :kind, versions = :versions "
        'WHERE namespace = :ns AND "key" = :key'
    ),
    # Locks the key's record rows (PostgreSQL): a delete that read them
    # unlocked could release the size a concurrent switch just replaced, or
    # withdraw a reservation a concurrent confirm just made readable.
    "stored_sizes": (
        f"SELECT version, size, format_version, object_token FROM {_R} "
        f'WHERE namespace = :ns AND "key" = :key{_LOCK}'
    ),
    "usage": (
        f'SELECT COALESCE(SUM(size), 0), COUNT(*), COUNT(DISTINCT "key") FROM {_R} '
        "WHERE namespace = :ns"
    ),
}


# Dialect name -> (byte-order collation clause, row lock clause).
_DIALECT_CLAUSES: Mapping[str, tuple[str, str]] = {
    "sqlite": ("", ""),
    "postgresql": (' COLLATE "C"', " FOR UPDATE"),
}


def _for_dialect(sql: str, dialect: str) -> str:
    """Fill in the dialect-specific clauses of one of the statements above."""
    collate, lock = _DIALECT_CLAUSES.get(dialect, ("", " FOR UPDATE"))
    return sql.replace(_BYTES, collate).replace(_LOCK, lock)


def _render(sql: str, paramstyle: str, *, is_sqlite: bool) -> str:
    """Adapt ``:name`` placeholders to the driver's style (psycopg wants %(name)s)."""
    if is_sqlite or paramstyle == "named":  # sqlite3 accepts :name whatever it advertises
        return sql
    if paramstyle == "pyformat":
        return re.sub(r":(\w+)", r"%(\1)s", sql)
    raise InvalidArgument(f"database drivers with paramstyle {paramstyle!r} are not supported")


def _sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE a DBAPI error carries (psycopg: ``sqlstate``, psycopg2: ``pgcode``)."""
    code = getattr(exc, "sqlstate", None) or getattr(exc, "pgcode", None)
    return code if isinstance(code, str) else None


def _rollback_quietly(conn: Any) -> None:
    """Roll back after a failure; a connection too broken for that is discarded later."""
    with suppress(Exception):  # the original error is the one to report
        conn.rollback()


def _leave_autocommit(conn: Any) -> None:
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


def _quota_of(columns: Sequence[Any]) -> Quota | None:
    """The quota a namespace row's limit columns hold (None when no limit is set)."""
    fields = dict(zip(_QUOTA_FIELDS, columns, strict=True))
    try:
        quota = msgspec.convert(fields, Quota)
    except msgspec.ValidationError:
        raise IntegrityError(
            "the stored quota holds impossible limits; the database was altered outside "
            "gotstate-persist: set the quota again with store.set_quota()"
        ) from None
    return None if quota.unlimited else quota


def _counts(usage: Usage) -> dict[str, int]:
    return {"bytes": usage.bytes, "records": usage.records, "keys": usage.keys}


def _object_ref(version: Any, format_version: Any, token: Any) -> ObjectRef:
    return int(version), int(format_version), None if token is None else int(token)


def _info(row: Sequence[Any]) -> VersionInfo:
    """A record row's metadata, checked to be of the types gotstate-persist writes.

    SQLite columns take values of any type, so a row edited by another tool
    may hold text where a number belongs. It is refused here, at the
    boundary, so that no caller sees a str version or size: a handful of type
    checks per row, cheap next to the query (and next to a decrypt).
    """
    key, version, kind, format_version, size, created_at_us = row[:6]
    if (
        type(key) is str
        and type(version) is int
        and type(kind) is str
        and type(format_version) is int
        and type(size) is int
        and type(created_at_us) is int
        and version > 0
        and format_version > 0
        and size >= 0
    ):
        return VersionInfo(key, version, kind, format_version, size, created_at_us)
    raise _damaged_row(row)


#: The record row's metadata columns in the order the statements select them,
#: and what each must hold.
_INFO_COLUMNS: tuple[tuple[str, Callable[[Any], bool]], ...] = (
    ("key", lambda value: type(value) is str),
    ("version", lambda value: type(value) is int and value > 0),
    ("kind", lambda value: type(value) is str),
    ("format_version", lambda value: type(value) is int and value > 0),
    ("size", lambda value: type(value) is int and value >= 0),
    ("created_at_us", lambda value: type(value) is int),
)
#: How much of a damaged value a message shows: a column may hold megabytes of text.
_SHOWN_CHARS = 40
_ALTERED = (
    "the database was altered outside gotstate-persist: restore the row from a backup, "
    "or delete it with SQL and run 'gotstate-persist usage URL --recount'"
)


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _SHOWN_CHARS else text[:_SHOWN_CHARS] + "..."


def _where(row: Sequence[Any]) -> tuple[str, int]:
    """``(key, version)`` of a row for a report, as well as a damaged row allows (0: unknown)."""
    key = row[0] if type(row[0]) is str else _shown(row[0])
    version = row[1] if type(row[1]) is int else 0
    return key, version


def _damaged_row(row: Sequence[Any]) -> IntegrityError:
    name, value = next(
        (name, value)
        for (name, valid), value in zip(_INFO_COLUMNS, row, strict=False)
        if not valid(value)
    )
    return IntegrityError(
        f"the row of key {_shown(row[0])} version {_shown(row[1])} is damaged: its {name} "
        f"column holds {_shown(value)} ({type(value).__name__}); {_ALTERED}"
    )


def _blob(row: Sequence[Any]) -> bytes:
    """A record row's blob (column 6) as bytes; anything but binary data is refused.

    Never ``bytes(value)`` of whatever is stored: of an integer N that would
    allocate N zero bytes.
    """
    blob = row[6]
    if type(blob) is bytes:
        return blob
    if isinstance(blob, (bytearray, memoryview)):
        return bytes(blob)
    raise FormatError(
        f"version {_shown(row[1])} of key {_shown(row[0])} is not stored as binary data "
        f"(its blob column holds {type(blob).__name__}); {_ALTERED}"
    )


def _numeric(key: str, rows: list[Any]) -> list[Any]:
    """``rows`` of numbers (or NULL) only; a damaged one is an ``IntegrityError``, not a crash."""
    for row in rows:
        wrong = [value for value in row if value is not None and type(value) is not int]
        if wrong:
            raise IntegrityError(
                f"a row of key {key!r} holds {_shown(wrong[0])} where a number belongs; {_ALTERED}"
            )
    return rows


def _counters(row: Sequence[Any]) -> Usage | None:
    """The usage counters of a namespace row, or None if they are not integers."""
    if type(row[0]) is int and type(row[1]) is int and type(row[2]) is int:
        return Usage(row[0], row[1], row[2])
    return None


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
        transactions=True, list_is_consistent=True, cross_process=True, exact_quota=True
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
        try:
            parsed = sa.make_url(url)
        except (sa_exc.ArgumentError, ValueError, TypeError) as exc:
            # the parser's message quotes the URL (or a password it took for a port)
            raise InvalidArgument(
                f"{mask_url(url)} is not a valid SQL URL ({type(exc).__name__}); write it as "
                "dialect://user:password@host:port/database, percent-encoding special "
                "characters of the user name and password (such as '@' as %40)"
            ) from None
        self._display_url = mask_url(parsed)
        if parsed.get_backend_name() == "sqlite":
            parsed = _sqlite_url(parsed)
        options = _engine_options(engine_options)
        # what driver messages and chained errors must never show
        self._secrets = [
            *url_secrets(url),
            *url_secrets(parsed),
            *option_secrets(options.get("connect_args"), by_name=True),
        ]
        synchronous = str(sqlite_synchronous).upper()
        if synchronous not in _SQLITE_SYNCHRONOUS:
            raise InvalidArgument(
                f"sqlite_synchronous must be one of {', '.join(_SQLITE_SYNCHRONOUS)}, "
                f"got {sqlite_synchronous!r}"
            )
        if type(busy_timeout_ms) is not int or not 0 <= busy_timeout_ms <= _MAX_TIMEOUT_MS:
            raise InvalidArgument(f"busy_timeout_ms must be an int in 0..{_MAX_TIMEOUT_MS}")
        self._busy_timeout_ms = busy_timeout_ms
        self._synchronous = synchronous
        # Namespaces seen pruning by retention: their appends skip PostgreSQL's
        # one-statement path, which cannot prune and would fail every time.
        self._pruning: set[str] = set()
        self._closed = False
        self._is_sqlite = parsed.get_backend_name() == "sqlite"
        try:
            self._engine = sa.create_engine(parsed, **options)  # connects to nothing yet
        except (sa_exc.NoSuchModuleError, ImportError) as exc:
            raise InvalidArgument(
                f"cannot use {self._display_url}: {scrub(str(exc), self._secrets)}; install "
                "the driver it needs (for PostgreSQL: pip install 'gotstate-persist[postgres]')"
            ) from self._cause(exc)
        except (sa_exc.ArgumentError, TypeError, ValueError, AttributeError) as exc:
            # name the options, never their values: connect_args may hold a password
            raise InvalidArgument(
                f"sqlalchemy.create_engine() refused engine_options "
                f"{sorted(options) or '(none)'} for {self._display_url} "
                f"({type(exc).__name__}); check their names and types in SQLAlchemy's "
                "create_engine() documentation"
            ) from None
        dialect = self._engine.dialect
        self._dbapi_error: type[Exception] = dialect.loaded_dbapi.Error
        self._dbapi_integrity: type[Exception] = dialect.loaded_dbapi.IntegrityError
        self._dbapi_operational: tuple[type[Exception], ...] = (
            dialect.loaded_dbapi.OperationalError,
            dialect.loaded_dbapi.InterfaceError,
            sa_exc.SQLAlchemyError,  # pool timeouts and the like
        )
        self._sql = {
            name: _render(
                _for_dialect(sql, dialect.name), dialect.paramstyle, is_sqlite=self._is_sqlite
            )
            for name, sql in _SQL.items()
        }
        # The hottest statements also in positional form (cheaper to bind).
        self._sql_newest = _positional(_SQL["newest"], ("ns", "key"), dialect.paramstyle)
        self._sql_one = _positional(_SQL["one"], ("ns", "key", "version"), dialect.paramstyle)
        self._sql_head = _positional(_SQL["head"], ("ns", "key"), dialect.paramstyle)
        self._append_in_one: Callable[[dict[str, Any]], bool] | None = (
            self._append_postgres if dialect.name == "postgresql" else None
        )
        self._sqlite_pool: _SQLiteConnections | None = None
        # only once every argument was accepted; taken back if the open fails
        created = _prepare_sqlite_path(parsed) if self._is_sqlite else []
        if dialect.name == "postgresql":
            _install_lock_timeout(self._engine, busy_timeout_ms)
        if self._is_sqlite:
            _install_sqlite_hooks(self._engine, busy_timeout_ms, synchronous)
            cargs, cparams = dialect.create_connect_args(parsed)
            self._sqlite_pool = _SQLiteConnections(
                lambda: _connect_sqlite(cargs, cparams, busy_timeout_ms, synchronous)
            )
        try:
            self._prepare_schema(upgrade, create)
        except sa_exc.SQLAlchemyError as exc:
            self._engine.dispose()
            _remove_empty(created)
            raise self._backend_error(exc) from self._cause(exc)
        except TypeError as exc:
            self._engine.dispose()
            _remove_empty(created)
            if "connect_args" not in options:
                raise
            # the driver's connect() refused an argument it was given
            raise InvalidArgument(
                f"the database driver refused engine_options['connect_args'] "
                f"{sorted(options['connect_args'])} ({type(exc).__name__}); check their names "
                "in the driver's documentation"
            ) from None
        except BaseException:
            self._engine.dispose()
            _remove_empty(created)
            raise

    def _schema_is_current(self) -> bool:
        """Check the schema revision in a read transaction (no write lock taken)."""
        with self._engine.connect() as conn, conn.begin():
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
                # _backend_error says what a lock held past busy_timeout_ms means
                if "database is locked" not in str(exc) or time.monotonic() >= deadline:
                    raise self._backend_error(exc) from self._cause(exc)
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
            with self._engine.connect() as conn, conn.begin():
                fresh = current_revision(conn) is None
            if fresh:
                raise NotFound(
                    f"{self._display_url} holds no gotstate-persist store; check the URL "
                    "(nothing was created)"
                )
        options: dict[str, Any] = {_WRITE: True}
        if not self._is_sqlite:
            # Each statement then sees what other sessions committed before it,
            # so a schema created while we waited for the schema lock is seen
            # (under REPEATABLE READ it would not be, and CREATE TABLE would fail).
            options["isolation_level"] = "READ COMMITTED"
        with self._engine.connect() as conn:
            if not hasattr(conn.connection.dbapi_connection, "execute"):
                raise InvalidArgument(
                    f"the database driver {self._engine.dialect.driver!r} of "
                    f"{self._display_url} is not supported; use sqlite:/// or "
                    "postgresql:// (psycopg 3)"
                )
            conn.execution_options(**options)
            with conn.begin():
                ensure_schema(conn, display_url=self._display_url, upgrade=upgrade)
        if self._sqlite_pool is not None:  # only once the schema is ours and current
            self._use_wal()

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
            raise self._backend_error(exc) from self._cause(exc)

    def _release(self, conn: Any) -> None:
        if self._sqlite_pool is not None:
            self._sqlite_pool.release(conn)
        else:
            conn.close()  # back to SQLAlchemy's pool

    def _failed(self, conn: Any, exc: Exception) -> BackendError:
        """Map a driver error; a connection the server dropped never returns to the pool."""
        dialect = self._engine.dialect
        if self._sqlite_pool is None and dialect.is_disconnect(
            exc,  # type: ignore[arg-type]  # a DBAPI error, typed as the driver's base class
            conn.dbapi_connection,
            None,
        ):
            conn.invalidate(exc)
        return self._backend_error(exc)

    @contextmanager
    def _read(self) -> Iterator[Any]:
        conn = self._acquire()
        server = self._sqlite_pool is None
        try:
            if server:
                # One round trip per read instead of BEGIN, SELECT, ROLLBACK: every
                # read is a single statement, consistent on its own.
                conn.dbapi_connection.autocommit = True  # the driver's, not the pool proxy's
            yield conn
        except self._dbapi_error as exc:
            raise self._failed(conn, exc) from self._cause(exc)
        finally:
            if server:
                _leave_autocommit(conn)
            self._release(conn)

    def _transaction(self, body: Callable[[Any], _T], *, durable: bool = True) -> _T:
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
        lazy = not durable and self._sqlite_pool is not None and self._synchronous in _FSYNCS
        while True:
            attempt += 1
            conn = self._acquire()
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
            except self._dbapi_integrity as exc:
                state = _sqlstate(exc)
                if state is not None and state != _UNIQUE_VIOLATION:
                    raise self._failed(conn, exc) from self._cause(exc)
                raise VersionConflict(
                    "another writer created this version at the same time; retry the save"
                ) from self._cause(exc)
            except self._dbapi_error as exc:
                if (
                    _sqlstate(exc) not in _RETRYABLE_SQLSTATES
                    or attempt >= _MAX_TRANSACTION_ATTEMPTS
                ):
                    raise self._failed(conn, exc) from self._cause(exc)
                logger.debug("retrying a write transaction after %s", type(exc).__name__)
            finally:
                self._release(conn)
            delay = _RETRY_BASE_S * 2**attempt
            time.sleep(random.uniform(0, delay))  # noqa: S311 - jitter, not crypto

    def _cause(self, exc: BaseException) -> BaseException | None:
        """``exc`` to chain, or None where its traceback would show a credential."""
        return safe_cause(exc, self._secrets)

    def _backend_error(self, exc: BaseException) -> BackendError:
        reason = getattr(exc, "orig", None) or exc
        first_line = scrub(str(reason).splitlines()[0], self._secrets) if str(reason) else ""
        if _sqlstate(reason) == _LOCK_NOT_AVAILABLE or (
            self._is_sqlite and "database is locked" in first_line
        ):
            return BackendError(
                f"the database at {self._display_url} stayed locked by another session for "
                f"longer than busy_timeout_ms ({self._busy_timeout_ms} ms); nothing was "
                "changed: retry, raise busy_timeout_ms, or find the session holding the lock"
            )
        if self._is_sqlite:
            hint = "check that it is reachable, writable and not full, then retry"
        elif isinstance(reason, self._dbapi_operational):
            hint = (
                "check that the server is reachable, that the URL's database, user and "
                "password are right, and that the database is writable and not full, then retry"
            )
        else:
            hint = "the database refused the operation; nothing was changed"
        return BackendError(
            f"the database at {self._display_url} failed: {type(reason).__name__}: "
            f"{first_line}; {hint}"
        )

    # The Backend contract.

    def head(self, namespace: str, key: str) -> KeyHead:
        with self._read() as conn:
            row = conn.execute(self._sql_head, (namespace, key)).fetchone()
        if row is None:
            return KeyHead()
        if type(row[0]) is int and type(row[1]) is int and (row[2] is None or type(row[2]) is str):
            return KeyHead(row[0], row[1], row[2])
        raise IntegrityError(
            f"the bookkeeping row of key {key!r} in namespace {namespace!r} is damaged "
            f"(last_version {_shown(row[0])}, newest {_shown(row[1])}, kind {_shown(row[2])}); "
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
        micros = created_at_us
        params = {
            "ns": namespace,
            "key": key,
            "version": version,
            "kind": kind,
            "expected": expected_newest,
            "format_version": format_version,
            "size": len(blob),
            "created_at_us": micros,
            "blob": blob,
            "reserved_at_us": None,
        }
        if (
            self._append_in_one is None
            or namespace in self._pruning
            or not self._append_in_one(params)
        ):
            self._append(params)
        return VersionInfo(key, version, kind, format_version, len(blob), micros)

    def _append(self, params: dict[str, Any], *, defer_prune: bool = False) -> list[int]:
        """The transactional append; returns the versions retention pruned."""
        namespace, key, expected_newest = params["ns"], params["key"], params["expected"]
        bump = self._sql["bump" if expected_newest is None else "bump_expected"]

        def append(conn: Any) -> list[int]:
            bumped = conn.execute(bump, params).fetchall()
            if bumped:
                key_versions = int(bumped[0][0])
            else:
                head = conn.execute(self._sql_head, (namespace, key)).fetchone()
                if head is None and not expected_newest:
                    conn.execute(self._sql["new_key"], params)  # a racing creator -> conflict
                    key_versions = 1
                else:
                    self._explain_refusal(
                        conn, namespace, key, params["version"], params["kind"], expected_newest
                    )
            pruned = self._charge(conn, params, key_versions, defer_prune=defer_prune)
            conn.execute(self._sql["insert"], params)
            return pruned

        return self._transaction(append)

    # A catalog's side (backends.catalog): the row reserves the version and its
    # usage before the blob is written elsewhere, and is confirmed after.

    def reserve(
        self,
        namespace: str,
        key: str,
        version: int,
        *,
        size: int,
        kind: str,
        format_version: int,
        created_at_us: int,
        expected_newest: int | None,
        reserved_at_us: int,
    ) -> list[int]:
        """Append an unreadable row for a blob stored elsewhere (retention waits for confirm)."""
        return self._append(
            {
                "ns": namespace,
                "key": key,
                "version": version,
                "kind": kind,
                "expected": expected_newest,
                "format_version": format_version,
                "size": size,
                "created_at_us": created_at_us,
                "blob": b"",
                "reserved_at_us": reserved_at_us,
            },
            defer_prune=True,
        )

    def confirm(self, namespace: str, key: str, version: int) -> list[ObjectRef] | None:
        """Make a reserved row readable and apply retention; None if the row is gone.

        Returns ``(version, format_version, object_token)`` of what retention
        pruned (their blobs are the caller's to remove). Not made durable on its own: a
        confirmation lost in a crash leaves a reservation whose object exists,
        which the catalog's sweep confirms again.
        """
        params = {"ns": namespace, "key": key, "version": version}

        def confirm(conn: Any) -> list[ObjectRef] | None:
            if conn.execute(self._sql["confirm"], params).rowcount != 1:
                # a sweep found the object and confirmed it (applying retention):
                # the save succeeded; or the row is gone (deleted, withdrawn)
                confirmed = conn.execute(self._sql["row_size"], params).fetchone()
                return None if confirmed is None else []
            retention = conn.execute(self._sql["retention"], params).fetchall()
            held = conn.execute(self._sql["key_versions"], params).fetchone()
            if not retention or held is None:
                return []
            most, policy = retention[0]
            if most is None or policy != "prune-oldest" or held[0] <= most:
                return []
            doomed = conn.execute(self._sql["prune"], {**params, "count": held[0] - most})
            removed = doomed.fetchall()
            if removed:
                conn.execute(self._sql["pruned"], {**params, "count": len(removed)})
                conn.execute(
                    self._sql["release"],
                    {
                        "ns": namespace,
                        "bytes": sum(row[1] for row in removed),
                        "records": len(removed),
                        "keys": 0,
                    },
                )
            return sorted(_object_ref(row[0], row[2], row[3]) for row in removed)

        # Durable where retention prunes: the caller removes the pruned objects
        # next, and rows brought back by a power loss would then name nothing.
        pruning = namespace in self._pruning
        pruned = self._transaction(confirm, durable=pruning)
        if pruned and not pruning:  # pruned unexpectedly (a quota set elsewhere)
            self._pruning.add(namespace)
            # a durable commit makes every commit before it durable too (WAL)
            self._transaction(lambda conn: conn.execute(self._sql["touch"], params))
        return pruned

    def iter_namespace(
        self, namespace: str, *, on_error: ReadFailure | None = None
    ) -> Iterator[tuple[VersionInfo, bytes]]:
        """Every readable version of the namespace with its blob, in pages (primary-key order).

        A damaged row goes to ``on_error`` (see :meth:`Backend.iter_namespace`).
        """
        params: dict[str, Any] = {"ns": namespace, "key": "", "version": 0, "limit": _PAGE}
        while True:
            with self._read() as conn:
                rows = conn.execute(self._sql["page"], params).fetchall()
            for row in rows:
                try:
                    found = _info(row), _blob(row)
                except (FormatError, IntegrityError) as exc:
                    if on_error is None:
                        raise
                    on_error(*_where(row), exc)
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
        """``replace`` in one transaction: ``(key, version, blob, size, format, expected)``.

        The namespace's bytes change by the batch's size difference, checked
        once against its quota: a batch that would cross ``max_bytes`` or
        ``max_blob_bytes`` raises ``QuotaExceeded`` and rolls back whole.
        """

        if not rows:
            return []
        batch: list[dict[str, Any]] = [
            {
                "ns": namespace,
                "key": key,
                "version": version,
                "blob": blob,
                "size": size,
                "format_version": format_version,
                "expected": expected,
            }
            for key, version, blob, size, format_version, expected in rows
        ]

        def swap(conn: Any) -> list[bool]:
            if self._sqlite_pool is None:  # a server: one pipelined round trip per batch
                cursor = conn.cursor()
                cursor.executemany(self._sql["swap_returning"], batch, returning=True)
                done = []
                while True:
                    done.append(cursor.fetchone() is not None)
                    if not cursor.nextset():
                        break
            else:
                done = [conn.execute(self._sql["swap"], one).rowcount == 1 for one in batch]
            changed = [row for row, swapped in zip(rows, done, strict=True) if swapped]
            if changed:
                grow = sum(row[3] - len(row[5]) for row in changed)
                self._charge_growth(conn, namespace, max(row[3] for row in changed), grow)
            return done

        return self._transaction(swap)

    # A catalog's rewrites (backends.catalog): a new object is announced in
    # the row before it is created, and the row switches to it by
    # compare-and-set on the announcement, so a sweep never removes an object
    # that a row could still come to name.

    def catalog_get(
        self, namespace: str, key: str, version: int | None = None
    ) -> tuple[VersionInfo, int | None]:
        """A readable catalog row and the token of the object it names (None: legacy name)."""
        params = {"ns": namespace, "key": key, "version": version}
        with self._read() as conn:
            statement = self._sql["catalog_newest" if version is None else "catalog_one"]
            row = conn.execute(statement, params).fetchone()
        if row is None:
            which = "no stored version" if version is None else f"no version {version}"
            raise NotFound(f"key {key!r} in namespace {namespace!r} has {which}")
        return _info(row), None if row[6] is None else int(row[6])

    def announce(
        self,
        namespace: str,
        key: str,
        version: int,
        *,
        format_version: int,
        token: int | None,
        pending: int,
        now_us: int,
        stale_before_us: int,
    ) -> bool:
        """Announce object ``pending`` for a row still naming ``(format_version, token)``.

        Refused (False) if the row changed, is gone, or another rewrite holds a
        fresh announcement; an announcement made before ``stale_before_us``
        belongs to a rewriter that died or stalled and is taken over.
        """
        params = {
            "ns": namespace,
            "key": key,
            "version": version,
            "format_version": format_version,
            "token": token or 0,
            "pending": pending,
            "now": now_us,
            "cutoff": stale_before_us,
        }
        return self._transaction(lambda conn: self._changed_one(conn, "announce", params))

    def switch(
        self,
        namespace: str,
        key: str,
        version: int,
        *,
        pending: int,
        format_version: int,
        size: int,
    ) -> bool:
        """Make the row name its announced object; False if the announcement was taken back.

        The namespace's bytes change by the size difference, within its quota
        (``QuotaExceeded`` leaves the row as it was).
        """
        params = {
            "ns": namespace,
            "key": key,
            "version": version,
            "pending": pending,
            "format_version": format_version,
            "size": size,
        }

        def switch(conn: Any) -> bool:
            found = conn.execute(self._sql["announced_size"], params).fetchone()
            if found is None or conn.execute(self._sql["switch"], params).rowcount != 1:
                return False
            self._charge_growth(conn, namespace, size, size - int(found[0]))
            return True

        return self._transaction(switch)

    def unannounce(self, namespace: str, key: str, version: int, pending: int) -> bool:
        """Take back announcement ``pending``; False if it is no longer the row's."""
        params = {"ns": namespace, "key": key, "version": version, "pending": pending}
        # durable: the object is removed next, and an announcement back from a
        # crash would let a stalled rewriter switch the row to nothing
        return self._transaction(lambda conn: self._changed_one(conn, "unannounce", params))

    def _changed_one(self, conn: Any, statement: str, params: dict[str, Any]) -> bool:
        return bool(conn.execute(self._sql[statement], params).rowcount == 1)

    def catalog_id(self, *, create: bool) -> str | None:
        """This database's identity as a catalog; made (once, by whoever is first) if asked."""
        params = {"name": _CATALOG_ID, "value": secrets.token_hex(16)}
        with self._read() as conn:
            row = conn.execute(self._sql["meta_get"], params).fetchone()
        if row is not None or not create:
            return None if row is None else str(row[0])

        def make(conn: Any) -> str:
            conn.execute(self._sql["meta_put"], params)
            return str(conn.execute(self._sql["meta_get"], params).fetchone()[0])

        return self._transaction(make)

    def last_versions(self, namespace: str) -> dict[str, int]:
        """``key -> last_version`` of every key this database ever held in ``namespace``."""
        with self._read() as conn:
            rows = conn.execute(self._sql["last_versions"], {"ns": namespace}).fetchall()
        return {str(key): int(last) for key, last in rows}

    def stale_announcements(self, namespace: str, cutoff_us: int) -> list[tuple[str, int, int]]:
        """``(key, version, pending token)`` of announcements made before ``cutoff_us``."""
        with self._read() as conn:
            rows = conn.execute(
                self._sql["stale_announcements"], {"ns": namespace, "cutoff": cutoff_us}
            ).fetchall()
        return [(str(key), int(version), int(pending)) for key, version, pending in rows]

    def _charge_growth(self, conn: Any, namespace: str, size: int, grow: int) -> None:
        """Count swapped blobs' size difference (``size``: the largest, for ``max_blob_bytes``)."""
        charge = {
            "ns": namespace,
            "size": size,
            "grow": grow,
            "more": 0,
            "add_bytes": grow,
            "add_records": 0,
            "new_key": 0,
            "key_versions": 0,
        }
        if conn.execute(self._sql["charge"], charge).rowcount == 1:
            return
        row = conn.execute(self._sql["limits"], {"ns": namespace}).fetchone()
        quota = _quota_of(row[3:]) or Quota()
        if quota.max_blob_bytes is not None and size > quota.max_blob_bytes:
            raise quota_exceeded(
                "max_blob_bytes", quota.max_blob_bytes, 0, size, namespace=namespace
            )
        raise quota_exceeded(
            "max_bytes", quota.max_bytes or 0, int(row[0]), grow, namespace=namespace
        )

    def readable_head(self, namespace: str, key: str) -> KeyHead:
        """``head`` as readers see it: ``newest`` is the newest confirmed version."""
        params = {"ns": namespace, "key": key}
        with self._read() as conn:
            row = conn.execute(self._sql["head"], params).fetchone()
            if row is None:
                return KeyHead()
            if row[1] == 0:
                return KeyHead(row[0])
            newest = conn.execute(self._sql["newest_stored"], params).fetchone()
        if newest is None:
            return KeyHead(row[0])
        return KeyHead(row[0], int(newest[0]), str(newest[1]))

    def known_namespaces(self) -> list[str]:
        """Every namespace ever written, even one holding only reservations."""
        with self._read() as conn:
            return [str(row[0]) for row in conn.execute(self._sql["known_namespaces"]).fetchall()]

    def stale_reservations(self, namespace: str, cutoff_us: int) -> list[tuple[str, int, int]]:
        """``(key, version, format_version)`` of reservations made before ``cutoff_us``."""
        with self._read() as conn:
            rows = conn.execute(self._sql["stale"], {"ns": namespace, "cutoff": cutoff_us})
            return [(str(key), int(version), int(fmt)) for key, version, fmt in rows.fetchall()]

    def row_objects(self, namespace: str) -> dict[tuple[str, int], tuple[ObjectRef, int | None]]:
        """``(key, version) -> (object named, announced token)`` of every row, reservations too."""
        with self._read() as conn:
            rows = conn.execute(self._sql["rows"], {"ns": namespace}).fetchall()
        return {
            (str(key), int(version)): (
                _object_ref(version, fmt, token),
                None if pending is None else int(pending),
            )
            for key, version, fmt, token, pending in rows
        }

    def _charge(
        self, conn: Any, params: dict[str, Any], key_versions: int, *, defer_prune: bool = False
    ) -> list[int]:
        """Count one write against its namespace, pruning first if retention says so.

        Runs inside the write's transaction after the key's row was bumped
        (``key_versions`` is the key's count with the new version), before
        the blob is inserted; raises ``QuotaExceeded`` to roll it all back.
        With ``defer_prune`` (a catalog's reservation) the limits are checked
        as if retention had pruned, but the oldest versions stay, and stay
        counted, until :meth:`confirm`: a save that fails loses nothing.
        """
        names = {"ns": params["ns"]}
        charge = {
            "ns": params["ns"],
            "size": params["size"],
            "grow": params["size"],
            "more": 1,
            "add_bytes": params["size"],
            "add_records": 1,
            "new_key": int(key_versions == 1),
            "key_versions": key_versions,
        }
        if conn.execute(self._sql["charge_unpruned"], charge).rowcount == 1:
            return []
        # A new namespace, retention to apply, or a refusal to explain.
        retention = conn.execute(self._sql["retention"], names).fetchall()
        if not retention:
            conn.execute(self._sql["new_namespace"], names)
            retention = [(None, "reject")]
        most, policy = retention[0]
        pruned = freed = 0
        doomed: list[tuple[int, int]] = []
        if most is not None and policy == "prune-oldest" and key_versions > most:
            target = {"ns": params["ns"], "key": params["key"], "count": key_versions - most}
            doomed = conn.execute(
                self._sql["oldest" if defer_prune else "prune"], target
            ).fetchall()
            freed = sum(row[1] for row in doomed)
            pruned = len(doomed)
            self._pruning.add(params["ns"])
            if not defer_prune:
                conn.execute(self._sql["pruned"], {**target, "count": pruned})
        charge = {
            "ns": params["ns"],
            "size": params["size"],
            "grow": params["size"] - freed,
            "more": 1 - pruned,
            "add_bytes": params["size"] - (0 if defer_prune else freed),
            "add_records": 1 - (0 if defer_prune else pruned),
            "new_key": int(key_versions == 1),
            "key_versions": key_versions - pruned,
        }
        if conn.execute(self._sql["charge"], charge).rowcount == 1:
            return [] if defer_prune else [int(row[0]) for row in doomed]
        # Refused: say which limit, from the same row the update looked at.
        row = conn.execute(self._sql["limits"], names).fetchone()
        check_write(
            _quota_of(row[3:]) or Quota(),
            Usage(int(row[0]), int(row[1]), int(row[2])),
            namespace=params["ns"],
            size=params["size"],
            new_key=key_versions == 1,
            key_versions=key_versions,
            freed_bytes=freed,
            pruned=pruned,
        )
        raise BackendError(  # pragma: no cover - the update and check_write agree
            f"the usage counters of namespace {params['ns']!r} refused a write within its "
            "quota; run 'gotstate-persist usage URL --recount' and retry"
        )

    def _append_postgres(self, params: dict[str, Any]) -> bool:
        """Append to an existing key in ONE autocommitted statement (PostgreSQL).

        A data-modifying CTE bumps the key's bookkeeping row with the same
        compare-and-set as the transactional path, charges the namespace's
        usage within its limits and inserts the blob only if both happened,
        atomically, in a single round trip instead of six. Returns False when
        it did not apply (a new key or namespace, a stale version, another
        kind, a limit, retention to apply, a serialization failure): the
        transactional path then decides, and explains any refusal.
        """
        statement = self._sql["append_one" if params["expected"] is None else "append_one_expected"]
        conn = self._acquire()
        try:
            conn.dbapi_connection.autocommit = True
            try:
                return bool(conn.execute(statement, params).rowcount == 1)
            except self._dbapi_integrity as exc:
                if _sqlstate(exc) == _UNIQUE_VIOLATION:
                    raise VersionConflict(
                        "another writer created this version at the same time; retry the save"
                    ) from self._cause(exc)
                if _sqlstate(exc) == _NOT_NULL_VIOLATION:
                    return False  # not charged: pruning, a new namespace or a refusal
                raise self._failed(conn, exc) from self._cause(exc)
            except self._dbapi_error as exc:
                if _sqlstate(exc) in _RETRYABLE_SQLSTATES:
                    return False  # the transactional path retries
                raise self._failed(conn, exc) from self._cause(exc)
        finally:
            _leave_autocommit(conn)
            self._release(conn)

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
            raise kind_mismatch(key, stored_kind, kind)
        raise VersionConflict(
            f"version {version} of key {key!r} cannot be created: the key already reached "
            f"version {last}; retry the save",
            expected=version - 1,
            actual=newest,
        )

    def get(
        self, namespace: str, key: str, version: int | None = None
    ) -> tuple[VersionInfo, bytes]:
        # The hottest read: no context manager, one statement, one row.
        conn = self._acquire()
        server = self._sqlite_pool is None
        try:
            if server:
                conn.dbapi_connection.autocommit = True  # one round trip, as in _read()
            if version is None:
                cursor = conn.execute(self._sql_newest, (namespace, key))
            else:
                cursor = conn.execute(self._sql_one, (namespace, key, version))
            row = cursor.fetchone()
        except self._dbapi_error as exc:
            raise self._failed(conn, exc) from self._cause(exc)
        finally:
            if server:
                _leave_autocommit(conn)
            self._release(conn)
        if row is None:
            which = "no stored version" if version is None else f"no version {version}"
            raise NotFound(f"key {key!r} in namespace {namespace!r} has {which}")
        return _info(row), _blob(row)

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
        return len(self.delete_rows(namespace, key, versions))

    def delete_rows(
        self,
        namespace: str,
        key: str,
        versions: Sequence[int] | None = None,
        *,
        reserved_only: bool = False,
    ) -> list[ObjectRef]:
        """``delete``, returning the objects named by what went (reservations too).

        With ``reserved_only``, the given versions are deleted only if they are
        all still reservations (a catalog withdrawing them), else ``NotFound``.
        """
        params: dict[str, Any] = {"ns": namespace, "key": key}

        def remove(conn: Any) -> list[ObjectRef]:
            # Lock the key's bookkeeping row first (SQLite: already locked by
            # BEGIN IMMEDIATE), so that no append commits between listing the
            # stored versions and recording the new newest one.
            head = conn.execute(self._sql["head_locked"], params).fetchone()
            rows = _numeric(key, conn.execute(self._sql["stored_sizes"], params).fetchall())
            sizes = {int(row[0]): int(row[1]) for row in rows}
            objects = {int(row[0]): _object_ref(row[0], row[2], row[3]) for row in rows}
            if not sizes:
                raise NotFound(f"key {key!r} in namespace {namespace!r} has no stored version")
            doomed = set(sizes) if versions is None else set(versions)
            eligible = set(sizes)
            if reserved_only:
                rows = conn.execute(self._sql["reserved_versions"], params).fetchall()
                eligible = {int(row[0]) for row in rows}
            missing = doomed - eligible
            if missing:
                raise NotFound(
                    f"key {key!r} has no version(s) {sorted(missing)}; nothing was deleted"
                )
            for version in sorted(doomed):
                conn.execute(self._sql["delete_one"], {**params, "version": version})
            remaining = set(sizes) - doomed
            conn.execute(
                self._sql["set_newest"],
                {
                    **params,
                    "newest": max(remaining, default=0),
                    "kind": head[2] if remaining else None,
                    "versions": len(remaining),
                },
            )
            conn.execute(
                self._sql["release"],
                {
                    "ns": namespace,
                    "bytes": sum(sizes[version] for version in doomed),
                    "records": len(doomed),
                    "keys": 0 if remaining else 1,
                },
            )
            return sorted(objects[version] for version in doomed)

        return self._transaction(remove)

    def usage(self, namespace: str) -> Usage:
        with self._read() as conn:
            row = conn.execute(self._sql["counters"], {"ns": namespace}).fetchone()
        if row is None:
            return Usage()
        counted = _counters(row)
        if counted is None:
            raise IntegrityError(
                f"the usage counters of namespace {namespace!r} are damaged (not integers); "
                "the database was altered outside gotstate-persist: repair them with "
                "'gotstate-persist usage URL --recount' (store.usage(recount=True))"
            )
        return counted

    def recount(self, namespace: str) -> Usage:
        names = {"ns": namespace}

        def recount(conn: Any) -> Usage:
            conn.execute(self._sql["new_namespace"], names)
            kept = conn.execute(self._sql["limits"], names).fetchone()  # locks the row
            total, records, keys = conn.execute(self._sql["usage"], names).fetchone()
            counted = Usage(int(total), int(records), int(keys))
            conn.execute(self._sql["recount_keys"], names)
            kept_usage = _counters(kept)  # None: damaged (not integers), repaired below
            drift = usage_drift(kept_usage or Usage(), counted)
            if drift is None:
                if kept_usage is not None:
                    return counted
                drift = Usage()
            conn.execute(self._sql["set_counters"], {**names, **_counts(counted)})
            logger.warning(
                "namespace %r: usage counters were off by %s bytes, %s records, %s keys; repaired",
                namespace,
                drift.bytes,
                drift.records,
                drift.keys,
            )
            return Usage(counted.bytes, counted.records, counted.keys, drift)

        return self._transaction(recount)

    def load_quota(self, namespace: str) -> Quota | None:
        with self._read() as conn:
            found = conn.execute(self._sql["quota"], {"ns": namespace}).fetchone()
        return None if found is None else _quota_of(found[3:])

    def store_quota(self, namespace: str, quota: Quota | None, *, replace: bool) -> Quota | None:
        names = {"ns": namespace}

        def store(conn: Any) -> Quota | None:
            conn.execute(self._sql["new_namespace"], names)
            current = _quota_of(conn.execute(self._sql["limits"], names).fetchone()[3:])
            if current is not None and not replace:
                return current
            fields = msgspec.structs.asdict(quota or Quota())
            conn.execute(self._sql["set_limits"], {**names, **fields})
            return None if quota is None or quota.unlimited else quota

        return self._transaction(store)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._sqlite_pool is not None:
            self._sqlite_pool.close()
        self._engine.dispose()


def _sqlite_url(url: sa.URL) -> sa.URL:
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


def _engine_options(engine_options: object) -> dict[str, Any]:
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


def _install_lock_timeout(engine: sa.Engine, busy_timeout_ms: int) -> None:
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


def _prepare_sqlite_path(url: sa.URL) -> list[Path]:
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


def _remove_empty(directories: Sequence[Path]) -> None:
    """Remove directories an open created, innermost first, where still empty."""
    for directory in directories:
        try:
            directory.rmdir()
        except OSError:  # not empty (the database file was made) or already gone
            return


def _configure_sqlite(conn: Any, busy_timeout_ms: int, synchronous: str) -> None:
    # WAL is set once, persistently, on databases that hold our schema
    # (SQLBackend._use_wal): opening someone else's file must not convert it.
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
        if conn.get_execution_options().get(_WRITE):
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            conn.exec_driver_sql("BEGIN")
