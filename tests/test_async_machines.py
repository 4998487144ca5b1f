"""gotstate's async machines with gp.AsyncStore and gp.Store; cancelling AsyncStore calls.

A snapshot of an AsyncStateMachine is taken under the machine's own asyncio
lock, so it never sees a transition half-way; a sync Store refuses a machine
whose transition is under way. Async machines restore into their sync twins
and back. Cancelled writes finish (or never start), then raise
CancelledError, with memory and storage agreeing. Real SQLite files; each
test drives its own event loop with ``asyncio.run`` (no pytest-asyncio).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import pytest
from _sqlite_lock import WriteLock
from gotstate.core.events import Event
from gotstate.core.state_machine import CompositeStateMachine, StateMachine
from gotstate.core.states import CompositeState, State
from gotstate.core.transitions import Transition
from gotstate.runtime.async_support import AsyncCompositeStateMachine, AsyncStateMachine
from machines import observe, on, set_data

import gotstate_persist as gp

T = TypeVar("T")
#: Seconds after which a test's safety net releases a held SQLite lock.
SAFETY_NET_S = 20.0


#: Seconds after which a test's scenario fails instead of hanging.
SCENARIO_LIMIT_S = 60.0


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(asyncio.wait_for(coroutine, SCENARIO_LIMIT_S))


class Order(msgspec.Struct, frozen=True):
    id: str
    total: int


def formats() -> gp.FormatRegistry:
    registry = gp.FormatRegistry()
    registry.register(Order, kind="order", version=1)
    return registry


def build(cls: type[StateMachine], finish: list[Callable[..., Any]] | None = None) -> Any:
    """idle -go-> work{step-a -next-> step-b} -finish-> done; ``finish`` runs on the last."""
    idle, work, done = State("idle"), CompositeState("work"), State("done")
    step_a, step_b = State("step-a"), State("step-b")
    machine = cls(idle)
    machine.add_state(work)
    machine.add_state(step_a, parent=work)
    machine.add_state(step_b, parent=work)
    machine.add_state(done)
    step_a.parent = step_b.parent = work
    machine.add_transition(Transition(idle, step_a, guards=[on("go")]))
    machine.add_transition(Transition(step_a, step_b, guards=[on("next")]))
    machine.add_transition(Transition(step_b, done, guards=[on("finish")], actions=finish or []))
    return machine


def build_composite(sync: bool) -> Any:
    """A composite machine with a submachine: gotstate's sync or async flavour."""
    top = CompositeState("top")
    machine = CompositeStateMachine(top) if sync else AsyncCompositeStateMachine(top)
    review, shipped = CompositeState("review"), State("shipped")
    machine.add_state(review, parent=top)
    machine.add_state(shipped, parent=top)
    draft, approved = State("draft"), State("approved")
    sub = (StateMachine if sync else AsyncStateMachine)(draft)
    sub.add_state(approved)
    sub.add_transition(Transition(draft, approved, guards=[on("approve")]))
    machine.add_submachine(review, sub)
    machine.add_transition(Transition(review, shipped, guards=[on("ship")]))
    return machine


