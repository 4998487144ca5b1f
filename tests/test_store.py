"""Store semantics on the embedded SQLite backend (real files, real processes)."""

from __future__ import annotations

import multiprocessing
import sqlite3
from decimal import Decimal, InvalidOperation, localcontext
from pathlib import Path

import msgspec
import pytest
from gotstate.core.events import Event
from order_workflow import build_order_machine

import gotstate_persist as gp
from gotstate_persist import sealing
from gotstate_persist.codec import MSGPACK
from gotstate_persist.migrations import HEAD_REVISION


class Order(msgspec.Struct, frozen=True):
    id: str
    total: int


class Note(msgspec.Struct, frozen=True):
    text: str


def _formats() -> gp.FormatRegistry:
    formats = gp.FormatRegistry()
    formats.register(Order, kind="order", version=1)
    formats.register(Note, kind="note", version=1)
    return formats


def _db(url: str) -> str:
    return url.removeprefix("sqlite:///")


def _dump(url: str) -> list[str]:
    with sqlite3.connect(_db(url)) as conn:
        return list(conn.iterdump())


@pytest.fixture
def rstore(sqlite_url: str, keyring: gp.KeyRing):  # type: ignore[no-untyped-def]
    with gp.open_store(sqlite_url, keyring=keyring, formats=_formats()) as opened:
        yield opened


def test_design_example_records(rstore: gp.Store) -> None:
    ref = rstore.save("o-1", Order("o-1", 30))
    assert rstore.load("o-1") == Order("o-1", 30)
    assert (ref.key, ref.version, ref.kind, ref.format_version) == ("o-1", 1, "order", 1)
    assert ref.namespace == "default"
    assert ref.created_at.tzinfo is not None
    assert ref.size == len(MSGPACK.encode(("order", 1, Order("o-1", 30)))) + 39


def test_versions_count_up_and_load_any_version(rstore: gp.Store) -> None:
    for total in range(1, 4):
        rstore.save("o", Order("o", total))
    assert [r.version for r in rstore.versions("o")] == [1, 2, 3]
    assert rstore.load("o") == Order("o", 3)
    assert rstore.load("o", version=1) == Order("o", 1)
    with pytest.raises(gp.NotFound):
        rstore.load("o", version=4)


def test_missing_keys(rstore: gp.Store) -> None:
    assert rstore.versions("nope") == []
    with pytest.raises(gp.NotFound):
        rstore.load("nope")
    with pytest.raises(gp.NotFound):
        rstore.restore_machine("nope", build_order_machine())
    with pytest.raises(gp.NotFound):
        rstore.delete("nope")


def test_versions_never_reused_after_delete(rstore: gp.Store) -> None:
    rstore.save("k", Order("k", 1))
    rstore.save("k", Order("k", 2))
    assert rstore.delete("k", version=1) == 1
    assert [r.version for r in rstore.versions("k")] == [2]
    assert rstore.delete("k") == 1
    assert rstore.keys() == []
    assert rstore.save("k", Order("k", 3)).version == 3
    assert rstore.keys() == ["k"]


def test_expected_version_compare_and_set(rstore: gp.Store, sqlite_url: str) -> None:
    assert rstore.save("cas", Order("a", 1), expected_version=0).version == 1
    before = _dump(sqlite_url)
    with pytest.raises(gp.VersionConflict) as info:
        rstore.save("cas", Order("a", 2), expected_version=0)
    assert info.value.actual == 1
    assert _dump(sqlite_url) == before
    assert rstore.save("cas", Order("a", 2), expected_version=1).version == 2
    rstore.delete("cas")
    assert rstore.save("cas", Order("a", 3), expected_version=0).version == 3


def test_one_kind_per_key(rstore: gp.Store, sqlite_url: str) -> None:
    rstore.save("k", Order("k", 1))
    before = _dump(sqlite_url)
    with pytest.raises(gp.FormatError, match=r"'order'.*'note'"):
        rstore.save("k", Note("hello"))
    with pytest.raises(gp.FormatError, match=r"'order'.*'gotstate.machine'"):
        rstore.save_machine("k", build_order_machine())
    assert _dump(sqlite_url) == before
    with pytest.raises(gp.FormatError, match="not a machine snapshot"):
        rstore.restore_machine("k", build_order_machine())


