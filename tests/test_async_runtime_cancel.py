"""Cancelling AsyncStore's attachments and recoveries; the event loop while they commit.

runtime.md: "a cancelled ``process_event`` or save finishes or undoes its
write, then raises ``CancelledError`` with memory and storage agreeing".
Cancelled while the machine runs the event: the event is undone, nothing is
written. Cancelled while the commit runs in the pool (held there by another
connection's SQLite write lock): the commit finishes (or, if it fails, the
event is undone), then ``CancelledError``. Either way the attachment works
on. A cancelled recovery leaves the machine as it was given. While commits
wait, the event loop keeps running other tasks. Real SQLite files; no
assertion on how long anything took.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from _async_runtime_helpers import (
    SAFETY_NET_S,
    Gate,
    open_async,
    pending_reaches,
    ring,
    run,
    start_data,
    started_ring,
)
from _runtime_helpers import captured, check_journal_chain, sqlite_place, state_name
from _sqlite_lock import WriteLock
from gotstate.core.events import Event
from gotstate.core.state_machine import StateMachine
from machines import set_data

import gotstate_persist as gp

KEY = "ring-9"
JOURNAL = [False, True]


async def recovered_equals(astore: gp.AsyncStore, machine: Any) -> bool:
    """Whether the key's stored state is exactly what ``machine`` holds."""
    fresh = ring()
    await astore.recover(KEY, fresh)
    return bool(captured(fresh) == captured(machine))


# Cancelled while the commit runs in the pool.


@pytest.mark.parametrize("journal", JOURNAL, ids=["snapshots", "journal"])
def test_cancelled_during_the_write_the_event_is_committed_then_cancelled(
    tmp_path: Path, keyring: gp.KeyRing, journal: bool
) -> None:
    where = sqlite_place(tmp_path)

    async def scenario() -> None:
        async with open_async(where, keyring) as astore:
            machine = await started_ring()
            attached = await astore.attach(machine, KEY, journal=journal)
            assert await attached.process_event(Event("next"))
            with WriteLock(where.url) as held:
                held.release_later(SAFETY_NET_S)
                task = asyncio.create_task(attached.process_event(Event("next")))
                await pending_reaches(astore, 1)  # the commit waits for the lock
                task.cancel()
                await asyncio.sleep(0.2)
                assert not task.done()  # still finishing its write
                held.release()
                with pytest.raises(asyncio.CancelledError):
                    await task
            assert state_name(machine) == "s-0-1"  # kept: it is committed
            assert attached.head == (gp.Head(2, 2) if journal else gp.Head(2, 0))
            assert await recovered_equals(astore, machine)
            assert await attached.process_event(Event("next"))  # it works on
            assert await recovered_equals(astore, machine)
            if journal:
                check_journal_chain(await astore.journal(KEY))

    run(scenario())


@pytest.mark.parametrize("journal", JOURNAL, ids=["snapshots", "journal"])
def test_cancelled_during_a_write_that_fails_the_event_is_undone_then_cancelled(
    tmp_path: Path, keyring: gp.KeyRing, journal: bool
) -> None:
    where = sqlite_place(tmp_path)

    async def scenario() -> None:
        async with open_async(where, keyring) as astore:
            machine = await started_ring()
            attached = await astore.attach(machine, KEY, journal=journal)
            assert await attached.process_event(Event("next"))
            usage = await astore.usage()
            await astore.set_quota(gp.Quota(max_records=usage.records))
            stored, before, data = where.snapshot(), captured(machine), start_data(machine)
            with WriteLock(where.url) as held:
                held.release_later(SAFETY_NET_S)
                task = asyncio.create_task(attached.process_event(Event("next")))
                await pending_reaches(astore, 1)
                task.cancel()
                held.release()
                with pytest.raises(asyncio.CancelledError) as caught:
                    await task
            assert isinstance(caught.value.__cause__, gp.QuotaExceeded)  # refused, then cancelled
            assert captured(machine) == before and start_data(machine) is data
            assert where.snapshot() == stored
            await astore.set_quota(None)
            assert await attached.process_event(Event("next"))
            assert await recovered_equals(astore, machine)

    run(scenario())


