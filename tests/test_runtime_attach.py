"""``store.attach`` and the commit point of an attached machine (runtime.md).

Attach writes nothing and refuses what it cannot honour; every accepted
event is committed (the snapshot, or the journal append) and a refused one
writes nothing; a commit that fails puts the machine back exactly as it
was, without running an entry or exit action, writes nothing, and raises
the storage's error. Conformance-style cases run on SQLite, PostgreSQL and
S3; every "nothing was written" is a comparison of every stored byte.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from _places import Place
from _runtime_helpers import (
    CANARY,
    NAMESPACE,
    ORDER_PATH,
    ORDER_TARGETS,
    PLACES,
    SQL,
    SQL_KINDS,
    SQLITE,
    captured,
    check_journal_chain,
    open_place,
    order,
    order_after,
    place,
    runtime_warnings,
    snapshot_seqs,
    sqlite_place,
    state_name,
)
from gotstate.core.events import Event
from order_workflow import get_data, set_data

import gotstate_persist as gp
from gotstate_persist.backends import open_backend

__all__ = ["place"]  # the fixture, imported for pytest

KEY = "order-42"
JOURNAL_ROOM = 255 - len("\x1fgotstate/journal/")


class Recorder(list[str]):
    """``entered`` for build_order_machine that also changes state data on each entry.

    So an undone event has data to put back: the ``idle`` state's data
    counts entries and names the last state entered.
    """

    machine: Any = None

    def append(self, name: str) -> None:
        super().append(name)
        if self.machine is not None:
            data = get_data(self.machine, "idle")
            entries = data.get("entries", 0)
            assert isinstance(entries, int)
            set_data(self.machine, "idle", "entries", entries + 1)
            set_data(self.machine, "idle", "last", name)


def recorded_order() -> tuple[Any, Recorder]:
    entered = Recorder()
    machine = order(entered)
    entered.machine = machine
    set_data(machine, "idle", "entries", 0)
    return machine, entered


def data_dict(machine: Any, state: str) -> dict[str, Any]:
    """The machine's own data dict of ``state`` (not a copy)."""
    found = next(s for s in machine.get_states() if s.name == state)
    data: dict[str, Any] = machine._graph.get_state_data(found)
    return data


# Attach writes nothing and refuses what it cannot honour.


@pytest.mark.parametrize(
    ("place", "options"),
    [
        ("sqlite", {}),
        ("sqlite", {"journal": True}),
        *[(kind, {"journal": True, "snapshot_every": 5}) for kind in SQL_KINDS],
    ],
    indirect=["place"],
)
def test_attach_writes_nothing(place: Place, keyring: gp.KeyRing, options: dict[str, Any]) -> None:
    with open_place(place, keyring) as store:
        machine = order()
        store.save_machine(KEY, machine)
        empty_key_machine = order()
        before = place.snapshot()
        attached = store.attach(machine, KEY, **options)
        other = store.attach(empty_key_machine, "fresh", **options)
        assert attached.head == gp.Head(1, 0) and other.head == gp.Head(0, 0)
        assert attached.machine is machine and attached.key == KEY
        attached.detach()  # nothing processed: nothing to flush
        other.detach()
        with store.open_machine("also-fresh", order, **options) as opened:
            assert state_name(opened.machine) == "idle"
        assert place.snapshot() == before
        assert store.keys() == [KEY]


@SQLITE
def test_attach_refuses_an_unstarted_machine(place: Place, keyring: gp.KeyRing) -> None:
    with open_place(place, keyring) as store:
        before = place.snapshot()
        for journal in (False, True):
            with pytest.raises(gp.InvalidArgument, match="not started") as caught:
                store.attach(order(start=False), KEY, journal=journal)
            assert "open_machine" in str(caught.value)
        assert place.snapshot() == before


def test_snapshot_every_needs_a_journal(tmp_path: Path, keyring: gp.KeyRing) -> None:
    with open_place(sqlite_place(tmp_path), keyring) as store:
        calls: tuple[Callable[[], object], ...] = (
            lambda: store.attach(order(), KEY, snapshot_every=2),
            lambda: store.open_machine(KEY, order, snapshot_every=3),
        )
        for call in calls:
            with pytest.raises(gp.InvalidArgument, match=r"snapshot_every > 1 needs journal=True"):
                call()
        assert store.usage().records == 0


