"""``gp.AsyncAttached``: an attached machine for asyncio, on the sync commit protocol.

Why it exists: ``AsyncStore.attach``/``open_machine`` must give an asyncio
service what ``Store.attach`` gives a threaded one (write-after-accept, a
rollback when the commit fails, one writer per key, periodic snapshots,
the flush on detach) without blocking its event loop, and must drive
gotstate's ``AsyncStateMachine``, whose events are coroutines. It owns no
protocol of its own: every decision is :class:`~._attached.Attached`'s.

* A sync machine: each call is the sync attachment's, run in the
  AsyncStore's pool (``process_event`` as a shielded write: cancelled while
  queued it never runs; started, it finishes, then ``CancelledError``).
* An async machine: :class:`_Engine` (an ``Attached``) exposes the three
  phases of ``Attached.process_event``. Here, in the event loop:
  ``prepare`` (checks and tags, nothing moves), the checkpoint (taken under
  the machine's own asyncio lock), ``await machine.process_event(...)``
  (which takes that lock itself), ``step``; then ``finish`` (the commit, or
  the rollback) runs in the pool while the machine's locks are held again,
  so a capture never sees a transition half-way. A cancellation while the
  machine runs the event rolls it back (nothing was written); once the
  event ran, the commit is shielded (:func:`~.._async_pool.shielded`): it
  commits, or rolls back if the write fails, then ``CancelledError`` is
  raised. Either way memory and storage agree, and the attachment works on.
  Recovery is :func:`~._async_recover.recover_async`.

Events are processed one at a time per attachment (an ``asyncio.Lock``);
processing an event from inside the machine's own actions is refused
instead of waiting forever. Extensions bind machines synchronously (their
processors and behaviors feed ``process_event`` directly), so an async
machine with ``extensions=`` or as a ``BoundMachine`` is refused; a sync
machine with extensions works, in the pool.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from types import TracebackType
from typing import TYPE_CHECKING, Any

from .. import machine as _machine
from .._async_pool import CallPool, as_holder, holding, shielded
from .._names import check_name
from ..errors import InvalidArgument
from ..extensions._views import gotstate_event
from ._async_recover import recover_async
from ._attached import Attached
from ._checks import (
    check_attachable,
    check_build,
    check_key,
    check_options,
    is_async_machine,
)
from ._commit import Prepared, Step
from ._head import Head
from ._journal import journal_key
from ._recover import Recovered, active_name

if TYPE_CHECKING:
    from .._pipeline import RecordPipeline
    from ..machine import Checkpoint

__all__ = ["AsyncAttached", "attach_async", "drives", "open_machine_async"]

_NO_EXTENSIONS = (
    "extensions run machines synchronously (processors and behaviors feed process_event "
    "directly), so they cannot bind a gotstate AsyncStateMachine; attach the async machine "
    "without extensions, or attach a sync StateMachine with them"
)
_REENTERED = (
    "process_event of this attachment was called from inside the machine's own action or "
    "hook, while it processes an event; queue the event and process it after this one"
)


def drives(machine: object) -> bool:
    """Whether the asyncio runtime drives ``machine`` itself (an async one, or bound to one)."""
    from ..extensions import BoundMachine

    if isinstance(machine, BoundMachine):
        return is_async_machine(machine.machine)
    return is_async_machine(machine)


class _Engine(Attached):
    """An attachment of an async machine: ``Attached``'s phases, for :class:`AsyncAttached`."""

    @property
    def pipeline(self) -> RecordPipeline:
        return self._pipeline

    def prepare(self, event: Any, meta: dict[str, Any] | None) -> Prepared:
        return self._prepare(event, meta)

    def step(
        self, view: Any, metadata: object, source: str | None, handled: bool, steps: list[Step]
    ) -> None:
        self._step(view, metadata, source, (handled, None), steps)

    def finish(self, prepared: Prepared, steps: list[Step], undo: Checkpoint) -> bool:
        return self._finish(prepared, steps, undo, None)

    def check_recoverable(self) -> None:
        self._check_recoverable()

    def adopt(self, recovered: Recovered) -> Head:
        return self._adopt(recovered)


