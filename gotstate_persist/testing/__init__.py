"""Reusable conformance tests for backend and extension authors (also a pytest plugin).

Subclass :class:`BackendTests` in your test suite and provide one fixture,
``backend``, that yields a fresh, empty instance of your backend::

    class TestMyBackend(BackendTests):
        @pytest.fixture
        def backend(self, tmp_path):
            with MyBackend(tmp_path) as b:
                yield b

If the backend declares ``capabilities.cross_process``, also provide
``backend_url``, returning ``(url, options)`` that open the *same* storage
through :func:`~gotstate_persist.backends.open_backend`, so the suite can
append to it from several processes at once.

Extension authors subclass :class:`ExtensionTests` the same way, naming
their extension in one fixture, ``extension_target`` (see its module,
``_extensions``, and ``docs/writing-an-extension.md``).

Every built-in backend runs this same suite unchanged. The tests talk to the
backend only through the :class:`~gotstate_persist.backends.Backend` contract
and use opaque byte strings as blobs, so they say nothing about sealing.
"""

from __future__ import annotations

import multiprocessing
import threading
from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest

from .._names import system_area_prefix, system_key
from ..backends import open_backend
from ..backends.base import Backend, KeyHead, NewVersion, Replacement, Usage, to_micros
from ..codec import MAX_BLOB_BYTES
from ..errors import (
    FormatError,
    IntegrityError,
    InvalidArgument,
    NotFound,
    QuotaExceeded,
    VersionConflict,
)
from ..formats import FormatRegistry
from ..quota import Quota, QuotaBackend
from ..sealing import KeyRing
from ..store import Store
from ._extensions import ExtensionTests

__all__ = ["BackendTests", "ExtensionTests"]

NS = "conformance"
_NOW = datetime(2026, 1, 1, 12, 30, 45, 123456, tzinfo=UTC)
_NOW_US = to_micros(_NOW)
AWKWARD_KEYS = (
    "../x",
    "a/b",
    "a\\b",
    "UPPER",
    "upper",
    "é-ñ-✓",
    "x" * 255,
    "é" * 127,
    " leading space",
    "dot.",
    ".",
    "..",
    "%41",
    "a:b",
    "CON",
)


def _put(backend: Backend, key: str, version: int, blob: bytes, **kw: object) -> None:
    backend.put(
        str(kw.pop("namespace", NS)),
        key,
        version,
        blob,
        kind=str(kw.pop("kind", "test.kind")),
        format_version=1,
        created_at_us=_NOW_US,
        **kw,  # type: ignore[arg-type]
    )