class Gate:
    """An async transition action that stops half-way until opened."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.opened = asyncio.Event()

    async def action(self, event: Event) -> None:  # gotstate awaits coroutine functions only
        self.entered.set()
        await self.opened.wait()


async def started_async(finish: list[Callable[..., Any]] | None = None) -> Any:
    machine = build(AsyncStateMachine, finish)
    await machine.start()
    for name in ("go", "next"):
        assert await machine.process_event(Event(name))
    set_data(machine, "step-b", "amount", 42)
    return machine


# The async machine's own lock.


def test_a_save_waits_for_a_transition_under_way_and_stores_it_complete(
    sqlite_url: str, keyring: gp.KeyRing
) -> None:
    async def scenario() -> None:
        gate = Gate()
        machine = await started_async([gate.action])
        async with gp.open_async_store(sqlite_url, keyring=keyring) as astore:
            moving = asyncio.create_task(machine.process_event(Event("finish")))
            await gate.entered.wait()  # step-b exited, the action is awaiting: half-way
            saving = asyncio.create_task(astore.save_machine("m", machine))
            for _ in range(20):
                await asyncio.sleep(0.01)
            assert not saving.done()
            assert await astore.versions("m") == []  # nothing half-way was written
            gate.opened.set()
            assert await moving is True
            ref = await saving
            fresh = build(AsyncStateMachine)
            await astore.restore_machine("m", fresh)
            assert ref.version == 1
            assert fresh.current_state.name == "done"
            assert observe(fresh) == observe(machine)

    run(scenario())


def test_a_restore_waits_for_a_transition_under_way(sqlite_url: str, keyring: gp.KeyRing) -> None:
    async def scenario() -> None:
        async with gp.open_async_store(sqlite_url, keyring=keyring) as astore:
            await astore.save_machine("m", await started_async())  # in step-b
            gate = Gate()
            machine = build(AsyncStateMachine, [gate.action])
            await machine.start()
            for name in ("go", "next"):
                await machine.process_event(Event(name))
            moving = asyncio.create_task(machine.process_event(Event("finish")))
            await gate.entered.wait()
            restoring = asyncio.create_task(astore.restore_machine("m", machine))
            await asyncio.sleep(0.05)
            assert not restoring.done()
            gate.opened.set()
            await moving
            await restoring  # applied after the transition, not in the middle of it
            assert machine.current_state.name == "step-b"

    run(scenario())


def test_the_sync_store_refuses_an_async_machine_half_way(
    sqlite_url: str, keyring: gp.KeyRing
) -> None:
    async def scenario() -> None:
        gate = Gate()
        machine = await started_async([gate.action])
        with gp.open_store(sqlite_url, keyring=keyring) as store:
            store.save_machine("m", machine)  # idle: the sync store may save it
            moving = asyncio.create_task(machine.process_event(Event("finish")))
            await gate.entered.wait()
            with pytest.raises(gp.InvalidArgument, match="middle of a transition"):
                store.save_machine("m", machine)
            with pytest.raises(gp.InvalidArgument, match="middle of a transition"):
                store.restore_machine("m", machine)
            assert [r.version for r in store.versions("m")] == [1]
            gate.opened.set()
            await moving
            assert machine.current_state.name == "done"  # the refused restore changed nothing
            store.save_machine("m", machine)
            fresh = build(StateMachine)
            store.restore_machine("m", fresh)
            assert fresh.current_state.name == "done"

    run(scenario())


def test_saving_from_inside_the_machines_own_action_fails_instead_of_hanging(
    sqlite_url: str, keyring: gp.KeyRing
) -> None:
    errors: list[BaseException] = []

    async def scenario() -> None:
        async with gp.open_async_store(sqlite_url, keyring=keyring) as astore:

            async def save_myself(event: Event) -> None:
                try:
                    await astore.save_machine("m", machine)
                except gp.InvalidArgument as exc:
                    errors.append(exc)

            machine = await started_async([save_myself])
            assert await machine.process_event(Event("finish"))
            assert await astore.versions("m") == []

    run(scenario())
    assert len(errors) == 1 and "inside its own actions" in str(errors[0])


# Async machines restore into their sync twins and back.


def test_an_async_machine_keeps_its_sync_twins_fingerprint_and_format(
    sqlite_url: str, keyring: gp.KeyRing
) -> None:
    async def scenario() -> None:
        async with gp.open_async_store(sqlite_url, keyring=keyring) as astore:
            machine = await started_async()
            sync = build(StateMachine)
            assert gp.fingerprint(machine) == gp.fingerprint(sync)
            await astore.save_machine("from-async", machine)
            await astore.restore_machine("from-async", sync)
            assert observe(sync) == observe(machine)
            assert sync.current_state.name == "step-b"
            assert sync.process_event(Event("finish"))
            await astore.save_machine("from-sync", sync)
            back = build(AsyncStateMachine)
            await astore.restore_machine("from-sync", back)
            assert observe(back) == observe(sync)
            assert await back.process_event(Event("go")) is False  # it is in "done"

    run(scenario())


@pytest.mark.parametrize("direction", ["async-to-sync", "sync-to-async"])
def test_composite_twins_restore_into_each_other(
    direction: str, sqlite_url: str, keyring: gp.KeyRing
) -> None:
    async def scenario() -> None:
        sync_first = direction == "sync-to-async"
        source, target = build_composite(sync_first), build_composite(not sync_first)
        assert gp.fingerprint(source) != gp.fingerprint(target)  # gotstate adds transitions
        assert gp.fingerprint(source, part="states") == gp.fingerprint(target, part="states")
        if sync_first:
            source.start()
        else:
            await source.start()
        set_data(source, "approved", "by", "alice")
        async with gp.open_async_store(sqlite_url, keyring=keyring) as astore:
            await astore.save_machine("c", source)
            await astore.restore_machine("c", target)
        assert observe(target) == observe(source)
        assert target.current_state.name == source.current_state.name == "draft"

    run(scenario())


# Cancellation: the commit is shielded.


async def pending_reaches(astore: gp.AsyncStore, count: int) -> None:
    while astore.pending < count:
        await asyncio.sleep(0.005)
    await asyncio.sleep(0.2)  # let the pool's thread pick the call up


def test_a_cancelled_save_finishes_its_write_then_raises(
    sqlite_url: str, keyring: gp.KeyRing
) -> None:
    async def scenario() -> None:
        async with gp.open_async_store(sqlite_url, keyring=keyring, formats=formats()) as astore:
            await astore.save("warm-up", Order("w", 0))
            with WriteLock(sqlite_url) as held:
                held.release_later(SAFETY_NET_S)
                saving = asyncio.create_task(astore.save("o", Order("o", 1)))
                await pending_reaches(astore, 1)
                saving.cancel()
                await asyncio.sleep(0.2)
                assert not saving.done()  # still finishing its write
                held.release()
                with pytest.raises(asyncio.CancelledError):
                    await saving
            assert [r.version for r in await astore.versions("o")] == [1]
            assert await astore.load("o") == Order("o", 1)
            assert astore.pending == 0

    run(scenario())


def test_a_cancelled_machine_save_keeps_memory_and_storage_agreeing(
    sqlite_url: str, keyring: gp.KeyRing
) -> None:
    async def scenario() -> None:
        machine = await started_async()
        async with gp.open_async_store(sqlite_url, keyring=keyring) as astore:
            await astore.save_machine("warm-up", machine)
            with WriteLock(sqlite_url) as held:
                held.release_later(SAFETY_NET_S)
                saving = asyncio.create_task(astore.save_machine("m", machine))
                await pending_reaches(astore, 1)
                saving.cancel()
                # the machine's lock is held until the write is done
                moving = asyncio.create_task(machine.process_event(Event("finish")))
                await asyncio.sleep(0.2)
                assert not moving.done()
                held.release()
                with pytest.raises(asyncio.CancelledError):
                    await saving
                assert await moving
            fresh = build(AsyncStateMachine)
            await astore.restore_machine("m", fresh)
            assert fresh.current_state.name == "step-b"  # the state it was saved in

    run(scenario())


def test_a_wait_for_timeout_on_a_save_raises_after_the_write(
    sqlite_url: str, keyring: gp.KeyRing
) -> None:
    async def scenario() -> None:
        async with gp.open_async_store(sqlite_url, keyring=keyring, formats=formats()) as astore:
            await astore.save("warm-up", Order("w", 0))
            with WriteLock(sqlite_url) as held:
                held.release_later(SAFETY_NET_S)
                asyncio.get_running_loop().call_later(0.5, held.release)
                with pytest.raises(TimeoutError):
                    await asyncio.wait_for(astore.save("o", Order("o", 1)), 0.1)
                assert astore.pending == 0  # wait_for returned only once the write was done
            assert await astore.load("o") == Order("o", 1)

    run(scenario())


def test_a_cancelled_call_that_has_not_started_never_runs(
    sqlite_url: str, keyring: gp.KeyRing
) -> None:
    async def scenario() -> None:
        machine = await started_async()
        opened = gp.open_async_store(sqlite_url, keyring=keyring, formats=formats(), max_workers=1)
        async with opened as astore:
            await astore.save_machine("m", machine)
            fresh = build(AsyncStateMachine)
            before = observe(fresh)
            with WriteLock(sqlite_url) as held:
                held.release_later(SAFETY_NET_S)
                first = asyncio.create_task(astore.save("o", Order("o", 1)))
                await pending_reaches(astore, 1)  # the one thread is busy
                second = asyncio.create_task(astore.save("o", Order("o", 2)))
                restoring = asyncio.create_task(astore.restore_machine("m", fresh))
                await pending_reaches(astore, 3)
                second.cancel()
                restoring.cancel()
                await asyncio.wait((second, restoring))  # at once: they were only queued
                assert second.cancelled() and restoring.cancelled()
                assert not first.done()
                held.release()
                assert (await first).version == 1
            assert [r.version for r in await astore.versions("o")] == [1]
            assert observe(fresh) == before  # never restored
            assert await fresh.process_event(Event("go")) is False  # and not started

    run(scenario())


def test_closing_waits_for_calls_in_flight(sqlite_url: str, keyring: gp.KeyRing) -> None:
    async def scenario() -> None:
        astore = await gp.open_async_store(sqlite_url, keyring=keyring, formats=formats())
        await astore.save("warm-up", Order("w", 0))
        with WriteLock(sqlite_url) as held:
            held.release_later(SAFETY_NET_S)
            saving = asyncio.create_task(astore.save("o", Order("o", 1)))
            await pending_reaches(astore, 1)
            closing = asyncio.create_task(astore.aclose())
            await asyncio.sleep(0.2)
            assert not closing.done() and not saving.done()
            held.release()
            await closing
            assert (await saving).version == 1

    run(scenario())
    with gp.open_store(sqlite_url, keyring=keyring, formats=formats()) as store:
        assert store.load("o") == Order("o", 1)


def test_cancelling_a_read_returns_at_once(tmp_path: Path, keyring: gp.KeyRing) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"

    async def scenario() -> None:
        opened = gp.open_async_store(url, keyring=keyring, formats=formats(), max_workers=1)
        async with opened as astore:
            await astore.save("o", Order("o", 1))
            with WriteLock(url) as held:
                held.release_later(SAFETY_NET_S)
                blocking = asyncio.create_task(astore.save("p", Order("p", 1)))
                await pending_reaches(astore, 1)
                reading = asyncio.create_task(astore.load("o"))
                await asyncio.sleep(0.05)
                reading.cancel()
                await asyncio.wait((reading,))
                assert reading.cancelled()
                held.release()
                await blocking

    run(scenario())
