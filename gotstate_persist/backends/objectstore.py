"""Object-store backend: one object per version, on any fsspec filesystem.

``file:///dir``, ``memory://name``, ``s3://bucket/prefix`` and any other
fsspec protocol. Each version is its own object holding the sealed blob
verbatim, so operators can list, copy and verify records with their own tools;
the object layout is described in :mod:`._objectnames`.

Object stores have no transactions, so the one guarantee that matters, that
two writers never both create version N of a key, rests on exclusive create:
an object that is created only if no object of that name exists, atomically,
by the storage itself. The name of a version object also carries its kind,
format and creation time, so two racing writers could produce *different*
names. Two protocols keep them apart:

Serialized writers (local files, ``memory://``): every writer of a key holds
the key's lock (local files: ``flock`` on the key directory, which every
process and thread takes on its own descriptor and the kernel drops when a
writer dies; memory: the process-wide lock). Under it ``put`` lists the key,
checks ``version > last_version``, the kind and ``expected_newest``, and
creates the version object: one listing, no claim, and ``expected_newest``
is exact. On NFS this needs working ``flock`` (Linux emulates it with POSIX
locks through the lock manager).

Claims (S3 and every other protocol, where no lock is shared): the exclusive
create is made on a claim object whose name is the version number alone
(``r0000000007``). ``put`` runs:

1. list the key directory and check ``version > last_version``, the
   record kind and ``expected_newest``;
2. exclusively create the claim: the loser of a race gets ``VersionConflict``;
3. list again: a tombstone at or above the claimed number means a ``delete``
   ran meanwhile and the number may be one that was used before, so the claim
   is abandoned; a version object of the claimed number means the same;
   ``expected_newest`` and the kind are checked once more;
4. exclusively create the version object with the blob.

A claim whose writer died before step 4, or gave up at step 3, keeps its
number used: numbers are never reused, and a gap is harmless. Claims found
in a local directory (left by writers before they were serialized) count the
same way. ``expected_newest`` is best effort under claims: two writers that
pass step 3 before either reaches step 4 both succeed (with consecutive
versions); a catalog or a transactional backend (SQL) makes it exact.

The hot paths read as little as they can: ``get`` lists only names (S3: only
names under the ``v`` prefix, or ``v<version>~`` for one version; local files:
``os.listdir``, and a name that is not a regular file sends it back to an
exact listing) and parses only the newest or the requested name; ``head`` and
``put`` list names without sizes and parse one version name. Only
``versions``, ``usage`` and ``delete`` build the full listing.
``delete`` first writes a tombstone naming the highest number it removes, so
``head().last_version`` survives the deletion and stale claims are detected.
Where writers are serialized it holds the same lock, so a save's
``expected_newest`` check and a delete never interleave.

How exclusive create is done depends on the protocol:

* local files: the blob goes to a temporary file in the key directory
  (``.tmp-...``), is flushed and fsynced, then hard-linked to its final name
  with ``os.link``, which fails if that name exists; the temporary is
  unlinked and the directory fsynced. A crash leaves at most a temporary,
  which listings ignore and the next ``put`` in that directory deletes once
  it is older than :data:`STALE_TEMPORARY_SECONDS`. Empty claims and
  tombstones use ``O_CREAT | O_EXCL``.
* S3 (s3fs): ``PutObject`` with ``If-None-Match: *``; S3 is strongly
  consistent, so a listing made after a write returns it.
* ``memory://``: fsspec's memory filesystem is shared by everything in one
  process (``memory://name`` means the same store wherever it is opened in the
  process, as fsspec documents) and has no exclusive create of its own, so
  check-and-create runs under one process-wide lock.
* any other protocol: the filesystem's own exclusive open mode ``"xb"``;
  fsspec leaves whether that is atomic to each implementation, and a
  filesystem that writes in place (rather than uploading on close, as object
  stores do) may leave a partial object if the writer crashes. A filesystem
  without ``"xb"`` is refused with ``InvalidArgument`` at the first write.

Storage options (credentials, ``endpoint_url``, ...) go to fsspec only: they
are kept out of ``repr``, logs and error messages, which name the protocol and
root path alone.
"""

from __future__ import annotations

import abc
import errno
import fcntl
import functools
import logging
import os
import secrets
import stat
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager, suppress
from types import MappingProxyType
from typing import Any

import msgspec

from .._redact import mask_url, option_secrets, safe_cause, scrub, url_secrets
from ..codec import MAX_BLOB_BYTES
from ..errors import (
    BackendError,
    FormatError,
    IntegrityError,
    InvalidArgument,
    NotFound,
    PersistError,
    VersionConflict,
)
from ..quota import Quota
from ._layout import (
    LAYOUT_OBJECT,
    MAX_LAYOUT_BYTES,
    Layout,
    another_catalog,
    check_layout,
    decode_layout,
    layout_mismatch,
)
from ._objectnames import (
    MAX_INT64,
    MAX_RELATIVE_PATH_BYTES,
    TEMP_PREFIX,
    KeyListing,
    KeySummary,
    StoredVersion,
    check_put_arguments,
    claim_name,
    decode_key_path,
    decode_namespace_key_path,
    find_version,
    is_version_name,
    key_components,
    namespace_components,
    newest_version,
    parse_key_listing,
    parse_version_name,
    rank_versions,
    summarize_key,
    tombstone_name,
    version_name,
    version_prefix,
)
from .base import (
    Backend,
    Capabilities,
    KeyHead,
    Replacement,
    Usage,
    VersionInfo,
    kind_mismatch,
    no_step,
)

__all__ = ["STALE_TEMPORARY_SECONDS", "ObjectStoreBackend"]

logger = logging.getLogger(__name__)