@SQLITE
def test_a_journaled_key_refuses_journal_false(place: Place, keyring: gp.KeyRing) -> None:
    with open_place(place, keyring) as store:
        machine = order()
        with store.attach(machine, KEY, journal=True) as attached:
            assert attached.process_event(Event("start"))
        before = place.snapshot()
        with pytest.raises(gp.InvalidArgument, match=r"keeps a journal.*journal=True"):
            store.attach(machine, KEY)
        with pytest.raises(gp.InvalidArgument, match=r"keeps a journal"):
            store.open_machine(KEY, order)
        assert place.snapshot() == before
        # a journal-only key (snapshots deleted) is still a journaled key
        store.delete(KEY, version=1)
        with pytest.raises(gp.InvalidArgument, match=r"keeps a journal"):
            store.attach(machine, KEY)


BAD_OPTIONS: list[tuple[dict[str, Any], str]] = [
    ({"snapshot_every": 0}, "snapshot_every must be an int >= 1"),
    ({"snapshot_every": -3}, "snapshot_every must be an int >= 1"),
    ({"snapshot_every": True, "journal": True}, "snapshot_every must be an int >= 1"),
    ({"snapshot_every": 2.0, "journal": True}, "snapshot_every must be an int >= 1"),
    ({"snapshot_every": "2", "journal": True}, "snapshot_every must be an int >= 1"),
    ({"journal": 1}, "journal must be True or False"),
    ({"journal": "yes"}, "journal must be True or False"),
    ({"journal": None}, "journal must be True or False"),
    ({"extensions": "throttle"}, "extensions must be a tuple of extension names"),
    ({"extensions": 5}, "extensions must be a tuple of extension names"),
    ({"extensions": ("throttle", 3)}, "extensions must be a tuple of extension names"),
]


@pytest.mark.parametrize(("options", "message"), BAD_OPTIONS)
def test_bad_options_are_refused(
    tmp_path: Path, keyring: gp.KeyRing, options: dict[str, Any], message: str
) -> None:
    with open_place(sqlite_place(tmp_path), keyring) as store:
        built: list[Any] = []

        def build() -> Any:
            built.append(order(start=False))
            return built[-1]

        with pytest.raises(gp.InvalidArgument, match=message):
            store.attach(order(), KEY, **options)
        with pytest.raises(gp.InvalidArgument, match=message):
            store.open_machine(KEY, build, **options)
        assert built == []  # refused before anything was built
        assert store.usage().records == 0


def test_not_a_machine_or_not_a_builder_is_refused(tmp_path: Path, keyring: gp.KeyRing) -> None:
    with open_place(sqlite_place(tmp_path), keyring) as store:
        with pytest.raises(gp.InvalidArgument):
            store.attach(object(), KEY)
        with pytest.raises(gp.InvalidArgument, match="build must be a callable"):
            store.open_machine(KEY, order())
        with pytest.raises(gp.InvalidArgument):
            store.attach(order(), "\x1fgotstate/journal/x")  # a system key
        assert store.usage().records == 0


def test_a_key_too_long_for_a_journal(tmp_path: Path, keyring: gp.KeyRing) -> None:
    longest = "k" * JOURNAL_ROOM
    too_long = "k" * (JOURNAL_ROOM + 1)
    with open_place(sqlite_place(tmp_path), keyring) as store:
        calls: tuple[Callable[[], object], ...] = (
            lambda: store.attach(order(), too_long, journal=True),
            lambda: store.open_machine(too_long, order, journal=True),
        )
        for call in calls:
            with pytest.raises(gp.InvalidArgument, match=f"at most {JOURNAL_ROOM} bytes"):
                call()
        assert store.usage().records == 0
        with store.attach(order(), longest, journal=True) as journaled:
            assert journaled.process_event(Event("start"))
        assert [e.target for e in store.journal(longest)] == ["cart"]
        assert store.journal(too_long) == []
        assert store.keys() == [longest]


