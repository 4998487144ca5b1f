"""AsyncStore: every Store method as an awaitable that never blocks the event loop.

Why it exists: an asyncio service that calls :class:`~gotstate_persist.Store`
directly stalls its event loop for every backend round trip and for every
capture under a machine's locks. :class:`AsyncStore` wraps one ``Store`` and
runs each call in a bounded thread pool it owns (what ``loop.run_in_executor``
on that pool does, with the caller's context variables copied in), so the
loop only hands work over and takes results back.

Why a bounded thread pool and not native async drivers: SQLite, the default
backend, has no async driver, and one code path (the sync ``Store``, run in a
thread) keeps every guarantee the sync store gives (compare-and-set, quota,
sealing, upcasting, structure migrations) with nothing to keep in step. The
pool is bounded (``max_workers``, default 4): a burst of concurrent calls
queues in the pool instead of opening a connection each; SQLite takes one
writer at a time anyway and PostgreSQL's connection pool stays small.

How a call runs (the pool, its threads, the cancellation rule, the async
machine locks) is :mod:`._async_pool`'s; this module is the public surface:
one short twin per ``Store`` method (a new ``Store`` method gets its twin as
one ``self._pool.run``/``commit``/``commit_holding`` call), and opening and
closing. The runtime's twins (``attach``, ``open_machine``, ``recover``,
``restore_machine(at=)``) run sync machines the same way and hand async
machines, whose events must be awaited, to :mod:`.runtime._async_attached`
and :mod:`.runtime._async_recover`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Generator
from datetime import datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

import msgspec

from ._async_pool import CLOSED, DEFAULT_MAX_WORKERS, CallPool
from ._migrate import DEFAULT_BATCH_SIZE, MigrationReport, Progress
from ._names import DEFAULT_NAMESPACE, check_name
from .backends import Backend, Usage
from .codec import Limits
from .errors import InvalidArgument
from .formats import FormatRegistry
from .quota import Quota
from .runtime import Attached, Head, JournalEntry, check_moment
from .runtime._async_attached import (
    AsyncAttached,
    attach_async,
    drives,
    open_machine_async,
)
from .runtime._async_recover import recover_async
from .runtime._checks import is_async_machine
from .sealing import KeyRing
from .store import SnapshotRef, Store, StoreStats, open_store, snapshot_ref

if TYPE_CHECKING:
    from ._pipeline import RecordPipeline
    from .config import ConfigStore
    from .extensions import ExtensionRegistry

__all__ = ["AsyncAttached", "AsyncStore", "open_async_store"]

logger = logging.getLogger(__name__)

T = TypeVar("T")
P = ParamSpec("P")

_NOT_OPEN = (
    "this AsyncStore is not open yet: use `async with gp.open_async_store(...) as astore` "
    "or `astore = await gp.open_async_store(...)`"
)


class AsyncStore:
    """Every :class:`~gotstate_persist.Store` method as an awaitable twin.

    Same arguments, same results, same errors; each call runs in a bounded
    thread pool this object owns, so the event loop is never blocked (see
    the module docstring for why a pool rather than async drivers). Open it
    with :func:`open_async_store` (``async with`` or ``await``), or wrap an
    open ``Store``: ``AsyncStore(store, max_workers=4)`` (it then owns the
    store and closes it). Use it from one event loop.

    ``save_machine``/``restore_machine`` accept sync machines and gotstate's
    ``AsyncStateMachine``/``AsyncCompositeStateMachine``; for an async machine
    they wait (up to ``LOCK_TIMEOUT`` seconds) for its own asyncio lock, so
    a snapshot never sees a transition half-way. Writes are shielded from
    cancellation (:mod:`._async_pool`). Callbacks such as ``migrate``'s
    ``progress`` run in a pool thread.

    ``attach``/``open_machine`` return a :class:`AsyncAttached`; for an
    async machine it processes each event in the event loop and commits it
    in the pool, and ``recover``/``restore_machine(at=)`` replay its journal
    by awaiting it (the sync ``Store`` refuses those for async machines).

    The sync ``Store`` given an async machine saves or restores it while it
    is idle and refuses it (``InvalidArgument``) while its asyncio lock is
    held, never waiting: that check is exact on the thread running the
    machine's event loop. From any other thread, run ``astore.save_machine``
    on the machine's loop (``asyncio.run_coroutine_threadsafe``) instead.

    ``namespace``, ``backend``, ``formats``, ``extensions`` and ``config``
    are the wrapped store's sync objects, exposed as they are: reading them
    does no I/O, but the methods of ``backend``, ``extensions`` and
    ``config`` block, so call those through :meth:`to_thread`. The sync
    ``Store.quota`` property's twin is the method ``await astore.quota()``.
    """

    def __init__(
        self, store: Store | Callable[[], Store], *, max_workers: int = DEFAULT_MAX_WORKERS
    ) -> None:
        self._pool = CallPool(max_workers)  # checks max_workers
        if isinstance(store, Store):
            self._store: Store | None = store
            self._opener: Callable[[], Store] | None = None
        elif callable(store):
            self._store, self._opener = None, store
        else:
            self._pool.shutdown()
            raise InvalidArgument(
                "store must be a gotstate_persist.Store or a function that opens one"
            )
        self._lifecycle = asyncio.Lock()  # opening and closing, one at a time
        self._closed = False

    def __repr__(self) -> str:
        # never the opener: its arguments hold credentials
        if self._closed:
            inner = "closed"
        elif self._store is None:
            inner = "not open"
        else:
            inner = repr(self._store)
        return f"AsyncStore({inner}, max_workers={self._pool.max_workers})"

    @property
    def max_workers(self) -> int:
        """The most threads this store runs calls on at once."""
        return self._pool.max_workers

    @property
    def pending(self) -> int:
        """Calls handed to the pool and not finished yet (running or queued)."""
        return self._pool.pending

    # Opening and closing.

    def __await__(self) -> Generator[Any, None, AsyncStore]:
        """``await gp.open_async_store(...)`` opens the store (in the pool) and returns it."""
        return self._open().__await__()

    async def __aenter__(self) -> AsyncStore:
        return await self._open()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _open(self) -> AsyncStore:
        async with self._lifecycle:
            if self._closed:
                raise InvalidArgument(CLOSED)
            if self._store is None:
                assert self._opener is not None
                try:
                    self._store = await self._open_in_pool(self._opener)
                except BaseException:  # failed or cancelled: nothing stays open, no thread left
                    self._closed = True
                    self._pool.shutdown()  # its one job has ended
                    raise
        return self

    async def _open_in_pool(self, opener: Callable[[], Store]) -> Store:
        future = self._pool.spawn(opener)
        if await self._pool.settle(future, skippable=True):
            if future.exception() is None:  # undo: close what the cancelled open opened
                closing = self._pool.spawn(future.result().close)
                await self._pool.settle(closing, skippable=False)
                if closing.exception() is not None:
                    logger.warning(
                        "closing a store whose opening was cancelled failed: %s",
                        type(closing.exception()).__name__,
                    )
            raise asyncio.CancelledError
        return future.result()

    async def aclose(self) -> None:
        """Wait for the calls in flight, close the store and join the pool's threads.

        Idempotent. Shielded like a write: a cancelled ``aclose`` still
        finishes, then raises ``CancelledError``.
        """
        async with self._lifecycle:
            if self._closed:
                return
            self._closed = True
            self._pool.refuse_new()
            cancelled = await self._pool.drain()
            store, self._store = self._store, None
            error: BaseException | None = None
            if store is not None:
                future = self._pool.spawn(store.close, closing=True)
                cancelled |= await self._pool.settle(future, skippable=False)
                error = future.exception()
            self._pool.shutdown()
            if cancelled:
                raise asyncio.CancelledError
            if error is not None:
                raise error

    async def close(self) -> None:
        """Awaitable :meth:`Store.close` (the same as :meth:`aclose`)."""
        await self.aclose()

    # The wrapped store's sync objects (no I/O to read them).

    @property
    def namespace(self) -> str:
        """The namespace this store reads and writes."""
        return self._require().namespace

    @property
    def backend(self) -> Backend:
        """The sync backend underneath; its methods block (use :meth:`to_thread`)."""
        return self._require().backend

    @property
    def formats(self) -> FormatRegistry:
        """The record formats this store can read and write."""
        return self._require().formats

    @property
    def pipeline(self) -> RecordPipeline:
        """The sync record pipeline (:attr:`Store.pipeline`); its methods block."""
        return self._require().pipeline

    @property
    def extensions(self) -> ExtensionRegistry:
        """The sync extension registry (:attr:`Store.extensions`); its methods block."""
        return self._require().extensions

    @property
    def config(self) -> ConfigStore:
        """The sync configuration store (:attr:`Store.config`); its methods block."""
        return self._require().config

    # Machines.

    async def save_machine(
        self, key: str, machine: Any, *, expected_version: int | None = None
    ) -> SnapshotRef:
        """Awaitable :meth:`Store.save_machine`; an async machine's lock is held meanwhile."""
        store = self._require()
        return await self._pool.commit_holding(
            machine, lambda: store.save_machine(key, machine, expected_version=expected_version)
        )

    async def restore_machine(
        self,
        key: str,
        machine: Any,
        *,
        version: int | None = None,
        at: datetime | None = None,
    ) -> SnapshotRef:
        """Awaitable :meth:`Store.restore_machine`; an async machine's lock is held meanwhile.

        With ``at``, an async machine's journal is replayed by awaiting it
        (:meth:`recover`'s way); on any error, a cancellation included, the
        machine stays as it was.
        """
        store = self._require()
        if at is None or not is_async_machine(machine):
            return await self._pool.commit_holding(
                machine, lambda: store.restore_machine(key, machine, version=version, at=at)
            )
        check_name(key, "key")
        moment = check_moment(at, version=version)
        recovered = await recover_async(self._pool, store.pipeline, key, machine, at=moment)
        assert recovered.snapshot is not None  # a recovery at a moment requires one
        return snapshot_ref(recovered.snapshot, store.namespace)

    # Machines that persist themselves.

    async def attach(
        self,
        machine: Any,
        key: str,
        *,
        snapshot_every: int = 1,
        journal: bool = False,
        extensions: tuple[str, ...] = (),
    ) -> AsyncAttached:
        """Awaitable :meth:`Store.attach`: a :class:`AsyncAttached`; writes nothing.

        Async machines too (without extensions: those run machines
        synchronously); see :class:`AsyncAttached` for how events run.
        """
        store = self._require()
        options: dict[str, Any] = {
            "snapshot_every": snapshot_every,
            "journal": journal,
            "extensions": extensions,
        }
        if drives(machine):
            return await attach_async(self._pool, store.pipeline, machine, key, **options)
        attached = await self._pool.run(lambda: store.attach(machine, key, **options))
        return AsyncAttached(attached, self._pool)

    async def open_machine(
        self,
        key: str,
        build: Callable[[], Any],
        *,
        snapshot_every: int = 1,
        journal: bool = False,
        extensions: tuple[str, ...] = (),
    ) -> AsyncAttached:
        """Awaitable :meth:`Store.open_machine`: restore-or-start, then attach.

        ``build`` is called in the event loop and may be a coroutine
        function; an async machine it returns is recovered (its journal
        replayed by awaiting it) or started, here.
        """
        store = self._require()
        options: dict[str, Any] = {
            "snapshot_every": snapshot_every,
            "journal": journal,
            "extensions": extensions,
        }

        def sync_open(built: Callable[[], Any]) -> Attached:
            return store.open_machine(key, built, **options)

        return await open_machine_async(
            self._pool, store.pipeline, key, build, sync_open=sync_open, **options
        )

    async def recover(self, key: str, machine: Any) -> Head:
        """Awaitable :meth:`Store.recover`; an async machine's journal is replayed by awaiting it.

        On any error, a cancellation included, the machine stays as it was.
        """
        store = self._require()
        if not is_async_machine(machine):
            return await self._pool.commit_holding(machine, lambda: store.recover(key, machine))
        check_name(key, "key")
        recovered = await recover_async(self._pool, store.pipeline, key, machine)
        return recovered.head()

    async def journal(self, key: str, *, since: int = 0) -> list[JournalEntry]:
        """Awaitable :meth:`Store.journal`."""
        store = self._require()
        return await self._pool.run(lambda: store.journal(key, since=since))

    # Records.

    async def save(
        self, key: str, record: msgspec.Struct, *, expected_version: int | None = None
    ) -> SnapshotRef:
        """Awaitable :meth:`Store.save`."""
        store = self._require()
        return await self._pool.commit(
            lambda: store.save(key, record, expected_version=expected_version)
        )

    async def load(self, key: str, *, version: int | None = None) -> Any:
        """Awaitable :meth:`Store.load`."""
        store = self._require()
        return await self._pool.run(lambda: store.load(key, version=version))

    # Listing and deleting.

    async def versions(self, key: str) -> list[SnapshotRef]:
        """Awaitable :meth:`Store.versions`."""
        store = self._require()
        return await self._pool.run(lambda: store.versions(key))

    async def keys(self, prefix: str = "") -> list[str]:
        """Awaitable :meth:`Store.keys`."""
        store = self._require()
        return await self._pool.run(lambda: store.keys(prefix))

    async def delete(self, key: str, *, version: int | None = None) -> int:
        """Awaitable :meth:`Store.delete`."""
        store = self._require()
        return await self._pool.commit(lambda: store.delete(key, version=version))

    async def usage(self, *, recount: bool = False) -> Usage:
        """Awaitable :meth:`Store.usage` (with ``recount``, shielded: it repairs counters)."""
        store = self._require()

        def call() -> Usage:
            return store.usage(recount=recount)

        return await (self._pool.commit(call) if recount else self._pool.run(call))

    async def stats(self) -> StoreStats:
        """Awaitable :meth:`Store.stats` (in memory: it never waits for the pool)."""
        return self._require().stats()

    # Rewriting stored records in place.

    async def migrate(
        self,
        kind: str,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        dry_run: bool = False,
        progress: Progress | None = None,
    ) -> MigrationReport:
        """Awaitable :meth:`Store.migrate`; a cancelled run finishes first (it is a write)."""
        store = self._require()
        return await self._pool.commit(
            lambda: store.migrate(kind, batch_size=batch_size, dry_run=dry_run, progress=progress)
        )

    async def reseal(
        self, *, batch_size: int = DEFAULT_BATCH_SIZE, progress: Progress | None = None
    ) -> MigrationReport:
        """Awaitable :meth:`Store.reseal`; a cancelled run finishes first (it is a write)."""
        store = self._require()
        return await self._pool.commit(
            lambda: store.reseal(batch_size=batch_size, progress=progress)
        )

    async def quota(self) -> Quota | None:
        """Awaitable twin of the :attr:`Store.quota` property (a method here)."""
        store = self._require()
        return await self._pool.run(lambda: store.quota)

    async def set_quota(self, quota: Quota | None) -> None:
        """Awaitable :meth:`Store.set_quota`."""
        store = self._require()
        await self._pool.commit(lambda: store.set_quota(quota))

    async def to_thread(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn(*args, **kwargs)`` in this store's pool, shielded like a write.

        For the blocking methods of the sync objects this store exposes:
        ``await astore.to_thread(astore.extensions.activate, "throttle")``.
        """
        self._require()
        return await self._pool.commit(functools.partial(fn, *args, **kwargs))

    def _require(self) -> Store:
        if self._closed:
            raise InvalidArgument(CLOSED)
        if self._store is None:
            raise InvalidArgument(_NOT_OPEN)
        return self._store


def open_async_store(
    url: str,
    *,
    namespace: str = DEFAULT_NAMESPACE,
    keyring: KeyRing,
    quota: Quota | None = None,
    formats: FormatRegistry | None = None,
    codec: str = "msgpack",
    upgrade: bool = False,
    limits: Limits | None = None,
    stats: bool = True,
    max_workers: int = DEFAULT_MAX_WORKERS,
    **options: Any,
) -> AsyncStore:
    """An :class:`AsyncStore` on the backend ``url`` names; it opens when awaited or entered.

    Takes :func:`~gotstate_persist.open_store`'s arguments, plus
    ``max_workers`` (the pool's size, default 4). Nothing is opened by this
    call: ``async with gp.open_async_store(...) as astore`` or ``astore =
    await gp.open_async_store(...)`` (then ``await astore.aclose()``) runs
    ``open_store`` in the pool, never blocking the event loop, and raises its errors. An
    ``AsyncStore`` whose opening failed or was cancelled is closed (its
    threads ended): open a new one.
    """
    opener = functools.partial(
        open_store,
        url,
        namespace=namespace,
        keyring=keyring,
        quota=quota,
        formats=formats,
        codec=codec,
        upgrade=upgrade,
        limits=limits,
        stats=stats,
        **options,
    )
    return AsyncStore(opener, max_workers=max_workers)
