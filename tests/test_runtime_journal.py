"""The journal of an attached machine: entries, keys, delete, usage and quotas (runtime.md).

Each accepted event is one sealed entry with the exact-type event metadata
and caller's meta, the innermost states before and after, an aware time
and the snapshot in force; sequence numbers never repeat, not even after a
delete. Journals count toward bytes and records, never toward keys or
per-key versions, and retention never touches them.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from _places import Place
from _runtime_helpers import (
    DROPPER_SOURCE,
    FAILER_SOURCE,
    ORDER_PATH,
    RENAMER_SOURCE,
    SQL,
    SQLITE,
    captured,
    check_journal_chain,
    in_process_extension,
    journal_key,
    open_place,
    order,
    place,
    ring,
    ring_after,
    runtime_warnings,
    snapshot_seqs,
    sqlite_place,
    state_name,
    unstarted_ring,
)
from gotstate.core.events import Event

import gotstate_persist as gp

__all__ = ["place"]

KEY = "order-7"
AUDIT = f"{Path(__file__).parent / 'ext_samples' / 'audit.py'}:Audit"

EXACT: dict[str, Any] = {
    "amount": Decimal("12.50"),
    "pair": (1, "two"),
    "when": datetime(2024, 5, 1, 12, 30, tzinfo=timezone(timedelta(hours=2))),
    "naive": datetime(2024, 5, 1, 12, 30),
    "day": date(2024, 5, 1),
    "raw": b"\x00\xff",
    "tags": frozenset({"a", "b"}),
    "ids": {uuid.UUID(int=7)},
    "flag": True,
    "count": 1,
    "ratio": 0.5,
    "nested": {1: [("x", None)], "k": {"deep": Decimal("1E+3")}},
}


def _types(value: Any) -> Any:
    """``value`` with every leaf replaced by its exact type (to compare types, not only ==)."""
    if isinstance(value, dict):
        return {k: _types(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return (type(value), [_types(v) for v in value])
    if isinstance(value, set | frozenset):
        return (type(value), sorted(map(repr, value)))
    return (type(value), value)


def test_entry_fields(place: Place, keyring: gp.KeyRing) -> None:
    with open_place(place, keyring) as store:
        attached = store.attach(order(), KEY, journal=True, snapshot_every=2)
        first = Event("start", priority=3)
        first.metadata.update(EXACT)
        t0 = datetime.now(UTC)
        assert attached.process_event(first, meta={"actor": "api", "request_id": "r-17", **EXACT})
        assert attached.process_event(Event("checkout"))
        assert attached.process_event(Event("pay"), meta={"actor": "worker"})
        t1 = datetime.now(UTC)
        entries = store.journal(KEY)
        assert all(type(e) is gp.JournalEntry for e in entries)
        one, two, three = entries
        assert (one.seq, one.source, one.target, one.snapshot_version) == (1, "idle", "cart", 0)
        assert type(one.event) is gp.EventView
        assert (one.event.name, one.event.priority) == ("start", 3)
        assert one.event.metadata == EXACT
        assert _types(one.event.metadata) == _types(EXACT)
        assert one.meta == {"actor": "api", "request_id": "r-17", **EXACT}
        assert _types(one.meta) == _types({"actor": "api", "request_id": "r-17", **EXACT})
        assert (two.seq, two.source, two.target, two.snapshot_version) == (2, "cart", "payment", 1)
        assert (two.event.name, two.event.priority, two.event.metadata, two.meta) == (
            "checkout",
            0,
            {},
            {},
        )
        # a composite's exit and entry: the innermost states
        assert (three.source, three.target, three.snapshot_version) == ("payment", "picking", 1)
        assert three.meta == {"actor": "worker"}
        for entry in entries:
            assert entry.at.tzinfo is not None and entry.at.utcoffset() == timedelta(0)
            assert t0 <= entry.at <= t1
        assert [e.at for e in entries] == sorted(e.at for e in entries)
        assert store.journal(KEY, since=1) == [two, three]
        assert store.journal(KEY, since=3) == []
        assert store.journal("no-such-key") == []


def test_event_metadata_as_the_machine_received_it(tmp_path: Path, keyring: gp.KeyRing) -> None:
    """The machine sees the same values the journal keeps (a copy, never the caller's dict)."""
    seen: list[dict[str, Any]] = []
    with open_place(sqlite_place(tmp_path), keyring) as store:
        machine = order()
        from gotstate.core.transitions import Transition

        idle = next(s for s in machine.get_states() if s.name == "idle")
        cancelled = next(s for s in machine.get_states() if s.name == "cancelled")

        def guard(event: Event) -> bool:
            seen.append(dict(event.metadata))
            return bool(event.name == "abort")

        machine.add_transition(Transition(idle, cancelled, guards=[guard]))
        attached = store.attach(machine, KEY, journal=True)
        event = Event("abort")
        event.metadata["amount"] = Decimal("3")
        assert attached.process_event(event)
        [entry] = store.journal(KEY)
        assert seen[-1] == entry.event.metadata == {"amount": Decimal("3")}
        assert entry.target == "cancelled"


@pytest.mark.parametrize("since", [-1, 1.5, "0", True])
def test_journal_refuses_a_bad_since(tmp_path: Path, keyring: gp.KeyRing, since: Any) -> None:
    with open_place(sqlite_place(tmp_path), keyring) as store:
        with pytest.raises(gp.InvalidArgument):
            store.journal(KEY, since=since)
        with pytest.raises(gp.InvalidArgument):
            store.journal("\x1fgotstate/journal/x")


@SQLITE
def test_entries_are_sealed_records_of_their_own_kind(place: Place, keyring: gp.KeyRing) -> None:
    with open_place(place, keyring) as store:
        with store.attach(order(), KEY, journal=True) as attached:
            assert attached.process_event(Event("start"))
        infos = store.backend.versions(store.namespace, journal_key(KEY))
        assert [(i.version, i.kind, i.format_version) for i in infos] == [
            (1, "gotstate.journal", 1)
        ]
        _info, blob = store.backend.get(store.namespace, journal_key(KEY), 1)
        assert blob[:4] == b"GSPB"  # sealed like any record
        assert b"cart" not in blob and b"idle" not in blob  # encrypted, not just signed


# Keys, delete, usage.


def _journal_only(store: gp.Store, key: str, events: int = 3) -> None:
    """A key whose snapshots were deleted: only its journal is left."""
    with store.attach(ring(), key, journal=True, snapshot_every=100) as attached:
        for _ in range(events):
            assert attached.process_event(Event("next"))
    for ref in store.versions(key):
        store.delete(key, version=ref.version)


def test_keys_list_journal_only_keys(place: Place, keyring: gp.KeyRing) -> None:
    with open_place(place, keyring) as store:
        _journal_only(store, "j-only")
        store.save_machine("s-only", ring())
        with store.attach(ring(), "both", journal=True) as attached:
            assert attached.process_event(Event("next"))
        assert store.versions("j-only") == []
        assert store.keys() == ["both", "j-only", "s-only"]
        assert store.keys(prefix="j-") == ["j-only"]
        assert store.keys(prefix="b") == ["both"]
        assert store.keys(prefix="x") == []
        # the journal's system key itself is never listed
        assert not [k for k in store.keys() if k.startswith("\x1f")]
        # keys of every allowed form keep their own journals, listed by prefix
        odd = ["a/b", "../x", "ab", "Ünï", "ünï", "a%2Fb"]
        for key in odd:
            _journal_only(store, key, events=1)
        assert store.keys() == sorted(["both", "j-only", "s-only", *odd])
        assert store.keys(prefix="a/") == ["a/b"]
        assert store.keys(prefix="a") == ["a%2Fb", "a/b", "ab"]
        assert [e.target for e in store.journal("a/b")] == ["s-0-0"]
        assert store.journal("a") == []


def test_delete_removes_snapshots_and_journal_and_never_reuses_numbers(
    place: Place, keyring: gp.KeyRing
) -> None:
    with open_place(place, keyring) as store:
        machine = ring()
        stale = store.attach(machine, KEY, journal=True, snapshot_every=2)
        for _ in range(5):  # entries 1..5, snapshots after 1, 3, 5
            assert stale.process_event(Event("next"))
        assert store.delete(KEY) == 3 + 5
        assert store.keys() == [] and store.versions(KEY) == [] and store.journal(KEY) == []
        assert store.usage(recount=True).records == 0
        with pytest.raises(gp.NotFound):
            store.delete(KEY)
        # the attachment from before the delete may not write over it
        with pytest.raises(gp.VersionConflict):
            stale.process_event(Event("next"))
        fresh = ring()
        with store.attach(fresh, KEY, journal=True) as attached:
            assert attached.process_event(Event("next"))
            assert attached.process_event(Event("next"))
        entries = store.journal(KEY)
        assert [e.seq for e in entries] == [6, 7]
        assert [ref.version for ref in store.versions(KEY)] == [4, 5]
        assert snapshot_seqs(store, KEY) == [6, 7]
        recovered = ring(start=False)
        assert store.recover(KEY, recovered) == gp.Head(5, 7)
        assert captured(recovered) == captured(fresh) == captured(ring_after(2))


@SQLITE
def test_delete_of_a_journal_only_key(place: Place, keyring: gp.KeyRing) -> None:
    with open_place(place, keyring) as store:
        _journal_only(store, KEY, events=4)
        assert store.delete(KEY) == 4
        assert store.keys() == [] and store.journal(KEY) == []


def test_usage_counts_journal_bytes_and_records_not_keys(place: Place, keyring: gp.KeyRing) -> None:
    with open_place(place, keyring) as store:
        with store.attach(ring(), KEY, journal=True, snapshot_every=3) as attached:
            for _ in range(5):
                assert attached.process_event(Event("next"))
        snapshots = store.backend.versions(store.namespace, KEY)
        entries = store.backend.versions(store.namespace, journal_key(KEY))
        assert len(snapshots) == 3 and len(entries) == 5  # after 1, 4 and the detach
        expected = (
            sum(i.size for i in snapshots) + sum(i.size for i in entries),
            len(snapshots) + len(entries),
            1,
        )
        kept, counted = store.usage(), store.usage(recount=True)
        assert (kept.bytes, kept.records, kept.keys) == expected
        assert (counted.bytes, counted.records, counted.keys, counted.drift) == (*expected, None)
        _journal_only(store, "j-only", events=2)
        usage = store.usage()
        assert usage.keys == 1  # a journal-only key has no snapshot: not a key for the quota
        assert usage.records == expected[1] + 2


# Quotas: journals count toward bytes and records, never per-key versions.


@SQL
def test_max_versions_per_key_reject_leaves_the_journal_alone(
    place: Place, keyring: gp.KeyRing, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="gotstate_persist.runtime")
    with open_place(place, keyring, quota=gp.Quota(max_versions_per_key=2)) as store:
        machine = ring()
        attached = store.attach(machine, KEY, journal=True, snapshot_every=5)
        for _ in range(20):
            assert attached.process_event(Event("next"))  # never refused: the journal commits
        assert [e.seq for e in store.journal(KEY)] == list(range(1, 21))
        assert snapshot_seqs(store, KEY) == [1, 6]  # the third snapshot (after 11) is refused
        # refused after 11, then retried after each of 12..20: all logged
        warnings = runtime_warnings(caplog)
        assert len(warnings) == 10
        assert all("max_versions_per_key" in r.getMessage() for r in warnings)
        with pytest.raises(gp.QuotaExceeded):
            attached.detach()  # the flush is refused too, and the error says so
        with pytest.raises(gp.InvalidArgument, match="detached"):
            attached.process_event(Event("next"))
        fresh = ring(start=False)
        assert store.recover(KEY, fresh) == gp.Head(2, 20)
        assert captured(fresh) == captured(machine) == captured(ring_after(20))


@SQL
def test_max_versions_per_key_prune_oldest_keeps_the_newest_snapshots(
    place: Place, keyring: gp.KeyRing
) -> None:
    quota = gp.Quota(max_versions_per_key=2, retention="prune-oldest")
    with open_place(place, keyring, quota=quota) as store:
        machine = ring()
        with store.attach(machine, KEY, journal=True, snapshot_every=5) as attached:
            for _ in range(20):
                assert attached.process_event(Event("next"))
        # snapshots after 1, 6, 11, 16 and the detach's after 20: the newest two are kept
        assert [ref.version for ref in store.versions(KEY)] == [4, 5]
        assert snapshot_seqs(store, KEY) == [16, 20]
        entries = store.journal(KEY)
        assert [e.seq for e in entries] == list(range(1, 21))
        check_journal_chain(entries)
        fresh = ring(start=False)
        assert store.recover(KEY, fresh) == gp.Head(5, 20)
        assert captured(fresh) == captured(machine)


def test_max_records_counts_journal_entries(tmp_path: Path, keyring: gp.KeyRing) -> None:
    where = sqlite_place(tmp_path)
    with open_place(where, keyring, quota=gp.Quota(max_records=4)) as store:
        machine = ring()
        attached = store.attach(machine, KEY, journal=True, snapshot_every=10)
        assert attached.process_event(Event("next"))  # entry 1 + snapshot 1
        assert attached.process_event(Event("next"))  # entry 2
        assert attached.process_event(Event("next"))  # entry 3
        stored = where.snapshot()
        with pytest.raises(gp.QuotaExceeded, match="max_records=4"):
            attached.process_event(Event("next"))
        assert where.snapshot() == stored
        assert captured(machine) == captured(ring_after(3))


def test_max_keys_binds_journaled_keys(tmp_path: Path, keyring: gp.KeyRing) -> None:
    where = sqlite_place(tmp_path)
    with open_place(where, keyring, quota=gp.Quota(max_keys=1)) as store:
        with store.attach(order(), "first", journal=True) as attached:
            assert attached.process_event(Event("start"))
        machine = order()
        attached = store.attach(machine, "second", journal=True)
        stored = where.snapshot()
        with pytest.raises(gp.QuotaExceeded, match="max_keys"):
            attached.process_event(Event("start"))
        assert state_name(machine) == "idle"
        assert where.snapshot() == stored
        assert store.keys() == ["first"]


@SQLITE
def test_order_path_through_the_journal(place: Place, keyring: gp.KeyRing) -> None:
    """The whole order workflow journaled: sources and targets chain, and the end replays."""
    with open_place(place, keyring) as store:
        machine = order()
        with store.attach(machine, KEY, journal=True, snapshot_every=4) as attached:
            for event in ORDER_PATH:
                assert attached.process_event(Event(event), meta={"step": event})
        entries = store.journal(KEY)
        check_journal_chain(entries)
        assert [e.event.name for e in entries] == list(ORDER_PATH)
        assert [e.meta["step"] for e in entries] == list(ORDER_PATH)
        assert entries[0].source == "idle" and entries[-1].target == "delivered"


# Bound extensions: the journal holds what the machine received.


_EXTENSIONS = {
    "renamer": (RENAMER_SOURCE, "Renamer"),
    "dropper": (DROPPER_SOURCE, "Dropper"),
    "failer": (FAILER_SOURCE, "Failer"),
}


def _with_extensions(tmp_path: Path, keyring: gp.KeyRing, *names: str) -> gp.Store:
    """A SQLite store with the named in-process extensions registered and active."""
    store = open_place(sqlite_place(tmp_path), keyring)
    for name in names:
        if name == "audit":
            store.extensions.register(AUDIT, isolation="in-process")
            store.extensions.activate("audit")
        else:
            in_process_extension(store, tmp_path, *_EXTENSIONS[name])
    return store


def test_the_journal_holds_the_processed_events(tmp_path: Path, keyring: gp.KeyRing) -> None:
    store = _with_extensions(tmp_path, keyring, "renamer", "dropper")
    with store.open_machine(
        KEY, unstarted_ring, journal=True, snapshot_every=10, extensions=("renamer",)
    ) as attached:
        assert attached.process_event(Event("advance"), meta={"actor": "api"})
        assert attached.process_event(Event("go"))  # fanned out: two entries
        assert captured(attached.machine) == captured(ring_after(3))
        done = captured(attached.machine)
        entries = store.journal(KEY)
        assert [(e.event.name, e.event.metadata) for e in entries] == [
            ("next", {"renamed": True}),
            ("next", {}),
            ("next", {}),
        ]
        assert [e.meta for e in entries] == [{"actor": "api"}, {}, {}]
        check_journal_chain(entries)
        assert attached.head == gp.Head(1, 3)
    for ref in store.versions(KEY)[1:]:  # keep the first snapshot only: the rest replays
        store.delete(KEY, version=ref.version)
    # replay bypasses processors: a processor that drops "next" cannot stop it
    with store.open_machine(
        KEY, unstarted_ring, journal=True, snapshot_every=10, extensions=("dropper",)
    ) as reopened:
        assert captured(reopened.machine) == done
        assert not reopened.process_event(Event("next"))  # live events do go through it
    assert len(store.journal(KEY)) == 3
    store.close()


@pytest.mark.parametrize("journal", [False, True], ids=["snapshots", "journal"])
def test_a_failing_behavior_raises_after_the_commit(
    tmp_path: Path, keyring: gp.KeyRing, journal: bool
) -> None:
    store = _with_extensions(tmp_path, keyring, "failer")
    machine = order()
    attached = store.attach(machine, KEY, journal=journal, extensions=("failer",))
    assert attached.process_event(Event("start"))
    with pytest.raises(gp.ExtensionFailed, match="failer") as caught:
        attached.process_event(Event("checkout"))
    assert isinstance(caught.value, gp.PersistError)
    assert state_name(machine) == "payment"  # the transition stays, and is committed
    fresh = order(start=False)
    store.recover(KEY, fresh)
    assert state_name(fresh) == "payment"
    if journal:
        assert [e.target for e in store.journal(KEY)] == ["cart", "payment"]
        assert attached.head.journal_seq == 2
    else:
        assert attached.head == gp.Head(2, 0)
    assert attached.process_event(Event("pay"))  # and the attachment goes on
    attached.detach()
    store.close()


def test_detach_unbinds_what_it_bound_only(tmp_path: Path, keyring: gp.KeyRing) -> None:
    store = _with_extensions(tmp_path, keyring, "audit")
    from gotstate_persist.machine import state_data_copy

    machine = ring()
    with store.attach(machine, KEY, extensions=("audit",)) as attached:
        assert attached.process_event(Event("next"))
        assert state_data_copy(machine, machine.current_state)["entered"] == 1
    machine.process_event(Event("next"))  # bare: audit is no longer bound
    assert "entered" not in state_data_copy(machine, machine.current_state)
    other = ring()
    bound = store.extensions.bind(other, "audit")
    with store.attach(bound, "other") as attached:
        assert attached.process_event(Event("next"))
    assert bound.process_event(Event("next"))  # the caller's binding stays bound
    assert state_data_copy(other, other.current_state)["entered"] == 1
    store.close()


def test_behaviors_of_an_attached_machine_see_its_key(tmp_path: Path, keyring: gp.KeyRing) -> None:
    from gotstate_persist.machine import state_data_copy

    machine = ring()
    with (
        _with_extensions(tmp_path, keyring, "audit") as store,
        store.attach(machine, KEY, journal=True, extensions=("audit",)) as attached,
    ):
        assert attached.process_event(Event("next"))
    assert state_data_copy(machine, machine.current_state)["key"] == KEY


def test_reseal_covers_journal_entries(tmp_path: Path, keyring: gp.KeyRing) -> None:
    with open_place(sqlite_place(tmp_path), keyring) as store:
        machine = ring()
        attached = store.attach(machine, KEY, journal=True, snapshot_every=3)
        for _ in range(5):  # snapshots after 1 and 4; entry 5 replays
            assert attached.process_event(Event("next"))
        old = keyring.primary_id
        keyring.rotate()
        report = store.reseal()
        assert (report.scanned, report.migrated, report.failed) == (7, 7, [])
        keyring.retire(old)  # the old key is gone: every entry must open under the new one
        assert [e.seq for e in store.journal(KEY)] == [1, 2, 3, 4, 5]
        fresh = ring(start=False)
        assert store.recover(KEY, fresh) == gp.Head(2, 5)
        assert captured(fresh) == captured(machine)
        assert attached.process_event(Event("next"))  # the attachment writes on


def test_a_fanned_out_event_commits_all_or_nothing(tmp_path: Path, keyring: gp.KeyRing) -> None:
    with _with_extensions(tmp_path, keyring, "renamer") as store:
        machine = ring()
        attached = store.attach(
            machine, KEY, journal=True, snapshot_every=10, extensions=("renamer",)
        )
        assert attached.process_event(Event("next"))
        store.set_quota(gp.Quota(max_records=store.usage().records + 1))  # room for one entry
        before = captured(machine)
        with pytest.raises(gp.QuotaExceeded):
            attached.process_event(Event("go"))  # two "next" events
        assert [e.seq for e in store.journal(KEY)] == [1]
        assert captured(machine) == before


def test_recover_without_the_behaviors_never_diverges_silently(
    tmp_path: Path, keyring: gp.KeyRing
) -> None:
    with _with_extensions(tmp_path, keyring, "audit") as store:
        machine = ring()
        attached = store.attach(
            machine, KEY, journal=True, snapshot_every=10, extensions=("audit",)
        )
        for _ in range(3):  # snapshot after 1; entries 2 and 3 replay
            assert attached.process_event(Event("next"))
        bare = ring(start=False)
        with contextlib.suppress(gp.PersistError):  # refusing is a correct answer too
            store.recover(KEY, bare)
            assert captured(bare) == captured(machine)
            return
        assert captured(bare) == captured(ring(start=False))


def test_a_fan_out_cut_short_on_files_keeps_exactly_what_landed(
    tmp_path: Path, keyring: gp.KeyRing
) -> None:
    """Object stores have no transactions: the entries that landed stay, and so does memory."""
    root = tmp_path / "objects"
    store = open_place(Place("file", f"file://{root}"), keyring)
    in_process_extension(store, tmp_path, *_EXTENSIONS["renamer"])
    with store:
        machine = ring()
        attached = store.attach(
            machine, KEY, journal=True, snapshot_every=10, extensions=("renamer",)
        )
        assert attached.process_event(Event("next"))
        store.set_quota(gp.Quota(max_records=store.usage().records + 1))  # room for one entry
        with pytest.raises(gp.QuotaExceeded, match="first 1 of the 2 events"):
            attached.process_event(Event("go"))  # two "next" events; the second is refused
        assert [e.seq for e in store.journal(KEY)] == [1, 2]
        assert captured(machine) == captured(ring_after(2))  # memory holds what storage holds
        assert attached.head == gp.Head(1, 2)
        store.set_quota(None)
        assert attached.process_event(Event("next"))  # and the attachment writes on
        fresh = ring(start=False)
        store.recover(KEY, fresh)
        assert captured(fresh) == captured(machine) == captured(ring_after(3))
