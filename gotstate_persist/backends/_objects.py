"""What one storage protocol must provide to hold an object store: the driver interface.

The object-store backends (plain and with a SQL catalog) are written once,
against the few primitive operations of :class:`Objects`; each protocol
implements them in its own module (:mod:`._local_objects`,
:mod:`._fsspec_objects`, :mod:`._s3_objects`). What differs between
protocols, above all how an object is created exclusively, stays behind
this interface:

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
"""

from __future__ import annotations

import abc
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress

from ..codec import MAX_BLOB_BYTES
from ..errors import FormatError

__all__ = ["STALE_TEMPORARY_SECONDS", "NotAnObject", "Objects", "Oversized"]

#: A temporary older than this belongs to a writer that died; a live writer
#: holds its temporary for one write and fsync of at most a blob's size.
STALE_TEMPORARY_SECONDS = 15 * 60


class NotAnObject(Exception):
    """A name read by a quick listing is not a regular file (a stray directory or link)."""


class Oversized(FormatError):
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


class Objects(abc.ABC):
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
        them, and :meth:`read` of a non-file raises :class:`NotAnObject`, so
        the caller lists again without ``quick``.
        """
        return [name for name, _size in self.entries(directory) if name.startswith(prefix)]

    @abc.abstractmethod
    def walk(self, top: str, *, sizes: bool) -> Iterator[tuple[list[str], int]]:
        """Path components below ``top`` and size (0 unless ``sizes``) of every file."""

    @abc.abstractmethod
    def read(self, path: str, limit: int = MAX_BLOB_BYTES) -> bytes:
        """The object's bytes; ``FileNotFoundError`` if it does not exist.

        Reads at most ``limit + 1`` bytes and raises :class:`Oversized` when
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
        except (FileNotFoundError, Oversized):  # gone, or larger than expected: not it
            return False

    def modified(self, path: str) -> float:
        """When the object was created or last changed, in seconds since the epoch."""
        return os.lstat(path).st_mtime

    def sweep(  # noqa: B027 - optional hook
        self, directory: str, names: Sequence[str], older_than_s: float = STALE_TEMPORARY_SECONDS
    ) -> None:
        """Delete crashed writers' temporaries among ``names`` older than ``older_than_s``
        (local files only)."""

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
