"""Hostile review of recovery, ``open_machine``, looking back and quotas of journaled keys.

What must hold (runtime.md): ``open_machine`` attaches at exactly the head
the machine holds; a replay either reproduces the original machine or
refuses; ``restore_machine(at=)`` gives the state in force at the moment,
never later; retention never takes the journal after the newest snapshot;
a key whose first write is a journal entry counts toward ``max_keys``.
Real stores only (SQLite files). ``xfail(strict=True)`` marks a bug found
by this review; its reason names the code and the expected behaviour.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest
from _runtime_helpers import (
    NAMESPACE,
    RENAMER_SOURCE,
    captured,
    check_journal_chain,
    in_process_extension,
    open_place,
    order,
    order_after,
    ring,
    ring_after,
    sqlite_place,
    state_name,
)
from gotstate.core.events import Event
from machines import build_composite_machine
from order_workflow import set_data

import gotstate_persist as gp
from gotstate_persist.backends import open_backend
from gotstate_persist.machine import state_data_copy

KEY = "review-2"
T0 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


class ScriptedClock:
    """A store's clock that returns the times it is given, one per reading, then the last."""

    def __init__(self) -> None:
        self.now = T0
        self.script: list[datetime] = []

    def __call__(self) -> datetime:
        if self.script:
            self.now = self.script.pop(0)
        return self.now


# open_machine: restore-or-start, then attach at the head it decided on.


class _WriteWhenIdle(list[str]):
    """``entered`` that lets another writer create the key when the machine starts."""

    def __init__(self, write: Callable[[], object]) -> None:
        super().__init__()
        self.write: Callable[[], object] | None = write

    def append(self, name: str) -> None:
        super().append(name)
        if name == "idle" and self.write is not None:
            write, self.write = self.write, None
            write()


def test_open_machine_of_a_new_key_never_adopts_a_write_made_while_starting(
    tmp_path: Path, keyring: gp.KeyRing
) -> None:
    with open_place(sqlite_place(tmp_path), keyring) as store:
        winner = order_after(2)

        def build() -> Any:
            return order(_WriteWhenIdle(lambda: store.save_machine(KEY, winner)), start=False)

        opened = store.open_machine(KEY, build)
        assert state_name(opened.machine) == "idle"  # a fresh start, not the winner's state
        assert opened.head == gp.Head(0, 0)
        with pytest.raises(gp.VersionConflict):
            opened.process_event(Event("start"))
        stored = order(start=False)
        store.restore_machine(KEY, stored)
        assert captured(stored) == captured(winner)


def test_open_machine_refuses_a_bound_machine_with_extensions(
    tmp_path: Path, keyring: gp.KeyRing
) -> None:
    with open_place(sqlite_place(tmp_path), keyring) as store:
        in_process_extension(store, tmp_path, RENAMER_SOURCE, "Renamer")

        def build() -> Any:
            return store.extensions.bind(ring(start=False))

        with pytest.raises(gp.InvalidArgument, match="not both"):
            store.open_machine(KEY, build, journal=True, extensions=("renamer",))
        assert store.keys() == []


def test_open_machine_given_a_bound_machine_keeps_the_callers_binding(
    tmp_path: Path, keyring: gp.KeyRing
) -> None:
    with open_place(sqlite_place(tmp_path), keyring) as store:
        in_process_extension(store, tmp_path, RENAMER_SOURCE, "Renamer")
        bindings: list[gp.BoundMachine] = []

        def build() -> Any:
            bindings.append(store.extensions.bind(ring(start=False), "renamer"))
            return bindings[-1]

        with store.open_machine(KEY, build, journal=True, snapshot_every=10) as opened:
            assert opened.machine is bindings[0].machine
            assert opened.process_event(Event("advance"))  # the caller's renamer ran
            assert opened.process_event(Event("go"))  # and fanned out: two entries
        assert bindings[0].process_event(Event("advance"))  # still bound after detach
        with store.open_machine(KEY, build, journal=True, snapshot_every=10) as again:
            assert captured(again.machine) == captured(ring_after(3))
        assert [e.event.name for e in store.journal(KEY)] == ["next", "next", "next"]


def test_recover_after_the_key_was_deleted_says_what_to_do(
    tmp_path: Path, keyring: gp.KeyRing
) -> None:
    with open_place(sqlite_place(tmp_path), keyring) as store:
        machine = ring()
        attached = store.attach(machine, KEY, journal=True)
        assert attached.process_event(Event("next"))
        store.delete(KEY)
        with pytest.raises(gp.VersionConflict, match=r"attached\.recover\(\)"):
            attached.process_event(Event("next"))
        assert captured(machine) == captured(ring_after(1))
        with pytest.raises(gp.NotFound, match=r"open_machine|attach"):
            attached.recover()