def test_a_key_too_long_for_a_journal_attaches_without_one(
    tmp_path: Path, keyring: gp.KeyRing
) -> None:
    too_long = "k" * (JOURNAL_ROOM + 1)
    with open_place(sqlite_place(tmp_path), keyring) as store:
        with store.attach(order(), too_long) as plain:
            assert plain.process_event(Event("start"))
        with store.open_machine(too_long, order) as opened:
            assert state_name(opened.machine) == "cart"
            assert opened.process_event(Event("checkout"))
        assert [ref.version for ref in store.versions(too_long)] == [1, 2]
        assert store.keys() == [too_long]


def test_a_bound_machine_and_extensions_together_are_refused(
    tmp_path: Path, keyring: gp.KeyRing
) -> None:
    with open_place(sqlite_place(tmp_path), keyring) as store:
        bound = store.extensions.bind(order())
        with pytest.raises(gp.InvalidArgument, match="not both"):
            store.attach(bound, KEY, extensions=("throttle",))
        with store.attach(bound, KEY) as attached:  # a BoundMachine alone is fine
            assert attached.machine is bound.machine
            assert attached.process_event(Event("start"))
        assert state_name(bound.machine) == "cart"


# Snapshot mode: the commit is the snapshot.


@SQL
def test_snapshot_mode_writes_one_snapshot_per_accepted_event(
    place: Place, keyring: gp.KeyRing
) -> None:
    with open_place(place, keyring) as store:
        attached = store.attach(order(), KEY)
        before = place.snapshot()
        assert not attached.process_event(Event("no-such-event"))
        assert place.snapshot() == before  # a refused event writes nothing
        for step, event in enumerate(ORDER_PATH, 1):
            assert not attached.process_event(Event("no-such-event"))
            assert attached.process_event(Event(event), meta={"ignored": 1})
            assert attached.head == gp.Head(step, 0)
        assert [ref.version for ref in store.versions(KEY)] == list(range(1, len(ORDER_PATH) + 1))
        for step, target in enumerate(ORDER_TARGETS, 1):  # one snapshot per accepted event
            restored = order(start=False)
            store.restore_machine(KEY, restored, version=step)
            assert state_name(restored) == target
            assert captured(restored) == captured(order_after(step))
        refused = place.snapshot()
        assert not attached.process_event(Event("start"))  # delivered: nothing leaves it
        assert place.snapshot() == refused
        assert store.journal(KEY) == []
        assert snapshot_seqs(store, KEY) == [0] * len(ORDER_PATH)
        attached.detach()
        assert place.snapshot() == refused  # nothing left to flush


# Journal mode: the commit is the append.


@pytest.mark.parametrize(
    ("place", "every"), [("sqlite", 1), ("sqlite", 3), ("postgresql", 3)], indirect=["place"]
)
def test_journal_mode_cadence(place: Place, keyring: gp.KeyRing, every: int) -> None:
    events = 10
    with open_place(place, keyring) as store:
        from machines import build_ring_machine

        machine = build_ring_machine(13, groups=3)
        machine.start()
        attached = store.attach(machine, KEY, journal=True, snapshot_every=every)
        for seq in range(1, events + 1):
            if seq in (1, events):
                before = place.snapshot()
                assert not attached.process_event(Event("unknown"))
                assert place.snapshot() == before  # a refused event writes nothing
            assert attached.process_event(Event("next"))
            assert attached.head.journal_seq == seq
        entries = store.journal(KEY)
        check_journal_chain(entries)
        assert len(entries) == events
        expected = [1, *range(1 + every, events + 1, every)]
        assert snapshot_seqs(store, KEY) == expected
        # each entry names the newest snapshot when it was committed
        versions = {seq: version for version, seq in enumerate(expected, 1)}
        newest = 0
        for entry in entries:
            assert entry.snapshot_version == newest
            newest = versions.get(entry.seq, newest)
        # each snapshot holds exactly the state after the entries it covers
        for ref, seq in zip(store.versions(KEY), expected, strict=True):
            restored = build_ring_machine(13, groups=3)
            store.restore_machine(KEY, restored, version=ref.version)
            assert state_name(restored) == entries[seq - 1].target
        attached.detach()
        assert snapshot_seqs(store, KEY) == expected  # the last snapshot covers all: no flush


