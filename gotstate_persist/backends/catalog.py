"""Object stores with a SQL catalog: blobs in the object store, bookkeeping in SQL.

``open_store("s3://bucket/prefix", catalog="postgresql://...")`` (or any
object-store URL, and ``sqlite:///...`` for the catalog) keeps each sealed blob
as one object, verbatim, and everything else — versions, kinds, sizes, usage
counters and the quota — as rows of the catalog database, which is a normal
gotstate-persist SQL schema (the same alembic revisions). Limits are then
exact across processes, as on the SQL backend, and a write needs no listing.

A write runs in three steps:

1. **reserve** (one catalog transaction): the version number's
   compare-and-set, the usage charge within the quota (pruning by retention)
   and a row marked as reserved, so the bytes are counted *before* they exist;
2. **create** the object ``<namespace>/<key>/o<version>`` exclusively (the
   catalog already made the number unique; exclusive create guards against a
   second catalog pointed at the same objects);
3. **confirm**: the row becomes readable.

A writer that fails at step 2 withdraws its reservation. A writer killed
between the steps leaves a reservation whose bytes stay counted until a sweep
(``usage(recount=True)`` or ``gotstate-persist gc``) settles it once it is
older than :data:`STALE_RESERVATION_SECONDS`: if the object exists it is
complete (exclusive create is atomic) and the version is confirmed, otherwise
the reservation is withdrawn. That is also why step 3 need not be durable on
its own (SQLite skips its fsync): a confirmation lost in a crash is redone by
the sweep, so an acknowledged write survives as long as step 1 did. Deletes
remove rows first and objects after, so a crash leaves only objects without a
row: orphans, which the sweep removes. Readers never see a reserved row, so
they never read an object that is not complete.

The catalog's object names are deterministic (the version number alone), so
a known version is read with one request, and a prefix used with a catalog
must not also be used without one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

from .._names import check_name
from ..errors import BackendError, InvalidArgument, NotFound, VersionConflict
from ..quota import Quota
from ._objectnames import (
    check_put_arguments,
    decode_key_path,
    key_components,
    namespace_components,
)
from .base import Backend, Capabilities, KeyHead, Replacement, Usage, VersionInfo
from .objectstore import ObjectStoreBackend
from .sql import SQLBackend

__all__ = ["STALE_RESERVATION_SECONDS", "CatalogBackend", "open_object_store"]

logger = logging.getLogger(__name__)

#: A reservation older than this belongs to a writer that died: a live writer
#: holds one for a single object upload.
STALE_RESERVATION_SECONDS = 15 * 60
_OBJECT_PREFIX = "o"
_OBJECT_DIGITS = 19  # every positive int64


def open_object_store(
    url: str,
    *,
    catalog: str | None = None,
    catalog_options: dict[str, Any] | None = None,
    upgrade: bool = False,
    **options: Any,
) -> Backend:
    """The factory for object-store URLs: plain, or with a SQL ``catalog``."""
    if catalog is None:
        if catalog_options is not None:
            raise InvalidArgument("catalog_options needs catalog=URL")
        return ObjectStoreBackend(url, upgrade=upgrade, **options)
    if not isinstance(catalog, str):
        raise InvalidArgument("catalog must be a SQL URL such as 'sqlite:///catalog.db'")
    return CatalogBackend(
        url, catalog=catalog, catalog_options=catalog_options, upgrade=upgrade, **options
    )


class CatalogBackend(Backend):
    """An object store for the blobs and a SQL database for the rest (module docstring)."""

    capabilities = Capabilities(
        transactions=False, list_is_consistent=True, cross_process=True, exact_quota=True
    )

    def __init__(
        self,
        url: str,
        *,
        catalog: str,
        catalog_options: dict[str, Any] | None = None,
        upgrade: bool = False,
        **options: Any,
    ) -> None:
        self._catalog = SQLBackend(catalog, upgrade=upgrade, **(catalog_options or {}))
        try:
            self._store = ObjectStoreBackend(url, **options)
        except BaseException:
            self._catalog.close()
            raise
        self._objects = self._store._objects

    def __repr__(self) -> str:
        return f"CatalogBackend({self._store!r}, catalog={self._catalog!r})"

    def _object(self, namespace: str, key: str, version: int, format_version: int) -> str:
        """``o<version>.<format version>``: a format change (``replace``) is a new object."""
        components = [*namespace_components(namespace), *key_components(key)]
        name = f"{_OBJECT_PREFIX}{version:0{_OBJECT_DIGITS}d}.{format_version}"
        return self._store._path([*components, name])

    def _remove_objects(
        self, namespace: str, key: str, versions: Sequence[tuple[int, int]]
    ) -> None:
        """Best effort: an object left behind is an orphan, which a sweep removes."""
        if not versions:
            return
        paths = [self._object(namespace, key, version, fmt) for version, fmt in versions]
        try:
            with self._store._guard("removing objects"):
                self._objects.remove(paths)
        except BackendError as exc:
            logger.warning("left %d orphan object(s) for a later gc: %s", len(paths), exc)

    # Writes.

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
        check_name(namespace, "namespace")  # refused before anything is reserved
        check_name(key, "key")
        path = self._object(namespace, key, version, format_version)
        self._catalog.reserve(
            namespace,
            key,
            version,
            size=len(blob),
            kind=kind,
            format_version=format_version,
            created_at_us=created_at_us,
            expected_newest=expected_newest,
            reserved_at_us=time.time_ns() // 1000,
        )
        try:
            with self._store._guard("writing a version"):
                try:
                    self._objects.create(path, blob)
                except FileExistsError:
                    raise BackendError(
                        f"an object for version {version} of key {key!r} already exists "
                        "although the catalog never held it: is another catalog pointed at "
                        "the same prefix? Nothing was saved."
                    ) from None
        except BaseException:
            self._withdraw(namespace, key, version)
            raise
        pruned = self._catalog.confirm(namespace, key, version)
        if pruned is None:
            self._remove_objects(namespace, key, [(version, format_version)])
            raise VersionConflict(
                f"key {key!r} was deleted while version {version} was being saved; retry the save",
                expected=version - 1,
            )
        self._remove_objects(namespace, key, pruned)
        return VersionInfo(key, version, kind, format_version, len(blob), created_at_us)

    def _withdraw(self, namespace: str, key: str, version: int) -> bool:
        """Take back a reservation whose object was not written; False if it is not one now."""
        try:
            self._catalog.delete_rows(namespace, key, [version], reserved_only=True)
        except NotFound:
            return False  # deleted, swept or (by a sweep) confirmed meanwhile
        except BackendError as exc:
            logger.warning(
                "could not withdraw the reservation of version %d of %r (a sweep will): %s",
                version,
                key,
                exc,
            )
            return False
        return True

    def replace(self, namespace: str, replacements: Sequence[Replacement]) -> list[bool]:
        """Swap objects; a new format is a new object, named by the row only once written.

        Same format (a reseal): the object is swapped in place (S3: If-Match).
        Another format: the new object is created, the row switched to it
        (compare-and-set on the row's format), then the old object removed; a
        crash in between leaves an object of the other format, which the
        sweep removes, and readers always find the one the row names.
        """
        done = []
        for replacement in replacements:
            key, version = replacement.key, replacement.version
            try:
                info, _empty = self._catalog.get(namespace, key, version)
            except NotFound:
                done.append(False)
                continue
            old_path = self._object(namespace, key, version, info.format_version)
            new_path = self._object(namespace, key, version, replacement.format_version)
            with self._store._guard("replacing a version"):
                if new_path == old_path:
                    swapped = self._objects.swap(old_path, replacement.expected, replacement.blob)
                else:
                    swapped = self._swap_format(old_path, new_path, replacement)
            if (
                swapped
                and not self._catalog.swap_rows(
                    namespace,
                    [(key, version, b"", len(replacement.blob), replacement.format_version, b"")],
                    expected_format=info.format_version,
                )[0]
            ):
                if new_path != old_path:
                    self._remove_objects(namespace, key, [(version, replacement.format_version)])
                swapped = False
            elif swapped and new_path != old_path:
                self._remove_objects(namespace, key, [(version, info.format_version)])
            done.append(swapped)
        return done

    def _swap_format(self, old_path: str, new_path: str, replacement: Replacement) -> bool:
        try:
            if self._objects.read(old_path) != replacement.expected:
                return False
        except FileNotFoundError:
            return False
        try:
            self._objects.create(new_path, replacement.blob)
        except FileExistsError:
            return False  # another run is migrating it
        return True

    def delete(self, namespace: str, key: str, versions: Sequence[int] | None = None) -> int:
        removed = self._catalog.delete_rows(namespace, key, versions)
        self._remove_objects(namespace, key, removed)
        return len(removed)

    # Reads: the catalog says what exists, one request fetches it.

    def get(
        self, namespace: str, key: str, version: int | None = None
    ) -> tuple[VersionInfo, bytes]:
        info, _empty = self._catalog.get(namespace, key, version)
        with self._store._guard("reading a version"):
            try:
                blob = self._objects.read(
                    self._object(namespace, key, info.version, info.format_version)
                )
            except FileNotFoundError:
                raise NotFound(
                    f"version {info.version} of key {key!r} was deleted while being read, or "
                    "its object was removed outside gotstate-persist"
                ) from None
        return info, blob

    def head(self, namespace: str, key: str) -> KeyHead:
        # newest as readers see it; a version still being written only raises
        # last_version (and makes a save with expected_version wait for it)
        return self._catalog.readable_head(namespace, key)

    def known_namespaces(self) -> list[str]:
        """Every namespace the catalog ever held, for sweeps (even without readable rows)."""
        return self._catalog.known_namespaces()

    def versions(self, namespace: str, key: str) -> list[VersionInfo]:
        return self._catalog.versions(namespace, key)

    def keys(self, namespace: str, prefix: str = "") -> list[str]:
        return self._catalog.keys(namespace, prefix)

    def namespaces(self) -> list[str]:
        return self._catalog.namespaces()

    # Usage, quota and the sweep.

    def usage(self, namespace: str) -> Usage:
        return self._catalog.usage(namespace)

    def recount(self, namespace: str) -> Usage:
        self.sweep(namespace)
        return self._catalog.recount(namespace)

    def sweep(self, namespace: str, *, older_than_s: float = STALE_RESERVATION_SECONDS) -> int:
        """Withdraw stale reservations and remove orphan objects; return how many went."""
        cutoff = time.time_ns() // 1000 - int(older_than_s * 1_000_000)
        # Objects first, rows second: a row is committed before its object is
        # created, so an object listed now whose row is missing afterwards
        # belongs to no save that is running or acknowledged.
        top = self._store._path(namespace_components(namespace))
        listed: dict[str, set[tuple[int, int]]] = {}
        with self._store._guard("listing objects"):
            for components, _size in self._objects.walk(top, sizes=False):
                found = _parse_object(components)
                if found is not None:
                    listed.setdefault(found[0], set()).add(found[1:])
        swept = 0
        for key, version, fmt in self._catalog.stale_reservations(namespace, cutoff):
            path = self._object(namespace, key, version, fmt)
            directory, name = path.rsplit("/", 1)
            with self._store._guard("listing objects"):
                written = name in self._objects.names(directory, name)
            if written:  # complete (created exclusively): only the confirmation was lost
                self._remove_objects(
                    namespace, key, self._catalog.confirm(namespace, key, version) or []
                )
            elif self._withdraw(namespace, key, version):
                swept += 1
        rows = self._catalog.row_versions(namespace)
        for key, versions in listed.items():
            # an object no row names, or one of another format (a replace cut short)
            orphans = sorted(v for v in versions if rows.get((key, v[0])) != v[1])
            self._remove_objects(namespace, key, orphans)
            swept += len(orphans)
        if swept:
            logger.info("namespace %r: swept %d reservation(s) and orphan(s)", namespace, swept)
        return swept

    def load_quota(self, namespace: str) -> Quota | None:
        return self._catalog.load_quota(namespace)

    def store_quota(self, namespace: str, quota: Quota | None, *, replace: bool) -> Quota | None:
        return self._catalog.store_quota(namespace, quota, replace=replace)

    def close(self) -> None:
        try:
            self._store.close()
        finally:
            self._catalog.close()


def _parse_object(components: Sequence[str]) -> tuple[str, int, int] | None:
    """``(key, version, format version)`` of a catalog object path, or None."""
    name = components[-1] if components else ""
    digits, dot, fmt = name[len(_OBJECT_PREFIX) :].partition(".")
    if not (
        name.startswith(_OBJECT_PREFIX)
        and dot
        and len(digits) == _OBJECT_DIGITS
        and (digits + fmt).isascii()
        and digits.isdigit()
        and fmt.isdigit()
        and str(int(fmt)) == fmt
    ):
        return None
    decoded = decode_key_path(components)
    version = int(digits)
    return None if decoded is None or version < 1 else (decoded[0], version, int(fmt))
