"""Adversarial interleavings of saves, rewrites, deletes and sweeps (issue 11, parts 1 and 6).

Every protocol step of one operation is paused while each other operation
runs to completion (tests/_interleave.py); afterwards no record may be lost,
resurrected or orphaned. Plus the crash leftovers of a rewrite on plain object
stores, and real multi-process races of a migration against a looping sweep.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from _interleave import OrderV1, OrderV2, Outcome, interleave, order_formats, recount_until

import gotstate_persist as gp
from gotstate_persist.backends import Backend, open_backend
from gotstate_persist.backends._layout import LAYOUT_OBJECT
from gotstate_persist.backends._objectnames import parse_catalog_object_path
from gotstate_persist.backends.base import Replacement
from gotstate_persist.backends.catalog import CatalogBackend
from gotstate_persist.backends.objectstore import ObjectStoreBackend

NS = "ns"
KIND = "test.kind"
OLD = {1: b"old-1", 2: b"old-2"}
UrlAndOptions = tuple[str, dict[str, Any]]
#: Outcomes a racing operation may legitimately end with.
_LOSING = (gp.VersionConflict, gp.NotFound)


def _put(backend: Backend, version: int, blob: bytes) -> Any:
    return backend.put(NS, "k", version, blob, kind=KIND, format_version=1, created_at_us=1)


# The operations. Each takes the backend instance it runs on.
_OPERATIONS: dict[str, Callable[[Backend], Any]] = {
    "rewrite": lambda b: b.replace(NS, [Replacement("k", 1, b"new-1", 2, OLD[1])])[0],
    "rewrite-again": lambda b: b.replace(NS, [Replacement("k", 1, b"again-1", 2, OLD[1])])[0],
    # a reseal: same format, swapped in place on plain stores
    "reseal": lambda b: b.replace(NS, [Replacement("k", 1, b"resealed-1", 1, OLD[1])])[0],
    "sweep-now": lambda b: b.sweep(NS, older_than_s=0),
    "sweep": lambda b: b.sweep(NS),
    "delete-1": lambda b: b.delete(NS, "k", [1]),
    "delete-key": lambda b: b.delete(NS, "k"),
    "save": lambda b: _put(b, 3, b"new-3"),
    "read": lambda b: b.get(NS, "k", 1)[1],
}
_REWRITES = {"rewrite": b"new-1", "rewrite-again": b"again-1", "reseal": b"resealed-1"}


def _check(outcomes: dict[str, Outcome], reader: Backend) -> None:
    """What must hold after the two operations, whatever their order."""
    for name, outcome in outcomes.items():
        if outcome.error is not None and not isinstance(outcome.error, _LOSING):
            raise AssertionError(f"{name} failed: {outcome.error!r}") from outcome.error
    deleted_key = outcomes.get("delete-key", Outcome(error=gp.NotFound())).ok()
    deleted_one = deleted_key or outcomes.get("delete-1", Outcome(error=gp.NotFound())).ok()
    rewritten = [
        _REWRITES[name] for name, o in outcomes.items() if name in _REWRITES and o.value is True
    ]
    assert len(rewritten) <= 1, "two rewrites of one record both succeeded"
    if deleted_one:
        with pytest.raises(gp.NotFound):
            reader.get(NS, "k", 1)  # a deleted version stays deleted
    else:
        assert reader.get(NS, "k", 1)[1] == (rewritten[0] if rewritten else OLD[1])
    if deleted_key:
        with pytest.raises(gp.NotFound):
            reader.get(NS, "k", 2)
    else:
        assert reader.get(NS, "k", 2)[1] == OLD[2]
    saved = outcomes.get("save", Outcome(error=gp.NotFound())).ok()
    if saved and not deleted_key:
        assert reader.get(NS, "k", 3)[1] == b"new-3"
    read = outcomes.get("read")
    if read is not None and read.ok():
        assert read.value in (OLD[1], *_REWRITES.values())


def _check_catalog_settles(backend: CatalogBackend) -> None:
    """After a sweep with nothing running: every row's object exists, nothing else does."""
    backend.sweep(NS, older_than_s=0)
    rows = backend._rows.row_objects(NS)
    top = backend._store._path([])
    found = set()
    for components, _size in backend._objects.walk(top, sizes=False):
        if components == [LAYOUT_OBJECT]:
            continue
        parsed = parse_catalog_object_path(components[1:])  # below the namespace's one component
        assert parsed is not None, components
        found.add(((parsed[0], parsed[1]), parsed[1:]))
    named = {(place, row[0]) for place, row in rows.items()}
    assert found == named, (found, named)
    assert all(pending is None for _named, pending in rows.values())
    usage = backend.recount(NS)
    assert usage.drift is None, usage


