"""Object stores with a SQL catalog: the conformance suite, crash recovery, exact quotas."""

from __future__ import annotations

import multiprocessing
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import gotstate_persist as gp
from gotstate_persist.backends import Backend, Usage, open_backend
from gotstate_persist.backends._layout import LAYOUT_OBJECT
from gotstate_persist.backends.catalog import CatalogBackend
from gotstate_persist.testing import BackendTests

NS = "ns"
KIND = "test.kind"
UrlAndOptions = tuple[str, dict[str, Any]]


class TestFilesWithSQLiteCatalog(BackendTests):
    @pytest.fixture
    def backend_url(self, tmp_path: Path) -> UrlAndOptions:
        return f"file://{tmp_path / 'blobs'}", {"catalog": f"sqlite:///{tmp_path / 'cat.db'}"}

    @pytest.fixture
    def backend(self, backend_url: UrlAndOptions) -> Iterator[Backend]:
        url, options = backend_url
        with open_backend(url, **options) as opened:
            yield opened


class TestS3WithPostgresCatalog(BackendTests):
    @pytest.fixture
    def backend_url(self, s3_url: UrlAndOptions, pg_url: str) -> UrlAndOptions:
        url, options = s3_url
        return url, {**options, "catalog": pg_url}

    @pytest.fixture
    def backend(self, backend_url: UrlAndOptions) -> Iterator[Backend]:
        url, options = backend_url
        with open_backend(url, **options) as opened:
            yield opened


@pytest.fixture(params=["files+sqlite", "s3+sqlite"])
def catalog_url(request: pytest.FixtureRequest, tmp_path: Path) -> UrlAndOptions:
    catalog = f"sqlite:///{tmp_path / 'cat.db'}"
    if request.param == "files+sqlite":
        return f"file://{tmp_path / 'blobs'}", {"catalog": catalog}
    url, options = request.getfixturevalue("s3_url")
    return url, {**options, "catalog": catalog}


def _put(backend: Backend, key: str, version: int, blob: bytes) -> None:
    backend.put(NS, key, version, blob, kind=KIND, format_version=1, created_at_us=1)


def _objects(backend: CatalogBackend) -> list[str]:
    """Every object below the prefix but the layout marker at its root."""
    top = backend._store._path([])
    found = ("/".join(c) for c, _ in backend._objects.walk(top, sizes=False))
    return sorted(name for name in found if name != LAYOUT_OBJECT)


def test_reads_see_only_confirmed_versions(catalog_url: UrlAndOptions) -> None:
    url, options = catalog_url
    with open_backend(url, **options) as backend:
        assert isinstance(backend, CatalogBackend)
        _put(backend, "k", 1, b"one")
        # A writer that reserved version 2 and has not written its object yet.
        backend._rows.reserve(
            NS,
            "k",
            2,
            size=3,
            kind=KIND,
            format_version=1,
            created_at_us=1,
            expected_newest=None,
            reserved_at_us=1,
        )
        assert backend.get(NS, "k")[1] == b"one"
        assert [i.version for i in backend.versions(NS, "k")] == [1]
        with pytest.raises(gp.NotFound):
            backend.get(NS, "k", 2)
        assert backend.usage(NS) == Usage(6, 2, 1)  # the reservation is counted
        with pytest.raises(gp.VersionConflict):
            _put(backend, "k", 2, b"two")  # the number is taken


