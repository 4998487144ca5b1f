"""The names of the objects in one key directory of a plain object store.

Without a catalog, the names are the bookkeeping: a version's object, a
claim that reserves a number and a tombstone that remembers the highest
number deleted are told apart, ordered and checked from a listing alone.
This module owns those names and every reading of a listing, so the hot
paths (``get``, ``head``, ``put``) and the full listing agree on what a
directory holds.

The name of a version object carries everything a listing needs (version,
record kind, format version, creation time), so listings never read a blob.
``~`` separates the fields because it cannot occur in a kind. Anything in a
key directory that is not a canonical name of one of the three object types
is ignored: a crashed writer's temporary or a stray file never shows up as a
version. Should a tampered directory hold two canonical names of one version,
the lexically largest is that version, for every operation alike.

Version numbers are zero-padded to 10 digits, so names sort by number up to
9,999,999,999; longer numbers are not padded. :func:`newest_version` relies on
that: when the lexically largest name of a directory is a valid version name
starting ``v0``, no other name can hold a higher number, so it is the newest
with one ``max`` and one parse; otherwise it compares parsed numbers.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from .._names import check_kind
from ..errors import InvalidArgument

__all__ = [
    "MAX_INT64",
    "TEMP_PREFIX",
    "KeyListing",
    "KeySummary",
    "StoredVersion",
    "check_put_arguments",
    "claim_name",
    "find_version",
    "is_version_name",
    "last_tombstone",
    "newest_version",
    "parse_key_listing",
    "parse_version_name",
    "rank_versions",
    "summarize_exactly",
    "summarize_key",
    "tombstone_name",
    "version_name",
    "version_prefix",
]

#: Largest version, format version and |created_at_us| accepted: what a SQL
#: BIGINT holds, so every backend accepts the same numbers.
MAX_INT64 = 2**63 - 1
#: Prefix of temporaries written before an exclusive link (local files).
TEMP_PREFIX = ".tmp-"

_VERSION = "v"
_CLAIM = "r"
_TOMBSTONE = "d"
_SEPARATOR = "~"
_VERSION_DIGITS = 10  # zero padding, so names also sort by version in tools

_VERSION_NAME = re.compile(
    r"v(?P<version>\d{10,19})~(?P<kind>[a-z][a-z0-9_.-]{0,63})"
    r"~(?P<format>\d{1,19})~(?P<created>-?\d{1,19})"
)
_MARKER_NAME = re.compile(r"(?P<type>[rd])(?P<version>\d{10,19})")


def version_name(version: int, kind: str, format_version: int, created_at_us: int) -> str:
    """Name of the object that holds one version's blob."""
    return _SEPARATOR.join(
        (f"{_VERSION}{version:0{_VERSION_DIGITS}d}", kind, str(format_version), str(created_at_us))
    )


def version_prefix(version: int) -> str:
    """The start of every name of ``version``'s object (a listing prefix)."""
    return f"{_VERSION}{version:0{_VERSION_DIGITS}d}{_SEPARATOR}"


def claim_name(version: int) -> str:
    """Name of the empty object whose exclusive creation reserves ``version``."""
    return f"{_CLAIM}{version:0{_VERSION_DIGITS}d}"


def tombstone_name(version: int) -> str:
    """Name of the empty object recording that ``version`` was the highest ever."""
    return f"{_TOMBSTONE}{version:0{_VERSION_DIGITS}d}"


def parse_version_name(name: str, size: int = 0) -> StoredVersion | None:
    """The version object ``name`` describes, or None for any other name."""
    return _parse_version(name, size) if name.startswith(_VERSION) else None


def is_version_name(name: str) -> bool:
    """Whether ``name`` is a complete version object (cheap pre-filter for walks)."""
    return name.startswith(_VERSION) and _parse_version(name) is not None


@dataclass(frozen=True, slots=True)
class StoredVersion:
    """A version object as a listing shows it."""

    name: str
    version: int
    kind: str
    format_version: int
    created_at_us: int
    size: int


def _parse_version(name: str, size: int = 0) -> StoredVersion | None:
    match = _VERSION_NAME.fullmatch(name)
    if match is None:
        return None
    version, fmt, created = (int(match[g]) for g in ("version", "format", "created"))
    if not 1 <= version <= MAX_INT64 or fmt > MAX_INT64 or abs(created) > MAX_INT64:
        return None
    if version_name(version, match["kind"], fmt, created) != name:
        return None  # not canonical: leading zeros, "-0", ...
    return StoredVersion(name, version, match["kind"], fmt, created, size)


