"""Counting what one store did, for ``Store.stats()`` and, when enabled, OpenTelemetry.

Counting sits on every save and restore, so it must cost next to nothing and
still add up exactly when many threads use one store. A lock per event would
serialize those threads, and ``counter += n`` on a shared object is not
atomic (two threads can read the same old value). So each thread counts into
a shard of its own, that only it writes: the hot path is one thread-local
lookup and a few dict updates, with no lock. A lock is taken only when a
thread counts for the first time (to register its shard) and when
:meth:`Metrics.snapshot` adds the shards up; the shards of threads that have
ended are folded into one then, so short-lived threads do not pile up.

A snapshot taken while other threads are counting is a moment's sum, each
event counted once; taken when they are done, it is exact.

OpenTelemetry is optional (the ``otel`` extra) and never imported here: it
reads the counters when it collects (:meth:`Metrics.total`), and a sink set
on :attr:`Metrics.telemetry` (``gotstate_persist.telemetry``) runs the timed
operations in spans.
"""

from __future__ import annotations

import functools
import threading
from bisect import bisect_left
from collections.abc import Callable
from time import perf_counter
from typing import Any, Concatenate, ParamSpec, Protocol, TypeVar

import msgspec

from .errors import InvalidArgument, QuotaExceeded, RateLimited, VersionConflict

__all__ = [
    "COUNTERS",
    "LATENCY_BUCKETS_S",
    "OPERATIONS",
    "Latency",
    "Metrics",
    "Sink",
    "StoreStats",
    "measured",
    "metrics_of",
    "stats_of",
]

#: The store operations that are timed (``Store`` methods of these names).
OPERATIONS = ("save_machine", "restore_machine", "save", "load")
#: Plain counters: see :class:`StoreStats` for what each one counts.
COUNTERS = (
    "records_written",
    "bytes_written",
    "records_read",
    "bytes_read",
    "version_conflicts",
    "append_retries",
    "quota_refusals",
    "rate_refusals",
    "migrated",
    "resealed",
    "extension_calls",
    "extension_failures",
    "extension_timeouts",
)
#: Upper bounds (seconds, inclusive) of the latency buckets; one more bucket counts the rest.
LATENCY_BUCKETS_S = (0.001, 0.01, 0.1, 1.0)

_COUNT, _FAILURES, _TOTAL, _MAX, _BUCKETS = 0, 1, 2, 3, 4
_STATS_OFF = (
    "this store was opened with stats=False, so it counts nothing; open it with stats=True "
    "(the default) to use stats() or gotstate_persist.telemetry"
)

P = ParamSpec("P")
R = TypeVar("R")


