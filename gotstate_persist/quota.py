"""Quotas: per-namespace budgets, and the adapter that enforces them in front of a backend.

A :class:`Quota` is persisted per namespace by the backend, so every process
opening the namespace enforces the same limits. Where the limits are checked
depends on what the backend can promise:

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
hold per process.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from typing import Any, Literal

import msgspec

from .backends.base import (
    Backend,
    KeyHead,
    ReadFailure,
    Replacement,
    Usage,
    VersionInfo,
    usage_drift,
)
from .errors import InvalidArgument, QuotaExceeded, RateLimited

__all__ = ["QUOTA_REFRESH_SECONDS", "RETENTIONS", "Quota", "QuotaBackend", "quota_exceeded"]

logger = logging.getLogger(__name__)

Retention = Literal["reject", "prune-oldest"]
RETENTIONS: tuple[str, ...] = ("reject", "prune-oldest")
#: Limits that bound stored amounts, in the order they are checked and reported.
_AMOUNT_LIMITS = ("max_blob_bytes", "max_bytes", "max_records", "max_keys", "max_versions_per_key")
_MAX_LIMIT = 2**63 - 1


class Quota(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A namespace's budget; every limit is optional (None: unlimited).

    ``max_versions_per_key`` with ``retention="reject"`` refuses a write that
    would keep more versions of a key; with ``"prune-oldest"`` the write
    succeeds and the oldest versions are deleted (in the same transaction on
    SQL). Rates are operations per second over a moving one-second window,
    per process.
    """

    max_bytes: int | None = None
    max_records: int | None = None
    max_keys: int | None = None
    max_blob_bytes: int | None = None
    max_versions_per_key: int | None = None
    retention: Retention = "reject"
    max_writes_per_second: int | None = None
    max_reads_per_second: int | None = None

    def __post_init__(self) -> None:
        for name in (*_AMOUNT_LIMITS, "max_writes_per_second", "max_reads_per_second"):
            value = getattr(self, name)
            if value is not None and (type(value) is not int or not 1 <= value <= _MAX_LIMIT):
                raise InvalidArgument(
                    f"Quota.{name} must be None or an int from 1 to {_MAX_LIMIT}, got {value!r}"
                )
        if self.retention not in RETENTIONS:
            raise InvalidArgument(
                f"Quota.retention must be one of {', '.join(RETENTIONS)}, got {self.retention!r}"
            )

    @property
    def unlimited(self) -> bool:
        """Whether no limit is set at all (the same as having no quota)."""
        return self == Quota(retention=self.retention)

    def describe(self) -> str:
        """The set limits as ``name=value`` pairs (for messages and the CLI)."""
        parts = [
            f"{name}={value}"
            for name, value in msgspec.structs.asdict(self).items()
            if value is not None and name != "retention"
        ]
        if self.max_versions_per_key is not None:
            parts.append(f"retention={self.retention}")
        return ", ".join(parts) or "no limits"


def quota_exceeded(
    limit: str, maximum: int, usage: int, requested: int, *, namespace: str
) -> QuotaExceeded:
    """The error for a write that would take ``limit`` from ``usage`` past ``maximum``."""
    option = "--" + limit.replace("_", "-")
    return QuotaExceeded(
        f"namespace {namespace!r}: the write needs {requested} more of {limit}={maximum} "
        f"({usage} in use); nothing was written. Free space with store.delete(), or raise "
        f"the limit with store.set_quota() or "
        f"'gotstate-persist quota set URL --namespace {namespace} {option} N'",
        limit=limit,
        maximum=maximum,
        usage=usage,
        requested=requested,
    )


def check_write(
    quota: Quota,
    usage: Usage,
    *,
    namespace: str,
    size: int,
    new_key: bool,
    key_versions: int,
    freed_bytes: int = 0,
    pruned: int = 0,
) -> None:
    """Raise ``QuotaExceeded`` if one write of ``size`` bytes would cross a limit.

    ``key_versions`` is how many versions the key holds with the write;
    ``freed_bytes`` and ``pruned`` are what retention removes with it.
    """
    # (limit, in use, needed on top). A limit binds only a write that needs more
    # of it, net of what retention frees; the SQL backend's conditional update
    # (backends.sql._WITHIN_LIMITS) states the same rules.
    checks = (
        ("max_blob_bytes", 0, size),
        ("max_bytes", usage.bytes, size - freed_bytes),
        ("max_records", usage.records, 1 - pruned),
        ("max_keys", usage.keys, 1 if new_key else 0),
        ("max_versions_per_key", key_versions - pruned - 1, 1),
    )
    for limit, used, requested in checks:
        maximum = getattr(quota, limit)
        if maximum is not None and requested > 0 and used + requested > maximum:
            raise quota_exceeded(limit, maximum, used, requested, namespace=namespace)


