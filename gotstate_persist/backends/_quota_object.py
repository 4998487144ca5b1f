"""A plain object store's quota, kept as one small JSON object per namespace.

Without a catalog there is no table to hold a namespace's quota, so it is an
object beside the namespace's key directories. Kept apart from the backend's
version protocol: it is read and written whole, created exclusively when it
is first set (so two processes agree on one), and checked for damage when
read, since anything may have written it.
"""

from __future__ import annotations

import msgspec

from .._quota_rules import Quota
from ..errors import IntegrityError
from ._objectnames import namespace_components
from ._objectprefix import ObjectPrefix
from ._objects import Oversized

__all__ = ["MAX_QUOTA_OBJECT_BYTES", "QUOTA_OBJECT", "QuotaObject"]

#: The namespace's persisted quota, beside its key directories ("." is not in
#: the base32 alphabet of directory names, so it cannot collide with one).
QUOTA_OBJECT = "quota.json"
#: The quota object is a few hundred bytes of JSON; anything far larger is not one.
MAX_QUOTA_OBJECT_BYTES = 64 * 1024


class QuotaObject:
    """Loads and stores each namespace's :data:`QUOTA_OBJECT` below one :class:`ObjectPrefix`."""

    def __init__(self, prefix: ObjectPrefix) -> None:
        self._prefix = prefix

    def _path(self, namespace: str) -> str:
        return self._prefix.path([*namespace_components(namespace), QUOTA_OBJECT])

    def load(self, namespace: str) -> Quota | None:
        """The namespace's quota, or None (none set, or unlimited)."""
        with self._prefix.guard("reading the quota"):
            try:
                data = self._prefix.objects.read(self._path(namespace), MAX_QUOTA_OBJECT_BYTES)
            except FileNotFoundError:
                return None
            except Oversized:
                data = b""  # far too large to be a quota: refused below like any damage
        try:
            quota = msgspec.json.decode(data, type=Quota)
        except msgspec.DecodeError:
            raise IntegrityError(
                f"the quota object of namespace {namespace!r} on {self._prefix.display} is not a "
                "valid quota; it was altered outside gotstate-persist: set it again with "
                "store.set_quota()"
            ) from None
        return None if quota.unlimited else quota

    def store(self, namespace: str, quota: Quota | None, *, replace: bool) -> Quota | None:
        """``Backend.store_quota``: set (or, with ``replace``, replace) the namespace's quota."""
        if quota is not None and quota.unlimited:
            quota = None
        path = self._path(namespace)
        objects = self._prefix.objects
        if not replace:
            current = self.load(namespace)
            if current is not None or quota is None:
                return current
            with self._prefix.guard("writing the quota"):
                try:
                    objects.create(path, msgspec.json.encode(quota))
                except FileExistsError:  # another process decided first
                    return self.load(namespace)
            return quota
        if quota is None and self.load(namespace) is None:
            return None  # nothing to remove (perhaps not even a directory yet)
        with self._prefix.guard("writing the quota"):
            if quota is None:
                objects.remove([path])
            else:
                objects.overwrite(path, msgspec.json.encode(quota))
        return quota