class BackendTests:
    """The backend contract as tests. Provide a ``backend`` fixture."""

    def test_empty_backend(self, backend: Backend) -> None:
        assert backend.head(NS, "k") == KeyHead()
        assert backend.versions(NS, "k") == []
        assert backend.keys(NS) == []
        with pytest.raises(NotFound):
            backend.get(NS, "k")
        with pytest.raises(NotFound):
            backend.delete(NS, "k")

    def test_put_get_newest_and_given_version(self, backend: Backend) -> None:
        _put(backend, "k", 1, b"one")
        _put(backend, "k", 2, b"two")
        info, blob = backend.get(NS, "k")
        assert (info.version, blob) == (2, b"two")
        info, blob = backend.get(NS, "k", 1)
        assert (info.key, info.version, info.size, blob) == ("k", 1, 3, b"one")
        assert info.kind == "test.kind" and info.format_version == 1
        assert info.created_at == _NOW
        with pytest.raises(NotFound):
            backend.get(NS, "k", 3)

    def test_versions_are_ordered(self, backend: Backend) -> None:
        for v in range(1, 12):
            _put(backend, "k", v, bytes([v]))
        assert [i.version for i in backend.versions(NS, "k")] == list(range(1, 12))

    def test_create_only_never_overwrites(self, backend: Backend) -> None:
        _put(backend, "k", 1, b"original")
        with pytest.raises(VersionConflict):
            _put(backend, "k", 1, b"overwrite")
        assert backend.get(NS, "k")[1] == b"original"
        assert backend.head(NS, "k") == KeyHead(last_version=1, newest=1, kind="test.kind")

    def test_numbers_may_skip_but_never_go_back(self, backend: Backend) -> None:
        """A copy keeps the source's numbering, gaps from deleted versions included."""
        _put(backend, "k", 3, b"three")
        with pytest.raises(VersionConflict):
            _put(backend, "k", 2, b"older")
        _put(backend, "k", 7, b"seven")
        assert [i.version for i in backend.versions(NS, "k")] == [3, 7]
        assert backend.head(NS, "k") == KeyHead(last_version=7, newest=7, kind="test.kind")

    def test_expected_newest(self, backend: Backend) -> None:
        _put(backend, "k", 1, b"a", expected_newest=0)
        with pytest.raises(VersionConflict):
            _put(backend, "k", 2, b"b", expected_newest=0)
        _put(backend, "k", 2, b"b", expected_newest=1)
        assert [i.version for i in backend.versions(NS, "k")] == [1, 2]

    def test_put_many_creates_versions_in_order(self, backend: Backend) -> None:
        items = [
            NewVersion("a", 1, b"a1", "test.kind", 1, _NOW_US, 0),
            NewVersion("b", 1, b"b1", "test.kind", 1, _NOW_US),
            NewVersion("a", 2, b"a2", "test.kind", 1, _NOW_US, 1),
        ]
        infos = backend.put_many(NS, items)
        assert [(i.key, i.version, i.size) for i in infos] == [
            ("a", 1, 2),
            ("b", 1, 2),
            ("a", 2, 2),
        ]
        assert backend.get(NS, "a")[1] == b"a2"
        assert backend.get(NS, "b")[1] == b"b1"

    def test_put_many_is_all_or_nothing_where_declared(self, backend: Backend) -> None:
        _put(backend, "b", 1, b"b1")
        items = [
            NewVersion("a", 1, b"a1", "test.kind", 1, _NOW_US),
            NewVersion("b", 2, b"b2", "test.kind", 1, _NOW_US, 0),  # stale: b is at 1
        ]
        with pytest.raises(VersionConflict):
            backend.put_many(NS, items)
        assert backend.get(NS, "b")[1] == b"b1"
        # atomic: nothing was stored; otherwise the items before the refusal were
        stored = [] if backend.capabilities.atomic_put_many else [1]
        assert [i.version for i in backend.versions(NS, "a")] == stored

    def test_one_kind_per_key(self, backend: Backend) -> None:
        _put(backend, "k", 1, b"a", kind="one")
        with pytest.raises(FormatError):
            _put(backend, "k", 2, b"b", kind="two")
        assert backend.versions(NS, "k")[-1].kind == "one"

    def test_delete_keeps_version_numbers(self, backend: Backend) -> None:
        for v in (1, 2, 3):
            _put(backend, "k", v, b"x")
        assert backend.delete(NS, "k", [2]) == 1
        assert [i.version for i in backend.versions(NS, "k")] == [1, 3]
        with pytest.raises(NotFound):
            backend.delete(NS, "k", [2])
        assert backend.delete(NS, "k") == 2
        assert backend.keys(NS) == []
        assert backend.head(NS, "k") == KeyHead(last_version=3, newest=0, kind=None)
        with pytest.raises(VersionConflict):
            _put(backend, "k", 1, b"reuse")
        _put(backend, "k", 4, b"next", kind="another")
        assert backend.head(NS, "k").newest == 4

    def test_delete_missing_version_deletes_nothing(self, backend: Backend) -> None:
        _put(backend, "k", 1, b"x")
        with pytest.raises(NotFound):
            backend.delete(NS, "k", [1, 5])
        assert len(backend.versions(NS, "k")) == 1

    def test_prefix_listing(self, backend: Backend) -> None:
        for key in ("order-1", "order-2", "Order-3", "orders", "ord%", "ord_x", "z"):
            _put(backend, key, 1, b"x")
        assert backend.keys(NS, "order-") == ["order-1", "order-2"]
        assert backend.keys(NS, "ord%") == ["ord%"]
        assert backend.keys(NS, "ord_") == ["ord_x"]
        assert backend.keys(NS) == sorted(
            ["order-1", "order-2", "Order-3", "orders", "ord%", "ord_x", "z"]
        )

    def test_namespaces_isolate(self, backend: Backend) -> None:
        _put(backend, "k", 1, b"mine")
        backend.put(
            "other", "k", 1, b"theirs", kind="test.kind", format_version=1, created_at_us=_NOW_US
        )
        assert backend.get(NS, "k")[1] == b"mine"
        assert backend.get("other", "k")[1] == b"theirs"
        backend.delete("other", "k")
        assert backend.keys(NS) == ["k"]
        assert NS in backend.namespaces()

    def test_system_keys_are_stored_like_any_key_and_counted_as_records_only(
        self, backend: Backend
    ) -> None:
        """The library's own records (system keys, starting with a control character).

        A backend stores and lists them like any key (copy and verify need
        them); its usage counts them as bytes and records but never as keys.
        """
        system = system_key("conformance", "registration")
        _put(backend, "user", 1, b"12345")
        _put(backend, system, 1, b"123")
        _put(backend, system, 2, b"1234", expected_newest=1)
        assert backend.head(NS, system) == KeyHead(2, 2, "test.kind")
        assert backend.get(NS, system)[1] == b"1234"
        assert [info.version for info in backend.versions(NS, system)] == [1, 2]
        assert backend.keys(NS) == sorted(["user", system])
        assert backend.keys(NS, system_area_prefix("conformance")) == [system]
        assert backend.keys("other") == []
        assert backend.usage(NS) == Usage(12, 3, 1)
        assert backend.recount(NS) == Usage(12, 3, 1)
        assert backend.delete(NS, system) == 2
        assert backend.usage(NS) == Usage(5, 1, 1)

    @pytest.mark.parametrize("key", AWKWARD_KEYS)
    def test_awkward_keys_do_not_collide(self, backend: Backend, key: str) -> None:
        # a neighbour of the same byte length: keys never exceed 255 bytes
        neighbour = key[:-1] + ("y" if key[-1] != "y" else "z")
        _put(backend, key, 1, key.encode())
        _put(backend, neighbour, 1, b"neighbour")
        assert backend.get(NS, key)[1] == key.encode()
        assert key in backend.keys(NS)

    def test_case_is_preserved(self, backend: Backend) -> None:
        _put(backend, "Key", 1, b"upper")
        _put(backend, "key", 1, b"lower")
        assert backend.get(NS, "Key")[1] == b"upper"
        assert backend.get(NS, "key")[1] == b"lower"

    def test_blob_at_the_size_limit(self, backend: Backend) -> None:
        blob = bytes(range(256)) * (MAX_BLOB_BYTES // 256)
        assert len(blob) == MAX_BLOB_BYTES
        _put(backend, "big", 1, blob)
        info, stored = backend.get(NS, "big")
        assert stored == blob and info.size == MAX_BLOB_BYTES

    def test_usage(self, backend: Backend) -> None:
        _put(backend, "a", 1, b"12345")
        _put(backend, "a", 2, b"123")
        _put(backend, "b", 1, b"1")
        usage = backend.usage(NS)
        assert (usage.bytes, usage.records, usage.keys) == (9, 3, 2)

    def test_usage_follows_deletes(self, backend: Backend) -> None:
        _put(backend, "a", 1, b"12345")
        _put(backend, "a", 2, b"123")
        _put(backend, "b", 1, b"1")
        backend.delete(NS, "a", [1])
        assert backend.usage(NS) == Usage(4, 2, 2)
        backend.delete(NS, "a")
        assert backend.usage(NS) == Usage(1, 1, 1)
        assert backend.recount(NS) == Usage(1, 1, 1)

    def test_quota_is_persisted_per_namespace(self, backend: Backend) -> None:
        """Skipped for a backend that declines to persist quotas (InvalidArgument)."""
        quota = Quota(max_bytes=10, max_versions_per_key=3, retention="prune-oldest")
        try:
            stored = backend.store_quota(NS, quota, replace=False)
        except InvalidArgument:
            pytest.skip("the backend does not persist quotas")
        assert stored == quota and backend.load_quota(NS) == quota
        assert backend.store_quota(NS, Quota(max_bytes=5), replace=False) == quota  # kept
        assert backend.load_quota("elsewhere") is None
        assert backend.store_quota(NS, Quota(max_keys=2), replace=True) == Quota(max_keys=2)
        assert backend.load_quota(NS) == Quota(max_keys=2)
        assert backend.store_quota(NS, None, replace=True) is None
        assert backend.load_quota(NS) is None
        assert backend.store_quota("never-written", None, replace=True) is None

    def test_quota_is_enforced_through_the_adapter(self, backend: Backend) -> None:
        """What every store does: the quota adapter over the backend refuses and prunes."""
        adapter = QuotaBackend(backend)
        try:
            adapter.set_quota(NS, Quota(max_bytes=12, max_versions_per_key=2))
        except InvalidArgument:
            pytest.skip("the backend does not persist quotas")
        _put(adapter, "a", 1, b"12345")
        _put(adapter, "a", 2, b"12345")
        with pytest.raises(QuotaExceeded) as refused:
            _put(adapter, "b", 1, b"123")  # 13 bytes > 12
        assert (refused.value.limit, refused.value.usage, refused.value.requested) == (
            "max_bytes",
            10,
            3,
        )
        with pytest.raises(QuotaExceeded, match="max_versions_per_key"):
            _put(adapter, "a", 3, b"1")
        assert backend.keys(NS) == ["a"] and adapter.usage(NS) == Usage(10, 2, 1)
        adapter.set_quota(NS, Quota(max_bytes=12, max_versions_per_key=2, retention="prune-oldest"))
        _put(adapter, "a", 3, b"1234567")  # prunes version 1: 5 + 7 = 12 bytes
        assert [i.version for i in backend.versions(NS, "a")] == [2, 3]
        assert adapter.usage(NS) == Usage(12, 2, 1) == backend.recount(NS)

    def test_iter_namespace_yields_every_stored_version_once(self, backend: Backend) -> None:
        expected = {}
        for key in ("b", "a", "c/d", "é"):
            for version in (1, 2, 3):
                blob = f"{key}:{version}".encode()
                _put(backend, key, version, blob)
                expected[(key, version)] = blob
        backend.delete(NS, "b", [2])
        del expected[("b", 2)]
        _put(backend, "other-namespace-key", 1, b"x", namespace="elsewhere")
        seen = {(info.key, info.version): blob for info, blob in backend.iter_namespace(NS)}
        assert seen == expected
        # Bulk walks pass on_error (damaged records are reported, not fatal).
        failures: list[tuple[str, int]] = []
        walked = backend.iter_namespace(NS, on_error=lambda k, v, _e: failures.append((k, v)))
        assert {(info.key, info.version): blob for info, blob in walked} == expected
        assert failures == []

    def test_replace_is_a_compare_and_set(self, backend: Backend) -> None:
        """Skipped for a backend that declines to replace blobs (InvalidArgument)."""
        _put(backend, "k", 1, b"old")
        _put(backend, "k", 2, b"two")
        swap = Replacement("k", 1, b"newer", 2, expected=b"old")
        try:
            assert backend.replace(NS, [swap]) == [True]
        except InvalidArgument:
            pytest.skip("the backend does not replace blobs")
        info, blob = backend.get(NS, "k", 1)
        assert (blob, info.format_version, info.size, info.version) == (b"newer", 2, 5, 1)
        assert info.created_at_us == _NOW_US and info.kind == "test.kind"
        stale = Replacement("k", 1, b"lost", 3, expected=b"old")
        missing = Replacement("k", 9, b"none", 2, expected=b"old")
        assert backend.replace(NS, [stale, missing]) == [False, False]
        assert backend.get(NS, "k", 1)[1] == b"newer"
        assert [i.version for i in backend.versions(NS, "k")] == [1, 2]
        assert backend.recount(NS) == Usage(8, 2, 1)

    def test_concurrent_appends_from_threads(self, backend: Backend) -> None:
        workers, per_worker = 4, 10
        errors: list[BaseException] = []

        def append(worker: int) -> None:
            try:
                done = 0
                while done < per_worker:
                    version = backend.head(NS, "shared").last_version + 1
                    try:
                        _put(backend, "shared", version, f"{worker}-{done}".encode())
                    except VersionConflict:
                        continue
                    done += 1
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=append, args=(w,)) for w in range(workers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        versions = backend.versions(NS, "shared")
        assert [i.version for i in versions] == list(range(1, workers * per_worker + 1))
        blobs = {backend.get(NS, "shared", i.version)[1] for i in versions}
        assert len(blobs) == workers * per_worker

    def test_tamper_detection_end_to_end(self, backend: Backend) -> None:
        """A blob moved to another key or namespace through the backend is refused."""
        formats = FormatRegistry()
        formats.register(_Note, kind="conformance.note", version=1)
        keys = KeyRing.generate()
        store = Store(backend, keyring=keys, namespace=NS, formats=formats)
        other = Store(backend, keyring=keys, namespace="elsewhere", formats=formats)
        store.save("original", _Note("secret"))
        info, blob = backend.get(NS, "original")
        for target, key in ((NS, "moved"), ("elsewhere", "original")):
            backend.put(
                target,
                key,
                1,
                blob,
                kind=info.kind,
                format_version=info.format_version,
                created_at_us=info.created_at_us,
            )
        with pytest.raises(IntegrityError):
            store.load("moved")
        with pytest.raises(IntegrityError):
            other.load("original")
        assert store.load("original") == _Note("secret")

    @pytest.fixture
    def backend_url(self) -> tuple[str, dict[str, Any]] | None:
        """Override: ``(url, options)`` opening the same storage as ``backend``."""
        return None

    def test_concurrent_appends_from_processes(
        self, backend: Backend, backend_url: tuple[str, dict[str, Any]] | None
    ) -> None:
        if not backend.capabilities.cross_process:
            pytest.skip("the backend declares cross_process=False")
        if backend_url is None:
            pytest.fail(
                "the backend declares cross_process=True: define a `backend_url` fixture "
                "returning (url, options) so the suite can open it from other processes"
            )
        url, options = backend_url
        workers, per_worker = 3, 8
        ctx = multiprocessing.get_context("spawn")
        procs = [
            ctx.Process(target=_append_from_process, args=(url, options, w, per_worker))
            for w in range(workers)
        ]
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.join(timeout=180)
            assert proc.exitcode == 0, "a writer process failed"
        versions = backend.versions(NS, "shared")
        assert [i.version for i in versions] == list(range(1, workers * per_worker + 1))
        blobs = {backend.get(NS, "shared", i.version)[1] for i in versions}
        assert blobs == {f"{w}-{i}".encode() for w in range(workers) for i in range(per_worker)}


class _Note(msgspec.Struct, frozen=True):
    text: str


def _append_from_process(url: str, options: dict[str, Any], worker: int, count: int) -> None:
    """Child-process writer for the multi-process test (module level: picklable)."""
    with open_backend(url, **options) as backend:
        done = 0
        while done < count:
            version = backend.head(NS, "shared").last_version + 1
            try:
                _put(backend, "shared", version, f"{worker}-{done}".encode())
            except VersionConflict:
                continue
            done += 1
