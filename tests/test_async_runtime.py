"""AsyncStore's runtime twins: attach, open_machine, recover, journal, restore_machine(at=).

What ``Store`` promises for attached machines (runtime.md), awaited: the
same commits, results and errors, for gotstate's ``AsyncStateMachine``
(driven in the event loop, committed in the pool) and for sync machines
(the sync attachment, run in the pool). A failed commit puts the machine
back exactly (compared field by field, the data dict kept, no action run
for the undo) and writes nothing (every stored byte compared); of two
attachments on one key exactly one wins. The sync ``Store`` refuses async
machines for everything it would have to await. Real SQLite, PostgreSQL
and S3 (moto); cancellation and the event loop are in
test_async_runtime_cancel.py.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from _async_runtime_helpers import (
    RING_EVENTS,
    entry_view,
    open_async,
    ring,
    run,
    start_data,
    started_ring,
)
from _places import Place
from _runtime_helpers import (
    NAMESPACE,
    RENAMER_SOURCE,
    SQL,
    SQLITE,
    StepClock,
    captured,
    check_journal_chain,
    on,
    open_place,
    place,
    sqlite_place,
    state_name,
)
from gotstate.core.events import Event
from gotstate.core.state_machine import StateMachine
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gotstate_persist as gp
from gotstate_persist.backends import open_backend

__all__ = ["place"]  # the fixture, imported for pytest

KEY = "ring-7"
PATH = ("next", "next", "nope", "jump", "next", "home", "next")


def flavourless(machine: Any) -> tuple[Any, ...]:
    """What a sync machine and its async twin agree on after the same events.

    gotstate's sync machines record each composite's history on every
    transition and its AsyncStateMachine does not, so the two differ there
    (and only there); everything else a snapshot holds is compared.
    """
    return (state_name(machine), machine._started, dict(start_data(machine)))


def snapshot_view(snapshot: Any) -> tuple[Any, ...]:
    """A stored snapshot without the history (see :func:`flavourless`)."""
    return (snapshot.current, snapshot.started, snapshot.data, snapshot.journal_seq)


# The same commits as the sync Store.


@pytest.mark.parametrize(
    ("place", "journal"),
    [("sqlite", False), ("sqlite", True), ("postgresql", True), ("s3", True)],
    indirect=["place"],
)
def test_an_async_machine_commits_what_a_sync_one_commits(
    place: Place, keyring: gp.KeyRing, journal: bool
) -> None:
    every = 3 if journal else 1
    with open_place(place, keyring, namespace="sync") as store:
        sync_machine = ring(StateMachine)
        sync_machine.start()
        with store.attach(sync_machine, KEY, journal=journal, snapshot_every=every) as attached:
            expected = [
                (attached.process_event(Event(name), meta={"n": i}), attached.head)
                for i, name in enumerate(PATH)
            ]
        sync_journal = [entry_view(e) for e in store.journal(KEY)]
        sync_snapshots = [
            snapshot_view(store.load(KEY, version=r.version)) for r in store.versions(KEY)
        ]

    async def scenario() -> None:
        async with open_async(place, keyring) as astore:
            machine = await started_ring()
            attached = await astore.attach(machine, KEY, journal=journal, snapshot_every=every)
            assert isinstance(attached, gp.AsyncAttached)
            assert attached.machine is machine and attached.key == KEY
            async with attached:
                found = [
                    (await attached.process_event(Event(name), meta={"n": i}), attached.head)
                    for i, name in enumerate(PATH)
                ]
            assert found == expected
            assert [entry_view(e) for e in await astore.journal(KEY)] == sync_journal
            assert [entry_view(e) for e in await astore.journal(KEY, since=2)] == sync_journal[2:]
            refs = await astore.versions(KEY)
            found_snapshots = [
                snapshot_view(await astore.load(KEY, version=r.version)) for r in refs
            ]
            assert found_snapshots == sync_snapshots
            assert flavourless(machine) == flavourless(sync_machine)
            fresh = ring()
            assert await astore.recover(KEY, fresh) == attached.head
            assert captured(fresh) == captured(machine)

    run(scenario())


@SQLITE
def test_attach_and_open_machine_write_nothing(place: Place, keyring: gp.KeyRing) -> None:
    async def scenario() -> None:
        async with open_async(place, keyring) as astore:
            machine = await started_ring()
            await astore.save_machine(KEY, machine)
            before = place.snapshot()
            attached = await astore.attach(machine, KEY, journal=True, snapshot_every=4)
            assert attached.head == gp.Head(1, 0)
            await attached.detach()  # nothing processed: nothing to flush
            async with await astore.open_machine("fresh", ring, journal=True) as opened:
                assert state_name(opened.machine) == "start"
                assert opened.head == gp.Head(0, 0)
            assert place.snapshot() == before
            assert "AsyncAttached" in repr(opened) and "fresh" in repr(opened)

    run(scenario())


# open_machine: restore-or-start.


@pytest.mark.parametrize("place", ["sqlite", "postgresql"], indirect=True)
def test_open_machine_starts_a_new_key_and_recovers_an_existing_one(
    place: Place, keyring: gp.KeyRing
) -> None:
    async def async_build() -> Any:  # a coroutine function is a builder too
        return ring()

    async def scenario() -> None:
        async with open_async(place, keyring) as astore:
            first = await astore.open_machine(KEY, ring, journal=True, snapshot_every=3)
            assert state_name(first.machine) == "start" and first.head == gp.Head(0, 0)
            for name in PATH:
                await first.process_event(Event(name))
            # not detached: the journal holds entries no snapshot covers
            for build in (ring, async_build):
                again = await astore.open_machine(KEY, build, journal=True, snapshot_every=3)
                assert again.head == first.head
                assert captured(again.machine) == captured(first.machine)
                assert await again.process_event(Event("next"))
                await again.detach()
                first = again
            # a sync machine opened through the AsyncStore reads the same key
            sync = await astore.open_machine(KEY, lambda: ring(StateMachine), journal=True)
            assert isinstance(sync, gp.AsyncAttached)
            assert captured(sync.machine) == captured(first.machine)
            assert await sync.process_event(Event("next"))
            await sync.detach()
        with open_place(place, keyring) as store:
            fresh = ring(StateMachine)
            store.recover(KEY, fresh)
            assert captured(fresh) == captured(sync.machine)

    run(scenario())


# Commit or undo: a failed commit puts the machine back exactly.


def _before(machine: Any, entered: list[str]) -> tuple[Any, dict[str, Any], dict[str, Any], int]:
    data = start_data(machine)
    return captured(machine), data, dict(data), len(entered)


def _assert_undone(
    machine: Any, entered: list[str], before: tuple[Any, dict[str, Any], dict[str, Any], int]
) -> None:
    state, data, data_copy, actions = before
    assert captured(machine) == state
    assert start_data(machine) is data and data == data_copy
    assert len(entered) == actions + 1  # the event's entry action ran; the undo ran none


@pytest.mark.parametrize(
    ("place", "failure", "journal"),
    [
        *[(kind, "conflict", journal) for kind in ("sqlite", "postgresql") for journal in (0, 1)],
        *[(kind, "quota", journal) for kind in ("sqlite", "postgresql") for journal in (0, 1)],
        ("sqlite", "backend", 0),
        ("postgresql", "backend", 1),
        ("s3", "backend", 1),
        ("s3", "conflict", 1),
    ],
    indirect=["place"],
)
def test_a_failed_commit_puts_the_async_machine_back(
    place: Place, keyring: gp.KeyRing, failure: str, journal: int
) -> None:
    errors = {"conflict": gp.VersionConflict, "quota": gp.QuotaExceeded, "backend": gp.BackendError}

    async def scenario() -> Any:
        astore = await open_async(place, keyring)
        try:
            entered: list[str] = []
            machine = await started_ring(entered=entered)
            await astore.save_machine(KEY, machine)
            attached = await astore.attach(machine, KEY, journal=bool(journal))
            assert await attached.process_event(Event("next"))
            if failure == "conflict":
                winner_machine = ring()
                await astore.restore_machine(KEY, winner_machine)
                winner = await astore.attach(winner_machine, KEY, journal=bool(journal))
                assert await winner.process_event(Event("jump"))
            elif failure == "quota":
                usage = await astore.usage()
                await astore.set_quota(gp.Quota(max_records=usage.records))
            stored = place.snapshot()
            before = _before(machine, entered)
            if failure == "backend":
                await astore.to_thread(astore.backend.close)
            with pytest.raises(errors[failure]) as caught:
                await attached.process_event(Event("next"), meta={"actor": "api"})
            _assert_undone(machine, entered, before)
            assert place.snapshot() == stored
            if failure == "conflict":
                assert "attached.recover()" in str(caught.value)
                assert await attached.recover() == winner.head
                assert captured(machine) == captured(winner_machine)
            elif failure == "quota":
                await astore.set_quota(None)
            if failure != "backend":
                assert await attached.process_event(Event("next"))  # the retry commits
                fresh = ring()
                await astore.recover(KEY, fresh)
                assert captured(fresh) == captured(machine)
            return captured(machine)
        finally:
            await astore.aclose()

    held = run(scenario())
    if failure == "backend":  # what the store holds is what the machine holds
        with open_place(place, keyring) as store:
            fresh = ring(StateMachine)
            store.recover(KEY, fresh)
            assert captured(fresh) == held


@pytest.mark.parametrize(
    ("place", "journal"), [("sqlite", 0), ("sqlite", 1), ("postgresql", 1)], indirect=["place"]
)
def test_two_attachments_race_for_a_key_and_exactly_one_wins(
    place: Place, keyring: gp.KeyRing, journal: int
) -> None:
    async def scenario() -> None:
        async with open_async(place, keyring, max_workers=4) as astore:
            await astore.save_machine(KEY, await started_ring())
            machines = [ring(), ring()]
            attachments = []
            for machine in machines:
                await astore.restore_machine(KEY, machine)
                attachments.append(await astore.attach(machine, KEY, journal=bool(journal)))
            committed = 0
            for _ in range(6):
                before = [captured(m) for m in machines]
                outcomes = await asyncio.gather(
                    *(
                        a.process_event(Event("next"), meta={"who": i})
                        for i, a in enumerate(attachments)
                    ),
                    return_exceptions=True,
                )
                winners = [i for i, outcome in enumerate(outcomes) if outcome is True]
                losers = [i for i, outcome in enumerate(outcomes) if outcome is not True]
                assert len(winners) == 1, outcomes
                assert isinstance(outcomes[losers[0]], gp.VersionConflict), outcomes
                loser, winner = attachments[losers[0]], attachments[winners[0]]
                assert captured(loser.machine) == before[losers[0]]  # undone
                assert await loser.recover() == winner.head
                assert captured(loser.machine) == captured(winner.machine)
                committed += 1
            if journal:
                entries = await astore.journal(KEY)
                assert len(entries) == committed
                check_journal_chain(entries)
            else:
                assert len(await astore.versions(KEY)) == committed + 1
            fresh = ring()
            await astore.recover(KEY, fresh)
            assert captured(fresh) == captured(machines[0]) == captured(machines[1])

    run(scenario())


# Refusals: the same messages as Store's, and nothing written.


BAD_OPTIONS: list[tuple[dict[str, Any], str]] = [
    ({"snapshot_every": 2}, "snapshot_every > 1 needs journal=True"),
    ({"snapshot_every": 0}, "snapshot_every must be an int >= 1"),
    ({"journal": "yes"}, "journal must be True or False"),
    ({"extensions": "throttle"}, "extensions must be a tuple of extension names"),
]


@pytest.mark.parametrize(("options", "message"), BAD_OPTIONS)
def test_bad_options_are_refused_as_store_refuses_them(
    tmp_path: Path, keyring: gp.KeyRing, options: dict[str, Any], message: str
) -> None:
    where = sqlite_place(tmp_path)

    async def scenario() -> None:
        built: list[Any] = []

        def build() -> Any:
            built.append(ring())
            return built[-1]

        async with open_async(where, keyring) as astore:
            machine = await started_ring()
            for call in (
                astore.attach(machine, KEY, **options),
                astore.attach(ring(StateMachine), KEY, **options),
                astore.open_machine(KEY, build, **options),
            ):
                with pytest.raises(gp.InvalidArgument, match=message):
                    await call
            assert built == []  # refused before anything was built
            assert (await astore.usage()).records == 0

    run(scenario())


@SQLITE
def test_what_an_async_machine_cannot_attach_with_is_refused(
    place: Place, keyring: gp.KeyRing, tmp_path: Path
) -> None:
    async def scenario() -> None:
        async with open_async(place, keyring) as astore:
            machine = await started_ring()
            before = place.snapshot()
            with pytest.raises(gp.InvalidArgument, match="extensions run machines synchronously"):
                await astore.attach(machine, KEY, extensions=("throttle",))
            bound = astore.extensions.bind(machine)
            with pytest.raises(
                gp.InvalidArgument, match="cannot bind a gotstate AsyncStateMachine"
            ):
                await astore.attach(bound, KEY)
            with pytest.raises(gp.InvalidArgument, match="extensions run machines synchronously"):
                await astore.open_machine(KEY, ring, extensions=("throttle",))
            with pytest.raises(gp.InvalidArgument, match="not started") as caught:
                await astore.attach(ring(), KEY)
            assert "open_machine" in str(caught.value)
            with pytest.raises(gp.InvalidArgument):
                await astore.attach(object(), KEY)
            with pytest.raises(gp.InvalidArgument, match="build must be a callable"):
                await astore.open_machine(KEY, ring())
            with pytest.raises(gp.InvalidArgument):
                await astore.attach(machine, "")
            assert place.snapshot() == before
            attached = await astore.attach(machine, KEY, journal=True)
            assert await attached.process_event(Event("next"))
            await attached.detach()
            with pytest.raises(gp.InvalidArgument, match="detached"):
                await attached.process_event(Event("next"))
            before = place.snapshot()
            with pytest.raises(gp.InvalidArgument, match=r"keeps a journal.*journal=True"):
                await astore.attach(machine, KEY)
            with pytest.raises(gp.InvalidArgument, match=r"keeps a journal.*journal=True"):
                await astore.open_machine(KEY, ring)
            assert place.snapshot() == before

    run(scenario())


@SQLITE
def test_processing_an_event_from_inside_the_machines_own_action_is_refused(
    place: Place, keyring: gp.KeyRing
) -> None:
    refused: list[BaseException] = []

    async def scenario() -> None:
        async with open_async(place, keyring) as astore:
            machine = await started_ring()
            attached = await astore.attach(machine, KEY, journal=True)

            async def reenter(event: Event) -> None:
                try:
                    await attached.process_event(Event("next"))
                except gp.InvalidArgument as exc:
                    refused.append(exc)

            from gotstate.core.transitions import Transition
            from machines import on as guard_on

            start = next(s for s in machine.get_states() if s.name == "start")
            machine.add_transition(
                Transition(start, start, guards=[guard_on("again")], actions=[reenter])
            )
            assert await attached.process_event(Event("again"))
            assert [e.event.name for e in await astore.journal(KEY)] == ["again"]

    run(scenario())
    assert len(refused) == 1 and "inside the machine's own action" in str(refused[0])


# The sync Store refuses async machines for what it would have to await.


@SQLITE
def test_the_sync_store_refuses_to_drive_an_async_machine(
    place: Place, keyring: gp.KeyRing
) -> None:
    async def scenario() -> None:
        machine = await started_ring()
        async with open_async(place, keyring) as astore:
            attached = await astore.attach(machine, KEY, journal=True)
            async with attached:
                assert await attached.process_event(Event("next"))
        with open_place(place, keyring) as store:
            before, stored = captured(machine), place.snapshot()
            fresh = ring()
            fresh_before = captured(fresh)
            bound = store.extensions.bind(machine)
            calls: list[Callable[[], object]] = [
                lambda: store.attach(machine, KEY, journal=True),
                lambda: store.attach(bound, "other"),
                lambda: store.open_machine(KEY, ring, journal=True),
                lambda: store.open_machine("new", ring),
                lambda: store.recover(KEY, fresh),
                lambda: store.restore_machine(KEY, fresh, at=datetime.now(UTC)),
            ]
            for call in calls:
                with pytest.raises(gp.InvalidArgument, match="open_async_store") as caught:
                    call()
                assert "AsyncStateMachine" in str(caught.value)
            bound.unbind()
            assert captured(machine) == before and captured(fresh) == fresh_before
            assert place.snapshot() == stored
            # a plain restore or save of an idle async machine stays allowed
            store.restore_machine(KEY, fresh)
            assert captured(fresh) == before

    run(scenario())


# Sync machines through the AsyncStore: the sync attachment, in the pool.


@SQLITE
def test_a_sync_machine_with_extensions_through_the_async_store(
    place: Place, keyring: gp.KeyRing, tmp_path: Path
) -> None:
    path = tmp_path / "renamer.py"
    path.write_text(RENAMER_SOURCE)

    async def scenario() -> None:
        async with open_async(place, keyring) as astore:
            registration = await astore.to_thread(
                astore.extensions.register, f"{path}:Renamer", isolation="in-process"
            )
            await astore.to_thread(astore.extensions.activate, registration.name)
            opened = await astore.open_machine(
                KEY, lambda: ring(StateMachine), journal=True, extensions=(registration.name,)
            )
            assert await opened.process_event(Event("go"), meta={"actor": "api"})  # fans out
            assert await opened.process_event(Event("advance"))  # renamed to "next"
            entries = await astore.journal(KEY)
            assert [e.event.name for e in entries] == ["next", "next", "next"]
            assert entries[2].event.metadata == {"renamed": True}
            check_journal_chain(entries)
            assert opened.head == gp.Head(2, 3)  # a snapshot after each commit
            assert await opened.snapshot() == gp.Head(3, 3)
            await opened.detach()
            fresh = ring(StateMachine)
            await astore.recover(KEY, fresh)
            assert captured(fresh) == captured(opened.machine)

    run(scenario())


# Recovery and looking back.


@settings(
    max_examples=6,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    events=st.lists(st.sampled_from(RING_EVENTS), max_size=24),
    every=st.integers(1, 5),
    journal=st.booleans(),
    detach=st.booleans(),
)
def test_recover_after_random_events_equals_the_original(
    keyring: gp.KeyRing, events: list[str], every: int, journal: bool, detach: bool
) -> None:
    every = every if journal else 1

    async def scenario(url: str) -> None:
        flavour: tuple[Any, ...] = ()
        async with gp.open_async_store(url, keyring=keyring, namespace=NAMESPACE) as astore:
            attached = await astore.open_machine(KEY, ring, journal=journal, snapshot_every=every)
            accepted = [await attached.process_event(Event(name)) for name in events]
            if detach:
                await attached.detach()
            original = captured(attached.machine)
            flavour = flavourless(attached.machine)
            if not any(accepted):
                assert await astore.keys() == []  # nothing was ever committed
                return
            fresh = ring()
            assert await astore.recover(KEY, fresh) == attached.head
            assert captured(fresh) == original
            reopened = await astore.open_machine(KEY, ring, journal=journal, snapshot_every=every)
            assert captured(reopened.machine) == original
            assert reopened.head == attached.head
        # the sync twin recovers the same state from what the async machine wrote
        with gp.open_store(url, keyring=keyring, namespace=NAMESPACE) as store:
            twin = ring(StateMachine)
            store.recover(KEY, twin)
            assert flavourless(twin) == flavour

    with tempfile.TemporaryDirectory() as directory:
        run(scenario(f"sqlite:///{Path(directory) / 'random.db'}"))


@SQL
def test_a_recovery_that_diverges_leaves_the_machine_as_it_was(
    place: Place, keyring: gp.KeyRing
) -> None:
    async def scenario() -> None:
        async with open_async(place, keyring) as astore:
            writer = await astore.open_machine(KEY, ring, journal=True, snapshot_every=10)
            for name in ("next", "next", "next"):
                assert await writer.process_event(Event(name))
            # another deploy: "next" out of s-0-1 now needs "go" (entry 3 took it)
            changed = ring()
            for transition in changed.get_transitions():
                if transition.source.name == "s-0-1":
                    transition.guards[:] = [lambda event: event.name == "go"]
            await changed.start()
            for name in ("home", "home"):
                await changed.process_event(Event(name))
            before = captured(changed)
            with pytest.raises(gp.ReplayDiverged) as caught:
                await astore.recover(KEY, changed)
            assert caught.value.seq == 3  # entry 2 replayed, then 3 went elsewhere
            assert captured(changed) == before
            with pytest.raises(gp.ReplayDiverged):
                await astore.open_machine(KEY, lambda: changed, journal=True)
            assert captured(changed) == before
            with pytest.raises(gp.NotFound):
                await astore.recover("missing", changed)
            assert captured(changed) == before

    run(scenario())


@pytest.fixture
def clocked(place: Place, keyring: gp.KeyRing) -> Iterator[gp.Store]:
    backend = open_backend(place.url, **place.options)
    with gp.Store(backend, keyring=keyring, namespace=NAMESPACE, clock=StepClock()) as store:
        yield store


@on("sqlite", "postgresql")
def test_restore_at_a_moment_replays_an_async_machine(clocked: gp.Store) -> None:
    events = ("next", "next", "jump", "next", "home", "next")

    async def scenario() -> list[Any]:
        astore = gp.AsyncStore(clocked)  # it owns (and closes) the clocked store now
        async with astore:
            attached = await astore.open_machine(KEY, ring, journal=True, snapshot_every=3)
            states, flavours = [], []
            for name in events:
                assert await attached.process_event(Event(name))
                states.append(captured(attached.machine))
                flavours.append(flavourless(attached.machine))
            entries = await astore.journal(KEY)
            refs = await astore.versions(KEY)
            assert [r.version for r in refs] == [1, 2]  # after entries 1 and 4
            # each entry's moment: the snapshot in force then, plus the entries up to it
            for step, entry in enumerate(entries[1:], 1):
                fresh = ring()
                ref = await astore.restore_machine(KEY, fresh, at=entry.at)
                assert captured(fresh) == states[step], step
                assert ref.version == (1 if step <= 3 else 2)
                twin = ring(StateMachine)
                await astore.restore_machine(KEY, twin, at=entry.at)  # a sync machine too
                assert flavourless(twin) == flavours[step]
            fresh = ring()
            before = captured(fresh)
            with pytest.raises(gp.NotFound, match="no snapshot at or before that moment"):
                await astore.restore_machine(KEY, fresh, at=entries[0].at)  # taken after it
            for kwargs, message in (
                ({"at": datetime(2030, 1, 1)}, "aware datetime"),
                ({"at": entries[0].at, "version": 1}, "not both"),
            ):
                with pytest.raises(gp.InvalidArgument, match=message):
                    await astore.restore_machine(KEY, fresh, **kwargs)
            assert captured(fresh) == before
            return states

    run(scenario())


@SQLITE
def test_an_async_composite_machine_with_a_submachine(place: Place, keyring: gp.KeyRing) -> None:
    """Its own lock and its submachine's are both held around the checkpoint and commit."""
    from gotstate.core.states import CompositeState, State
    from gotstate.core.transitions import Transition
    from gotstate.runtime.async_support import AsyncCompositeStateMachine, AsyncStateMachine
    from machines import on as guard

    def build() -> Any:
        top = CompositeState("top")
        machine = AsyncCompositeStateMachine(top)
        review, shipped = CompositeState("review"), State("shipped")
        machine.add_state(review, parent=top)
        machine.add_state(shipped, parent=top)
        draft, approved = State("draft"), State("approved")
        sub = AsyncStateMachine(draft)
        sub.add_state(approved)
        # priority 1: gotstate adds review -> draft for any event (priority 0), and
        # orders equal priorities differently from one machine instance to the next
        sub.add_transition(Transition(draft, approved, guards=[guard("approve")], priority=1))
        machine.add_submachine(review, sub)
        draft.parent = approved.parent = review  # gotstate walks .parent for "ship"
        machine.add_transition(Transition(review, shipped, guards=[guard("ship")], priority=1))
        return machine

    async def scenario() -> None:
        async with open_async(place, keyring) as astore:
            opened = await astore.open_machine(KEY, build, journal=True, snapshot_every=5)
            assert len(gp.machine.async_locks(opened.machine)) == 2
            reached = []
            for name in ("approve", "nope", "approve", "ship", "approve"):
                if await opened.process_event(Event(name)):
                    reached.append(state_name(opened.machine))
            assert reached == ["approved", "draft", "approved", "shipped"]
            entries = await astore.journal(KEY)
            assert [e.target for e in entries] == reached
            check_journal_chain(entries)
            fresh = build()
            assert await astore.recover(KEY, fresh) == opened.head
            assert captured(fresh) == captured(opened.machine)
            await opened.detach()

    run(scenario())