# The commit point: a failed commit puts the machine back exactly.


def _assert_undone(
    machine: Any, entered: Recorder, before: Any, idle_data: dict[str, Any], actions: list[str]
) -> None:
    """Back to ``before`` exactly, the same data dict, and no action ran for the undo."""
    assert captured(machine) == before
    assert data_dict(machine, "idle") is idle_data
    assert list(entered) == actions  # the event's own entry actions ran; the undo ran none


def _before(machine: Any, entered: Recorder) -> tuple[Any, dict[str, Any], list[str], Any]:
    idle = data_dict(machine, "idle")
    return captured(machine), idle, list(entered), dict(idle)


@pytest.mark.parametrize(
    ("place", "journal"),
    [("sqlite", False), ("postgresql", False), ("sqlite", True), ("postgresql", True)],
    indirect=["place"],
)
def test_version_conflict_undoes_the_event(
    place: Place, keyring: gp.KeyRing, journal: bool
) -> None:
    with open_place(place, keyring) as store:
        machine, entered = recorded_order()
        store.save_machine(KEY, machine)
        first = store.attach(machine, KEY, journal=journal)
        winner_machine = order()
        store.restore_machine(KEY, winner_machine)
        winner = store.attach(winner_machine, KEY, journal=journal)
        assert winner.process_event(Event("start"))
        stored = place.snapshot()
        before, idle_data, actions, idle_copy = _before(machine, entered)
        with pytest.raises(gp.VersionConflict) as caught:
            first.process_event(Event("start"), meta={"actor": "api"})
        message = str(caught.value)
        assert repr(KEY) in message and "attached.recover()" in message
        assert "undone" in message
        _assert_undone(machine, entered, before, idle_data, [*actions, "checkout", "cart"])
        assert idle_data == idle_copy
        assert place.snapshot() == stored
        # recover, then the same event is refused or retried on the winner's state
        assert first.recover() == winner.head
        assert state_name(machine) == "cart"
        assert first.process_event(Event("checkout"))
        with pytest.raises(gp.VersionConflict):
            winner.process_event(Event("checkout"))
        assert state_name(winner_machine) == "cart"


@pytest.mark.parametrize(
    ("place", "limit", "journal"),
    [
        *[(kind, "max_records", journal) for kind in SQL_KINDS for journal in (False, True)],
        *[
            ("sqlite", limit, journal)
            for limit in ("max_bytes", "max_blob_bytes")
            for journal in (False, True)
        ],
    ],
    indirect=["place"],
)
def test_quota_exceeded_undoes_the_event(
    place: Place, keyring: gp.KeyRing, journal: bool, limit: str
) -> None:
    with open_place(place, keyring) as store:
        machine, entered = recorded_order()
        store.save_machine(KEY, machine)
        attached = store.attach(machine, KEY, journal=journal)
        assert attached.process_event(Event("start"))
        usage = store.usage()
        quotas = {
            "max_records": gp.Quota(max_records=usage.records),
            "max_bytes": gp.Quota(max_bytes=usage.bytes),
            "max_blob_bytes": gp.Quota(max_blob_bytes=50),
        }
        store.set_quota(quotas[limit])
        stored = place.snapshot()
        before, idle_data, actions, idle_copy = _before(machine, entered)
        with pytest.raises(gp.QuotaExceeded, match="nothing was written"):
            attached.process_event(Event("checkout"))
        _assert_undone(machine, entered, before, idle_data, [*actions, "payment"])
        assert idle_data == idle_copy
        assert place.snapshot() == stored
        store.set_quota(None)
        assert attached.process_event(Event("checkout"))  # the head is unchanged: retry works
        assert state_name(machine) == "payment"


