"""The bounded thread pool behind AsyncStore, and what a cancelled call does.

Why it exists apart from :mod:`._async_store`: the store module is the
public surface (one short twin per ``Store`` method); this module owns how a
call runs, once for all of them:

* on a ``ThreadPoolExecutor`` of ``max_workers`` threads (named
  ``gotstate-persist-async-…``, started as calls arrive, joined on
  shutdown), with the caller's context variables copied in;
* reads (:meth:`CallPool.run`): cancelling the caller drops the result; a
  read still queued never runs;
* writes (:meth:`CallPool.commit`): shielded. Still queued, a cancelled
  write never runs; started, it finishes first and ``CancelledError`` is
  raised after, so memory and storage agree;
* machine calls (:meth:`CallPool.commit_holding`): a write that first takes
  an async machine's own asyncio locks in the loop and declares them held
  for the pool thread, so capture and apply never see a transition
  half-way (:func:`holding` and :func:`as_holder`, the two halves, are
  public for the asyncio attachments, which hold the locks around more
  than one call);
* work that must end once begun (:func:`shielded`): a coroutine that runs
  to its end as its own task, with the caller's cancellation raised after.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import functools
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from . import machine as _machine
from .errors import InvalidArgument

__all__ = [
    "DEFAULT_MAX_WORKERS",
    "MAX_WORKERS_LIMIT",
    "THREAD_NAME_PREFIX",
    "CallPool",
    "as_holder",
    "holding",
    "shielded",
]

T = TypeVar("T")

#: Threads an AsyncStore runs its calls on unless told otherwise.
DEFAULT_MAX_WORKERS = 4
#: The most threads one AsyncStore may run (more only adds lock contention).
MAX_WORKERS_LIMIT = 64
#: Every pool thread's name starts with this (then the pool's id and a number).
THREAD_NAME_PREFIX = "gotstate-persist-async"

CLOSED = "this AsyncStore is closed; open a new one"
_LOCK_BUSY = (
    f"the async machine's lock was busy for {_machine.LOCK_TIMEOUT:.0f}s; do not save or "
    "restore a machine from inside its own actions or hooks"
)


class CallPool:
    """Runs sync calls for one event loop on a bounded pool of threads."""

    def __init__(self, max_workers: int = DEFAULT_MAX_WORKERS) -> None:
        if type(max_workers) is not int or not 1 <= max_workers <= MAX_WORKERS_LIMIT:
            raise InvalidArgument(f"max_workers must be an int in 1..{MAX_WORKERS_LIMIT}")
        self.max_workers = max_workers
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers, thread_name_prefix=f"{THREAD_NAME_PREFIX}-{id(self):x}"
        )
        self._accepting = True
        # submitted and not finished (done callbacks run in pool threads: set ops are atomic)
        self._running: set[concurrent.futures.Future[Any]] = set()

    @property
    def pending(self) -> int:
        """Calls submitted and not finished yet (running or queued)."""
        return len(self._running)

    def refuse_new(self) -> None:
        """From now on only ``spawn(..., closing=True)`` is accepted."""
        self._accepting = False

    def spawn(
        self, call: Callable[[], T], *, closing: bool = False
    ) -> concurrent.futures.Future[T]:
        if not self._accepting and not closing:  # e.g. closed while waiting for a machine lock
            raise InvalidArgument(CLOSED)
        future = self._executor.submit(contextvars.copy_context().run, call)
        self._running.add(future)
        future.add_done_callback(self._running.discard)
        return future

    async def run(self, call: Callable[[], T]) -> T:
        """A read: cancelling the caller drops the result (and skips it if not started)."""
        return await asyncio.wrap_future(self.spawn(call))

    async def commit(self, call: Callable[[], T]) -> T:
        """A write: once started it finishes before a cancellation is raised."""
        future = self.spawn(call)
        waiter = asyncio.wrap_future(future)
        try:
            return await asyncio.shield(waiter)  # the common path: no extra task or wait
        except asyncio.CancelledError:
            if not waiter.done() and future.cancel():
                raise  # it never started: nothing was written
            waiter.add_done_callback(_consume)
            await self.settle(future, skippable=False)
            raise

    async def commit_holding(self, machine: Any, call: Callable[[], T]) -> T:
        """``call`` as a write, holding the async machine's locks (taken here, in the loop)."""
        locks = _machine.async_locks(machine)
        async with holding(locks):
            return await self.commit(functools.partial(as_holder, locks, call))

    async def settle(self, future: concurrent.futures.Future[Any], *, skippable: bool) -> bool:
        """Wait for ``future`` whatever happens to the caller; True if it was cancelled meanwhile.

        With ``skippable``, a cancellation that arrives before the work has
        started cancels the work instead and is raised at once.
        """
        waiter = asyncio.wrap_future(future)
        cancelled = False
        while True:
            try:
                await asyncio.wait((waiter,))  # cancelling this wait leaves waiter alone
            except asyncio.CancelledError:
                if skippable and future.cancel():
                    raise
                cancelled = True
                continue
            _consume(waiter)  # the caller reads the concurrent future
            return cancelled

    async def drain(self) -> bool:
        """Wait for every call in flight; True if the caller was cancelled meanwhile."""
        cancelled = False
        for future in list(self._running):
            cancelled |= await self.settle(future, skippable=False)
        return cancelled

    def shutdown(self) -> None:
        """Refuse new calls and join the threads; call once nothing runs (after drain)."""
        self._accepting = False
        self._executor.shutdown(wait=True)  # the threads are idle: this only joins them