class AsyncAttached:
    """A machine attached to a key of an :class:`~gotstate_persist.AsyncStore`.

    The awaitable twin of :class:`~gotstate_persist.Attached`: the same
    commit protocol, results and errors (see the module docstring for how
    it runs, and for cancellation). Get one from ``await astore.attach(...)``
    or ``await astore.open_machine(...)``; ``async with`` detaches it.
    """

    def __init__(self, attached: Attached, pool: CallPool) -> None:
        self._attached = attached
        self._engine = attached if isinstance(attached, _Engine) else None
        self._pool = pool
        self._lock = asyncio.Lock()  # one event (or snapshot, recover, detach) at a time
        self._owner: asyncio.Task[Any] | None = None

    def __repr__(self) -> str:
        head = self.head
        return f"<AsyncAttached {self.key!r} at {head.snapshot_version}/{head.journal_seq}>"

    @property
    def machine(self) -> Any:
        """The machine itself (process events through :meth:`process_event`)."""
        return self._attached.machine

    @property
    def key(self) -> str:
        """The key this attachment writes."""
        return self._attached.key

    @property
    def head(self) -> Head:
        """The head this attachment last read or wrote."""
        return self._attached.head

    @asynccontextmanager
    async def _turn(self) -> AsyncIterator[None]:
        if self._owner is not None and self._owner is asyncio.current_task():
            raise InvalidArgument(_REENTERED)
        async with self._lock:
            self._owner = asyncio.current_task()
            try:
                yield
            finally:
                self._owner = None

    # Events.

    async def process_event(self, event: Any, *, meta: dict[str, Any] | None = None) -> bool:
        """Process ``event``, then persist it; True if the machine accepted it.

        As :meth:`Attached.process_event`: on a failed commit the machine is
        back where it was and the error is raised. A cancellation leaves
        memory and storage agreeing (the event is committed or undone), then
        raises ``CancelledError``.
        """
        async with self._turn():
            engine = self._engine
            if engine is None:
                attached = self._attached
                return await self._pool.commit(
                    functools.partial(attached.process_event, event, meta=meta)
                )
            return await self._drive(engine, event, meta)

    async def _drive(self, engine: _Engine, event: Any, meta: dict[str, Any] | None) -> bool:
        machine = engine.machine
        prepared = engine.prepare(event, meta)
        undo = await _checkpoint(machine)
        try:
            steps: list[Step] = []
            try:
                for view, metadata in prepared.events:
                    source = active_name(machine)
                    handled = bool(await machine.process_event(gotstate_event(view)))
                    engine.step(view, metadata, source, handled, steps)
            except BaseException:  # the action raised, or the task was cancelled in it
                await shielded(_rollback(machine, undo))
                raise
            if not steps:
                return engine.finish(prepared, steps, undo)  # refused: nothing to write
            return await shielded(self._commit(engine, prepared, steps, undo))
        finally:
            undo.close()

    async def _commit(
        self, engine: _Engine, prepared: Prepared, steps: list[Step], undo: Checkpoint
    ) -> bool:
        """``finish`` in the pool, holding the machine's locks (it captures or rolls back)."""
        locks = _machine.async_locks(engine.machine)
        finish = functools.partial(engine.finish, prepared, steps, undo)
        async with holding(locks, timeout=None):
            try:
                future = self._pool.spawn(functools.partial(as_holder, locks, finish))
            except BaseException:  # the store is closed: nothing was written
                with _machine.holding_async_locks(locks):
                    undo.rollback()
                raise
            try:  # (this runs shielded: only a loop shutting down cancels it)
                await asyncio.shield(asyncio.wrap_future(future))
            except asyncio.CancelledError:
                await self._pool.settle(future, skippable=False)  # keep the locks till it ends
        return future.result()

    # Catching up and letting go.

    async def snapshot(self) -> Head:
        """Write a snapshot now (compare-and-set on the head); return the new head."""
        async with self._turn():
            attached = self._attached
            return await self._pool.commit_holding(attached.machine, attached.snapshot)

    async def recover(self) -> Head:
        """Bring the machine to the key's current head (after a ``VersionConflict``).

        As :meth:`Attached.recover`; on any error, a cancellation included,
        the machine stays as it was.
        """
        async with self._turn():
            engine = self._engine
            if engine is None:
                return await self._pool.commit(self._attached.recover)
            await self._pool.run(engine.check_recoverable)
            recovered = await recover_async(self._pool, engine.pipeline, engine.key, engine.machine)
            return engine.adopt(recovered)

    async def detach(self) -> None:
        """Stop persisting; first write a snapshot covering journaled events not yet in one."""
        async with self._turn():
            attached = self._attached
            await self._pool.commit_holding(attached.machine, attached.detach)

    async def __aenter__(self) -> AsyncAttached:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.detach()


