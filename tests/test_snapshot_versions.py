"""The machine snapshot format versions like any record kind.

A test-only next version (the newest snapshot format with one more field,
and an upcaster from it) is added the way a real one would be, in
``formats.machine.SNAPSHOT_FORMATS``. Then: older snapshots restore through
the upcaster, the next version is what save writes and what the one-decode
fast path reads, ``migrate`` rewrites old as new, and code that knows only
the older versions refuses a newer snapshot without touching it. The real
version 1 -> 2 step (``journal_seq``) is checked the same way.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from gotstate.core.events import Event
from order_workflow import build_order_machine, get_data, set_data

import gotstate_persist as gp
from gotstate_persist.formats import MACHINE_KIND
from gotstate_persist.formats import machine as snapshot_formats

RELEASED = snapshot_formats.SNAPSHOT_FORMATS
CURRENT = RELEASED[-1].version
NEXT = CURRENT + 1


class SnapshotNext(RELEASED[-1].record_type, frozen=True, forbid_unknown_fields=True):  # type: ignore[misc, valid-type]
    """The test's next version: where the snapshot came from."""

    origin: str = "captured"


def _from_current(data: dict[str, Any]) -> dict[str, Any]:
    return {**data, "origin": "upcast from the older version"}


def _add_v2(monkeypatch: pytest.MonkeyPatch) -> None:
    """Registries built from now on know the next version too, as a release adding it would."""
    added = snapshot_formats.SnapshotFormat(NEXT, SnapshotNext, _from_current)
    monkeypatch.setattr(snapshot_formats, "SNAPSHOT_FORMATS", (*RELEASED, added))


@pytest.fixture
def with_v2(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    _add_v2(monkeypatch)
    yield


@pytest.fixture
def v1_saved_then_v2_added(
    sqlite_url: str, keyring: gp.KeyRing, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A v1 snapshot under key "m", then a release that adds v2."""
    with gp.open_store(sqlite_url, keyring=keyring) as store:
        store.save_machine("m", _paid_machine())
    _add_v2(monkeypatch)


def _paid_machine() -> Any:
    machine = build_order_machine()
    machine.start()
    for name in ("start", "checkout", "pay"):
        machine.process_event(Event(name))
    set_data(machine, "picking", "total", Decimal("19.99"))
    return machine


def _check_restored(machine: Any) -> None:
    assert machine.current_state.name == "picking"
    assert get_data(machine, "picking") == {"total": Decimal("19.99")}


@pytest.mark.usefixtures("v1_saved_then_v2_added")
def test_v1_snapshots_restore_through_the_upcaster(sqlite_url: str, keyring: gp.KeyRing) -> None:
    with gp.open_store(sqlite_url, keyring=keyring) as store:
        assert store.formats.newest_version(MACHINE_KIND) == NEXT
        fresh = build_order_machine()
        ref = store.restore_machine("m", fresh)
        assert (ref.version, ref.format_version) == (1, CURRENT)
        _check_restored(fresh)
        loaded = store.load("m")
        assert type(loaded) is SnapshotNext
        assert loaded.origin == "upcast from the older version"
        # nothing was written back on read
        assert [r.format_version for r in store.versions("m")] == [CURRENT]


@pytest.mark.usefixtures("with_v2")
def test_v2_is_written_and_read_back_on_the_fast_path(sqlite_url: str, keyring: gp.KeyRing) -> None:
    with gp.open_store(sqlite_url, keyring=keyring) as store:
        ref = store.save_machine("m", _paid_machine())
        assert (ref.kind, ref.format_version) == (MACHINE_KIND, NEXT)
        loaded = store.load("m")
        assert type(loaded) is SnapshotNext
        assert loaded.origin == "captured"
        fresh = build_order_machine()
        store.restore_machine("m", fresh)
        _check_restored(fresh)


@pytest.mark.usefixtures("v1_saved_then_v2_added")
def test_migrate_rewrites_v1_snapshots_as_v2(sqlite_url: str, keyring: gp.KeyRing) -> None:
    with gp.open_store(sqlite_url, keyring=keyring) as store:
        report = store.migrate(MACHINE_KIND)
        assert (report.scanned, report.migrated, report.failed) == (1, 1, [])
        assert [r.format_version for r in store.versions("m")] == [NEXT]
        fresh = build_order_machine()
        store.restore_machine("m", fresh)
        _check_restored(fresh)
        assert store.load("m").origin == "upcast from the older version"


def test_code_that_knows_only_v1_refuses_a_v2_snapshot(
    sqlite_url: str, keyring: gp.KeyRing, monkeypatch: pytest.MonkeyPatch
) -> None:
    v1_only = RELEASED
    _add_v2(monkeypatch)
    with gp.open_store(sqlite_url, keyring=keyring) as store:
        store.save_machine("m", _paid_machine())
    monkeypatch.setattr(snapshot_formats, "SNAPSHOT_FORMATS", v1_only)
    with gp.open_store(sqlite_url, keyring=keyring) as store:
        untouched = build_order_machine()
        untouched.start()
        with pytest.raises(gp.FormatError, match="newer than this code knows"):
            store.restore_machine("m", untouched)
        assert untouched.current_state.name == "idle"
        assert [r.format_version for r in store.versions("m")] == [NEXT]


def test_a_version_1_snapshot_restores_and_covers_no_journal_entry(
    sqlite_url: str, keyring: gp.KeyRing, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(snapshot_formats, "SNAPSHOT_FORMATS", RELEASED[:1])
    with gp.open_store(sqlite_url, keyring=keyring) as store:
        assert store.save_machine("m", _paid_machine()).format_version == 1
    monkeypatch.setattr(snapshot_formats, "SNAPSHOT_FORMATS", RELEASED)
    with gp.open_store(sqlite_url, keyring=keyring) as store:
        fresh = build_order_machine()
        assert store.restore_machine("m", fresh).format_version == 1
        _check_restored(fresh)
        loaded = store.load("m")
        assert type(loaded) is snapshot_formats.MachineSnapshotV2
        assert loaded.journal_seq == 0
        report = store.migrate(MACHINE_KIND)
        assert (report.scanned, report.migrated, report.failed) == (1, 1, [])
        assert [r.format_version for r in store.versions("m")] == [2]
        again = build_order_machine()
        store.restore_machine("m", again)
        _check_restored(again)
