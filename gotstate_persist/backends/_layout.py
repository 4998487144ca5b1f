"""Which bookkeeping an object store's prefix was written with: plain, or a SQL catalog.

The two layouts cannot read each other: a catalog keeps versions, kinds and
usage in SQL and names objects ``o<version>.<format>``, a plain store keeps
everything in object names (``v<version>~kind~format~time``). A prefix written
through a catalog and later opened without it (an environment variable missing
in one service) would look empty, accept writes and start a second, divergent
history. So the first write through either records the layout in
:data:`LAYOUT_OBJECT` at the prefix's root, and every open checks it: a
catalog-managed prefix refuses to open without a catalog (naming the catalog,
password masked), and a plain one refuses a catalog. Moving a store from one
layout to the other is an explicit copy (``gotstate-persist copy SRC DST
--to-catalog CATALOG``), never a side effect of a missing option.

Prefixes written before the marker existed have none; their first write
checks that no object of the other layout is there before marking them.

A plain S3 prefix also records its *object layout*: 1, the names of
:mod:`._versionnames` (every plain store before issue 16, and every plain
store on other protocols), or 2, the entries and blobs of :mod:`._entrynames`
(one conditional PUT of the blob and one PUT of its entry per write, one GET
per known-version read). A new, empty S3 prefix is marked layout 2 at its
first write; a prefix that already holds objects keeps layout 1 until it is
moved (``gotstate-persist db upgrade s3://...``, :mod:`._layoutmove`).

Releases before object layout 2 know only the three fields of
:class:`Layout`, and would read a layout-2 prefix as an empty layout-1 one and
start a second history in it. So a layout-2 marker says
``managed_by_catalog: true`` with a ``catalog`` text telling them to upgrade:
they refuse to open it without a catalog, and with any catalog its
``catalog_id`` is not theirs. This release reads ``object_layout`` first.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

import msgspec

from ..errors import IntegrityError, InvalidArgument
from ._objectnames import in_catalog_scheme, is_version_name

__all__ = [
    "LAYOUT_OBJECT",
    "OBJECT_LAYOUT_2",
    "Layout",
    "check_layout",
    "decode_layout",
    "encode_layout",
    "layout_mismatch",
    "plain_layout",
]

#: At the prefix's root; "." is not in the base32 alphabet of namespace
#: directories and starts no object name, so it collides with nothing.
LAYOUT_OBJECT = "gotstate-persist.json"
#: A marker is a few dozen bytes; anything larger was not written by us.
MAX_LAYOUT_BYTES = 4096
#: What a layout-2 marker tells releases that know only layout 1 (as a catalog "URL").
_UPGRADE_TEXT = (
    "none: object layout 2 of a plain S3 store, which this release cannot read; "
    "upgrade gotstate-persist"
)


class Layout(msgspec.Struct, frozen=True):
    """The marker's content.

    ``catalog`` is the catalog's URL, masked, for messages only (the same
    database may be reached by other URLs); ``catalog_id`` is the identity
    the catalog database keeps, so that another catalog is refused.
    """

    managed_by_catalog: bool
    catalog: str | None = None
    catalog_id: str | None = None
    #: 1 or 2 for a plain store (see the module docstring); absent means 1.
    object_layout: int = 1


#: The object layout of plain S3 stores with one-request reads (``_entrynames``).
OBJECT_LAYOUT_2 = 2


def plain_layout(object_layout: int) -> Layout:
    """The marker of a plain store in ``object_layout`` (1 or 2)."""
    if object_layout == OBJECT_LAYOUT_2:
        return Layout(True, _UPGRADE_TEXT, "object-layout-2", OBJECT_LAYOUT_2)
    return Layout(managed_by_catalog=False)


def encode_layout(marker: Layout) -> bytes:
    """The marker's bytes; a layout-1 marker has exactly the three fields it always had."""
    if marker.object_layout == 1:
        return msgspec.json.encode(
            {
                "managed_by_catalog": marker.managed_by_catalog,
                "catalog": marker.catalog,
                "catalog_id": marker.catalog_id,
            }
        )
    return msgspec.json.encode(marker)


class _Walk(Protocol):
    def __call__(self, top: str, *, sizes: bool) -> Iterator[tuple[list[str], int]]: ...


def decode_layout(data: bytes, display: str) -> Layout:
    try:
        found = msgspec.json.decode(data, type=Layout)
    except msgspec.DecodeError:
        found = None
    if found is None or found.object_layout < 1:
        raise IntegrityError(
            f"the layout marker {LAYOUT_OBJECT} of {display} is damaged; it was altered "
            "outside gotstate-persist: restore it from a backup (or remove it, then open the "
            "store the way it was written)"
        )
    if found.object_layout > OBJECT_LAYOUT_2:
        raise InvalidArgument(
            f"{display} holds object layout {found.object_layout}, written by a newer "
            f"gotstate-persist; this one reads layouts 1 and {OBJECT_LAYOUT_2}: upgrade "
            "gotstate-persist"
        )
    return found


def layout_mismatch(display: str, found: Layout, *, with_catalog: bool) -> InvalidArgument | None:
    """The error for opening ``found`` the other way, or None if it matches."""
    if found.object_layout == OBJECT_LAYOUT_2:
        found = Layout(managed_by_catalog=False)  # a plain store, whatever older releases read
    if found.managed_by_catalog and not with_catalog:
        return InvalidArgument(
            f"{display} is managed by the SQL catalog {found.catalog or '(unnamed)'}: open it "
            "with catalog=URL (CLI: --catalog URL); without its catalog it would look empty "
            "and start a second history"
        )
    if not found.managed_by_catalog and with_catalog:
        return InvalidArgument(
            f"{display} was written without a catalog, so the catalog would not know its "
            "records: open it without catalog=, or copy it into a new place under a catalog "
            "(gotstate-persist copy SRC DST --to-catalog CATALOG)"
        )
    return None


def another_catalog(display: str, found: Layout, given: str) -> InvalidArgument:
    """The error for a catalog-managed prefix opened with a catalog that is not its own."""
    return InvalidArgument(
        f"{display} is managed by the SQL catalog {found.catalog or '(unnamed)'}, and {given} "
        "is another catalog (or none yet): open it with the catalog it was written with. "
        "Another catalog would not know its records, show it empty, and a sweep would "
        "remove them"
    )


def check_layout(walk: _Walk, root: str, display: str, *, with_catalog: bool) -> bool:
    """Before marking an unmarked prefix: refuse it if it holds the other layout's objects.

    Returns whether the prefix holds no object at all (a new store).
    """
    empty = True
    for components, _size in walk(root, sizes=False):
        empty = False
        name = components[-1]
        other = is_version_name(name) if with_catalog else in_catalog_scheme(name)
        if other:
            found = Layout(managed_by_catalog=not with_catalog, catalog=None)
            error = layout_mismatch(display, found, with_catalog=with_catalog)
            assert error is not None
            raise error
    return empty
