"""Recovery of an asyncio machine: the sync plan, applied under the machine's lock, replay awaited.

Why it exists: gotstate's ``AsyncStateMachine`` starts and processes events
as coroutines, so :func:`~._recover.recover` (which calls them) cannot drive
one. This module is its asyncio twin, and shares every decision with it:

1. the plan (:func:`~._recover.plan_recovery`: which snapshot, which
   entries, every refusal) is read and checked in the AsyncStore's pool,
   with the machine untouched;
2. holding the machine's own asyncio locks (taken in the event loop, so no
   transition is half-way), a pool thread captures the machine as given and
   applies the snapshot (all or nothing);
3. the locks are released and the entries are replayed by awaiting the
   machine itself (``start()`` first for a key without a snapshot), each
   checked as the sync replay checks it (:func:`~._recover.check_behaviors`,
   :func:`~._recover.check_replayed`);
4. on any failure, a cancellation included, the capture of step 2 is
   applied back under the locks, shielded from further cancellation, and the
   error is raised: the machine is exactly as it was given.

It also owns :func:`put_back` and :func:`in_pool_anyway`, which the asyncio
attachment uses to undo an event the same way.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from .. import machine as _machine
from .._async_pool import CallPool, as_holder, holding, shielded
from ..extensions._views import gotstate_event
from ._recover import (
    Recovered,
    RecoveryPlan,
    active_name,
    apply_snapshot,
    capture_for_undo,
    check_replayable,
    check_replayed,
    plan_recovery,
)

if TYPE_CHECKING:
    from .._pipeline import RecordPipeline
    from ..formats.machine import MachineSnapshot

__all__ = ["in_pool_anyway", "put_back", "recover_async"]

T = TypeVar("T")


async def recover_async(
    pool: CallPool,
    pipeline: RecordPipeline,
    key: str,
    machine: Any,
    *,
    at: datetime | None = None,
) -> Recovered:
    """Bring the async ``machine`` to ``key``'s newest state (or the one in force at ``at``).

    The same result and errors as :func:`~._recover.recover` with the bare
    machine; see the module docstring for how it runs.
    """
    plan = await pool.run(functools.partial(plan_recovery, pipeline, key, machine, at))
    before = await _apply(pool, pipeline, machine, plan)
    try:
        if plan.snapshot is None:
            await machine.start()
        for entry in plan.entries:
            check_replayable(entry, machine, ())
            accepted = bool(await machine.process_event(gotstate_event(entry.event)))
            check_replayed(entry, accepted, active_name(machine))
    except BaseException:
        await shielded(put_back(pool, pipeline, machine, before))
        raise
    return plan.result()


async def _apply(
    pool: CallPool, pipeline: RecordPipeline, machine: Any, plan: RecoveryPlan
) -> MachineSnapshot:
    """Capture the machine as given, then apply the plan's snapshot; return the capture.

    A cancellation before the pool thread started skips both; one after
    waits for them and applies the capture back before it is raised.
    """

    def capture_and_apply() -> MachineSnapshot:
        before = capture_for_undo(pipeline, machine)
        if plan.snapshot is not None:
            apply_snapshot(pipeline, machine, plan.snapshot)
        return before

    locks = _machine.async_locks(machine)
    async with holding(locks):
        future = pool.spawn(functools.partial(as_holder, locks, capture_and_apply))
        cancelled = await pool.settle(future, skippable=True)
        if cancelled and future.exception() is None:
            undo = functools.partial(apply_snapshot, pipeline, machine, future.result())
            await in_pool_anyway(pool, locks, undo)  # raises CancelledError too
    if cancelled:
        raise asyncio.CancelledError
    return future.result()


async def put_back(
    pool: CallPool, pipeline: RecordPipeline, machine: Any, before: MachineSnapshot
) -> None:
    """Apply ``before`` to the machine under its own locks, waiting for them as long as it takes."""
    locks = _machine.async_locks(machine)
    async with holding(locks, timeout=None):
        await in_pool_anyway(
            pool, locks, functools.partial(apply_snapshot, pipeline, machine, before)
        )


async def in_pool_anyway(pool: CallPool, locks: list[asyncio.Lock], call: Callable[[], T]) -> T:
    """``call()`` holding ``locks`` (the caller took them): in the pool, even while it closes.

    For undoing what was half done, which must happen whatever else does: it
    waits through a cancellation and raises it once ``call`` has returned,
    and runs in the event loop itself if the pool has already shut down.
    """
    try:
        future = pool.spawn(functools.partial(as_holder, locks, call), closing=True)
    except RuntimeError:  # the executor has shut down: no thread left to hand it to
        return as_holder(locks, call)
    if await pool.settle(future, skippable=False):
        raise asyncio.CancelledError
    return future.result()
