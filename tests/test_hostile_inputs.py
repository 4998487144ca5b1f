"""A hostile-input corpus for the storage entry points (issue 11, parts 3 and 6).

Every case feeds one bad input -- a URL or option, stored bytes, stored
metadata -- and asserts the same four things: the failure is a
``PersistError`` subclass (never a raw dependency exception), its message
says what to do, the work done is bounded, and nothing was written or
changed. Storage is always real: SQLite files, a PostgreSQL server, a moto S3
server over HTTP, local files (sparse ones for the huge objects).
"""

from __future__ import annotations

import os
import socket
import sqlite3
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from _places import sql_dump

import gotstate_persist as gp
from gotstate_persist._copy import copy_records
from gotstate_persist.backends import open_backend
from gotstate_persist.backends.sql import SQLBackend
from gotstate_persist.cli import main
from gotstate_persist.sealing import MAX_BLOB_BYTES

GIB = 1024**3
MIB = 1024**2
#: What reading one hostile record may allocate at most (the real limit is
#: the 16 MiB blob plus a little; a stored size or number must not matter).
BOUNDED_PEAK_BYTES = 40 * MIB
#: The lock wait a test allows before PostgreSQL gives up on it.
SHORT_LOCK_WAIT_MS = 300
#: A message that quotes a hostile input shortens it.
MAX_MESSAGE_CHARS = 5000
#: How long a bounded lock wait may take at most, wall clock, in these tests.
LOCK_WAIT_DEADLINE_S = 30.0


class Order(msgspec.Struct, frozen=True):
    id: str
    total: int


def _formats() -> gp.FormatRegistry:
    formats = gp.FormatRegistry()
    formats.register(Order, kind="order", version=1)
    return formats


def _tree(root: Path) -> list[tuple[str, int | None]]:
    """Every path below ``root`` with its size (None for directories)."""
    if not root.exists():
        return []
    return [
        (p.relative_to(root).as_posix(), None if p.is_dir() else p.stat().st_size)
        for p in sorted(root.rglob("*"))
    ]


def _assert_actionable(error: BaseException) -> None:
    """One clear error of ours that tells the user what to do next."""
    assert isinstance(error, gp.PersistError), type(error)
    text = str(error)
    assert text and "\n" not in text
    assert len(text) < MAX_MESSAGE_CHARS, "a message must not echo a huge input whole"
    advice = (
        "use ",
        "check",
        "restore",
        "delete",
        "retry",
        "install",
        "percent-encode",
        "choose",
        "run ",
        "repair",
        "must be",
        "pass ",
        "set ",
    )
    assert any(word in text.lower() for word in advice), text


# ---------------------------------------------------------------------------
# URLs and options


def _url_cases(tmp: Path) -> list[tuple[str, str, dict[str, Any], type[gp.PersistError]]]:
    """``(id, url, options, error)``: inputs that must be refused before anything is created."""
    db = f"sqlite:///{tmp / 'db' / 'state.db'}"
    invalid = gp.InvalidArgument
    return [
        ("sqlite-nul", f"sqlite:///{tmp / 'db' / 'x'}\x00y.db", {}, invalid),
        ("sqlite-newline", f"sqlite:///{tmp / 'db' / 'x'}\ny.db", {}, invalid),
        ("file-nul", f"file://{tmp / 'db'}\x00x", {}, invalid),
        ("postgresql-nul", "postgresql://u:pw@127.0.0.1:1/db\x00", {}, invalid),
        ("sqlite-memory-empty", "sqlite://", {}, invalid),
        ("sqlite-memory", "sqlite:///:memory:", {}, invalid),
        ("sqlite-memory-uri", "sqlite:///file:x?mode=memory&uri=true", {}, invalid),
        ("engine-options-int", db, {"engine_options": 5}, invalid),
        ("engine-options-list", db, {"engine_options": [("echo", True)]}, invalid),
        ("engine-options-nonstr-key", db, {"engine_options": {1: 2}}, invalid),
        ("engine-options-unknown", db, {"engine_options": {"bogus": 1}}, invalid),
        ("engine-options-poolclass", db, {"engine_options": {"poolclass": 5}}, invalid),
        ("connect-args-int", db, {"engine_options": {"connect_args": 5}}, invalid),
        ("connect-args-unknown", db, {"engine_options": {"connect_args": {"bogus": 1}}}, invalid),
        ("busy-timeout-bool", db, {"busy_timeout_ms": True}, invalid),
        ("busy-timeout-negative", db, {"busy_timeout_ms": -1}, invalid),
        ("busy-timeout-huge", db, {"busy_timeout_ms": 2**40}, invalid),
        ("busy-timeout-str", db, {"busy_timeout_ms": "5"}, invalid),
        ("synchronous-int", db, {"sqlite_synchronous": 5}, invalid),
        ("unknown-option", db, {"colour": "blue"}, invalid),
        ("unknown-scheme", "nosuchscheme://x/y", {}, invalid),
        ("homoglyph-scheme", "\u0455qlite:///x.db", {}, invalid),  # Cyrillic dze
        ("fullwidth-colon", "sqlite\uff1a///x.db", {}, invalid),
        ("no-scheme", str(tmp / "db" / "state.db"), {}, invalid),
        ("huge-path", "sqlite:///" + "a/" * 40_000 + "x.db", {}, gp.PersistError),
        ("huge-name", "sqlite:///" + "n" * 100_000 + ".db", {}, gp.PersistError),
        ("huge-file-url", "file:///" + "d" * 100_000, {}, gp.PersistError),
        ("huge-unknown-scheme", "x" * 100_000 + "://y", {}, invalid),
    ]