@pytest.mark.parametrize(
    "key", ["", "x" * 256, "é" * 128, "tab\there", "nul\x00", "del\x7f", 42, "\ud800"]
)
def test_bad_keys_are_invalid_arguments(rstore: gp.Store, key: object) -> None:
    with pytest.raises(gp.InvalidArgument) as info:
        rstore.save(key, Order("x", 1))  # type: ignore[arg-type]
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("key", ["x" * 255, "é" * 127, "../x", "a/b", "UPPER", "upper", "%_*?"])
def test_awkward_keys_are_stored_distinctly(rstore: gp.Store, key: str) -> None:
    rstore.save(key, Order(key, 1))
    rstore.save(key.swapcase()[:100] + "!", Order("other", 2))
    assert rstore.load(key) == Order(key, 1)
    assert key in rstore.keys()


def test_prefix_listing_is_exact(rstore: gp.Store) -> None:
    for key in ("order-1", "order-2", "Order-3", "orders", "ord%", "x"):
        rstore.save(key, Order(key, 1))
    assert rstore.keys(prefix="order-") == ["order-1", "order-2"]
    assert rstore.keys(prefix="ord%") == ["ord%"]
    assert rstore.keys(prefix="ORDER") == []


def test_namespaces_isolate(sqlite_url: str, keyring: gp.KeyRing) -> None:
    formats = _formats()
    with (
        gp.open_store(sqlite_url, namespace="a", keyring=keyring, formats=formats) as a,
        gp.open_store(sqlite_url, namespace="b", keyring=keyring, formats=formats) as b,
    ):
        a.save("k", Order("a", 1))
        a.save("k", Order("a", 2))
        b.save("k", Order("b", 1))
        assert a.load("k") == Order("a", 2)
        assert b.load("k") == Order("b", 1)
        assert [r.version for r in b.versions("k")] == [1]
        assert a.usage().records == 2 and b.usage().records == 1
        b.delete("k")
        assert a.keys() == ["k"] and b.keys() == []


def test_usage(rstore: gp.Store) -> None:
    assert rstore.usage() == gp.Usage(bytes=0, records=0, keys=0)
    refs = [rstore.save("a", Order("a", 1)), rstore.save("a", Order("a", 2))]
    refs.append(rstore.save("b", Order("b", 1)))
    assert rstore.usage() == gp.Usage(bytes=sum(r.size for r in refs), records=3, keys=2)


def test_reads_never_write(rstore: gp.Store, sqlite_url: str) -> None:
    rstore.save("k", Order("k", 1))
    rstore.save_machine("m", build_order_machine())
    before = _dump(sqlite_url)
    rstore.load("k")
    rstore.restore_machine("m", build_order_machine())
    rstore.versions("k")
    rstore.keys()
    rstore.usage()
    assert _dump(sqlite_url) == before


def _tamper(url: str, sql: str, *params: object) -> None:
    with sqlite3.connect(_db(url)) as conn:
        conn.execute(sql, params)


def test_moved_blob_is_integrity_error(rstore: gp.Store, sqlite_url: str) -> None:
    rstore.save("a", Order("a", 1))
    rstore.save("b", Order("b", 1))
    _tamper(
        sqlite_url,
        "UPDATE gotstate_persist_records SET blob = "
        "(SELECT blob FROM gotstate_persist_records WHERE key='a') WHERE key='b'",
    )
    with pytest.raises(gp.IntegrityError):
        rstore.load("b")
    assert rstore.load("a") == Order("a", 1)


