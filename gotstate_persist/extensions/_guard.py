"""In-process ("guarded") isolation: the extension runs on threads the registry owns.

What this buys, and no more (the README's claims ladder says the same): the
caller stops waiting at the deadline, every exception the extension raises
(``SystemExit`` and ``KeyboardInterrupt`` included) reaches the caller as
:class:`~gotstate_persist.errors.ExtensionFailed`, and inputs and outputs
are copied and checked exactly as a worker's wire form would be
(``_views.copy_across``, by the caller), so the extension gets copies and
hands back only validated values. What it cannot do: limit memory
or CPU, stop a runaway call, or protect the host's memory from code that
goes looking for it.

A call that outlives its deadline keeps its thread (Python cannot stop a
thread); the slot is given back by starting a replacement thread, the stuck
thread retires when (if ever) its call returns, and the stuck count goes up
so the circuit can open. Threads are daemons: a stuck call never blocks
interpreter exit.
"""

from __future__ import annotations

import _thread
import logging
import queue
import sys
import threading
from collections.abc import Callable
from typing import Any

from ..errors import ExtensionCodeChanged, ExtensionFailed, ExtensionTimeout
from ..formats.extension import CodeLocation, ResourceLimits
from ._pin import code_sha256
from ._workerload import configure_instance, find_class, import_target, verify_pins

__all__ = ["GuardedRunner"]

logger = logging.getLogger(__name__)


class _Job:
    """One call handed to a pool thread; the caller waits on ``done`` until its deadline.

    ``done`` is a bare lock, taken at creation and released by the thread
    that ran the call: the cheapest hand-off CPython has (an Event adds a
    Condition and a second lock to every call).
    """

    __slots__ = ("abandoned", "done", "error", "finished", "fn", "result", "thread")

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.fn = fn
        self.done = _thread.allocate_lock()
        self.done.acquire()
        self.finished = False
        self.result: Any = None
        self.error: BaseException | None = None
        self.abandoned = False
        self.thread: _PoolThread | None = None

    def finish(self) -> None:
        self.finished = True
        self.done.release()


class _PoolThread(threading.Thread):
    def __init__(self, jobs: queue.SimpleQueue[_Job | None], name: str) -> None:
        super().__init__(name=name, daemon=True)
        self.jobs = jobs
        self.retired = False

    def run(self) -> None:
        while not self.retired:
            job = self.jobs.get()
            if job is None:
                return
            job.thread = self
            if job.abandoned:  # its caller gave up before any thread took it
                job.finish()
                continue
            try:
                job.result = job.fn()
            except BaseException as exc:  # the guard's purpose: nothing escapes
                job.error = exc
            finally:
                job.finish()


_STAMP = "__gotstate_persist_pin__"


def _imported(location: CodeLocation, verified: dict[str, bytes], stamp: str) -> Any:
    """The target's module, imported once per process per pinned code.

    A file or package target lives under a private module name; activating
    it again with the same pinned code reuses that module, as Python's own
    imports would, so its classes stay the same objects (a record format or
    backend factory it contributed is the same one). Different code is
    imported afresh. A ``module`` target follows the import system: once per
    process, new code takes effect in a new process.
    """
    if location.kind != "module":
        loaded = sys.modules.get(location.module)
        if loaded is not None and getattr(loaded, _STAMP, None) == stamp:
            return loaded
    module = import_target(location, verified)
    if location.kind != "module":
        setattr(module, _STAMP, stamp)
    return module