class Latency(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """How often one operation ran and how long it took (failed runs included).

    ``buckets[i]`` counts runs of at most ``LATENCY_BUCKETS_S[i]`` seconds
    (and more than the bound before it); the last bucket counts the slower ones.
    """

    count: int = 0
    failures: int = 0
    total_s: float = 0.0
    max_s: float = 0.0
    buckets: tuple[int, ...] = (0,) * (len(LATENCY_BUCKETS_S) + 1)

    @property
    def mean_s(self) -> float:
        """Mean duration in seconds (0.0 before the first run)."""
        return self.total_s / self.count if self.count else 0.0


class StoreStats(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What one ``Store`` object did since it was opened: an immutable snapshot.

    Operations: ``save_machine``, ``restore_machine``, ``save``, ``load``.
    Records and bytes count every record the store's pipeline wrote or
    fetched (machines attached to the store, extension registrations and
    configurations included); ``bytes_*`` are stored (sealed) sizes.
    ``version_conflicts``: writes that found another version first (each
    attempt; ``append_retries`` of them were retried automatically, the
    others raised ``VersionConflict``). ``quota_refusals``/``rate_refusals``:
    writes and reads refused by the namespace's quota (``QuotaExceeded``) or
    rate limit (``RateLimited``). ``migrated``/``resealed``: records rewritten
    by ``migrate``/``reseal``. ``extension_*``: calls of extensions this store
    activated that ran, failed (timeouts included) or timed out.
    ``failures``: failed operations by exception class name (a copy).
    """

    namespace: str
    save_machine: Latency
    restore_machine: Latency
    save: Latency
    load: Latency
    records_written: int
    bytes_written: int
    records_read: int
    bytes_read: int
    version_conflicts: int
    append_retries: int
    quota_refusals: int
    rate_refusals: int
    migrated: int
    resealed: int
    extension_calls: int
    extension_failures: int
    extension_timeouts: int
    failures: dict[str, int]


class Sink(Protocol):
    """Runs the timed operations in spans (``gotstate_persist.telemetry``'s OpenTelemetry).

    Counters need no sink: OpenTelemetry reads them from :meth:`Metrics.total`
    when it collects, so counting costs the same with it as without.
    """

    def traced(
        self,
        operation: str,
        key: object,
        metrics: Metrics,
        method: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        """Run ``method(*args, **kwargs)`` as ``operation`` (timed, in a span).

        Counts it with ``metrics.finished``. ``key``: the key the call was
        given (unchecked: the call checks it).
        """

    def close(self) -> None:
        """Stop reporting (``gotstate_persist.telemetry.uninstrument``)."""


class _Shard:
    """One thread's counts: written by that thread only, read by snapshots."""

    __slots__ = ("counters", "failures", "operations")

    def __init__(self) -> None:
        self.counters = dict.fromkeys(COUNTERS, 0)
        self.operations: dict[str, list[float]] = {
            name: [0.0] * (_BUCKETS + len(LATENCY_BUCKETS_S) + 1) for name in OPERATIONS
        }
        self.failures: dict[str, int] = {}

    def merge(self, other: _Shard) -> None:
        """Add ``other``'s counts (copied first: its thread may still be counting)."""
        for name, value in other.counters.copy().items():
            self.counters[name] += value
        for name, row in other.operations.items():
            mine = self.operations[name]
            for index, seconds_or_count in enumerate(row.copy()):
                if index == _MAX:
                    mine[index] = max(mine[index], seconds_or_count)
                else:
                    mine[index] += seconds_or_count
        for error, count in other.failures.copy().items():
            self.failures[error] = self.failures.get(error, 0) + count


def _latency(row: list[float]) -> Latency:
    return Latency(
        count=int(row[_COUNT]),
        failures=int(row[_FAILURES]),
        total_s=float(row[_TOTAL]),
        max_s=float(row[_MAX]),
        buckets=tuple(int(value) for value in row[_BUCKETS:]),
    )


class Metrics:
    """The counters of one store (thread-safe, lock-free when counting)."""

    __slots__ = ("_local", "_lock", "_retired", "_shards", "telemetry")

    def __init__(self) -> None:
        self._local = threading.local()
        self._lock = threading.Lock()
        self._shards: list[tuple[threading.Thread, _Shard]] = []
        self._retired = _Shard()  # the counts of threads that have ended
        #: Set by ``gotstate_persist.telemetry.instrument``; None: counters only.
        self.telemetry: Sink | None = None

    def _shard(self) -> _Shard:
        try:
            return self._local.shard  # type: ignore[no-any-return]
        except AttributeError:
            shard = _Shard()
            with self._lock:
                self._fold_ended()
                self._shards.append((threading.current_thread(), shard))
            self._local.shard = shard
            return shard

    def _fold_ended(self) -> None:
        """Move the counts of ended threads into ``_retired`` (under the lock)."""
        alive = []
        for thread, shard in self._shards:
            if thread.is_alive():
                alive.append((thread, shard))
            else:
                self._retired.merge(shard)
        self._shards = alive

    def add(self, counter: str, amount: int = 1) -> None:
        """Count ``amount`` more of one of :data:`COUNTERS`."""
        self._shard().counters[counter] += amount

    def wrote(self, size: int) -> None:
        """One record of ``size`` stored bytes was written."""
        counters = self._shard().counters
        counters["records_written"] += 1
        counters["bytes_written"] += size

    def read(self, size: int) -> None:
        """One record of ``size`` stored bytes was fetched."""
        counters = self._shard().counters
        counters["records_read"] += 1
        counters["bytes_read"] += size

    def conflict(self, *, retried: bool) -> None:
        """A write found another version first; ``retried``: the pipeline tries again."""
        self.add("version_conflicts")
        if retried:
            self.add("append_retries")

    def refused(self, error: QuotaExceeded | VersionConflict) -> None:
        """The namespace's quota or rate limit (or another writer) refused a read or write."""
        if isinstance(error, VersionConflict):
            self.conflict(retried=False)
        else:
            self.add("rate_refusals" if isinstance(error, RateLimited) else "quota_refusals")

    def rewrote(self, counter: str, size: int) -> None:
        """``migrate`` or ``reseal`` (``counter``) swapped in a new blob of ``size`` bytes."""
        self.add(counter)
        self.add("bytes_written", size)

    def extension_call(self, outcome: str) -> None:
        """An extension call ran: ``ok``, ``failure``, ``timeout`` or ``crash``."""
        self.add("extension_calls")
        if outcome != "ok":
            self.add("extension_failures")
        if outcome == "timeout":
            self.add("extension_timeouts")

    def finished(self, operation: str, seconds: float, failure: BaseException | None) -> None:
        """One run of ``operation`` (one of :data:`OPERATIONS`) took ``seconds``."""
        shard = self._shard()
        row = shard.operations[operation]
        row[_COUNT] += 1
        row[_TOTAL] += seconds
        row[_MAX] = max(row[_MAX], seconds)
        row[_BUCKETS + bisect_left(LATENCY_BUCKETS_S, seconds)] += 1
        if failure is not None:
            row[_FAILURES] += 1
            name = type(failure).__name__
            shard.failures[name] = shard.failures.get(name, 0) + 1

    def total(self, counter: str) -> int:
        """One counter, every thread's count added up (OpenTelemetry reads them so)."""
        with self._lock:
            self._fold_ended()
            return self._retired.counters[counter] + sum(
                shard.counters[counter] for _thread, shard in self._shards
            )

    def snapshot(self, namespace: str) -> StoreStats:
        """Every thread's counts added up."""
        total = _Shard()
        with self._lock:
            self._fold_ended()
            total.merge(self._retired)
            for _thread, shard in self._shards:
                total.merge(shard)
        operations = {name: _latency(row) for name, row in total.operations.items()}
        return msgspec.convert(
            {
                "namespace": namespace,
                **operations,
                **total.counters,
                "failures": dict(sorted(total.failures.items())),
            },
            StoreStats,
            from_attributes=True,
        )


class _Pipelined(Protocol):
    @property
    def metrics(self) -> Metrics | None: ...

    @property
    def namespace(self) -> str: ...


class _Measurable(Protocol):
    @property
    def pipeline(self) -> _Pipelined: ...


S = TypeVar("S", bound=_Measurable)


def measured(
    operation: str,
) -> Callable[[Callable[Concatenate[S, P], R]], Callable[Concatenate[S, P], R]]:
    """Time a ``Store`` method whose first argument is the key, as ``operation``.

    A store opened with ``stats=False`` pays one attribute check; with
    OpenTelemetry enabled, the sink runs the call inside its span.
    """

    def decorate(method: Callable[Concatenate[S, P], R]) -> Callable[Concatenate[S, P], R]:
        @functools.wraps(method)
        def run(store: S, /, *args: P.args, **kwargs: P.kwargs) -> R:
            metrics = store.pipeline.metrics
            if metrics is None:
                return method(store, *args, **kwargs)
            sink = metrics.telemetry
            if sink is not None:
                key = args[0] if args else kwargs.get("key")
                return sink.traced(  # type: ignore[no-any-return]
                    operation, key, metrics, method, (store, *args), kwargs
                )
            started = perf_counter()
            try:
                result = method(store, *args, **kwargs)
            except BaseException as exc:
                metrics.finished(operation, perf_counter() - started, exc)
                raise
            metrics.finished(operation, perf_counter() - started, None)
            return result

        return run

    return decorate


def stats_of(pipeline: _Pipelined) -> StoreStats:
    """``Store.stats()``: refused when the store counts nothing."""
    metrics = pipeline.metrics
    if metrics is None:
        raise InvalidArgument(_STATS_OFF)
    return metrics.snapshot(pipeline.namespace)


def metrics_of(pipeline: _Pipelined) -> Metrics:
    """The store's counters, for ``gotstate_persist.telemetry`` (refused when off)."""
    metrics = pipeline.metrics
    if metrics is None:
        raise InvalidArgument(_STATS_OFF)
    return metrics