#: A temporary older than this belongs to a writer that died; a live writer
#: holds its temporary for one write and fsync of at most a blob's size.
STALE_TEMPORARY_SECONDS = 15 * 60
#: The namespace's persisted quota, beside its key directories ("." is not in
#: the base32 alphabet of directory names, so it cannot collide with one).
QUOTA_OBJECT = "quota.json"
#: S3 refuses longer object keys.
S3_MAX_KEY_BYTES = 1024
#: Objects per S3 DeleteObjects request (the service's maximum).
S3_DELETE_BATCH = 1000
_S3_MISSING_BUCKET = frozenset({"NoSuchBucket", "404"})
_S3_REFUSED = frozenset(
    {
        "AccessDenied",
        "AllAccessDisabled",
        "ExpiredToken",
        "InvalidAccessKeyId",
        "InvalidToken",
        "SignatureDoesNotMatch",
        "403",
    }
)
_S3_CREATE_CONFLICT = frozenset({"PreconditionFailed", "ConditionalRequestConflict", "412"})
#: A ranged GET of an empty object: there is no byte to send.
_S3_INVALID_RANGE = frozenset({"InvalidRange", "416"})
_UNREACHABLE = frozenset(
    {
        "EndpointConnectionError",
        "ConnectTimeoutError",
        "ReadTimeoutError",
        "ConnectionClosedError",
        "ClientConnectorError",
        "ServerDisconnectedError",
    }
)
_NO_CREDENTIALS = frozenset({"NoCredentialsError", "PartialCredentialsError"})
_OS_REASONS: Mapping[int, str] = {
    errno.EROFS: "the file system is read-only; mount it writable or choose another directory",
    errno.ENOSPC: "no space is left on the device; free some space and retry",
    errno.EDQUOT: "the disk quota is exhausted; free some space and retry",
    errno.EACCES: "permission denied; make the directory writable by this user",
    errno.EPERM: "the operation is not permitted here (hard links, which exclusive create "
    "needs, may be unsupported on this file system); choose another directory",
    errno.EXDEV: "hard links are not supported here; choose another directory",
    errno.EOPNOTSUPP: "the file system does not support an operation exclusive create needs "
    "(hard links); choose another directory",
}

# fsspec's memory filesystem is one store per process; so is this lock.
_MEMORY_LOCK = threading.RLock()
#: The quota object is a few hundred bytes of JSON; anything far larger is not one.
MAX_QUOTA_OBJECT_BYTES = 64 * 1024


class _NotAnObject(Exception):
    """A name read by a quick listing is not a regular file (a stray directory or link)."""


class _Oversized(FormatError):
    """An object is larger than a read of it may be; nothing beyond the limit was read.

    A ``FormatError`` already, so a caller that cannot say more (which key and
    version) lets it pass through every guard unchanged.
    """

    def __init__(self, size: int | None, limit: int) -> None:
        self.size, self.limit = size, limit
        held = "more than" if size is None else f"{size} bytes,"
        super().__init__(
            f"a stored object holds {held} over the {limit}-byte limit of what gotstate-persist "
            "reads: it never writes objects this large, so this one was put there by something "
            "else; delete that version (store.delete(key, version=N)) or restore it from a backup"
        )


class _Objects(abc.ABC):
    """The few primitive operations one storage protocol provides, on full paths.

    Errors are the storage's own (``OSError`` and friends); the backend maps
    them at its boundary. ``FileExistsError`` from :meth:`create` and
    ``FileNotFoundError`` from :meth:`read` carry meaning and are kept apart.
    """

    def prepare(self) -> None:  # noqa: B027 - optional hook
        """Check (or create) the root once at open, so failures show early."""

    @abc.abstractmethod
    def entries(self, directory: str) -> list[tuple[str, int]]:
        """``(name, size)`` of the files directly in ``directory`` ([] if none)."""

    def names(self, directory: str, prefix: str = "", *, quick: bool = False) -> list[str]:
        """Names of the files directly in ``directory`` that start with ``prefix``.

        With ``quick``, the list may also hold other names (local files: the
        whole directory, non-files included); callers pick names by parsing
        them, and :meth:`read` of a non-file raises :class:`_NotAnObject`, so
        the caller lists again without ``quick``.
        """
        return [name for name, _size in self.entries(directory) if name.startswith(prefix)]

    @abc.abstractmethod
    def walk(self, top: str, *, sizes: bool) -> Iterator[tuple[list[str], int]]:
        """Path components below ``top`` and size (0 unless ``sizes``) of every file."""

    @abc.abstractmethod
    def read(self, path: str, limit: int = MAX_BLOB_BYTES) -> bytes:
        """The object's bytes; ``FileNotFoundError`` if it does not exist.

        Reads at most ``limit + 1`` bytes and raises :class:`_Oversized` when
        the object holds more than ``limit``, so a huge (or sparse) object
        costs neither memory nor time: the size is checked before the bytes
        are read wherever the protocol tells it.
        """

    @abc.abstractmethod
    def create(self, path: str, data: bytes) -> None:
        """Create ``path`` holding ``data`` atomically; ``FileExistsError`` if it exists."""

    @abc.abstractmethod
    def remove(self, paths: Sequence[str]) -> None:
        """Delete ``paths``; those already gone are fine."""

    def overwrite(self, path: str, data: bytes) -> None:
        """Create or replace ``path`` atomically (readers see old or new, never half)."""
        with suppress(FileExistsError):
            self.remove([path])
        self.create(path, data)

    def swap(self, path: str, expected: bytes, data: bytes) -> bool:
        """Replace ``path`` with ``data`` only if it holds ``expected``; whether it did.

        Exact where writers are serialized (the caller holds the key's lock);
        elsewhere read-compare-overwrite, unless the protocol has a
        conditional write (S3 overrides this with ``If-Match``).
        """
        if not self.holds(path, expected):
            return False
        self.overwrite(path, data)
        return True

    def holds(self, path: str, expected: bytes) -> bool:
        """Whether ``path`` holds exactly ``expected`` (reads at most one byte more)."""
        try:
            return self.read(path, len(expected)) == expected
        except (FileNotFoundError, _Oversized):  # gone, or larger than expected: not it
            return False

    def modified(self, path: str) -> float:
        """When the object was created or last changed, in seconds since the epoch."""
        return os.lstat(path).st_mtime

    def sweep(self, directory: str, names: Sequence[str]) -> None:  # noqa: B027 - optional hook
        """Delete crashed writers' temporaries among ``names`` (local files only)."""

    @contextmanager
    def holding(self, directory: str) -> Iterator[None]:
        """Hold the key's writer lock where :attr:`serializes_writers` (for ``delete``)."""
        del directory
        yield

    #: Whether :meth:`check_and_create` is available: every writer of a key
    #: directory can be made to wait for the others (a lock they all respect).
    serializes_writers = False

    def check_and_create(
        self, directory: str, choose: Callable[[list[str]], str], data: bytes
    ) -> None:
        """Under the key's writer lock: list, let ``choose`` name the object, create it.

        ``choose`` gets the names of the files in ``directory`` and returns the
        name to create, or raises to create nothing. Only where
        :attr:`serializes_writers`; elsewhere ``put`` runs the claim protocol.
        """
        raise NotImplementedError


