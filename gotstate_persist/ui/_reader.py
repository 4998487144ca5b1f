"""What the inspector reads from a store without a keyring: names, sizes, versions, times.

Everything here comes from the backend's listings and the unauthenticated
envelope header (which key id sealed a blob), so these pages work for an
operator who holds no keyring and they never open a record. Listings are
built for large namespaces: a page of keys lists the key names once (one
backend call), filters and slices them, and only then reads the versions of
the keys on that page, so a page costs the same on 100 keys as on 100,000.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import msgspec

from .._redact import mask_url
from ..backends import Backend, VersionInfo
from ..backends.base import EPOCH
from ..errors import InvalidArgument, PersistError
from ..formats import FormatRegistry
from ..formats.machine import MACHINE_KIND
from ..runtime import journal_key_or_none, user_keys
from ..sealing import KeyRing, format_key_id, read_header

__all__ = [
    "KEYS_PER_PAGE",
    "MAX_QUERY_CHARS",
    "TIMELINE_ITEMS",
    "Inspector",
    "moment",
    "moment_us",
    "versions_of",
]

#: Keys listed per page of the keys page.
KEYS_PER_PAGE = 50
#: A key's timeline shows this many of its newest snapshots and journal entries.
TIMELINE_ITEMS = 500
#: A search longer than this is cut (a key name is shorter than that anyway).
MAX_QUERY_CHARS = 512


#: What a stored time no calendar holds shows as (one damaged record must not fail a page).
IMPOSSIBLE_TIME = "(impossible timestamp)"


def moment(info: VersionInfo) -> str:
    """When a version was written, ISO 8601 UTC to the second (offset included, as in --json)."""
    return moment_us(info.created_at_us)


def moment_us(at_us: int, timespec: str = "seconds") -> str:
    """A stored time (microseconds since the epoch) as ISO 8601 UTC, or :data:`IMPOSSIBLE_TIME`."""
    try:
        return (EPOCH + timedelta(microseconds=at_us)).isoformat(timespec=timespec)
    except (OverflowError, TypeError):
        return IMPOSSIBLE_TIME


def versions_of(backend: Backend, namespace: str, key: str) -> list[VersionInfo]:
    """A key's stored versions, or none when the backend refuses the name (another tool's)."""
    try:
        return backend.versions(namespace, key)
    except (InvalidArgument, PersistError):
        return []


def _journal_versions(backend: Backend, namespace: str, key: str) -> list[VersionInfo]:
    try:
        jkey = journal_key_or_none(key)
    except InvalidArgument:
        return []
    return versions_of(backend, namespace, jkey) if jkey is not None else []


@dataclass(frozen=True)
class Inspector:
    """One opened store, read for the inspector's pages (never written).

    ``keyring`` is None when the operator gave none: then pages show metadata
    only. ``shown_url`` is the store URL with any password masked, the only
    form of it that reaches a browser.
    """

    backend: Backend
    keyring: KeyRing | None
    formats: FormatRegistry
    shown_url: str

    @classmethod
    def of(
        cls,
        backend: Backend,
        url: str,
        keyring: KeyRing | None = None,
        formats: FormatRegistry | None = None,
    ) -> Inspector:
        return cls(backend, keyring, formats or FormatRegistry(), mask_url(url))

    def namespaces(self) -> list[dict[str, Any]]:
        """Every namespace with its usage and quota (None: no limits set)."""
        found = []
        for name in self.backend.namespaces():
            usage = self.backend.usage(name)
            quota = self.backend.load_quota(name)
            limits = (
                {k: v for k, v in _fields(quota).items() if v is not None}
                if quota is not None
                else None
            )
            found.append(
                {
                    "name": name,
                    "bytes": usage.bytes,
                    "records": usage.records,
                    "keys": usage.keys,
                    "quota": limits,
                }
            )
        return found

    def has_namespace(self, namespace: str) -> bool:
        return namespace in self.backend.namespaces()

    def keys_page(self, namespace: str, query: str = "", page: int = 1) -> dict[str, Any]:
        """One page of a namespace's keys matching ``query`` (a prefix or a substring).

        Key names are listed once; versions are read for the page's keys only.
        """
        query = query[:MAX_QUERY_CHARS]
        names = user_keys(self.backend, namespace)
        if query:
            starting = [name for name in names if name.startswith(query)]
            inside = [name for name in names if query in name and not name.startswith(query)]
            names = starting + inside  # prefix matches first, then the rest
        pages = max(1, math.ceil(len(names) / KEYS_PER_PAGE))
        page = min(max(page, 1), pages)
        start = (page - 1) * KEYS_PER_PAGE
        rows = [self._key_row(namespace, key) for key in names[start : start + KEYS_PER_PAGE]]
        return {
            "namespace": namespace,
            "query": query,
            "page": page,
            "pages": pages,
            "total": len(names),
            "keys": rows,
        }

    def _key_row(self, namespace: str, key: str) -> dict[str, Any]:
        versions = versions_of(self.backend, namespace, key)
        entries = _journal_versions(self.backend, namespace, key)
        listed = versions or entries
        newest = listed[-1] if listed else None
        return {
            "key": key,
            "versions": len(versions),
            "newest": versions[-1].version if versions else None,
            "journal_entries": len(entries),
            "kind": newest.kind if newest else None,
            "format_version": newest.format_version if newest else None,
            "bytes": sum(info.size for info in versions) + sum(info.size for info in entries),
            "saved": moment(newest) if newest else None,
        }

    def timeline(
        self, namespace: str, key: str, limit: int = TIMELINE_ITEMS
    ) -> tuple[list[dict[str, Any]], int]:
        """The newest ``limit`` snapshots and journal entries of a key, oldest first, and how
        many older ones were left out (metadata only).

        Listing versions reads no blob; only the items shown have their header
        read. The sealing key id comes from that unauthenticated header: it
        says which key an operator needs, never anything of the key itself.
        """
        found: list[tuple[VersionInfo, str, str]] = [
            (info, "snapshot", key) for info in versions_of(self.backend, namespace, key)
        ]
        try:
            jkey = journal_key_or_none(key)
        except InvalidArgument:
            jkey = None
        if jkey is not None:
            found += [(info, "entry", jkey) for info in versions_of(self.backend, namespace, jkey)]
        found.sort(key=lambda item: (item[0].created_at_us, item[1] == "entry", item[0].version))
        shown = found[-limit:] if limit else []
        items = [self._item(namespace, info, what, stored) for info, what, stored in shown]
        return items, len(found) - len(shown)

    def _item(self, namespace: str, info: VersionInfo, what: str, stored: str) -> dict[str, Any]:
        try:
            key_id: str | None = format_key_id(
                read_header(self.backend.get(namespace, stored, info.version)[1]).key_id
            )
        except PersistError:
            key_id = None  # not an envelope: verify reports it
        if what == "snapshot" and info.kind != MACHINE_KIND:
            what = "record"
        return {
            "type": what,
            "number": info.version,
            "at": moment(info),
            "at_us": info.created_at_us,
            "kind": info.kind,
            "format_version": info.format_version,
            "size": info.size,
            "key_id": key_id,
        }


def _fields(struct: object) -> dict[str, Any]:
    return msgspec.structs.asdict(struct) if isinstance(struct, msgspec.Struct) else {}
