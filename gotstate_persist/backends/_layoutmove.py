"""Moving a plain S3 store from object layout 1 to layout 2 (``gotstate-persist db upgrade``).

Layout 2 (:mod:`._entrynames`) makes a write three requests instead of four
and a known-version read one GET instead of a LIST and a GET. Stores written
before it keep layout 1 and work as they always did; this module moves one,
in place, when its operator asks:

1. every live version object of every key is copied, on the server (one
   ``CopyObject`` each, with the metadata a layout-2 read returns), to its
   blob, and its entry is written; a key whose ``last_version`` is above its
   newest version (deleted versions, claims of writers that died) gets a
   tombstone of that number, so no number is used again;
2. the layout marker is rewritten: from here on every process that opens the
   store reads and writes layout 2;
3. the layout-1 objects (version objects, claims, tombstones) are removed.

Stop every process that writes the store (and the ones that read it, which
would go on reading layout 1) before moving it, and start them again after:
each reads the marker once, when it opens the store. The move is safe to
stop and run again: before step 2 a rerun copies again (the same bytes to
the same names); after it, a rerun only finishes step 3.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..errors import InvalidArgument
from ._entrynames import Entry, blob_components, blob_metadata, entry_name, tombstone_name
from ._layout import OBJECT_LAYOUT_2, plain_layout
from ._objectnames import claim_name, decode_namespace_key_path, parse_key_listing
from ._objectnames import tombstone_name as layout_1_tombstone
from ._objectprefix import ObjectPrefix
from ._s3_objects import S3Objects

__all__ = ["LayoutMove", "move_to_layout_2"]


@dataclass(frozen=True)
class LayoutMove:
    """What :func:`move_to_layout_2` did: versions copied, layout-1 objects removed."""

    before: int
    after: int
    keys: int
    versions: int
    removed: int


def move_to_layout_2(
    prefix: ObjectPrefix, progress: Callable[[int], None] | None = None
) -> LayoutMove:
    """Move the plain S3 store at ``prefix`` (``ObjectStoreBackend.prefix``) to layout 2.

    ``progress(n)`` is called after each key with the number of versions
    copied so far. Raises ``InvalidArgument`` for anything but a plain S3 store.
    """
    objects = prefix.objects
    if not isinstance(objects, S3Objects) or prefix.newest_layout != OBJECT_LAYOUT_2:
        raise InvalidArgument(
            f"{prefix.display}: only plain S3 stores (with a prefix of at most 60 bytes) have a "
            "second object layout; local files, memory:// and stores with a SQL catalog have "
            "one, with nothing to upgrade"
        )
    before = prefix.object_layout
    by_key: dict[tuple[str, ...], list[tuple[str, int]]] = {}
    with prefix.guard("listing the store"):
        for components, size in objects.walk(prefix.root, sizes=True):
            if components[0] == "b" or len(components) < 3:
                continue  # layout 2's blobs, the marker, quota objects
            by_key.setdefault(tuple(components[:-1]), []).append((components[-1], size))
    copied = keys = 0
    if before != OBJECT_LAYOUT_2:
        for directory, entries in sorted(by_key.items()):
            if decode_namespace_key_path([*directory, "x"]) is None:
                continue
            copied += _copy_key(prefix, objects, list(directory), entries)
            keys += 1
            if progress is not None:
                progress(copied)
        prefix.remark(plain_layout(OBJECT_LAYOUT_2))
    removed = _remove_layout_1(prefix, objects, by_key)
    return LayoutMove(before, OBJECT_LAYOUT_2, keys, copied, removed)


def _copy_key(
    prefix: ObjectPrefix, objects: S3Objects, directory: list[str], names: list[tuple[str, int]]
) -> int:
    """Step 1 for one key: blobs and entries of its live versions, its tombstone."""
    listing = parse_key_listing(names)
    base = prefix.path(directory)
    with prefix.guard("copying a key to object layout 2"):
        for number in sorted(listing.live):
            stored = listing.live[number]
            entry = Entry(
                number, stored.kind, stored.format_version, stored.created_at_us, stored.size
            )
            objects.copy_blob(
                f"{base}/{stored.name}",
                prefix.path(blob_components(directory, number)),
                blob_metadata(entry),
            )
            objects.put_blob(f"{base}/{entry_name(entry)}", b"", {}, exclusive=False)
        if listing.last_version > max(listing.live, default=0):
            # numbers above the newest were used (deleted, or claimed by writers that died)
            objects.overwrite(f"{base}/{tombstone_name(listing.last_version)}", b"")
    return len(listing.live)


def _remove_layout_1(
    prefix: ObjectPrefix, objects: S3Objects, by_key: dict[tuple[str, ...], list[tuple[str, int]]]
) -> int:
    """Step 3: remove version objects, claims, tombstones and superseded objects of layout 1."""
    doomed = []
    for directory, names in by_key.items():
        listing = parse_key_listing(names)
        base = prefix.path(list(directory))
        doomed += [f"{base}/{s.name}" for s in [*listing.live.values(), *listing.superseded]]
        doomed += [f"{base}/{claim_name(number)}" for number in sorted(listing.claims)]
        doomed += [f"{base}/{layout_1_tombstone(n)}" for n in sorted(listing.tombstones)]
    with prefix.guard("removing object layout 1"):
        objects.remove(doomed)
    return len(doomed)