_CATALOG_STEPS = {
    "rewrite": ["replace:read", "replace:announced", "replace:created", "replace:switched"],
    "save": ["put:reserved", "put:created"],
    "sweep-now": ["sweep:listed", "sweep:settled", "sweep:rows"],
    "delete-1": ["delete:rows"],
    "delete-key": ["delete:rows"],
}
_CATALOG_CASES = [
    (first, step, second)
    for first, steps in _CATALOG_STEPS.items()
    for step in steps
    for second in _OPERATIONS
    if second != first
]


@pytest.fixture
def catalog_place(tmp_path: Path) -> UrlAndOptions:
    return f"file://{tmp_path / 'blobs'}", {"catalog": f"sqlite:///{tmp_path / 'cat.db'}"}


def _run_case(
    place: UrlAndOptions, first: str, step: str, second: str, settle: Callable[[Any], None]
) -> bool:
    """Two versions stored, ``first`` held at ``step`` while ``second`` runs, then checked.

    False when ``first`` never reached ``step``.
    """
    url, options = place
    with open_backend(url, **options) as held, open_backend(url, **options) as other:
        _put(held, 1, OLD[1])
        _put(held, 2, OLD[2])
        ran = interleave(
            held, step, lambda: _OPERATIONS[first](held), lambda: _OPERATIONS[second](other)
        )
        if ran is None:
            return False
        _check({first: ran[0], second: ran[1]}, other)
        settle(held)
        _check({first: ran[0], second: ran[1]}, other)  # the sweep took nothing live
    return True


@pytest.mark.parametrize(("first", "step", "second"), _CATALOG_CASES)
def test_catalog_survives_every_interleaving(
    catalog_place: UrlAndOptions, first: str, step: str, second: str
) -> None:
    assert _run_case(catalog_place, first, step, second, _check_catalog_settles)


def test_a_rewrite_stalled_past_the_stale_age_loses_nothing(catalog_place: UrlAndOptions) -> None:
    """A sweep takes back a stalled rewrite's announcement; the rewrite then gives up."""
    url, options = catalog_place
    with open_backend(url, **options) as held, open_backend(url, **options) as other:
        assert isinstance(held, CatalogBackend)
        _put(held, 1, OLD[1])
        _put(held, 2, OLD[2])
        ran = interleave(
            held,
            "replace:created",
            lambda: _OPERATIONS["rewrite"](held),
            lambda: (other.sweep(NS, older_than_s=0), _OPERATIONS["rewrite-again"](other)),
        )
        assert ran is not None
        rewrite, second = ran
        assert rewrite.value is False and second.ok() and second.value[1] is True
        assert other.get(NS, "k", 1)[1] == b"again-1"
        _check_catalog_settles(held)
        assert other.get(NS, "k", 1)[1] == b"again-1"


# Plain object stores: a rewrite cut short leaves two objects of one version.


def _crash_mid_rewrite(backend: ObjectStoreBackend) -> None:
    """What a rewrite killed after writing the new record, before removing the old, leaves.

    Layout 1: two version objects (the new format's created first). Layout 2:
    the blob swapped and two entries (the new one written first).
    """
    directory = backend._key_directory(NS, "k")
    if backend.prefix.object_layout == 2:
        with backend._guard("test"):
            [old] = [n for n in backend._objects.names(directory) if n.startswith("e0000000001~")]
            new_entry = old.replace(f"~{KIND}~1~", f"~{KIND}~2~").rsplit("~", 1)[0] + "~5"
            backend._objects.put_blob(f"{directory}/{new_entry}", b"", {}, exclusive=False)
            blob = backend.prefix.path(["b", *directory.split("/")[-2:], "0000000001"])
            metadata = {"gsp-kind": KIND, "gsp-format": "2", "gsp-created": "1"}
            assert backend._objects.swap_blob(blob, OLD[1], b"new-1", metadata) is not None
        return
    old = backend._find(directory, 1, quick=False)
    assert old is not None
    new_name = old.name.replace(f"~{KIND}~1~", f"~{KIND}~2~")
    with backend._guard("test"):
        backend._objects.create(f"{directory}/{new_name}", b"new-1")