_URL_IDS = [case[0] for case in _url_cases(Path("/"))]


@pytest.mark.parametrize("case_id", _URL_IDS)
def test_hostile_url_or_option_is_refused_cleanly(
    case_id: str, tmp_path: Path, keyring: gp.KeyRing, monkeypatch: pytest.MonkeyPatch
) -> None:
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    _id, url, options, expected = next(c for c in _url_cases(tmp_path) if c[0] == case_id)
    with pytest.raises(expected) as caught:
        gp.open_store(url, keyring=keyring, **options)
    _assert_actionable(caught.value)
    assert "\x00" not in str(caught.value)
    assert _tree(tmp_path) == [("home", None), ("work", None)]  # nothing created anywhere


@pytest.mark.parametrize("url", [5, None, b"sqlite:///x.db", ["sqlite:///x.db"]])
def test_url_of_the_wrong_type_is_invalid(url: Any, keyring: gp.KeyRing) -> None:
    with pytest.raises(gp.InvalidArgument) as caught:
        gp.open_store(url, keyring=keyring)
    _assert_actionable(caught.value)


def test_sql_backend_refuses_nul_path_without_creating_directories(tmp_path: Path) -> None:
    # Constructed directly, so the check of open_backend does not apply.
    with pytest.raises(gp.InvalidArgument, match="NUL"):
        SQLBackend(f"sqlite:///{tmp_path / 'dir'}\x00/x.db")
    assert _tree(tmp_path) == []


def test_tilde_is_the_home_directory(
    tmp_path: Path, keyring: gp.KeyRing, monkeypatch: pytest.MonkeyPatch
) -> None:
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    with gp.open_store("sqlite:///~/dir/x.db", keyring=keyring, formats=_formats()) as store:
        store.save("o", Order("o", 1))
    assert (home / "dir" / "x.db").is_file()
    assert _tree(work) == []  # no stray "~" directory beside us
    with gp.open_store("sqlite:///~/dir/x.db", keyring=keyring, formats=_formats()) as store:
        assert store.load("o") == Order("o", 1)


# ---------------------------------------------------------------------------
# Oversized objects: the size is checked before anything is read


def _version_object(root: Path) -> Path:
    found = [p for p in root.rglob("v*") if p.is_file()]
    assert len(found) == 1, found
    return found[0]


def _peak_while(action: Callable[[], object]) -> tuple[BaseException | None, int]:
    """Run ``action``; return what it raised and the peak of Python allocations meanwhile."""
    tracemalloc.start()
    try:
        try:
            action()
        except BaseException as exc:  # returned for the test to judge
            raised: BaseException | None = exc
        else:
            raised = None
        return raised, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_sparse_huge_file_is_refused_without_reading_it(
    tmp_path: Path, keyring: gp.KeyRing
) -> None:
    root = tmp_path / "objects"
    url = f"file://{root}"
    with gp.open_store(url, keyring=keyring, formats=_formats()) as store:
        store.save("o", Order("o", 1))
        os.truncate(_version_object(root), 4 * GIB)  # sparse: no disk, only a read would cost
        store.save("p", Order("p", 2))
        before = _tree(root)
        raised, peak = _peak_while(lambda: store.load("o"))
        assert isinstance(raised, gp.FormatError), raised
        _assert_actionable(raised)
        assert "delete it" in str(raised) and "'o'" in str(raised)
        assert peak < BOUNDED_PEAK_BYTES  # nothing near 4 GiB was read
        # bulk walks report it and go on
        report = store.reseal()
        assert [(f.key, f.version) for f in report.failed] == [("o", 1)]
        assert report.scanned == 2 and report.already_current == 1
        assert store.load("p") == Order("p", 2)
        assert _tree(root) == before


