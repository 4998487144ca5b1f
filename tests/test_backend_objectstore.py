"""The object-store backend on file://, memory:// and s3:// (a moto server).

The shared conformance suite runs unchanged on all three. The tests after it
cover what only an object store can get wrong: racing exclusive creates
(threads and processes), crashed writers' leftovers, names that must stay
inside the root, secrets in messages, and storage that refuses to write.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import fsspec
import pytest
from fsspec.implementations.memory import MemoryFileSystem
from gotstate.core.events import Event
from hypothesis import given
from hypothesis import strategies as st
from order_workflow import build_order_machine

import gotstate_persist as gp
from gotstate_persist._names import MAX_NAME_BYTES
from gotstate_persist.backends import Backend, KeyHead, Usage, open_backend
from gotstate_persist.backends._layout import LAYOUT_OBJECT
from gotstate_persist.backends._objectnames import (
    CHUNK_CHARS,
    MAX_RELATIVE_PATH_BYTES,
    decode_key_path,
    decode_namespace_key_path,
    key_components,
    namespace_components,
    version_name,
)
from gotstate_persist.backends.objectstore import (
    S3_MAX_KEY_BYTES,
    STALE_TEMPORARY_SECONDS,
    ObjectStoreBackend,
)
from gotstate_persist.testing import BackendTests

NS = "ns"
KIND = "test.kind"
UrlAndOptions = tuple[str, dict[str, Any]]
AWKWARD = (
    "../x",
    "../../../../etc/passwd",
    "a/b",
    "/abs",
    "a\\b",
    "UPPER",
    "upper",
    "Upper",
    "é-ñ-✓",
    "x" * MAX_NAME_BYTES,
    "é" * 127,
    ".",
    "..",
    "~",
    ".tmp-x",
    "CON",
    "nul",
)


def _put(backend: Backend, key: str, version: int, blob: bytes, **kw: Any) -> None:
    backend.put(
        kw.pop("namespace", NS),
        key,
        version,
        blob,
        kind=kw.pop("kind", KIND),
        format_version=1,
        created_at_us=kw.pop("created_at_us", 1_767_270_645_123_456),
        **kw,
    )


# The conformance suite, unchanged, on each protocol.


class TestFileBackend(BackendTests):
    @pytest.fixture
    def backend_url(self, tmp_path: Path) -> UrlAndOptions:
        return f"file://{tmp_path / 'store'}", {}

    @pytest.fixture
    def backend(self, backend_url: UrlAndOptions) -> Iterator[Backend]:
        url, options = backend_url
        with open_backend(url, **options) as opened:
            yield opened


@contextmanager
def _memory_store() -> Iterator[str]:
    name = f"gsp-test-{uuid.uuid4().hex}"
    try:
        yield f"memory://{name}"
    finally:
        memory = fsspec.filesystem("memory")
        if memory.exists(f"/{name}"):
            memory.rm(f"/{name}", recursive=True)


class TestMemoryBackend(BackendTests):
    @pytest.fixture
    def backend(self) -> Iterator[Backend]:
        with _memory_store() as url, open_backend(url) as opened:
            yield opened


class TestS3Backend(BackendTests):
    @pytest.fixture
    def backend_url(self, s3_url: UrlAndOptions) -> UrlAndOptions:
        return s3_url

    @pytest.fixture
    def backend(self, backend_url: UrlAndOptions) -> Iterator[Backend]:
        url, options = backend_url
        with open_backend(url, **options) as opened:
            yield opened


# Any backend of the three, for the tests below that apply to all of them.


class TestS3Layout1Backend(BackendTests):
    """An S3 store of object layout 1 (made by earlier releases) keeps working as it did."""

    @pytest.fixture
    def backend_url(self, s3_layout1_url: UrlAndOptions) -> UrlAndOptions:
        return s3_layout1_url

    @pytest.fixture
    def backend(self, backend_url: UrlAndOptions) -> Iterator[Backend]:
        url, options = backend_url
        with open_backend(url, **options) as opened:
            assert isinstance(opened, ObjectStoreBackend)
            assert opened.prefix.object_layout == 1
            yield opened


@pytest.fixture(params=["file", "memory", "s3", "s3-layout1"])
def any_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "file":
        with open_backend(f"file://{tmp_path}") as opened:
            yield opened
    elif request.param == "memory":
        with _memory_store() as url, open_backend(url) as opened:
            yield opened
    else:
        fixture = "s3_url" if request.param == "s3" else "s3_layout1_url"
        url, options = request.getfixturevalue(fixture)
        with open_backend(url, **options) as opened:
            yield opened


# Racing writers.

RACERS = 8
ROUNDS = 12


def _race(backend: Backend, key: str, version: int, racer: int, results: list[bool]) -> None:
    try:
        # Distinct creation times: the racers' version objects get distinct names,
        # so only the claim on the bare version number can keep them apart.
        _put(backend, key, version, f"racer {racer}".encode(), created_at_us=racer)
    except gp.VersionConflict:
        results.append(False)
    else:
        results.append(True)


def _one_round(backends: list[Backend], version: int) -> list[bool]:
    """RACERS threads create ``version`` at once; returns who won."""
    results: list[bool] = []
    gate = threading.Barrier(RACERS)

    def run(racer: int) -> None:
        gate.wait()
        _race(backends[racer % len(backends)], "race", version, racer, results)

    threads = [threading.Thread(target=run, args=(r,)) for r in range(RACERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


@pytest.mark.parametrize("racers_share_backend", [True, False])
def test_racing_threads_one_winner(
    any_backend: Backend, racers_share_backend: bool, request: pytest.FixtureRequest
) -> None:
    extra = [] if racers_share_backend else [_reopen(any_backend, request) for _ in range(RACERS)]
    try:
        for version in range(1, ROUNDS + 1):
            results = _one_round(extra or [any_backend], version)
            assert sorted(results) == [False] * (RACERS - 1) + [True], f"round {version}"
        stored = any_backend.versions(NS, "race")
        assert [info.version for info in stored] == list(range(1, ROUNDS + 1))
    finally:
        for backend in extra:
            backend.close()


def _reopen(backend: Backend, request: pytest.FixtureRequest) -> Backend:
    """Another backend instance on the same storage (its own filesystem object)."""
    assert isinstance(backend, ObjectStoreBackend)
    display = repr(backend).removeprefix("ObjectStoreBackend('").removesuffix("')")
    if display.startswith("s3://"):
        _url, options = request.getfixturevalue("s3_url")
        return open_backend(display, **options)
    return open_backend(display)


def _race_in_process(url: str, rounds: int, gate: Any, wins: Any) -> None:
    with open_backend(url) as backend:
        for version in range(1, rounds + 1):
            gate.wait()
            try:
                _put(backend, "race", version, str(os.getpid()).encode(), created_at_us=os.getpid())
            except gp.VersionConflict:
                continue
            wins.put(version)


def test_racing_processes_one_winner(tmp_path: Path) -> None:
    url = f"file://{tmp_path}"
    processes, rounds = 4, 8
    context = multiprocessing.get_context("spawn")
    gate = context.Barrier(processes)
    wins = context.Queue()
    workers = [
        context.Process(target=_race_in_process, args=(url, rounds, gate, wins))
        for _ in range(processes)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
        assert worker.exitcode == 0
    won = sorted(wins.get(timeout=10) for _ in range(rounds))
    assert won == list(range(1, rounds + 1))  # exactly one winner per version
    assert wins.empty()
    with open_backend(url) as backend:
        assert [info.version for info in backend.versions(NS, "race")] == won


@pytest.mark.parametrize("any_backend", ["s3", "s3-layout1"], indirect=True)
def test_writer_that_read_before_a_delete_cannot_reuse_a_number(
    any_backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Only S3 lets a writer act on a listing made before a delete (layout 1:
    # the claim protocol; layout 2: the blob's name, never freed); local files
    # and memory list under the writers' lock.
    assert isinstance(any_backend, ObjectStoreBackend)
    directory = any_backend._key_directory(NS, "k")
    objects = any_backend._objects
    stale = [*objects.names(directory), "stray"]  # what a slow writer saw: an empty key
    _put(any_backend, "k", 1, b"one")
    _put(any_backend, "k", 2, b"two")
    any_backend.delete(NS, "k")  # removes claims 1 and 2, leaves tombstone 2
    real = objects.names
    calls = iter([stale])

    def names(directory: str, *args: Any, **kwargs: Any) -> list[str]:
        return next(calls, None) or real(directory, *args, **kwargs)

    # layout 1 lists the key, layout 2 what sorts after the entry of version N - 1
    layout_2 = any_backend.prefix.object_layout == 2
    monkeypatch.setattr(objects, "names_after" if layout_2 else "names", names)
    with pytest.raises(gp.VersionConflict, match="deleted while"):
        _put(any_backend, "k", 1, b"reused")
    monkeypatch.undo()
    assert any_backend.versions(NS, "k") == []
    assert any_backend.head(NS, "k").last_version == 2
    _put(any_backend, "k", 3, b"three")
    assert any_backend.get(NS, "k")[1] == b"three"


def test_a_writer_that_died_after_claiming_leaves_a_gap(any_backend: Backend) -> None:
    assert isinstance(any_backend, ObjectStoreBackend)
    _put(any_backend, "k", 1, b"one")
    if any_backend.prefix.object_layout == 2:
        pytest.skip("object layout 2 has no claims (tests/test_s3_layout2.py)")
    directory = any_backend._key_directory(NS, "k")
    any_backend._objects.create(f"{directory}/r0000000002", b"")  # claimed, then crashed
    head = any_backend.head(NS, "k")
    assert (head.last_version, head.newest) == (2, 1)
    with pytest.raises(gp.VersionConflict):
        _put(any_backend, "k", 2, b"two")
    _put(any_backend, "k", 3, b"three")
    assert [i.version for i in any_backend.versions(NS, "k")] == [1, 3]
    any_backend.delete(NS, "k")
    assert any_backend.head(NS, "k").last_version == 3


def test_memory_name_is_shared_within_the_process() -> None:
    with _memory_store() as url, open_backend(url) as first, open_backend(url) as second:
        _put(first, "k", 1, b"seen by both")
        assert second.get(NS, "k")[1] == b"seen by both"
        assert not first.capabilities.cross_process
        assert first.capabilities.list_is_consistent


# Crashed writers and stray files.


def _key_directory(backend: Backend, key: str) -> Path:
    assert isinstance(backend, ObjectStoreBackend)
    return Path(backend._key_directory(NS, key))


def test_temporaries_and_strays_are_ignored_and_old_temporaries_cleaned(tmp_path: Path) -> None:
    with open_backend(f"file://{tmp_path}") as backend:
        _put(backend, "k", 1, b"complete")
        directory = _key_directory(backend, "k")
        old = directory / ".tmp-0123456789abcdef"
        old.write_bytes(b"half a bl")  # a writer died mid-write
        stale = time.time() - STALE_TEMPORARY_SECONDS - 60
        os.utime(old, (stale, stale))
        fresh = directory / ".tmp-fedcba9876543210"
        fresh.write_bytes(b"being written")  # a live writer's, must survive
        strays = [
            "v0000000002",
            "v0000000002~test.kind~1",
            "v0000000002~Test~1~5",
            "v00000000002~test.kind~1~5",
            "v0000000002~test.kind~01~5",
            "r2",
            "notes.txt",
        ]
        for name in strays:
            (directory / name).write_bytes(b"junk")
        (directory / "subdir").mkdir()
        (directory / "v0000000003~test.kind~1~5").symlink_to(directory / "notes.txt")
        (tmp_path / "stray-at-root").write_bytes(b"junk")
        (directory.parent / "kzzzz").mkdir()  # not canonical base32
        (directory.parent / "kzzzz" / "v0000000001~test.kind~1~5").write_bytes(b"junk")

        assert [i.version for i in backend.versions(NS, "k")] == [1]
        assert backend.get(NS, "k")[1] == b"complete"
        assert backend.keys(NS) == ["k"]
        assert backend.namespaces() == [NS]
        assert backend.head(NS, "k") == KeyHead(1, 1, KIND)
        assert backend.usage(NS) == Usage(bytes=8, records=1, keys=1)

        _put(backend, "k", 2, b"next")
        assert not old.exists()
        assert fresh.exists()
        assert [i.version for i in backend.versions(NS, "k")] == [1, 2]
        assert not [p for p in directory.iterdir() if p.name.startswith(".tmp-") and p != fresh]


def test_failed_write_leaves_no_temporary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with open_backend(f"file://{tmp_path}") as backend:
        _put(backend, "k", 1, b"one")

        def no_link(_src: str, _dst: str, **_dir_fds: int) -> None:
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(os, "link", no_link)
        with pytest.raises(gp.BackendError, match="no space"):
            _put(backend, "k", 2, b"two")
        monkeypatch.undo()
        directory = _key_directory(backend, "k")
        assert not [p for p in directory.iterdir() if p.name.startswith(".tmp-")]
        assert backend.head(NS, "k").newest == 1


# Names: safe, distinct, inside the root.


@pytest.mark.parametrize("where", ["file", "s3", "s3-layout1"])
def test_awkward_names_stay_inside_the_root_and_apart(
    where: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    namespaces = ("ns", "../../outside", "NS", "é" * 127 + "x")
    root = tmp_path / "root"
    if where == "file":
        backend = open_backend(f"file://{root}")
    else:
        fixture = "s3_url" if where == "s3" else "s3_layout1_url"
        url, options = request.getfixturevalue(fixture)
        backend = open_backend(url, **options)
    with backend:
        for namespace in namespaces:
            for key in AWKWARD:
                _put(backend, key, 1, f"{namespace}|{key}".encode(), namespace=namespace)
        for namespace in namespaces:
            assert backend.keys(namespace) == sorted(AWKWARD)
            for key in AWKWARD:
                assert backend.get(namespace, key)[1] == f"{namespace}|{key}".encode()
        assert backend.namespaces() == sorted(namespaces)
        if where == "file":
            paths = [p for p in tmp_path.rglob("*") if p.is_file()]
            relative = [p.resolve().relative_to(root.resolve()).as_posix() for p in paths]
        else:
            url, options = request.getfixturevalue("s3_url")
            import boto3

            bucket, prefix = url.removeprefix("s3://").split("/", 1)
            client = boto3.client(
                "s3",
                endpoint_url=options["endpoint_url"],
                aws_access_key_id=options["key"],
                aws_secret_access_key=options["secret"],
                region_name="us-east-1",
            )
            pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
            keys = [item["Key"] for page in pages for item in page.get("Contents", [])]
            assert all(k.startswith(prefix + "/") for k in keys)
            assert max(len(k.encode()) for k in keys) <= S3_MAX_KEY_BYTES
            relative = [k.removeprefix(prefix + "/") for k in keys]
    # Per key and namespace: the version, and on S3 its claim (layout 1) or
    # its entry and blob (layout 2, blobs in their own tree "b/"); nothing
    # else but the layout marker at the root.
    assert LAYOUT_OBJECT in relative
    relative.remove(LAYOUT_OBJECT)
    per_key = 1 if where == "file" else 2
    assert len(relative) == per_key * len(namespaces) * len(AWKWARD)
    blobs = [path for path in relative if path.startswith("b/")]
    assert len(blobs) == (len(relative) // 2 if where == "s3" else 0)
    for path in relative:
        parts = path.split("/")
        assert all(0 < len(part.encode()) < 255 and part not in (".", "..") for part in parts)
        if path in blobs:
            assert parts[-1] == "0000000001"
            parts = parts[1:]
        else:
            assert parts[-1][0] in ("e" if where == "s3" else "rv")
        assert all(c in "abcdefghijklmnopqrstuvwxyz234567" for c in "".join(parts[:-1]))
    directories = {path.rsplit("/", 1)[0] for path in relative if path not in blobs}
    assert len(directories) == len(namespaces) * len(AWKWARD)
    # Distinct even on a case-insensitive file system.
    assert len({d.lower() for d in directories}) == len(directories)


def test_longest_names_fit_s3_key_limit() -> None:
    longest = "✓" * 85  # 255 bytes
    components = [*namespace_components(longest), *key_components(longest)]
    assert all(len(c) <= CHUNK_CHARS + 1 for c in components)
    assert MAX_RELATIVE_PATH_BYTES < S3_MAX_KEY_BYTES - 64


def test_s3_prefix_too_long_for_the_key_limit_is_refused(s3_url: UrlAndOptions) -> None:
    url, options = s3_url
    with pytest.raises(gp.InvalidArgument, match="prefix"):
        open_backend(url + "/" + "p" * 100, **options)


names = st.text(
    st.characters(exclude_categories=("Cc", "Cs"), exclude_characters="\x7f"), min_size=1
).filter(
    lambda s: 1 <= len(s.encode()) <= MAX_NAME_BYTES and not any(0x80 <= ord(c) <= 0x9F for c in s)
)


@given(namespace=names, key=names)
def test_names_round_trip(namespace: str, key: str) -> None:
    components = [*namespace_components(namespace), *key_components(key)]
    assert decode_namespace_key_path([*components, "v"]) == (namespace, key, "v")
    assert decode_key_path([*key_components(key), "v"]) == (key, "v")
    assert all(component == component.lower() for component in components)


def test_non_canonical_directories_are_not_names() -> None:
    assert decode_key_path(["kmf", "v"]) is None  # nonzero padding bits
    assert decode_key_path(["KME", "v"]) is None
    assert decode_key_path(["x" + "a" * 10, "kme", "v"]) is None  # short continuation
    assert decode_key_path(["k", "v"]) is None
    assert decode_key_path(["ka1", "v"]) is None  # not base32
    assert decode_key_path(["kme", "v"]) == ("a", "v")


# Secrets and storage failures.

SECRET = "gsp-very-secret-value-0123456789"
ACCESS_KEY = "GSPACCESSKEYIDVALUE9"


def _assert_clean(text: str) -> None:
    assert SECRET not in text
    assert ACCESS_KEY not in text


def test_repr_names_protocol_and_root_only(tmp_path: Path, s3_url: UrlAndOptions) -> None:
    url, options = s3_url
    with open_backend(url, **options) as backend:
        assert repr(backend) == f"ObjectStoreBackend({url!r})"
        assert options["secret"] not in repr(backend)
        assert options["endpoint_url"] not in repr(backend)
    with open_backend(f"file://{tmp_path}") as backend:
        assert repr(backend) == f"ObjectStoreBackend('file://{tmp_path}')"


def test_missing_bucket_is_a_clear_backend_error(
    s3_server: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG", logger="gotstate_persist")
    options = {"endpoint_url": s3_server, "key": ACCESS_KEY, "secret": SECRET}
    with pytest.raises(gp.BackendError, match="does not exist; create it first") as caught:
        open_backend("s3://gsp-no-such-bucket/prefix", **options)
    assert "gsp-no-such-bucket" in str(caught.value)
    _assert_clean(str(caught.value))
    assert s3_server not in str(caught.value)
    assert caught.value.__cause__ is not None
    _assert_clean(caplog.text)


def test_bucket_removed_after_open_is_a_backend_error(s3_url: UrlAndOptions) -> None:
    url, options = s3_url
    with open_backend(url, **options) as backend:
        _put(backend, "k", 1, b"x")
        import boto3

        client = boto3.client(
            "s3",
            endpoint_url=options["endpoint_url"],
            aws_access_key_id=options["key"],
            aws_secret_access_key=options["secret"],
            region_name="us-east-1",
        )
        bucket = url.removeprefix("s3://").split("/", 1)[0]
        for item in client.list_objects_v2(Bucket=bucket).get("Contents", []):
            client.delete_object(Bucket=bucket, Key=item["Key"])
        client.delete_bucket(Bucket=bucket)
        try:
            with pytest.raises(gp.BackendError, match="does not exist"):
                backend.keys(NS)
            with pytest.raises(gp.BackendError, match="does not exist"):
                backend.head(NS, "k")
        finally:
            client.create_bucket(Bucket=bucket)  # for the fixture's cleanup


def test_unreachable_endpoint_is_a_backend_error(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG", logger="gotstate_persist")
    with socket_closed_port() as port:
        endpoint = f"http://127.0.0.1:{port}"
        options = {
            "endpoint_url": endpoint,
            "key": ACCESS_KEY,
            "secret": SECRET,
            "config_kwargs": {"retries": {"max_attempts": 1}, "connect_timeout": 2},
        }
        started = time.monotonic()
        with pytest.raises(gp.BackendError, match="could not be reached") as caught:
            open_backend("s3://some-bucket/prefix", **options)
    assert time.monotonic() - started < 60
    _assert_clean(str(caught.value))
    assert endpoint not in str(caught.value)
    _assert_clean(caplog.text)


@contextmanager
def socket_closed_port() -> Iterator[int]:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    yield port  # nothing listens there any more


class _PrivateMemoryFS(MemoryFileSystem):  # type: ignore[misc] # fsspec is untyped
    """fsspec's memory filesystem under another protocol, with a store of its own."""

    protocol = "gsptest-generic"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # A store of its own, set by hand: fsspec's ``global_store=False`` exists only
        # since 2026.9, and older releases would silently share the global one.
        self.store: dict[str, Any] = {}
        self.pseudo_dirs = [""]

    @classmethod
    def _strip_protocol(cls, path: str) -> str:
        stripped: str = super()._strip_protocol(path.replace(f"{cls.protocol}://", "", 1))
        return stripped


