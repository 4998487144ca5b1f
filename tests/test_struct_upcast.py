"""Registered Structs inside state data upcast on restore, and ``migrate`` rewrites them.

runtime.md: "A registered Struct stored in a state's data is upcast through
its kind's chain on restore, exactly as a top-level record;
``store.migrate(kind)`` also rewrites the snapshots that embed that kind."

A machine holding ``order`` version-1 Structs (in the top machine's data, in
a submachine's, nested in lists, tuples and dicts) is saved by release 1;
then a release adding version 2 with an upcaster restores it and migrates
it. Real SQLite files and local object stores; nothing is mocked. "Unchanged"
is checked on every stored byte (``_places.Place.snapshot``).
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import signal
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import _places
import msgspec
import pytest
from _struct_upcast_workers import (
    KILL_KEYS,
    NAMESPACE,
    Note,
    OrderV1,
    OrderV2,
    OrderV3,
    build,
    kill_is_record,
    machine_with_orders,
    migrate_until_killed,
    order_v1,
    orders_in,
    release,
    seed_kill_data,
    set_data,
    submachine,
    to_v2,
    upcast,
)
from gotstate.core.events import Event
from hypothesis import given, settings
from hypothesis import strategies as st
from machines import observe

import gotstate_persist as gp
from gotstate_persist._pipeline import RecordPipeline
from gotstate_persist.formats import MACHINE_KIND, MachineSnapshot, SubmachineSnapshot
from gotstate_persist.formats import machine as snapshot_formats
from gotstate_persist.formats._values import TAG_STRUCT

Loc = tuple[str, int]


class Place(_places.Place):
    def open(self, keyring: gp.KeyRing, registry: gp.FormatRegistry) -> gp.Store:
        return gp.open_store(self.url, namespace=NAMESPACE, keyring=keyring, formats=registry)


@pytest.fixture(params=["sqlite", "file"])
def place(request: pytest.FixtureRequest, tmp_path: Path) -> Place:
    return _places.make_place(request.param, request, tmp_path, database="s.db", cls=Place)


@pytest.fixture
def sqlite_place(request: pytest.FixtureRequest, tmp_path: Path) -> Place:
    return _places.make_place("sqlite", request, tmp_path, database="s.db", cls=Place)


# Looking at what is stored.


def _refs(store: gp.Store) -> dict[Loc, gp.SnapshotRef]:
    return {(ref.key, ref.version): ref for key in store.keys() for ref in store.versions(key)}


def _identity(ref: gp.SnapshotRef) -> tuple[Any, ...]:
    """What a rewrite must never change."""
    return (ref.key, ref.version, ref.kind, ref.created_at)


def _blob(store: gp.Store, loc: Loc) -> bytes:
    return store.backend.get(NAMESPACE, loc[0], loc[1])[1]


def _struct_nodes(tagged: object) -> Iterator[tuple[str, int]]:
    """(kind, stored version) of every Struct node in a tagged value."""
    if type(tagged) is not list or not tagged:
        return
    if tagged[0] == TAG_STRUCT:
        yield tagged[1], tagged[2]
        return
    for item in tagged[1:]:
        yield from _struct_nodes(item)


def _embedded(store: gp.Store, key: str, version: int | None = None) -> Counter[tuple[str, int]]:
    """The Structs a stored snapshot embeds, by kind and the version they are stored as."""
    pipeline = RecordPipeline(
        store.backend, keyring=KEYS, namespace=NAMESPACE, formats=store.formats
    )
    _info, snapshot = pipeline.load_snapshot(key, version)
    found: Counter[tuple[str, int]] = Counter()
    parts: list[MachineSnapshot | SubmachineSnapshot] = [snapshot, *snapshot.submachines]
    for part in parts:
        for tagged in part.data.values():
            found.update(_struct_nodes(tagged))
    return found


KEYS = gp.KeyRing.generate()


def _restored(store: gp.Store, key: str, version: int | None = None) -> Any:
    machine = build()
    store.restore_machine(key, machine, version=version)
    return machine


def _running_target() -> Any:
    """A machine that a failed restore must leave exactly as it is."""
    machine = build()
    machine.start()
    machine.process_event(Event("go"))
    set_data(machine, "step-a", "mine", [1, (2, 3)])
    return machine


# Restore.


def test_restore_upcasts_embedded_structs_exactly_as_load_upcasts_records(place: Place) -> None:
    with place.open(KEYS, release(1)) as store:
        store.save_machine("m", machine_with_orders("m"))
        for slot in range(4):
            store.save(f"rec-{slot}", order_v1("m", slot))
    before = place.snapshot()
    with place.open(KEYS, release(2)) as store:
        restored = _restored(store, "m")
        loaded = {slot: store.load(f"rec-{slot}") for slot in range(4)}
        assert orders_in(restored) == loaded
        assert all(type(value) is OrderV2 for value in orders_in(restored).values())
        assert orders_in(restored) == {s: upcast(order_v1("m", s), 2) for s in range(4)}
        # everything else came back as saved: the other kind, plain values, where it was
        original = machine_with_orders("m", {s: upcast(order_v1("m", s), 2) for s in range(4)})
        assert observe(restored) == observe(original)
        assert submachine(restored).current_state.name == "approved"
        assert _embedded(store, "m") == Counter({("order", 1): 4, ("note", 1): 1})
    assert place.snapshot() == before  # reads never write

    # the restored values are the newest format: saved again, they are stored as such
    with place.open(KEYS, release(2)) as store:
        store.save_machine("m", restored)
        assert _embedded(store, "m") == Counter({("order", 2): 4, ("note", 1): 1})
        assert observe(_restored(store, "m")) == observe(restored)


def test_a_chain_of_upcasters_and_an_unregistered_old_struct(sqlite_place: Place) -> None:
    with sqlite_place.open(KEYS, release(2)) as store:  # slot 1 saved as version 2
        store.save_machine("m", machine_with_orders("m", {1: upcast(order_v1("m", 1), 2)}))
    with sqlite_place.open(KEYS, release(3, oldest=2)) as store:  # OrderV1 unknown here
        restored = _restored(store, "m")
        assert orders_in(restored) == {s: upcast(order_v1("m", s), 3) for s in range(4)}
        assert all(type(value) is OrderV3 for value in orders_in(restored).values())


def _refused_restore(place: Place, registry: gp.FormatRegistry, match: str) -> gp.FormatError:
    before = place.snapshot()
    target = _running_target()
    seen = observe(target)
    with place.open(KEYS, registry) as store, pytest.raises(gp.FormatError, match=match) as caught:
        store.restore_machine("m", target)
    assert observe(target) == seen  # the machine is untouched
    assert place.snapshot() == before
    return caught.value


SECRET = "TOPSECRET-4242"


def _save_secret_orders(place: Place, registry: gp.FormatRegistry, order: Any) -> None:
    """Machine "m" holding ``order`` in every slot (its data must never be quoted)."""
    with place.open(KEYS, registry) as store:
        store.save_machine("m", machine_with_orders("m", dict.fromkeys(range(4), order)))


def test_a_failing_upcaster_refuses_the_restore_and_changes_nothing(sqlite_place: Place) -> None:
    _save_secret_orders(sqlite_place, release(1), OrderV1(SECRET, 1, [SECRET]))

    def broken(data: dict[str, Any]) -> dict[str, Any]:
        raise KeyError(data["id"])

    registry = release(1)
    registry.register(OrderV2, kind="order", version=2, upcast=broken)
    error = _refused_restore(sqlite_place, registry, "'order' from version 1 to 2 failed")
    text = str(error)
    assert "state '" in text and "KeyError at test_struct_upcast.py:" in text
    assert "not changed" in text
    assert SECRET not in text and error.__cause__ is None and error.__suppress_context__


def test_an_upcaster_output_the_schema_refuses(sqlite_place: Place) -> None:
    _save_secret_orders(sqlite_place, release(1), OrderV1(SECRET, 1, []))
    registry = release(1)
    registry.register(
        OrderV2, kind="order", version=2, upcast=lambda d: {**to_v2(d), "currency": 7}
    )
    error = _refused_restore(sqlite_place, registry, r"schema refuses \(at `\$\.currency`\)")
    assert SECRET not in str(error)


class LooseV2(msgspec.Struct, frozen=True):
    id: str
    extra: object


def test_an_upcast_value_that_could_not_be_saved_again_is_refused(sqlite_place: Place) -> None:
    """A tuple in an ``object`` field would come back a list: refused, as a save would."""
    _save_secret_orders(sqlite_place, release(1), OrderV1(SECRET, 1, []))
    registry = release(1)
    registry.register(
        LooseV2, kind="order", version=2, upcast=lambda d: {"id": d["id"], "extra": (1, 2)}
    )
    error = _refused_restore(sqlite_place, registry, "cannot be stored again")
    assert "'order' from version 1 to 2" in str(error) and SECRET not in str(error)


def test_a_struct_newer_than_the_code_refuses_the_restore(sqlite_place: Place) -> None:
    _save_secret_orders(sqlite_place, release(2), OrderV2(SECRET, 1, {}, "EUR"))
    error = _refused_restore(sqlite_place, release(1), "newer than this code knows")
    assert "upgrade the application" in str(error) and "version 2" in str(error)
    assert SECRET not in str(error)


def test_a_gap_in_the_chain_refuses_the_restore_naming_the_step(sqlite_place: Place) -> None:
    _save_secret_orders(sqlite_place, release(1), OrderV1(SECRET, 1, []))
    registry = release(1)
    registry.register(OrderV3, kind="order", version=3)  # nothing into version 2 or 3
    _refused_restore(sqlite_place, registry, "no upcaster turns version 2 into version 3")


# Migrate.


NEXT_SNAPSHOT = snapshot_formats.SNAPSHOT_FORMATS[-1].version + 1


_NEWEST = snapshot_formats.SNAPSHOT_FORMATS[-1].record_type


class SnapshotNext(_NEWEST, frozen=True, forbid_unknown_fields=True):  # type: ignore[misc, valid-type, call-arg]
    """A test-only next snapshot format, as a release adding one would register it."""

    origin: str = "captured"


def _add_snapshot_format(monkeypatch: pytest.MonkeyPatch) -> None:
    added = snapshot_formats.SnapshotFormat(
        NEXT_SNAPSHOT, SnapshotNext, lambda data: {**data, "origin": "upcast"}
    )
    formats = (*snapshot_formats.SNAPSHOT_FORMATS, added)
    monkeypatch.setattr(snapshot_formats, "SNAPSHOT_FORMATS", formats)


def _seed_for_migrate(place: Place) -> None:
    """Two versions of a machine embedding v1 orders, machines embedding none or only
    v2 ones, an old top-level order record and a record of another kind."""
    with place.open(KEYS, release(1)) as store:
        store.save_machine("m-old", machine_with_orders("m-old"))
        store.save_machine("m-old", machine_with_orders("m-old", {2: order_v1("x", 7)}))
        plain = build()
        plain.start()
        set_data(plain, "idle", "note", Note("no orders here"))
        store.save_machine("m-none", plain)
        store.save("rec", order_v1("rec", 1))
        store.save("n", Note("a note"))
    with place.open(KEYS, release(2)) as store:
        v2 = {s: upcast(order_v1("m-new", s), 2) for s in range(4)}
        store.save_machine("m-new", machine_with_orders("m-new", v2))


def _observed(store: gp.Store) -> dict[Loc, Any]:
    return {
        loc: observe(_restored(store, loc[0], loc[1]))
        for loc, ref in _refs(store).items()
        if ref.kind == MACHINE_KIND
    }


def test_migrate_rewrites_the_snapshots_that_embed_old_versions(
    place: Place, monkeypatch: pytest.MonkeyPatch
) -> None:
    _seed_for_migrate(place)
    _add_snapshot_format(monkeypatch)  # the migrating release also has a newer snapshot format
    with place.open(KEYS, release(2)) as store:
        refs = _refs(store)
        untouched = {loc: _blob(store, loc) for loc in refs if loc[0] in ("m-new", "m-none", "n")}
        seen = _observed(store)
        assert refs["m-old", 1].format_version == NEXT_SNAPSHOT - 1

        report = store.migrate("order", batch_size=2)
        assert report == gp.MigrationReport(
            scanned=1, migrated=1, embedding_scanned=4, embedding_migrated=2
        )
        after = _refs(store)
        assert {loc: _identity(r) for loc, r in after.items()} == {
            loc: _identity(r) for loc, r in refs.items()
        }
        for version in (1, 2):
            assert after["m-old", version].format_version == NEXT_SNAPSHOT
            assert _embedded(store, "m-old", version) == Counter({("order", 2): 4, ("note", 1): 1})
        assert {loc: _blob(store, loc) for loc in untouched} == untouched
        assert _observed(store) == seen  # restores give the same values
        assert store.load("rec") == upcast(order_v1("rec", 1), 2)

        stored = place.snapshot()
        assert store.migrate("order") == gp.MigrationReport(
            scanned=1, already_current=1, embedding_scanned=4
        )
        assert place.snapshot() == stored  # a second run writes nothing

    # what is stored now needs neither OrderV1 nor an upcaster into version 2
    newest_only = gp.FormatRegistry()
    newest_only.register(OrderV2, kind="order", version=2)
    newest_only.register(Note, kind="note", version=1)
    with place.open(KEYS, newest_only) as store:
        assert _observed(store) == seen


def test_a_dry_run_counts_and_writes_nothing(place: Place) -> None:
    _seed_for_migrate(place)
    before = place.snapshot()
    with place.open(KEYS, release(2)) as store:
        dry = store.migrate("order", dry_run=True)
        assert place.snapshot() == before
        assert dry == gp.MigrationReport(
            scanned=1, migrated=1, embedding_scanned=4, embedding_migrated=2
        )
        assert store.migrate("order") == dry


def test_snapshots_that_cannot_be_upcast_are_reported_and_left_as_they_are(
    sqlite_place: Place,
) -> None:
    _save_secret_orders(sqlite_place, release(1), OrderV1(SECRET, 1, []))
    with sqlite_place.open(KEYS, release(3)) as store:
        v3 = OrderV3("x", (1, "EUR"), {})
        store.save_machine("m3", machine_with_orders("m3", dict.fromkeys(range(4), v3)))
    before = sqlite_place.snapshot()

    def broken(data: dict[str, Any]) -> dict[str, Any]:
        raise ValueError(data["id"])

    registry = release(1)
    registry.register(OrderV2, kind="order", version=2, upcast=broken)
    with sqlite_place.open(KEYS, registry) as store:
        report = store.migrate("order")
    assert (report.embedding_scanned, report.embedding_migrated) == (2, 0)
    reasons = {(f.key, f.version): f.reason for f in report.failed}
    assert set(reasons) == {("m", 1), ("m3", 1)}
    assert "'order' from version 1 to 2 failed" in reasons["m", 1]
    assert "newer than this code knows" in reasons["m3", 1]
    assert all(SECRET not in reason for reason in reasons.values())
    assert sqlite_place.snapshot() == before


# Killed at any point, then run again.


#: Test-only trigger making every swap take a fraction of a millisecond inside
#: its transaction, so that a kill lands inside a batch as often as between.
_SLOW_SWAP = (
    "CREATE TRIGGER gsp_test_slow_swap AFTER UPDATE ON gotstate_persist_records "
    "BEGIN SELECT COUNT(*) FROM (WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL "
    "SELECT x + 1 FROM c WHERE x < 1000) SELECT x FROM c); END"
)
KILL_KEYRING = KEYS  # _embedded opens snapshots with KEYS
KILL_MACHINES = [key for key in KILL_KEYS if not kill_is_record(key)]


def _sql(url: str, statement: str) -> None:
    engine = _places.throwaway_engine(url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(statement)
    finally:
        engine.dispose()


@pytest.fixture(scope="module")
def kill_template(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """The killed-migration data set, saved once per storage kind and copied per test."""
    made: dict[str, Path] = {}

    def template(kind: str) -> Path:
        if kind not in made:
            top = tmp_path_factory.mktemp(f"kill-{kind}")
            path = top / ("s.db" if kind == "sqlite" else "objects")
            url = f"sqlite:///{path}" if kind == "sqlite" else f"file://{path}"
            with gp.open_store(
                url, namespace=NAMESPACE, keyring=KILL_KEYRING, formats=release(1)
            ) as store:
                seed_kill_data(store, KILL_KEYS)
            made[kind] = path
        return made[kind]

    return template


def _copy_template(place: Place, template: Callable[[str], Path]) -> None:
    source = template(place.kind)
    if place.kind == "sqlite":
        target = Path(place.url.removeprefix("sqlite:///"))
        for suffix in ("", "-wal", "-shm"):
            if Path(f"{source}{suffix}").exists():
                shutil.copyfile(f"{source}{suffix}", f"{target}{suffix}")
    else:
        assert place.root is not None
        shutil.copytree(source, place.root)


def _check_kill_data(store: gp.Store, identities: dict[Loc, Any]) -> tuple[int, int]:
    """Every record there once with its value; how many are still stored old (machines, records)."""
    assert {loc: _identity(ref) for loc, ref in _refs(store).items()} == identities
    old_machines = old_records = 0
    for key in KILL_KEYS:
        if kill_is_record(key):
            assert store.load(key) == upcast(order_v1(key, 9), 2)
            old_records += store.versions(key)[0].format_version == 1
            continue
        restored = _restored(store, key)
        assert orders_in(restored) == {s: upcast(order_v1(key, s), 2) for s in range(4)}
        embedded = _embedded(store, key)
        assert embedded in (
            Counter({("order", 1): 4, ("note", 1): 1}),
            Counter({("order", 2): 4, ("note", 1): 1}),
        ), embedded  # a snapshot is rewritten whole or not at all
        old_machines += embedded[("order", 1)] == 4
    return old_machines, old_records


@pytest.mark.parametrize("threshold", [100, 200])
def test_a_migration_killed_at_any_point_finishes_when_run_again(
    place: Place, kill_template: Callable[[str], Path], threshold: int
) -> None:
    _copy_template(place, kill_template)
    with place.open(KILL_KEYRING, release(2)) as store:
        identities = {loc: _identity(ref) for loc, ref in _refs(store).items()}
    assert len(identities) == len(KILL_KEYS)
    if place.kind == "sqlite":
        _sql(place.url, _SLOW_SWAP)

    ctx = multiprocessing.get_context("spawn")
    reached, finished = ctx.Event(), ctx.Event()
    proc = ctx.Process(
        target=migrate_until_killed,
        args=(place.url, KILL_KEYRING.export(), 20, threshold, reached, finished),
    )
    proc.start()
    try:
        assert reached.wait(timeout=120), "the migration reported no progress"
        os.kill(proc.pid, signal.SIGKILL)  # type: ignore[arg-type]
    finally:
        proc.join(timeout=60)
    assert proc.exitcode == -signal.SIGKILL
    assert not finished.is_set(), "the migration finished before it was killed"
    if place.kind == "sqlite":
        _sql(place.url, "DROP TRIGGER gsp_test_slow_swap")

    with place.open(KILL_KEYRING, release(2)) as store:
        old_machines, old_records = _check_kill_data(store, identities)
        assert 0 < old_machines < len(KILL_MACHINES)  # killed in the middle of the run
        report = store.migrate("order", batch_size=20)
        records = len(KILL_KEYS) - len(KILL_MACHINES)
        assert report == gp.MigrationReport(
            scanned=records,
            migrated=old_records,
            already_current=records - old_records,
            embedding_scanned=len(KILL_MACHINES),
            embedding_migrated=old_machines,
        )
        assert _check_kill_data(store, identities) == (0, 0)
        if place.kind == "sqlite":
            assert store.usage(recount=True).drift is None
        again = store.migrate("order", batch_size=20)
        assert (again.migrated, again.embedding_migrated, again.failed) == (0, 0, [])
    if place.root is not None:  # a swap cut between its create and remove leaves no duplicate
        versions = [path for path in place.root.rglob("v*") if path.is_file()]
        assert len(versions) == len(KILL_KEYS)


# Any data, any old versions.


_ids = st.text(max_size=6)
_orders = st.one_of(
    st.builds(
        OrderV1,
        id=_ids,
        cents=st.integers(-(2**63), 2**63 - 1),
        lines=st.lists(st.sampled_from(["a", "b", "é"]), max_size=4),
    ),
    st.builds(
        OrderV2,
        id=_ids,
        cents=st.integers(-(2**63), 2**63 - 1),
        items=st.dictionaries(st.text(max_size=3), st.integers(0, 9), max_size=3),
        currency=st.sampled_from(["EUR", "USD"]),
    ),
)
_leaves = st.one_of(
    st.none(),
    st.integers(-5, 5),
    st.text(max_size=4),
    st.builds(Note, st.text(max_size=4)),
    _orders,
)
_nested = st.recursive(
    _leaves,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.tuples(inner, inner),
        st.dictionaries(st.text(max_size=3), inner, max_size=3),
    ),
    max_leaves=12,
)


def _replace_orders(value: Any, replace: Callable[[Any], Any]) -> Any:
    if type(value) in (OrderV1, OrderV2):
        return replace(value)
    if type(value) is list:
        return [_replace_orders(item, replace) for item in value]
    if type(value) is tuple:
        return tuple(_replace_orders(item, replace) for item in value)
    if type(value) is dict:
        return {k: _replace_orders(v, replace) for k, v in value.items()}
    return value


@settings(max_examples=60)
@given(top=_nested, sub=_nested)
def test_any_data_with_old_structs_restores_as_each_would_load(top: Any, sub: Any) -> None:
    """Orders of random old versions anywhere in the data restore (and, after migrate,
    are stored) as the newest version, equal to what a load of each as a top-level
    record returns; everything else comes back exactly."""
    url = f"memory://struct-upcast-{uuid.uuid4().hex}"  # a fresh store per example
    machine = build()
    machine.start()
    set_data(machine, "idle", "v", top)
    set_data(submachine(machine), "draft", "w", sub)
    # release 3 saves v1 and v2 orders as they are, and reads them as v3
    with gp.open_store(url, namespace=NAMESPACE, keyring=KEYS, formats=release(3)) as store:
        store.save_machine("m", machine)
        loaded: list[Any] = []

        def as_loaded(order: Any) -> Any:
            key = f"r{len(loaded)}"
            store.save(key, order)
            loaded.append(store.load(key))
            return loaded[-1]

        expected = machine_with_data(
            _replace_orders(top, as_loaded), _replace_orders(sub, as_loaded)
        )
        assert all(type(order) is OrderV3 for order in loaded)
        assert observe(_restored(store, "m")) == observe(expected)
        report = store.migrate("order")
        assert report.failed == [] and report.embedding_scanned == 1
        assert report.embedding_migrated == (1 if loaded else 0)
        assert all(version == 3 for (kind, version) in _embedded(store, "m") if kind == "order")
        assert observe(_restored(store, "m")) == observe(expected)


def machine_with_data(top: Any, sub: Any) -> Any:
    machine = build()
    machine.start()
    set_data(machine, "idle", "v", top)
    set_data(submachine(machine), "draft", "w", sub)
    return machine


# Journal entries embed Structs too (the caller's ``meta``, the event's metadata).


def test_journal_entries_upcast_on_read_and_migrate_rewrites_them(sqlite_place: Place) -> None:
    from _runtime_helpers import order as order_machine

    with sqlite_place.open(KEYS, release(1)) as store:
        attached = store.attach(order_machine(), "j", journal=True)
        attached.process_event(Event("start"), meta={"order": order_v1("j", 1), "n": 1})
        attached.process_event(Event("checkout"), meta={"n": 2})
    with sqlite_place.open(KEYS, release(2)) as store:
        [first, second] = store.journal("j")
        assert first.meta == {"order": upcast(order_v1("j", 1), 2), "n": 1}
        assert second.meta == {"n": 2}
        report = store.migrate("order")
        assert report.embedding_migrated == 1  # the entry that held version 1; not the other
        assert report.failed == []
        assert store.migrate("order").embedding_migrated == 0  # nothing left to rewrite
    newest_only = gp.FormatRegistry()
    newest_only.register(OrderV2, kind="order", version=2)
    with sqlite_place.open(KEYS, newest_only) as store:
        assert store.journal("j")[0].meta["order"] == upcast(order_v1("j", 1), 2)
