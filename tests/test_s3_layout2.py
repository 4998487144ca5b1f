"""Object layout 2 of plain S3 stores (issue 16, target 4), against the real moto server.

What it buys is counted in requests the server received (never timed): a
write is one LIST, one conditional PUT and one PUT, a known-version read one
GET. What it must not lose: exclusive create, never-reused numbers, listings
that read no blob, stores of layout 1 (written by earlier releases, golden
fixture included) readable unchanged, and a move from layout 1 to 2 that
keeps every version readable.
"""

from __future__ import annotations

import shutil
import sys
import threading
from decimal import Decimal
from pathlib import Path
from typing import Any

import boto3
import msgspec
import pytest
from _s3 import FAKE_ACCESS_KEY, FAKE_SECRET_KEY, LAYOUT_1_MARKER, REGION, S3Requests
from order_workflow import build_order_machine

import gotstate_persist as gp
from gotstate_persist.backends import open_backend
from gotstate_persist.backends._entrynames import (
    Entry,
    blob_components,
    blob_metadata,
    entry_name,
    tombstone_name,
)
from gotstate_persist.backends._layout import LAYOUT_OBJECT, encode_layout, plain_layout
from gotstate_persist.backends.objectstore import ObjectStoreBackend, move_to_layout_2
from gotstate_persist.cli import main as cli

FIXTURES = Path(__file__).resolve().parent / "fixtures"
sys.path.insert(0, str(FIXTURES))
from golden_records import KEYRING, OrderV1, formats  # noqa: E402

UrlAndOptions = tuple[str, dict[str, Any]]
NS = "ns"
KIND = "test.kind"


def _put(backend: Any, key: str, version: int, blob: bytes, **kw: Any) -> Any:
    return backend.put(NS, key, version, blob, kind=KIND, format_version=1, created_at_us=7, **kw)


def _client(options: dict[str, Any]) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=options["endpoint_url"],
        region_name=REGION,
        aws_access_key_id=FAKE_ACCESS_KEY,
        aws_secret_access_key=FAKE_SECRET_KEY,
    )


def _objects(url: str, options: dict[str, Any]) -> list[str]:
    bucket, prefix = url.removeprefix("s3://").split("/", 1)
    pages = _client(options).get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return sorted(
        item["Key"].removeprefix(prefix + "/")
        for page in pages
        for item in page.get("Contents", [])
    )


def _kinds(requests: list[tuple[str, str, str, dict[str, str]]]) -> list[str]:
    """Each request as LIST, GET, HEAD, PUT (with ``*`` when ``If-None-Match: *``), DELETE."""
    named = []
    for method, _path, query, headers in requests:
        if method == "GET" and "list-type=2" in query:
            named.append("LIST")
        elif method == "PUT" and headers.get("if-none-match") == "*":
            named.append("PUT*")
        else:
            named.append(method)
    return named


def test_layout_2_names_are_pinned() -> None:
    """Stored names and metadata are a format: a rename would orphan every stored object."""
    entry = Entry(7, "gotstate.machine", 1, 1767270645123456, 2357)
    assert entry_name(entry) == "e0000000007~gotstate.machine~1~1767270645123456~2357"
    assert blob_components(["sn5zgizlsom", "kn5zgizlsfu2de"], 7) == [
        "b",
        "sn5zgizlsom",
        "kn5zgizlsfu2de",
        "0000000007",
    ]
    assert tombstone_name(12) == "t0000000012"
    assert blob_metadata(entry) == {
        "gsp-kind": "gotstate.machine",
        "gsp-format": "1",
        "gsp-created": "1767270645123456",
    }
    assert encode_layout(plain_layout(2)) == (
        b'{"managed_by_catalog":true,"catalog":"none: object layout 2 of a plain S3 store, '
        b'which this release cannot read; upgrade gotstate-persist",'
        b'"catalog_id":"object-layout-2","object_layout":2}'
    )
    assert encode_layout(plain_layout(1)) == LAYOUT_1_MARKER


# Requests per operation.