def test_open_machine_with_a_starting_build_opens_a_key_without_a_snapshot(
    tmp_path: Path, keyring: gp.KeyRing
) -> None:
    with open_place(sqlite_place(tmp_path), keyring) as store:
        with store.open_machine("fresh", ring, journal=True) as first:  # build() starts it
            assert first.process_event(Event("next"))
        with store.open_machine("fresh", ring, journal=True) as again:
            assert captured(again.machine) == captured(ring_after(1))
        machine = ring()
        attached = store.attach(machine, KEY, journal=True, snapshot_every=10)
        for _ in range(2):
            assert attached.process_event(Event("next"))
        for ref in store.versions(KEY):  # as if the first snapshot never landed
            store.delete(KEY, version=ref.version)
        with store.open_machine(KEY, ring, journal=True) as opened:
            assert captured(opened.machine) == captured(machine)


# Replay reproduces the original or refuses.


def _flaky_source(flag: Path) -> str:
    """A state behavior that records each entered state, and fails while ``flag`` exists."""
    return f'''
"""A test behavior that fails while a flag file exists."""

from pathlib import Path
from typing import ClassVar

FLAG = Path({str(flag)!r})


class Flaky:
    name = "flaky"
    version = "1.0.0"
    category = "state_behavior"
    states: ClassVar[frozenset[str]] = frozenset()

    def on_enter(self, view):
        if FLAG.exists():
            raise ValueError("flaky refuses")
        return {{"seen": view.state}}

    def on_exit(self, view):
        return None
'''


def test_a_behavior_failing_during_replay_never_recovers_silently(
    tmp_path: Path, keyring: gp.KeyRing
) -> None:
    flag = tmp_path / "flaky.flag"
    with open_place(sqlite_place(tmp_path), keyring) as store:
        in_process_extension(store, tmp_path, _flaky_source(flag), "Flaky")
        machine = ring()
        attached = store.attach(
            machine, KEY, journal=True, snapshot_every=10, extensions=("flaky",)
        )
        for _ in range(3):  # a snapshot after entry 1; entries 2 and 3 replay
            assert attached.process_event(Event("next"))
        assert state_data_copy(machine, machine.current_state) == {"seen": "s-0-2"}
        flag.touch()  # from now on the behavior fails
        try:
            opened = store.open_machine(
                KEY, lambda: ring(start=False), journal=True, extensions=("flaky",)
            )
        except gp.PersistError:
            return  # refusing is right: the replay could not run what the original ran
        assert captured(opened.machine) == captured(machine)


# Looking back: the state in force at a moment, never later.


def test_restore_at_never_holds_an_entry_stamped_after_the_moment(
    tmp_path: Path, keyring: gp.KeyRing
) -> None:
    where, clock = sqlite_place(tmp_path), ScriptedClock()
    backend = open_backend(where.url)
    with gp.Store(backend, keyring=keyring, namespace=NAMESPACE, clock=clock) as store:
        attached = store.attach(ring(), KEY, journal=True, snapshot_every=2)
        # readings per event: the entry's time, its write, then a due snapshot's write
        clock.script = [at(100), at(100), at(101)]  # entry 1, snapshot 1 (covers 1)
        assert attached.process_event(Event("next"))
        clock.script = [at(102), at(102)]  # entry 2
        assert attached.process_event(Event("next"))
        clock.script = [at(50), at(50), at(51)]  # the clock steps back: entry 3, snapshot 2
        assert attached.process_event(Event("next"))
        stamps = [(e.seq, e.at) for e in store.journal(KEY)]
        assert stamps == [(1, at(100)), (2, at(102)), (3, at(50))]
        restored = ring(start=False)
        store.restore_machine(KEY, restored, at=at(101.5))
        # in force at 101.5: snapshot 1 and nothing after it (entry 2 is stamped 102)
        assert captured(restored) == captured(ring_after(1))


def test_prune_oldest_keeps_the_journal_after_the_newest_snapshot_and_at_works(
    tmp_path: Path, keyring: gp.KeyRing
) -> None:
    where, clock = sqlite_place(tmp_path), ScriptedClock()
    backend = open_backend(where.url)
    quota = gp.Quota(max_versions_per_key=2, retention="prune-oldest")
    with gp.Store(backend, keyring=keyring, namespace=NAMESPACE, clock=clock) as store:
        store.set_quota(quota)
        machine = ring()
        attached = store.attach(machine, KEY, journal=True, snapshot_every=3)
        for step in range(1, 11):  # snapshots after 1, 4, 7 and 10; 7 and 10 are kept
            clock.script = [at(10 * step)] * 3
            assert attached.process_event(Event("next"))
        kept = store.versions(KEY)
        covers = [store.load(KEY, version=ref.version).journal_seq for ref in kept]
        assert covers == [7, 10]
        entries = store.journal(KEY)
        seqs = [e.seq for e in entries]
        # retention may drop entries a kept snapshot covers, never the ones after it
        assert seqs == list(range(seqs[0], 11)) and seqs[0] <= 8
        for before, after in itertools.pairwise(entries):
            assert after.source == before.target
        for step in range(7, 11):
            restored = ring(start=False)
            store.restore_machine(KEY, restored, at=at(10 * step + 5))
            assert captured(restored) == captured(ring_after(step)), step
        fresh = ring(start=False)
        before = captured(fresh)
        with pytest.raises(gp.NotFound, match="no snapshot at or before"):
            store.restore_machine(KEY, fresh, at=at(65))  # before the oldest kept snapshot
        assert captured(fresh) == before
        assert store.recover(KEY, fresh) == gp.Head(kept[-1].version, 10)
        assert captured(fresh) == captured(machine)


