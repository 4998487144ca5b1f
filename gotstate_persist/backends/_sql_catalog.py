"""The SQL backend's side of a catalog: rows that name objects kept in an object store.

Why a module of its own: when a SQL database is the catalog of an object
store (``backends.catalog``), its rows do more than hold blobs. A row
reserves a version and its usage before the blob is written elsewhere, and
is confirmed after; a rewrite announces its new object in the row before the
object exists, and switches the row to it by compare-and-set on the
announcement, so a sweep never removes an object that a row could still come
to name. None of this is used by a plain SQL store; :class:`CatalogRows`
keeps it apart from the ``Backend`` contract, and ``SQLBackend`` hands its
catalog methods over to it.
"""

from __future__ import annotations

import secrets
from typing import Any

from ..errors import NotFound
from ._sql_connections import Connections
from ._sql_rows import ObjectRef, info_of, object_ref
from ._sql_statements import Statements
from ._sql_usage import UsageLedger
from ._sql_writes import Writes
from .base import KeyHead, VersionInfo

__all__ = ["CatalogRows"]

#: The meta row holding the database's identity as a catalog.
_CATALOG_ID = "catalog_id"


class CatalogRows:
    """A catalog's rows in one database, sharing the backend's connections, writes and usage."""

    def __init__(
        self,
        connections: Connections,
        statements: Statements,
        writes: Writes,
        usage: UsageLedger,
    ) -> None:
        self._connections = connections
        self._sql = statements
        self._writes = writes
        self._usage = usage

    # Reservations: the row reserves the version and its usage before the blob
    # is written elsewhere, and is confirmed after.

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
        return self._writes.append(
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
            return self._usage.prune_confirmed(conn, params)

        # Durable where retention prunes: the caller removes the pruned objects
        # next, and rows brought back by a power loss would then name nothing.
        pruning = namespace in self._usage.pruning
        transaction = self._connections.transaction
        pruned = transaction(confirm, durable=pruning)
        if pruned and not pruning:  # pruned unexpectedly (a quota set elsewhere)
            self._usage.pruning.add(namespace)
            # a durable commit makes every commit before it durable too (WAL)
            transaction(lambda conn: conn.execute(self._sql["touch"], params))
        return pruned

    def stale_reservations(self, namespace: str, cutoff_us: int) -> list[tuple[str, int, int]]:
        """``(key, version, format_version)`` of reservations made before ``cutoff_us``."""
        with self._connections.read() as conn:
            rows = conn.execute(self._sql["stale"], {"ns": namespace, "cutoff": cutoff_us})
            return [(str(key), int(version), int(fmt)) for key, version, fmt in rows.fetchall()]

    # Rewrites: a new object is announced in the row before it is created, and
    # the row switches to it by compare-and-set on the announcement, so a sweep
    # never removes an object that a row could still come to name.

    def get(
        self, namespace: str, key: str, version: int | None = None
    ) -> tuple[VersionInfo, int | None]:
        """A readable catalog row and the token of the object it names (None: legacy name)."""
        params = {"ns": namespace, "key": key, "version": version}
        with self._connections.read() as conn:
            statement = self._sql["catalog_newest" if version is None else "catalog_one"]
            row = conn.execute(statement, params).fetchone()
        if row is None:
            which = "no stored version" if version is None else f"no version {version}"
            raise NotFound(f"key {key!r} in namespace {namespace!r} has {which}")
        return info_of(row), None if row[6] is None else int(row[6])

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
        return self._connections.transaction(
            lambda conn: self._changed_one(conn, "announce", params)
        )

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
            self._usage.charge_growth(conn, namespace, size, size - int(found[0]))
            return True

        return self._connections.transaction(switch)

    def unannounce(self, namespace: str, key: str, version: int, pending: int) -> bool:
        """Take back announcement ``pending``; False if it is no longer the row's."""
        params = {"ns": namespace, "key": key, "version": version, "pending": pending}
        # durable: the object is removed next, and an announcement back from a
        # crash would let a stalled rewriter switch the row to nothing
        return self._connections.transaction(
            lambda conn: self._changed_one(conn, "unannounce", params)
        )

    def _changed_one(self, conn: Any, statement: str, params: dict[str, Any]) -> bool:
        return bool(conn.execute(self._sql[statement], params).rowcount == 1)

    def stale_announcements(self, namespace: str, cutoff_us: int) -> list[tuple[str, int, int]]:
        """``(key, version, pending token)`` of announcements made before ``cutoff_us``."""
        with self._connections.read() as conn:
            rows = conn.execute(
                self._sql["stale_announcements"], {"ns": namespace, "cutoff": cutoff_us}
            ).fetchall()
        return [(str(key), int(version), int(pending)) for key, version, pending in rows]

    # What a catalog's sweep and listing need to know.

    def catalog_id(self, *, create: bool) -> str | None:
        """This database's identity as a catalog; made (once, by whoever is first) if asked."""
        params = {"name": _CATALOG_ID, "value": secrets.token_hex(16)}
        with self._connections.read() as conn:
            row = conn.execute(self._sql["meta_get"], params).fetchone()
        if row is not None or not create:
            return None if row is None else str(row[0])

        def make(conn: Any) -> str:
            conn.execute(self._sql["meta_put"], params)
            return str(conn.execute(self._sql["meta_get"], params).fetchone()[0])

        return self._connections.transaction(make)

    def last_versions(self, namespace: str) -> dict[str, int]:
        """``key -> last_version`` of every key this database ever held in ``namespace``."""
        with self._connections.read() as conn:
            rows = conn.execute(self._sql["last_versions"], {"ns": namespace}).fetchall()
        return {str(key): int(last) for key, last in rows}

    def readable_head(self, namespace: str, key: str) -> KeyHead:
        """``head`` as readers see it: ``newest`` is the newest confirmed version."""
        params = {"ns": namespace, "key": key}
        with self._connections.read() as conn:
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
        with self._connections.read() as conn:
            return [str(row[0]) for row in conn.execute(self._sql["known_namespaces"]).fetchall()]

    def row_objects(self, namespace: str) -> dict[tuple[str, int], tuple[ObjectRef, int | None]]:
        """``(key, version) -> (object named, announced token)`` of every row, reservations too."""
        with self._connections.read() as conn:
            rows = conn.execute(self._sql["rows"], {"ns": namespace}).fetchall()
        return {
            (str(key), int(version)): (
                object_ref(version, fmt, token),
                None if pending is None else int(pending),
            )
            for key, version, fmt, token, pending in rows
        }
