"""Recovery and looking back: ``store.recover``, ``open_machine``, ``restore_machine(at=)``.

Recovery is the newest snapshot plus a checked replay of the journal after
it (or the whole journal from a fresh start when no snapshot exists); it
never trusts what it reads: a changed machine is ``ReplayDiverged``, a
damaged or moved entry is ``IntegrityError``, and on any error the machine
is left exactly as it was given. ``restore_machine(at=)`` is the same walk
stopped at a moment.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from _places import Place
from _runtime_helpers import (
    NAMESPACE,
    ORDER_PATH,
    ORDER_TARGETS,
    SQL,
    SQL_KINDS,
    SQLITE,
    StepClock,
    build_order_variant,
    captured,
    journal_key,
    open_place,
    order,
    order_after,
    place,
    ring,
    ring_after,
    runtime_warnings,
    snapshot_seqs,
    sqlite_place,
    state_name,
)
from gotstate.core.events import Event
from order_workflow import get_data, set_data

import gotstate_persist as gp
from gotstate_persist.backends import open_backend
from gotstate_persist.backends.base import Replacement

__all__ = ["place"]

KEY = "order-9"


def _journal(store: gp.Store, key: str, events: int, *, every: int = 4) -> Any:
    """Journal the first ``events`` steps of the order path; the machine that did it.

    Never detached (as after a crash), so the entries after the last periodic
    snapshot stay to be replayed.
    """
    machine = order()
    attached = store.attach(machine, key, journal=True, snapshot_every=every)
    for name in ORDER_PATH[:events]:
        assert attached.process_event(Event(name), meta={"step": name})
    return machine


def _drop_snapshots(store: gp.Store, key: str) -> None:
    for ref in store.versions(key):
        store.delete(key, version=ref.version)


# Recover: the newest snapshot plus the journal after it.


def test_recover_applies_the_snapshot_and_replays_the_rest(
    place: Place, keyring: gp.KeyRing
) -> None:
    with open_place(place, keyring) as store:
        machine = ring()
        attached = store.attach(machine, KEY, journal=True, snapshot_every=4)
        for _ in range(7):  # snapshots after 1 and 5; entries 6 and 7 after them
            assert attached.process_event(Event("next"))
        assert snapshot_seqs(store, KEY) == [1, 5]
        entered: list[str] = []
        fresh = ring(entered, start=False)
        assert store.recover(KEY, fresh) == gp.Head(2, 7)
        assert captured(fresh) == captured(machine) == captured(ring_after(7))
        assert entered  # the two entries after the snapshot replayed: their actions ran
        # into a started machine somewhere else: the same result
        elsewhere = ring_after(3)
        assert store.recover(KEY, elsewhere) == gp.Head(2, 7)
        assert captured(elsewhere) == captured(machine)


@SQLITE
def test_recover_of_snapshots_alone(place: Place, keyring: gp.KeyRing) -> None:
    with open_place(place, keyring) as store:
        machine = order()
        with store.attach(machine, KEY) as attached:
            for name in ORDER_PATH[:3]:
                assert attached.process_event(Event(name))
        entered: list[str] = []
        fresh = order(entered, start=False)
        assert store.recover(KEY, fresh) == gp.Head(3, 0)
        assert captured(fresh) == captured(machine)
        assert entered == []  # a snapshot alone: nothing replayed, no action ran


@SQL
def test_recover_a_journal_without_snapshot_replays_it_all(
    place: Place, keyring: gp.KeyRing
) -> None:
    with open_place(place, keyring) as store:
        machine = _journal(store, KEY, 4, every=10)
        _drop_snapshots(store, KEY)
        assert store.versions(KEY) == [] and store.keys() == [KEY]
        entered: list[str] = []
        fresh = order(entered, start=False)
        assert store.recover(KEY, fresh) == gp.Head(0, 4)
        assert captured(fresh) == captured(machine)
        # started, then every entry replayed through the machine (actions run)
        assert entered == ["idle", "checkout", "cart", "payment", "fulfilment", "picking", "packed"]
        # into a started machine it cannot replay from the start
        started = order_after(1)
        before = captured(started)
        with pytest.raises(gp.InvalidArgument, match="never started") as caught:
            store.recover(KEY, started)
        assert repr(KEY) in str(caught.value)
        assert captured(started) == before


class _BigOnCart(list[str]):
    """``entered`` whose entry into cart writes big state data (replay writes it again)."""

    machine: Any = None

    def append(self, name: str) -> None:
        super().append(name)
        if name == "cart" and self.machine is not None:
            set_data(self.machine, "idle", "blob", "b" * 3000)


def _big_order(start: bool = True) -> Any:
    entered = _BigOnCart()
    machine = order(entered, start=False)
    entered.machine = machine
    if start:
        machine.start()
    return machine


@SQLITE
def test_recover_after_a_failed_first_snapshot(
    place: Place, keyring: gp.KeyRing, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="gotstate_persist.runtime")
    with open_place(place, keyring, quota=gp.Quota(max_blob_bytes=1500)) as store:
        machine = _big_order()
        attached = store.attach(machine, KEY, journal=True, snapshot_every=5)
        assert attached.process_event(Event("start"))  # the entry lands, the snapshot cannot
        assert attached.process_event(Event("checkout"))
        assert len(runtime_warnings(caplog)) == 2 and store.versions(KEY) == []
        assert store.keys() == [KEY]
        fresh = _big_order(start=False)
        assert store.recover(KEY, fresh) == gp.Head(0, 2)
        assert captured(fresh) == captured(machine)
        assert get_data(fresh, "idle")["blob"] == "b" * 3000
        # an attachment cannot catch up in place without a snapshot; open_machine can
        with pytest.raises(gp.InvalidArgument, match="open_machine") as caught:
            attached.recover()
        assert repr(KEY) in str(caught.value)
        with store.open_machine(KEY, lambda: _big_order(start=False), journal=True) as opened:
            assert captured(opened.machine) == captured(machine)


def test_recover_of_a_missing_key_or_a_journal_with_its_start_gone(
    tmp_path: Path, keyring: gp.KeyRing
) -> None:
    with open_place(sqlite_place(tmp_path), keyring) as store:
        fresh = order(start=False)
        with pytest.raises(gp.NotFound, match="no snapshot or journal entry"):
            store.recover(KEY, fresh)
        _journal(store, KEY, 3, every=10)
        _drop_snapshots(store, KEY)
        store.backend.delete(NAMESPACE, journal_key(KEY), [1])
        before = captured(fresh)
        with pytest.raises(gp.NotFound, match="journal starts at sequence 2"):
            store.recover(KEY, fresh)
        assert captured(fresh) == before


# Replay is checked.


@pytest.mark.parametrize(
    ("place", "variant", "seq", "how"),
    [
        *[(kind, {"pack_to": "shipped"}, 4, "reached 'shipped'") for kind in SQL_KINDS],
        ("sqlite", {"pack_to": "packed", "rename": {"pay": "settle"}}, 3, "was refused"),
    ],
    indirect=["place"],
)
def test_a_changed_machine_is_replay_diverged(
    place: Place, keyring: gp.KeyRing, variant: dict[str, Any], seq: int, how: str
) -> None:
    with open_place(place, keyring) as store:
        _journal(store, KEY, 5, every=10)  # snapshot after 1; entries 2..5 replay
        started = build_order_variant(**variant)
        started.start()
        for given in (started, build_order_variant(**variant)):
            before = captured(given)
            with pytest.raises(gp.ReplayDiverged) as caught:
                store.recover(KEY, given)
            assert caught.value.seq == seq
            assert f"journal entry {seq}" in str(caught.value) and how in str(caught.value)
            assert captured(given) == before
        stored = store.backend.versions(NAMESPACE, journal_key(KEY))
        with pytest.raises(gp.ReplayDiverged):
            store.open_machine(KEY, lambda: build_order_variant(**variant), journal=True)
        assert store.backend.versions(NAMESPACE, journal_key(KEY)) == stored


def test_replay_diverged_on_a_journal_only_key_leaves_an_unstarted_machine(
    tmp_path: Path, keyring: gp.KeyRing
) -> None:
    with open_place(sqlite_place(tmp_path), keyring) as store:
        _journal(store, KEY, 4, every=10)
        _drop_snapshots(store, KEY)
        given = build_order_variant(pack_to="cancelled")
        before = captured(given)
        with pytest.raises(gp.ReplayDiverged) as caught:
            store.recover(KEY, given)
        assert caught.value.seq == 4
        assert captured(given) == before
        given.start()  # still usable as never started
        assert state_name(given) == "idle"


def test_attached_recover_after_a_conflict_is_checked_too(
    tmp_path: Path, keyring: gp.KeyRing
) -> None:
    with open_place(sqlite_place(tmp_path), keyring) as store:
        store.save_machine(KEY, order())
        variant = build_order_variant(pack_to="shipped")
        variant.start()
        loser = store.attach(variant, KEY, journal=True, snapshot_every=10)
        winner = store.attach(order(), KEY, journal=True, snapshot_every=10)
        for name in ORDER_PATH[:4]:
            assert winner.process_event(Event(name))
        with pytest.raises(gp.VersionConflict):
            loser.process_event(Event("start"))
        before = captured(variant)
        with pytest.raises(gp.ReplayDiverged):
            loser.recover()
        assert captured(variant) == before
        assert loser.head == gp.Head(1, 0)  # unchanged: it did not catch up


# Damaged and moved entries.


def _flip_last_byte(blob: bytes) -> bytes:
    return blob[:-1] + bytes([blob[-1] ^ 1])


def test_a_tampered_entry_is_an_integrity_error(place: Place, keyring: gp.KeyRing) -> None:
    with open_place(place, keyring) as store:
        _journal(store, KEY, 4, every=10)
        jkey = journal_key(KEY)
        info, blob = store.backend.get(NAMESPACE, jkey, 3)
        assert store.backend.replace(
            NAMESPACE,
            [Replacement(jkey, 3, _flip_last_byte(blob), info.format_version, expected=blob)],
        ) == [True]
        with pytest.raises(gp.IntegrityError):
            store.journal(KEY)
        assert [e.seq for e in store.journal(KEY, since=3)] == [4]
        for given in (order(start=False), order_after(5)):
            before = captured(given)
            with pytest.raises(gp.IntegrityError):
                store.recover(KEY, given)
            assert captured(given) == before
        with pytest.raises(gp.IntegrityError):
            store.open_machine(KEY, order, journal=True)


@SQL
def test_an_entry_copied_to_another_key_is_an_integrity_error(
    place: Place, keyring: gp.KeyRing
) -> None:
    with open_place(place, keyring) as store:
        _journal(store, KEY, 2, every=10)
        info, blob = store.backend.get(NAMESPACE, journal_key(KEY), 1)
        store.backend.put(
            NAMESPACE,
            journal_key("other"),
            1,
            blob,
            kind=info.kind,
            format_version=info.format_version,
            created_at_us=info.created_at_us,
        )
        assert store.keys() == [KEY, "other"]
        with pytest.raises(gp.IntegrityError):
            store.journal("other")
        fresh = order(start=False)
        before = captured(fresh)
        with pytest.raises(gp.IntegrityError):
            store.recover("other", fresh)
        assert captured(fresh) == before
        # and an entry moved to another sequence of its own journal
        info2, _blob2 = store.backend.get(NAMESPACE, journal_key(KEY), 2)
        store.backend.put(
            NAMESPACE,
            journal_key(KEY),
            3,
            blob,  # entry 1's blob as entry 3
            kind=info2.kind,
            format_version=info2.format_version,
            created_at_us=info2.created_at_us,
        )
        with pytest.raises(gp.IntegrityError):
            store.journal(KEY)
        with pytest.raises(gp.IntegrityError):
            store.recover(KEY, order(start=False))


def test_a_snapshot_record_in_the_journal_is_a_format_error(
    tmp_path: Path, keyring: gp.KeyRing
) -> None:
    with open_place(sqlite_place(tmp_path), keyring) as store:
        # a machine snapshot sealed for the journal's key and sequence 1
        from gotstate_persist import machine as adapter

        pipeline = store._pipeline
        snapshot = adapter.capture(order(), struct_kind=store.formats.kind_of, max_depth=64)
        pipeline.append(journal_key(KEY), snapshot)
        with pytest.raises(gp.FormatError, match=r"gotstate\.journal") as caught:
            store.journal(KEY)
        assert "verify" in str(caught.value)


# Looking back: restore_machine(at=).


@pytest.fixture
def clocked(place: Place, keyring: gp.KeyRing) -> Iterator[gp.Store]:
    backend = open_backend(place.url, **place.options)
    with gp.Store(backend, keyring=keyring, namespace=NAMESPACE, clock=StepClock()) as store:
        yield store


def _moments(store: gp.Store, key: str) -> tuple[list[datetime], list[tuple[datetime, int]]]:
    entries = [e.at for e in store.journal(key)]
    snapshots = [
        (ref.created_at, store.load(key, version=ref.version).journal_seq)
        for ref in store.versions(key)
    ]
    return entries, snapshots


def _restored_at(store: gp.Store, moment: datetime) -> Any:
    machine = order(start=False)
    store.restore_machine(KEY, machine, at=moment)
    return machine


def test_restore_at_a_moment(clocked: gp.Store) -> None:
    store = clocked
    _journal(store, KEY, 6, every=3)  # snapshots after 1 and 4; entries 5 and 6 after them
    entries, snapshots = _moments(store, KEY)
    assert [seq for _at, seq in snapshots] == [1, 4]
    assert entries == sorted(entries) and len(set(entries)) == 6
    first_snapshot = snapshots[0][0]
    second = timedelta(seconds=1)
    # before the first snapshot there is nothing to start from
    for moment in (entries[0] - second, entries[0], first_snapshot - second):
        fresh = order(start=False)
        before = captured(fresh)
        with pytest.raises(gp.NotFound, match="no snapshot at or before that moment"):
            store.restore_machine(KEY, fresh, at=moment)
        assert captured(fresh) == before
    # the snapshot in force, plus the entries up to the moment
    assert captured(_restored_at(store, first_snapshot)) == captured(order_after(1))
    for step in range(2, 7):
        at = entries[step - 1]
        assert captured(_restored_at(store, at)) == captured(order_after(step)), step
        assert captured(_restored_at(store, at - second / 2)) == captured(order_after(step - 1))
    for created_at, seq in snapshots:
        machine = order(start=False)
        ref = store.restore_machine(KEY, machine, at=created_at)
        assert ref.created_at == created_at
        assert captured(machine) == captured(order_after(seq))
    later = _restored_at(store, snapshots[-1][0] + timedelta(days=365))
    assert state_name(later) == ORDER_TARGETS[5]
    # a moment in another time zone is the same moment
    elsewhere = entries[2].astimezone(timezone(timedelta(hours=-5)))
    assert captured(_restored_at(store, elsewhere)) == captured(order_after(3))


@SQLITE
def test_restore_at_of_snapshots_alone(clocked: gp.Store) -> None:
    store = clocked
    machine = order()
    with store.attach(machine, KEY) as attached:
        for name in ORDER_PATH[:3]:
            assert attached.process_event(Event(name))
    refs = store.versions(KEY)
    for step, ref in enumerate(refs, 1):
        restored = order(start=False)
        got = store.restore_machine(KEY, restored, at=ref.created_at + timedelta(milliseconds=1))
        assert got.version == ref.version
        assert captured(restored) == captured(order_after(step))


BAD_AT: list[tuple[dict[str, Any], str]] = [
    ({"at": datetime(2030, 1, 1)}, "aware datetime"),
    ({"at": "2030-01-01T00:00:00Z"}, "at must be a datetime"),
    ({"at": datetime(2030, 1, 1, tzinfo=UTC).date()}, "at must be a datetime"),
    ({"at": datetime(2030, 1, 1, tzinfo=UTC), "version": 1}, "not both"),
]


@pytest.mark.parametrize(("kwargs", "message"), BAD_AT)
def test_restore_at_refuses_bad_arguments(
    tmp_path: Path, keyring: gp.KeyRing, kwargs: dict[str, Any], message: str
) -> None:
    with open_place(sqlite_place(tmp_path), keyring) as store:
        _journal(store, KEY, 2)
        fresh = order_after(1)
        before = captured(fresh)
        with pytest.raises(gp.InvalidArgument, match=message):
            store.restore_machine(KEY, fresh, **kwargs)
        assert captured(fresh) == before


def test_restore_at_of_a_missing_key_is_not_found(tmp_path: Path, keyring: gp.KeyRing) -> None:
    with open_place(sqlite_place(tmp_path), keyring) as store, pytest.raises(gp.NotFound):
        store.restore_machine(KEY, order(), at=datetime.now(UTC))


# open_machine: restore-or-start.


@SQL
def test_open_machine_starts_a_new_key_and_recovers_an_existing_one(
    place: Place, keyring: gp.KeyRing
) -> None:
    with open_place(place, keyring) as store:
        built: list[list[str]] = []

        def build() -> Any:
            built.append([])
            return order(built[-1], start=False)

        with store.open_machine(KEY, build, journal=True, snapshot_every=3) as attached:
            assert built == [["idle"]]  # started, nothing else ran
            assert attached.head == gp.Head(0, 0)
            for name in ORDER_PATH[:4]:
                assert attached.process_event(Event(name))
            done = captured(attached.machine)
        assert snapshot_seqs(store, KEY) == [1, 4]
        with store.open_machine(KEY, build, journal=True, snapshot_every=3) as again:
            assert again.head == gp.Head(2, 4)
            assert captured(again.machine) == done
            assert built[-1] == []  # the snapshot covers all: nothing replayed
            assert again.process_event(Event("ship"))
        # a key without a journal opens in snapshot mode
        with store.open_machine("plain", build) as plain:
            assert plain.process_event(Event("start"))
        with store.open_machine("plain", build) as plain:
            assert state_name(plain.machine) == "cart" and plain.head == gp.Head(1, 0)


def test_open_machine_given_a_started_machine(tmp_path: Path, keyring: gp.KeyRing) -> None:
    with open_place(sqlite_place(tmp_path), keyring) as store:
        with store.open_machine(KEY, order) as attached:  # build() already started: fine
            assert attached.process_event(Event("start"))
        with store.open_machine(KEY, order) as again:
            assert state_name(again.machine) == "cart"


def test_open_machine_replays_a_journal_only_key(tmp_path: Path, keyring: gp.KeyRing) -> None:
    with open_place(sqlite_place(tmp_path), keyring) as store:
        machine = _journal(store, KEY, 3, every=10)
        _drop_snapshots(store, KEY)
        entered: list[str] = []
        with store.open_machine(
            KEY, lambda: order(entered, start=False), journal=True, snapshot_every=10
        ) as opened:
            assert captured(opened.machine) == captured(machine)
            assert entered[:2] == ["idle", "checkout"]
            assert opened.head == gp.Head(0, 3)
            assert opened.process_event(Event("pack"))  # entry 4, and the key's first snapshot
        assert [e.seq for e in store.journal(KEY)] == [1, 2, 3, 4]
        assert snapshot_seqs(store, KEY)[0] == 4


def _raises(error: type[BaseException]) -> Callable[[], Any]:
    def build() -> Any:
        raise error("build failed")

    return build


def test_open_machine_lets_a_failing_build_through(tmp_path: Path, keyring: gp.KeyRing) -> None:
    with open_place(sqlite_place(tmp_path), keyring) as store:
        with pytest.raises(RuntimeError, match="build failed"):
            store.open_machine(KEY, _raises(RuntimeError))
        with pytest.raises(gp.InvalidArgument):
            store.open_machine(KEY, lambda: "not a machine")
        assert store.usage().records == 0


# What else can happen to a journaled key.


def test_save_machine_on_a_journaled_key_keeps_it_recoverable(
    tmp_path: Path, keyring: gp.KeyRing
) -> None:
    with open_place(sqlite_place(tmp_path), keyring) as store:
        machine = _journal(store, KEY, 3, every=2)
        with contextlib.suppress(gp.InvalidArgument):  # refusing it is a correct answer too
            store.save_machine(KEY, machine)
        fresh = order(start=False)
        store.recover(KEY, fresh)
        assert captured(fresh) == captured(machine)


def test_a_missing_entry_is_never_replayed_over(tmp_path: Path, keyring: gp.KeyRing) -> None:
    with open_place(sqlite_place(tmp_path), keyring) as store:
        machine = order()
        attached = store.attach(machine, KEY, journal=True, snapshot_every=10)
        for name in ("start", "checkout", "cancel"):
            assert attached.process_event(Event(name))
        store.backend.delete(NAMESPACE, journal_key(KEY), [2])
        fresh = order(start=False)
        before = captured(fresh)
        with pytest.raises((gp.IntegrityError, gp.FormatError, gp.NotFound, gp.ReplayDiverged)):
            store.recover(KEY, fresh)
        assert captured(fresh) == before


def test_an_entry_replayed_from_another_state_is_replay_diverged(
    tmp_path: Path, keyring: gp.KeyRing
) -> None:
    """A snapshot not written from the journal (a forked key) is caught at the entry's source.

    "cancel" leads to "cancelled" from the cart and from the payment step
    alike, so only the source tells that entry 2 did not start here.
    """
    import msgspec

    from gotstate_persist import machine as adapter

    with open_place(sqlite_place(tmp_path), keyring) as store:
        attached = store.attach(order(), KEY, journal=True, snapshot_every=100)
        assert attached.process_event(Event("start"))  # entry 1 (cart), snapshot covers 1
        assert attached.process_event(Event("cancel"))  # entry 2: cart -> cancelled
        pipeline = store.pipeline
        forged = adapter.capture(
            order_after(2),  # at "payment", claiming to cover entry 1 only
            struct_kind=pipeline.formats.kind_of,
            max_depth=pipeline.limits.max_depth,
            snapshot_type=pipeline.snapshot_type(),
        )
        pipeline.append(KEY, msgspec.structs.replace(forged, journal_seq=1), depth_checked=True)
        fresh = order(start=False)
        before = captured(fresh)
        with pytest.raises(gp.ReplayDiverged, match="started in 'cart'") as caught:
            store.recover(KEY, fresh)
        assert caught.value.seq == 2
        assert captured(fresh) == before
