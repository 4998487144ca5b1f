"""Store.migrate, Store.reseal and Backend.replace (issue 7) against real storage.

SQLite files, PostgreSQL (``pg_url``), local files (``file://``) and S3 (moto,
``s3_url``); nothing mocks storage. Every stored value is a pure function of
its key and version (``_migrate_workers``), so what a record must hold after
any interruption is known without remembering what was written. "Unchanged"
is checked on the raw storage: every row of every ``gotstate_persist_*``
table, or every stored file/object.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import _places
import msgspec
import pytest
from _migrate_workers import (
    KILL_KEYS,
    KILL_VERSIONS,
    Note,
    OrderV1,
    OrderV2,
    formats,
    kill_kind,
    migrate_until_killed,
    note,
    order_v1,
    order_v2,
    seed_kill_data,
    to_v2,
)
from _places import SQL_KINDS, make_place, throwaway_engine

import gotstate_persist as gp
from gotstate_persist.backends.base import Replacement
from gotstate_persist.codec import codec_by_name
from gotstate_persist.sealing import read_header, seal

NAMESPACE = "ns"
Loc = tuple[str, int]


# Where the data lives, and how to look at all of it without the library.


class Place(_places.Place):
    """A storage location, opened with this file's record formats."""

    def open(
        self, keyring: gp.KeyRing, registry: gp.FormatRegistry | None = None, **kwargs: Any
    ) -> gp.Store:
        return gp.open_store(
            self.url,
            namespace=NAMESPACE,
            keyring=keyring,
            formats=registry if registry is not None else formats(),
            **self.options,
            **kwargs,
        )

    def stored_of_kind(self, snapshot: Any, kind: str) -> list[Any]:
        """The raw rows (or files/objects) of the records of ``kind`` in ``snapshot``."""
        if self.kind in SQL_KINDS:
            return [row for row in snapshot["gotstate_persist_records"] if kind in row]
        return [(name, data) for name, data in snapshot if f"~{kind}~" in name]