@functools.cache
def _rate_storage() -> Any:
    """The process's moving-window log for ``limits``' ``MovingWindowRateLimiter``.

    limits' ``MemoryStorage`` with its moving window kept as one deque of
    timestamps per key (at most ``limit`` entries): the stock one restarts an
    expiry timer thread from inside every check, which costs more than the
    save it guards. Built on first use, because limits is slow to import.
    """
    from limits.storage import MemoryStorage

    class WindowLog(MemoryStorage):
        def __init__(self) -> None:
            super().__init__()
            self._window_lock = threading.Lock()
            self._logs: dict[str, deque[float]] = {}

        def acquire_entry(self, key: str, limit: int, expiry: int, amount: int = 1) -> bool:
            if amount > limit:
                return False
            now = time.time()
            with self._window_lock:
                log = self._logs.setdefault(key, deque())
                while log and log[0] <= now - expiry:  # the window is (now - expiry, now]
                    log.popleft()
                if len(log) + amount > limit:
                    return False
                log.extend([now] * amount)
                return True

        def get_moving_window(self, key: str, limit: int, expiry: int) -> tuple[float, int]:
            del limit
            now = time.time()
            with self._window_lock:
                live = [moment for moment in self._logs.get(key, ()) if moment > now - expiry]
            return (live[0], len(live)) if live else (now, 0)

    return WindowLog()


class _Rates:
    """Moving-window rate limits (the ``limits`` strategy) for one storage, per process."""

    def __init__(self, storage: str) -> None:
        self._storage = storage
        self._limiter: Any = None  # built at the first rate-limited operation
        self._items: dict[int, Any] = {}

    def hit(self, quota: Quota | None, namespace: str, direction: str) -> None:
        per_second = None if quota is None else getattr(quota, f"max_{direction}s_per_second")
        if per_second is None:
            return
        item = self._items.get(per_second)
        if item is None:
            from limits import RateLimitItemPerSecond, strategies

            if self._limiter is None:
                # One log per process: every store on this storage and namespace shares it.
                self._limiter = strategies.MovingWindowRateLimiter(_rate_storage())
            item = self._items[per_second] = RateLimitItemPerSecond(per_second)
        if self._limiter.hit(item, self._storage, namespace, direction):
            return
        reset = self._limiter.get_window_stats(item, self._storage, namespace, direction)[0]
        retry_after = max(0.0, reset - time.time())
        raise RateLimited(
            f"namespace {namespace!r}: more than {per_second} {direction}s per second "
            f"(max_{direction}s_per_second) in this process; retry in {retry_after:.2f} s, "
            "or raise the limit with store.set_quota()",
            limit=f"max_{direction}s_per_second",
            maximum=per_second,
            usage=per_second,
            requested=1,
            retry_after=retry_after,
        )


class _Ledger:
    """What one process knows of a namespace's usage on a non-exact backend."""

    def __init__(self, usage: Usage) -> None:
        self.lock = threading.RLock()
        self.usage = usage


_LEDGERS: dict[tuple[str, str], _Ledger] = {}
#: How long a process trusts its copy of a namespace's quota before reading it
#: again. Amount limits on exact backends (SQL, catalogs) are checked by the
#: database on every write and need no copy; rate limits, and every limit on
#: other backends, follow a change made by another process within this time.
QUOTA_REFRESH_SECONDS = 5.0
#: (storage, namespace) -> (quota, when it was read, time.monotonic()).
_QUOTAS: dict[tuple[str, str], tuple[Quota | None, float]] = {}
_LEDGERS_LOCK = threading.Lock()