def test_a_rewrite_cut_short_never_resurrects_a_deleted_version(
    plain_place: UrlAndOptions,
) -> None:
    url, options = plain_place
    with open_backend(url, **options) as backend:
        assert isinstance(backend, ObjectStoreBackend)
        _put(backend, 1, OLD[1])
        _put(backend, 2, OLD[2])
        _crash_mid_rewrite(backend)
        assert backend.get(NS, "k", 1)[1] == b"new-1"  # the newer format wins, everywhere
        assert [(i.version, i.format_version) for i in backend.versions(NS, "k")] == [
            (1, 2),
            (2, 1),
        ]
        usage = backend.usage(NS)
        assert (usage.records, usage.bytes) == (2, len(b"new-1") + len(OLD[2]))
        assert backend.delete(NS, "k", [1]) == 1
        assert [i.version for i in backend.versions(NS, "k")] == [2]
        with pytest.raises(gp.NotFound):
            backend.get(NS, "k", 1)
        assert backend.usage(NS).records == 1
        backend.delete(NS, "k")
        assert backend.keys(NS) == [] and backend.versions(NS, "k") == []
        assert backend.usage(NS) == gp.Usage(0, 0, 0)


def test_migrate_and_sweep_clean_a_rewrite_cut_short(tmp_path: Path) -> None:
    class V1(msgspec.Struct):
        id: str

    class V2(msgspec.Struct):
        id: str
        n: int

    formats = gp.FormatRegistry()
    formats.register(V1, kind="order")
    formats.register(V2, kind="order", version=2, upcast=lambda d: {**d, "n": 1})
    keys = gp.KeyRing.generate()
    url = f"file://{tmp_path / 'blobs'}"
    with gp.open_store(url, keyring=keys, formats=formats) as store:
        store.save("o", V1("o"))
        backend = store.backend
        directory = backend._inner._key_directory("default", "o")  # type: ignore[attr-defined]
        # a first run killed after creating the new object: the old one stays
        names = sorted(backend._inner._objects.names(directory))  # type: ignore[attr-defined]
        blob = backend.get("default", "o")[1]
        backend._inner._objects.create(  # type: ignore[attr-defined]
            f"{directory}/{names[0].replace('~order~1~', '~order~2~')}", blob
        )
        assert len(backend._inner._objects.names(directory)) == 2  # type: ignore[attr-defined]
        report = store.migrate("order")  # the record reads as current; the leftover goes
        assert report.already_current == 1 and report.failed == []
        assert len(backend._inner._objects.names(directory)) == 1  # type: ignore[attr-defined]


# Real processes: a migration racing a looping recount (which sweeps).