class _NoExclusiveFS(_PrivateMemoryFS):
    """A filesystem without exclusive create, like many fsspec implementations."""

    protocol = "gsptest-noexcl"

    def _open(self, path: str, mode: str = "rb", *args: Any, **kwargs: Any) -> Any:
        if "x" in mode:
            raise ValueError(f"unsupported file mode {mode!r}")
        return super()._open(path, mode, *args, **kwargs)


class _RefusingFS(_PrivateMemoryFS):
    """A filesystem whose every listing is refused, as with revoked credentials."""

    protocol = "gsptest-refusing"

    def ls(self, path: str, detail: bool = True, **kwargs: Any) -> Any:
        raise PermissionError(13, f"Access denied for secret {SECRET}")


@pytest.fixture
def test_protocols() -> None:
    for cls in (_PrivateMemoryFS, _NoExclusiveFS, _RefusingFS):
        fsspec.register_implementation(str(cls.protocol), cls, clobber=True)


@pytest.mark.usefixtures("test_protocols")
def test_other_fsspec_protocols_use_exclusive_open() -> None:
    with open_backend("gsptest-generic://root") as backend:
        assert not backend.capabilities.list_is_consistent
        _put(backend, "k", 1, b"one")
        with pytest.raises(gp.VersionConflict):
            _put(backend, "k", 1, b"again")
        _put(backend, "k", 2, b"two")
        assert backend.get(NS, "k")[1] == b"two"
        assert backend.keys(NS) == ["k"]
        assert backend.delete(NS, "k", [1]) == 1
        assert [i.version for i in backend.versions(NS, "k")] == [2]