class _LocalFiles(_Objects):
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
                raise _NotAnObject(path) from None
            raise
        try:
            status = os.fstat(fd)
        except BaseException:
            os.close(fd)
            raise
        if not stat.S_ISREG(status.st_mode):
            os.close(fd)
            raise _NotAnObject(path)
        if status.st_size > limit:  # a sparse file: its size costs nothing, reading it would
            os.close(fd)
            raise _Oversized(status.st_size, limit)
        with os.fdopen(fd, "rb") as handle:
            # one byte past the size it had: it may have grown since the fstat (and
            # never read(limit + 1), which allocates the whole limit up front)
            data = handle.read(status.st_size + 1)
            if len(data) > status.st_size:  # altered while read: read on, still bounded
                data += handle.read(limit + 1 - len(data))
        if len(data) > limit:
            raise _Oversized(None, limit)
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

    def sweep(self, directory: str, names: Sequence[str]) -> None:
        cutoff = time.time() - STALE_TEMPORARY_SECONDS
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


class _FsspecObjects(_Objects):
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
            if _missing_bucket(exc):
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
            if _missing_bucket(exc):
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
                raise _Oversized(size, limit)
            known = size if isinstance(size, int) and 0 <= size <= limit else limit
            data = bytes(handle.read(known + 1))
            if known < len(data) <= limit:  # larger than announced: read on, bounded
                data += bytes(handle.read(limit + 1 - len(data)))
        if len(data) > limit:
            raise _Oversized(None, limit)
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


class _MemoryObjects(_FsspecObjects):
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
            raise _Oversized(None, limit)
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


class _S3Objects(_FsspecObjects):
    """S3 through s3fs: conditional ``PutObject`` and batched ``DeleteObjects``."""

    #: s3fs lists a prefix in one flat listing that raises its errors (and
    #: passes unknown options on to the service call).
    _find_options: Mapping[str, Any] = MappingProxyType({})

    def __init__(self, fs: Any, root: str, protocol: str) -> None:
        super().__init__(fs, root, protocol)
        self.bucket = str(fs.split_path(root)[0])

    def names(self, directory: str, prefix: str = "", *, quick: bool = False) -> list[str]:
        # One ListObjectsV2 per 1,000 names, restricted to ``prefix`` by the
        # service, without s3fs's per-entry info dictionaries.
        start = str(self._fs.split_path(directory)[1]) + "/"
        request: dict[str, Any] = {
            "Bucket": self.bucket,
            "Prefix": start + prefix,
            "Delimiter": "/",
        }
        found: list[str] = []
        while True:
            answer = self._fs.call_s3("list_objects_v2", **request)
            found += [str(item["Key"])[len(start) :] for item in answer.get("Contents", ())]
            token = answer.get("NextContinuationToken")
            if not answer.get("IsTruncated") or not token:
                return found
            request["ContinuationToken"] = token

    def prepare(self) -> None:
        # Never create the bucket: a typo would otherwise silently make a new one.
        self._fs.call_s3("head_bucket", Bucket=self.bucket)

    def read(self, path: str, limit: int = MAX_BLOB_BYTES) -> bytes:
        # One ranged GET, as cheap as a plain one: the service sends at most
        # limit + 1 bytes however large the object is.
        try:
            data = bytes(self._fs.cat_file(path, start=0, end=limit + 1))
        except OSError as exc:
            if _s3_code(exc) not in _S3_INVALID_RANGE:
                raise
            return b""  # only an empty object has no first byte to send
        if len(data) > limit:
            raise _Oversized(None, limit)
        return data

    def create(self, path: str, data: bytes) -> None:
        try:
            self._fs.pipe_file(path, data, mode="create")  # If-None-Match: *
        except OSError as exc:
            # s3fs maps a 412 to FileExistsError only when the service names the
            # failed condition; some S3-compatible stores do not, and a 409
            # means a concurrent conditional write to the same name.
            if not isinstance(exc, FileExistsError) and _s3_code(exc) in _S3_CREATE_CONFLICT:
                raise FileExistsError(path) from exc
            raise

    def swap(self, path: str, expected: bytes, data: bytes) -> bool:
        # Compare-and-set by ETag: the tag read first guards the PUT (If-Match),
        # so a change after it, even one the read below already saw, fails it.
        key = str(self._fs.split_path(path)[1])
        try:
            tag = self._fs.call_s3("head_object", Bucket=self.bucket, Key=key)["ETag"]
        except FileNotFoundError:
            return False
        if not self.holds(path, expected):
            return False
        try:
            self._fs.call_s3("put_object", Bucket=self.bucket, Key=key, Body=data, IfMatch=tag)
        except OSError as exc:
            if isinstance(exc, FileNotFoundError):
                return False  # deleted meanwhile
            if isinstance(exc, FileExistsError) or _s3_code(exc) in _S3_CREATE_CONFLICT:
                return False  # replaced by someone else meanwhile
            raise
        return True

    def remove(self, paths: Sequence[str]) -> None:
        keys = [str(self._fs.split_path(path)[1]) for path in paths]
        for start in range(0, len(keys), S3_DELETE_BATCH):
            batch = keys[start : start + S3_DELETE_BATCH]
            answer = self._fs.call_s3(
                "delete_objects",
                Bucket=self.bucket,
                Delete={"Objects": [{"Key": key} for key in batch], "Quiet": True},
            )
            failed = [e for e in answer.get("Errors", []) if e.get("Code") != "NoSuchKey"]
            if failed:
                code = str(failed[0].get("Code", "unknown"))
                raise PermissionError(
                    errno.EACCES, f"S3 refused to delete {len(failed)} objects ({code})"
                )