def _place(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> Place:
    return make_place(kind, request, tmp_path, database="migrate.db", cls=Place)


@pytest.fixture(params=["sqlite", "postgresql", "file"])
def place(request: pytest.FixtureRequest, tmp_path: Path) -> Place:
    return _place(request.param, request, tmp_path)


@pytest.fixture(params=["sqlite", "postgresql", "file", "s3", "s3-layout1"])
def any_place(request: pytest.FixtureRequest, tmp_path: Path) -> Place:
    return _place(request.param, request, tmp_path)


@pytest.fixture(params=["sqlite", "file"])
def local_place(request: pytest.FixtureRequest, tmp_path: Path) -> Place:
    return _place(request.param, request, tmp_path)


@pytest.fixture(params=SQL_KINDS)
def sql_place(request: pytest.FixtureRequest, tmp_path: Path) -> Place:
    return _place(request.param, request, tmp_path)


def _sql_execute(url: str, *statements: str) -> None:
    engine = throwaway_engine(url)
    try:
        with engine.begin() as conn:
            for statement in statements:
                conn.exec_driver_sql(statement)
    finally:
        engine.dispose()


# Reading a store back.


def _refs(store: gp.Store) -> dict[Loc, gp.SnapshotRef]:
    return {(ref.key, ref.version): ref for key in store.keys() for ref in store.versions(key)}


def _blobs(store: gp.Store) -> dict[Loc, bytes]:
    backend = store.backend
    return {
        loc: backend.get(NAMESPACE, loc[0], loc[1])[1]
        for loc in _refs(store)  # via the listings, one get each
    }


def _loads(store: gp.Store, locs: Any) -> dict[Loc, Any]:
    return {loc: store.load(loc[0], version=loc[1]) for loc in locs}


def _sealed(
    keyring: gp.KeyRing, key: str, version: int, record: msgspec.Struct, kind: str, fmt: int
) -> bytes:
    """A blob sealed exactly as a save of ``record`` as ``(kind, fmt)`` would seal it."""
    codec = codec_by_name("msgpack")
    payload = codec.encode((kind, fmt, record))
    return seal(keyring, payload, codec_id=codec.id, namespace=NAMESPACE, key=key, version=version)


def _identity(ref: gp.SnapshotRef) -> tuple[Any, ...]:
    """What a rewrite must never change: key, logical version, kind, creation time."""
    return (ref.key, ref.version, ref.kind, ref.created_at)


# 1 and 2. What migrate does, and that a second run does nothing.


def test_migrate_rewrites_old_records_as_the_newest_format(
    any_place: Place, keyring: gp.KeyRing
) -> None:
    old_key = keyring.primary_id
    with any_place.open(keyring, formats(newest=1)) as store:
        for version in (1, 2, 3):
            store.save("a", order_v1("a", version))
        store.save("b", order_v1("b", 1))
        store.save("n", note("n", 1))
        store.save("n", note("n", 2))
    new_key = keyring.rotate()
    with any_place.open(keyring) as store:
        store.save("c", order_v1("c", 1))  # version 1 format, sealed by the new key
        store.save("c", order_v1("c", 2))
        store.save("a", order_v2("a", 4))  # the newest format, in a key with old ones
        store.save("d", order_v2("d", 1))
        store.save("d", order_v2("d", 2))
        old = {("a", 1), ("a", 2), ("a", 3), ("b", 1), ("c", 1), ("c", 2)}
        current = {("a", 4), ("d", 1), ("d", 2)}
        notes = {("n", 1), ("n", 2)}
        before = _refs(store)
        assert set(before) == old | current | notes
        assert {loc for loc, ref in before.items() if ref.format_version == 1} == old | notes
        blobs = _blobs(store)
        assert read_header(blobs[("a", 1)]).key_id == old_key
        assert read_header(blobs[("c", 1)]).key_id == new_key
        lazily = _loads(store, before)
        for key, version in old | current:
            assert lazily[(key, version)] == order_v2(key, version)
        for key, version in notes:
            assert lazily[(key, version)] == note(key, version)
        raw = any_place.snapshot()

        dry = store.migrate("order", dry_run=True, batch_size=2)
        assert dry == gp.MigrationReport(scanned=9, migrated=6, already_current=3, failed=[])
        assert any_place.snapshot() == raw  # a dry run writes nothing
        assert {loc for loc, ref in _refs(store).items() if ref.format_version == 1} == old | notes

        report = store.migrate("order", batch_size=4)
        assert report == gp.MigrationReport(scanned=9, migrated=6, already_current=3, failed=[])
        after = _refs(store)
        assert set(after) == set(before)
        for loc, ref in before.items():
            assert _identity(after[loc]) == _identity(ref)
            assert after[loc].format_version == (1 if loc in notes else 2)
        assert _loads(store, before) == lazily
        rewritten = _blobs(store)
        for loc in old:
            assert rewritten[loc] != blobs[loc]
            assert read_header(rewritten[loc]).key_id == keyring.primary_id == new_key
            assert after[loc].size == len(rewritten[loc])
        for loc in current | notes:
            assert rewritten[loc] == blobs[loc]  # already current or another kind: not touched
        assert read_header(rewritten[("n", 1)]).key_id == old_key  # migrate does not reseal notes
        migrated_raw = any_place.snapshot()
        assert any_place.stored_of_kind(migrated_raw, "note") == any_place.stored_of_kind(
            raw, "note"
        )
        assert len(any_place.stored_of_kind(migrated_raw, "note")) == 2
        usage = store.usage(recount=True)
        assert usage.drift is None
        assert (usage.bytes, usage.records, usage.keys) == (
            sum(ref.size for ref in after.values()),
            11,
            5,
        )

        again = store.migrate("order")
        assert again == gp.MigrationReport(scanned=9, migrated=0, already_current=9, failed=[])
        assert any_place.snapshot() == migrated_raw

    # Another program that knows only version 2 reads every order directly.
    only_v2 = gp.FormatRegistry()
    only_v2.register(OrderV2, kind="order", version=2)
    only_v2.register(Note, kind="note", version=1)
    with any_place.open(gp.KeyRing.load(keyring.export()), only_v2) as store:
        for key, version in old | current:
            assert store.load(key, version=version) == order_v2(key, version)


def test_migrate_of_an_empty_namespace_or_a_kind_with_no_records(
    local_place: Place, keyring: gp.KeyRing
) -> None:
    with local_place.open(keyring) as store:
        assert store.migrate("order") == gp.MigrationReport()
        store.save("n", note("n", 1))
        assert store.migrate("order") == gp.MigrationReport()
        assert store.migrate("note") == gp.MigrationReport(scanned=1, already_current=1)


# 3. Killed at any point, then run again.

#: Test-only triggers that make every swap of a blob row take a fraction of a
#: millisecond inside its transaction, so that a kill lands inside a batch's
#: transaction as often as between batches.
_SLOW_SWAPS = {
    "sqlite": (
        [
            "CREATE TRIGGER gsp_test_slow_swap AFTER UPDATE ON gotstate_persist_records "
            "BEGIN SELECT COUNT(*) FROM (WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL "
            "SELECT x + 1 FROM c WHERE x < 1000) SELECT x FROM c); END"
        ],
        ["DROP TRIGGER gsp_test_slow_swap"],
    ),
    "postgresql": (
        [
            "CREATE FUNCTION gsp_test_slow() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN PERFORM pg_sleep(0.0005); RETURN NULL; END $$",
            "CREATE TRIGGER gsp_test_slow_swap AFTER UPDATE ON gotstate_persist_records "
            "FOR EACH ROW EXECUTE FUNCTION gsp_test_slow()",
        ],
        ["DROP TRIGGER gsp_test_slow_swap ON gotstate_persist_records"],
    ),
}

KILL_KEYRING = gp.KeyRing.generate()
KILL_ORDERS = sum(KILL_VERSIONS for key in KILL_KEYS if kill_kind(key) == "order")
KILL_RECORDS = KILL_VERSIONS * len(KILL_KEYS)


@pytest.fixture(scope="module")
def kill_template(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """The killed-migration data set, saved once per local storage kind and copied per test."""
    made: dict[str, Path] = {}

    def template(kind: str) -> Path:
        if kind not in made:
            top = tmp_path_factory.mktemp(f"kill-{kind}")
            path = top / ("migrate.db" if kind == "sqlite" else "objects")
            url = f"sqlite:///{path}" if kind == "sqlite" else f"file://{path}"
            with gp.open_store(
                url, namespace=NAMESPACE, keyring=KILL_KEYRING, formats=formats()
            ) as store:
                seed_kill_data(store, KILL_KEYS)
            made[kind] = path
        return made[kind]

    return template


def _seed_kill_place(place: Place, template: Callable[[str], Path]) -> None:
    if place.kind == "postgresql":
        with place.open(KILL_KEYRING) as store, ThreadPoolExecutor(4) as pool:
            list(
                pool.map(
                    lambda part: seed_kill_data(store, part), [KILL_KEYS[i::4] for i in range(4)]
                )
            )
    elif place.kind == "sqlite":
        source = template("sqlite")
        target = Path(place.url.removeprefix("sqlite:///"))
        for suffix in ("", "-wal", "-shm"):
            if Path(f"{source}{suffix}").exists():
                shutil.copyfile(f"{source}{suffix}", f"{target}{suffix}")
    else:
        assert place.root is not None
        shutil.copytree(template("file"), place.root)


def _wait_for_sessions_to_end(url: str) -> None:
    """PostgreSQL: the killed process's sessions are gone (their transactions ended)."""
    deadline = time.monotonic() + 30
    engine = throwaway_engine(url)
    try:
        while True:
            with engine.connect() as conn:
                others = conn.exec_driver_sql(
                    "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND pid <> pg_backend_pid()"
                ).scalar()
            if others == 0:
                return
            assert time.monotonic() < deadline, "the killed migration's sessions did not end"
            time.sleep(0.05)
    finally:
        engine.dispose()


def _check_kill_data(store: gp.Store, identities: dict[Loc, tuple[Any, ...]]) -> Counter[int]:
    """Every record is there once, with its value; the orders' format versions, counted."""
    refs = _refs(store)
    assert store.keys() == KILL_KEYS
    assert {loc: _identity(ref) for loc, ref in refs.items()} == identities
    for key in KILL_KEYS:
        assert [ref.version for ref in store.versions(key)] == list(range(1, KILL_VERSIONS + 1))
    for (key, version), ref in refs.items():
        expected = note(key, version) if ref.kind == "note" else order_v2(key, version)
        assert store.load(key, version=version) == expected
        if ref.kind == "note":
            assert ref.format_version == 1
    return Counter(ref.format_version for ref in refs.values() if ref.kind == "order")


def _version_files(root: Path) -> list[Path]:
    return [path for path in root.rglob("v*") if path.is_file()]


@pytest.mark.parametrize(
    ("threshold", "delay"),
    [
        pytest.param(200, 0.0, id="early"),
        pytest.param(1000, 0.004, id="middle"),
        pytest.param(1600, 0.015, id="late"),
    ],
)
def test_a_migration_killed_at_any_point_finishes_when_run_again(
    place: Place, kill_template: Callable[[str], Path], threshold: int, delay: float
) -> None:
    _seed_kill_place(place, kill_template)
    with place.open(KILL_KEYRING) as store:
        identities = {loc: _identity(ref) for loc, ref in _refs(store).items()}
    assert len(identities) == KILL_RECORDS == 2100 and KILL_ORDERS == 2000
    notes_raw = place.stored_of_kind(place.snapshot(), "note")
    assert len(notes_raw) == KILL_RECORDS - KILL_ORDERS
    if place.kind in _SLOW_SWAPS:
        _sql_execute(place.url, *_SLOW_SWAPS[place.kind][0])

    ctx = multiprocessing.get_context("spawn")
    reached, finished = ctx.Event(), ctx.Event()
    proc = ctx.Process(
        target=migrate_until_killed,
        args=(place.url, KILL_KEYRING.export(), NAMESPACE, 50, threshold, reached, finished),
    )
    proc.start()
    try:
        assert reached.wait(timeout=120), "the migration reported no progress"
        time.sleep(delay)
        os.kill(proc.pid, signal.SIGKILL)  # type: ignore[arg-type]
    finally:
        proc.join(timeout=60)
    assert proc.exitcode == -signal.SIGKILL
    assert not finished.is_set(), "the migration finished before it was killed"
    if place.kind == "postgresql":
        _wait_for_sessions_to_end(place.url)
    if place.kind in _SLOW_SWAPS:
        _sql_execute(place.url, *_SLOW_SWAPS[place.kind][1])

    with place.open(KILL_KEYRING) as store:
        # The interrupted state: every record readable (old ones upcast lazily).
        formats_left = _check_kill_data(store, identities)
        left = formats_left[1]
        assert set(formats_left) <= {1, 2}
        assert 0 < left < KILL_ORDERS - 100, formats_left  # killed in the middle of the run

        report = store.migrate("order", batch_size=50)
        assert report == gp.MigrationReport(
            scanned=KILL_ORDERS, migrated=left, already_current=KILL_ORDERS - left, failed=[]
        )
        assert _check_kill_data(store, identities) == Counter({2: KILL_ORDERS})
        for loc, blob in _blobs(store).items():
            assert read_header(blob).key_id == KILL_KEYRING.primary_id, loc
        recounted = store.usage(recount=True)
        if place.kind in SQL_KINDS:
            assert recounted.drift is None, recounted
        refs = _refs(store)
        assert (recounted.bytes, recounted.records, recounted.keys) == (
            sum(ref.size for ref in refs.values()),
            KILL_RECORDS,
            len(KILL_KEYS),
        )
        assert store.usage(recount=True).drift is None
        assert store.usage() == msgspec.structs.replace(recounted, drift=None)
        assert store.migrate("order", batch_size=50).migrated == 0
    if place.root is not None:  # a swap cut between its create and remove leaves no duplicate
        assert len(_version_files(place.root)) == KILL_RECORDS
    assert place.stored_of_kind(place.snapshot(), "note") == notes_raw


def test_a_swap_cut_between_create_and_remove_is_resumed_on_files(
    tmp_path: Path, keyring: gp.KeyRing
) -> None:
    """An object store's swap creates the new object, then removes the old one.

    A crash in between leaves both: reads take the newer format, a rerun has
    nothing to do, and ``recount`` removes the superseded object.
    """
    root = tmp_path / "objects"
    place = Place("file", f"file://{root}", root=root)
    with place.open(keyring) as store:
        store.save("a", order_v1("a", 1))
        store.save("a", order_v1("a", 2))
        (old_file,) = [path for path in _version_files(root) if path.name.startswith("v0000000001")]
        old_bytes = old_file.read_bytes()
        assert store.migrate("order").migrated == 2
        assert not old_file.exists()
        old_file.write_bytes(old_bytes)  # as if killed right before the old one was removed
        assert len(_version_files(root)) == 3
        assert [(ref.version, ref.format_version) for ref in store.versions("a")] == [
            (1, 2),
            (2, 2),
        ]
        assert store.load("a", version=1) == order_v2("a", 1)
        assert store.migrate("order") == gp.MigrationReport(scanned=2, already_current=2)
        recounted = store.usage(recount=True)
        assert recounted.records == 2
        assert not old_file.exists()
        assert len(_version_files(root)) == 2
        assert store.usage(recount=True).drift is None
        assert store.load("a", version=1) == order_v2("a", 1)


def _numbered_formats(newest: int) -> gp.FormatRegistry:
    """``counter`` versions 1..newest, each upcaster adding one."""
    registry = gp.FormatRegistry()
    for version in range(1, newest + 1):
        struct = msgspec.defstruct(f"CounterV{version}", [("n", int)], frozen=True)
        registry.register(
            struct,
            kind="counter",
            version=version,
            upcast=None if version == 1 else (lambda data: {"n": data["n"] + 1}),
        )
    return registry


def test_a_cut_swap_from_format_9_to_10_is_resumed_on_files(
    tmp_path: Path, keyring: gp.KeyRing
) -> None:
    root = tmp_path / "objects"
    place = Place("file", f"file://{root}", root=root)
    nine = _numbered_formats(9)
    with place.open(keyring, nine) as store:
        store.save("c", nine.type_for("counter", 9)(9))  # type: ignore[call-arg]
    with place.open(keyring, _numbered_formats(10)) as store:
        (old_file,) = _version_files(root)
        old_bytes = old_file.read_bytes()
        assert store.migrate("counter").migrated == 1
        old_file.write_bytes(old_bytes)  # killed right before the old object was removed
        assert store.versions("c")[0].format_version == 10
        report = store.migrate("counter")
        assert report == gp.MigrationReport(scanned=1, already_current=1)
        store.usage(recount=True)
        (kept,) = _version_files(root)
        assert "~10~" in kept.name


# 4. Failures are reported, not raised.


class OrderV3(msgspec.Struct, frozen=True):
    id: str
    cents: int
    items: dict[str, int]
    currency: str
    note: str


def test_records_that_cannot_be_upcast_are_reported_and_left_readable(
    local_place: Place, keyring: gp.KeyRing
) -> None:
    def picky(data: dict[str, Any]) -> dict[str, Any]:
        if data["id"] == "bad/2":
            raise ValueError("this one is not for upcasting")
        if data["id"] == "worse/1":
            return {**to_v2(data), "currency": 7}  # version 2 refuses it
        return to_v2(data)

    picky_formats = gp.FormatRegistry()
    picky_formats.register(OrderV1, kind="order", version=1)
    picky_formats.register(OrderV2, kind="order", version=2, upcast=picky)
    future = formats()
    future.register(OrderV3, kind="order", version=3)
    with local_place.open(keyring, future) as store:
        for key in ("good", "bad", "worse"):
            for version in (1, 2):
                store.save(key, order_v1(key, version))
        store.save("future", OrderV3("future/1", 1, {}, "EUR", "from a newer release"))
    with local_place.open(keyring, picky_formats) as store:
        blobs = _blobs(store)
        report = store.migrate("order", batch_size=2)
        assert (report.scanned, report.migrated, report.already_current) == (7, 4, 0)
        failed = {(f.key, f.version): f.reason for f in report.failed}
        assert set(failed) == {("bad", 2), ("worse", 1), ("future", 1)}
        assert len(report.failed) == 3
        assert "from version 1 to 2 failed (ValueError" in failed[("bad", 2)]
        assert "not for upcasting" not in failed[("bad", 2)]  # never the data
        assert "schema refuses" in failed[("worse", 1)] and "currency" in failed[("worse", 1)]
        assert "newer than this code knows" in failed[("future", 1)]

        refs = _refs(store)
        after = _blobs(store)
        for loc in failed:
            assert after[loc] == blobs[loc]  # left exactly as it was
        assert refs[("bad", 2)].format_version == refs[("worse", 1)].format_version == 1
        assert refs[("future", 1)].format_version == 3
        for loc in {("good", 1), ("good", 2), ("bad", 1), ("worse", 2)}:
            assert refs[loc].format_version == 2
            assert store.load(loc[0], version=loc[1]) == order_v2(*loc)
        with pytest.raises(gp.FormatError, match="from version 1 to 2 failed"):
            store.load("bad")
        with pytest.raises(gp.FormatError, match=r"schema refuses \(at `\$\.currency`\)"):
            store.load("worse", version=1)

        again = store.migrate("order")
        assert (again.scanned, again.migrated, again.already_current) == (7, 0, 4)
        assert {(f.key, f.version) for f in again.failed} == set(failed)
        assert _blobs(store) == after
    with local_place.open(keyring, formats(newest=1)) as store:  # still there, as stored
        assert store.load("bad", version=2) == order_v1("bad", 2)
        assert store.load("worse", version=1) == order_v1("worse", 1)


def test_records_changed_or_deleted_during_the_run_are_reported_and_left_as_is(
    local_place: Place, keyring: gp.KeyRing
) -> None:
    with local_place.open(keyring) as store:
        store.save("x", order_v1("x", 1))
        store.save("x", order_v1("x", 2))
        store.save("y", order_v1("y", 1))
        store.save("z", order_v1("z", 1))
        backend = store.backend
        changed = OrderV1("x/1", 999, ["z"])
        calls: list[tuple[int, int]] = []
        written: list[bytes] = []

        def meanwhile(done: int, total: int) -> None:
            """Another writer, between the run's reads and its swaps (one batch, at the end)."""
            calls.append((done, total))
            if len(calls) == 1:
                _info, blob = backend.get(NAMESPACE, "x", 1)
                new = _sealed(keyring, "x", 1, changed, "order", 1)
                assert backend.replace(NAMESPACE, [Replacement("x", 1, new, 1, blob)]) == [True]
                written.append(new)
                assert store.delete("y", version=1) == 1

        report = store.migrate("order", progress=meanwhile)
        assert calls[0] == (4, 4)
        assert (report.scanned, report.migrated, report.already_current) == (4, 2, 0)
        assert sorted((f.key, f.version) for f in report.failed) == [("x", 1), ("y", 1)]
        assert all("changed or deleted" in f.reason for f in report.failed)
        # x/1 holds what the other writer wrote; y stays deleted.
        assert backend.get(NAMESPACE, "x", 1)[1] == written[0]
        assert store.versions("x")[0].format_version == 1
        assert store.load("x", version=1) == OrderV2("x/1", 999, {"z": 1}, "EUR")
        assert store.versions("y") == [] and store.keys() == ["x", "z"]
        assert store.load("x", version=2) == order_v2("x", 2)
        assert store.load("z") == order_v2("z", 1)
        assert store.usage(recount=True).drift is None

        rerun = store.migrate("order")
        assert rerun == gp.MigrationReport(scanned=3, migrated=1, already_current=2, failed=[])
        assert store.load("x", version=1) == OrderV2("x/1", 999, {"z": 1}, "EUR")
        assert store.versions("x")[0].format_version == 2


def test_a_record_no_upcaster_chain_reaches_is_reported_not_rewritten(
    local_place: Place, keyring: gp.KeyRing
) -> None:
    with local_place.open(keyring, formats(newest=1)) as store:
        store.save("a", order_v1("a", 1))
    gap = gp.FormatRegistry()
    gap.register(OrderV1, kind="order", version=1)
    gap.register(OrderV2, kind="order", version=2)  # no upcaster from version 1
    missing = "no upcaster turns version 1 into version 2"
    with local_place.open(keyring, gap) as store:
        with pytest.raises(gp.FormatError, match=missing):  # never the old Struct
            store.load("a")
        before = _blobs(store)
        report = store.migrate("order")
        assert report.migrated == 0
        assert [(f.key, f.version) for f in report.failed] == [("a", 1)]
        assert missing in report.failed[0].reason  # the same words as load
        assert _blobs(store) == before
    with local_place.open(keyring, formats(newest=1)) as store:
        assert store.load("a") == order_v1("a", 1)  # still there, as stored


# 5. Quotas: a migration that grows records stays within max_bytes.


class PaddedV2(msgspec.Struct, frozen=True):
    id: str
    cents: int
    lines: list[str]
    pad: str


def _padded_formats() -> gp.FormatRegistry:
    registry = gp.FormatRegistry()
    registry.register(OrderV1, kind="order", version=1)
    registry.register(
        PaddedV2, kind="order", version=2, upcast=lambda data: {**data, "pad": "p" * 400}
    )
    return registry


def _padded(key: str, version: int) -> PaddedV2:
    old = order_v1(key, version)
    return PaddedV2(old.id, old.cents, old.lines, "p" * 400)


@pytest.fixture(
    params=[
        "sqlite",
        "file",
    ]
)
def quota_place(request: pytest.FixtureRequest, tmp_path: Path) -> Place:
    return _place(request.param, request, tmp_path)


def test_records_that_would_cross_max_bytes_are_reported_and_left(
    quota_place: Place, keyring: gp.KeyRing
) -> None:
    keys = [f"q{i}" for i in range(10)]
    with quota_place.open(keyring, _padded_formats()) as store:
        for key in keys:
            store.save(key, order_v1(key, 1))
        small = {ref.size for key in keys for ref in store.versions(key)}
        probe = f"memory://gsp-migrate-probe-{os.getpid()}-{id(store)}"
        with gp.open_store(probe, keyring=keyring, formats=_padded_formats()) as scratch:
            big = {scratch.save(key, _padded(key, 1)).size for key in keys}
        assert len(small) == len(big) == 1  # every record grows by the same amount
        grow = big.pop() - small.pop()
        assert grow > 400
        used = store.usage().bytes
        limit = used + 3 * grow + grow // 2  # room for three of the ten
        store.set_quota(gp.Quota(max_bytes=limit))
        blobs = _blobs(store)

        report = store.migrate("order", batch_size=4)
        assert (report.scanned, report.migrated, report.already_current) == (10, 3, 0)
        assert len(report.failed) == 7
        assert all("max_bytes" in f.reason for f in report.failed), report.failed
        kept = store.usage()
        recounted = store.usage(recount=True)
        assert recounted.drift is None
        assert kept == recounted
        assert kept.bytes <= limit
        assert kept.bytes == used + 3 * grow
        refs = _refs(store)
        assert sum(ref.size for ref in refs.values()) == kept.bytes
        for failure in report.failed:
            loc = (failure.key, failure.version)
            assert refs[loc].format_version == 1
            assert _blobs(store)[loc] == blobs[loc]
        for key in keys:
            assert store.load(key) == _padded(key, 1)  # lazily or as stored

        store.set_quota(None)
        rest = store.migrate("order")
        assert rest == gp.MigrationReport(scanned=10, migrated=7, already_current=3, failed=[])
        assert store.usage(recount=True).drift is None


# 6. Reseal after a key rotation, then retire the old key.


def test_reseal_moves_every_record_to_the_new_primary_key(
    local_place: Place, keyring: gp.KeyRing
) -> None:
    old_key = keyring.primary_id
    with local_place.open(keyring) as store:
        for version in (1, 2, 3):
            store.save("a", order_v1("a", version))
        store.save("b", order_v2("b", 1))
        store.save("n", note("n", 1))
    new_key = keyring.rotate()
    with local_place.open(keyring) as store:
        store.save("a", order_v1("a", 4))
        store.save("n", note("n", 2))
        before = _refs(store)
        values = _loads(store, before)
        blobs = _blobs(store)
        on_old = {loc for loc, blob in blobs.items() if read_header(blob).key_id == old_key}
        assert on_old == {("a", 1), ("a", 2), ("a", 3), ("b", 1), ("n", 1)}

        retired_too_soon = gp.KeyRing.load(keyring.export())
        retired_too_soon.retire(old_key)
        with local_place.open(retired_too_soon) as early, pytest.raises(gp.PersistError):
            early.load("a", version=1)  # honest: the old key is still needed here

        progress: list[tuple[int, int]] = []
        report = store.reseal(batch_size=2, progress=lambda *call: progress.append(call))
        assert report == gp.MigrationReport(scanned=7, migrated=5, already_current=2, failed=[])
        assert progress[-1] == (7, 7)
        after = _refs(store)
        assert set(after) == set(before)
        for loc, ref in before.items():
            assert _identity(after[loc]) == _identity(ref)
            assert after[loc].format_version == ref.format_version  # reseal does not migrate
        resealed = _blobs(store)
        assert {read_header(blob).key_id for blob in resealed.values()} == {new_key}
        for loc in set(before) - on_old:
            assert resealed[loc] == blobs[loc]
        assert _loads(store, before) == values
        assert store.usage(recount=True).drift is None

        keyring.retire(old_key)
        assert keyring.key_ids == (new_key,)
        assert _loads(store, before) == values
        raw = local_place.snapshot()
        assert store.reseal() == gp.MigrationReport(scanned=7, already_current=7)
        assert local_place.snapshot() == raw
    with local_place.open(gp.KeyRing.load(keyring.export())) as fresh:
        assert _loads(fresh, before) == values


def test_reseal_reports_records_no_key_of_the_ring_opens(
    local_place: Place, keyring: gp.KeyRing
) -> None:
    stranger = gp.KeyRing.generate()
    with local_place.open(stranger) as store:
        store.save("s", order_v1("s", 1))
    with local_place.open(keyring) as store:
        store.save("a", order_v1("a", 1))
        keyring.rotate()
        blobs = _blobs(store)
        report = store.reseal()
        assert (report.scanned, report.migrated, report.already_current) == (2, 1, 0)
        assert [(f.key, f.version) for f in report.failed] == [("s", 1)]
        assert _blobs(store)[("s", 1)] == blobs[("s", 1)]
        assert store.load("a") == order_v2("a", 1)


# 7. The Backend.replace contract itself.


def test_replace_is_a_compare_and_set_per_version(any_place: Place, keyring: gp.KeyRing) -> None:
    with any_place.open(keyring) as store:
        store.save("a", order_v1("a", 1))
        store.save("a", order_v1("a", 2))
        store.save("b", order_v1("b", 1))
        backend = store.backend
        info, old = backend.get(NAMESPACE, "a", 1)
        other = backend.get(NAMESPACE, "a", 2)[1]
        new = _sealed(keyring, "a", 1, order_v2("a", 1), "order", 2)
        raw = any_place.snapshot()

        assert backend.replace(NAMESPACE, []) == []
        assert backend.replace(NAMESPACE, [Replacement("a", 1, new, 2, other)]) == [False]
        assert backend.replace(NAMESPACE, [Replacement("a", 9, new, 2, old)]) == [False]
        assert backend.replace(NAMESPACE, [Replacement("zz", 1, new, 2, old)]) == [False]
        assert any_place.snapshot() == raw  # refused swaps write nothing

        assert backend.replace(NAMESPACE, [Replacement("a", 1, new, 2, old)]) == [True]
        got, blob = backend.get(NAMESPACE, "a", 1)
        assert blob == new
        assert got == msgspec.structs.replace(info, format_version=2, size=len(new))
        assert store.load("a", version=1) == order_v2("a", 1)
        # The same swap again: its expected blob is stale now.
        assert backend.replace(NAMESPACE, [Replacement("a", 1, new, 2, old)]) == [False]
        assert backend.get(NAMESPACE, "a", 1)[1] == new

        b_old = backend.get(NAMESPACE, "b", 1)[1]
        b_new = _sealed(keyring, "b", 1, order_v2("b", 1), "order", 2)
        back = _sealed(keyring, "a", 1, order_v1("a", 1), "order", 1)
        mixed = [
            Replacement("b", 1, b_new, 2, b_old),
            Replacement("a", 2, new, 2, old),  # wrong expected blob
            Replacement("a", 1, back, 1, new),  # back to format 1, same size class
            Replacement("c", 1, b_new, 2, b_old),  # no such key
        ]
        assert backend.replace(NAMESPACE, mixed) == [True, False, True, False]
        assert backend.get(NAMESPACE, "b", 1)[1] == b_new
        assert backend.get(NAMESPACE, "a", 2)[1] == other
        assert backend.get(NAMESPACE, "a", 1) == (
            msgspec.structs.replace(info, format_version=1, size=len(back)),
            back,
        )
        assert [ref.version for ref in store.versions("a")] == [1, 2]
        assert store.load("a", version=1) == order_v2("a", 1)
        usage = store.usage(recount=True)
        assert usage.drift is None
        assert usage.records == 3


def test_sql_readers_see_the_old_or_the_new_blob_during_swaps(
    sql_place: Place, keyring: gp.KeyRing
) -> None:
    with sql_place.open(keyring) as store, sql_place.open(keyring) as reading:
        store.save("a", order_v1("a", 1))
        backend = store.backend
        blobs = {1: backend.get(NAMESPACE, "a", 1)[1]}
        blobs[2] = _sealed(keyring, "a", 1, order_v2("a", 1), "order", 2)
        stop = threading.Event()
        seen: Counter[Any] = Counter()

        def reader() -> None:
            while not stop.is_set():
                try:
                    info, blob = reading.backend.get(NAMESPACE, "a", 1)
                    listed = reading.backend.versions(NAMESPACE, "a")
                except gp.NotFound as exc:
                    seen[f"NotFound: {exc}"] += 1
                    continue
                seen["ok" if blobs.get(info.format_version) == blob else "mixed"] += 1
                seen["listed once" if len(listed) == 1 else f"listed {len(listed)}"] += 1

        threads = [threading.Thread(target=reader) for _ in range(2)]
        for thread in threads:
            thread.start()
        try:
            current = 1
            for _ in range(150):
                upcoming = 3 - current
                swap = Replacement("a", 1, blobs[upcoming], upcoming, blobs[current])
                assert backend.replace(NAMESPACE, [swap]) == [True]
                current = upcoming
        finally:
            stop.set()
            for thread in threads:
                thread.join()
        assert set(seen) == {"ok", "listed once"}, seen
        assert seen["ok"] > 0


@pytest.fixture(params=["file", "s3", "s3-layout1"])
def object_place(request: pytest.FixtureRequest, tmp_path: Path) -> Place:
    return _place(request.param, request, tmp_path)


def _layout_2(backend: Any) -> bool:
    return bool(backend.inner.prefix.object_layout == 2)


def test_object_store_readers_see_the_old_or_the_new_blob_during_a_swap(
    object_place: Place, keyring: gp.KeyRing, monkeypatch: pytest.MonkeyPatch
) -> None:
    with object_place.open(keyring) as store, object_place.open(keyring) as reading:
        store.save("a", order_v1("a", 1))
        old = store.backend.get(NAMESPACE, "a", 1)[1]
        new = _sealed(keyring, "a", 1, order_v2("a", 1), "order", 2)
        objects = reading.backend.inner._objects  # type: ignore[attr-defined]
        # layout 2 reads a known version in one GET (get_blob), layout 1 lists first
        read = "get_blob" if _layout_2(reading.backend) else "read"
        real_read = getattr(objects, read)
        swapped: list[list[bool]] = []

        def read_after_a_swap(path: str) -> Any:
            """The reader is about to read; a writer swaps the version first."""
            if not swapped:
                swapped.append(store.backend.replace(NAMESPACE, [Replacement("a", 1, new, 2, old)]))
            return real_read(path)

        monkeypatch.setattr(objects, read, read_after_a_swap)
        try:
            info, blob = reading.backend.get(NAMESPACE, "a", 1)
        finally:
            assert swapped == [[True]]
        assert (info.format_version, blob) == (2, new)


@pytest.mark.parametrize("kind", ["s3", "s3-layout1"])
def test_two_swaps_expecting_the_same_blob_on_s3_do_not_both_win(
    tmp_path: Path, request: pytest.FixtureRequest, keyring: gp.KeyRing, monkeypatch: Any, kind: str
) -> None:
    place = _place(kind, request, tmp_path)
    with place.open(keyring) as first, place.open(keyring) as second:
        first.save("a", order_v1("a", 1))
        old = first.backend.get(NAMESPACE, "a", 1)[1]
        mine = _sealed(keyring, "a", 1, order_v1("a", 1), "order", 1)
        theirs = _sealed(keyring, "a", 1, order_v1("a", 1), "order", 1)
        objects = first.backend.inner._objects  # type: ignore[attr-defined]
        read = "get_blob" if _layout_2(first.backend) else "read"
        real_read = getattr(objects, read)
        raced: list[list[bool]] = []

        def read_then_lose_the_race(path: str, *limit: int) -> Any:
            data = real_read(path, *limit)
            if not raced:
                raced.append(
                    second.backend.replace(NAMESPACE, [Replacement("a", 1, theirs, 1, old)])
                )
            return data

        monkeypatch.setattr(objects, read, read_then_lose_the_race)
        outcome = first.backend.replace(NAMESPACE, [Replacement("a", 1, mine, 1, old)])
        assert raced == [[True]]
        assert outcome == [False]
        assert second.backend.get(NAMESPACE, "a", 1)[1] == theirs


# 8. Arguments and progress.


@pytest.mark.parametrize("batch_size", [0, -1, 1.5, "10", True, None])
def test_a_bad_batch_size_is_refused_before_anything_is_written(
    tmp_path: Path, request: pytest.FixtureRequest, keyring: gp.KeyRing, batch_size: Any
) -> None:
    place = _place("sqlite", request, tmp_path)
    with place.open(keyring, formats(newest=1)) as store:
        store.save("a", order_v1("a", 1))
    keyring.rotate()
    with place.open(keyring) as store:
        raw = place.snapshot()
        with pytest.raises(gp.InvalidArgument, match="batch_size"):
            store.migrate("order", batch_size=batch_size)
        with pytest.raises(gp.InvalidArgument, match="batch_size"):
            store.migrate("order", batch_size=batch_size, dry_run=True)
        with pytest.raises(gp.InvalidArgument, match="batch_size"):
            store.reseal(batch_size=batch_size)
        assert place.snapshot() == raw
        assert store.migrate("order", batch_size=1).migrated == 1  # a valid size works


def test_other_bad_arguments_are_refused(sqlite_url: str, keyring: gp.KeyRing) -> None:
    with gp.open_store(sqlite_url, keyring=keyring, formats=formats()) as store:
        store.save("a", order_v1("a", 1))
        with pytest.raises(gp.InvalidArgument, match="progress"):
            store.migrate("order", progress="every 100")  # type: ignore[arg-type]
        with pytest.raises(gp.InvalidArgument, match="progress"):
            store.reseal(progress=42)  # type: ignore[arg-type]
        with pytest.raises(gp.InvalidArgument, match="not registered"):
            store.migrate("invoice")
        assert store.versions("a")[0].format_version == 1


def _monotonic(calls: list[tuple[int, int]]) -> None:
    dones = [done for done, _total in calls]
    assert dones == sorted(dones), calls
    assert all(0 <= done <= total for done, total in calls), calls


@pytest.mark.parametrize("dry_run", [False, True])
def test_progress_counts_every_record_looked_at(
    sqlite_url: str, keyring: gp.KeyRing, dry_run: bool
) -> None:
    with gp.open_store(sqlite_url, keyring=keyring, formats=formats()) as store:
        for index in range(50):
            key = f"k{index:02d}"
            for version in range(1, 6):
                store.save(key, note(key, version) if index % 10 == 0 else order_v1(key, version))
        total = store.usage().records
        assert total == 250
        calls: list[tuple[int, int]] = []
        report = store.migrate(
            "order", batch_size=7, dry_run=dry_run, progress=lambda *call: calls.append(call)
        )
        assert (report.scanned, report.migrated, report.failed) == (225, 225, [])
        _monotonic(calls)
        assert calls[-1] == (total, total)
        assert calls[0][0] < total  # called while the run goes on, not only at the end
        assert {t for _done, t in calls} == {total}

        resealing: list[tuple[int, int]] = []
        store.reseal(batch_size=3, progress=lambda *call: resealing.append(call))
        _monotonic(resealing)
        assert resealing[-1] == (total, total)


def test_progress_of_a_namespace_that_grows_during_the_run(
    sqlite_url: str, keyring: gp.KeyRing
) -> None:
    with gp.open_store(sqlite_url, keyring=keyring, formats=formats()) as store:
        for index in range(120):
            store.save(f"k{index:03d}", order_v1(f"k{index:03d}", 1))
        calls: list[tuple[int, int]] = []

        def grow(done: int, total: int) -> None:
            calls.append((done, total))
            if len(calls) == 1:  # a writer adds records after the run started
                for index in range(5):
                    store.save(f"z{index}", order_v1(f"z{index}", 1))

        report = store.migrate("order", batch_size=10, progress=grow)
        _monotonic(calls)
        assert calls[0][1] == 120  # the count when the run started
        assert report.scanned >= 120
        assert calls[-1] == (report.scanned, report.scanned)  # total never below done
        assert report.migrated == report.scanned and report.failed == []
        rest = store.migrate("order")
        assert (rest.scanned, rest.migrated + rest.already_current) == (125, 125)
        assert {ref.format_version for ref in _refs(store).values()} == {2}
