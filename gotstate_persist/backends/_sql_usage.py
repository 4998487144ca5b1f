"""Each namespace's usage counters, quota and retention in the SQL backend's namespaces table.

Why a module of its own: every write charges its namespace's counters in
the write's own transaction, by a conditional update that is at once the
quota check (so concurrent writers cannot overshoot), and retention prunes
the oldest versions in that same transaction; a delete or a pruning gives
back what it freed. Appends, rewrites, deletes and a catalog's confirmations
all keep the counters exact through the one :class:`UsageLedger` the backend
owns, which also reads, recounts and sets usage and quotas.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import msgspec

from .._names import SYSTEM_KEY_MARKER, is_system_key
from .._quota_rules import Quota, check_replace, check_write, per_key_charge, prune_count
from ..errors import BackendError, IntegrityError
from ._sql_connections import Connections
from ._sql_rows import ObjectRef, counters_of, object_ref
from ._sql_statements import QUOTA_FIELDS, Statements
from .base import Usage, usage_drift

__all__ = ["UsageLedger", "quota_of"]

# The SQL backend's logger, whichever of its parts writes the record.
logger = logging.getLogger("gotstate_persist.backends.sql")


def quota_of(columns: Sequence[Any]) -> Quota | None:
    """The quota a namespace row's limit columns hold (None when no limit is set)."""
    fields = dict(zip(QUOTA_FIELDS, columns, strict=True))
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


