"""What the conformance suite cannot know: files on disk, reopening, locking, damage."""

from __future__ import annotations

import dbm.dumb
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from gotstate_persist_dbm import DbmBackend

from gotstate_persist.backends import Backend, KeyHead
from gotstate_persist.errors import BackendError, InvalidArgument, NotFound

NS = "ns"


def _url(tmp_path: Path, name: str = "state") -> str:
    return f"dbm://{tmp_path / name}"


def _put(backend: Backend, key: str, version: int, blob: bytes, kind: str = "k") -> None:
    backend.put(NS, key, version, blob, kind=kind, format_version=2, created_at_us=1_234_567)


def test_everything_survives_reopening(tmp_path: Path) -> None:
    with DbmBackend(_url(tmp_path)) as backend:
        for version in (1, 2, 3):
            _put(backend, "a/b", version, b"blob %d" % version)
        _put(backend, "gone", 1, b"x")
        backend.delete(NS, "a/b", [3])
        backend.delete(NS, "gone")
    with DbmBackend(_url(tmp_path)) as backend:
        assert [i.version for i in backend.versions(NS, "a/b")] == [1, 2]
        info, blob = backend.get(NS, "a/b")
        assert (info.version, info.kind, info.format_version, info.size) == (2, "k", 2, 6)
        assert (info.created_at_us, blob) == (1_234_567, b"blob 2")
        # the highest version ever written is remembered, even with nothing stored
        assert backend.head(NS, "a/b") == KeyHead(last_version=3, newest=2, kind="k")
        assert backend.head(NS, "gone") == KeyHead(last_version=1, newest=0, kind=None)
        assert backend.keys(NS) == ["a/b"]
        assert backend.namespaces() == [NS]


def test_repeated_deletes_keep_one_marker(tmp_path: Path) -> None:
    with DbmBackend(_url(tmp_path)) as backend:
        for round_ in range(3):
            _put(backend, "k", round_ + 1, b"x")
            backend.delete(NS, "k")
    with dbm.dumb.open(str(tmp_path / "state"), "r") as db:
        names = sorted(db.keys())
    assert names == [b'["last","ns","k",3]', b'["layout",1]']


def test_second_opener_is_refused_until_close(tmp_path: Path) -> None:
    first = DbmBackend(_url(tmp_path))
    with pytest.raises(BackendError, match="already open"):
        DbmBackend(_url(tmp_path))
    first.close()
    DbmBackend(_url(tmp_path)).close()


def test_closed_backend_refuses_every_call(tmp_path: Path) -> None:
    backend = DbmBackend(_url(tmp_path))
    _put(backend, "k", 1, b"x")
    backend.close()
    backend.close()  # idempotent
    calls: list[Callable[[], object]] = [
        lambda: backend.head(NS, "k"),
        lambda: backend.get(NS, "k"),
        lambda: backend.versions(NS, "k"),
        lambda: backend.keys(NS),
        backend.namespaces,
        lambda: backend.delete(NS, "k"),
        lambda: backend.usage(NS),
        lambda: _put(backend, "k", 2, b"y"),
    ]
    for call in calls:
        with pytest.raises(BackendError, match="closed"):
            call()


@pytest.mark.parametrize(
    "url",
    [
        "dbm://host/path",
        "dbm:///dir/",
        "dbm:///p?x=1",
        "dbm://",
        "sqlite:///x.db",
    ],
)
def test_bad_urls(url: str) -> None:
    with pytest.raises(InvalidArgument, match="dbm"):
        DbmBackend(url)


def test_options(tmp_path: Path) -> None:
    with pytest.raises(BackendError, match="no dbm store"):
        DbmBackend(_url(tmp_path), create=False)
    with pytest.raises(InvalidArgument, match="mode"):
        DbmBackend(_url(tmp_path), mode=0o1000)
    with DbmBackend(_url(tmp_path, "sub/dir/state"), mode=0o640, upgrade=True):
        pass
    assert (tmp_path / "sub/dir/state.dat").stat().st_mode & 0o777 == 0o640
    DbmBackend(_url(tmp_path, "sub/dir/state"), create=False).close()