def _s3_code(exc: BaseException) -> str | None:
    """The S3 error code behind an exception that s3fs translated, if any."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        response = getattr(current, "response", None)
        if isinstance(response, dict):
            code = response.get("Error", {}).get("Code")
            if code:
                return str(code)
        current = current.__cause__ or current.__context__
    return None


def _missing_bucket(exc: BaseException) -> bool:
    return _s3_code(exc) in _S3_MISSING_BUCKET


def _refuse_credentials_in_urls(url: str, options: Mapping[str, Any]) -> None:
    """Credentials go in options, never in a URL: fsspec and its clients log URLs.

    s3fs would even take ``KEY:SECRET@bucket`` for a bucket name and quote it
    in its errors; the HTTP filesystem and botocore log every URL they request
    at DEBUG, which no masking of ours can reach.
    """
    if mask_url(url) != url:
        raise InvalidArgument(
            f"{mask_url(url)}: object-store URLs cannot carry credentials (a password, "
            "token or key); pass them as options instead, e.g. key= and secret= for s3://"
        )
    client_kwargs = options.get("client_kwargs")
    endpoints = [options.get("endpoint_url")]
    if isinstance(client_kwargs, Mapping):
        endpoints.append(client_kwargs.get("endpoint_url"))
    for endpoint in endpoints:
        if isinstance(endpoint, str) and mask_url(endpoint) != endpoint:
            raise InvalidArgument(
                f"the endpoint_url option {mask_url(endpoint)} carries credentials, which "
                "the storage client does not use but does log; pass them as options "
                "instead, e.g. key= and secret= for s3://"
            )


class ObjectStoreBackend(Backend):
    """Versioned blobs as objects on a local directory, in memory, on S3 or any fsspec store.

    ``url`` picks the filesystem (``file:///dir``, ``memory://name``,
    ``s3://bucket/prefix``, ...). ``options`` are fsspec storage options for
    it, such as ``key``, ``secret``, ``endpoint_url`` or ``client_kwargs`` for
    S3; they never appear in ``repr``, logs or error messages. ``upgrade`` is
    accepted because ``open_store`` passes it to every backend; object stores
    have no schema to upgrade.

    Buckets are never created: a missing bucket is a ``BackendError`` at open.
    See the module docstring for the object layout and how each protocol
    creates a version exclusively.
    """

    def __init__(
        self, url: str, *, upgrade: bool = False, _catalog: str | None = None, **options: Any
    ) -> None:
        del upgrade  # nothing to upgrade: the layout has one version so far
        if not isinstance(url, str) or "://" not in url:
            raise InvalidArgument(
                f"object store URL {mask_url(url)} needs a scheme, e.g. "
                "'file:///var/lib/state', 'memory://name' or 's3://bucket/prefix'"
            )
        # every string of the options, and the URL's credentials: never shown
        self._masked = sorted({*option_secrets(options), *url_secrets(url)}, key=len, reverse=True)
        self._closed = False
        scheme = url.split("://", 1)[0].lower()
        _refuse_credentials_in_urls(url, options)
        fs, root = self._filesystem(url, scheme, options)
        root = str(root).rstrip("/")
        self._root = root
        self._objects, self.capabilities = _driver(fs, root, scheme)
        self._display = _display(scheme, root, self._objects)
        #: Called between the steps of a protocol, with the step's name (for tests).
        self._step: Callable[[str], None] = no_step
        with self._guard("opening the store"):
            self._objects.prepare()
        # the catalog (masked URL) that manages this prefix, or None: plain
        self._catalog_display = _catalog
        #: the layout marker as found at open (None: an unmarked prefix)
        self._layout = self._check_marker()
        self._marked = self._layout is not None
        logger.debug("opened %s", self._display)

    # Which layout the prefix holds (backends._layout).

    def _marker_path(self) -> str:
        return self._path([LAYOUT_OBJECT])

    def _read_marker(self) -> Layout | None:
        with self._guard("reading the layout marker"):
            try:
                data = self._objects.read(self._marker_path(), MAX_LAYOUT_BYTES)
            except FileNotFoundError:
                return None
        return decode_layout(data, self._display)

    def _check_marker(self) -> Layout | None:
        """Refuse a prefix written the other way; the marker, if there is one."""
        found = self._read_marker()
        if found is None:
            return None
        error = layout_mismatch(
            self._display, found, with_catalog=self._catalog_display is not None
        )
        if error is not None:
            raise error
        return found

    def _mark(self, catalog_id: str | None = None) -> None:
        """Before the first write of this instance: record the layout (once per prefix)."""
        if self._marked:
            return
        with_catalog = self._catalog_display is not None
        with self._guard("checking the layout"):
            check_layout(self._objects.walk, self._root, self._display, with_catalog=with_catalog)
        marker = Layout(
            managed_by_catalog=with_catalog, catalog=self._catalog_display, catalog_id=catalog_id
        )
        with self._guard("writing the layout marker"):
            try:
                self._objects.create(self._marker_path(), msgspec.json.encode(marker))
            except FileExistsError:  # another writer marked it first: check theirs
                self._layout = self._check_marker()
                if self._layout is not None and self._layout.catalog_id != catalog_id:
                    raise another_catalog(
                        self._display, self._layout, self._catalog_display or "this catalog"
                    ) from None
                self._marked = self._layout is not None
                return
        self._layout, self._marked = marker, True

    def _filesystem(self, url: str, scheme: str, options: dict[str, Any]) -> tuple[Any, str]:
        try:
            from fsspec.core import url_to_fs
        except ImportError as exc:  # pragma: no cover - fsspec is a dependency
            raise InvalidArgument("object stores need fsspec: pip install fsspec") from exc
        settings = {"skip_instance_cache": True, **options}  # no hidden shared instances
        if scheme in ("s3", "s3a"):
            # list after write must see it (a delete's re-list relies on it): not optional
            settings["use_listings_cache"] = False
        try:
            fs, root = url_to_fs(url, **settings)
        except ImportError as exc:
            hint = (
                "pip install 'gotstate-persist[s3]'"
                if scheme in ("s3", "s3a")
                else (f"install the fsspec implementation of {scheme!r}")
            )
            raise InvalidArgument(f"{scheme}:// storage needs an extra package: {hint}") from exc
        except (TypeError, ValueError) as exc:
            raise InvalidArgument(
                self._mask(
                    f"{scheme}:// storage refused its URL or options ({type(exc).__name__}: "
                    f"{_first_line(exc)}); check the option names"
                )
            ) from self._cause(exc)
        except Exception as exc:
            raise BackendError(
                self._mask(f"cannot open {scheme}:// storage: {type(exc).__name__}")
            ) from self._cause(exc)
        return fs, root

    def __repr__(self) -> str:
        return f"ObjectStoreBackend({self._display!r})"

    # The boundary: every storage error becomes ours here, without secrets.

    @contextmanager
    def _guard(self, action: str) -> Iterator[None]:
        if self._closed:
            raise BackendError("this store is closed; open a new one with open_store()")
        try:
            yield
        except PersistError:
            raise
        except Exception as exc:
            raise BackendError(
                self._mask(f"{action} on {self._display} failed: {self._reason(exc)}")
            ) from self._cause(exc)

    def _reason(self, exc: BaseException) -> str:
        code = _s3_code(exc)
        if isinstance(self._objects, _S3Objects):
            if code in _S3_MISSING_BUCKET:
                return (
                    f"bucket {self._objects.bucket!r} does not exist; create it first "
                    "(gotstate-persist never creates buckets)"
                )
            if code in _S3_REFUSED:
                return (
                    f"S3 refused the request ({code}); check the credentials and that they "
                    "may list, read, write and delete objects in this bucket"
                )
        names = {cls.__name__ for cls in type(exc).__mro__}
        if names & _NO_CREDENTIALS:
            return (
                "no usable credentials were found; pass them as options (e.g. key and secret) "
                "or configure the provider's credential chain"
            )
        if names & _UNREACHABLE or isinstance(exc, (ConnectionError, TimeoutError)):
            return (
                f"the storage endpoint could not be reached ({type(exc).__name__}); check the "
                "endpoint_url option, the network, and that the service is running"
            )
        known = _OS_REASONS.get(exc.errno) if isinstance(exc, OSError) and exc.errno else None
        if known is not None:
            return known
        if isinstance(exc, PermissionError):
            return "permission denied; check the credentials or the file permissions"
        if code is not None:
            return f"the service answered {code}; retry, or check the service's status"
        if isinstance(exc, OSError) and exc.errno:
            return f"{type(exc).__name__}: {os.strerror(exc.errno)}"
        return f"{type(exc).__name__}: {_first_line(exc)}"

    def _mask(self, message: str) -> str:
        return scrub(message, self._masked)

    def _cause(self, exc: BaseException) -> BaseException | None:
        """``exc`` to chain, or None where its traceback would show a credential."""
        return safe_cause(exc, self._masked)

    # Paths.

    def _path(self, components: Sequence[str]) -> str:
        return "/".join([self._root, *components])

    def _key_directory(self, namespace: str, key: str) -> str:
        if type(namespace) is str and type(key) is str:
            return self._path(_key_components(namespace, key))
        return self._path([*namespace_components(namespace), *key_components(key)])

    def _listing(self, namespace: str, key: str) -> tuple[str, KeySummary]:
        """What ``head`` and ``put`` need: names only (no sizes), one name parsed."""
        directory = self._key_directory(namespace, key)
        return directory, self._summary(directory)

    def _summary(self, directory: str) -> KeySummary:
        with self._guard("listing a key"):
            names = self._objects.names(directory)
        return summarize_key(names)

    def _full_listing(self, namespace: str, key: str) -> tuple[str, KeyListing]:
        """Every object of the key with its size (``versions`` and ``delete``)."""
        directory = self._key_directory(namespace, key)
        with self._guard("listing a key"):
            entries = self._objects.entries(directory)
        return directory, parse_key_listing(entries)

    def _find(self, directory: str, version: int | None, *, quick: bool) -> StoredVersion | None:
        """The object ``get`` reads, listing only names that could be it."""
        if version is None:
            prefix = "v"
        elif isinstance(version, int) and 1 <= version <= MAX_INT64:
            prefix = version_prefix(version)
        else:
            return None
        with self._guard("listing a key"):
            names = self._objects.names(directory, prefix, quick=quick)
        return newest_version(names) if version is None else find_version(names, version)

    def _check_put(
        self,
        key: str,
        version: int,
        kind: str,
        summary: KeySummary,
        expected_newest: int | None,
    ) -> None:
        if version <= summary.last_version:
            raise VersionConflict(
                f"version {version} of key {key!r} cannot be created: the key already "
                f"reached version {summary.last_version}; retry the save",
                expected=version - 1,
                actual=_head(summary).newest,
            )
        _check_newest(key, summary.newest, kind, expected_newest)

    def _claim(
        self, directory: str, key: str, version: int, kind: str, expected_newest: int | None
    ) -> None:
        """Steps 2 and 3 of the claim protocol, where writers cannot be serialized."""
        with self._guard("reserving a version"):
            try:
                self._objects.create(f"{directory}/{claim_name(version)}", b"")
            except FileExistsError:
                raise VersionConflict(
                    f"another writer created version {version} of key {key!r} at the same "
                    "time; retry the save",
                    expected=version - 1,
                ) from None
        with self._guard("listing a key"):
            names = self._objects.names(directory)
        after = summarize_key(names)
        if after.last_tombstone >= version:
            raise VersionConflict(
                f"key {key!r} was deleted while version {version} was being saved; retry the save",
                expected=version - 1,
                actual=_head(after).newest,
            )
        if find_version(names, version) is not None:
            raise VersionConflict(
                f"another writer created version {version} of key {key!r} meanwhile; "
                "retry the save",
                expected=version - 1,
                actual=_head(after).newest,
            )
        _check_newest(key, after.newest, kind, expected_newest)

    # The Backend contract.

    def head(self, namespace: str, key: str) -> KeyHead:
        return _head(self._listing(namespace, key)[1])

    def put(
        self,
        namespace: str,
        key: str,
        version: int,
        blob: bytes,
        *,
        kind: str,
        format_version: int,
        created_at_us: int,
        expected_newest: int | None = None,
    ) -> VersionInfo:
        check_put_arguments(version, kind, format_version, created_at_us)
        directory = self._key_directory(namespace, key)
        name = version_name(version, kind, format_version, created_at_us)
        self._mark()

        def checked(names: list[str]) -> str:
            before = summarize_key(names)
            self._check_put(key, version, kind, before, expected_newest)
            if before.temporaries:
                self._objects.sweep(directory, before.temporaries)
            return name

        with self._guard("writing a version"):
            try:
                if self._objects.serializes_writers:
                    self._objects.check_and_create(directory, checked, blob)
                else:
                    checked(self._objects.names(directory))
                    self._claim(directory, key, version, kind, expected_newest)
                    self._step("put:claimed")
                    self._objects.create(f"{directory}/{name}", blob)
            except FileExistsError:  # only a tampered store gets here
                raise VersionConflict(
                    f"version {version} of key {key!r} already exists; retry the save",
                    expected=version - 1,
                ) from None
        return VersionInfo(key, version, kind, format_version, len(blob), created_at_us)

    def get(
        self, namespace: str, key: str, version: int | None = None
    ) -> tuple[VersionInfo, bytes]:
        directory = self._key_directory(namespace, key)
        # Listed again: after a stray non-file under a version's name (exactly),
        # and after an object vanished between listing and reading, which a
        # ``replace`` swapping its format does (it created the new one first).
        attempts = [True, False, False, False]
        for attempt, quick in enumerate(attempts):
            stored = self._find(directory, version, quick=quick)
            if stored is None:
                which = "no stored version" if version is None else f"no version {version}"
                raise NotFound(f"key {key!r} in namespace {namespace!r} has {which}")
            with self._guard("reading a version"):
                try:
                    blob = self._objects.read(f"{directory}/{stored.name}")
                except FileNotFoundError:
                    if attempt + 1 < len(attempts):
                        continue
                    raise NotFound(
                        f"version {stored.version} of key {key!r} was deleted while being read"
                    ) from None
                except _NotAnObject:
                    if quick:
                        continue
                    raise BackendError(  # pragma: no cover - exact listings hold files only
                        f"{stored.name} of key {key!r} is not a regular file"
                    ) from None
                except _Oversized as exc:
                    held = "more than" if exc.size is None else f"{exc.size} bytes,"
                    raise FormatError(
                        f"version {stored.version} of key {key!r} in namespace {namespace!r} "
                        f"holds {held} over the {exc.limit}-byte blob limit: gotstate-persist "
                        "never writes objects this large, so it was put there by something "
                        f"else; delete it (store.delete({key!r}, version={stored.version})) "
                        "or restore it from a backup"
                    ) from None
            return _info(key, stored, len(blob)), blob
        raise AssertionError("unreachable")  # pragma: no cover

    def versions(self, namespace: str, key: str) -> list[VersionInfo]:
        live = self._full_listing(namespace, key)[1].live
        return [_info(key, live[v], live[v].size) for v in sorted(live)]

    def keys(self, namespace: str, prefix: str = "") -> list[str]:
        top = self._path(namespace_components(namespace))
        found: set[str] = set()
        decoded: dict[tuple[str, ...], str | None] = {}  # one decode per key directory
        with self._guard("listing keys"):
            for components, _size in self._objects.walk(top, sizes=False):
                if not is_version_name(components[-1]):
                    continue
                directory = tuple(components[:-1])
                if directory not in decoded:
                    pair = decode_key_path(components)
                    decoded[directory] = None if pair is None else pair[0]
                key = decoded[directory]
                if key is not None and key.startswith(prefix):
                    found.add(key)
        return sorted(found)

    def namespaces(self) -> list[str]:
        found: set[str] = set()
        with self._guard("listing namespaces"):
            for components, _size in self._objects.walk(self._root, sizes=False):
                if is_version_name(components[-1]):
                    triple = decode_namespace_key_path(components)
                    if triple is not None:
                        found.add(triple[0])
        return sorted(found)

    def usage(self, namespace: str) -> Usage:
        return self._count(namespace)[0]

    def _count(self, namespace: str) -> tuple[Usage, dict[tuple[str, ...], list[StoredVersion]]]:
        """Usage counted in one walk (each version once, as reads resolve it), and the
        superseded objects found on the way, by key directory components."""
        top = self._path(namespace_components(namespace))
        by_version: dict[tuple[tuple[str, ...], int], list[StoredVersion]] = {}
        with self._guard("measuring usage"):
            for components, size in self._objects.walk(top, sizes=True):
                stored = parse_version_name(components[-1], size)
                if stored is not None and decode_key_path(components) is not None:
                    place = (tuple(components[:-1]), stored.version)
                    by_version.setdefault(place, []).append(stored)
        total = 0
        superseded: dict[tuple[str, ...], list[StoredVersion]] = {}
        for (parts, _version), found in by_version.items():
            winner = max(found, key=rank_versions)
            total += winner.size
            if len(found) > 1:
                superseded.setdefault(parts, []).extend(s for s in found if s is not winner)
        keys = {parts for parts, _version in by_version}
        return Usage(bytes=total, records=len(by_version), keys=len(keys)), superseded

    def delete(self, namespace: str, key: str, versions: Sequence[int] | None = None) -> int:
        directory = self._key_directory(namespace, key)
        with ExitStack() as held:  # serialized with writers where they are
            with self._guard("locking a key"):
                held.enter_context(self._objects.holding(directory))
            return self._delete(namespace, key, versions)

    def _delete(self, namespace: str, key: str, versions: Sequence[int] | None) -> int:
        directory, listing = self._full_listing(namespace, key)
        if not listing.live:
            raise NotFound(f"key {key!r} in namespace {namespace!r} has no stored version")
        doomed = set(listing.live) if versions is None else set(versions)
        if not doomed:
            return 0
        missing = doomed - set(listing.live)
        if missing:
            raise NotFound(f"key {key!r} has no version(s) {sorted(missing)}; nothing was deleted")
        remaining = set(listing.live) - doomed
        # Claims of removed versions go too (and, when the key is emptied, those
        # of writers that died). A removed claim frees its number for a stale
        # writer, so a tombstone at least as high is written first: put checks
        # for it after claiming.
        claims = set(listing.claims) if not remaining else listing.claims & doomed
        tombstone = max(doomed | claims | {listing.last_tombstone})
        obsolete = [listing.live[v].name for v in sorted(doomed)]
        obsolete += [stored.name for stored in listing.superseded if stored.version in doomed]
        obsolete += [claim_name(v) for v in sorted(claims)]
        obsolete += [tombstone_name(v) for v in sorted(listing.tombstones) if v < tombstone]
        with self._guard("deleting versions"):
            if tombstone > listing.last_tombstone:
                with suppress(FileExistsError):  # a concurrent delete wrote it
                    self._objects.create(f"{directory}/{tombstone_name(tombstone)}", b"")
            self._objects.remove([f"{directory}/{name}" for name in obsolete])
            self._step("delete:removed")
            if not self._objects.serializes_writers:
                # A rewrite may have created a new object of a doomed version
                # after the listing; it checks for the old object after
                # creating its own, so one of the two always sees the other.
                late = parse_key_listing(self._objects.entries(directory))
                stray = [*late.live.values(), *late.superseded]
                self._objects.remove(
                    [f"{directory}/{s.name}" for s in stray if s.version in doomed]
                )
        return len(doomed)

    def replace(self, namespace: str, replacements: Sequence[Replacement]) -> list[bool]:
        done = []
        for replacement in replacements:
            directory = self._key_directory(namespace, replacement.key)
            with ExitStack() as held:  # serialized with writers where they are
                with self._guard("locking a key"):
                    held.enter_context(self._objects.holding(directory))
                done.append(self._replace(directory, replacement))
        return done

    def _replace(self, directory: str, replacement: Replacement) -> bool:
        """Swap one version's object; the name changes with the format version.

        A new name is created (exclusively) before the old one is removed, so
        readers always find one of them; a crash in between leaves both, and
        listings and reads take the newer format (:func:`find_version` picks
        the largest name), until ``recount`` removes the older.
        """
        stored = self._find(directory, replacement.version, quick=False)
        if stored is None:
            return False
        old_path = f"{directory}/{stored.name}"
        name = version_name(
            replacement.version, stored.kind, replacement.format_version, stored.created_at_us
        )
        if name == stored.name:  # same format (a reseal): in place, compare-and-set
            with self._guard("replacing a version"):
                return self._objects.swap(old_path, replacement.expected, replacement.blob)
        with self._guard("reading a version"):
            if not self._objects.holds(old_path, replacement.expected):
                return False
        self._step("replace:read")
        with self._guard("replacing a version"):
            try:
                self._objects.create(f"{directory}/{name}", replacement.blob)
            except FileExistsError:
                return False  # replaced by someone else meanwhile
            self._step("replace:created")
            if not self._objects.serializes_writers and not self._objects.holds(
                old_path, replacement.expected
            ):
                # Deleted since it was read (a delete that listed before the new
                # object existed did not remove it, so it goes here), or swapped
                # in place by a reseal, whose content the new object lacks.
                self._objects.remove([f"{directory}/{name}"])
                return False
            self._objects.remove([old_path])
        return True

    def recount(self, namespace: str) -> Usage:
        """Count usage in one walk, then sweep what rewrites cut short left behind."""
        usage, superseded = self._count(namespace)
        if superseded:
            self._sweep_superseded(namespace, superseded, STALE_TEMPORARY_SECONDS)
        return usage

    def sweep(self, namespace: str, *, older_than_s: float = STALE_TEMPORARY_SECONDS) -> int:
        """Remove superseded objects of rewrites cut short; return how many went.

        Where writers are serialized (local files, memory) each key is settled
        under its writer lock, from a fresh listing, so no rewrite is under
        way. Elsewhere (S3) a superseded object goes only once the object that
        supersedes it is older than ``older_than_s``: a rewrite that created
        it has long checked whether the version was deleted meanwhile, and
        nothing a live rewriter needs is removed.
        """
        return self._sweep_superseded(namespace, self._count(namespace)[1], older_than_s)

    def _sweep_superseded(
        self,
        namespace: str,
        superseded: dict[tuple[str, ...], list[StoredVersion]],
        older_than_s: float,
    ) -> int:
        cutoff = time.time() - older_than_s
        removed = 0
        for parts in superseded:
            directory = self._path([*namespace_components(namespace), *parts])
            with ExitStack() as held:
                with self._guard("locking a key"):
                    held.enter_context(self._objects.holding(directory))
                with self._guard("sweeping a key"):
                    listing = parse_key_listing(self._objects.entries(directory))
                    doomed = [
                        f"{directory}/{stored.name}"
                        for stored in listing.superseded
                        if self._objects.serializes_writers
                        or self._settled(f"{directory}/{listing.live[stored.version].name}", cutoff)
                    ]
                    self._objects.remove(doomed)
            removed += len(doomed)
        if removed:
            logger.info("namespace %r: removed %d superseded object(s)", namespace, removed)
        return removed

    def _settled(self, path: str, cutoff: float) -> bool:
        """Whether the object at ``path`` was created before ``cutoff`` (False if unknown)."""
        try:
            return self._objects.modified(path) < cutoff
        except FileNotFoundError:
            return False

    def _quota_path(self, namespace: str) -> str:
        return self._path([*namespace_components(namespace), QUOTA_OBJECT])

    def load_quota(self, namespace: str) -> Quota | None:
        with self._guard("reading the quota"):
            try:
                data = self._objects.read(self._quota_path(namespace), MAX_QUOTA_OBJECT_BYTES)
            except FileNotFoundError:
                return None
            except _Oversized:
                data = b""  # far too large to be a quota: refused below like any damage
        try:
            quota = msgspec.json.decode(data, type=Quota)
        except msgspec.DecodeError:
            raise IntegrityError(
                f"the quota object of namespace {namespace!r} on {self._display} is not a "
                "valid quota; it was altered outside gotstate-persist: set it again with "
                "store.set_quota()"
            ) from None
        return None if quota.unlimited else quota

    def store_quota(self, namespace: str, quota: Quota | None, *, replace: bool) -> Quota | None:
        if quota is not None and quota.unlimited:
            quota = None
        path = self._quota_path(namespace)
        if not replace:
            current = self.load_quota(namespace)
            if current is not None or quota is None:
                return current
            with self._guard("writing the quota"):
                try:
                    self._objects.create(path, msgspec.json.encode(quota))
                except FileExistsError:  # another process decided first
                    return self.load_quota(namespace)
            return quota
        if quota is None and self.load_quota(namespace) is None:
            return None  # nothing to remove (perhaps not even a directory yet)
        with self._guard("writing the quota"):
            if quota is None:
                self._objects.remove([path])
            else:
                self._objects.overwrite(path, msgspec.json.encode(quota))
        return quota

    def close(self) -> None:
        self._closed = True


def _driver(fs: Any, root: str, scheme: str) -> tuple[_Objects, Capabilities]:
    """The primitive operations for ``fs``, and what they guarantee."""
    from fsspec.implementations.local import LocalFileSystem

    protocols = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    if isinstance(fs, LocalFileSystem):
        return _LocalFiles(root), Capabilities(transactions=False, list_is_consistent=True)
    if "memory" in protocols:
        return _MemoryObjects(fs, root, scheme), Capabilities(
            transactions=False, list_is_consistent=True, cross_process=False
        )
    if "s3" in protocols:
        bucket, prefix, _version = fs.split_path(root)
        if not bucket:
            raise InvalidArgument("name a bucket in the URL: s3://bucket/prefix")
        room = S3_MAX_KEY_BYTES - MAX_RELATIVE_PATH_BYTES - 1
        size = len(str(prefix).encode("utf-8"))
        if size > room:
            raise InvalidArgument(
                f"the S3 prefix is {size} bytes; S3 keys hold at most {S3_MAX_KEY_BYTES} "
                f"bytes and the longest key, namespace and version take "
                f"{MAX_RELATIVE_PATH_BYTES + 1} below the prefix, so keep the prefix to at "
                f"most {room} bytes"
            )
        # S3 has been strongly consistent (read and list after write) since 2020.
        return _S3Objects(fs, root, scheme), Capabilities(
            transactions=False, list_is_consistent=True
        )
    logger.info(
        "%s:// storage: exclusive create relies on the filesystem's open mode 'xb', "
        "whose atomicity fsspec leaves to each implementation",
        scheme,
    )
    return _FsspecObjects(fs, root, scheme), Capabilities(
        transactions=False, list_is_consistent=False
    )


@functools.lru_cache(maxsize=1024)
def _key_components(namespace: str, key: str) -> tuple[str, ...]:
    """Components of a key directory; a pure function of two strings, so cached."""
    return (*namespace_components(namespace), *key_components(key))


def _head(summary: KeySummary) -> KeyHead:
    newest = summary.newest
    if newest is None:
        return KeyHead(last_version=summary.last_version)
    return KeyHead(summary.last_version, newest.version, newest.kind)


def _check_newest(
    key: str, newest: StoredVersion | None, kind: str, expected_newest: int | None
) -> None:
    newest_version = 0 if newest is None else newest.version
    if expected_newest is not None and newest_version != expected_newest:
        raise VersionConflict(
            f"key {key!r} is at version {newest_version}, not {expected_newest}: "
            "reload it and retry, or save without expected_version",
            expected=expected_newest,
            actual=newest_version,
        )
    if newest is not None and newest.kind != kind:
        raise kind_mismatch(key, newest.kind, kind)


def _info(key: str, stored: StoredVersion, size: int) -> VersionInfo:
    return VersionInfo(
        key, stored.version, stored.kind, stored.format_version, size, stored.created_at_us
    )


def _display(scheme: str, root: str, objects: _Objects) -> str:
    """``protocol://root`` for messages: never options, credentials masked (``_redact``)."""
    if isinstance(objects, _MemoryObjects):
        return f"{scheme}://{root.lstrip('/')}"
    root = root.split("://", 1)[1] if "://" in root else root  # HTTP roots are whole URLs
    return mask_url(f"{scheme}://{root}")


def _first_line(exc: BaseException) -> str:
    text = str(exc)
    return text.splitlines()[0] if text else ""