def test_a_write_is_one_list_one_exclusive_put_and_one_put(
    s3_url: UrlAndOptions, s3_requests: S3Requests
) -> None:
    url, options = s3_url
    with open_backend(url, **options) as backend:
        _put(backend, "k", 1, b"one")  # the first write also marks the store
        assert isinstance(backend, ObjectStoreBackend) and backend.prefix.object_layout == 2
        s3_requests.take()
        for version in range(2, 12):
            _put(backend, "k", version, b"v%d" % version)
            requests = s3_requests.take()
            assert _kinds(requests) == ["LIST", "PUT*", "PUT"]
            # the LIST asks only for what sorts after the entry of the version before
            assert (
                f"start-after=state%2F{'%2F'.join(backend._components(NS, 'k'))}%2Fe"
                in (requests[0][2])
            )
        _put(backend, "k", 12, b"twelve", expected_newest=11)
        assert _kinds(s3_requests.take()) == ["LIST", "PUT*", "PUT"]


def test_a_known_version_read_is_one_get(s3_url: UrlAndOptions, s3_requests: S3Requests) -> None:
    url, options = s3_url
    with open_backend(url, **options) as writer:
        _put(writer, "k", 1, b"one")
        _put(writer, "k", 2, b"two")
    with open_backend(url, **options) as reader:  # another process's view: nothing cached
        s3_requests.take()
        info, blob = reader.get(NS, "k", 1)
        assert (info.version, info.kind, info.format_version, info.size, blob) == (
            1,
            KIND,
            1,
            3,
            b"one",
        )
        assert info.created_at_us == 7
        assert _kinds(s3_requests.take()) == ["GET"]
        assert reader.get(NS, "k")[1] == b"two"  # the newest: list the entries, then GET
        assert _kinds(s3_requests.take()) == ["LIST", "GET"]
        with pytest.raises(gp.NotFound):
            reader.get(NS, "k", 9)
        assert _kinds(s3_requests.take()) == ["GET"]


def test_listings_read_no_blob(s3_url: UrlAndOptions, s3_requests: S3Requests) -> None:
    url, options = s3_url
    with open_backend(url, **options) as backend:
        for version in (1, 2, 3):
            _put(backend, "k", version, b"x" * version)
        s3_requests.take()
        assert [(i.version, i.size, i.created_at_us) for i in backend.versions(NS, "k")] == [
            (1, 1, 7),
            (2, 2, 7),
            (3, 3, 7),
        ]
        assert backend.head(NS, "k") == gp.backends.KeyHead(3, 3, KIND)
        assert backend.keys(NS) == ["k"]
        assert backend.usage(NS) == gp.Usage(bytes=6, records=3, keys=1)
        requests = s3_requests.take()
        assert set(_kinds(requests)) == {"LIST"}, requests


def test_a_layout_1_store_still_costs_what_it_did(
    s3_layout1_url: UrlAndOptions, s3_requests: S3Requests
) -> None:
    url, options = s3_layout1_url
    with open_backend(url, **options) as backend:
        _put(backend, "k", 1, b"one")
        assert isinstance(backend, ObjectStoreBackend) and backend.prefix.object_layout == 1
        s3_requests.take()
        _put(backend, "k", 2, b"two")
        assert _kinds(s3_requests.take()) == ["LIST", "PUT*", "LIST", "PUT*"]  # the claims
        assert backend.get(NS, "k", 1)[1] == b"one"
        assert _kinds(s3_requests.take()) == ["LIST", "GET"]


# Exclusive create and never-reused numbers.