@pytest.mark.usefixtures("test_protocols")
def test_protocol_without_exclusive_create_is_refused() -> None:
    with open_backend("gsptest-noexcl://root") as backend:
        with pytest.raises(gp.InvalidArgument, match="exclusively"):
            _put(backend, "k", 1, b"one")
        assert backend.versions(NS, "k") == []


@pytest.mark.usefixtures("test_protocols")
def test_refused_access_is_a_backend_error_without_secrets() -> None:
    backend = open_backend("gsptest-refusing://root", password=SECRET)
    with backend, pytest.raises(gp.BackendError, match="permission denied") as caught:
        backend.head(NS, "k")
    _assert_clean(str(caught.value))
    _assert_clean(repr(backend))


def test_closed_backend_refuses(tmp_path: Path) -> None:
    backend = open_backend(f"file://{tmp_path}")
    backend.close()
    with pytest.raises(gp.BackendError, match="closed"):
        backend.head(NS, "k")


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    with open_backend(f"file://{tmp_path}") as backend:
        with pytest.raises(gp.InvalidArgument):
            _put(backend, "k", 0, b"x")
        with pytest.raises(gp.InvalidArgument):
            _put(backend, "k", 1, b"x", kind="Not~A~Kind")
        with pytest.raises(gp.InvalidArgument):
            _put(backend, "x" * 1025, 1, b"x")
        with pytest.raises(gp.InvalidArgument):
            backend.head(NS, "")
    with pytest.raises(gp.InvalidArgument):
        ObjectStoreBackend("no-scheme")