def test_sweep_settles_stale_reservations_and_removes_orphans(
    catalog_url: UrlAndOptions,
) -> None:
    url, options = catalog_url
    with open_backend(url, **options) as backend:
        assert isinstance(backend, CatalogBackend)
        _put(backend, "k", 1, b"one")
        # Killed after reserving and writing: a stale reservation with its object.
        backend._rows.reserve(
            NS, "k", 2, size=3, kind=KIND, format_version=1, created_at_us=1,
            expected_newest=None, reserved_at_us=1,
        )  # fmt: skip
        backend._objects.create(backend._object(NS, "k", 2, 1), b"two")
        # Killed after deleting rows, before removing the object: an orphan.
        _put(backend, "gone", 5, b"orphan")
        backend._catalog.delete_rows(NS, "gone")
        # An object of a key this catalog never held (another catalog's): left alone.
        backend._objects.create(backend._object(NS, "foreign", 1, 1), b"not ours")
        # A fresh reservation belongs to a live writer: kept.
        backend._rows.reserve(
            NS, "live", 1, size=4, kind=KIND, format_version=1, created_at_us=1,
            expected_newest=None, reserved_at_us=2**62,
        )  # fmt: skip
        # Killed after reserving, before writing: a stale reservation alone.
        backend._rows.reserve(
            NS, "k", 3, size=5, kind=KIND, format_version=1, created_at_us=1,
            expected_newest=None, reserved_at_us=1,
        )  # fmt: skip
        before = _objects(backend)
        assert len(before) == 4
        assert backend.sweep(NS) == 2  # the orphan and the reservation without object
        after = _objects(backend)
        assert [name[-22:] for name in after] == [
            "o" + "1".zfill(19) + ".1",  # foreign's, untouched
            "o" + "1".zfill(19) + ".1",
            "o" + "2".zfill(19) + ".1",
        ]
        assert [i.version for i in backend.versions(NS, "k")] == [1, 2]  # 2 confirmed
        assert backend.get(NS, "k")[1] == b"two"
        usage = backend.usage(NS)
        assert usage == Usage(3 + 3 + 4, 3, 2)  # the live writer's bytes stay counted
        recounted = backend.recount(NS)
        assert recounted.drift is None and recounted == usage
        assert backend.head(NS, "k").last_version == 3  # never reused
        _put(backend, "k", 4, b"four")
        assert backend.get(NS, "k")[1] == b"four"


def test_failed_object_write_withdraws_the_reservation(tmp_path: Path) -> None:
    root = tmp_path / "blobs"
    with open_backend(f"file://{root}", catalog=f"sqlite:///{tmp_path / 'c.db'}") as backend:
        _put(backend, "k", 1, b"one")
        directory = next(p for p in root.rglob("*") if p.is_file()).parent
        os.chmod(directory, 0o500)
        try:
            if os.geteuid() == 0:
                # root ignores permissions: make the next object's name a directory instead
                os.chmod(directory, 0o700)
                assert isinstance(backend, CatalogBackend)
                os.mkdir(backend._object(NS, "k", 2, 1))
            with pytest.raises(gp.BackendError):
                _put(backend, "k", 2, b"two")
        finally:
            os.chmod(directory, 0o700)
        assert backend.usage(NS) == Usage(3, 1, 1)
        assert [i.version for i in backend.versions(NS, "k")] == [1]


def _write_forever(url: str, options: dict[str, Any], ready: Any) -> None:
    with open_backend(url, **options) as backend:
        version = 0
        while True:
            version += 1
            _put(backend, "k", version, os.urandom(2000))
            if version == 3:
                ready.set()


def test_writer_killed_mid_write_leaks_no_usage(catalog_url: UrlAndOptions) -> None:
    url, options = catalog_url
    context = multiprocessing.get_context("spawn")
    ready = context.Event()
    child = context.Process(target=_write_forever, args=(url, options, ready))
    child.start()
    try:
        assert ready.wait(60)
    finally:
        os.kill(child.pid or 0, signal.SIGKILL)
        child.join(30)
    with open_backend(url, **options) as backend:
        assert isinstance(backend, CatalogBackend)
        backend.sweep(NS, older_than_s=0)  # the writer is dead: nothing is live
        recounted = backend.recount(NS)
        stored = backend.versions(NS, "k")
        assert recounted == Usage(sum(i.size for i in stored), len(stored), 1)
        objects = _objects(backend)
        assert len(objects) == len(stored)  # no orphan, no missing object
        for info in stored:
            assert len(backend.get(NS, "k", info.version)[1]) == info.size


