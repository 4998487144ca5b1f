"""What one process keeps per storage for the quota adapter, and how long it keeps it.

The adapter (``quota.QuotaBackend``) is made afresh for every store, but what
it knows must be shared by every store of the process on the same storage: the
tally of a namespace on a backend without exact counters (the lock around its
check and write is what makes the limits exact within the process), the
moving windows of the rate limits, and the cached copy of each namespace's
quota (so a change made through one store binds every other at once).

That state belongs to a storage, not to a process-wide table keyed by a
description of it. Which backends are on the same storage is for the backend
to say (``Backend.storage_identity``): backends with equal identities share one
:class:`StorageState`, kept as long as the process, as the storage itself
outlives any backend opened on it. A backend without an identity is its own
storage: its state is created for that object alone and goes away with it.
"""

from __future__ import annotations

import functools
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Hashable
from typing import Any

from ._quota_rules import Quota
from .backends.base import Backend, Usage
from .errors import RateLimited

__all__ = ["Ledger", "RateWindows", "StorageState", "state_of"]


@functools.cache
def _window_log() -> type[Any]:
    """limits' ``MemoryStorage`` with its moving window kept as one deque per key.

    Each key's deque holds at most ``limit`` timestamps: the stock storage
    restarts an expiry timer thread from inside every check, which costs more
    than the save it guards. Built on first use, because limits is slow to
    import.
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

    return WindowLog


class RateWindows:
    """Moving-window rate limits (the ``limits`` strategy) of one storage, per process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._limiter: Any = None  # built at the first rate-limited operation
        self._items: dict[int, Any] = {}

    def hit(self, quota: Quota | None, namespace: str, direction: str) -> None:
        """Count one ``direction`` ("read" or "write"); raise ``RateLimited`` over the limit."""
        per_second = None if quota is None else getattr(quota, f"max_{direction}s_per_second")
        if per_second is None:
            return
        item = self._items.get(per_second)
        if item is None:
            item = self._item(per_second)
        if self._limiter.hit(item, namespace, direction):
            return
        reset = self._limiter.get_window_stats(item, namespace, direction)[0]
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

    def _item(self, per_second: int) -> Any:
        from limits import RateLimitItemPerSecond, strategies

        with self._lock:  # one log per storage: every store on it shares the allowance
            if self._limiter is None:
                self._limiter = strategies.MovingWindowRateLimiter(_window_log()())
            return self._items.setdefault(per_second, RateLimitItemPerSecond(per_second))


class Ledger:
    """What one process knows of a namespace's usage on a non-exact backend."""

    def __init__(self, usage: Usage) -> None:
        self.lock = threading.RLock()
        self.usage = usage


class StorageState:
    """What this process keeps of one storage: cached quotas, tallies, rate windows."""

    def __init__(self) -> None:
        self.rates = RateWindows()
        self._lock = threading.Lock()
        self._ledgers: dict[str, Ledger] = {}
        #: namespace -> (quota, when it was read, time.monotonic()).
        self._quotas: dict[str, tuple[Quota | None, float]] = {}

    def cached_quota(self, namespace: str) -> tuple[Quota | None, float] | None:
        """The namespace's quota as last read or set here, and when (None: never)."""
        return self._quotas.get(namespace)

    def remember_quota(self, namespace: str, quota: Quota | None) -> None:
        """Note the namespace's quota as just read or set."""
        self._quotas[namespace] = (quota, time.monotonic())

    def ledger(self, namespace: str, count: Callable[[], Usage]) -> Ledger:
        """This process's tally of a namespace with a quota on a non-exact backend.

        Counted by ``count`` when first needed, outside the registry's lock (a
        count may walk a whole namespace); the first tally registered wins,
        and every write goes through it from then on.
        """
        with self._lock:
            ledger = self._ledgers.get(namespace)
        if ledger is None:
            counted = Ledger(count())
            with self._lock:
                ledger = self._ledgers.setdefault(namespace, counted)
        return ledger

    def forget(self, namespace: str) -> None:
        """Drop the tally of a namespace without quota: one set later counts afresh."""
        if self._ledgers:
            with self._lock:
                self._ledgers.pop(namespace, None)


#: States of storages with an identity, for the whole process.
_SHARED: dict[Hashable, StorageState] = {}
#: States of backends without one, by ``id()`` while the backend lives.
_OWN: dict[int, StorageState] = {}
_REGISTRY_LOCK = threading.Lock()


def state_of(backend: Backend) -> StorageState:
    """The state of the storage ``backend`` is on (shared by equal ``storage_identity``)."""
    identity = backend.storage_identity
    with _REGISTRY_LOCK:
        if identity is not None:
            state = _SHARED.get(identity)
            if state is None:
                state = _SHARED[identity] = StorageState()
            return state
        state = _OWN.get(id(backend))
        if state is None:
            state = _OWN[id(backend)] = StorageState()
            # Dropped as the backend goes, before its id() can be reused.
            weakref.finalize(backend, _OWN.pop, id(backend), None)
        return state
