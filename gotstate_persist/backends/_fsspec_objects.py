"""Any fsspec filesystem as an object store, and fsspec's in-process memory filesystem.

The generic driver uses only fsspec's public API, so every protocol fsspec
knows (gcs, az, sftp, ...) can hold a store; the S3 driver builds on it. The
memory filesystem gets its own driver because it is shared by everything in
one process and has no exclusive create: one process-wide lock makes its
check-and-create atomic and serializes its writers.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from types import MappingProxyType
from typing import Any

from ..codec import MAX_BLOB_BYTES
from ..errors import InvalidArgument
from ._objects import Objects, Oversized
from ._storage_errors import missing_bucket

__all__ = ["FsspecObjects", "MemoryObjects"]

# fsspec's memory filesystem is one store per process; so is this lock.
_MEMORY_LOCK = threading.RLock()


class FsspecObjects(Objects):
    """Any fsspec filesystem, through its public API; exclusive create via open mode "xb"."""

    #: fsspec's generic ``find`` walks directories and omits one it cannot list,
    #: whatever the error: an unreachable server would list as an empty store.
    #: Only a directory that does not exist (FileNotFoundError) is empty.
    _find_options: Mapping[str, Any] = MappingProxyType({"on_error": "raise"})

    def __init__(self, fs: Any, root: str, protocol: str) -> None:
        self._fs = fs
        self._root = root
        self._protocol = protocol

    def entries(self, directory: str) -> list[tuple[str, int]]:
        try:
            infos = self._fs.ls(directory, detail=True)
        except FileNotFoundError as exc:
            if missing_bucket(exc):
                raise
            return []
        return [
            (str(info["name"]).rstrip("/").rsplit("/", 1)[-1], int(info.get("size") or 0))
            for info in infos
            if info.get("type") == "file"
        ]

    def walk(self, top: str, *, sizes: bool) -> Iterator[tuple[list[str], int]]:
        try:
            found = self._fs.find(top, detail=True, **self._find_options)
        except FileNotFoundError as exc:
            if missing_bucket(exc):
                raise
            return
        start = top.rstrip("/") + "/"
        for name, info in found.items():
            if name.startswith(start) and info.get("type", "file") == "file":
                yield name[len(start) :].split("/"), int(info.get("size") or 0)

    def modified(self, path: str) -> float:
        info = self._fs.info(path)
        stamp = info.get("LastModified", info.get("mtime", info.get("created")))
        if hasattr(stamp, "timestamp"):
            return float(stamp.timestamp())
        if isinstance(stamp, (int, float)):
            return float(stamp)
        return time.time()  # unknown: taken as new, so a sweep leaves it alone

    def read(self, path: str, limit: int = MAX_BLOB_BYTES) -> bytes:
        # A file object reads in bounded blocks whatever the protocol (HTTP
        # included, even from a server that ignores range requests), and most
        # know the size from the open alone.
        with self._fs.open(path, "rb") as handle:
            size = getattr(handle, "size", None)
            if isinstance(size, int) and size > limit:
                raise Oversized(size, limit)
            known = size if isinstance(size, int) and 0 <= size <= limit else limit
            data = bytes(handle.read(known + 1))
            if known < len(data) <= limit:  # larger than announced: read on, bounded
                data += bytes(handle.read(limit + 1 - len(data)))
        if len(data) > limit:
            raise Oversized(None, limit)
        return data

    def create(self, path: str, data: bytes) -> None:
        self._fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        if self._fs.exists(path):  # cheap refusal; "xb" below is what must be exclusive
            raise FileExistsError(path)
        try:
            handle = self._fs.open(path, "xb")
        except (ValueError, NotImplementedError, TypeError) as exc:
            raise InvalidArgument(
                f"the {self._protocol!r} filesystem cannot create files exclusively (open mode "
                "'xb'), which gotstate-persist needs so that a saved version is never "
                "overwritten; use file://, memory:// or s3://, or register a backend for "
                "this scheme with gotstate_persist.register_backend()"
            ) from exc
        with handle:
            handle.write(data)

    def remove(self, paths: Sequence[str]) -> None:
        for path in paths:
            with suppress(FileNotFoundError):
                self._fs.rm_file(path)

    def overwrite(self, path: str, data: bytes) -> None:
        self._fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        self._fs.pipe_file(path, bytes(data))


class MemoryObjects(FsspecObjects):
    """fsspec's per-process memory filesystem; every operation under one process-wide lock.

    The memory filesystem checks and then writes, so exclusive create is only
    atomic if nothing else writes in between: the lock makes it so for every
    backend in this process, the only place that store is visible.
    """

    def entries(self, directory: str) -> list[tuple[str, int]]:
        with _MEMORY_LOCK:
            return super().entries(directory)

    def walk(self, top: str, *, sizes: bool) -> Iterator[tuple[list[str], int]]:
        with _MEMORY_LOCK:
            found = list(super().walk(top, sizes=sizes))
        return iter(found)

    def read(self, path: str, limit: int = MAX_BLOB_BYTES) -> bytes:
        with _MEMORY_LOCK:  # a slice of the stored buffer: never more than limit + 1 bytes
            data = bytes(self._fs.cat_file(path, start=0, end=limit + 1))
        if len(data) > limit:
            raise Oversized(None, limit)
        return data

    serializes_writers = True

    @contextmanager
    def holding(self, directory: str) -> Iterator[None]:
        del directory
        with _MEMORY_LOCK:
            yield

    def check_and_create(
        self, directory: str, choose: Callable[[list[str]], str], data: bytes
    ) -> None:
        with _MEMORY_LOCK:  # the only place this store is visible is this process
            self.create(f"{directory}/{choose(self.names(directory))}", data)

    def create(self, path: str, data: bytes) -> None:
        with _MEMORY_LOCK:
            if self._fs.exists(path):
                raise FileExistsError(path)
            self._fs.pipe_file(path, bytes(data))

    def remove(self, paths: Sequence[str]) -> None:
        with _MEMORY_LOCK:
            super().remove(paths)

    def overwrite(self, path: str, data: bytes) -> None:
        with _MEMORY_LOCK:
            super().overwrite(path, data)