@pytest.fixture(params=["files+sqlite", "s3+postgres"])
def racing_place(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[UrlAndOptions]:
    if request.param == "files+sqlite":
        yield f"file://{tmp_path / 'blobs'}", {"catalog": f"sqlite:///{tmp_path / 'c.db'}"}
        return
    url, options = request.getfixturevalue("s3_url")
    yield url, {**options, "catalog": request.getfixturevalue("pg_url")}


def test_a_migration_racing_a_looping_sweep_loses_no_record(racing_place: UrlAndOptions) -> None:
    url, options = racing_place
    keys = gp.KeyRing.generate()
    count = 150
    with gp.open_store(url, keyring=keys, formats=order_formats(1), **options) as store:
        for i in range(count):
            store.save(f"o{i:03d}", OrderV1(str(i)))
    context = multiprocessing.get_context("spawn")
    looping, stop = context.Event(), context.Event()
    sweeper = context.Process(
        target=recount_until, args=(url, options, keys.export(), looping, stop)
    )
    sweeper.start()
    try:
        assert looping.wait(60), "the sweeping process never started"
        with gp.open_store(url, keyring=keys, formats=order_formats(2), **options) as store:
            report = store.migrate("order", batch_size=7)
    finally:
        stop.set()
        sweeper.join(60)
    assert sweeper.exitcode == 0
    assert report.migrated + len(report.failed) == count
    with gp.open_store(url, keyring=keys, formats=order_formats(2), **options) as store:
        for i in range(count):
            assert store.load(f"o{i:03d}") == OrderV2(str(i), 2)
        assert store.usage(recount=True).records == count
        again = store.migrate("order")
        assert again.migrated + again.already_current == count and again.failed == []


def test_gc_cleans_a_rewrite_cut_short_on_a_plain_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from gotstate_persist.cli import main

    url = f"file://{tmp_path / 'blobs'}"
    with open_backend(url) as backend:
        assert isinstance(backend, ObjectStoreBackend)
        _put(backend, 1, OLD[1])
        _crash_mid_rewrite(backend)
    assert main(["gc", url]) == 0
    assert "1 superseded object(s) of interrupted rewrites removed" in capsys.readouterr().out
    with open_backend(url) as backend:
        assert isinstance(backend, ObjectStoreBackend)
        directory = backend._key_directory(NS, "k")
        assert len(backend._objects.names(directory)) == 1
        assert backend.get(NS, "k", 1)[1] == b"new-1"
    sql = f"sqlite:///{tmp_path / 'x.db'}"
    open_backend(sql).close()
    capsys.readouterr()
    assert main(["gc", sql]) == 2  # nothing to sweep in a transactional store
    assert "SQL stores settle every write" in capsys.readouterr().err


# Plain object stores: the same matrix where the protocol has steps (S3 shares
# no lock; local files serialize a key's writers, so the second operation waits).

_PLAIN_STEPS = {
    "rewrite": ["replace:read", "replace:created", "replace:entry", "replace:swapped"],
    "delete-1": ["delete:removed", "delete:emptied"],
    "delete-key": ["delete:removed", "delete:emptied"],
    "save": ["put:claimed", "put:blob"],
}
#: Steps on the path of only one object layout (S3 layout 2: ``_blobkeys``).
_LAYOUT_2_STEPS = {"replace:entry", "replace:swapped", "delete:emptied", "put:blob"}
_LAYOUT_1_STEPS = {"replace:read", "replace:created", "put:claimed"}
_PLAIN_SECOND = [
    "rewrite",
    "rewrite-again",
    "reseal",
    "sweep",
    "delete-1",
    "delete-key",
    "save",
    "read",
]
_PLAIN_CASES = [
    (first, step, second)
    for first, steps in _PLAIN_STEPS.items()
    for step in steps
    for second in _PLAIN_SECOND
    if second != first
]


def _check_plain_settles(backend: ObjectStoreBackend) -> None:
    """With nothing running, a sweep leaves exactly one object (layout 2: one entry) per
    stored version."""
    backend.sweep(NS, older_than_s=0)
    directory = backend._key_directory(NS, "k")
    letter = "e" if backend.prefix.object_layout == 2 else "v"
    names = [n for n in backend._objects.names(directory) if n.startswith(letter)]
    assert len(names) == len(backend.versions(NS, "k")), names
    assert backend.usage(NS).records == len(names)


@pytest.mark.parametrize(("first", "step", "second"), _PLAIN_CASES)
def test_plain_object_store_survives_every_interleaving(
    plain_place: UrlAndOptions, first: str, step: str, second: str
) -> None:
    if not _run_case(plain_place, first, step, second, _check_plain_settles):
        # local files take no claim (their writers are serialized); each object
        # layout has steps of its own
        with open_backend(plain_place[0], **plain_place[1]) as backend:
            assert isinstance(backend, ObjectStoreBackend)
            layout_2 = backend.prefix.object_layout == 2
        assert step in (_LAYOUT_1_STEPS if layout_2 else _LAYOUT_2_STEPS) or (
            step == "put:claimed" and plain_place[0].startswith("file://")
        )