class UsageLedger:
    """Usage and limits of every namespace of one database (see the module docstring)."""

    def __init__(self, connections: Connections, statements: Statements) -> None:
        self._connections = connections
        self._sql = statements
        # Namespaces seen pruning by retention (a catalog makes their
        # confirmations durable, see CatalogRows.confirm).
        self.pruning: set[str] = set()
        # Namespaces whose retention may prune, as their quota was last read or
        # set here, or as a write found it: PostgreSQL's appends to them take
        # the one statement that prunes too (any append is right with either
        # statement; this only picks the faster one).
        self.retaining: set[str] = set()

    def charge(
        self, conn: Any, params: dict[str, Any], key_versions: int, *, defer_prune: bool = False
    ) -> list[int]:
        """Count one write against its namespace, pruning first if retention says so.

        Runs inside the write's transaction after the key's row was bumped
        (``key_versions`` is the key's count with the new version), before
        the blob is inserted; raises ``QuotaExceeded`` to roll it all back.
        With ``defer_prune`` (a catalog's reservation) the limits are checked
        as if retention had pruned, but the oldest versions stay, and stay
        counted, until the catalog confirms (:meth:`prune_confirmed`): a save
        that fails loses nothing. Returns the versions retention pruned.
        """
        names = {"ns": params["ns"]}
        system = is_system_key(params["key"])
        # what the per-key limits see: nothing of a system key (_quota_rules)
        new_key, counted = per_key_charge(
            new_key=key_versions == 1, key_versions=key_versions, system=system
        )
        charge = {
            "ns": params["ns"],
            "size": params["size"],
            "grow": params["size"],
            "more": 1,
            "add_bytes": params["size"],
            "add_records": 1,
            "new_key": int(new_key),
            "key_versions": counted,
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
        prune = prune_count(most, policy, key_versions, system=system)
        if prune:
            target = {"ns": params["ns"], "key": params["key"], "count": prune}
            doomed = conn.execute(
                self._sql["oldest" if defer_prune else "prune"], target
            ).fetchall()
            freed = sum(row[1] for row in doomed)
            pruned = len(doomed)
            self.pruning.add(params["ns"])
            self.retaining.add(params["ns"])
            if not defer_prune:
                conn.execute(self._sql["pruned"], {**target, "count": pruned})
        charge = {
            "ns": params["ns"],
            "size": params["size"],
            "grow": params["size"] - freed,
            "more": 1 - pruned,
            "add_bytes": params["size"] - (0 if defer_prune else freed),
            "add_records": 1 - (0 if defer_prune else pruned),
            "new_key": int(new_key),
            "key_versions": counted - pruned,
        }
        if conn.execute(self._sql["charge"], charge).rowcount == 1:
            return [] if defer_prune else [int(row[0]) for row in doomed]
        # Refused: say which limit, from the same row the update looked at.
        row = conn.execute(self._sql["limits"], names).fetchone()
        check_write(
            quota_of(row[3:]) or Quota(),
            Usage(int(row[0]), int(row[1]), int(row[2])),
            namespace=params["ns"],
            size=params["size"],
            new_key=key_versions == 1,
            key_versions=key_versions,
            freed_bytes=freed,
            pruned=pruned,
            system=system,
        )
        raise _disagreement(params["ns"])  # pragma: no cover - the update and the rules agree

    def charge_growth(self, conn: Any, namespace: str, size: int, grow: int) -> None:
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
        # Refused: say which limit, from the same row the update looked at.
        row = conn.execute(self._sql["limits"], {"ns": namespace}).fetchone()
        check_replace(
            quota_of(row[3:]) or Quota(),
            Usage(int(row[0]), int(row[1]), int(row[2])),
            namespace=namespace,
            largest=size,
            grow=grow,
        )
        raise _disagreement(namespace)  # pragma: no cover - the update and the rules agree

    def release(self, conn: Any, namespace: str, freed: Usage) -> None:
        """Give back what deleted or pruned rows held, in the transaction that removed them."""
        conn.execute(self._sql["release"], {"ns": namespace, **_counts(freed)})

    def prune_confirmed(self, conn: Any, params: dict[str, Any]) -> list[ObjectRef]:
        """Apply the retention a catalog's reservation deferred, now that it is confirmed.

        Returns ``(version, format_version, object_token)`` of what was pruned.
        """
        retention = conn.execute(self._sql["retention"], params).fetchall()
        held = conn.execute(self._sql["key_versions"], params).fetchone()
        if not retention or held is None:
            return []
        most, policy = retention[0]
        prune = prune_count(most, policy, int(held[0]), system=is_system_key(params["key"]))
        if not prune:
            return []
        doomed = conn.execute(self._sql["prune"], {**params, "count": prune})
        removed = doomed.fetchall()
        if removed:
            conn.execute(self._sql["pruned"], {**params, "count": len(removed)})
            self.release(conn, params["ns"], Usage(sum(row[1] for row in removed), len(removed)))
        return sorted(object_ref(row[0], row[2], row[3]) for row in removed)

    def usage(self, namespace: str) -> Usage:
        with self._connections.read() as conn:
            row = conn.execute(self._sql["counters"], {"ns": namespace}).fetchone()
        if row is None:
            return Usage()
        counted = counters_of(row)
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
            counting = {**names, "marker": SYSTEM_KEY_MARKER}
            total, records, keys = conn.execute(self._sql["usage"], counting).fetchone()
            counted = Usage(int(total), int(records), int(keys))
            conn.execute(self._sql["recount_keys"], names)
            kept_usage = counters_of(kept)  # None: damaged (not integers), repaired below
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

        return self._connections.transaction(recount)

    def load_quota(self, namespace: str) -> Quota | None:
        with self._connections.read() as conn:
            found = conn.execute(self._sql["quota"], {"ns": namespace}).fetchone()
        return self._retention_of(namespace, None if found is None else quota_of(found[3:]))

    def store_quota(self, namespace: str, quota: Quota | None, *, replace: bool) -> Quota | None:
        names = {"ns": namespace}

        def store(conn: Any) -> Quota | None:
            conn.execute(self._sql["new_namespace"], names)
            current = quota_of(conn.execute(self._sql["limits"], names).fetchone()[3:])
            if current is not None and not replace:
                return current
            fields = msgspec.structs.asdict(quota or Quota())
            conn.execute(self._sql["set_limits"], {**names, **fields})
            return None if quota is None or quota.unlimited else quota

        return self._retention_of(namespace, self._connections.transaction(store))

    def _retention_of(self, namespace: str, quota: Quota | None) -> Quota | None:
        """``quota``, noting whether its retention may prune (:attr:`retaining`)."""
        if quota is not None and quota.retention == "prune-oldest" and quota.max_versions_per_key:
            self.retaining.add(namespace)
        else:
            self.retaining.discard(namespace)
        return quota


def _disagreement(namespace: str) -> BackendError:
    """The counters refused what the rules allow: only drifted counters get here."""
    return BackendError(
        f"the usage counters of namespace {namespace!r} refused a write within its "
        "quota; run 'gotstate-persist usage URL --recount' and retry"
    )