def test_copied_to_other_namespace_is_integrity_error(sqlite_url: str, keyring: gp.KeyRing) -> None:
    formats = _formats()
    with gp.open_store(sqlite_url, namespace="a", keyring=keyring, formats=formats) as a:
        a.save("k", Order("a", 1))
    _tamper(sqlite_url, "UPDATE gotstate_persist_records SET namespace='b'")
    _tamper(sqlite_url, "UPDATE gotstate_persist_keys SET namespace='b'")
    with (
        gp.open_store(sqlite_url, namespace="b", keyring=keyring, formats=formats) as b,
        pytest.raises(gp.IntegrityError),
    ):
        b.load("k")


def test_tampered_blob_and_kind_column(rstore: gp.Store, sqlite_url: str) -> None:
    rstore.save("k", Order("k", 1))
    _tamper(sqlite_url, "UPDATE gotstate_persist_records SET kind='note'")
    with pytest.raises(gp.IntegrityError):
        rstore.load("k")
    _tamper(sqlite_url, "UPDATE gotstate_persist_records SET kind='order'")
    assert rstore.load("k") == Order("k", 1)
    _tamper(
        sqlite_url,
        "UPDATE gotstate_persist_records SET blob = substr(blob, 1, length(blob) - 1)",
    )
    with pytest.raises(gp.IntegrityError):
        rstore.load("k")


def test_oversized_and_hostile_blobs_in_storage(rstore: gp.Store, sqlite_url: str) -> None:
    rstore.save("k", Order("k", 1))
    _tamper(sqlite_url, "UPDATE gotstate_persist_records SET blob = ?", b"\x00" * (17 << 20))
    with pytest.raises(gp.FormatError):
        rstore.load("k")
    _tamper(sqlite_url, "UPDATE gotstate_persist_records SET blob = ?", b"not a blob")
    with pytest.raises(gp.FormatError):
        rstore.load("k")


def test_authenticated_but_hostile_payload_is_format_error(
    rstore: gp.Store, sqlite_url: str, keyring: gp.KeyRing
) -> None:
    """A blob sealed with the right key (a compromised writer) still cannot crash a reader."""
    rstore.save("k", Order("k", 1))
    hostile = [
        b"\x93\xa5order\x01" + b"\x91" * 100_000,  # deep nesting
        b"\x93\xa5order\x01\xdd\xff\xff\xff\xff",  # huge array claim
        b"\x93\xa5order\x01\x82\xa2id\xa1x\xa5total\xa3abc",  # wrong field type
        b"\x93\xa5order\x01\x82\xa2id\xc4\x01x",  # bin where str expected
        b"\x93\xa5order\x01\x81\xa2id\xa2\xff\xfe",  # invalid UTF-8
    ]
    for payload in hostile:
        blob = sealing.seal(keyring, payload, codec_id=1, namespace="default", key="k", version=1)
        _tamper(sqlite_url, "UPDATE gotstate_persist_records SET blob = ?", blob)
        with pytest.raises(gp.FormatError):
            rstore.load("k")


def test_wrong_rotated_and_verify_only_keyrings(sqlite_url: str) -> None:
    formats = _formats()
    keys = gp.KeyRing.generate()
    with gp.open_store(sqlite_url, keyring=keys, formats=formats) as s:
        s.save("k", Order("k", 1))
    with (
        gp.open_store(sqlite_url, keyring=gp.KeyRing.generate(), formats=formats) as other,
        pytest.raises(gp.IntegrityError),
    ):
        other.load("k")
    old = keys.primary_id
    keys.rotate()
    with gp.open_store(sqlite_url, keyring=keys, formats=formats) as s:
        assert s.load("k", version=1) == Order("k", 1)
        s.save("k", Order("k", 2))
        keys.retire(old)
        with pytest.raises(gp.IntegrityError):
            s.load("k", version=1)
        assert s.load("k") == Order("k", 2)

    signing = gp.KeyRing.generate("ed25519")
    with gp.open_store(sqlite_url, namespace="signed", keyring=signing, formats=formats) as s:
        s.save("k", Order("k", 9))
    verifier = signing.public()
    with gp.open_store(sqlite_url, namespace="signed", keyring=verifier, formats=formats) as s:
        assert s.load("k") == Order("k", 9)
        with pytest.raises(gp.InvalidArgument):
            s.save("k", Order("k", 10))


