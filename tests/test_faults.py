"""Fault injection at the storage boundary: a full disk, a failing delete, a dropped connection.

The faults are injected *around* the real storage: the object-store driver
of a real backend (local files, S3 on moto, with or without a SQL catalog) is
wrapped so that one primitive fails as the storage would fail it, while every
other call reaches the real storage; PostgreSQL connections are really
terminated by the server. Afterwards: the operation raised a ``BackendError``
that says what to do, nothing was half-written, nothing was lost, and the
store works again once the fault is gone.
"""

from __future__ import annotations

import errno
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
from _interleave import OrderV1, OrderV2, order_formats

import gotstate_persist as gp
from gotstate_persist.backends.catalog import CatalogBackend
from gotstate_persist.backends.objectstore import ObjectStoreBackend

UrlAndOptions = tuple[str, dict[str, Any]]


class _Faulty:
    """The real driver, except that the named primitives raise ``error``."""

    def __init__(self, real: Any, error: BaseException, methods: set[str]) -> None:
        self._real, self._error, self._methods = real, error, methods

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._real, name)
        if name not in self._methods:
            return attribute

        def failing(*args: Any, **kwargs: Any) -> Any:
            raise self._error

        return failing


def _object_store(backend: Any) -> Any:
    """The ObjectStoreBackend (or catalog) under a store's quota adapter."""
    inner = getattr(backend, "_inner", backend)
    return inner


@contextmanager
def _fault(store: gp.Store, error: BaseException, *methods: str) -> Iterator[None]:
    target = _object_store(store.backend)
    holders = [target] if isinstance(target, ObjectStoreBackend) else [target, target._store]
    saved = [holder._objects for holder in holders]
    for holder in holders:
        holder._objects = _Faulty(holder._objects, error, set(methods))
    try:
        yield
    finally:
        for holder, objects in zip(holders, saved, strict=True):
            holder._objects = objects


@pytest.fixture(params=["file", "s3", "s3-layout1", "file+catalog"])
def place(request: pytest.FixtureRequest, tmp_path: Path) -> UrlAndOptions:
    if request.param == "file":
        return f"file://{tmp_path / 'blobs'}", {}
    if request.param == "file+catalog":
        return f"file://{tmp_path / 'blobs'}", {"catalog": f"sqlite:///{tmp_path / 'c.db'}"}
    url, options = request.getfixturevalue("s3_url" if request.param == "s3" else "s3_layout1_url")
    return url, options


def _snapshot(store: gp.Store) -> tuple[Any, ...]:
    keys = store.keys()
    return (
        keys,
        [[(r.version, r.format_version, r.size) for r in store.versions(k)] for k in keys],
        store.usage(recount=True),
    )


def test_a_full_disk_refuses_a_save_and_writes_nothing(place: UrlAndOptions) -> None:
    url, options = place
    keys = gp.KeyRing.generate()
    with gp.open_store(url, keyring=keys, formats=order_formats(1), **options) as store:
        store.save("o", OrderV1("1"))
        before = _snapshot(store)
        full = OSError(errno.ENOSPC, "No space left on device")
        with (
            _fault(store, full, "create", "check_and_create", "put_blob"),
            pytest.raises(gp.BackendError, match="no space is left"),
        ):
            store.save("o", OrderV1("2"))
        assert _snapshot(store) == before
        assert store.load("o") == OrderV1("1")
        ref = store.save("o", OrderV1("3"))  # the disk has room again
        assert store.load("o") == OrderV1("3") and ref.version >= 2


def test_a_failing_delete_during_migrate_loses_and_resurrects_nothing(
    place: UrlAndOptions,
) -> None:
    url, options = place
    keys = gp.KeyRing.generate()
    with gp.open_store(url, keyring=keys, formats=order_formats(1), **options) as store:
        for i in range(3):
            store.save(f"o{i}", OrderV1(str(i)))
    with gp.open_store(url, keyring=keys, formats=order_formats(2), **options) as store:
        refused = PermissionError(errno.EACCES, "Access Denied")
        with _fault(store, refused, "remove"):
            try:
                store.migrate("order")
            except gp.BackendError as exc:  # plain stores: the old object could not go
                assert "permission denied" in str(exc)
        for i in range(3):  # every record reads as the newest format, once
            assert store.load(f"o{i}") == OrderV2(str(i), 2)
            assert len(store.versions(f"o{i}")) == 1
        assert store.usage(recount=True).records == 3
        store.delete("o0")  # a deleted record stays deleted
        with pytest.raises(gp.NotFound):
            store.load("o0")
        assert store.versions("o0") == [] and store.keys() == ["o1", "o2"]
        again = store.migrate("order")  # finishes the job, sweeps what failed removes left
        assert again.migrated + again.already_current == 2 and again.failed == []
        assert [r.format_version for k in ("o1", "o2") for r in store.versions(k)] == [2, 2]
        backend = _object_store(store.backend)
        if isinstance(backend, ObjectStoreBackend) and backend._objects.serializes_writers:
            assert backend.sweep(store.namespace) == 0  # the rerun's sweep took them
            assert backend.usage(store.namespace).records == 2
            walked = backend._objects.walk(backend._root, sizes=False)
            assert sum(1 for parts, _size in walked if parts[-1].startswith("v")) == 2
        if isinstance(backend, CatalogBackend):
            assert backend.sweep(store.namespace, older_than_s=0) == 0  # nothing left over
            rows = backend._rows.row_objects(store.namespace)
            assert len(rows) == 2
        assert store.usage(recount=True).records == 2


def test_dropped_connections_never_leave_half_a_write(pg_url: str, postgres_server: Any) -> None:
    """The server terminates every connection before each save: each either lands or not."""
    keys = gp.KeyRing.generate()
    database = pg_url.rsplit("/", 1)[1]
    with gp.open_store(pg_url, keyring=keys, formats=order_formats(1)) as store:
        landed = 0
        for i in range(4):
            with psycopg.connect(postgres_server.admin_url, autocommit=True) as admin:
                admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = %s AND pid <> pg_backend_pid()",
                    (database,),
                )
            try:
                store.save("o", OrderV1(str(i)))
                landed += 1
            except gp.BackendError as exc:
                assert "retry" in str(exc) or "check" in str(exc)
        store.save("o", OrderV1("last"))  # the pool recovered
        assert [r.version for r in store.versions("o")] == list(range(1, landed + 2))
        assert store.load("o") == OrderV1("last")
        assert store.usage(recount=True).drift is None