class QuotaBackend(Backend):
    """The quota-enforcing adapter: a :class:`Backend` wrapping another one.

    Every store talks to its backend through one of these (design.md,
    "Layers"). It reads the namespace's persisted quota when asked
    (:meth:`quota`), counts and refuses writes, and applies retention.
    """

    def __init__(self, inner: Backend) -> None:
        self._inner = inner
        self.capabilities = inner.capabilities
        self._rates = _Rates(repr(inner))
        self._storage = repr(inner)

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
        identity = (self._storage, namespace)
        cached = _QUOTAS.get(identity)
        if fresh or cached is None or time.monotonic() - cached[1] > QUOTA_REFRESH_SECONDS:
            quota = self._inner.load_quota(namespace)
            _QUOTAS[identity] = (quota, time.monotonic())
            return quota
        return cached[0]

    def _remember(self, namespace: str, quota: Quota | None) -> None:
        _QUOTAS[(self._storage, namespace)] = (quota, time.monotonic())

    def adopt_quota(self, namespace: str, quota: Quota) -> Quota:
        """Persist ``quota`` unless the namespace already has one; return the stored one."""
        stored = self._inner.store_quota(namespace, quota, replace=False)
        self._remember(namespace, stored)
        return stored if stored is not None else Quota()

    def set_quota(self, namespace: str, quota: Quota | None) -> None:
        """Replace the namespace's quota (None or an unlimited Quota removes it)."""
        if quota is not None and quota.unlimited:
            quota = None
        self._inner.store_quota(namespace, quota, replace=True)
        self._remember(namespace, quota)

    def _ledger(self, namespace: str) -> _Ledger:
        """This process's tally of a namespace with a quota on a non-exact backend.

        Counted from the storage when first needed, outside the registry's
        lock (a count may walk a whole namespace); the first tally registered
        wins, and every write goes through it from then on.
        """
        identity = (self._storage, namespace)
        with _LEDGERS_LOCK:
            ledger = _LEDGERS.get(identity)
        if ledger is None:
            counted = _Ledger(self._inner.usage(namespace))
            with _LEDGERS_LOCK:
                ledger = _LEDGERS.setdefault(identity, counted)
        return ledger

    def _forget(self, namespace: str) -> None:
        """Drop the tally of a namespace without quota: one set later counts afresh."""
        if _LEDGERS:
            with _LEDGERS_LOCK:
                _LEDGERS.pop((self._storage, namespace), None)

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
            self._forget(namespace)
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
            self._forget(namespace)
            return self._inner.put(namespace, key, version, blob, **arguments)
        return self._guarded_put(namespace, key, version, blob, quota, arguments)

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
        with ledger.lock:
            stored = self._inner.versions(namespace, key)
            doomed: Sequence[VersionInfo] = ()
            limit = quota.max_versions_per_key
            if limit is not None and quota.retention == "prune-oldest":
                doomed = stored[: max(0, len(stored) + 1 - limit)]
            check_write(
                quota,
                ledger.usage,
                namespace=namespace,
                size=len(blob),
                new_key=not stored,
                key_versions=len(stored) + 1,
                freed_bytes=sum(info.size for info in doomed),
                pruned=len(doomed),
            )
            info = self._inner.put(namespace, key, version, blob, **arguments)
            ledger.usage = _plus(ledger.usage, len(blob), 1, int(not stored))
            if doomed:
                self._delete_locked(ledger, namespace, key, [d.version for d in doomed])
            return info

    def delete(self, namespace: str, key: str, versions: Sequence[int] | None = None) -> int:
        quota = self.quota(namespace)
        self._rates.hit(quota, namespace, "write")
        if self.capabilities.exact_quota:
            return self._inner.delete(namespace, key, versions)
        if quota is None:
            self._forget(namespace)
            return self._inner.delete(namespace, key, versions)
        ledger = self._ledger(namespace)
        with ledger.lock:
            return self._delete_locked(ledger, namespace, key, versions)

    def _delete_locked(
        self, ledger: _Ledger, namespace: str, key: str, versions: Sequence[int] | None
    ) -> int:
        stored = {info.version: info.size for info in self._inner.versions(namespace, key)}
        count = self._inner.delete(namespace, key, versions)
        doomed = stored if versions is None else {v: stored.get(v, 0) for v in versions}
        emptied = versions is None or not set(stored) - set(versions)
        ledger.usage = _plus(ledger.usage, -sum(doomed.values()), -count, -int(emptied))
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
            self._forget(namespace)
            return self._inner.replace(namespace, replacements)
        ledger = self._ledger(namespace)
        with ledger.lock:  # sizes change: within the quota, and keep the tally right
            before = {
                (r.key, r.version): info.size
                for r in replacements
                for info in self._inner.versions(namespace, r.key)
                if info.version == r.version
            }
            largest = max((len(r.blob) for r in replacements), default=0)
            if quota.max_blob_bytes is not None and largest > quota.max_blob_bytes:
                raise quota_exceeded(
                    "max_blob_bytes", quota.max_blob_bytes, 0, largest, namespace=namespace
                )
            at_most = sum(
                len(r.blob) - before[(r.key, r.version)]
                for r in replacements
                if (r.key, r.version) in before
            )
            limit = quota.max_bytes
            if limit is not None and at_most > 0 and ledger.usage.bytes + at_most > limit:
                raise quota_exceeded(
                    "max_bytes",
                    limit,
                    ledger.usage.bytes,
                    at_most,
                    namespace=namespace,
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