def _append_worker(url: str, keys_text: str, worker: int, count: int) -> None:
    formats = _formats()
    keys = gp.KeyRing.load(keys_text)
    with gp.open_store(url, keyring=keys, formats=formats) as s:
        for i in range(count):
            s.save("shared", Order(f"w{worker}", i))


def test_concurrent_appends_from_processes(sqlite_url: str, keyring: gp.KeyRing) -> None:
    workers, per_worker = 4, 15
    with gp.open_store(sqlite_url, keyring=keyring, formats=_formats()):
        pass  # create the schema once, as a deployment would
    ctx = multiprocessing.get_context("spawn")
    procs = [
        ctx.Process(target=_append_worker, args=(sqlite_url, keyring.export(), w, per_worker))
        for w in range(workers)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0
    with gp.open_store(sqlite_url, keyring=keyring, formats=_formats()) as s:
        refs = s.versions("shared")
        assert [r.version for r in refs] == list(range(1, workers * per_worker + 1))
        seen = {(r.id, r.total) for r in (s.load("shared", version=x.version) for x in refs)}
    assert seen == {(f"w{w}", i) for w in range(workers) for i in range(per_worker)}


def test_concurrent_opens_of_fresh_database(tmp_path: Path, keyring: gp.KeyRing) -> None:
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    ctx = multiprocessing.get_context("spawn")
    procs = [
        ctx.Process(target=_append_worker, args=(url, keyring.export(), w, 2)) for w in range(3)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0
    with gp.open_store(url, keyring=keyring, formats=_formats()) as s:
        assert len(s.versions("shared")) == 6


def test_sqlite_runs_in_wal_mode(rstore: gp.Store, sqlite_url: str) -> None:
    rstore.save("k", Order("k", 1))
    with sqlite3.connect(_db(sqlite_url)) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_application_alembic_table_is_untouched(sqlite_url: str, keyring: gp.KeyRing) -> None:
    with sqlite3.connect(_db(sqlite_url)) as conn:
        conn.execute("CREATE TABLE alembic_version (version_num VARCHAR(32) PRIMARY KEY)")
        conn.execute("INSERT INTO alembic_version VALUES ('app_rev_1')")
    with gp.open_store(sqlite_url, keyring=keyring) as s:
        s.save_machine("m", build_order_machine())
    with sqlite3.connect(_db(sqlite_url)) as conn:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchall() == [
            ("app_rev_1",)
        ]
        ours = conn.execute("SELECT version_num FROM gotstate_persist_alembic_version").fetchall()
    assert ours == [(HEAD_REVISION,)]


def test_schema_newer_than_code_is_refused_untouched(sqlite_url: str, keyring: gp.KeyRing) -> None:
    with gp.open_store(sqlite_url, keyring=keyring):
        pass
    _tamper(sqlite_url, "UPDATE gotstate_persist_alembic_version SET version_num='v9.0.0.a'")
    before = _dump(sqlite_url)
    with pytest.raises(gp.SchemaTooNew, match="upgrade gotstate-persist"):
        gp.open_store(sqlite_url, keyring=keyring)
    assert _dump(sqlite_url) == before


def test_unknown_scheme_lists_known_ones(keyring: gp.KeyRing) -> None:
    with pytest.raises(gp.InvalidArgument, match=r"sqlite") as info:
        gp.open_store("nosuch://x", keyring=keyring)
    assert "register_backend" in str(info.value)


def test_unusable_database_is_backend_error(tmp_path: Path, keyring: gp.KeyRing) -> None:
    (tmp_path / "dir.db").mkdir()
    with pytest.raises(gp.BackendError):
        gp.open_store(f"sqlite:///{tmp_path / 'dir.db'}", keyring=keyring)


def test_closed_store_is_backend_error(rstore: gp.Store) -> None:
    rstore.close()
    with pytest.raises(gp.BackendError, match="closed"):
        rstore.keys()


def test_bad_arguments(sqlite_url: str, keyring: gp.KeyRing) -> None:
    with pytest.raises(gp.InvalidArgument):
        gp.open_store(sqlite_url, keyring="not a keyring")  # type: ignore[arg-type]
    with pytest.raises(gp.InvalidArgument):
        gp.open_store(sqlite_url, keyring=keyring, namespace="")
    with pytest.raises(gp.InvalidArgument):
        gp.open_store(sqlite_url, keyring=keyring, codec="pickle")
    with gp.open_store(sqlite_url, keyring=keyring) as s:
        with pytest.raises(gp.InvalidArgument):
            s.save("k", Order("x", 1))  # not registered in this store's formats
        with pytest.raises(gp.InvalidArgument):
            s.load("k", version=0)


class Priced(msgspec.Struct, frozen=True):
    id: str
    price: Decimal
    history: list[Decimal] = []


@pytest.mark.parametrize("trap", [True, False], ids=["trapping", "quiet-context"])
@pytest.mark.parametrize("codec", ["msgpack", "json"])
def test_signaling_nan_in_a_record_is_refused_before_anything_is_written(
    sqlite_url: str, keyring: gp.KeyRing, codec: str, trap: bool
) -> None:
    """A signaling NaN raises on every comparison, so save cannot check that it comes
    back: a FormatError saying what to store instead, whatever the decimal context."""
    formats = _formats()
    formats.register(Priced, kind="priced", version=1)
    with gp.open_store(sqlite_url, keyring=keyring, formats=formats, codec=codec) as store:
        store.save("p", Priced("p", Decimal("1.50")))
        before = _dump(sqlite_url)
        bad = [
            Priced("p", Decimal("sNaN")),
            Priced("p", Decimal("-sNaN4")),
            Priced("p", Decimal("1"), [Decimal("2"), Decimal("sNaN")]),
        ]
        with localcontext() as context:
            context.traps[InvalidOperation] = trap
            for record in bad:
                for key in ("p", "new"):
                    with pytest.raises(
                        gp.FormatError,
                        match=r"Priced cannot be saved: .*signaling NaN.*Decimal\('NaN'\)",
                    ):
                        store.save(key, record)
        assert _dump(sqlite_url) == before  # nothing written
        assert store.load("p") == Priced("p", Decimal("1.50"))


@pytest.mark.parametrize("codec", ["msgpack", "json"])
def test_odd_but_comparable_decimals_in_a_record_round_trip_exactly(
    sqlite_url: str, keyring: gp.KeyRing, codec: str
) -> None:
    formats = _formats()
    formats.register(Priced, kind="priced", version=1)
    odd = ["NaN", "-NaN7", "Infinity", "-Infinity", "-0", "0E-30", "1E+999999999", "1.000"]
    with gp.open_store(sqlite_url, keyring=keyring, formats=formats, codec=codec) as store:
        for text in odd:
            record = Priced(text, Decimal(text), [Decimal(text)])
            store.save(text, record)
            assert repr(store.load(text)) == repr(record)


def test_unregistered_kind_on_load_is_format_error(
    rstore: gp.Store, sqlite_url: str, keyring: gp.KeyRing
) -> None:
    rstore.save("k", Order("k", 1))
    with (
        gp.open_store(sqlite_url, keyring=keyring) as plain,
        pytest.raises(gp.FormatError, match="does not know"),
    ):
        plain.load("k")


def test_machine_versions_and_restore_older(store: gp.Store) -> None:
    machine = build_order_machine()
    machine.start()
    store.save_machine("o", machine)
    machine.process_event(Event("start"))
    store.save_machine("o", machine)
    fresh = build_order_machine()
    store.restore_machine("o", fresh, version=1)
    assert fresh.current_state.name == "idle"
    store.restore_machine("o", fresh)
    assert fresh.current_state.name == "cart"


def test_unknown_backend_options_are_named_not_echoed(sqlite_url: str, keyring: gp.KeyRing) -> None:
    with pytest.raises(gp.InvalidArgument, match="endpoint_url") as info:
        gp.open_store(sqlite_url, keyring=keyring, endpoint_url="http://user:hunter2@x")
    assert "hunter2" not in str(info.value)
