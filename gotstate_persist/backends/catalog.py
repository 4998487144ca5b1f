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
the sweep, so an acknowledged write survives as long as step 1 did. A writer
that stalled past the stale age and finds its reservation confirmed by a sweep
meanwhile has succeeded (its object was complete); one that finds it
withdrawn removes its object and raises ``VersionConflict``. Deletes
remove rows first and objects after, so a crash leaves only objects without a
row: orphans, which the sweep removes. Readers never see a reserved row, so
they never read an object that is not complete.

A saved version's object is named by its version and format alone
(``o<version>.<format>``), so a known version is read with one request after
one catalog query. A rewrite (``migrate``, ``reseal``) never changes an object
in place; it runs in four steps:

1. **announce** (compare-and-set on the row's current object): the row
   records the token of the object about to be created; a second rewrite of
   the same record is refused here, and an announcement older than
   :data:`STALE_RESERVATION_SECONDS` (its rewriter died) is taken over;
2. **create** ``o<version>.<format>.<token>`` exclusively (the token is
   random, so no two attempts ever share a name);
3. **switch** (compare-and-set on the announcement): the row names the new
   object, and usage changes by the size difference;
4. **remove** the old object (best effort: a leftover is an orphan).

A rewriter that finds its announcement taken back removes its own object: no
row can name it any more. What the sweep removes is therefore exactly what no
row or live announcement names at the moment it reads the rows, among objects
it listed *before* reading them: an object listed then and not named then can
never be named later (saves reserve their row before creating the object,
rewrites announce theirs before creating it, and tokens are never reused).
The only waiting involved is for the dead: a reservation or announcement is
settled by a sweep once it is older than the stale age.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from .._names import check_name, check_stored_key
from .._quota_rules import Quota
from .._redact import mask_url
from ..errors import BackendError, InvalidArgument, NotFound, QuotaExceeded, VersionConflict
from ._layout import another_catalog
from ._objectnames import (
    MAX_INT64,
    TEMP_PREFIX,
    catalog_object_name,
    check_put_arguments,
    key_components,
    namespace_components,
    parse_catalog_object_path,
)
from .base import Backend, Capabilities, KeyHead, Replacement, Usage, VersionInfo, no_step
from .objectstore import ObjectStoreBackend

if TYPE_CHECKING:  # imported when a catalog is opened: plain stores never load SQLAlchemy
    from .sql import ObjectRef, SQLBackend

__all__ = ["STALE_RESERVATION_SECONDS", "CatalogBackend", "open_object_store"]

logger = logging.getLogger(__name__)

#: A reservation older than this belongs to a writer that died: a live writer
#: holds one for a single object upload.
STALE_RESERVATION_SECONDS = 15 * 60
#: Times a read follows the row when a rewrite removed the object it named.
_READ_ATTEMPTS = 4


def _now_us() -> int:
    return time.time_ns() // 1000


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
        given = mask_url(catalog)
        self._store = ObjectStoreBackend(url, _catalog=given, **options)
        #: The prefix the store opened: this backend's objects, paths, errors and layout marker.
        self._prefix = self._store.prefix
        try:
            self._catalog = self._open_catalog(catalog, given, upgrade, dict(catalog_options or {}))
        except BaseException:
            self._store.close()
            raise
        #: The catalog's rows: reservations, announcements and what the sweep reads.
        self._rows = self._catalog.catalog_rows
        self._objects = self._prefix.objects
        #: Called between the steps of each protocol, with the step's name.
        self._step: Callable[[str], None] = no_step

    def _open_catalog(
        self, catalog: str, given: str, upgrade: bool, options: dict[str, Any]
    ) -> SQLBackend:
        """The catalog database; for a marked prefix, only the very one it was written with.

        A prefix that already names its catalog never gets a new (empty) schema
        created for it: a mistyped catalog URL is refused, not started afresh.
        """
        from .sql import SQLBackend  # SQLAlchemy only once a catalog is configured

        marked = self._prefix.layout
        create = bool(options.pop("create", True)) and marked is None
        try:
            opened = SQLBackend(catalog, upgrade=upgrade, create=create, **options)
        except NotFound:
            if marked is None:  # a reader asked not to create one: there is none
                raise
            raise another_catalog(self._prefix.display, marked, given) from None
        if marked is not None and marked.catalog_id is not None:
            try:
                ours = opened.catalog_rows.catalog_id(create=False)
            except BaseException:
                opened.close()
                raise
            if ours != marked.catalog_id:
                opened.close()
                raise another_catalog(self._prefix.display, marked, given)
        return opened

    def _mark(self) -> None:
        """Before the first write: record the layout and this catalog's identity."""
        if not self._prefix.marked:
            self._prefix.mark(self._rows.catalog_id(create=True))

    def __repr__(self) -> str:
        return f"CatalogBackend({self._store!r}, catalog={self._catalog!r})"

    def _object(
        self, namespace: str, key: str, version: int, format_version: int, token: int | None = None
    ) -> str:
        """``o<version>.<format>``, or ``o<version>.<format>.<token>`` once rewritten."""
        components = [*namespace_components(namespace), *key_components(key)]
        return self._prefix.path([*components, catalog_object_name(version, format_version, token)])

    def _remove_objects(self, namespace: str, key: str, objects: Sequence[ObjectRef]) -> None:
        """Best effort: an object left behind is an orphan, which a sweep removes."""
        if not objects:
            return
        paths = [self._object(namespace, key, *named) for named in objects]
        try:
            with self._prefix.guard("removing objects"):
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
        check_stored_key(key)  # a user key or a system key (the library's own records)
        self._mark()
        path = self._object(namespace, key, version, format_version, None)
        self._rows.reserve(
            namespace,
            key,
            version,
            size=len(blob),
            kind=kind,
            format_version=format_version,
            created_at_us=created_at_us,
            expected_newest=expected_newest,
            reserved_at_us=_now_us(),
        )
        self._step("put:reserved")
        try:
            with self._prefix.guard("writing a version"):
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
        self._step("put:created")
        pruned = self._rows.confirm(namespace, key, version)
        if pruned is None:
            self._remove_objects(namespace, key, [(version, format_version, None)])
            raise VersionConflict(
                f"version {version} of key {key!r} was not saved: the key was deleted meanwhile, "
                "or a sweep (gc, usage recount) took the save for one that died; retry the save",
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
        """Rewrite records through a new object each (the module docstring's four steps)."""
        return [self._replace(namespace, replacement) for replacement in replacements]

    def _replace(self, namespace: str, replacement: Replacement) -> bool:
        key, version = replacement.key, replacement.version
        try:
            info, token = self._rows.get(namespace, key, version)
        except NotFound:
            return False
        old = (version, info.format_version, token)
        with self._prefix.guard("reading a version"):
            # objects are never changed in place: equal now, equal at the switch
            if not self._objects.holds(self._object(namespace, key, *old), replacement.expected):
                return False  # rewritten or deleted since the row was read
        self._step("replace:read")
        pending = secrets.randbelow(MAX_INT64) + 1
        now = _now_us()
        if not self._rows.announce(
            namespace,
            key,
            version,
            format_version=info.format_version,
            token=token,
            pending=pending,
            now_us=now,
            stale_before_us=now - STALE_RESERVATION_SECONDS * 1_000_000,
        ):
            return False  # changed meanwhile, or another rewrite is under way
        self._step("replace:announced")
        new = (version, replacement.format_version, pending)
        try:
            with self._prefix.guard("writing a rewritten version"):
                self._objects.create(self._object(namespace, key, *new), replacement.blob)
        except BaseException:
            self._give_up(namespace, key, new)
            raise
        self._step("replace:created")
        try:
            switched = self._rows.switch(
                namespace,
                key,
                version,
                pending=pending,
                format_version=replacement.format_version,
                size=len(replacement.blob),
            )
        except QuotaExceeded:  # rolled back: the row still names the old object
            self._give_up(namespace, key, new)
            raise
        if not switched:  # a sweep took the announcement back (or the key was deleted)
            self._remove_objects(namespace, key, [new])
            return False
        self._step("replace:switched")
        self._remove_objects(namespace, key, [old])
        return True

    def _give_up(self, namespace: str, key: str, pending: ObjectRef) -> None:
        """Take back an announcement and remove its object, unless the catalog cannot say.

        Once the announcement is not the row's (taken back now, or earlier by
        a sweep), nothing can ever name the object. If the catalog cannot be
        reached, the object stays announced until a sweep finds it stale.
        """
        version, _fmt, token = pending
        assert token is not None
        try:
            self._rows.unannounce(namespace, key, version, token)
        except BackendError as exc:
            logger.warning("left a rewrite of %r for a later gc: %s", key, exc)
            return
        self._remove_objects(namespace, key, [pending])

    def delete(self, namespace: str, key: str, versions: Sequence[int] | None = None) -> int:
        removed = self._catalog.delete_rows(namespace, key, versions)
        self._step("delete:rows")
        self._remove_objects(namespace, key, removed)
        return len(removed)

    # Reads: the catalog says what exists, one request fetches it.

    def get(
        self, namespace: str, key: str, version: int | None = None
    ) -> tuple[VersionInfo, bytes]:
        # A rewrite may switch the row and remove the old object between the
        # two reads: the row is read again and names the new object.
        for _attempt in range(_READ_ATTEMPTS):
            info, token = self._rows.get(namespace, key, version)
            path = self._object(namespace, key, info.version, info.format_version, token)
            with self._prefix.guard("reading a version"):
                try:
                    return info, self._objects.read(path)
                except FileNotFoundError:
                    continue
        raise NotFound(
            f"version {info.version} of key {key!r} was deleted while being read, or "
            "its object was removed outside gotstate-persist"
        )

    def head(self, namespace: str, key: str) -> KeyHead:
        # newest as readers see it; a version still being written only raises
        # last_version (and makes a save with expected_version wait for it)
        return self._rows.readable_head(namespace, key)

    def known_namespaces(self) -> list[str]:
        """Every namespace the catalog ever held, for sweeps (even without readable rows)."""
        return self._rows.known_namespaces()

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
        """Settle stale reservations and announcements, remove orphans; return how many went.

        Removes only objects that no row or live announcement names when the
        rows are read, among those listed before (module docstring).
        """
        cutoff = _now_us() - int(older_than_s * 1_000_000)
        top = self._prefix.path(namespace_components(namespace))
        listed: dict[str, set[ObjectRef]] = {}
        temporaries: dict[tuple[str, ...], list[str]] = {}
        with self._prefix.guard("listing objects"):
            for components, _size in self._objects.walk(top, sizes=False):
                found = parse_catalog_object_path(components)
                if found is not None:
                    listed.setdefault(found[0], set()).add(found[1:])
                elif components and components[-1].startswith(TEMP_PREFIX):
                    temporaries.setdefault(tuple(components[:-1]), []).append(components[-1])
        for where, names in temporaries.items():
            # a writer killed between writing its temporary and linking it: no row
            # names a temporary, so only its age (as for reservations) says it is dead
            directory = self._prefix.path([*namespace_components(namespace), *where])
            with self._prefix.guard("removing temporaries"):
                self._objects.sweep(directory, names, older_than_s)
        self._step("sweep:listed")
        swept = 0
        for key, version, fmt in self._rows.stale_reservations(namespace, cutoff):
            path = self._object(namespace, key, version, fmt, None)
            directory, name = path.rsplit("/", 1)
            with self._prefix.guard("listing objects"):
                written = name in self._objects.names(directory, name)
            if written:  # complete (created exclusively): only the confirmation was lost
                self._remove_objects(
                    namespace, key, self._rows.confirm(namespace, key, version) or []
                )
            elif self._withdraw(namespace, key, version):
                swept += 1
        for key, version, pending in self._rows.stale_announcements(namespace, cutoff):
            # its rewriter died or stalled: once taken back, its object is an orphan
            self._rows.unannounce(namespace, key, version, pending)
        self._step("sweep:settled")
        rows = self._rows.row_objects(namespace)
        known = self._rows.last_versions(namespace)
        self._step("sweep:rows")
        for key, objects in listed.items():
            # Only numbers this catalog handed out: an object of a key it never
            # held, or above the key's last number, is not its orphan (another
            # catalog's, or a prefix shared by mistake), and is left alone.
            orphans = sorted(
                named
                for named in objects
                if named[0] <= known.get(key, 0) and not _named(rows.get((key, named[0])), named)
            )
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


def _named(row: tuple[ObjectRef, int | None] | None, found: ObjectRef) -> bool:
    """Whether a row (what it names, what it announces) could name object ``found``."""
    if row is None:
        return False
    named, pending = row
    return found == named or (found[2] is not None and found[2] == pending)