def _parse_marker(name: str) -> tuple[str, int] | None:
    match = _MARKER_NAME.fullmatch(name)
    if match is None:
        return None
    version = int(match["version"])
    if not 1 <= version <= MAX_INT64 or f"{match['type']}{version:0{_VERSION_DIGITS}d}" != name:
        return None
    return match["type"], version


@dataclass(slots=True)
class KeyListing:
    """Everything one listing of a key directory says about the key.

    ``last_version`` is the highest number ever reserved, written or deleted;
    ``live`` maps each stored version to its object: where a rewrite cut short
    left two objects of one version, the one :func:`rank_versions` puts first,
    everywhere; the others are ``superseded`` (a delete removes them too, a
    sweep removes them once no rewrite can still need them).
    """

    live: dict[int, StoredVersion] = field(default_factory=dict)
    superseded: list[StoredVersion] = field(default_factory=list)
    claims: set[int] = field(default_factory=set)
    tombstones: set[int] = field(default_factory=set)
    temporaries: list[str] = field(default_factory=list)

    @property
    def last_version(self) -> int:
        return max(max(self.live, default=0), max(self.claims, default=0), self.last_tombstone)

    @property
    def last_tombstone(self) -> int:
        return max(self.tombstones, default=0)

    @property
    def newest(self) -> StoredVersion | None:
        return self.live[max(self.live)] if self.live else None


def parse_key_listing(entries: Iterable[tuple[str, int]]) -> KeyListing:
    """Sort ``(object name, size)`` pairs of a key directory into a :class:`KeyListing`."""
    listing = KeyListing()
    for name, size in entries:
        if name.startswith(_VERSION):
            stored = _parse_version(name, size)
            if stored is None:
                continue
            seen = listing.live.get(stored.version)
            if seen is None or rank_versions(stored) > rank_versions(seen):
                listing.live[stored.version] = stored
                if seen is not None:
                    listing.superseded.append(seen)
            else:
                listing.superseded.append(stored)
        elif name.startswith(TEMP_PREFIX):
            listing.temporaries.append(name)
        else:
            marker = _parse_marker(name)
            if marker is not None:
                (listing.claims if marker[0] == _CLAIM else listing.tombstones).add(marker[1])
    return listing


# The hot paths: only what one operation needs, parsed from as few names as possible.


def _digits_number(digits: str) -> int | None:
    """The number a canonical 10-19 digit field spells, or None (exact, no regex)."""
    if not (_VERSION_DIGITS <= len(digits) <= 19 and digits.isascii() and digits.isdigit()):
        return None
    if len(digits) > _VERSION_DIGITS and digits[0] == "0":
        return None  # more padding than the canonical name has
    number = int(digits)
    return number if 1 <= number <= MAX_INT64 else None


def _best(candidates: list[tuple[int, str]]) -> StoredVersion | None:
    """The valid version object with the highest number among ``(number, name)`` pairs.

    The cheap number of a name is only a pre-filter: the full parse decides,
    so a stray that merely starts like a version object never wins.
    """
    while candidates:
        top = max(candidates)[0]
        valid = [
            stored
            for number, name in candidates
            if number == top and (stored := _parse_version(name)) is not None
        ]
        if valid:
            return max(valid, key=rank_versions)
        candidates = [pair for pair in candidates if pair[0] != top]
    return None


def rank_versions(stored: StoredVersion) -> tuple[int, str]:
    """Which of several objects of one version wins: the newer format, then the name.

    Two objects of one version exist only while ``replace`` swaps a format
    (or after a crash in between): the newer format is the one being
    written. Format versions compare as numbers ("10" after "9").
    """
    return stored.format_version, stored.name


def _version_candidates(names: Iterable[str]) -> list[tuple[int, str]]:
    found = []
    for name in names:
        if name[:1] == _VERSION:
            number = _digits_number(name[1 : name.find(_SEPARATOR, 1)])
            if number is not None:
                found.append((number, name))
    return found


def newest_version(names: Sequence[str]) -> StoredVersion | None:
    """The newest valid version object among the names of one key directory.

    Canonical names of versions below 10**9 are 10 digits starting with "0",
    and every longer number starts with another digit, so when the lexically
    largest name is such a version object nothing can outnumber it: one
    C-level sort and one parse (more only while a ``replace`` has two
    objects of that version). Anything else takes the exact path.
    """
    if names:
        ordered = sorted(names)
        top = ordered[-1]
        if top[:2] == "v0":
            stored = _parse_version(top)
            if stored is not None:
                prefix = version_prefix(stored.version)
                if len(ordered) < 2 or not ordered[-2].startswith(prefix):
                    return stored
                return find_version(ordered, stored.version)  # a replace cut short
    return _best(_version_candidates(names))