class GuardedRunner:
    """Runs one extension's methods on a bounded pool of daemon threads.

    Same surface as the worker pool (``start``, ``call``, ``stop``, ``kill``,
    ``restarts``, ``max_rss_bytes``, ``output_tail``) so the active handle
    does not care which isolation it drives.
    """

    def __init__(
        self,
        name: str,
        location: CodeLocation,
        limits: ResourceLimits,
        *,
        files: dict[str, str] | None = None,
        on_stuck: Callable[[], None] = lambda: None,
        factory: Callable[[], Any] | None = None,
        settings: dict[str, Any] | None = None,
    ) -> None:
        self._name = name
        # its own settings, granted secrets in clear: handed to configure() at start
        self._settings = settings
        self._location = location
        self._files = files or {}
        self._limits = limits
        self.on_stuck = on_stuck
        self._factory = factory
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads: list[_PoolThread] = []
        self._instance: Any = None
        self._serial = 0

    restarts = 0
    max_rss_bytes = None
    #: The type name of the last exception an extension call raised (for notes).
    last_error_type = ""

    def output_tail(self) -> str:
        """In-process output goes wherever the host's goes: nothing is captured."""
        return ""

    def _spawn(self) -> None:
        self._serial += 1
        thread = _PoolThread(self._jobs, f"gotstate-persist-ext-{self._name}-{self._serial}")
        self._threads.append(thread)
        thread.start()

    def start(self) -> None:
        """Import, instantiate and configure the extension, bounded by ``start_timeout_s``.

        Its settings (if any) are handed to ``configure()`` on the pool's
        thread, then dropped here: a restart is a new activation.
        """
        with self._lock:
            while len(self._threads) < self._limits.max_concurrency:
                self._spawn()
        if self._factory is not None:
            factory = self._factory
        else:
            # checked here, on the caller's thread: an error raised by the extension's
            # own code (in the job) must never pass for one of ours
            verified = self._verified()
            location = self._location
            stamp = code_sha256(self._files)
            settings, self._settings = self._settings, None

            def factory() -> Any:
                cls = find_class(_imported(location, verified, stamp), location.attr)
                instance = cls()
                configure_instance(cls, instance, settings)
                return instance

        self._instance = self._run(factory, self._limits.start_timeout_s, "starting")

    def _verified(self) -> dict[str, bytes]:
        """The pinned files' bytes, exactly as hashed (so those bytes are what runs)."""
        changed, removed, verified = verify_pins(self._location.root, self._files)
        if changed or removed:
            raise ExtensionCodeChanged(
                f"extension {self._name!r}: files differ from the pin (changed: "
                f"{', '.join(changed) or 'none'}; removed: {', '.join(removed) or 'none'}); "
                "register it again to accept the new code",
                changed=tuple(changed),
                removed=tuple(removed),
            )
        return verified

    def _run(self, fn: Callable[[], Any], timeout_s: float, doing: str) -> Any:
        job = _Job(fn)
        self._jobs.put(job)
        if not job.done.acquire(timeout=timeout_s):
            with self._lock:
                if not job.finished:
                    job.abandoned = True
                    if job.thread is not None:
                        job.thread.retired = True
                        self._threads.remove(job.thread)
                    self._spawn()
            if job.abandoned:
                self.on_stuck()
                raise ExtensionTimeout(
                    f"extension {self._name!r} did not finish {doing} within {timeout_s:g} s; "
                    "the call was abandoned (in-process isolation cannot stop it: its thread "
                    "is counted as stuck). Raise timeout_s or fix the extension"
                )
        if job.error is not None:
            error_type = self.last_error_type = type(job.error).__name__
            job.error = None  # drop the traceback's frames: they may hold large objects
            raise ExtensionFailed(
                f"extension {self._name!r} raised {error_type} while {doing}; "
                "see the extension's own logs, fix it and activate it again"
            )
        return job.result

    #: Calls take and return values (copies made by the caller), not wire forms.
    takes_values = True

    def call(self, method: str, args: list[object], *, timeout_s: float | None = None) -> object:
        """Call ``method`` with ``args`` (already copies); return its result unchecked.

        The caller copies the arguments in and checks and copies the result
        out (``_views.copy_across``), exactly as the wire form would.
        """
        bound = getattr(self._instance, method)
        return self._run(
            lambda: bound(*args),
            self._limits.timeout_s if timeout_s is None else timeout_s,
            f"{method}()",
        )

    def call_direct(self, method: str) -> object:
        """Call a no-argument ``method`` and return its result as is (not via the wire form).

        Only for what must be a host object (a persistence extension's
        backend factories and formats); the caller checks the result.
        """
        return self._run(getattr(self._instance, method), self._limits.timeout_s, f"{method}()")

    def stop(self, timeout: float) -> str:
        """Call the extension's optional ``stop()`` under ``timeout``; return a note."""
        note = ""
        stop = getattr(self._instance, "stop", None)
        if callable(stop):
            try:
                self._run(stop, timeout, "stop()")
            except ExtensionTimeout:
                note = f"stop() did not return within {timeout:g} s; its thread was abandoned"
            except ExtensionFailed:
                note = f"stop() raised {self.last_error_type}"
        self.kill()
        return note

    def kill(self) -> None:
        """Let every pool thread end after its current call; drop the instance."""
        with self._lock:
            for thread in self._threads:
                thread.retired = True
                self._jobs.put(None)
            self._threads.clear()
        self._instance = None