def test_cancelled_while_queued_behind_a_busy_pool(tmp_path: Path, keyring: gp.KeyRing) -> None:
    """The async machine's commit is shielded even while queued; a sync machine's never ran."""
    where = sqlite_place(tmp_path)

    async def scenario() -> None:
        async with open_async(where, keyring, max_workers=1) as astore:
            machine = await started_ring()
            driven = await astore.attach(machine, KEY, journal=True)
            sync_machine = ring(StateMachine)
            sync_machine.start()
            pooled = await astore.attach(sync_machine, "sync-key", journal=True)
            with WriteLock(where.url) as held:
                held.release_later(SAFETY_NET_S)
                busy = asyncio.create_task(astore.save_machine("busy", await started_ring()))
                await pending_reaches(astore, 1)  # the one thread waits for the lock
                sync_task = asyncio.create_task(pooled.process_event(Event("next")))
                async_task = asyncio.create_task(driven.process_event(Event("next")))
                await pending_reaches(astore, 3)
                sync_task.cancel()
                await asyncio.wait((sync_task,))  # at once: it was only queued
                assert sync_task.cancelled()
                assert state_name(sync_machine) == "start"  # never ran
                async_task.cancel()
                await asyncio.sleep(0.2)
                assert not async_task.done()  # the machine moved: its commit must run
                assert state_name(machine) == "s-0-0"
                held.release()
                with pytest.raises(asyncio.CancelledError):
                    await async_task
                await busy
            assert await recovered_equals(astore, machine)
            assert [e.target for e in await astore.journal(KEY)] == ["s-0-0"]
            assert await astore.journal("sync-key") == []
            assert await pooled.process_event(Event("next"))  # both work on
            assert await driven.process_event(Event("next"))

    run(scenario())


def test_a_wait_for_timeout_raises_after_the_commit(tmp_path: Path, keyring: gp.KeyRing) -> None:
    where = sqlite_place(tmp_path)

    async def scenario() -> None:
        async with open_async(where, keyring) as astore:
            machine = await started_ring()
            attached = await astore.attach(machine, KEY, journal=True)
            with WriteLock(where.url) as held:
                held.release_later(SAFETY_NET_S)
                asyncio.get_running_loop().call_later(0.5, held.release)
                with pytest.raises(TimeoutError):
                    await asyncio.wait_for(attached.process_event(Event("next")), 0.1)
                assert astore.pending == 0  # wait_for returned once the commit was done
            assert state_name(machine) == "s-0-0"
            assert await recovered_equals(astore, machine)

    run(scenario())


# Cancelled while the machine runs the event.


@pytest.mark.parametrize("journal", JOURNAL, ids=["snapshots", "journal"])
def test_cancelled_while_the_action_awaits_the_event_is_undone(
    tmp_path: Path, keyring: gp.KeyRing, journal: bool
) -> None:
    where = sqlite_place(tmp_path)

    async def scenario() -> None:
        async with open_async(where, keyring) as astore:
            gate, entered = Gate(), list[str]()
            machine = await started_ring(gate=gate, entered=entered)
            attached = await astore.attach(machine, KEY, journal=journal)
            assert await attached.process_event(Event("next"))
            head, stored = attached.head, where.snapshot()
            before, data, data_copy = (
                captured(machine),
                start_data(machine),
                dict(start_data(machine)),
            )
            actions = list(entered)
            gate.armed = True
            task = asyncio.create_task(attached.process_event(Event("next")))
            await gate.entered.wait()  # the action changed the data and awaits
            assert start_data(machine) != data_copy
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert captured(machine) == before
            assert start_data(machine) is data and data == data_copy
            assert entered == actions  # no entry action ran, for the event or the undo
            assert where.snapshot() == stored and attached.head == head
            gate.armed = False
            assert await attached.process_event(Event("next"))  # it works on
            assert await recovered_equals(astore, machine)

    run(scenario())


# Cancelled recoveries put the machine back.


