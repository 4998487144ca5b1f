"""Every change to stored versions in the SQL backend, each one transaction.

Why a module of its own: writes are where concurrent writers of one key
meet, and each must leave the key's bookkeeping row and its namespace's
usage exact. An append updates the bookkeeping row *only if*
``last_version`` is still the one the writer saw, in the same transaction as
the usage charge and the insert of the blob, so it either wins atomically or
fails with ``VersionConflict``, ``FormatError`` (another kind) or
``QuotaExceeded`` saying exactly why; on PostgreSQL the common case, pruning
by retention included, runs as one autocommitted statement instead, and
whatever that cannot decide falls back to the transaction. A delete locks
the bookkeeping row before it lists what to remove; a swap (``replace``) is
a compare-and-set on the stored blob. A save, ``delete``, ``replace`` and a
catalog's reservations and withdrawals all go through the one
:class:`Writes` the backend owns.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .._names import is_system_key
from ..errors import NotFound, VersionConflict
from ._sql_connections import (
    NOT_NULL_VIOLATION,
    RETRYABLE_SQLSTATES,
    UNIQUE_VIOLATION,
    Connections,
    leave_autocommit,
    sqlstate,
)
from ._sql_rows import ObjectRef, numeric, object_ref
from ._sql_statements import Statements
from ._sql_usage import UsageLedger
from .base import Usage, kind_mismatch, not_at_expected

__all__ = ["Writes"]


class Writes:
    """Writes to one database, counted by the :class:`UsageLedger` they share with the backend.

    ``params`` of an append: ``ns``, ``key``, ``version``, ``kind``,
    ``expected`` (the newest version the writer saw, or None),
    ``format_version``, ``size``, ``created_at_us``, ``blob`` and
    ``reserved_at_us`` (None, or when a catalog reserved the row).
    """

    def __init__(
        self, connections: Connections, statements: Statements, usage: UsageLedger
    ) -> None:
        self._connections = connections
        self._sql = statements
        self._usage = usage
        self._in_one = connections.engine.dialect.name == "postgresql"

    def put(self, params: dict[str, Any]) -> None:
        """Append a readable version: in one statement where possible, else transactionally."""
        if (
            not self._in_one
            or is_system_key(params["key"])  # the one statement counts every key as one
            or not self.append_in_one(params, pruning=params["ns"] in self._usage.retaining)
        ):
            self.append(params)

    def append(self, params: dict[str, Any], *, defer_prune: bool = False) -> list[int]:
        """The transactional append; returns the versions retention pruned."""
        return self._connections.transaction(
            lambda conn: self._append_in(conn, params, defer_prune=defer_prune)
        )

    def append_many(self, many: Sequence[dict[str, Any]]) -> None:
        """Several appends in ONE transaction: all are stored or none (``put_many``)."""

        def append_all(conn: Any) -> None:
            for params in many:
                self._append_in(conn, params, defer_prune=False)

        self._connections.transaction(append_all)

    def _append_in(self, conn: Any, params: dict[str, Any], *, defer_prune: bool) -> list[int]:
        """One append inside the caller's transaction; the versions retention pruned."""
        namespace, key, expected_newest = params["ns"], params["key"], params["expected"]
        bump = self._sql["bump" if expected_newest is None else "bump_expected"]
        bumped = conn.execute(bump, params).fetchall()
        if bumped:
            key_versions = int(bumped[0][0])
        else:
            head = conn.execute(self._sql.head, (namespace, key)).fetchone()
            if head is None and not expected_newest:
                conn.execute(self._sql["new_key"], params)  # a racing creator -> conflict
                key_versions = 1
            else:
                self._explain_refusal(
                    conn, namespace, key, params["version"], params["kind"], expected_newest
                )
        pruned = self._usage.charge(conn, params, key_versions, defer_prune=defer_prune)
        conn.execute(self._sql["insert"], params)
        return pruned

    def append_in_one(self, params: dict[str, Any], *, pruning: bool = False) -> bool:
        """Append to an existing key in ONE autocommitted statement (PostgreSQL).

        A data-modifying CTE bumps the key's bookkeeping row with the same
        compare-and-set as the transactional path, charges the namespace's
        usage within its limits and inserts the blob only if both happened,
        atomically, in a single round trip instead of six. With ``pruning``
        (a namespace whose retention may prune) the statement also deletes
        the key's oldest versions beyond ``max_versions_per_key`` and nets
        them out of the charge, in that same round trip instead of eight or
        more (``_sql_statements._append_pruning`` says why that is exact
        under concurrent writers, deletes, rewrites and quota changes).
        Returns False when it did not apply (a new key or namespace, a stale
        version, another kind, a limit, retention to apply without
        ``pruning``, a race the statement cannot settle, a serialization
        failure): the transactional path then decides, and explains any
        refusal.
        """
        name = "append_pruning" if pruning else "append_one"
        statement = self._sql[name if params["expected"] is None else f"{name}_expected"]
        connections = self._connections
        conn = connections.acquire()
        try:
            conn.dbapi_connection.autocommit = True
            try:
                return bool(conn.execute(statement, params).rowcount == 1)
            except connections.dbapi_integrity as exc:
                if sqlstate(exc) == UNIQUE_VIOLATION:
                    raise VersionConflict(
                        "another writer created this version at the same time; retry the save"
                    ) from connections.cause(exc)
                if sqlstate(exc) == NOT_NULL_VIOLATION:
                    return False  # not charged: a new namespace, a refusal or a race
                raise connections.failed(conn, exc) from connections.cause(exc)
            except connections.dbapi_error as exc:
                if sqlstate(exc) in RETRYABLE_SQLSTATES:
                    return False  # the transactional path retries
                raise connections.failed(conn, exc) from connections.cause(exc)
        finally:
            leave_autocommit(conn)
            connections.release(conn)

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
            raise not_at_expected(key, expected_newest, newest)
        if newest and stored_kind != kind:
            raise kind_mismatch(key, stored_kind, kind)
        raise VersionConflict(
            f"version {version} of key {key!r} cannot be created: the key already reached "
            f"version {last}; retry the save",
            expected=version - 1,
            actual=newest,
        )

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
            rows = numeric(key, conn.execute(self._sql["stored_sizes"], params).fetchall())
            sizes = {int(row[0]): int(row[1]) for row in rows}
            objects = {int(row[0]): object_ref(row[0], row[2], row[3]) for row in rows}
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
            gone = 0 if remaining or is_system_key(key) else 1  # a system key is no key
            freed = Usage(sum(sizes[version] for version in doomed), len(doomed), gone)
            self._usage.release(conn, namespace, freed)
            return sorted(objects[version] for version in doomed)

        return self._connections.transaction(remove)

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
            if not self._connections.is_sqlite:  # a server: one pipelined round trip per batch
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
                self._usage.charge_growth(conn, namespace, max(row[3] for row in changed), grow)
            return done

        return self._connections.transaction(swap)