def find_version(names: Iterable[str], version: int) -> StoredVersion | None:
    """The valid object of ``version`` among the names of one key directory."""
    prefix = version_prefix(version)
    valid = [
        stored
        for name in names
        if name.startswith(prefix) and (stored := _parse_version(name)) is not None
    ]
    return max(valid, key=rank_versions) if valid else None


@dataclass(frozen=True, slots=True)
class KeySummary:
    """What ``head`` and ``put`` need from one listing of a key directory.

    The same numbers :class:`KeyListing` gives, without an object per name:
    only the newest version object is fully parsed.
    """

    last_version: int
    newest: StoredVersion | None
    last_tombstone: int
    temporaries: tuple[str, ...]


def summarize_key(names: Iterable[str]) -> KeySummary:
    """Sort the names of a key directory into a :class:`KeySummary`.

    Canonical version, claim and tombstone names sort by number within their
    letter as long as the number fits the zero padding (the argument of
    :func:`newest_version`), so after one C-level sort only the last name of
    each letter is parsed; anything unusual among those takes the exact path.
    """
    ordered = sorted(names)
    quick = _summarize_sorted(ordered)
    return quick if quick is not None else summarize_exactly(ordered)


def _last_with(ordered: list[str], letter: str) -> str | None:
    """The largest name starting with ``letter`` in sorted ``ordered``."""
    end = bisect.bisect_left(ordered, chr(ord(letter) + 1))
    return ordered[end - 1] if end and ordered[end - 1][:1] == letter else None


def _summarize_sorted(ordered: list[str]) -> KeySummary | None:
    top = _last_with(ordered, _VERSION)
    newest = None
    if top is not None:
        newest = _parse_version(top) if top[1:2] == "0" else None
        if newest is None:
            return None
    markers: list[int] = []
    for letter in (_CLAIM, _TOMBSTONE):
        name = _last_with(ordered, letter)
        if name is None:
            markers.append(0)
            continue
        number = _digits_number(name[1:]) if name[1:2] == "0" else None
        if number is None:
            return None
        markers.append(number)
    claim, tombstone = markers
    start = bisect.bisect_left(ordered, TEMP_PREFIX)
    stop = start
    while stop < len(ordered) and ordered[stop].startswith(TEMP_PREFIX):
        stop += 1
    last = max(0 if newest is None else newest.version, claim, tombstone)
    return KeySummary(last, newest, tombstone, tuple(ordered[start:stop]))


def summarize_exactly(names: Iterable[str]) -> KeySummary:
    """:func:`summarize_key` the long way: every name parsed, whatever the order."""
    versions: list[tuple[int, str]] = []
    temporaries: list[str] = []
    claim = tombstone = 0
    for name in names:
        first = name[:1]
        if first == _VERSION:
            number = _digits_number(name[1 : name.find(_SEPARATOR, 1)])
            if number is not None:
                versions.append((number, name))
        elif first == _CLAIM:
            number = _digits_number(name[1:])
            if number is not None and number > claim:
                claim = number
        elif first == _TOMBSTONE:
            number = _digits_number(name[1:])
            if number is not None and number > tombstone:
                tombstone = number
        elif name.startswith(TEMP_PREFIX):
            temporaries.append(name)
    newest = _best(versions)
    last = max(0 if newest is None else newest.version, claim, tombstone)
    return KeySummary(last, newest, tombstone, tuple(temporaries))


def last_tombstone(names: Iterable[str]) -> int:
    """The highest tombstone among the names of a key directory (0 if none)."""
    return max(
        (n for name in names if name[:1] == _TOMBSTONE if (n := _digits_number(name[1:]))),
        default=0,
    )


def check_put_arguments(
    version: object, kind: object, format_version: object, created: object
) -> None:
    """Refuse numbers and kinds that no object name (or SQL column) could hold."""
    for what, value, low in (
        ("version", version, 1),
        ("format_version", format_version, 0),
        ("created_at_us", created, -MAX_INT64),
    ):
        if type(value) is not int or not low <= value <= MAX_INT64:
            raise InvalidArgument(f"{what} must be an int from {low} to {MAX_INT64}, got {value!r}")
    check_kind(kind)