def test_oversized_object_in_memory_store_is_refused(keyring: gp.KeyRing) -> None:
    import fsspec

    name = f"memory://hostile-{os.getpid()}-{time.monotonic_ns()}"
    with gp.open_store(name, keyring=keyring, formats=_formats()) as store:
        store.save("o", Order("o", 1))
        fs = fsspec.filesystem("memory")
        [path] = [p for p in fs.find(name.removeprefix("memory:/")) if "/v" in p]
        fs.pipe_file(path, b"\0" * (MAX_BLOB_BYTES + 1))
        with pytest.raises(gp.FormatError, match="delete it") as caught:
            store.load("o")
        _assert_actionable(caught.value)
        fs.rm(name.removeprefix("memory:/"), recursive=True)


def _is_version_object(key: str) -> bool:
    """A version's blob on S3: ``.../v0000000001~...`` (layout 1), ``.../b/.../0000000001``."""
    name = key.rsplit("/", 1)[-1]
    return name.startswith("v") or ("/b/" in key and name.isdigit())


@pytest.mark.parametrize("fixture", ["s3_url", "s3_layout1_url"])
def test_oversized_s3_object_is_refused_with_a_bounded_read(
    fixture: str, request: pytest.FixtureRequest, s3_server: str, keyring: gp.KeyRing
) -> None:
    import boto3

    url, options = request.getfixturevalue(fixture)
    with gp.open_store(url, keyring=keyring, formats=_formats(), **options) as store:
        store.save("o", Order("o", 1))
        bucket = url.removeprefix("s3://").split("/", 1)[0]
        client = boto3.client(
            "s3",
            endpoint_url=s3_server,
            aws_access_key_id=options["key"],
            aws_secret_access_key=options["secret"],
            region_name=options["client_kwargs"]["region_name"],
        )
        [version_object] = [
            item["Key"]
            for item in client.list_objects_v2(Bucket=bucket)["Contents"]
            if _is_version_object(item["Key"])
        ]
        client.put_object(Bucket=bucket, Key=version_object, Body=b"\0" * (MAX_BLOB_BYTES + MIB))
        store.save("p", Order("p", 2))
        with pytest.raises(gp.FormatError, match="delete it") as caught:
            store.load("o")
        _assert_actionable(caught.value)
        assert "'o'" in str(caught.value)
        report = store.reseal()
        assert [(f.key, f.version) for f in report.failed] == [("o", 1)]
        assert report.scanned == 2
        assert store.load("p") == Order("p", 2)


# ---------------------------------------------------------------------------
# Stored bytes: a non-binary value in the SQLite blob column


def _sqlite_path(url: str) -> str:
    return url.removeprefix("sqlite:///")


def _tamper(url: str, sql: str, *params: Any) -> None:
    with sqlite3.connect(_sqlite_path(url)) as conn:
        conn.execute(sql, params)


_NOT_BINARY = {
    "text": "GSPB not really",
    "real": 1.5,
    "negative": -5,
    "zero": 0,
    "large-number": 50_000_000,  # bytes(N) would allocate N bytes
    "huge-number": 2**62,
}


@pytest.fixture
def two_records(sqlite_url: str, keyring: gp.KeyRing) -> Iterator[str]:
    with gp.open_store(sqlite_url, keyring=keyring, formats=_formats()) as store:
        store.save("bad", Order("bad", 1))
        store.save("good", Order("good", 2))
    yield sqlite_url


