"""A small pool of worker processes for an extension with ``max_concurrency`` > 1.

Each :class:`~._workerproc.WorkerProcess` serves one call at a time, so
concurrency is more processes. The pool holds up to ``max_concurrency`` of
them, starts them lazily (the first by :meth:`WorkerPool.start`, the others
when a call finds every started one busy) and shares one output tail among
them, so "the last 64 KiB the extension printed" means the same thing at
any concurrency. The caller (the registry's admission: queue and
concurrency bound) never has more calls in flight than the pool has slots;
a call that finds none free anyway is refused with ExtensionBusy rather than
queued here a second time.
"""

from __future__ import annotations

import threading
import time
from typing import Final

from ..errors import ExtensionBusy, ExtensionUnavailable
from ._protocol import WorkerConfig
from ._workerproc import DEFAULT_CPU_LIFETIME_S, WorkerProcess
from ._workerspawn import OutputTail

__all__ = ["WorkerPool"]

#: The whole of stop() is bounded by its timeout plus this.
_STOP_SLACK_S: Final = 1.0


class WorkerPool:
    """Up to ``limits.max_concurrency`` workers of one extension; thread-safe."""

    def __init__(self, config: WorkerConfig, *, cpu_lifetime_s: int = DEFAULT_CPU_LIFETIME_S):
        self._config = config
        self._cpu_lifetime_s = cpu_lifetime_s
        self._size = config.limits.max_concurrency
        self._tail = OutputTail()
        self._lock = threading.Lock()
        self._workers: list[WorkerProcess] = []
        self._idle: list[WorkerProcess] = []
        self._closed = False

    @property
    def restarts(self) -> int:
        """Respawns across the pool's workers (starting another slot is not one)."""
        with self._lock:
            workers = list(self._workers)
        return sum(worker.restarts for worker in workers)

    @property
    def max_rss_bytes(self) -> int | None:
        """The largest peak RSS of any of the pool's worker processes, if known."""
        with self._lock:
            workers = list(self._workers)
        known = [rss for worker in workers if (rss := worker.max_rss_bytes) is not None]
        return max(known) if known else None

    def output_tail(self) -> str:
        """The last 64 KiB the pool's workers wrote, all of them together."""
        return self._tail.text()

    def start(self) -> None:
        """Start the first worker now (a later failure to start surfaces on a call)."""
        worker = self._acquire()
        try:
            worker.start()
        finally:
            self._release(worker)

    def call(self, method: str, args: list[object], *, timeout_s: float | None = None) -> object:
        """Run the call on an idle worker, starting one if every started one is busy."""
        worker = self._acquire()
        try:
            return worker.call(method, args, timeout_s=timeout_s)
        finally:
            self._release(worker)

    def stop(self, timeout: float) -> str:
        """Stop every worker in parallel within ``timeout`` + 1 s; their notes, joined."""
        deadline = time.monotonic() + timeout + _STOP_SLACK_S
        with self._lock:
            self._closed = True
            workers = list(self._workers)
        notes: list[str] = [""] * len(workers)

        def stop_one(index: int) -> None:
            notes[index] = workers[index].stop(timeout)

        threads = [
            threading.Thread(target=stop_one, args=(i,), name="gotstate-ext-stop", daemon=True)
            for i in range(len(workers))
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(max(deadline - time.monotonic(), 0.0))
        return "; ".join(sorted({note for note in notes if note}))

    def kill(self) -> None:
        """Kill every worker now; final, like :meth:`stop`."""
        with self._lock:
            self._closed = True
            workers = list(self._workers)
        for worker in workers:
            worker.kill()

    def _acquire(self) -> WorkerProcess:
        with self._lock:
            if self._closed:
                raise ExtensionUnavailable(
                    f"extension {self._config.name!r}: its workers were stopped; activate the "
                    "extension again"
                )
            if self._idle:
                return self._idle.pop()
            if len(self._workers) < self._size:
                worker = WorkerProcess(
                    self._config, cpu_lifetime_s=self._cpu_lifetime_s, tail=self._tail
                )
                self._workers.append(worker)
                return worker
        raise ExtensionBusy(
            f"extension {self._config.name!r}: all {self._size} workers are busy; raise "
            "max_concurrency or make fewer calls at once"
        )

    def _release(self, worker: WorkerProcess) -> None:
        with self._lock:
            self._idle.append(worker)