# Read-only and full file systems. Root ignores permission bits, so as root a
# small tmpfs is mounted instead (skipped where mounting is not allowed).


@contextmanager
def _tmpfs(path: Path, size: str) -> Iterator[Callable[[], None]]:
    """Mount a tmpfs of ``size`` at ``path``; yields a function making it read-only."""
    path.mkdir()
    mount = shutil.which("mount")
    if mount is None:
        pytest.skip("no mount command to make a small or read-only file system")
    done = subprocess.run(
        [mount, "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")

    def read_only() -> None:
        subprocess.run([mount, "-o", "remount,ro", str(path)], check=True)

    try:
        yield read_only
    finally:
        subprocess.run(["umount", str(path)], check=False)


def test_read_only_directory_is_a_backend_error(tmp_path: Path) -> None:
    root = tmp_path / "ro"
    if os.geteuid() != 0:
        root.mkdir()
        with open_backend(f"file://{root}") as backend:
            _put(backend, "k", 1, b"one")
            for directory in [root, *root.rglob("*")]:
                if directory.is_dir():
                    directory.chmod(0o555)
            try:
                with pytest.raises(gp.BackendError, match="permission denied"):
                    _put(backend, "k", 2, b"two")
                with pytest.raises(gp.BackendError, match="permission denied"):
                    _put(backend, "other", 1, b"x")
            finally:
                for directory in [root, *root.rglob("*")]:
                    if directory.is_dir():
                        directory.chmod(0o755)
        return
    with _tmpfs(root, "1m") as read_only, open_backend(f"file://{root}") as backend:
        _put(backend, "k", 1, b"one")
        read_only()
        with pytest.raises(gp.BackendError, match="read-only") as caught:
            _put(backend, "k", 2, b"two")
        assert isinstance(caught.value.__cause__, OSError)
        with pytest.raises(gp.BackendError, match="read-only"):
            _put(backend, "other", 1, b"x")
        assert backend.get(NS, "k")[1] == b"one"  # reads still work
        assert [i.version for i in backend.versions(NS, "k")] == [1]


def test_full_disk_is_a_backend_error_and_leaves_nothing(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("filling a disk needs a small tmpfs, which only root can mount")
    root = tmp_path / "full"
    with _tmpfs(root, "256k"), open_backend(f"file://{root}") as backend:
        with pytest.raises(gp.BackendError, match="no space") as caught:
            _put(backend, "k", 1, b"x" * (1 << 20))
        assert isinstance(caught.value.__cause__, OSError)
        assert backend.versions(NS, "k") == []
        assert not [p for p in root.rglob(".tmp-*")]
        head = backend.head(NS, "k")
        assert (head.last_version, head.newest) == (0, 0)  # nothing of the write remains
        _put(backend, "k", 1, b"small")
        assert backend.get(NS, "k")[1] == b"small"


# The whole stack: a gotstate machine saved and restored through a Store.


def _save_and_restore(url: str, **options: Any) -> None:
    keys = gp.KeyRing.generate()
    machine = build_order_machine()
    machine.start()
    machine.process_event(Event("start"))
    with gp.open_store(url, namespace="orders", keyring=keys, **options) as store:
        first = store.save_machine("order-42", machine)
        machine.process_event(Event("pay"))
        second = store.save_machine("order-42", machine, expected_version=first.version)
        assert (first.version, second.version) == (1, 2)
        assert store.keys(prefix="order-") == ["order-42"]
        assert [ref.version for ref in store.versions("order-42")] == [1, 2]
    with gp.open_store(url, namespace="orders", keyring=keys, **options) as store:
        fresh = build_order_machine()
        store.restore_machine("order-42", fresh)
        assert fresh.current_state.name == machine.current_state.name
        older = build_order_machine()
        store.restore_machine("order-42", older, version=1)
        assert older.current_state.name == "cart"
        with pytest.raises(gp.VersionConflict):
            store.save_machine("order-42", machine, expected_version=1)
        store.delete("order-42")
        assert store.versions("order-42") == []
        assert store.save_machine("order-42", machine).version == 3


def test_store_round_trip_on_files(tmp_path: Path) -> None:
    _save_and_restore(f"file://{tmp_path / 'state'}", upgrade=True)


def test_store_round_trip_on_s3(s3_url: UrlAndOptions) -> None:
    url, options = s3_url
    _save_and_restore(url, **options)


def test_moto_honours_if_none_match(s3_url: UrlAndOptions) -> None:
    """The pinned moto must answer a conditional PUT on an existing object with 412."""
    import boto3
    from botocore.exceptions import ClientError

    url, options = s3_url
    client = boto3.client(
        "s3",
        endpoint_url=options["endpoint_url"],
        aws_access_key_id=options["key"],
        aws_secret_access_key=options["secret"],
        region_name="us-east-1",
    )
    bucket = url.removeprefix("s3://").split("/", 1)[0]
    client.put_object(Bucket=bucket, Key="canary", Body=b"1", IfNoneMatch="*")
    with pytest.raises(ClientError) as caught:
        client.put_object(Bucket=bucket, Key="canary", Body=b"2", IfNoneMatch="*")
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412
    assert client.get_object(Bucket=bucket, Key="canary")["Body"].read() == b"1"


# Hot paths: serialized local writers, quick listings, numbers past the zero padding.


def test_files_serialize_writers_of_a_key_without_claims(tmp_path: Path) -> None:
    import fcntl

    with open_backend(f"file://{tmp_path}") as backend:
        for version in (1, 2, 3):
            _put(backend, "k", version, f"v{version}".encode())
        directory = _key_directory(backend, "k")
        names = sorted(p.name for p in directory.iterdir())
        assert [n[:11] for n in names] == [f"v000000000{v}" for v in (1, 2, 3)]
        # Another process's writer holds the key: a put waits for it, then
        # checks against what that writer left (here: version 4 exists).
        finished = threading.Event()
        outcome: list[BaseException | None] = []

        def write() -> None:
            try:
                _put(backend, "k", 4, b"late")
            except BaseException as exc:
                outcome.append(exc)
            else:
                outcome.append(None)
            finished.set()

        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            writer = threading.Thread(target=write)
            writer.start()
            assert not finished.wait(0.3), "put did not wait for the key's lock"
            (directory / "v0000000004~test.kind~1~9").write_bytes(b"other")
        finally:
            os.close(fd)
        writer.join(30)
        assert isinstance(outcome[0], gp.VersionConflict)
        assert [backend.get(NS, "k", v)[1] for v in (1, 2, 3, 4)] == [b"v1", b"v2", b"v3", b"other"]
        assert backend.head(NS, "k") == KeyHead(4, 4, KIND)


def _increment(url: str, times: int, gate: Any) -> None:
    """Read-modify-write a counter with expected_newest, retrying conflicts."""
    with open_backend(url) as backend:
        gate.wait()
        done = 0
        while done < times:
            head = backend.head(NS, "counter")
            value = int(backend.get(NS, "counter")[1]) if head.newest else 0
            try:
                _put(
                    backend,
                    "counter",
                    head.last_version + 1,
                    str(value + 1).encode(),
                    expected_newest=head.newest,
                )
            except gp.VersionConflict:
                continue
            done += 1


def test_files_compare_and_set_is_exact_across_processes(tmp_path: Path) -> None:
    # Lost updates would show as a final count below the number of successes.
    url, processes, times = f"file://{tmp_path}", 4, 15
    context = multiprocessing.get_context("spawn")
    gate = context.Barrier(processes)
    workers = [
        context.Process(target=_increment, args=(url, times, gate)) for _ in range(processes)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
        assert worker.exitcode == 0
    with open_backend(url) as backend:
        assert backend.get(NS, "counter")[1] == str(processes * times).encode()
        assert [i.version for i in backend.versions(NS, "counter")] == list(
            range(1, processes * times + 1)
        )


def test_get_skips_non_files_under_version_names(tmp_path: Path) -> None:
    with open_backend(f"file://{tmp_path}") as backend:
        _put(backend, "k", 1, b"one")
        directory = _key_directory(backend, "k")
        (directory / "v0000000009~test.kind~1~5").mkdir()
        (directory / "v0000000008~test.kind~1~5").symlink_to(directory / "nowhere")
        os.mkfifo(directory / "v0000000007~test.kind~1~5")
        assert backend.get(NS, "k")[1] == b"one"
        assert backend.get(NS, "k", 1)[1] == b"one"
        with pytest.raises(gp.NotFound):
            backend.get(NS, "k", 9)
        assert backend.head(NS, "k") == KeyHead(1, 1, KIND)


def test_newest_version_beyond_the_zero_padding() -> None:
    from gotstate_persist.backends._objectnames import (
        find_version,
        newest_version,
        summarize_key,
        version_name,
    )

    low, high = version_name(7, KIND, 1, 5), version_name(12_345_678_901, KIND, 1, 5)
    stray = "v99999999999~Bad~1~5"
    names = [low, high, stray, "r0000000007", "zzz", "v0000000008~test.kind~01~5"]
    assert newest_version(names).version == 12_345_678_901  # type: ignore[union-attr]
    assert newest_version([low, "v0000000008~x~01~5"]).version == 7  # type: ignore[union-attr]
    assert newest_version(["r0000000001", stray]) is None
    assert find_version(names, 7).name == low  # type: ignore[union-attr]
    assert find_version(names, 8) is None
    summary = summarize_key([*names, "d0000000020", "r00000000030", ".tmp-x"])
    assert (summary.last_version, summary.last_tombstone) == (12_345_678_901, 20)
    assert summary.temporaries == (".tmp-x",)
    # Two canonical names of one version (tampered): the largest, everywhere.
    twins = [version_name(3, "a.kind", 1, 5), version_name(3, "b.kind", 1, 5)]
    assert newest_version(twins).kind == "b.kind"  # type: ignore[union-attr]
    assert newest_version([*twins[::-1], "zz"]).kind == "b.kind"  # type: ignore[union-attr]
    assert find_version(twins, 3).kind == "b.kind"  # type: ignore[union-attr]


def _listing_names() -> st.SearchStrategy[list[str]]:
    number = st.one_of(
        st.integers(1, 40), st.integers(10**9, 10**9 + 3), st.integers(10**10, 10**10 + 3)
    )
    version = st.builds(
        lambda n, kind, fmt: version_name(n, kind, fmt, 5),
        number,
        st.sampled_from(["a.kind", "b.kind"]),
        st.integers(0, 2),
    )
    marker = st.builds(
        lambda letter, n, pad: f"{letter}{n:0{pad}d}",
        st.sampled_from("rd"),
        number,
        st.sampled_from([10, 11, 3]),
    )
    stray = st.sampled_from(
        ["v0000000099~Bad~1~5", "vzz", "r", "d0", ".tmp-1", ".tmp-2", "zzz", "v", "r0000000001x"]
    )
    return st.lists(st.one_of(version, marker, stray), max_size=12)


@given(_listing_names())
def test_quick_key_summary_agrees_with_the_exact_one(names: list[str]) -> None:
    from gotstate_persist.backends._objectnames import summarize_exactly, summarize_key

    quick, exact = summarize_key(names), summarize_exactly(names)
    assert quick.last_version == exact.last_version
    assert quick.last_tombstone == exact.last_tombstone
    assert quick.newest == exact.newest
    assert sorted(quick.temporaries) == sorted(exact.temporaries)


# Plain object stores never load SQL.

_PLAIN_STORES_SCRIPT = """
import sys

import msgspec

import gotstate_persist as gp
from gotstate_persist.backends import open_backend


class Order(msgspec.Struct):
    id: str


formats = gp.FormatRegistry()
formats.register(Order, kind="order")
keyring = gp.KeyRing.generate()
root = sys.argv[1]
for url in (f"file://{root}/store", "memory://" + root.strip("/").replace("/", "-")):
    with gp.open_store(url, keyring=keyring, formats=formats) as store:
        store.save("o", Order("1"))
        store.save("o", Order("2"))
        store.set_quota(gp.Quota(max_bytes=1_000_000))
        assert store.load("o") == Order("2") and store.load("o", version=1) == Order("1")
        assert store.usage(recount=True).records == 2 and store.quota is not None
    with open_backend(url) as backend:
        assert backend.keys("default") == ["o"]
        assert backend.get("default", "o")[0].version == 2
loaded = sorted(name for name in sys.modules if name.partition(".")[0] == "sqlalchemy")
assert not loaded, loaded
print("no sqlalchemy")
"""


def test_plain_file_and_memory_stores_never_import_sqlalchemy(tmp_path: Path) -> None:
    """Only a catalog needs SQL: opening and using a plain store must not import it."""
    done = subprocess.run(
        [sys.executable, "-c", _PLAIN_STORES_SCRIPT, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "no sqlalchemy"
