"""Quotas: per-namespace budgets, and the adapter that enforces them in front of a backend.

A :class:`Quota` is persisted per namespace by the backend, so every process
opening the namespace enforces the same limits. The quota and its rules (when a
write crosses a limit, what retention prunes) live in ``_quota_rules``, below
the backends that persist and check them; this module is the enforcement
above a backend, and where the public names are imported from. Where the
limits are checked depends on what the backend can promise:

* a backend whose ``capabilities.exact_quota`` is set (the SQL backend) keeps
  usage counters in the same transaction as each write and refuses a write
  that would cross a limit inside that transaction, so concurrent writers in
  many processes can never overshoot; the adapter only adds rate limits;
* any other backend (object stores, plugins) is guarded here: one ledger per
  storage and namespace *in this process*, counted from the storage at first
  use, and a lock held across check and write. That is exact within one
  process; writers in other processes are not seen until
  ``usage(recount=True)`` recounts.

Rate limits (``max_writes_per_second``, ``max_reads_per_second``) use the
``limits`` library's moving-window strategy over a log kept in memory: they
hold per process. Tallies, rate windows and cached quotas are kept per storage
by ``_quota_state``, which says which adapters share them and for how long.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from typing import Any

import msgspec

from ._names import is_system_key
from ._quota_rules import (
    RETENTIONS,
    Quota,
    Retention,
    check_replace,
    check_write,
    quota_exceeded,
    versions_to_prune,
)
from ._quota_state import Ledger, state_of
from .backends.base import (
    Backend,
    KeyHead,
    NewVersion,
    ReadFailure,
    Replacement,
    Usage,
    VersionInfo,
    usage_drift,
)

# The value type and its rules live in _quota_rules; they stay importable from here.
__all__ = [
    "QUOTA_REFRESH_SECONDS",
    "RETENTIONS",
    "Quota",
    "QuotaBackend",
    "Retention",
    "check_write",
    "quota_exceeded",
]

logger = logging.getLogger(__name__)

#: How long a process trusts its copy of a namespace's quota before reading it
#: again. Amount limits on exact backends (SQL, catalogs) are checked by the
#: database on every write and need no copy; rate limits, and every limit on
#: other backends, follow a change made by another process within this time.
QUOTA_REFRESH_SECONDS = 5.0


class QuotaBackend(Backend):
    """The quota-enforcing adapter: a :class:`Backend` wrapping another one.

    Every store talks to its backend through one of these (design.md,
    "Layers"). It reads the namespace's persisted quota when asked
    (:meth:`quota`), counts and refuses writes, and applies retention.
    """

    def __init__(self, inner: Backend) -> None:
        self._inner = inner
        self.capabilities = inner.capabilities
        self.storage_identity = inner.storage_identity
        # Shared with every adapter of this process on the same storage.
        self._state = state_of(inner)
        self._rates = self._state.rates

    def __repr__(self) -> str:
        return repr(self._inner)

    @property
    def inner(self) -> Backend:
        """The wrapped backend."""
        return self._inner

    # Quota bookkeeping.

    def quota(self, namespace: str, *, fresh: bool = False) -> Quota | None:
        """The namespace's persisted quota.

        Cached per storage and namespace for the whole process, so a change
        made through any store of this process binds every other one at once;
        a change made by another process is read within
        :data:`QUOTA_REFRESH_SECONDS` (``fresh`` reads it now).
        """
        cached = self._state.cached_quota(namespace)
        if fresh or cached is None or time.monotonic() - cached[1] > QUOTA_REFRESH_SECONDS:
            quota = self._inner.load_quota(namespace)
            self._state.remember_quota(namespace, quota)
            return quota
        return cached[0]

    def adopt_quota(self, namespace: str, quota: Quota) -> Quota:
        """Persist ``quota`` unless the namespace already has one; return the stored one."""
        stored = self._inner.store_quota(namespace, quota, replace=False)
        self._state.remember_quota(namespace, stored)
        return stored if stored is not None else Quota()

    def set_quota(self, namespace: str, quota: Quota | None) -> None:
        """Replace the namespace's quota (None or an unlimited Quota removes it)."""
        if quota is not None and quota.unlimited:
            quota = None
        self._inner.store_quota(namespace, quota, replace=True)
        self._state.remember_quota(namespace, quota)

    def _ledger(self, namespace: str) -> Ledger:
        """This process's tally of a namespace (counted from the storage when first needed)."""
        return self._state.ledger(namespace, lambda: self._inner.usage(namespace))

    def usage(self, namespace: str) -> Usage:
        if self.capabilities.exact_quota or self.quota(namespace) is None:
            return self._inner.usage(namespace)
        ledger = self._ledger(namespace)
        with ledger.lock:
            return ledger.usage

    def sweep(self, namespace: str) -> int:
        return self._inner.sweep(namespace)  # removes only what usage never counted

    def recount(self, namespace: str) -> Usage:
        if self.capabilities.exact_quota:
            return self._inner.recount(namespace)
        if self.quota(namespace) is None:  # no tally to correct
            self._state.forget(namespace)
            return self._inner.recount(namespace)
        ledger = self._ledger(namespace)
        with ledger.lock:  # no write of this process lands between count and tally
            counted = self._inner.recount(namespace)
            drift = usage_drift(ledger.usage, counted)
            ledger.usage = counted
        return msgspec.structs.replace(counted, drift=drift)

    # Writes.

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
        quota = self.quota(namespace)
        self._rates.hit(quota, namespace, "write")
        arguments: dict[str, Any] = {
            "kind": kind,
            "format_version": format_version,
            "created_at_us": created_at_us,
            "expected_newest": expected_newest,
        }
        if self.capabilities.exact_quota:
            return self._inner.put(namespace, key, version, blob, **arguments)
        if quota is None:
            self._state.forget(namespace)
            return self._inner.put(namespace, key, version, blob, **arguments)
        return self._guarded_put(namespace, key, version, blob, quota, arguments)

    def put_many(self, namespace: str, items: Sequence[NewVersion]) -> list[VersionInfo]:
        """As :meth:`Backend.put_many`: one transaction where the backend keeps exact quotas.

        Each item counts as one write for the rate limit. Without exact
        quotas the items go through :meth:`put` one by one (each checked).
        """
        if not (self.capabilities.exact_quota and self.capabilities.atomic_put_many):
            return super().put_many(namespace, items)
        quota = self.quota(namespace)
        for _item in items:
            self._rates.hit(quota, namespace, "write")
        return self._inner.put_many(namespace, items)

    def _guarded_put(
        self,
        namespace: str,
        key: str,
        version: int,
        blob: bytes,
        quota: Quota,
        arguments: dict[str, Any],
    ) -> VersionInfo:
        ledger = self._ledger(namespace)
        system = is_system_key(key)  # bytes and records only (_quota_rules)
        with ledger.lock:
            stored = self._inner.versions(namespace, key)
            doomed = stored[: versions_to_prune(quota, len(stored) + 1, system=system)]
            check_write(
                quota,
                ledger.usage,
                namespace=namespace,
                size=len(blob),
                new_key=not stored,
                key_versions=len(stored) + 1,
                freed_bytes=sum(info.size for info in doomed),
                pruned=len(doomed),
                system=system,
            )
            info = self._inner.put(namespace, key, version, blob, **arguments)
            ledger.usage = _plus(ledger.usage, len(blob), 1, int(not stored and not system))
            if doomed:
                self._delete_locked(ledger, namespace, key, [d.version for d in doomed])
            return info

    def delete(self, namespace: str, key: str, versions: Sequence[int] | None = None) -> int:
        quota = self.quota(namespace)
        self._rates.hit(quota, namespace, "write")
        if self.capabilities.exact_quota:
            return self._inner.delete(namespace, key, versions)
        if quota is None:
            self._state.forget(namespace)
            return self._inner.delete(namespace, key, versions)
        ledger = self._ledger(namespace)
        with ledger.lock:
            return self._delete_locked(ledger, namespace, key, versions)

    def _delete_locked(
        self, ledger: Ledger, namespace: str, key: str, versions: Sequence[int] | None
    ) -> int:
        stored = {info.version: info.size for info in self._inner.versions(namespace, key)}
        count = self._inner.delete(namespace, key, versions)
        doomed = stored if versions is None else {v: stored.get(v, 0) for v in versions}
        emptied = versions is None or not set(stored) - set(versions)
        gone = int(emptied and not is_system_key(key))  # a system key is never counted as one
        ledger.usage = _plus(ledger.usage, -sum(doomed.values()), -count, -gone)
        return count

    # Reads and the rest: straight through (reads count against the read rate).

    def get(
        self, namespace: str, key: str, version: int | None = None
    ) -> tuple[VersionInfo, bytes]:
        self._rates.hit(self.quota(namespace), namespace, "read")
        return self._inner.get(namespace, key, version)

    def head(self, namespace: str, key: str) -> KeyHead:
        return self._inner.head(namespace, key)

    def versions(self, namespace: str, key: str) -> list[VersionInfo]:
        return self._inner.versions(namespace, key)

    def keys(self, namespace: str, prefix: str = "") -> list[str]:
        return self._inner.keys(namespace, prefix)

    def namespaces(self) -> list[str]:
        return self._inner.namespaces()

    def iter_namespace(
        self, namespace: str, *, on_error: ReadFailure | None = None
    ) -> Iterator[tuple[VersionInfo, bytes]]:
        return self._inner.iter_namespace(namespace, on_error=on_error)

    def replace(self, namespace: str, replacements: Sequence[Replacement]) -> list[bool]:
        quota = self.quota(namespace)
        self._rates.hit(quota, namespace, "write")
        if self.capabilities.exact_quota:
            return self._inner.replace(namespace, replacements)
        if quota is None:
            self._state.forget(namespace)
            return self._inner.replace(namespace, replacements)
        ledger = self._ledger(namespace)
        with ledger.lock:  # sizes change: within the quota, and keep the tally right
            before = {
                (r.key, r.version): info.size
                for r in replacements
                for info in self._inner.versions(namespace, r.key)
                if info.version == r.version
            }
            at_most = sum(
                len(r.blob) - before[(r.key, r.version)]
                for r in replacements
                if (r.key, r.version) in before
            )
            check_replace(
                quota,
                ledger.usage,
                namespace=namespace,
                largest=max((len(r.blob) for r in replacements), default=0),
                grow=at_most,
            )
            done = self._inner.replace(namespace, replacements)
            grow = sum(
                len(r.blob) - before.get((r.key, r.version), len(r.blob))
                for r, swapped in zip(replacements, done, strict=True)
                if swapped
            )
            ledger.usage = _plus(ledger.usage, grow, 0, 0)
            return done

    def load_quota(self, namespace: str) -> Quota | None:
        return self._inner.load_quota(namespace)

    def store_quota(self, namespace: str, quota: Quota | None, *, replace: bool) -> Quota | None:
        return self._inner.store_quota(namespace, quota, replace=replace)

    def close(self) -> None:
        self._inner.close()


def _plus(usage: Usage, size: int, records: int, keys: int) -> Usage:
    return Usage(usage.bytes + size, usage.records + records, usage.keys + keys)