@pytest.mark.parametrize(
    ("place", "journal"),
    [("sqlite", False), *[(kind, True) for kind in PLACES]],
    indirect=["place"],
)
def test_a_failing_backend_undoes_the_event(
    place: Place, keyring: gp.KeyRing, journal: bool
) -> None:
    store = open_place(place, keyring)
    machine, entered = recorded_order()
    attached = store.attach(machine, KEY, journal=journal)
    assert attached.process_event(Event("start"))
    stored = place.snapshot()
    before, idle_data, actions, idle_copy = _before(machine, entered)
    store.backend.close()
    with pytest.raises(gp.BackendError) as caught:
        attached.process_event(Event("checkout"))
    assert isinstance(caught.value, gp.PersistError)
    _assert_undone(machine, entered, before, idle_data, [*actions, "payment"])
    assert idle_data == idle_copy
    assert place.snapshot() == stored
    with open_place(place, keyring) as again:
        fresh = order(start=False)
        again.recover(KEY, fresh) if journal else again.restore_machine(KEY, fresh)
        assert captured(fresh) == captured(machine)


@SQLITE
@pytest.mark.parametrize("where", ["meta", "metadata"])
def test_a_record_over_the_store_limits_undoes_the_event(
    place: Place, keyring: gp.KeyRing, where: str
) -> None:
    with open_place(place, keyring, limits=gp.Limits(max_blob_bytes=4096)) as store:
        machine, entered = recorded_order()
        attached = store.attach(machine, KEY, journal=True)
        assert attached.process_event(Event("start"))
        stored = place.snapshot()
        before, idle_data, actions, idle_copy = _before(machine, entered)
        big = {"blob": CANARY * 1000}
        event = Event("checkout")
        if where == "metadata":
            event.metadata.update(big)
        with pytest.raises(gp.FormatError, match="over the limit") as caught:
            attached.process_event(event, meta=big if where == "meta" else None)
        assert CANARY not in str(caught.value)
        _assert_undone(machine, entered, before, idle_data, [*actions, "payment"])
        assert idle_data == idle_copy
        assert place.snapshot() == stored