def _consume(waiter: asyncio.Future[Any]) -> None:
    """Mark a dropped result's error as seen (asyncio logs unseen ones)."""
    if not waiter.cancelled():
        waiter.exception()


def as_holder(locks: Sequence[asyncio.Lock], call: Callable[[], T]) -> T:
    """``call()`` on a pool thread, declaring ``locks`` held (the awaiting task took them)."""
    with _machine.holding_async_locks(locks):
        return call()


@asynccontextmanager
async def holding(
    locks: Sequence[asyncio.Lock], *, timeout: float | None = _machine.LOCK_TIMEOUT
) -> AsyncIterator[None]:
    """Take ``locks`` in order (each within ``timeout`` seconds), release them in reverse.

    ``timeout=None`` waits as long as it takes: for putting a machine back,
    which must not give up half-way.
    """
    taken: list[asyncio.Lock] = []
    try:
        for lock in locks:
            if not lock.locked():  # the common case: free, taken without a timer
                await lock.acquire()
            else:
                try:
                    async with asyncio.timeout(timeout):
                        await lock.acquire()
                except TimeoutError:
                    raise InvalidArgument(_LOCK_BUSY) from None
            taken.append(lock)
        yield
    finally:
        for lock in reversed(taken):
            lock.release()


async def shielded(work: Coroutine[Any, Any, T]) -> T:
    """Run ``work`` to its end whatever happens to the caller; a cancellation is raised after.

    For what must finish once started (a commit, or putting a machine back):
    ``work`` runs as its own task, which cancelling the caller never reaches;
    the caller waits for it, then raises ``CancelledError`` if it was
    cancelled meanwhile (``asyncio.timeout`` and ``wait_for`` see that as
    usual), else returns its result or raises its error.
    """
    task = asyncio.ensure_future(work)
    try:
        return await asyncio.shield(task)  # the common path: no wait set, no extra future
    except asyncio.CancelledError:
        if task.cancelled():  # the task itself was cancelled (the loop is shutting down)
            raise
    while not task.done():
        try:
            await asyncio.wait((task,))  # cancelling this wait leaves the task alone
        except asyncio.CancelledError:
            continue
    error = None if task.cancelled() else task.exception()  # also marks it seen
    raise asyncio.CancelledError from error