def test_two_writers_of_one_version_exactly_one_wins(s3_url: UrlAndOptions) -> None:
    url, options = s3_url
    with open_backend(url, **options) as first, open_backend(url, **options) as second:
        _put(first, "k", 1, b"base")
        for version in range(2, 14):
            gate = threading.Barrier(2)
            won: list[bytes] = []
            lost: list[BaseException] = []

            def write(
                backend: Any,
                blob: bytes,
                version: int = version,
                gate: threading.Barrier = gate,
                won: list[bytes] = won,
                lost: list[BaseException] = lost,
            ) -> None:
                gate.wait()
                try:
                    _put(backend, "k", version, blob)
                    won.append(blob)
                except gp.VersionConflict as exc:
                    lost.append(exc)

            threads = [
                threading.Thread(target=write, args=(b, f"{name}-{version}".encode()))
                for b, name in ((first, "first"), (second, "second"))
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            assert len(won) == 1 and len(lost) == 1
            assert second.get(NS, "k", version)[1] == won[0]
            assert first.versions(NS, "k")[-1].version == version


def test_a_deleted_version_is_emptied_and_never_created_again(
    s3_url: UrlAndOptions, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, options = s3_url
    with open_backend(url, **options) as backend:
        assert isinstance(backend, ObjectStoreBackend)
        _put(backend, "k", 1, b"one")
        stale = backend._objects.names(backend._key_directory(NS, "k"))  # a slow writer's view
        _put(backend, "k", 2, b"two")
        backend.delete(NS, "k", [2])
        with pytest.raises(gp.NotFound):
            backend.get(NS, "k", 2)
        assert backend.head(NS, "k") == gp.backends.KeyHead(2, 1, KIND)
        # the slow writer acts on its listing: its create of 2 fails, nothing is stored
        calls = iter([stale])
        real = backend._objects.names_after  # type: ignore[attr-defined]
        monkeypatch.setattr(
            backend._objects, "names_after", lambda *a, **k: next(calls, None) or real(*a, **k)
        )
        with pytest.raises(gp.VersionConflict, match="deleted while"):
            _put(backend, "k", 2, b"reused")
        monkeypatch.undo()
        with pytest.raises(gp.NotFound):
            backend.get(NS, "k", 2)
        backend.delete(NS, "k")
        assert backend.keys(NS) == [] and backend.head(NS, "k").last_version == 2
        blobs = [name for name in _objects(url, options) if name.startswith("b/")]
        assert len(blobs) == 2  # both numbers stay taken, both records are gone
        for name in blobs:
            assert (
                backend._objects.get_blob(  # type: ignore[attr-defined]
                    f"{backend.prefix.root}/{name}"
                ).data
                == b""
            )
        _put(backend, "k", 3, b"three")
        assert [i.version for i in backend.versions(NS, "k")] == [3]


# Interrupted writes.


class _FailingEntries:
    """The real S3 driver, except that writing an entry (an empty PUT) fails once."""

    def __init__(self, real: Any) -> None:
        self._real, self.failed = real, False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def put_blob(self, path: str, data: bytes, metadata: Any, *, exclusive: bool) -> None:
        if not data and not self.failed:
            self.failed = True
            raise ConnectionError("the connection dropped")
        self._real.put_blob(path, data, metadata, exclusive=exclusive)


def test_a_write_cut_short_after_its_blob_is_completed_by_the_next_writer(
    s3_url: UrlAndOptions,
) -> None:
    url, options = s3_url
    with open_backend(url, **options) as backend:
        assert isinstance(backend, ObjectStoreBackend)
        _put(backend, "k", 1, b"one")
        real = backend._objects
        backend._objects = _FailingEntries(real)  # type: ignore[assignment]
        with pytest.raises(gp.BackendError):
            _put(backend, "k", 2, b"two")
        backend._objects = real
        assert [i.version for i in backend.versions(NS, "k")] == [1]  # no entry yet
        with pytest.raises(gp.VersionConflict, match="another writer"):
            _put(backend, "k", 2, b"other")  # finds the blob, writes its entry
        assert [i.version for i in backend.versions(NS, "k")] == [1, 2]
        assert backend.get(NS, "k", 2)[1] == b"two"
        _put(backend, "k", 3, b"three")
        assert backend.usage(NS).records == 3


def test_gc_completes_an_old_write_cut_short(s3_url: UrlAndOptions) -> None:
    url, options = s3_url
    with open_backend(url, **options) as backend:
        assert isinstance(backend, ObjectStoreBackend)
        _put(backend, "k", 1, b"one")
        real = backend._objects
        backend._objects = _FailingEntries(real)  # type: ignore[assignment]
        with pytest.raises(gp.BackendError):
            _put(backend, "k", 2, b"two")
        backend._objects = real
        assert backend.sweep(NS) == 0  # too young: its writer may be writing the entry now
        assert backend.sweep(NS, older_than_s=0) == 1
        assert backend.get(NS, "k")[1] == b"two"
        assert backend.sweep(NS, older_than_s=0) == 0


def test_the_store_layout_travels_with_the_marker(s3_url: UrlAndOptions) -> None:
    """Releases before layout 2 read the marker as a catalog's and refuse to open it."""
    url, options = s3_url
    with open_backend(url, **options) as backend:
        _put(backend, "k", 1, b"one")
    bucket, prefix = url.removeprefix("s3://").split("/", 1)
    marker = _client(options).get_object(Bucket=bucket, Key=f"{prefix}/{LAYOUT_OBJECT}")
    data = marker["Body"].read()

    class EarlierLayout(msgspec.Struct):  # the marker as releases before layout 2 decode it
        managed_by_catalog: bool
        catalog: str | None = None
        catalog_id: str | None = None

    earlier = msgspec.json.decode(data, type=EarlierLayout)
    assert earlier.managed_by_catalog is True and "upgrade gotstate-persist" in str(earlier.catalog)
    assert msgspec.json.decode(data)["object_layout"] == 2
    with pytest.raises(gp.InvalidArgument, match="written without a catalog"):
        open_backend(url, catalog="sqlite://", **options)


def test_a_store_first_seen_empty_follows_another_processs_first_write(
    s3_url: UrlAndOptions,
) -> None:
    url, options = s3_url
    with open_backend(url, **options) as early, open_backend(url, **options) as writer:
        assert early.versions(NS, "k") == []  # opened before anything was written
        _put(writer, "k", 1, b"one")
        assert early.get(NS, "k", 1)[1] == b"one"
        _put(early, "k", 2, b"two")
        assert [i.version for i in writer.versions(NS, "k")] == [1, 2]


# Stores of layout 1: readable unchanged, and moved to layout 2 on request.


def _upload_golden(url: str, options: dict[str, Any]) -> None:
    """The golden plain store (written by an earlier release) copied byte for byte to S3."""
    bucket, prefix = url.removeprefix("s3://").split("/", 1)
    client = _client(options)
    root = FIXTURES / "golden_objects" / "layout-1" / "plain"
    for path in sorted(root.rglob("*")):
        if path.is_file():
            key = f"{prefix}/{path.relative_to(root).as_posix()}"
            client.put_object(Bucket=bucket, Key=key, Body=path.read_bytes())


def _check_golden(url: str, options: dict[str, Any]) -> None:
    keys = gp.KeyRing.load(KEYRING.read_text())
    with gp.open_store(url, namespace="orders", keyring=keys, formats=formats(), **options) as s:
        assert s.keys() == ["order-42", "order-record"]
        assert s.load("order-record") == OrderV1("o-1", Decimal("12.00"), [("sku-1", 4)])
        assert s.load("order-record", version=1) == OrderV1("o-1", Decimal("10.50"), [("sku-1", 3)])
        assert [r.version for r in s.versions("order-record")] == [1, 2]
        fresh = build_order_machine()
        s.restore_machine("order-42", fresh)
        assert fresh.current_state.name == "payment"
        assert s.versions("../gone é") == []


def test_a_golden_layout_1_store_on_s3_reads_unchanged(s3_url: UrlAndOptions) -> None:
    url, options = s3_url
    _upload_golden(url, options)
    before = _objects(url, options)
    _check_golden(url, options)
    assert _objects(url, options) == before  # reading wrote nothing
    keys = gp.KeyRing.load(KEYRING.read_text())
    with gp.open_store(url, namespace="orders", keyring=keys, formats=formats(), **options) as s:
        assert s.backend.inner.prefix.object_layout == 1  # type: ignore[attr-defined]
        assert s.save("../gone é", OrderV1("o-2", Decimal(1), [])).version == 2  # tombstone kept


def test_moving_a_store_to_layout_2_keeps_every_version(
    s3_url: UrlAndOptions, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    url, options = s3_url
    _upload_golden(url, options)
    with open_backend(url, **options) as backend:  # a claim whose writer died: number 3 used
        assert isinstance(backend, ObjectStoreBackend)
        directory = backend._key_directory("orders", "order-record")
        backend._objects.create(f"{directory}/r0000000003", b"")
    monkeypatch.setenv("AWS_ENDPOINT_URL", options["endpoint_url"])  # the CLI has no options
    assert cli(["db", "current", url]) == 0
    assert capsys.readouterr().out == "object layout 1\n"
    assert cli(["db", "check", url]) != 0
    assert "gotstate-persist db upgrade" in capsys.readouterr().err
    assert cli(["db", "upgrade", url]) == 0
    assert "object layout 1 -> 2: 3 version(s) of 3 key(s) copied" in capsys.readouterr().out
    names = _objects(url, options)
    assert not [n for n in names if n.rsplit("/", 1)[-1][:1] in "vr"]  # no layout-1 object left
    _check_golden(url, options)
    keys = gp.KeyRing.load(KEYRING.read_text())
    with gp.open_store(url, namespace="orders", keyring=keys, formats=formats(), **options) as s:
        assert s.backend.inner.prefix.object_layout == 2  # type: ignore[attr-defined]
        assert s.save("order-record", OrderV1("o-1", Decimal(1), [])).version == 4  # after 3
        assert s.save("../gone é", OrderV1("o-2", Decimal(1), [])).version == 2
    assert cli(["db", "check", url]) == 0
    assert cli(["db", "upgrade", url]) == 0  # again: nothing to do
    assert "nothing to upgrade" in capsys.readouterr().out
    assert _objects(url, options) == sorted({*names, *_objects(url, options)})
    keys_file = Path(str(FIXTURES)) / "golden_envelopes" / "aes-256-gcm.keys.json"
    assert cli(["verify", url, "--keys", str(keys_file)]) == 0


def test_a_move_cut_short_is_finished_by_running_it_again(s3_url: UrlAndOptions) -> None:
    url, options = s3_url
    with open_backend(url, **options) as backend:
        assert isinstance(backend, ObjectStoreBackend)
        backend.prefix.objects.overwrite(
            f"{backend.prefix.root}/{LAYOUT_OBJECT}",
            b'{"managed_by_catalog":false,"catalog":null,"catalog_id":null}',
        )
    with open_backend(url, **options) as backend:
        for version in (1, 2, 3):
            _put(backend, "k", version, f"v{version}".encode())
        backend.delete(NS, "k", [3])
        assert isinstance(backend, ObjectStoreBackend) and backend.prefix.object_layout == 1
        real = backend.prefix.objects.remove
        backend.prefix.objects.remove = _fail_once(real)  # type: ignore[method-assign]
        with pytest.raises(gp.BackendError):
            move_to_layout_2(backend.prefix)  # the marker says 2; layout-1 objects are left
        backend.prefix.objects.remove = real  # type: ignore[method-assign]
    with open_backend(url, **options) as backend:
        assert isinstance(backend, ObjectStoreBackend) and backend.prefix.object_layout == 2
        assert [backend.get(NS, "k", v)[1] for v in (1, 2)] == [b"v1", b"v2"]
        moved = move_to_layout_2(backend.prefix)
        # what the first run left: version objects 1 and 2, their claims, tombstone 3
        assert (moved.before, moved.versions, moved.removed) == (2, 0, 5)
        assert backend.head(NS, "k") == gp.backends.KeyHead(3, 2, KIND)
        _put(backend, "k", 4, b"v4")
        assert [i.version for i in backend.versions(NS, "k")] == [1, 2, 4]


def _fail_once(real: Any) -> Any:
    calls = [0]

    def remove(paths: Any) -> None:
        calls[0] += 1
        if calls[0] == 1:
            raise PermissionError(13, "Access Denied")
        real(paths)

    return remove


def test_only_plain_s3_stores_have_a_second_layout(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"file://{tmp_path / 'store'}"
    with open_backend(url) as backend:
        _put(backend, "k", 1, b"one")
        assert isinstance(backend, ObjectStoreBackend)
        with pytest.raises(gp.InvalidArgument, match="only plain S3 stores"):
            move_to_layout_2(backend.prefix)
    assert cli(["db", "check", url]) == 0
    assert cli(["db", "upgrade", url]) == 0
    assert "nothing to upgrade" in capsys.readouterr().out
    shutil.rmtree(tmp_path / "store")


def test_a_prefix_too_long_for_layout_2_keeps_layout_1(s3_url: UrlAndOptions) -> None:
    """Layout 2's entries are 9 bytes longer than layout 1's names: S3's 1,024-byte keys
    leave room for a prefix of 60 bytes (69 for layout 1)."""
    url, options = s3_url
    bucket = url.removeprefix("s3://").split("/", 1)[0]
    with open_backend(f"s3://{bucket}/{'p' * 65}", **options) as backend:
        _put(backend, "k", 1, b"one")
        assert isinstance(backend, ObjectStoreBackend)
        assert (backend.prefix.object_layout, backend.prefix.newest_layout) == (1, 1)
        assert backend.get(NS, "k", 1)[1] == b"one"
    with open_backend(f"s3://{bucket}/{'p' * 60}", **options) as backend:
        _put(backend, "k", 1, b"one")
        assert isinstance(backend, ObjectStoreBackend) and backend.prefix.object_layout == 2
