"""One writer per key wins, across attachments, processes and crashes (runtime.md).

Two attachments on a key: the second's next commit is a ``VersionConflict``,
its machine is put back, and after ``attached.recover()`` it retries. Many
processes hammering a key leave a journal numbered 1..n without gaps whose
entries chain (each starts where the previous ended) and whose snapshots
sit on entry boundaries. A process that dies without detaching, cleanly or
by SIGKILL at any moment, leaves a key that recovers to its journal.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from _places import Place
from _runtime_helpers import (
    PLACES,
    SQL,
    SUBPROCESS_TIMEOUT_S,
    captured,
    check_journal_chain,
    open_place,
    order,
    place,
    ring,
    ring_after,
    run_worker,
    runtime_warnings,
    snapshot_seqs,
    sqlite_place,
    state_name,
)
from gotstate.core.events import Event

import gotstate_persist as gp

__all__ = ["place"]

KEY = "shared"
WORKERS = 4
EVENTS_PER_WORKER = 20
CRASH_EVENTS = 23
KILL_ROUNDS = 3
TURNS = 16


def _check_snapshots_on_boundaries(store: gp.Store, key: str, entries: list[Any]) -> None:
    """Each snapshot holds exactly the state after the entry it says it covers."""
    for ref in store.versions(key):
        seq = store.load(key, version=ref.version).journal_seq
        assert 0 <= seq <= len(entries)
        restored = ring(start=False)
        store.restore_machine(key, restored, version=ref.version)
        assert captured(restored) == captured(ring_after(seq)), (ref.version, seq)


# Two attachments in one process.


@pytest.mark.parametrize(
    ("place", "journal"),
    [("sqlite", False), *[(kind, True) for kind in PLACES]],
    indirect=["place"],
)
def test_two_attachments_take_turns_without_losing_an_event(
    place: Place, keyring: gp.KeyRing, journal: bool
) -> None:
    with open_place(place, keyring) as store:
        store.save_machine(KEY, ring())
        every = 2 if journal else 1
        first = store.attach(ring(), KEY, journal=journal, snapshot_every=every)
        second = store.attach(ring(), KEY, journal=journal, snapshot_every=every)
        rng = random.Random(15)
        committed = conflicts = 0
        for _ in range(TURNS):
            attached = rng.choice((first, second))
            before = captured(attached.machine)
            try:
                assert attached.process_event(Event("next"))
            except gp.VersionConflict as exc:
                assert "attached.recover()" in str(exc)
                assert captured(attached.machine) == before  # undone
                conflicts += 1
                attached.recover()
                assert captured(attached.machine) == captured(ring_after(committed))
                assert attached.process_event(Event("next"))  # the retry wins
            committed += 1
        assert conflicts > 0
        if journal:
            entries = store.journal(KEY)
            assert len(entries) == committed
            check_journal_chain(entries)
            _check_snapshots_on_boundaries(store, KEY, entries)
        else:
            assert len(store.versions(KEY)) == committed + 1
        fresh = ring(start=False)
        store.recover(KEY, fresh)
        assert captured(fresh) == captured(ring_after(committed))


@SQL
def test_the_loser_of_a_race_is_undone_and_retries(place: Place, keyring: gp.KeyRing) -> None:
    with open_place(place, keyring) as store:
        entered: list[str] = []
        slow_machine = order(entered)
        slow = store.attach(slow_machine, KEY, journal=True)
        fast = store.attach(order(), KEY, journal=True)
        assert fast.process_event(Event("start"), meta={"who": "fast"})
        stored = place.snapshot()
        before = captured(slow_machine)
        actions = list(entered)
        with pytest.raises(gp.VersionConflict, match=repr(KEY)):
            slow.process_event(Event("start"), meta={"who": "slow"})
        assert captured(slow_machine) == before
        assert entered == [*actions, "checkout", "cart"]  # the event's; none for the undo
        assert place.snapshot() == stored
        assert slow.recover() == gp.Head(1, 1)
        assert state_name(slow_machine) == "cart"
        assert slow.process_event(Event("checkout"), meta={"who": "slow"})
        entries = store.journal(KEY)
        check_journal_chain(entries)
        assert [(e.meta["who"], e.target) for e in entries] == [
            ("fast", "cart"),
            ("slow", "payment"),
        ]


def test_a_snapshot_mode_writer_on_a_journaled_key_never_loses_a_write(
    tmp_path: Path, keyring: gp.KeyRing
) -> None:
    with open_place(sqlite_place(tmp_path), keyring) as store:
        store.save_machine(KEY, order())
        plain = store.attach(order(), KEY)  # the key has no journal yet: allowed
        journaled_machine = order()
        journaled = store.attach(journaled_machine, KEY, journal=True)
        assert journaled.process_event(Event("start"))
        with pytest.raises(gp.VersionConflict):
            plain.process_event(Event("start"))
        try:
            plain.recover()
            assert plain.process_event(Event("cancel"))  # the newest write: cancelled
        except gp.InvalidArgument:
            return  # refusing to mix modes on a journaled key is a correct answer too
        with pytest.raises(gp.VersionConflict):
            journaled.process_event(Event("checkout"))
        assert state_name(journaled_machine) == "cart"
        fresh = order(start=False)
        store.recover(KEY, fresh)
        assert state_name(fresh) == "cancelled"


def test_open_machine_racing_a_writer_never_interleaves_the_journal(
    tmp_path: Path, keyring: gp.KeyRing
) -> None:
    with open_place(sqlite_place(tmp_path), keyring) as store:
        writer = store.attach(order(), KEY, journal=True, snapshot_every=10)
        assert writer.process_event(Event("start"))
        assert writer.process_event(Event("checkout"))

        class WriteDuringReplay(list[str]):
            """The other writer commits while this machine replays entry 2."""

            def append(self, name: str) -> None:
                super().append(name)
                if name == "payment" and writer.head.journal_seq == 2:
                    assert writer.process_event(Event("pay"))

        entered = WriteDuringReplay()
        opened = store.open_machine(
            KEY, lambda: order(entered, start=False), journal=True, snapshot_every=10
        )
        assert writer.head.journal_seq == 3  # the write really happened during the open
        try:
            opened.process_event(Event("pay"))
        except gp.VersionConflict:
            opened.recover()
        entries = store.journal(KEY)
        check_journal_chain(entries)
        fresh = order(start=False)
        store.recover(KEY, fresh)


# Many processes.


def test_processes_hammering_one_key_lose_and_interleave_nothing(
    tmp_path: Path, keyring: gp.KeyRing
) -> None:
    where = sqlite_place(tmp_path)
    with open_place(where, keyring) as store:
        store.save_machine(KEY, ring())  # so every loser can recover in place
    go = tmp_path / "go"
    workers = [
        run_worker(
            f"hammer({where.url!r}, {KEY!r}, {EVENTS_PER_WORKER}, {seed}, {str(go)!r})", keyring
        )
        for seed in range(WORKERS)
    ]
    try:
        for worker in workers:
            assert worker.stdout is not None
            assert worker.stdout.readline().strip() == "ready", worker.stderr
        go.touch()
        results = []
        for worker in workers:
            out, err = worker.communicate(timeout=SUBPROCESS_TIMEOUT_S)
            assert worker.returncode == 0, err
            done, conflicts = map(int, out.split())
            results.append((done, conflicts))
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
    total = sum(done for done, _ in results)
    assert total == WORKERS * EVENTS_PER_WORKER
    with open_place(where, keyring) as store:
        entries = store.journal(KEY)
        assert [e.seq for e in entries] == list(range(1, total + 1))
        check_journal_chain(entries)
        assert len({e.meta["pid"] for e in entries}) == WORKERS
        _check_snapshots_on_boundaries(store, KEY, entries)
        fresh = ring(start=False)
        head = store.recover(KEY, fresh)
        assert head.journal_seq == total
        assert captured(fresh) == captured(ring_after(total))
        assert state_name(fresh) == entries[-1].target


# Crashes.


def test_a_process_that_exits_without_detaching_recovers(
    tmp_path: Path, keyring: gp.KeyRing
) -> None:
    where = sqlite_place(tmp_path)
    with open_place(where, keyring):
        pass  # create the database before the child opens it
    child = run_worker(f"crash_after({where.url!r}, {KEY!r}, {CRASH_EVENTS})", keyring)
    out, err = child.communicate(timeout=SUBPROCESS_TIMEOUT_S)
    assert (child.returncode, out.strip()) == (0, "done"), err
    with open_place(where, keyring) as store:
        assert snapshot_seqs(store, KEY) == [1]  # after the first event only: no detach
        entries = store.journal(KEY)
        assert len(entries) == CRASH_EVENTS
        check_journal_chain(entries)
        fresh = ring(start=False)
        assert store.recover(KEY, fresh) == gp.Head(1, CRASH_EVENTS)
        assert captured(fresh) == captured(ring_after(CRASH_EVENTS))
        with store.open_machine(KEY, lambda: ring(start=False), journal=True) as reopened:
            assert captured(reopened.machine) == captured(fresh)
            assert reopened.process_event(Event("next"))
        assert [e.seq for e in store.journal(KEY)][-1] == CRASH_EVENTS + 1


def test_sigkill_at_any_moment_leaves_a_recoverable_key(
    tmp_path: Path, keyring: gp.KeyRing
) -> None:
    where = sqlite_place(tmp_path)
    with open_place(where, keyring):
        pass
    rng = random.Random(int.from_bytes(os.urandom(4), "big"))
    for _round in range(KILL_ROUNDS):
        child = run_worker(f"run_until_killed({where.url!r}, {KEY!r})", keyring)
        try:
            assert child.stdout is not None
            for _ in range(rng.randint(1, 25)):
                line = child.stdout.readline()
                assert line, child.stderr.read() if child.stderr else ""
            time.sleep(rng.uniform(0, 0.02))  # a random point of the next commit
            child.send_signal(signal.SIGKILL)
        finally:
            child.kill()
            child.wait(timeout=SUBPROCESS_TIMEOUT_S)
            child.stdout.close() if child.stdout else None
            child.stderr.close() if child.stderr else None
        assert child.returncode == -signal.SIGKILL
        with open_place(where, keyring) as store:
            entries = store.journal(KEY)
            check_journal_chain(entries)
            fresh = ring(start=False)
            head = store.recover(KEY, fresh)
            assert head.journal_seq == len(entries)
            assert state_name(fresh) == entries[-1].target
            assert captured(fresh) == captured(ring_after(len(entries)))
            _check_snapshots_on_boundaries(store, KEY, entries)


def test_a_periodic_snapshot_that_loses_its_race_is_written_after_the_next_event(
    tmp_path: Path, keyring: gp.KeyRing, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="gotstate_persist.runtime")
    with open_place(sqlite_place(tmp_path), keyring) as store:
        store.save_machine(KEY, ring())
        writer_machine = ring()
        writer = store.attach(writer_machine, KEY, journal=True, snapshot_every=2)
        other = store.attach(ring(), KEY, journal=True, snapshot_every=2)
        assert writer.process_event(Event("next"))  # entry 1, no snapshot due
        with pytest.raises(gp.VersionConflict):
            other.process_event(Event("next"))
        assert other.recover() == gp.Head(1, 1)
        assert other.snapshot() == gp.Head(2, 1)  # a snapshot the writer does not know of
        assert writer.process_event(Event("next"))  # entry 2; its snapshot loses the race
        [warning] = runtime_warnings(caplog)
        assert "after journal entry 2" in warning.getMessage()
        assert snapshot_seqs(store, KEY) == [0, 1]
        assert writer.process_event(Event("next"))  # entry 3; the retry lands
        assert snapshot_seqs(store, KEY) == [0, 1, 3]
        assert writer.head == gp.Head(3, 3)
        assert len(runtime_warnings(caplog)) == 1
        entries = store.journal(KEY)
        check_journal_chain(entries)
        _check_snapshots_on_boundaries(store, KEY, entries)
        fresh = ring(start=False)
        assert store.recover(KEY, fresh) == gp.Head(3, 3)
        assert captured(fresh) == captured(writer_machine) == captured(ring_after(3))


def test_threads_sharing_one_attachment_commit_one_event_at_a_time(
    tmp_path: Path, keyring: gp.KeyRing
) -> None:
    threads_count, per_thread = 4, 10
    with open_place(sqlite_place(tmp_path), keyring) as store:
        machine = ring()
        attached = store.attach(machine, KEY, journal=True, snapshot_every=3)
        errors: list[BaseException] = []

        def work() -> None:
            try:
                for _ in range(per_thread):
                    assert attached.process_event(Event("next"))
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=work) for _ in range(threads_count)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(SUBPROCESS_TIMEOUT_S)
        assert errors == []
        total = threads_count * per_thread
        entries = store.journal(KEY)
        assert len(entries) == total
        check_journal_chain(entries)
        _check_snapshots_on_boundaries(store, KEY, entries)
        assert captured(machine) == captured(ring_after(total))