def test_storage_errors_are_backend_errors_with_the_cause(tmp_path: Path) -> None:
    with DbmBackend(_url(tmp_path)) as backend:
        _put(backend, "k", 1, b"x")
        (tmp_path / "state.dat").unlink()
        with pytest.raises(BackendError, match="reading") as caught:
            backend.get(NS, "k")
        assert isinstance(caught.value.__cause__, OSError)
        with pytest.raises(BackendError, match="writing"):
            _put(backend, "k", 2, b"y")
        # the failed write left nothing behind
        assert backend.head(NS, "k") == KeyHead(last_version=1, newest=1, kind="k")
        with pytest.raises(NotFound):
            backend.get(NS, "k", 2)


def test_missing_index_is_reported_not_treated_as_empty(tmp_path: Path) -> None:
    with DbmBackend(_url(tmp_path)) as backend:
        _put(backend, "k", 1, b"x")
    (tmp_path / "state.dir").rename(tmp_path / "state.bak")
    with pytest.raises(BackendError, match=r"no index .*state\.bak"):
        DbmBackend(_url(tmp_path))
    (tmp_path / "state.bak").rename(tmp_path / "state.dir")
    with DbmBackend(_url(tmp_path)) as backend:
        assert backend.get(NS, "k")[1] == b"x"


def test_damaged_index_is_a_backend_error(tmp_path: Path) -> None:
    DbmBackend(_url(tmp_path)).close()
    with (tmp_path / "state.dir").open("a", encoding="latin-1") as index:
        index.write("'broken\n")
    with pytest.raises(BackendError, match="damaged"):
        DbmBackend(_url(tmp_path))


def test_foreign_and_newer_files_are_refused(tmp_path: Path) -> None:
    with dbm.dumb.open(str(tmp_path / "foreign"), "c") as foreign:
        foreign[b"somebody"] = b"else"
    with pytest.raises(BackendError, match="not a gotstate-persist-dbm store"):
        DbmBackend(_url(tmp_path, "foreign"))
    with dbm.dumb.open(str(tmp_path / "newer"), "c") as newer:
        newer[b'["layout",99]'] = b""
    with pytest.raises(BackendError, match="upgrade"):
        DbmBackend(_url(tmp_path, "newer"))


def test_put_refuses_values_the_layout_cannot_hold(tmp_path: Path) -> None:
    with DbmBackend(_url(tmp_path)) as backend:
        untyped: Any = backend  # callers without a type checker
        with pytest.raises(InvalidArgument, match="version"):
            untyped.put(NS, "k", 1.0, b"x", kind="k", format_version=1, created_at_us=0)
        with pytest.raises(InvalidArgument, match="blob"):
            untyped.put(NS, "k", 1, "text", kind="k", format_version=1, created_at_us=0)
        untyped.put(NS, "k", 1, memoryview(b"xy"), kind="k", format_version=1, created_at_us=-5)
    with DbmBackend(_url(tmp_path)) as backend:
        info, blob = backend.get(NS, "k")
        assert (info.created_at_us, info.size, blob) == (-5, 2, b"xy")


def test_another_process_is_refused(tmp_path: Path) -> None:
    script = (
        "import sys\n"
        "from gotstate_persist.errors import BackendError\n"
        "from gotstate_persist_dbm import DbmBackend\n"
        "try:\n"
        "    DbmBackend(sys.argv[1])\n"
        "except BackendError as exc:\n"
        "    print(exc)\n"
    )
    with DbmBackend(_url(tmp_path)):
        done = subprocess.run(  # noqa: S603 - our interpreter, our script
            [sys.executable, "-c", script, _url(tmp_path)],
            capture_output=True,
            text=True,
            check=True,
        )
    assert "already open" in done.stdout