def _save_until_refused(url: str, options: dict[str, Any], worker: int, gate: Any) -> None:
    with open_backend(url, **options) as backend:
        gate.wait()
        for version in range(1, 200):
            try:
                _put(backend, f"w{worker}", version, os.urandom(1000))
            except gp.QuotaExceeded:
                return


def test_racing_processes_never_exceed_a_byte_limit(catalog_url: UrlAndOptions) -> None:
    url, options = catalog_url
    limit = 23_500
    with open_backend(url, **options) as backend:
        backend.store_quota(NS, gp.Quota(max_bytes=limit), replace=True)
    context = multiprocessing.get_context("spawn")
    gate = context.Barrier(4)
    workers = [
        context.Process(target=_save_until_refused, args=(url, options, w, gate)) for w in range(4)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
        assert worker.exitcode == 0
    with open_backend(url, **options) as backend:
        usage = backend.usage(NS)
        assert usage.bytes == 23_000  # as many 1,000-byte blobs as fit, not one more
        assert backend.recount(NS) == usage
        stored = sum(i.size for k in backend.keys(NS) for i in backend.versions(NS, k))
        assert stored == usage.bytes


def test_store_with_catalog_round_trip(tmp_path: Path) -> None:
    keys = gp.KeyRing.generate()
    url = f"file://{tmp_path / 'blobs'}"
    catalog = f"sqlite:///{tmp_path / 'cat.db'}"
    quota = gp.Quota(max_versions_per_key=2, retention="prune-oldest")
    from order_workflow import build_order_machine

    machine = build_order_machine()
    machine.start()
    with gp.open_store(url, namespace="orders", keyring=keys, catalog=catalog, quota=quota) as s:
        for _ in range(4):
            s.save_machine("m", machine)
        assert [r.version for r in s.versions("m")] == [3, 4]
        assert s.usage(recount=True).drift is None
    objects = [p for p in (tmp_path / "blobs").rglob("*") if p.is_file()]
    assert sum(1 for p in objects if p.name != LAYOUT_OBJECT) == 2
    with gp.open_store(url, namespace="orders", keyring=keys, catalog=catalog) as s:
        assert s.quota == quota
        s.restore_machine("m", build_order_machine())


def test_catalog_options_need_a_catalog(tmp_path: Path) -> None:
    with pytest.raises(gp.InvalidArgument, match="catalog"):
        open_backend(f"file://{tmp_path}", catalog_options={"busy_timeout_ms": 5})
    with pytest.raises(gp.InvalidArgument, match="catalog"):
        open_backend(f"file://{tmp_path}", catalog=5)


def test_command_line_reads_and_sweeps_a_catalog(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from gotstate_persist.cli import main

    url, catalog = f"file://{tmp_path / 'blobs'}", f"sqlite:///{tmp_path / 'cat.db'}"
    with open_backend(url, catalog=catalog) as backend:
        assert isinstance(backend, CatalogBackend)
        _put(backend, "k", 1, b"one")
        _put(backend, "k", 2, b"orphan")
        backend._catalog.delete_rows(NS, "k", [2])  # killed before its object went
    assert main(["ls", url, "--catalog", catalog]) == 0
    assert "k" in capsys.readouterr().out
    assert main(["usage", url, "--catalog", catalog, "--namespace", NS]) == 0
    assert capsys.readouterr().out.split("\n")[1].split()[:5] == [NS, "3", "3", "B", "1"]
    assert main(["gc", url, "--catalog", catalog]) == 0
    assert "1 stale reservation(s) and orphan object(s) removed" in capsys.readouterr().out
    with open_backend(url, catalog=catalog) as backend:
        assert isinstance(backend, CatalogBackend)
        assert len(_objects(backend)) == 1
    # Reading never creates a catalog.
    missing = f"sqlite:///{tmp_path / 'none.db'}"
    assert main(["ls", url, "--catalog", missing]) == 2
    assert not (tmp_path / "none.db").exists()
    assert main(["gc", url, "--catalog", catalog, "--older-than", "-1"]) == 2


# Races and failures a review found; each must leave every acknowledged save readable.


def _catalog_backend(tmp_path: Path) -> CatalogBackend:
    backend = open_backend(f"file://{tmp_path / 'blobs'}", catalog=f"sqlite:///{tmp_path / 'c.db'}")
    assert isinstance(backend, CatalogBackend)
    return backend


def test_a_save_racing_a_sweep_is_never_taken_for_an_orphan(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with _catalog_backend(tmp_path) as backend:
        _put(backend, "k", 1, b"one")
        walk = backend._objects.walk
        saved: list[int] = []

        def walk_while_saving(top: str, *, sizes: bool) -> Iterator[tuple[list[str], int]]:
            if not saved:  # another writer saves while the sweep lists
                _put(backend, "k", 2, b"two")
                saved.append(2)
            yield from walk(top, sizes=sizes)

        monkeypatch.setattr(backend._objects, "walk", walk_while_saving)
        assert backend.sweep(NS) == 0
        monkeypatch.undo()
        assert saved == [2]
        assert backend.get(NS, "k")[1] == b"two"


def test_a_stale_reservation_confirmed_meanwhile_is_not_withdrawn(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with _catalog_backend(tmp_path) as backend:
        backend._rows.reserve(
            NS, "k", 1, size=3, kind=KIND, format_version=1, created_at_us=1,
            expected_newest=None, reserved_at_us=1,
        )  # fmt: skip
        names = backend._objects.names

        def slow_writer_finishes(directory: str, prefix: str = "", **kw: Any) -> list[str]:
            found = names(directory, prefix, **kw)  # not written yet, as the sweep sees it
            backend._objects.create(backend._object(NS, "k", 1, 1), b"one")
            assert backend._rows.confirm(NS, "k", 1) == []
            return found

        monkeypatch.setattr(backend._objects, "names", slow_writer_finishes)
        assert backend.sweep(NS) == 0
        monkeypatch.undo()
        assert backend.get(NS, "k")[1] == b"one"
        assert backend.usage(NS) == Usage(3, 1, 1) == backend.recount(NS)


def test_a_failed_save_prunes_nothing(tmp_path: Path) -> None:
    with _catalog_backend(tmp_path) as backend:
        backend.store_quota(
            NS, gp.Quota(max_versions_per_key=2, retention="prune-oldest"), replace=True
        )
        _put(backend, "k", 1, b"one")
        _put(backend, "k", 2, b"two")
        os.mkdir(backend._object(NS, "k", 3, 1))  # the object cannot be created
        with pytest.raises(gp.BackendError, match="another catalog"):
            _put(backend, "k", 3, b"three")
        assert [i.version for i in backend.versions(NS, "k")] == [1, 2]
        assert backend.usage(NS) == Usage(6, 2, 1) == backend.recount(NS)
        os.rmdir(backend._object(NS, "k", 3, 1))
        _put(backend, "k", 4, b"four")  # version 3 stays used; retention prunes on confirm
        assert [i.version for i in backend.versions(NS, "k")] == [2, 4]
        assert backend.usage(NS) == Usage(7, 2, 1) == backend.recount(NS)
        assert len(_objects(backend)) == 2


def test_a_refused_name_reserves_nothing(tmp_path: Path) -> None:
    with _catalog_backend(tmp_path) as backend:
        with pytest.raises(gp.InvalidArgument):
            _put(backend, "x" * 300, 1, b"one")
        assert backend.usage(NS) == Usage()
        assert backend.head(NS, "x" * 300).last_version == 0


def test_head_shows_what_readers_see(tmp_path: Path) -> None:
    with _catalog_backend(tmp_path) as backend:
        _put(backend, "k", 1, b"one")
        backend._rows.reserve(
            NS, "k", 2, size=3, kind=KIND, format_version=1, created_at_us=1,
            expected_newest=None, reserved_at_us=1,
        )  # fmt: skip
        head = backend.head(NS, "k")
        assert (head.last_version, head.newest, head.kind) == (2, 1, KIND)
        assert backend.get(NS, "k", head.newest)[1] == b"one"


def test_gc_visits_namespaces_holding_only_reservations(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from gotstate_persist.cli import main

    with _catalog_backend(tmp_path) as backend:
        _put(backend, "k", 1, b"one")
        backend._rows.reserve(
            "dead", "k", 1, size=1000, kind=KIND, format_version=1, created_at_us=1,
            expected_newest=None, reserved_at_us=1,
        )  # fmt: skip
        assert backend.usage("dead") == Usage(1000, 1, 1)
    url, catalog = f"file://{tmp_path / 'blobs'}", f"sqlite:///{tmp_path / 'c.db'}"
    assert main(["gc", url, "--catalog", catalog]) == 0
    assert "namespace 'dead': 1 removed" in capsys.readouterr().out
    with _catalog_backend(tmp_path) as backend:
        assert backend.usage("dead") == Usage()
        assert backend.get(NS, "k")[1] == b"one"


def test_migrate_and_reseal_through_a_catalog(tmp_path: Path) -> None:
    import msgspec

    class V1(msgspec.Struct):
        id: str

    class V2(msgspec.Struct):
        id: str
        n: int

    url, catalog = f"file://{tmp_path / 'blobs'}", f"sqlite:///{tmp_path / 'c.db'}"
    keys = gp.KeyRing.generate()
    old = gp.FormatRegistry()
    old.register(V1, kind="order")
    new = gp.FormatRegistry()
    new.register(V1, kind="order")
    new.register(V2, kind="order", version=2, upcast=lambda d: {**d, "n": 7})
    with gp.open_store(url, keyring=keys, formats=old, catalog=catalog) as store:
        for i in range(5):
            store.save(f"o{i}", V1(str(i)))
    keys.rotate()
    with gp.open_store(url, keyring=keys, formats=new, catalog=catalog) as store:
        report = store.migrate("order", batch_size=2)
        assert (report.migrated, report.failed) == (5, [])
        assert store.load("o3") == V2("3", 7)
        assert [r.format_version for r in store.versions("o3")] == [2]
        assert store.migrate("order").already_current == 5
        assert store.usage(recount=True).drift is None
        assert store.reseal().already_current == 5
    with open_backend(url, catalog=catalog) as backend:
        assert isinstance(backend, CatalogBackend)
        names = [name.rsplit("/", 1)[-1] for name in _objects(backend)]
        # rewritten objects are named by version, format and the rewrite's token
        assert len(names) == 5 and all(name.split(".")[1] == "2" for name in names)
        assert all(len(name.split(".")) == 3 for name in names)
        # A swap cut short: the object of the next format written, the row not switched.
        backend._objects.create(backend._object("default", "o1", 1, 3), b"x")
        assert backend.sweep("default") == 1
        assert len(_objects(backend)) == 5


def test_sweep_removes_a_dead_writers_temporary_but_not_a_fresh_one(tmp_path: Path) -> None:
    """A writer killed between writing its temporary and linking it leaves a ``.tmp-`` file
    that no row names: the sweep removes it once it is as old as a stale reservation."""
    root = tmp_path / "blobs"
    with open_backend(f"file://{root}", catalog=f"sqlite:///{tmp_path / 'c.db'}") as backend:
        assert isinstance(backend, CatalogBackend)
        _put(backend, "k", 1, b"one")
        (stored,) = _objects(backend)
        temporary = root / stored.rsplit("/", 1)[0] / ".tmp-0123456789abcdef"
        temporary.write_bytes(b"half a blob")
        backend.sweep(NS)  # default age: a live writer's temporary is left alone
        assert temporary.exists()
        backend.sweep(NS, older_than_s=0)  # every writer is known dead
        assert not temporary.exists()
        assert _objects(backend) == [stored]
        assert backend.get(NS, "k")[1] == b"one"
