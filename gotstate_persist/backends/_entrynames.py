"""The object names of a plain S3 store in object layout 2, and every reading of them.

Layout 1 (:mod:`._versionnames`) keeps each version in one object whose name
carries its kind, format and creation time, so reading a known version first
lists the key to learn that name, and a write reserves its number with a
separate claim. Layout 2 splits what a listing needs from what a read needs::

    <namespace>/<key>/e0000000007~order~2~1767270645123456~1234   empty: the entry
    <namespace>/<key>/t0000000009                                  tombstone
    b/<namespace>/<key>/0000000007                                 the sealed blob

* The **blob** of version N is at a name computed from (namespace, key, N)
  alone, so a known-version read is one GET, and the blob's S3 metadata
  carries the kind, format and creation time that the read returns. Its
  exclusive create (``If-None-Match: *``) is the write's one compare-and-set.
  A blob name is never freed: deleting a version empties its blob in place,
  so a writer that listed the key before the delete cannot create that
  number again (its create fails), and a read of it finds nothing.
* The **entry** is an empty object whose name carries everything a listing
  shows (kind, format, creation time, size), so listings read no blob.
  Entries and tombstones share the key directory; blobs live in a tree of
  their own, so neither a key's listing nor a namespace walk lists them,
  however many deleted (emptied) blobs a key accumulates.
* The **tombstone** names the highest number a delete removed, as layout 1's
  ``d`` names do: it keeps ``last_version`` when no entry is left. It sorts
  after every entry, so a writer of version N lists only what sorts after
  the entry of N - 1 (``StartAfter``): that entry, anything newer and the
  tombstone, a few names however long the key's history.

Two entries of one version exist only while a rewrite (``replace``) swaps
it, or after a rewrite cut short; the blob's metadata decides which is true
(:func:`group_entries` reports them, the backend asks the blob).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from .._names import MAX_NAME_BYTES
from ..codec import MAX_BLOB_BYTES
from ..errors import IntegrityError
from ._keypaths import key_components, namespace_components
from ._versionnames import MAX_INT64

__all__ = [
    "BLOB_TREE",
    "DELETED_METADATA",
    "MAX_ENTRY_PATH_BYTES",
    "TAIL_MAX_VERSION",
    "Entry",
    "EntrySummary",
    "after_entry",
    "blob_components",
    "blob_metadata",
    "entry_from_metadata",
    "entry_name",
    "entry_prefix",
    "group_entries",
    "is_entry_name",
    "parse_blob_name",
    "parse_entry_name",
    "summarize_entries",
    "tombstone_name",
    "tombstones",
]

#: The top-level directory of blobs; no namespace component starts with "b".
BLOB_TREE = "b"
_ENTRY = "e"
_TOMBSTONE = "t"
_SEPARATOR = "~"
_DIGITS = 10
_ENTRY_NAME = re.compile(
    r"e(?P<version>\d{10,19})~(?P<kind>[a-z][a-z0-9_.-]{0,63})"
    r"~(?P<format>\d{1,19})~(?P<created>-?\d{1,19})~(?P<size>\d{1,19})"
)
_BLOB_NAME = re.compile(r"\d{10,19}")
# S3 user metadata of a blob (x-amz-meta-...): lower case, as S3 returns it.
_META_KIND = "gsp-kind"
_META_FORMAT = "gsp-format"
_META_CREATED = "gsp-created"
#: The metadata of a deleted version's emptied blob (an empty object without it is damage).
DELETED_METADATA = {"gsp-deleted": "1"}


@dataclass(frozen=True, slots=True)
class Entry:
    """One version as its entry (or its blob's metadata) describes it."""

    version: int
    kind: str
    format_version: int
    created_at_us: int
    size: int

    @property
    def name(self) -> str:
        return entry_name(self)


def entry_name(entry: Entry) -> str:
    """Name of the empty object that lists ``entry``."""
    return _SEPARATOR.join(
        (
            f"{_ENTRY}{entry.version:0{_DIGITS}d}",
            entry.kind,
            str(entry.format_version),
            str(entry.created_at_us),
            str(entry.size),
        )
    )


def parse_entry_name(name: str) -> Entry | None:
    """The entry ``name`` describes, or None for any other name (canonical names only)."""
    if name[:1] != _ENTRY:
        return None
    match = _ENTRY_NAME.fullmatch(name)
    if match is None:
        return None
    version, fmt, created, size = (int(match[g]) for g in ("version", "format", "created", "size"))
    if not 1 <= version <= MAX_INT64 or fmt > MAX_INT64 or abs(created) > MAX_INT64:
        return None
    entry = Entry(version, match["kind"], fmt, created, size)
    return entry if entry_name(entry) == name else None


def is_entry_name(name: str) -> bool:
    """Whether ``name`` is a canonical entry (a stored version, for walks)."""
    return parse_entry_name(name) is not None


def blob_components(key_components: Sequence[str], version: int) -> list[str]:
    """Path components below the root of ``version``'s blob, for a key's components."""
    return [BLOB_TREE, *key_components, f"{version:0{_DIGITS}d}"]


def parse_blob_name(name: str) -> int | None:
    """The version a blob's last path component names, or None."""
    if _BLOB_NAME.fullmatch(name) is None:
        return None
    version = int(name)
    if not 1 <= version <= MAX_INT64 or f"{version:0{_DIGITS}d}" != name:
        return None
    return version


def blob_metadata(entry: Entry) -> dict[str, str]:
    """The S3 metadata a blob carries: what a one-GET read returns besides the bytes."""
    return {
        _META_KIND: entry.kind,
        _META_FORMAT: str(entry.format_version),
        _META_CREATED: str(entry.created_at_us),
    }


def entry_from_metadata(version: int, metadata: Mapping[str, str], size: int) -> Entry:
    """The entry a blob's metadata describes; ``IntegrityError`` if it is not ours."""
    entry: Entry | None
    try:
        entry = Entry(
            version,
            metadata[_META_KIND],
            int(metadata[_META_FORMAT]),
            int(metadata[_META_CREATED]),
            size,
        )
    except (KeyError, ValueError, TypeError):
        entry = None
    if entry is None or parse_entry_name(entry_name(entry)) != entry:
        raise IntegrityError(
            f"the object of version {version} lacks the metadata gotstate-persist writes "
            "with every version: it was written or altered outside gotstate-persist; "
            "restore it from a backup or delete that version"
        )
    return entry


@dataclass(frozen=True, slots=True)
class EntrySummary:
    """What ``head`` and ``put`` need from one listing of a key directory."""

    last_version: int
    newest: Entry | None
    last_tombstone: int


def group_entries(names: Iterable[str]) -> dict[int, list[Entry]]:
    """Every canonical entry among ``names``, by version (several while a rewrite runs)."""
    found: dict[int, list[Entry]] = {}
    for name in names:
        entry = parse_entry_name(name)
        if entry is not None:
            found.setdefault(entry.version, []).append(entry)
    return found


def summarize_entries(names: Sequence[str]) -> EntrySummary:
    """Sort the names of a key directory into an :class:`EntrySummary`.

    The newest entry's kind is its key's kind, whichever of two entries of
    one version is taken (a rewrite never changes the kind or the number).
    """
    grouped = group_entries(names)
    tombstone = max(tombstones(names), default=0)
    if not grouped:
        return EntrySummary(tombstone, None, tombstone)
    top = max(grouped)
    return EntrySummary(max(top, tombstone), grouped[top][0], tombstone)


def tombstone_name(version: int) -> str:
    """Name of the empty object recording that ``version`` was the highest ever deleted."""
    return f"{_TOMBSTONE}{version:0{_DIGITS}d}"


def tombstones(names: Iterable[str]) -> list[int]:
    """Every canonical tombstone number among the names of a key directory."""
    found = []
    for name in names:
        if name[:1] == _TOMBSTONE and name[1:].isascii() and name[1:].isdigit():
            number = int(name[1:])
            if 1 <= number <= MAX_INT64 and tombstone_name(number) == name:
                found.append(number)
    return found


#: Entry names sort by number while it fits the zero padding; beyond, a
#: writer lists the whole key (as a layout-1 store always does).
TAIL_MAX_VERSION = 10**_DIGITS - 1


def after_entry(version: int) -> str:
    """What every entry of a version above ``version`` sorts after (``StartAfter``)."""
    return f"{_ENTRY}{version:0{_DIGITS}d}"


def entry_prefix(version: int | None = None) -> str:
    """The start of every entry name (of ``version``'s, if given): a listing prefix."""
    return _ENTRY if version is None else f"{_ENTRY}{version:0{_DIGITS}d}{_SEPARATOR}"


def _max_entry_path_bytes() -> int:
    longest = "x" * MAX_NAME_BYTES
    largest = entry_name(Entry(MAX_INT64, "a" * 64, MAX_INT64, -MAX_INT64, MAX_BLOB_BYTES))
    return len("/".join([*namespace_components(longest), *key_components(longest), largest]))


#: Longest entry path below the root (963 bytes: layout 1's longest plus the
#: size); a new S3 store takes layout 2 only where its prefix leaves room.
MAX_ENTRY_PATH_BYTES = _max_entry_path_bytes()
