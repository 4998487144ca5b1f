"""Object-store backend: one object per version, on any fsspec filesystem.

``file:///dir``, ``memory://name``, ``s3://bucket/prefix`` and any other
fsspec protocol. Each version is its own object holding the sealed blob
verbatim, so operators can list, copy and verify records with their own tools;
the object layout is described in :mod:`._objectnames`.

Object stores have no transactions, so the one guarantee that matters, that
two writers never both create version N of a key, rests on exclusive create:
an object created only if no object of that name exists, atomically, by the
storage itself. A prefix holds one of two object layouts (``_layout``):

Layout 2 (new S3 stores): the blob of version N lives at a name computed
from (namespace, key, N), created with ``If-None-Match: *``, and an empty
*entry* names what listings show. A write is one LIST, that conditional PUT
and the entry's PUT; a known-version read is one GET. See :mod:`._blobkeys`.

Layout 1 (local files, ``memory://``, other protocols, older S3 stores): the
version object's name carries its kind, format and creation time, so two
racing writers could produce *different* names. Two protocols keep them apart.
Serialized writers (local files, ``memory://``): every writer of a key holds
the key's lock (``flock`` on the key directory, which the kernel drops when a
writer dies; memory: the process-wide lock); under it ``put`` lists the key,
checks ``version > last_version``, the kind and ``expected_newest``, and
creates the version object. On NFS this needs working ``flock``.
Claims (layout-1 S3 and every other protocol): ``put`` (1) lists the key and
checks as above; (2) exclusively creates a claim named by the number alone
(``r0000000007``): the loser of a race gets ``VersionConflict``; (3) lists
again: a tombstone at or above the number, or a version object of it, means
a ``delete`` or another writer got there, so the claim is abandoned, and
``expected_newest`` and the kind are checked again; (4) exclusively creates
the version object. A claim whose writer died keeps its number used (a gap
is harmless). ``expected_newest`` is best effort under claims; a catalog or
SQL makes it exact.

``get`` lists only names that could be the one it reads and parses one.
``delete`` first writes a tombstone naming the highest number it removes, so
``head().last_version`` survives the deletion and stale claims are detected.

How each protocol creates an object exclusively is the driver's business
(:mod:`._objects` and one module per protocol); opening the storage, naming
it in messages without its credentials, mapping its errors and the layout
marker belong to the prefix both backends share (:mod:`._objectprefix`).
Usage counting with the sweep of superseded objects, and the quota object,
are helpers this backend owns (:mod:`._usage_sweep`, :mod:`._quota_object`).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, ExitStack, suppress
from typing import Any

from .._quota_rules import Quota
from ..errors import BackendError, NotFound, VersionConflict
from ._blobkeys import BlobKeys, oversized_error
from ._entrynames import Entry, is_entry_name
from ._layout import OBJECT_LAYOUT_2
from ._layoutmove import LayoutMove, move_to_layout_2
from ._objectnames import (
    MAX_INT64,
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
    summarize_key,
    tombstone_name,
    version_name,
    version_prefix,
)
from ._objectprefix import ObjectPrefix
from ._objects import STALE_TEMPORARY_SECONDS, NotAnObject, Objects, Oversized
from ._quota_object import MAX_QUOTA_OBJECT_BYTES, QUOTA_OBJECT, QuotaObject
from ._s3_objects import S3_DELETE_BATCH, S3_MAX_KEY_BYTES
from ._usage_sweep import UsageSweeper
from ._version_checks import check_claimed, check_put, key_head
from .base import Backend, KeyHead, Replacement, Usage, VersionInfo, no_step

__all__ = [
    # defined with the drivers and helpers now, importable from here as before
    "MAX_QUOTA_OBJECT_BYTES",
    "QUOTA_OBJECT",
    "S3_DELETE_BATCH",
    "S3_MAX_KEY_BYTES",
    "STALE_TEMPORARY_SECONDS",
    "LayoutMove",
    "ObjectStoreBackend",
    "move_to_layout_2",
]

# The object store's logger: the drivers and helpers it owns log under this name too.
logger = logging.getLogger(__name__)


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
        self._prefix = ObjectPrefix(url, options, catalog=_catalog)
        self._root = self._prefix.root
        self.capabilities = self._prefix.capabilities
        #: Called between the steps of a protocol, with the step's name (for tests).
        self._step: Callable[[str], None] = no_step
        self._usage = UsageSweeper(self._prefix)
        self._quota = QuotaObject(self._prefix)
        self._blobs = BlobKeys(self._prefix, self._at_step)

    def _at_step(self, step: str) -> None:
        self._step(step)  # looked up at each call: tests replace _step

    def _v2(self) -> BlobKeys | None:
        """Object layout 2's protocol (``_blobkeys``) if the prefix holds it, else None."""
        return self._blobs if self._prefix.object_layout == OBJECT_LAYOUT_2 else None

    def _is_version(self) -> Callable[[str], bool]:
        """Whether an object name is a stored version, in this prefix's object layout."""
        return is_entry_name if self._v2() is not None else is_version_name

    @property
    def prefix(self) -> ObjectPrefix:
        """The storage below this store's URL: its driver, paths, error boundary, layout marker.

        For a backend that keeps its own objects below the same prefix (the
        SQL catalog's); see :class:`~._objectprefix.ObjectPrefix` for what it offers.
        """
        return self._prefix

    @property
    def _objects(self) -> Objects:
        # The prefix's driver: one attribute, so a driver swapped here (fault
        # injection wraps it) is the one every user of the prefix calls.
        return self._prefix.objects

    @_objects.setter
    def _objects(self, objects: Objects) -> None:
        self._prefix.objects = objects

    def __repr__(self) -> str:
        return f"ObjectStoreBackend({self._prefix.display!r})"

    def _guard(self, action: str) -> AbstractContextManager[None]:
        return self._prefix.guard(action)

    # Paths.

    def _path(self, components: Sequence[str]) -> str:
        return self._prefix.path(components)

    def _key_directory(self, namespace: str, key: str) -> str:
        return self._path(self._components(namespace, key))

    def _components(self, namespace: str, key: str) -> Sequence[str]:
        if type(namespace) is str and type(key) is str:
            return _key_components(namespace, key)
        return [*namespace_components(namespace), *key_components(key)]

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
        check_claimed(key, version, kind, names, summarize_key(names), expected_newest)

    # The Backend contract.

    def head(self, namespace: str, key: str) -> KeyHead:
        if (v2 := self._v2()) is not None:
            return v2.head(self._components(namespace, key))
        return key_head(self._listing(namespace, key)[1])

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
        components = self._components(namespace, key)
        self._prefix.mark()  # before the first write: the layout, once per prefix
        if (v2 := self._v2()) is not None:
            entry = Entry(version, kind, format_version, created_at_us, len(blob))
            return v2.put(key, components, entry, blob, expected_newest)
        directory = self._path(components)
        name = version_name(version, kind, format_version, created_at_us)

        def checked(names: list[str]) -> str:
            before = summarize_key(names)
            check_put(key, version, kind, before, expected_newest)
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
        if (v2 := self._v2()) is not None:
            return v2.get(namespace, key, self._components(namespace, key), version)
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
                except NotAnObject:
                    if quick:
                        continue
                    raise BackendError(  # pragma: no cover - exact listings hold files only
                        f"{stored.name} of key {key!r} is not a regular file"
                    ) from None
                except Oversized as exc:
                    raise oversized_error(namespace, key, stored.version, exc) from None
            return _info(key, stored, len(blob)), blob
        raise AssertionError("unreachable")  # pragma: no cover

    def versions(self, namespace: str, key: str) -> list[VersionInfo]:
        if (v2 := self._v2()) is not None:
            return v2.versions(key, self._components(namespace, key))
        live = self._full_listing(namespace, key)[1].live
        return [_info(key, live[v], live[v].size) for v in sorted(live)]

    def keys(self, namespace: str, prefix: str = "") -> list[str]:
        top = self._path(namespace_components(namespace))
        found: set[str] = set()
        decoded: dict[tuple[str, ...], str | None] = {}  # one decode per key directory
        is_version = self._is_version()
        with self._guard("listing keys"):
            for components, _size in self._objects.walk(top, sizes=False):
                if not is_version(components[-1]):
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
        is_version = self._is_version()
        with self._guard("listing namespaces"):
            for components, _size in self._objects.walk(self._root, sizes=False):
                if is_version(components[-1]):
                    triple = decode_namespace_key_path(components)
                    if triple is not None:
                        found.add(triple[0])
        return sorted(found)

    def usage(self, namespace: str) -> Usage:
        if (v2 := self._v2()) is not None:
            top = self._path(namespace_components(namespace))
            with self._guard("measuring usage"):
                return v2.usage(namespace, self._objects.walk(top, sizes=False))
        return self._usage.count(namespace)[0]

    def delete(self, namespace: str, key: str, versions: Sequence[int] | None = None) -> int:
        if (v2 := self._v2()) is not None:
            return v2.delete(namespace, key, self._components(namespace, key), versions)
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
        if (v2 := self._v2()) is not None:
            return [v2.replace(self._components(namespace, r.key), r) for r in replacements]
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
        if (v2 := self._v2()) is not None:
            v2.sweep(namespace, STALE_TEMPORARY_SECONDS)
            return self.usage(namespace)
        usage, superseded = self._usage.count(namespace)
        if superseded:
            self._usage.sweep(namespace, superseded, STALE_TEMPORARY_SECONDS)
        return usage

    def sweep(self, namespace: str, *, older_than_s: float = STALE_TEMPORARY_SECONDS) -> int:
        """Remove superseded objects of rewrites cut short; return how many went.

        Where writers are serialized (local files, memory) each key is settled
        under its writer lock, from a fresh listing, so no rewrite is under
        way. Elsewhere (S3) a superseded object goes only once the object that
        supersedes it is older than ``older_than_s``: a rewrite that created
        it has long checked whether the version was deleted meanwhile, and
        nothing a live rewriter needs is removed. Object layout 2 (S3) also
        completes writes and deletes cut short (``_blobkeys``).
        """
        if (v2 := self._v2()) is not None:
            return v2.sweep(namespace, older_than_s)
        return self._usage.sweep(namespace, self._usage.count(namespace)[1], older_than_s)

    def load_quota(self, namespace: str) -> Quota | None:
        return self._quota.load(namespace)

    def store_quota(self, namespace: str, quota: Quota | None, *, replace: bool) -> Quota | None:
        return self._quota.store(namespace, quota, replace=replace)

    def close(self) -> None:
        self._prefix.close()


@functools.lru_cache(maxsize=1024)
def _key_components(namespace: str, key: str) -> tuple[str, ...]:
    """Components of a key directory; a pure function of two strings, so cached."""
    return (*namespace_components(namespace), *key_components(key))


def _info(key: str, stored: StoredVersion, size: int) -> VersionInfo:
    return VersionInfo(
        key, stored.version, stored.kind, stored.format_version, size, stored.created_at_us
    )