def _nested(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = [value]
    return value


BAD_META: list[tuple[Any, str]] = [
    ({"deep": _nested(70)}, "nested too deeply"),
    ({"obj": object()}, "cannot be journaled"),
    ({1: "int key"}, "keys must be str"),
    (["not", "a", "dict"], "must be a dict"),
    ({"secret": gp.Secret(CANARY)}, "cannot be journaled"),
]


@pytest.mark.parametrize("journal", [False, True], ids=["snapshots", "journal"])
@pytest.mark.parametrize(("meta", "message"), BAD_META, ids=lambda v: str(v)[:12])
def test_bad_meta_is_refused_before_the_machine_moves(
    tmp_path: Path, keyring: gp.KeyRing, journal: bool, meta: Any, message: str
) -> None:
    where = sqlite_place(tmp_path)
    with open_place(where, keyring) as store:
        machine, entered = recorded_order()
        attached = store.attach(machine, KEY, journal=journal)
        stored = where.snapshot()
        before, actions = captured(machine), list(entered)
        with pytest.raises(gp.InvalidArgument, match=message) as caught:
            attached.process_event(Event("start"), meta=meta)
        assert CANARY not in str(caught.value)
        assert list(entered) == actions  # no action ran: the machine never saw the event
        assert captured(machine) == before
        assert where.snapshot() == stored


def test_over_deep_event_metadata_is_refused_before_the_machine_moves(
    tmp_path: Path, keyring: gp.KeyRing
) -> None:
    where = sqlite_place(tmp_path)
    with open_place(where, keyring) as store:
        machine, entered = recorded_order()
        attached = store.attach(machine, KEY, journal=True)
        stored, actions = where.snapshot(), list(entered)
        event = Event("start")
        event.metadata["deep"] = _nested(70)
        with pytest.raises(gp.InvalidArgument, match="nested too deeply"):
            attached.process_event(event)
        assert list(entered) == actions and state_name(machine) == "idle"
        assert where.snapshot() == stored


def test_not_an_event_is_refused(tmp_path: Path, keyring: gp.KeyRing) -> None:
    with open_place(sqlite_place(tmp_path), keyring) as store:
        attached = store.attach(order(), KEY, journal=True)
        with pytest.raises(gp.InvalidArgument, match="gotstate Event"):
            attached.process_event("start")
        assert store.usage().records == 0


# A periodic snapshot that fails after the append is logged and retried.


def test_a_failed_periodic_snapshot_is_logged_and_retried(
    place: Place, keyring: gp.KeyRing, caplog: pytest.LogCaptureFixture
) -> None:
    with open_place(place, keyring) as store:
        machine = order()
        set_data(machine, "idle", "big", CANARY + "x" * 20_000)
        store.save_machine(KEY, machine)  # a big first snapshot
        attached = store.attach(machine, KEY, journal=True, snapshot_every=2)
        usage = store.usage()
        store.set_quota(gp.Quota(max_bytes=usage.bytes + 5000))  # room for entries only
        caplog.set_level(logging.WARNING, logger="gotstate_persist.runtime")
        assert attached.process_event(Event("start"))  # entry 1; no snapshot due
        assert runtime_warnings(caplog) == []
        assert attached.process_event(Event("checkout"))  # entry 2; the snapshot fails
        assert state_name(machine) == "payment"  # committed, never rolled back
        assert len(runtime_warnings(caplog)) == 1
        assert [ref.version for ref in store.versions(KEY)] == [1]
        assert attached.process_event(Event("pay"))  # entry 3; retried, fails again
        assert len(runtime_warnings(caplog)) == 2
        for record in runtime_warnings(caplog):
            text = record.getMessage()
            assert repr(KEY) in text and "retried" in text
            assert CANARY not in text and "xxxxxxxx" not in text
        store.set_quota(None)
        assert attached.process_event(Event("pack"))  # entry 4; the retry lands
        assert len(runtime_warnings(caplog)) == 2
        assert snapshot_seqs(store, KEY) == [0, 4]
        entries = store.journal(KEY)
        check_journal_chain(entries)
        assert [e.target for e in entries] == ["cart", "payment", "picking", "packed"]
        fresh = order(start=False)
        assert store.recover(KEY, fresh) == gp.Head(2, 4)
        assert captured(fresh) == captured(machine)
        assert get_data(fresh, "idle")["big"] == get_data(machine, "idle")["big"]


# Letting go.


@SQL
def test_detach_flushes_what_no_snapshot_covers(place: Place, keyring: gp.KeyRing) -> None:
    with open_place(place, keyring) as store:
        machine = order()
        attached = store.attach(machine, KEY, journal=True, snapshot_every=10)
        for event in ORDER_PATH[:3]:
            assert attached.process_event(Event(event))
        assert snapshot_seqs(store, KEY) == [1]
        attached.detach()
        assert snapshot_seqs(store, KEY) == [1, 3]
        stored = place.snapshot()
        attached.detach()  # twice is fine and writes nothing
        assert place.snapshot() == stored
        for call in (
            lambda: attached.process_event(Event("pack")),
            attached.snapshot,
            attached.recover,
        ):
            with pytest.raises(gp.InvalidArgument, match="detached"):
                call()
        assert state_name(machine) == "picking"
        assert place.snapshot() == stored
        fresh = order(start=False)
        store.restore_machine(KEY, fresh)  # the newest snapshot alone is the head
        assert captured(fresh) == captured(machine)


@SQLITE
def test_detach_after_covered_events_writes_nothing(place: Place, keyring: gp.KeyRing) -> None:
    with open_place(place, keyring) as store:
        with store.attach(order(), KEY, journal=True, snapshot_every=2) as attached:
            for event in ORDER_PATH[:3]:  # snapshots after entries 1 and 3
                assert attached.process_event(Event(event))
            stored = place.snapshot()
        assert place.snapshot() == stored
        assert snapshot_seqs(store, KEY) == [1, 3]


@SQLITE
def test_snapshot_now(place: Place, keyring: gp.KeyRing) -> None:
    with open_place(place, keyring) as store:
        with store.attach(order(), KEY, journal=True, snapshot_every=10) as attached:
            assert attached.process_event(Event("start"))
            assert attached.process_event(Event("checkout"))
            assert attached.snapshot() == gp.Head(2, 2)
            assert attached.head == gp.Head(2, 2)
            stored = place.snapshot()
        assert place.snapshot() == stored  # detach: nothing left to cover
        assert snapshot_seqs(store, KEY) == [1, 2]


# Nothing secret in any output.


def test_the_canary_never_leaks(
    tmp_path: Path, keyring: gp.KeyRing, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    where = sqlite_place(tmp_path)
    with open_place(where, keyring) as store:
        machine = order()
        set_data(machine, "idle", "token", CANARY)
        store.save_machine(KEY, machine)
        attached = store.attach(machine, KEY, journal=True, snapshot_every=2)
        winner_machine = order()
        store.restore_machine(KEY, winner_machine)
        winner = store.attach(winner_machine, KEY, journal=True)
        event = Event("start")
        event.metadata["card"] = CANARY
        assert winner.process_event(event, meta={"actor": CANARY})
        texts = [repr(attached), repr(winner), str(winner.head)]
        with pytest.raises(gp.VersionConflict) as conflict:
            attached.process_event(event, meta={"actor": CANARY})
        texts.append(str(conflict.value))
        with pytest.raises(gp.InvalidArgument) as refused:
            winner.process_event(Event("checkout"), meta={"secret": gp.Secret(CANARY)})
        texts.append(str(refused.value))
        store.set_quota(gp.Quota(max_records=store.usage().records))
        with pytest.raises(gp.QuotaExceeded) as quota:
            winner.process_event(Event("checkout"), meta={"actor": CANARY})
        texts.append(str(quota.value))
        store.set_quota(None)
        texts += [r.getMessage() for r in caplog.records]
        texts += [str(a) for r in caplog.records for a in (r.args or ())]
        assert not [text for text in texts if CANARY in text]
        # the journal gives the caller's own values back to the caller, exactly
        [entry] = store.journal(KEY)
        assert entry.meta == {"actor": CANARY} and entry.event.metadata == {"card": CANARY}


def test_a_secret_in_state_data_is_refused_without_leaking(
    tmp_path: Path, keyring: gp.KeyRing, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    where = sqlite_place(tmp_path)
    with open_place(where, keyring) as store:
        machine = order()
        attached = store.attach(machine, KEY)
        set_data(machine, "idle", "token", gp.Secret(CANARY))
        stored = where.snapshot()
        with pytest.raises(gp.FormatError) as caught:
            attached.process_event(Event("start"))
        assert CANARY not in str(caught.value)
        assert "'idle'" in str(caught.value) and "token" in str(caught.value)
        assert state_name(machine) == "idle"
        assert where.snapshot() == stored
        assert not [r for r in caplog.records if CANARY in r.getMessage()]


# Registered Structs in state data take the store's formats.


def test_registered_structs_in_state_data(tmp_path: Path, keyring: gp.KeyRing) -> None:
    import msgspec

    class Parcel(msgspec.Struct, frozen=True):
        id: str
        grams: int

    formats = gp.FormatRegistry()
    formats.register(Parcel, kind="parcel", version=1)
    where = sqlite_place(tmp_path)
    with open_place(where, keyring, formats=formats) as store:
        machine = order()
        set_data(machine, "idle", "parcel", Parcel("p-1", 250))
        store.save_machine(KEY, machine)
        for journal in (False, True):
            key = f"{KEY}-{journal}"
            store.save_machine(key, machine)
            attached = store.attach(machine, key, journal=journal)
            assert attached.process_event(Event("start"))
            assert attached.process_event(Event("cancel"))
            fresh = order(start=False)
            store.recover(key, fresh) if journal else store.restore_machine(key, fresh)
            assert get_data(fresh, "idle")["parcel"] == Parcel("p-1", 250)
            attached.detach()  # one live attachment per machine
            store.restore_machine(key, machine, version=1)
        # and an undone event puts the Struct back
        attached = store.attach(machine, KEY)
        store.save_machine(KEY, order())
        with pytest.raises(gp.VersionConflict):
            attached.process_event(Event("start"))
        assert get_data(machine, "idle")["parcel"] == Parcel("p-1", 250)


# Interruptions: memory and storage agree whatever stops the event.


class Boom(list[str]):
    """``entered`` that raises ``error`` when the machine enters ``payment``."""

    def __init__(self, error: type[BaseException]) -> None:
        super().__init__()
        self.error = error

    def append(self, name: str) -> None:
        super().append(name)
        if name == "payment":
            raise self.error("an entry action failed")


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
@pytest.mark.parametrize("journal", [False, True], ids=["snapshots", "journal"])
def test_an_action_that_raises_undoes_the_event(
    tmp_path: Path, keyring: gp.KeyRing, error: type[BaseException], journal: bool
) -> None:
    where = sqlite_place(tmp_path)
    with open_place(where, keyring) as store:
        entered = Boom(error)
        machine = order(entered)
        attached = store.attach(machine, KEY, journal=journal)
        assert attached.process_event(Event("start"))
        stored, before = where.snapshot(), captured(machine)
        with pytest.raises(error, match="an entry action failed"):
            attached.process_event(Event("checkout"))
        assert captured(machine) == before
        assert where.snapshot() == stored
        assert entered[-1] == "payment"  # the action ran (and raised); nothing ran after it
        assert attached.process_event(Event("cancel"))  # the head is still right
        assert state_name(machine) == "cancelled"


class InterruptingClock:
    """The store's clock; raises ``KeyboardInterrupt`` on the ``n``-th reading once armed."""

    def __init__(self) -> None:
        self.countdown = 0

    def arm(self, n: int) -> None:
        self.countdown = n

    def __call__(self) -> datetime:
        if self.countdown:
            self.countdown -= 1
            if not self.countdown:
                raise KeyboardInterrupt
        return datetime.now(UTC)


def _clocked_store(where: Place, keyring: gp.KeyRing, clock: InterruptingClock) -> gp.Store:
    backend = open_backend(where.url, **where.options)
    return gp.Store(backend, keyring=keyring, namespace=NAMESPACE, clock=clock)


@pytest.mark.parametrize("journal", [False, True], ids=["snapshots", "journal"])
def test_an_interruption_inside_the_write_undoes_the_event(
    tmp_path: Path, keyring: gp.KeyRing, journal: bool
) -> None:
    where, clock = sqlite_place(tmp_path), InterruptingClock()
    with _clocked_store(where, keyring, clock) as store:
        machine = order()
        attached = store.attach(machine, KEY, journal=journal)
        stored = where.snapshot()
        clock.arm(2 if journal else 1)  # the write's own timestamp (journal: after the entry's)
        with pytest.raises(KeyboardInterrupt):
            attached.process_event(Event("start"))
        assert state_name(machine) == "idle"
        assert where.snapshot() == stored
        assert attached.process_event(Event("start"))
        assert attached.head == (gp.Head(1, 1) if journal else gp.Head(1, 0))


def test_an_interruption_before_the_append_undoes_the_event(
    tmp_path: Path, keyring: gp.KeyRing
) -> None:
    where, clock = sqlite_place(tmp_path), InterruptingClock()
    with _clocked_store(where, keyring, clock) as store:
        machine = order()
        attached = store.attach(machine, KEY, journal=True)
        stored = where.snapshot()
        clock.arm(1)  # the journal entry's time, read after the machine moved
        with pytest.raises(KeyboardInterrupt):
            attached.process_event(Event("start"))
        assert where.snapshot() == stored
        assert state_name(machine) == "idle"


def test_detach_covers_the_entries_a_crashed_writer_left(
    tmp_path: Path, keyring: gp.KeyRing
) -> None:
    with open_place(sqlite_place(tmp_path), keyring) as store:
        crashed = store.attach(order(), KEY, journal=True, snapshot_every=10)
        for event in ORDER_PATH[:4]:
            assert crashed.process_event(Event(event))  # never detached
        assert snapshot_seqs(store, KEY) == [1]
        reopened = store.open_machine(
            KEY, lambda: order(start=False), journal=True, snapshot_every=10
        )
        reopened.detach()
        assert snapshot_seqs(store, KEY)[-1] == 4
