"""Appending one version in the SQL backend: the compare-and-set, its fast path, its refusals.

Why a module of its own: an append is where concurrent writers of one key
meet. The key's bookkeeping row is updated *only if* ``last_version`` is
still the one the writer saw, in the same transaction as the usage charge
and the insert of the blob, so an append either wins atomically or fails
with ``VersionConflict``, ``FormatError`` (another kind) or ``QuotaExceeded``
saying exactly why. On PostgreSQL the common case runs as one autocommitted
statement instead; whatever it cannot decide falls back to the transaction.
A save (``SQLBackend.put``) and a catalog's reservation share this path.
"""

from __future__ import annotations

from typing import Any

from ..errors import VersionConflict
from ._sql_connections import (
    NOT_NULL_VIOLATION,
    RETRYABLE_SQLSTATES,
    UNIQUE_VIOLATION,
    Connections,
    leave_autocommit,
    sqlstate,
)
from ._sql_statements import Statements
from ._sql_usage import UsageLedger
from .base import kind_mismatch

__all__ = ["Appends"]


class Appends:
    """Appends to one database, charged to the :class:`UsageLedger` they share with the backend.

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
            or params["ns"] in self._usage.pruning
            or not self.append_in_one(params)
        ):
            self.append(params)

    def append(self, params: dict[str, Any], *, defer_prune: bool = False) -> list[int]:
        """The transactional append; returns the versions retention pruned."""
        namespace, key, expected_newest = params["ns"], params["key"], params["expected"]
        bump = self._sql["bump" if expected_newest is None else "bump_expected"]

        def append(conn: Any) -> list[int]:
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

        return self._connections.transaction(append)

    def append_in_one(self, params: dict[str, Any]) -> bool:
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
                    return False  # not charged: pruning, a new namespace or a refusal
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
