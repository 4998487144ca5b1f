"""Object layout 2 of a plain S3 store: the per-key protocol on entries and blobs.

The names are in :mod:`._entrynames`; this module is what ``put``, ``get``,
``versions``, ``delete``, ``replace`` and ``sweep`` do with them, for
:class:`~.objectstore.ObjectStoreBackend` when its prefix is marked layout 2.

Requests, and why each is needed:

* ``put``: one LIST of what sorts after the entry of N - 1 (that entry,
  anything newer, the tombstone: the number must be above every number the
  key ever had, the kind must match the newest, and ``expected_newest`` is
  checked; only if N - 1 is not stored, the whole key), one conditional PUT of the
  blob (``If-None-Match: *``: of two writers of one number exactly one
  wins), one PUT of the entry. No claim and no second LIST: the blob's name
  is never freed, so its exclusive create is the claim, and a number deleted
  after the LIST cannot be created again (its blob is still there, empty).
* ``get`` of a known version: one GET of the blob, whose metadata gives the
  kind, format and creation time. ``get`` of the newest: one LIST of the
  entries, then that GET.
* ``head``, ``versions``: one LIST; both read no blob (a version listed twice,
  while a rewrite runs, costs one HEAD).

A writer that dies between its blob and its entry leaves a blob no listing
shows. The next writer of that number finds the blob (its create fails),
writes the missing entry from the blob's metadata and retries with the next
number: the interrupted write completes, as a SQL commit whose reply was lost
does. ``sweep`` (``gotstate-persist gc``) does the same for old ones, and
removes the entries of deleted versions that a delete cut short left behind.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import suppress
from typing import TYPE_CHECKING, cast

from .._names import is_system_key
from ..codec import MAX_BLOB_BYTES
from ..errors import FormatError, NotFound, VersionConflict
from ._entrynames import (
    DELETED_METADATA,
    TAIL_MAX_VERSION,
    Entry,
    after_entry,
    blob_components,
    blob_metadata,
    entry_from_metadata,
    entry_prefix,
    group_entries,
    parse_blob_name,
    parse_entry_name,
    summarize_entries,
    tombstone_name,
    tombstones,
)
from ._objectnames import (
    KeySummary,
    StoredVersion,
    decode_key_path,
    namespace_components,
)
from ._objectprefix import ObjectPrefix
from ._objects import Oversized
from ._version_checks import check_put, key_head
from .base import KeyHead, Replacement, Usage, VersionInfo

if TYPE_CHECKING:
    from ._s3_objects import S3Objects, StoredBlob

__all__ = ["BlobKeys", "oversized_error"]

#: How often ``get`` of the newest tries the next entry down when a delete
#: emptied the blob it listed (before giving up with ``NotFound``).
_NEWEST_ATTEMPTS = 4


def oversized_error(namespace: str, key: str, version: int, exc: Oversized) -> FormatError:
    """The error for a stored object over the blob limit (one wording for both layouts)."""
    held = "more than" if exc.size is None else f"{exc.size} bytes,"
    return FormatError(
        f"version {version} of key {key!r} in namespace {namespace!r} holds {held} over the "
        f"{exc.limit}-byte blob limit: gotstate-persist never writes objects this large, so it "
        f"was put there by something else; delete it (store.delete({key!r}, version={version})) "
        "or restore it from a backup"
    )


def _info(key: str, entry: Entry) -> VersionInfo:
    return VersionInfo(
        key, entry.version, entry.kind, entry.format_version, entry.size, entry.created_at_us
    )


def _as_summary(names: Sequence[str]) -> KeySummary:
    """The layout-1 summary of an entry listing, so both layouts share their checks."""
    found = summarize_entries(names)
    newest = found.newest
    stored = (
        None
        if newest is None
        else StoredVersion(
            newest.name,
            newest.version,
            newest.kind,
            newest.format_version,
            newest.created_at_us,
            newest.size,
        )
    )
    return KeySummary(found.last_version, stored, found.last_tombstone, ())


class BlobKeys:
    """Layout 2's per-key protocol below one :class:`ObjectPrefix` (S3 only).

    Methods take the key directory's components (namespace and key, as
    ``ObjectStoreBackend`` computes them once); ``step`` is the backend's
    test hook, called between the steps of each protocol.
    """

    def __init__(self, prefix: ObjectPrefix, step: Callable[[str], None]) -> None:
        self._prefix = prefix
        self._step = step

    @property
    def _s3(self) -> S3Objects:
        # The prefix's current driver (fault injection may wrap it): S3 methods.
        return cast("S3Objects", self._prefix.objects)

    def _directory(self, components: Sequence[str]) -> str:
        return self._prefix.path(components)

    def _blob(self, components: Sequence[str], version: int) -> str:
        return self._prefix.path(blob_components(components, version))

    def _names(self, components: Sequence[str], prefix: str = "") -> list[str]:
        with self._prefix.guard("listing a key"):
            return self._s3.names(self._directory(components), prefix)

    def _write_entry(self, components: Sequence[str], entry: Entry) -> None:
        self._s3.put_blob(f"{self._directory(components)}/{entry.name}", b"", {}, exclusive=False)

    # Reads.

    def head(self, components: Sequence[str]) -> KeyHead:
        return key_head(_as_summary(self._names(components)))

    def get(
        self, namespace: str, key: str, components: Sequence[str], version: int | None
    ) -> tuple[VersionInfo, bytes]:
        if version is not None:
            return self._read(namespace, key, components, version)
        listed = sorted(group_entries(self._names(components, entry_prefix())), reverse=True)
        if not listed:
            raise NotFound(f"key {key!r} in namespace {namespace!r} has no stored version")
        for number in listed[:_NEWEST_ATTEMPTS]:  # a delete may have emptied the newest
            with suppress(NotFound):
                return self._read(namespace, key, components, number)
        raise NotFound(f"version {listed[0]} of key {key!r} was deleted while being read")

    def _read(
        self, namespace: str, key: str, components: Sequence[str], version: int
    ) -> tuple[VersionInfo, bytes]:
        """One GET: the blob and, from its metadata, what the read returns beside it."""
        missing = NotFound(f"key {key!r} in namespace {namespace!r} has no version {version}")
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise missing
        with self._prefix.guard("reading a version"):
            try:
                found = self._s3.get_blob(self._blob(components, version))
            except FileNotFoundError:
                raise missing from None
            except Oversized as exc:
                raise oversized_error(namespace, key, version, exc) from None
        if not found.data:
            self._check_deleted(namespace, key, components, version, missing)
        return _info(key, entry_from_metadata(version, found.metadata, found.size)), found.data

    def _check_deleted(
        self,
        namespace: str,
        key: str,
        components: Sequence[str],
        version: int,
        missing: NotFound,
    ) -> None:
        """An empty blob: raise ``missing`` if a delete emptied it, else it is damage."""
        with self._prefix.guard("reading a version's metadata"):
            try:
                deleted = self._deleted(self._s3.head_blob(self._blob(components, version)))
            except FileNotFoundError:
                deleted = True
        if deleted:  # the number stays taken, the record is gone
            raise missing
        raise FormatError(
            f"version {version} of key {key!r} in namespace {namespace!r} is an empty object: "
            "it was truncated outside gotstate-persist; restore it from a backup or delete "
            f"it (store.delete({key!r}, version={version}))"
        )

    @staticmethod
    def _deleted(found: StoredBlob) -> bool:
        return found.size == 0 and all(
            found.metadata.get(name) == value for name, value in DELETED_METADATA.items()
        )

    def versions(self, key: str, components: Sequence[str]) -> list[VersionInfo]:
        grouped = group_entries(self._names(components, entry_prefix()))
        infos = []
        for version in sorted(grouped):
            entry = self._choose(components, grouped[version])
            if entry is not None:
                infos.append(_info(key, entry))
        return infos

    def _choose(self, components: Sequence[str], entries: list[Entry]) -> Entry | None:
        """The true entry of a version listed once or more (None: its blob was emptied)."""
        if len(entries) == 1:
            return entries[0]
        version = entries[0].version
        with self._prefix.guard("reading a version's metadata"):
            try:
                found = self._s3.head_blob(self._blob(components, version))
            except FileNotFoundError:
                return None
        if found.size == 0:
            return None
        return entry_from_metadata(version, found.metadata, found.size)

    def usage(self, namespace: str, walked: Iterator[tuple[list[str], int]]) -> Usage:
        """Bytes, records and keys from one walk of the namespace's entries."""
        by_version: dict[tuple[tuple[str, ...], int], list[Entry]] = {}
        users: set[tuple[str, ...]] = set()
        for components, _size in walked:
            entry = parse_entry_name(components[-1])
            decoded = None if entry is None else decode_key_path(components)
            if entry is not None and decoded is not None:
                directory = tuple(components[:-1])
                by_version.setdefault((directory, entry.version), []).append(entry)
                if not is_system_key(decoded[0]):
                    users.add(directory)
        total = records = 0
        top = namespace_components(namespace)
        for (directory, _version), entries in by_version.items():
            chosen = self._choose([*top, *directory], entries)
            if chosen is not None:
                total, records = total + chosen.size, records + 1
        return Usage(bytes=total, records=records, keys=len(users))

    # Writes.

    def put(
        self,
        key: str,
        components: Sequence[str],
        entry: Entry,
        blob: bytes,
        expected_newest: int | None,
    ) -> VersionInfo:
        """LIST, the blob's exclusive create, the entry: see the module docstring."""
        if entry.size > MAX_BLOB_BYTES:  # never read back, and the entry could not name it
            raise FormatError(
                f"a blob of {entry.size} bytes is over the {MAX_BLOB_BYTES}-byte limit of "
                "what gotstate-persist stores; save a smaller record"
            )
        version = entry.version
        check_put(key, version, entry.kind, self._before(components, version), expected_newest)
        path = self._blob(components, version)
        with self._prefix.guard("writing a version"):
            try:
                self._s3.put_blob(path, blob, blob_metadata(entry), exclusive=True)
            except FileExistsError:
                if self._complete(components, version):
                    raise VersionConflict(
                        f"another writer created version {version} of key {key!r} at the same "
                        "time; retry the save",
                        expected=version - 1,
                    ) from None
                raise VersionConflict(
                    f"key {key!r} was deleted while version {version} was being saved; retry "
                    "the save",
                    expected=version - 1,
                ) from None
            self._step("put:blob")
            self._write_entry(components, entry)
        return _info(key, entry)

    def _before(self, components: Sequence[str], version: int) -> KeySummary:
        """What a writer of ``version`` must know of the key, listing as little as it can."""
        if 1 <= version <= TAIL_MAX_VERSION:
            with self._prefix.guard("listing a key"):
                tail = self._s3.names_after(
                    self._directory(components), after=after_entry(version - 1)
                )
            summary = _as_summary(tail)
            newest = summary.newest
            if summary.last_version >= version or version == 1:
                return summary  # a conflict, or the key's whole history
            if newest is not None and newest.version == version - 1:
                return summary  # nothing below the newest matters
        return _as_summary(self._names(components))

    def _complete(self, components: Sequence[str], version: int) -> bool:
        """After losing the create of ``version``: make sure its winner's write is listed.

        If the winner died before writing its entry, nothing would ever list
        the version and every writer would try (and fail) to create it again.
        Writing the entry from the blob's metadata is idempotent: a living
        winner writes the very same name. False if the blob is empty: the
        number was used and deleted (its tombstone is listed by now).
        """
        try:
            found = self._s3.head_blob(self._blob(components, version))
        except FileNotFoundError:
            return True
        if not found.size:
            return False
        self._write_entry(components, entry_from_metadata(version, found.metadata, found.size))
        return True

    def delete(
        self, namespace: str, key: str, components: Sequence[str], versions: Sequence[int] | None
    ) -> int:
        names = self._names(components)
        grouped = group_entries(names)
        if not grouped:
            raise NotFound(f"key {key!r} in namespace {namespace!r} has no stored version")
        doomed = set(grouped) if versions is None else set(versions)
        if not doomed:
            return 0
        missing = doomed - set(grouped)
        if missing:
            raise NotFound(f"key {key!r} has no version(s) {sorted(missing)}; nothing was deleted")
        directory = self._directory(components)
        buried = tombstones(names)
        highest = max(buried, default=0)
        tombstone = max(doomed | {highest})
        with self._prefix.guard("deleting versions"):
            if tombstone > highest:
                with suppress(FileExistsError):  # a concurrent delete wrote it
                    self._s3.create(f"{directory}/{tombstone_name(tombstone)}", b"")
            # Emptied, not removed: the names stay taken, so no writer that
            # listed before this delete can create these numbers again.
            self._s3.empty([self._blob(components, v) for v in sorted(doomed)], DELETED_METADATA)
            self._step("delete:emptied")
            obsolete = [e.name for v in sorted(doomed) for e in grouped[v]]
            obsolete += [tombstone_name(v) for v in sorted(buried) if v < tombstone]
            self._s3.remove([f"{directory}/{name}" for name in obsolete])
            self._step("delete:removed")
            # A rewrite may have written a new entry of a doomed version after
            # the listing; it looks at the blob after writing it, so one of the
            # two always sees the other.
            late = group_entries(self._s3.names(directory, entry_prefix()))
            self._s3.remove(
                [f"{directory}/{e.name}" for v in sorted(doomed & set(late)) for e in late[v]]
            )
        return len(doomed)

    def replace(self, components: Sequence[str], replacement: Replacement) -> bool:
        """Swap one version's blob by compare-and-set; rename its entry if it changes.

        The new entry is written first, so a listing always finds an entry
        that describes the blob (two, until the old one goes: the blob's
        metadata decides between them).
        """
        version = replacement.version
        grouped = group_entries(self._names(components, entry_prefix(version)))
        if version not in grouped:
            return False
        old = grouped[version][0]  # kind and creation time never change
        new = Entry(
            version, old.kind, replacement.format_version, old.created_at_us, len(replacement.blob)
        )
        names = {e.name for e in grouped[version]}
        directory = self._directory(components)
        with self._prefix.guard("replacing a version"):
            if new.name not in names:
                self._write_entry(components, new)
            self._step("replace:entry")
            path = self._blob(components, version)
            tag = self._s3.swap_blob(
                path, replacement.expected, replacement.blob, blob_metadata(new)
            )
            if tag is None:
                if new.name not in names:
                    self._s3.remove([f"{directory}/{new.name}"])
                return False
            self._step("replace:swapped")
            self._s3.remove([f"{directory}/{name}" for name in sorted(names - {new.name})])
            if new.name not in names:
                with suppress(FileNotFoundError):
                    if self._s3.head_blob(path).size == 0:  # deleted meanwhile
                        self._s3.remove([f"{directory}/{new.name}"])
        return True

    # Settling what interrupted writes, deletes and rewrites left.

    def sweep(self, namespace: str, older_than_s: float) -> int:
        """Complete old interrupted writes, drop entries of emptied blobs and stale
        duplicates; return how many objects were written or removed."""
        top = namespace_components(namespace)
        s3 = self._s3
        entries: dict[tuple[str, ...], list[str]] = {}
        blobs: dict[tuple[str, ...], dict[int, int]] = {}
        with self._prefix.guard("sweeping a namespace"):
            for parts, _size in s3.walk(self._prefix.path(top), sizes=False):
                entries.setdefault(tuple(parts[:-1]), []).append(parts[-1])
            for parts, size in s3.walk(self._prefix.path(blob_components(top, 1)[:-1]), sizes=True):
                number = parse_blob_name(parts[-1])
                if number is not None:
                    blobs.setdefault(tuple(parts[:-1]), {})[number] = size
            cutoff = time.time() - older_than_s
            settled = 0
            for directory in sorted(set(entries) | set(blobs)):
                if decode_key_path([*directory, "x"]) is None:
                    continue
                settled += self._settle_key(
                    [*top, *directory], entries.get(directory, []), blobs.get(directory, {}), cutoff
                )
        return settled

    def _settle_key(
        self, components: list[str], names: list[str], sizes: dict[int, int], cutoff: float
    ) -> int:
        s3 = self._s3
        directory = self._directory(components)
        grouped = group_entries(names)
        doomed: list[str] = []
        for version, listed in grouped.items():
            if sizes.get(version) == 0 and self._deleted(
                s3.head_blob(self._blob(components, version))
            ):  # emptied: a delete cut short before its entries went
                doomed += [e.name for e in listed]
            elif len(listed) > 1 and all(
                s3.modified(f"{directory}/{e.name}") < cutoff for e in listed
            ):
                true = self._choose(components, listed)
                doomed += [e.name for e in listed if true is None or e.name != true.name]
        written = 0
        highest = max(tombstones(names), default=0)
        for version, size in sizes.items():
            if size == 0 or version in grouped:
                continue
            path = self._blob(components, version)
            if s3.modified(path) >= cutoff:
                continue  # a writer may be writing its entry right now
            if version <= highest:  # below a delete: abandoned, never to be listed
                s3.empty([path], DELETED_METADATA)
            elif not self._complete(components, version):
                continue
            written += 1
        s3.remove([f"{directory}/{name}" for name in doomed])
        return written + len(doomed)