async def _checkpoint(machine: Any) -> Checkpoint:
    """``machine.checkpoint`` taken while no transition is under way (its locks held)."""
    locks = _machine.async_locks(machine)
    async with holding(locks):
        with _machine.holding_async_locks(locks):
            return _machine.checkpoint(machine)


async def _rollback(machine: Any, undo: Checkpoint) -> None:
    """Put the machine back to the checkpoint, once its own transition has let go."""
    locks = _machine.async_locks(machine)
    async with holding(locks, timeout=None):
        with _machine.holding_async_locks(locks):
            undo.rollback()


# Attaching and opening an async machine (AsyncStore routes sync machines to Store).


def _engine(
    pipeline: RecordPipeline,
    key: str,
    machine: Any,
    snapshot_every: int,
    journal: bool,
    recovered: Recovered | None = None,
    head: Head | None = None,
) -> _Engine:
    """The attachment (in the pool: it reads the key's head unless it is given).

    ``head``: the head read before a fresh machine was started (as
    ``Store.open_machine``: a key created since makes the first commit a
    conflict); ``recovered``: where recovery brought the machine.
    """
    if recovered is not None:
        head = recovered.head()
        if journal:
            journal_key(key)
    elif head is None:
        head = check_attachable(pipeline, key, machine, journal=journal)
    return _Engine(
        pipeline,
        key,
        machine,
        snapshot_every=snapshot_every,
        journal=journal,
        bound=None,
        owns_binding=False,
        head=head,
        unsnapped=None if recovered is None else recovered.replayed,
    )


def _refuse_extensions(machine: Any, names: tuple[str, ...]) -> None:
    if names or not is_async_machine(machine):  # extensions=, or a BoundMachine
        raise InvalidArgument(_NO_EXTENSIONS)


async def attach_async(
    pool: CallPool,
    pipeline: RecordPipeline,
    machine: Any,
    key: str,
    *,
    snapshot_every: int,
    journal: bool,
    extensions: object,
) -> AsyncAttached:
    """``Store.attach`` for a machine :func:`drives` says is async; writes nothing."""
    check_name(key, "key")
    names = check_options(snapshot_every, journal, extensions)
    _refuse_extensions(machine, names)
    engine = await pool.run(
        functools.partial(_engine, pipeline, key, machine, snapshot_every, journal)
    )
    return AsyncAttached(engine, pool)


async def open_machine_async(
    pool: CallPool,
    pipeline: RecordPipeline,
    key: str,
    build: Callable[[], Any],
    *,
    snapshot_every: int,
    journal: bool,
    extensions: object,
    sync_open: Callable[[Callable[[], Any]], Attached],
) -> AsyncAttached:
    """Restore-or-start, then attach: ``Store.open_machine``'s twin.

    ``build`` is called in the event loop (it may be a coroutine function).
    A sync machine goes to ``sync_open`` (``Store.open_machine`` with a
    builder returning it) in the pool; an async one is recovered or started
    here, by awaiting it.
    """
    check_name(key, "key")
    names = check_options(snapshot_every, journal, extensions)
    check_build(build)
    built = build()
    if inspect.isawaitable(built):
        built = await built
    if not drives(built):
        attached = await pool.run(functools.partial(sync_open, lambda: built))
        return AsyncAttached(attached, pool)
    _refuse_extensions(built, names)
    head = await pool.run(functools.partial(check_key, pipeline, key, journal=journal))
    recovered: Recovered | None = None
    if head.snapshot_version or head.journal_seq:
        recovered = await recover_async(pool, pipeline, key, built)
    elif not _machine.is_started(built):
        await built.start()
    # the head recovery reached, or the one read before starting: never one read
    # again now (as Store.open_machine)
    engine = await pool.run(
        functools.partial(_engine, pipeline, key, built, snapshot_every, journal, recovered, head)
    )
    return AsyncAttached(engine, pool)