@pytest.mark.parametrize("how", ["recover", "restore_at", "attached.recover", "open_machine"])
def test_a_recovery_cancelled_mid_replay_leaves_the_machine_as_given(
    tmp_path: Path, keyring: gp.KeyRing, how: str
) -> None:
    from datetime import UTC, datetime

    where = sqlite_place(tmp_path)

    async def scenario() -> None:
        async with open_async(where, keyring) as astore:
            writer = await astore.open_machine(KEY, ring, journal=True, snapshot_every=10)
            for name in ("next", "next", "next"):  # the snapshot covers 1: 2 and 3 replay
                assert await writer.process_event(Event(name))
            gate = Gate()
            target = await started_ring(gate=gate)
            set_data(target, "start", "note", "as given")
            attached = await astore.attach(target, KEY, journal=True)
            stored, before = where.snapshot(), captured(target)
            gate.armed = True
            calls: dict[str, Callable[[], Awaitable[Any]]] = {
                "recover": lambda: astore.recover(KEY, target),
                "restore_at": lambda: astore.restore_machine(KEY, target, at=datetime.now(UTC)),
                "attached.recover": attached.recover,
                "open_machine": lambda: astore.open_machine(KEY, lambda: target, journal=True),
            }
            task = asyncio.ensure_future(calls[how]())
            await gate.entered.wait()  # replaying entry 2, its action awaits
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert captured(target) == before
            assert where.snapshot() == stored
            gate.armed = False
            if how == "attached.recover":
                assert await attached.recover() == writer.head
            else:
                await astore.recover(KEY, target)
            assert captured(target) == captured(writer.machine)

    run(scenario())


# The event loop keeps running while commits wait.


def test_the_loop_keeps_running_while_commits_wait(tmp_path: Path, keyring: gp.KeyRing) -> None:
    """20 attachments commit while another connection holds SQLite's write lock.

    The loop itself releases the lock once a ticker task has ticked 20 times;
    a commit that blocked the loop would stop the ticker, and only the
    safety net (a timer thread) would release the lock, after every commit
    but the blocking one had waited for it.
    """
    where = sqlite_place(tmp_path)
    attachments, ticks_before_release = 20, 20

    async def scenario() -> None:
        async with open_async(where, keyring) as astore:
            opened = [
                await astore.attach(await started_ring(), f"k-{i}", journal=True)
                for i in range(attachments)
            ]
            ticks = 0
            done_at_release: list[int] = []
            tasks: list[asyncio.Task[bool]] = []
            with WriteLock(where.url) as held:
                held.release_later(SAFETY_NET_S)

                async def ticker() -> None:
                    nonlocal ticks
                    while True:
                        await asyncio.sleep(0.01)
                        ticks += 1
                        if ticks == ticks_before_release:
                            done_at_release.append(sum(t.done() for t in tasks))
                            held.release()

                tasks.extend(
                    asyncio.create_task(a.process_event(Event("next"), meta={"i": i}))
                    for i, a in enumerate(opened)
                )
                ticking = asyncio.create_task(ticker())
                results = await asyncio.gather(*tasks)
                ticking.cancel()
            assert results == [True] * attachments
            assert done_at_release == [0]  # every commit was still waiting when the loop ticked
            for i, attached in enumerate(opened):
                assert attached.head == gp.Head(1, 1)
                assert [e.meta for e in await astore.journal(f"k-{i}")] == [{"i": i}]

    run(scenario())


def test_the_commit_holds_the_machines_own_lock(tmp_path: Path, keyring: gp.KeyRing) -> None:
    """A transition started meanwhile waits for the commit: no snapshot sees it half-way."""
    where = sqlite_place(tmp_path)

    async def scenario() -> None:
        async with open_async(where, keyring) as astore:
            machine = await started_ring()
            attached = await astore.attach(machine, KEY)  # snapshot mode: the commit captures
            with WriteLock(where.url) as held:
                held.release_later(SAFETY_NET_S)
                committing = asyncio.create_task(attached.process_event(Event("next")))
                await pending_reaches(astore, 1)
                # outside the attachment (what the attachment's users must not do)
                moving = asyncio.create_task(machine.process_event(Event("next")))
                await asyncio.sleep(0.2)
                assert not moving.done()  # it waits for the machine's lock
                assert state_name(machine) == "s-0-0"
                held.release()
                assert await committing
                assert await moving
            stored = ring()
            await astore.restore_machine(KEY, stored)
            assert state_name(stored) == "s-0-0"  # the committed event, complete
            assert start_data(stored) == {"count": 1, "last": "s-0-0"}
            assert state_name(machine) == "s-0-1"

    run(scenario())
