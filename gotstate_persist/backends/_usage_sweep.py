"""A plain object store's usage, counted from its objects, and the sweep of what rewrites left.

Without a catalog, usage is not kept anywhere: it is counted by one walk of
the namespace, each version once, as reads resolve it. The same walk finds
the superseded objects that a rewrite (``replace`` with a new format) cut
short leaves behind, so counting and sweeping live together here, apart
from the backend's per-key protocol.
"""

from __future__ import annotations

import logging
import time
from contextlib import ExitStack

from .._names import is_system_key
from ._objectnames import (
    StoredVersion,
    decode_key_path,
    namespace_components,
    parse_key_listing,
    parse_version_name,
    rank_versions,
)
from ._objectprefix import ObjectPrefix
from .base import Usage

__all__ = ["Superseded", "UsageSweeper"]

# the object store's logger, which users configure (the name it had before this split)
logger = logging.getLogger(f"{__package__}.objectstore")

#: Superseded objects found by a count, by key directory components below the namespace.
Superseded = dict[tuple[str, ...], list[StoredVersion]]


class UsageSweeper:
    """Counts usage and sweeps superseded objects below one :class:`ObjectPrefix`."""

    def __init__(self, prefix: ObjectPrefix) -> None:
        self._prefix = prefix

    def count(self, namespace: str) -> tuple[Usage, Superseded]:
        """Usage counted in one walk (each version once, as reads resolve it), and the
        superseded objects found on the way, by key directory components."""
        top = self._prefix.path(namespace_components(namespace))
        by_version: dict[tuple[tuple[str, ...], int], list[StoredVersion]] = {}
        users: set[tuple[str, ...]] = set()  # key directories of user keys (not system keys)
        with self._prefix.guard("measuring usage"):
            for components, size in self._prefix.objects.walk(top, sizes=True):
                stored = parse_version_name(components[-1], size)
                decoded = None if stored is None else decode_key_path(components)
                if stored is not None and decoded is not None:
                    place = (tuple(components[:-1]), stored.version)
                    by_version.setdefault(place, []).append(stored)
                    if not is_system_key(decoded[0]):
                        users.add(place[0])
        total = 0
        superseded: Superseded = {}
        for (parts, _version), found in by_version.items():
            winner = max(found, key=rank_versions)
            total += winner.size
            if len(found) > 1:
                superseded.setdefault(parts, []).extend(s for s in found if s is not winner)
        # a system key's versions are bytes and records, but it is no key (_quota_rules)
        return Usage(bytes=total, records=len(by_version), keys=len(users)), superseded

    def sweep(self, namespace: str, superseded: Superseded, older_than_s: float) -> int:
        """Remove the ``superseded`` objects no rewrite can still need; return how many went.

        Each key is settled under its writer lock, from a fresh listing
        (``ObjectStoreBackend.sweep`` says when an object is safe to remove).
        """
        objects = self._prefix.objects
        cutoff = time.time() - older_than_s
        removed = 0
        for parts in superseded:
            directory = self._prefix.path([*namespace_components(namespace), *parts])
            with ExitStack() as held:
                with self._prefix.guard("locking a key"):
                    held.enter_context(objects.holding(directory))
                with self._prefix.guard("sweeping a key"):
                    listing = parse_key_listing(objects.entries(directory))
                    doomed = [
                        f"{directory}/{stored.name}"
                        for stored in listing.superseded
                        if objects.serializes_writers
                        or self._settled(f"{directory}/{listing.live[stored.version].name}", cutoff)
                    ]
                    objects.remove(doomed)
            removed += len(doomed)
        if removed:
            logger.info("namespace %r: removed %d superseded object(s)", namespace, removed)
        return removed

    def _settled(self, path: str, cutoff: float) -> bool:
        """Whether the object at ``path`` was created before ``cutoff`` (False if unknown)."""
        try:
            return self._prefix.objects.modified(path) < cutoff
        except FileNotFoundError:
            return False
