"""Local files as an object store: the one driver that serializes writers itself.

Kept apart because it works through ``os`` directly rather than fsspec: a
``flock`` on each key directory serializes every writer of the key (in any
process, released by the kernel when a writer dies), and exclusive create is
a hard link of a fsynced temporary (:mod:`._objects` says why). The fsync of
each directory that gained or lost an entry is what makes a saved version
survive power loss.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import secrets
import stat
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress

from ..codec import MAX_BLOB_BYTES
from ._objects import STALE_TEMPORARY_SECONDS, NotAnObject, Objects, Oversized
from ._versionnames import TEMP_PREFIX

__all__ = ["LocalFiles"]

# the object store's logger, which users configure (the name it had before this split)
logger = logging.getLogger(f"{__package__}.objectstore")


class LocalFiles(Objects):
    """Local files through ``os``: temporary, fsync, ``os.link``, directory fsync."""

    def __init__(self, root: str) -> None:
        self._root = root

    def prepare(self) -> None:
        os.makedirs(self._root, exist_ok=True)

    def names(self, directory: str, prefix: str = "", *, quick: bool = False) -> list[str]:
        try:
            if quick:  # no DirEntry objects, no filter; read() refuses non-files
                return os.listdir(directory)
            with os.scandir(directory) as listing:
                return [
                    entry.name
                    for entry in listing
                    if entry.name.startswith(prefix) and _is_file(entry)
                ]
        except FileNotFoundError:
            return []

    def entries(self, directory: str) -> list[tuple[str, int]]:
        found = []
        try:
            with os.scandir(directory) as listing:
                for entry in listing:
                    try:
                        if entry.is_file(follow_symlinks=False):  # symlinks are strays
                            found.append((entry.name, entry.stat(follow_symlinks=False).st_size))
                    except FileNotFoundError:
                        continue  # deleted while listing
        except FileNotFoundError:
            return []
        return found

    def walk(self, top: str, *, sizes: bool) -> Iterator[tuple[list[str], int]]:
        try:
            listing = list(os.scandir(top))
        except FileNotFoundError:
            return
        for entry in listing:
            try:
                if entry.is_dir(follow_symlinks=False):
                    for components, size in self.walk(entry.path, sizes=sizes):
                        yield [entry.name, *components], size
                elif entry.is_file(follow_symlinks=False):
                    size = entry.stat(follow_symlinks=False).st_size if sizes else 0
                    yield [entry.name], size
            except FileNotFoundError:
                continue

    def read(self, path: str, limit: int = MAX_BLOB_BYTES) -> bytes:
        # O_NOFOLLOW: a symlink fails (ELOOP); O_NONBLOCK: a FIFO cannot hang the open.
        flags = os.O_RDONLY | os.O_NONBLOCK | _O_NOFOLLOW | _O_CLOEXEC
        try:
            fd = os.open(path, flags)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise NotAnObject(path) from None
            raise
        try:
            status = os.fstat(fd)
        except BaseException:
            os.close(fd)
            raise
        if not stat.S_ISREG(status.st_mode):
            os.close(fd)
            raise NotAnObject(path)
        if status.st_size > limit:  # a sparse file: its size costs nothing, reading it would
            os.close(fd)
            raise Oversized(status.st_size, limit)
        with os.fdopen(fd, "rb") as handle:
            # one byte past the size it had: it may have grown since the fstat (and
            # never read(limit + 1), which allocates the whole limit up front)
            data = handle.read(status.st_size + 1)
            if len(data) > status.st_size:  # altered while read: read on, still bounded
                data += handle.read(limit + 1 - len(data))
        if len(data) > limit:
            raise Oversized(None, limit)
        return data

    def create(self, path: str, data: bytes) -> None:
        directory = os.path.dirname(path)
        self._ensure_directory(directory)
        if not data:
            # An empty marker cannot be half-written: O_EXCL alone is atomic.
            os.close(os.open(path, _CREATE_FLAGS, 0o666))
            return
        temporary = _write_temporary(data, directory)
        try:
            os.link(temporary, path)  # FileExistsError if the version exists
        finally:
            with suppress(FileNotFoundError):
                os.unlink(temporary)
        _fsync_directory(directory)

    serializes_writers = True

    @contextmanager
    def holding(self, directory: str) -> Iterator[None]:
        try:
            held = os.open(directory, os.O_RDONLY | _O_DIRECTORY | _O_CLOEXEC)
        except FileNotFoundError:  # no key directory, nothing to hold off
            yield
            return
        try:
            fcntl.flock(held, fcntl.LOCK_EX)
            yield
        finally:
            os.close(held)

    def check_and_create(
        self, directory: str, choose: Callable[[list[str]], str], data: bytes
    ) -> None:
        # flock(2) on the key directory itself: every writer of the store, in
        # any process or thread (each opens its own descriptor), waits here,
        # and the kernel drops the lock when a writer dies, so nothing goes
        # stale. Everything below is relative to that one descriptor, so a
        # deep path is resolved once.
        self._ensure_directory(directory)
        held = os.open(directory, os.O_RDONLY | _O_DIRECTORY | _O_CLOEXEC)
        try:
            fcntl.flock(held, fcntl.LOCK_EX)
            with os.scandir(held) as listing:
                name = choose([entry.name for entry in listing if _is_file(entry)])
            temporary = _write_temporary(data, dir_fd=held)
            try:
                os.link(temporary, name, src_dir_fd=held, dst_dir_fd=held)
            finally:
                with suppress(FileNotFoundError):
                    os.unlink(temporary, dir_fd=held)
            os.fsync(held)
        finally:
            os.close(held)  # and with it the lock

    def overwrite(self, path: str, data: bytes) -> None:
        directory = os.path.dirname(path)
        self._ensure_directory(directory)
        temporary = _write_temporary(data, directory)
        try:
            os.replace(temporary, path)
        finally:  # gone after the replace; left over only if the replace failed
            with suppress(FileNotFoundError):
                os.unlink(temporary)
        _fsync_directory(directory)

    def remove(self, paths: Sequence[str]) -> None:
        directories = set()
        for path in paths:
            with suppress(FileNotFoundError):
                os.unlink(path)
            directories.add(os.path.dirname(path))
        for directory in directories:
            _fsync_directory(directory)

    def sweep(
        self, directory: str, names: Sequence[str], older_than_s: float = STALE_TEMPORARY_SECONDS
    ) -> None:
        cutoff = time.time() - older_than_s
        for name in names:
            path = os.path.join(directory, name)
            try:
                if os.lstat(path).st_mtime < cutoff:
                    os.unlink(path)
                    logger.info("removed a crashed writer's temporary file %s", path)
            except OSError as exc:  # best effort: the next put tries again
                logger.debug("could not remove temporary %s: %s", path, exc.strerror)

    def _ensure_directory(self, directory: str) -> None:
        """Create the missing directories below the root, each made durable in its parent."""
        if os.path.isdir(directory):
            return
        current = self._root
        for part in os.path.relpath(directory, self._root).split(os.sep):
            parent, current = current, os.path.join(current, part)
            try:
                os.mkdir(current)
            except FileExistsError:
                continue
            _fsync_directory(parent)


_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_O_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_NOFOLLOW | _O_CLOEXEC


def _write_temporary(data: bytes, directory: str = "", *, dir_fd: int | None = None) -> str:
    """Write ``data`` to a new temporary file and fsync it; return its path.

    In ``directory``, or (a bare name) in the directory open as ``dir_fd``.
    Nothing is left behind if writing fails (a full disk, say).
    """
    name = TEMP_PREFIX + secrets.token_hex(8)
    path = name if dir_fd is not None else os.path.join(directory, name)
    fd = os.open(path, _CREATE_FLAGS, 0o666, dir_fd=dir_fd)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        with suppress(FileNotFoundError):
            os.unlink(path, dir_fd=dir_fd)
        raise
    os.close(fd)
    return path


def _is_file(entry: os.DirEntry[str]) -> bool:
    """Whether a listed entry is a regular file (symlinks are strays); no stat on Linux."""
    try:
        return entry.is_file(follow_symlinks=False)
    except OSError:  # deleted while listing
        return False


def _fsync_directory(directory: str) -> None:
    """Make a directory's entries (a new link, a removal) survive power loss."""
    if not hasattr(os, "O_DIRECTORY"):  # pragma: no cover - Windows cannot open directories
        return
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