@pytest.mark.parametrize("value", list(_NOT_BINARY.values()), ids=list(_NOT_BINARY))
def test_non_binary_blob_fails_its_record_only(
    two_records: str,
    keyring: gp.KeyRing,
    value: Any,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = two_records
    _tamper(url, "UPDATE gotstate_persist_records SET blob = ? WHERE key = 'bad'", value)
    before = sql_dump(url)
    with gp.open_store(url, keyring=keyring, formats=_formats()) as store:
        raised, peak = _peak_while(lambda: store.load("bad"))
        assert isinstance(raised, (gp.FormatError, gp.IntegrityError)), raised
        _assert_actionable(raised)
        assert peak < BOUNDED_PEAK_BYTES
        for run in (store.reseal, lambda: store.migrate("order")):
            report, peak = _run_and_peak(run)
            assert [(f.key, f.version) for f in report.failed] == [("bad", 1)]
            assert "binary" in report.failed[0].reason
            assert report.scanned == 2
            assert peak < BOUNDED_PEAK_BYTES
        assert store.load("good") == Order("good", 2)
    copied = copy_records(
        open_backend(url), open_backend(f"sqlite:///{tmp_path / 'copy.db'}"), keyring
    )
    assert copied.copied == 1 and [f[1] for f in copied.failed] == ["bad"]
    keys_file = tmp_path / "keys.json"
    keys_file.write_text(keyring.export())
    capsys.readouterr()
    assert main(["verify", url, "--keys", str(keys_file)]) == 1
    out = capsys.readouterr().out
    assert "1 of 2 records verified, 1 failed" in out
    assert sql_dump(url) == before


def _run_and_peak(run: Callable[[], gp.MigrationReport]) -> tuple[gp.MigrationReport, int]:
    tracemalloc.start()
    try:
        report = run()
        return report, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


# ---------------------------------------------------------------------------
# Stored metadata: every record column with a wrong type (SQLite is dynamically typed)

_DAMAGED_COLUMNS = [
    ("version", "'abc'"),
    ("version", "1.5"),
    ("version", "-3"),
    ("format_version", "'one'"),
    ("format_version", "0"),
    ("size", "'big'"),
    ("size", "-1"),
    ("size", "2.5"),
    ("created_at_us", "'yesterday'"),
    ("created_at_us", "1.5"),
    ("kind", "X'00'"),
]


@pytest.mark.parametrize(
    ("column", "value"), _DAMAGED_COLUMNS, ids=[f"{c}={v}" for c, v in _DAMAGED_COLUMNS]
)
def test_damaged_metadata_column_is_an_integrity_error(
    two_records: str, keyring: gp.KeyRing, column: str, value: str
) -> None:
    url = two_records
    _tamper(url, f"UPDATE gotstate_persist_records SET {column} = {value} WHERE key = 'bad'")
    before = sql_dump(url)
    with gp.open_store(url, keyring=keyring, formats=_formats()) as store:
        for read in (lambda: store.load("bad"), lambda: store.versions("bad")):
            with pytest.raises((gp.IntegrityError, gp.FormatError)) as caught:
                read()
            _assert_actionable(caught.value)
        report = store.reseal()
        assert [f.key for f in report.failed] == ["bad"]
        assert report.scanned == 2
        refs = store.versions("good")
        assert all(type(getattr(ref, name)) is int for ref in refs for name in ("version", "size"))
        assert store.load("good") == Order("good", 2)
        assert sql_dump(url) == before
        try:  # deleting the damaged key: done, or refused with our error and nothing changed
            store.delete("bad")
        except gp.PersistError as refused:
            _assert_actionable(refused)
            assert sql_dump(url) == before
        else:
            assert store.keys() == ["good"]


def test_damaged_bookkeeping_and_counters(two_records: str, keyring: gp.KeyRing) -> None:
    url = two_records
    _tamper(url, "UPDATE gotstate_persist_keys SET last_version = 'x' WHERE key = 'bad'")
    _tamper(url, "UPDATE gotstate_persist_namespaces SET bytes = 'lots'")
    before = sql_dump(url)
    with gp.open_store(url, keyring=keyring, formats=_formats()) as store:
        with pytest.raises(gp.IntegrityError) as caught:
            store.save("bad", Order("bad", 3))
        _assert_actionable(caught.value)
        with pytest.raises(gp.IntegrityError, match="recount") as caught:
            store.usage()
        _assert_actionable(caught.value)
        assert sql_dump(url) == before
        repaired = store.usage(recount=True)
        assert (repaired.records, repaired.keys) == (2, 2)
        assert store.usage() == gp.Usage(repaired.bytes, 2, 2)


def test_odd_object_names_are_ignored_as_strays(tmp_path: Path, keyring: gp.KeyRing) -> None:
    root = tmp_path / "objects"
    with gp.open_store(f"file://{root}", keyring=keyring, formats=_formats()) as store:
        store.save("o", Order("o", 1))
        real = _version_object(root)
        blob = real.read_bytes()
        strays = [
            "v0000000000~order~1~0",  # version 0
            "v00000000002~order~1~0",  # not canonical (11 digits)
            "v99999999999999999999~order~1~0",  # beyond int64
            "v0000000002~ORDER~1~0",  # kind outside the alphabet
            "v0000000002~order~-1~0",  # negative format
            "v0000000002~order~1~-0",  # "-0"
            "v0000000002~order~1~0~",  # trailing separator
        ]
        for name in strays:
            (real.parent / name).write_bytes(blob)
        assert [ref.version for ref in store.versions("o")] == [1]
        assert store.keys() == ["o"]
        assert store.load("o") == Order("o", 1)
        assert store.usage(recount=True).records == 1


# ---------------------------------------------------------------------------
# Unreachable object stores are errors, not empty stores


def _closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port  # closed again: nothing listens there


def test_unreachable_http_store_is_a_backend_error(
    keyring: gp.KeyRing, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"http://127.0.0.1:{_closed_port()}/state"
    backend = open_backend(url)
    try:
        for action in (
            lambda: backend.keys("default"),
            backend.namespaces,
            lambda: backend.usage("default"),
            lambda: backend.recount("default"),
        ):
            with pytest.raises(gp.BackendError, match="could not be reached") as caught:
                action()
            _assert_actionable(caught.value)
            assert "http://http" not in str(caught.value)
    finally:
        backend.close()
    assert main(["ls", url]) == 1


# ---------------------------------------------------------------------------
# PostgreSQL lock waits are bounded by busy_timeout_ms


def test_postgres_save_behind_a_lock_times_out(pg_url: str, keyring: gp.KeyRing) -> None:
    import psycopg

    with gp.open_store(
        pg_url, keyring=keyring, formats=_formats(), busy_timeout_ms=SHORT_LOCK_WAIT_MS
    ) as store:
        store.save("o", Order("o", 1))
        before = sql_dump(pg_url)
        outcome: list[BaseException | None] = []
        with psycopg.connect(pg_url) as holder:
            holder.execute(
                "SELECT * FROM gotstate_persist_keys WHERE \"key\" = 'o' FOR UPDATE"
            ).fetchall()

            def save() -> None:
                try:
                    store.save("o", Order("o", 2))
                except BaseException as exc:  # judged below
                    outcome.append(exc)
                else:
                    outcome.append(None)

            worker = threading.Thread(target=save, daemon=True)
            started = time.monotonic()
            worker.start()
            worker.join(LOCK_WAIT_DEADLINE_S)
            waited = time.monotonic() - started
            holder.rollback()  # let a save that is still waiting go on
            worker.join(LOCK_WAIT_DEADLINE_S)
        assert waited < LOCK_WAIT_DEADLINE_S, "the save waited for the lock without bound"
        [raised] = outcome
        assert isinstance(raised, gp.BackendError), raised
        _assert_actionable(raised)
        assert "busy_timeout_ms" in str(raised)
        assert sql_dump(pg_url) == before  # nothing written
        assert [ref.version for ref in store.versions("o")] == [1]
        store.save("o", Order("o", 2))  # and the store works once the lock is gone


def test_postgres_default_lock_timeout_is_the_busy_timeout(pg_url: str) -> None:
    with SQLBackend(pg_url) as backend, backend.engine.connect() as conn:
        assert conn.exec_driver_sql("SHOW lock_timeout").scalar() == "30s"
    with SQLBackend(pg_url, busy_timeout_ms=0) as backend, backend.engine.connect() as conn:
        assert conn.exec_driver_sql("SHOW lock_timeout").scalar() == "1ms"


# ---------------------------------------------------------------------------
# Stored bytes on every object store: damaged objects fail their record only

_DAMAGED_OBJECTS: dict[str, Callable[[bytes], bytes]] = {
    "empty": lambda blob: b"",
    "truncated": lambda blob: blob[: len(blob) // 2],
    "garbage": lambda blob: os.urandom(len(blob)),
    "flipped-bit": lambda blob: blob[:-1] + bytes([blob[-1] ^ 1]),
    "at-the-limit": lambda blob: blob + b"\0" * (MAX_BLOB_BYTES - len(blob)),
    "one-over-the-limit": lambda blob: blob + b"\0" * (MAX_BLOB_BYTES + 1 - len(blob)),
}


def _object_store(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> tuple[str, dict[str, Any], Callable[[Callable[[bytes], bytes]], None]]:
    """``(url, options, rewrite)``: ``rewrite(change)`` replaces the one version object."""
    if kind == "file":
        root = tmp_path / "objects"

        def rewrite_file(change: Callable[[bytes], bytes]) -> None:
            target = _version_object(root)
            target.write_bytes(change(target.read_bytes()))

        return f"file://{root}", {}, rewrite_file
    if kind == "memory":
        import fsspec

        name = f"hostile-{os.getpid()}-{time.monotonic_ns()}"
        fs = fsspec.filesystem("memory")
        request.addfinalizer(lambda: fs.rm(f"/{name}", recursive=True))

        def rewrite_memory(change: Callable[[bytes], bytes]) -> None:
            [path] = [p for p in fs.find(f"/{name}") if p.rsplit("/", 1)[-1].startswith("v")]
            fs.pipe_file(path, change(fs.cat_file(path)))

        return f"memory://{name}", {}, rewrite_memory
    import boto3

    url, options = request.getfixturevalue("s3_url" if kind == "s3" else "s3_layout1_url")
    bucket = url.removeprefix("s3://").split("/", 1)[0]
    client = boto3.client(
        "s3",
        endpoint_url=options["endpoint_url"],
        aws_access_key_id=options["key"],
        aws_secret_access_key=options["secret"],
        region_name=options["client_kwargs"]["region_name"],
    )

    def rewrite_s3(change: Callable[[bytes], bytes]) -> None:
        [key] = [
            item["Key"]
            for item in client.list_objects_v2(Bucket=bucket)["Contents"]
            if _is_version_object(item["Key"])
        ]
        blob = client.get_object(Bucket=bucket, Key=key)["Body"].read()
        client.put_object(Bucket=bucket, Key=key, Body=change(blob))

    return url, dict(options), rewrite_s3


@pytest.mark.parametrize("damage", list(_DAMAGED_OBJECTS))
@pytest.mark.parametrize("kind", ["file", "memory", "s3", "s3-layout1"])
def test_damaged_object_fails_its_record_only(
    kind: str, damage: str, request: pytest.FixtureRequest, tmp_path: Path, keyring: gp.KeyRing
) -> None:
    url, options, rewrite = _object_store(kind, request, tmp_path)
    with gp.open_store(url, keyring=keyring, formats=_formats(), **options) as store:
        store.save("o", Order("o", 1))
        rewrite(_DAMAGED_OBJECTS[damage])
        store.save("p", Order("p", 2))
        with pytest.raises((gp.FormatError, gp.IntegrityError)):
            store.load("o")
        keyring.rotate()  # so that reseal must open every record, the damaged one too
        report = store.reseal()
        assert [(f.key, f.version) for f in report.failed] == [("o", 1)]
        assert (report.scanned, report.migrated) == (2, 1)
        assert store.load("p") == Order("p", 2)
        assert [ref.version for ref in store.versions("o")] == [1]


@pytest.mark.parametrize(
    ("column", "value"),
    [("max_bytes", "'lots'"), ("max_records", "X'01'"), ("max_keys", "-1"), ("max_bytes", "2.5")],
)
def test_damaged_quota_column_refuses_writes(
    sqlite_url: str, keyring: gp.KeyRing, column: str, value: str
) -> None:
    # SQLite compares any text as greater than any number: a limit overwritten
    # with text must not silently lift the limit.
    with gp.open_store(sqlite_url, keyring=keyring, formats=_formats()) as store:
        store.save("o", Order("o", 1))
        store.set_quota(gp.Quota(max_bytes=10**6, max_records=100, max_keys=100))
    _tamper(sqlite_url, f"UPDATE gotstate_persist_namespaces SET {column} = {value}")
    before = sql_dump(sqlite_url)
    with gp.open_store(sqlite_url, keyring=keyring, formats=_formats()) as store:
        with pytest.raises(gp.IntegrityError, match="set_quota") as caught:
            store.save("p", Order("p", 2))
        _assert_actionable(caught.value)
        with pytest.raises(gp.IntegrityError):
            _ = store.quota
    assert sql_dump(sqlite_url) == before