# Submachines: the innermost states, and a replay through them.


def test_events_inside_a_submachine_are_journaled_and_replayed(
    tmp_path: Path, keyring: gp.KeyRing
) -> None:
    with open_place(sqlite_place(tmp_path), keyring) as store:
        machine = build_composite_machine()
        machine.start()
        attached = store.attach(machine, KEY, journal=True, snapshot_every=10)
        for name in ("go", "next", "next", "approve"):
            assert attached.process_event(Event(name))
        assert not attached.process_event(Event("approve"))  # approved: nothing to take
        entries = store.journal(KEY)
        assert [(e.source, e.target) for e in entries] == [
            ("idle", "step-a"),
            ("step-a", "step-b"),
            ("step-b", "draft"),  # into the submachine: its initial state
            ("draft", "approved"),  # inside the submachine only
        ]
        check_journal_chain(entries)
        entered: list[str] = []
        fresh = build_composite_machine(entered)
        assert store.recover(KEY, fresh) == gp.Head(1, 4)
        assert captured(fresh) == captured(machine)


# Quotas of journal-first keys.


def test_max_keys_counts_keys_that_only_have_a_journal(
    tmp_path: Path, keyring: gp.KeyRing, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="gotstate_persist.runtime")
    quota = gp.Quota(max_keys=1, max_blob_bytes=1500)
    with open_place(sqlite_place(tmp_path), keyring, quota=quota) as store:
        machines = {}
        for key in ("a", "b", "c"):
            machine = order()
            set_data(machine, "idle", "blob", "b" * 3000)  # no snapshot of it fits
            machines[key] = machine
            attached = store.attach(machine, key, journal=True, snapshot_every=5)
            try:
                assert attached.process_event(Event("start"))
            except gp.QuotaExceeded as exc:
                assert "max_keys" in str(exc)
                assert state_name(machine) == "idle"
        assert store.keys() == ["a"]


# Rewriting stored records while an attachment writes.


class ParcelV1(msgspec.Struct, frozen=True):
    id: str


class ParcelV2(msgspec.Struct, frozen=True):
    id: str
    grams: int


def _parcels(*, upgraded: bool) -> gp.FormatRegistry:
    formats = gp.FormatRegistry()
    formats.register(ParcelV1, kind="parcel", version=1)
    if upgraded:
        formats.register(ParcelV2, kind="parcel", version=2, upcast=lambda old: {**old, "grams": 0})
    return formats


def test_migrate_racing_an_attachment_rewrites_every_entry_it_embeds(
    tmp_path: Path, keyring: gp.KeyRing
) -> None:
    where = sqlite_place(tmp_path)
    with (
        open_place(where, keyring, formats=_parcels(upgraded=False)) as old,
        old.attach(ring(), KEY, journal=True, snapshot_every=10) as attached,
    ):
        for n in range(3):
            assert attached.process_event(Event("next"), meta={"parcel": ParcelV1(f"p{n}")})
    with open_place(where, keyring, formats=_parcels(upgraded=True)) as store:
        opened = store.open_machine(KEY, lambda: ring(start=False), journal=True)
        written: list[int] = []

        def progress(done: int, total: int) -> None:
            if not written:  # an event commits while the migration is under way
                assert opened.process_event(Event("next"), meta={"parcel": ParcelV2("p3", 5)})
                written.append(done)

        report = store.migrate("parcel", batch_size=1, progress=progress)
        assert written and report.failed == []
        entries = store.journal(KEY)
        assert [e.meta["parcel"] for e in entries] == [
            ParcelV2("p0", 0),
            ParcelV2("p1", 0),
            ParcelV2("p2", 0),
            ParcelV2("p3", 5),
        ]
        assert store.migrate("parcel").embedding_migrated == 0  # nothing older is left
        fresh = ring(start=False)
        store.recover(KEY, fresh)
        assert captured(fresh) == captured(opened.machine) == captured(ring_after(4))
    newest_only = gp.FormatRegistry()
    newest_only.register(ParcelV2, kind="parcel", version=2)
    with open_place(where, keyring, formats=newest_only) as store:  # no upcaster needed now
        assert [e.seq for e in store.journal(KEY)] == [1, 2, 3, 4]
