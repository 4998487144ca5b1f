"""What a row read back from the SQL backend's tables must hold, checked at the boundary.

Why a module of its own: SQLite columns take values of any type, so a row
edited by another tool may hold text where a number belongs, or a number
where the blob belongs. Every part of the backend that reads rows (the
``Backend`` contract, the usage counters, a catalog's rows) turns them into
values through these checks, so no caller ever sees a str version or size, and
a damaged row is an ``IntegrityError`` or ``FormatError`` that names the row
and says how to repair it, never a crash deeper down.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from ..errors import FormatError, IntegrityError
from .base import Usage, VersionInfo

__all__ = [
    "ObjectRef",
    "blob_of",
    "counters_of",
    "info_of",
    "numeric",
    "object_ref",
    "shown",
    "where",
]

#: ``(version, format_version, object_token)``: which object a catalog row names.
ObjectRef = tuple[int, int, int | None]

#: The record row's metadata columns in the order the statements select them,
#: and what each must hold.
_INFO_COLUMNS: tuple[tuple[str, Callable[[Any], bool]], ...] = (
    ("key", lambda value: type(value) is str),
    ("version", lambda value: type(value) is int and value > 0),
    ("kind", lambda value: type(value) is str),
    ("format_version", lambda value: type(value) is int and value > 0),
    ("size", lambda value: type(value) is int and value >= 0),
    ("created_at_us", lambda value: type(value) is int),
)
#: How much of a damaged value a message shows: a column may hold megabytes of text.
_SHOWN_CHARS = 40
_ALTERED = (
    "the database was altered outside gotstate-persist: restore the row from a backup, "
    "or delete it with SQL and run 'gotstate-persist usage URL --recount'"
)


def shown(value: Any) -> str:
    """``repr(value)`` for a message, cut short: a damaged column may hold megabytes."""
    text = repr(value)
    return text if len(text) <= _SHOWN_CHARS else text[:_SHOWN_CHARS] + "..."


def object_ref(version: Any, format_version: Any, token: Any) -> ObjectRef:
    """The object a catalog row names, from its three columns."""
    return int(version), int(format_version), None if token is None else int(token)


def info_of(row: Sequence[Any]) -> VersionInfo:
    """A record row's metadata, checked to be of the types gotstate-persist writes.

    SQLite columns take values of any type, so a row edited by another tool
    may hold text where a number belongs. It is refused here, at the
    boundary, so that no caller sees a str version or size: a handful of type
    checks per row, cheap next to the query (and next to a decrypt).
    """
    key, version, kind, format_version, size, created_at_us = row[:6]
    if (
        type(key) is str
        and type(version) is int
        and type(kind) is str
        and type(format_version) is int
        and type(size) is int
        and type(created_at_us) is int
        and version > 0
        and format_version > 0
        and size >= 0
    ):
        return VersionInfo(key, version, kind, format_version, size, created_at_us)
    raise _damaged_row(row)


def where(row: Sequence[Any]) -> tuple[str, int]:
    """``(key, version)`` of a row for a report, as well as a damaged row allows (0: unknown)."""
    key = row[0] if type(row[0]) is str else shown(row[0])
    version = row[1] if type(row[1]) is int else 0
    return key, version


def _damaged_row(row: Sequence[Any]) -> IntegrityError:
    name, value = next(
        (name, value)
        for (name, valid), value in zip(_INFO_COLUMNS, row, strict=False)
        if not valid(value)
    )
    return IntegrityError(
        f"the row of key {shown(row[0])} version {shown(row[1])} is damaged: its {name} "
        f"column holds {shown(value)} ({type(value).__name__}); {_ALTERED}"
    )


def blob_of(row: Sequence[Any]) -> bytes:
    """A record row's blob (column 6) as bytes; anything but binary data is refused.

    Never ``bytes(value)`` of whatever is stored: of an integer N that would
    allocate N zero bytes.
    """
    blob = row[6]
    if type(blob) is bytes:
        return blob
    if isinstance(blob, (bytearray, memoryview)):
        return bytes(blob)
    raise FormatError(
        f"version {shown(row[1])} of key {shown(row[0])} is not stored as binary data "
        f"(its blob column holds {type(blob).__name__}); {_ALTERED}"
    )


def numeric(key: str, rows: list[Any]) -> list[Any]:
    """``rows`` of numbers (or NULL) only; a damaged one is an ``IntegrityError``, not a crash."""
    for row in rows:
        wrong = [value for value in row if value is not None and type(value) is not int]
        if wrong:
            raise IntegrityError(
                f"a row of key {key!r} holds {shown(wrong[0])} where a number belongs; {_ALTERED}"
            )
    return rows


def counters_of(row: Sequence[Any]) -> Usage | None:
    """The usage counters of a namespace row, or None if they are not integers."""
    if type(row[0]) is int and type(row[1]) is int and type(row[2]) is int:
        return Usage(row[0], row[1], row[2])
    return None
