"""Hostile review of the commit protocol of an attached machine (runtime.md).

Each test drives one interleaving, interruption or failing dependency into
``Attached.process_event`` and checks the one promise that matters: memory
and storage never disagree, and one writer per key wins. Interleavings are
made with real components only: a store's clock that runs another writer
(or raises ``KeyboardInterrupt``) at a chosen reading. Tests marked
``xfail(strict=True)`` are bugs found by this review; the reason names the
code and the expected behaviour, so unmarking one is the proof of its fix.
The machine's side of the protocol is in ``test_runtime_review_machine``.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from _places import Place
from _runtime_helpers import (
    NAMESPACE,
    RENAMER_SOURCE,
    captured,
    check_journal_chain,
    in_process_extension,
    open_place,
    ring,
    ring_after,
    snapshot_seqs,
    sqlite_place,
)
from gotstate.core.events import Event

import gotstate_persist as gp
from gotstate_persist.backends import open_backend

KEY = "review-1"
#: Store clock readings of one journaled commit with snapshot_every=1:
#: the entry's time, the entry's write, the periodic snapshot's write.
ENTRY_TIME, ENTRY_WRITE, SNAPSHOT_WRITE = 1, 2, 3
#: A snapshot-only commit reads the clock once: its snapshot's write.
SNAPSHOT_ONLY_WRITE = 1


class HookClock:
    """A store's clock that runs ``hook`` at its ``n``-th reading once armed.

    The hook may write through another store (another writer moving in
    exactly there) or raise (an interruption exactly there).
    """

    def __init__(self) -> None:
        self._countdown = 0
        self._hook: Callable[[], None] | None = None

    def arm(self, n: int, hook: Callable[[], None]) -> None:
        self._countdown, self._hook = n, hook

    def __call__(self) -> datetime:
        if self._countdown:
            self._countdown -= 1
            if not self._countdown and self._hook is not None:
                hook, self._hook = self._hook, None
                hook()
        return datetime.now(UTC)


def clocked(place: Place, keyring: gp.KeyRing, clock: HookClock) -> gp.Store:
    backend = open_backend(place.url, **place.options)
    return gp.Store(backend, keyring=keyring, namespace=NAMESPACE, clock=clock)


def interrupt() -> None:
    raise KeyboardInterrupt


# Interruptions: whose write landed?


def test_an_interrupted_append_never_adopts_another_writers_entry(
    tmp_path: Path, keyring: gp.KeyRing
) -> None:
    where, clock = sqlite_place(tmp_path), HookClock()
    with clocked(where, keyring, clock) as store, open_place(where, keyring) as other_store:
        machine = ring()
        attached = store.attach(machine, KEY, journal=True, snapshot_every=100)
        assert attached.process_event(Event("next"))  # entry 1 and the key's first snapshot
        other = other_store.attach(ring_after(1), KEY, journal=True, snapshot_every=100)

        def other_wins_then_interrupt() -> None:
            assert other.process_event(Event("home"))  # entry 2 is the other writer's
            raise KeyboardInterrupt

        clock.arm(ENTRY_WRITE, other_wins_then_interrupt)
        with pytest.raises(KeyboardInterrupt):
            attached.process_event(Event("next"))  # its entry never reaches storage
        assert captured(machine) == captured(ring_after(1))  # so the event is undone
        assert attached.head == gp.Head(1, 1)
        with pytest.raises(gp.VersionConflict):
            attached.process_event(Event("next"))
        check_journal_chain(store.journal(KEY))


def test_an_interrupted_snapshot_never_adopts_another_writers_snapshot(
    tmp_path: Path, keyring: gp.KeyRing
) -> None:
    where, clock = sqlite_place(tmp_path), HookClock()
    with clocked(where, keyring, clock) as store, open_place(where, keyring) as other_store:
        machine = ring()
        store.save_machine(KEY, machine)
        attached = store.attach(machine, KEY)

        def other_saves_then_interrupt() -> None:
            other_store.save_machine(KEY, ring_after(5))
            raise KeyboardInterrupt

        clock.arm(SNAPSHOT_ONLY_WRITE, other_saves_then_interrupt)
        with pytest.raises(KeyboardInterrupt):
            attached.process_event(Event("next"))
        stored = ring(start=False)
        store.restore_machine(KEY, stored)
        assert captured(stored) == captured(ring_after(5))
        assert captured(machine) == captured(ring_after(0))  # its snapshot never landed
        with pytest.raises(gp.VersionConflict):
            attached.process_event(Event("next"))


def test_an_interruption_in_the_periodic_snapshot_keeps_the_committed_event(
    tmp_path: Path, keyring: gp.KeyRing
) -> None:
    where, clock = sqlite_place(tmp_path), HookClock()
    with clocked(where, keyring, clock) as store:
        machine = ring()
        attached = store.attach(machine, KEY, journal=True, snapshot_every=1)
        clock.arm(SNAPSHOT_WRITE, interrupt)
        with pytest.raises(KeyboardInterrupt):
            attached.process_event(Event("next"))
        # the append is the commit: the event stays, in memory and in the journal
        assert captured(machine) == captured(ring_after(1))
        assert attached.head == gp.Head(0, 1)
        assert [e.seq for e in store.journal(KEY)] == [1] and store.versions(KEY) == []
        assert attached.process_event(Event("next"))  # the snapshot is written now
        assert snapshot_seqs(store, KEY) == [2]
        fresh = ring(start=False)
        assert store.recover(KEY, fresh) == gp.Head(1, 2)
        assert captured(fresh) == captured(machine) == captured(ring_after(2))


def test_a_fan_out_cut_short_by_another_writer_keeps_what_landed(
    tmp_path: Path, keyring: gp.KeyRing
) -> None:
    """Files have no transactions: the first entry lands, the other writer takes the second."""
    where, clock = Place("file", f"file://{tmp_path / 'objects'}"), HookClock()
    with clocked(where, keyring, clock) as store, open_place(where, keyring) as other_store:
        in_process_extension(store, tmp_path, RENAMER_SOURCE, "Renamer")
        machine = ring()
        attached = store.attach(
            machine, KEY, journal=True, snapshot_every=100, extensions=("renamer",)
        )
        assert attached.process_event(Event("next"))  # entry 1 and the first snapshot

        def other_appends() -> None:
            other = other_store.attach(ring_after(2), KEY, journal=True, snapshot_every=100)
            assert other.process_event(Event("home"))  # entry 3 is the other writer's

        # "go" fans out into two "next": readings 1 (time), 2 (entry 2), 3 (entry 3)
        clock.arm(3, other_appends)
        with pytest.raises(gp.VersionConflict, match="first 1 of the 2 events"):
            attached.process_event(Event("go"))
        assert captured(machine) == captured(ring_after(2))  # what landed, no more
        assert attached.head == gp.Head(1, 2)
        # the other writer attached without knowing what its snapshot covers: it wrote one
        assert attached.recover() == gp.Head(2, 3)
        went_home = ring_after(2)
        assert went_home.process_event(Event("home"))
        assert captured(machine) == captured(went_home)  # the other writer's entry
        check_journal_chain(store.journal(KEY))


# Another writer between the check and the write.


def test_a_snapshot_only_commit_racing_a_journal_writer_conflicts(
    tmp_path: Path, keyring: gp.KeyRing
) -> None:
    where, clock = sqlite_place(tmp_path), HookClock()
    with clocked(where, keyring, clock) as store, open_place(where, keyring) as other_store:
        machine = ring()
        store.save_machine(KEY, machine)
        snapshots_only = store.attach(machine, KEY)
        journal_machine = ring()
        journaled = other_store.attach(journal_machine, KEY, journal=True, snapshot_every=100)

        def journal_writer_moves() -> None:
            assert journaled.process_event(Event("next"))

        clock.arm(SNAPSHOT_ONLY_WRITE, journal_writer_moves)
        with pytest.raises(gp.VersionConflict):
            snapshots_only.process_event(Event("next"))
        assert captured(machine) == captured(ring_after(0))
        fresh = ring(start=False)
        store.recover(KEY, fresh)
        assert captured(fresh) == captured(journal_machine)


def test_an_append_after_a_foreign_save_machine_keeps_the_key_recoverable(
    tmp_path: Path, keyring: gp.KeyRing
) -> None:
    with open_place(sqlite_place(tmp_path), keyring) as store:
        machine = ring()
        attached = store.attach(machine, KEY, journal=True, snapshot_every=100)
        assert attached.process_event(Event("next"))
        saved = True
        try:
            store.save_machine(KEY, ring_after(4))
        except (gp.InvalidArgument, gp.VersionConflict):
            saved = False
        try:
            committed = attached.process_event(Event("next"))
        except gp.VersionConflict:
            committed = False
        fresh = ring(start=False)
        store.recover(KEY, fresh)
        expected = machine if committed or not saved else ring_after(4)
        assert captured(fresh) == captured(expected)


# Journal numbering and per-key quotas.


def test_a_fan_out_after_delete_continues_the_numbering(
    tmp_path: Path, keyring: gp.KeyRing
) -> None:
    with open_place(sqlite_place(tmp_path), keyring) as store:
        in_process_extension(store, tmp_path, RENAMER_SOURCE, "Renamer")
        with store.attach(ring(), KEY, journal=True, snapshot_every=100) as first:
            for _ in range(3):
                assert first.process_event(Event("next"))
        store.delete(KEY)
        machine = ring()
        attached = store.attach(
            machine, KEY, journal=True, snapshot_every=100, extensions=("renamer",)
        )
        assert attached.process_event(Event("go"))  # two "next" in one commit
        assert [e.seq for e in store.journal(KEY)] == [4, 5]  # never reused
        fresh = ring(start=False)
        store.recover(KEY, fresh)
        assert captured(fresh) == captured(machine) == captured(ring_after(2))


@pytest.mark.parametrize("journal", [False, True], ids=["snapshots", "journal"])
def test_max_versions_per_key_rejecting_a_commit_undoes_it(
    tmp_path: Path, keyring: gp.KeyRing, journal: bool
) -> None:
    where = sqlite_place(tmp_path)
    with open_place(where, keyring, quota=gp.Quota(max_versions_per_key=2)) as store:
        machine = ring()
        attached = store.attach(machine, KEY, journal=journal)
        for _ in range(2):  # one snapshot each (journal: after each entry too)
            assert attached.process_event(Event("next"))
        if journal:  # the journal commits; the third snapshot is refused and logged
            assert attached.process_event(Event("next"))
            assert captured(machine) == captured(ring_after(3))
            assert [e.seq for e in store.journal(KEY)] == [1, 2, 3]
            return
        stored = where.snapshot()
        with pytest.raises(gp.QuotaExceeded, match="max_versions_per_key"):
            attached.process_event(Event("next"))
        assert captured(machine) == captured(ring_after(2))
        assert where.snapshot() == stored


# Rewriting underneath.


def test_reseal_between_an_append_and_its_snapshot(tmp_path: Path, keyring: gp.KeyRing) -> None:
    where, clock = sqlite_place(tmp_path), HookClock()
    with clocked(where, keyring, clock) as store, open_place(where, keyring) as other_store:
        machine = ring()
        attached = store.attach(machine, KEY, journal=True, snapshot_every=1)
        assert attached.process_event(Event("next"))
        old = keyring.primary_id
        keyring.rotate()
        reports: list[gp.MigrationReport] = []
        clock.arm(SNAPSHOT_WRITE, lambda: reports.append(other_store.reseal()))
        assert attached.process_event(Event("next"))
        [report] = reports
        # entry 1 and snapshot 1 were sealed under the old key; entry 2 under the new one
        assert (report.scanned, report.migrated, report.failed) == (3, 2, [])
        keyring.retire(old)  # every record opens under the new key alone
        check_journal_chain(store.journal(KEY))
        assert snapshot_seqs(store, KEY) == [1, 2]
        fresh = ring(start=False)
        assert store.recover(KEY, fresh) == gp.Head(2, 2)
        assert captured(fresh) == captured(machine) == captured(ring_after(2))
