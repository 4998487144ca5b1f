"""Counting what one active extension did, for ``handle.stats()`` and the registry.

Kept apart from the call path so that the numbers mean the same thing in
worker and in-process isolation: the caller of :meth:`StatsCounter.record`
classifies every outcome once, here, and percentiles come from a bounded
window of recent latencies (memory stays flat however long an extension runs).
"""

from __future__ import annotations

import threading
from collections import deque

from .._metrics import Metrics
from ..formats.extension import ExtensionStats

__all__ = ["LATENCY_WINDOW", "REJECTION_CAUSES", "StatsCounter"]

#: Latencies kept for the percentiles (the most recent calls).
LATENCY_WINDOW = 4096
#: Why a call can be refused; only ``invalid_output`` is also a failure.
REJECTION_CAUSES = ("rate", "size", "concurrency", "invalid_output")

_OUTCOMES = ("ok", "failure", "timeout", "crash")


def _percentile(ordered: list[float], fraction: float) -> float:
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


class StatsCounter:
    """Thread-safe counters of one extension in one process."""

    def __init__(self, store_metrics: Metrics | None = None) -> None:
        self._store_metrics = store_metrics  # the activating store's counters, if it counts
        self._lock = threading.Lock()
        self._calls = 0
        self._ok = 0
        self._failures = 0
        self._timeouts = 0
        self._crashes = 0
        self._stuck = 0
        self._rejected = dict.fromkeys(REJECTION_CAUSES, 0)
        self._latencies_ms: deque[float] = deque(maxlen=LATENCY_WINDOW)

    def record(self, outcome: str, elapsed_s: float) -> None:
        """Count a call that ran: ``ok``, ``failure``, ``timeout`` or ``crash``.

        Timeouts and crashes are failures too (they count toward the circuit).
        """
        if outcome not in _OUTCOMES:
            raise ValueError(f"unknown outcome {outcome!r}")
        if self._store_metrics is not None:
            self._store_metrics.extension_call(outcome)
        with self._lock:
            self._calls += 1
            self._latencies_ms.append(elapsed_s * 1000.0)
            if outcome == "ok":
                self._ok += 1
                return
            self._failures += 1
            if outcome == "timeout":
                self._timeouts += 1
            elif outcome == "crash":
                self._crashes += 1

    def reject(self, cause: str) -> None:
        """Count a refused call (rate, size, concurrency) or an invalid output."""
        with self._lock:
            self._rejected[cause] = self._rejected.get(cause, 0) + 1

    def stuck(self) -> None:
        """Count an in-process call that outlived its deadline and still holds a thread."""
        with self._lock:
            self._stuck += 1

    def snapshot(self, *, restarts: int = 0, max_rss_bytes: int | None = None) -> ExtensionStats:
        """The counters now, as the persisted and returned value."""
        with self._lock:
            ordered = sorted(self._latencies_ms)
            return ExtensionStats(
                calls=self._calls,
                ok=self._ok,
                failures=self._failures,
                timeouts=self._timeouts,
                crashes=self._crashes,
                restarts=restarts,
                rejected=dict(self._rejected),
                p50_ms=_percentile(ordered, 0.50) if ordered else None,
                p99_ms=_percentile(ordered, 0.99) if ordered else None,
                max_rss_bytes=max_rss_bytes,
                stuck=self._stuck,
            )
