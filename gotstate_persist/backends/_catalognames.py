"""The names of the objects of a store kept with a SQL catalog, and back.

The catalog (``backends.catalog``) holds versions, kinds, sizes and usage, so
an object's name says only what the catalog cannot hold for it: which
version, which format, and which rewrite. The namespace and key directories
are those of a plain store (:mod:`._keypaths`). The layout check reads these
names too, to tell a prefix written through a catalog from a plain one.

``o0000000000000000007.2`` is version 7 in format 2; once rewritten,
``o0000000000000000007.2.00f3...`` adds the rewrite's token.
"""

from __future__ import annotations

from collections.abc import Sequence

from ._keypaths import decode_key_path
from ._versionnames import MAX_INT64

__all__ = [
    "catalog_object_name",
    "in_catalog_scheme",
    "parse_catalog_object_name",
    "parse_catalog_object_path",
]

_CATALOG_OBJECT = "o"
_CATALOG_VERSION_DIGITS = 19  # every positive int64
_TOKEN_DIGITS = 16  # hex digits of a rewrite's token, a positive int64


def catalog_object_name(version: int, format_version: int, token: int | None) -> str:
    """``o<version>.<format>``, or ``o<version>.<format>.<token>`` for a rewritten object."""
    name = f"{_CATALOG_OBJECT}{version:0{_CATALOG_VERSION_DIGITS}d}.{format_version}"
    return name if token is None else f"{name}.{token:0{_TOKEN_DIGITS}x}"


def in_catalog_scheme(name: str) -> bool:
    """Whether ``name`` starts like a catalog object (``o`` and 19 digits), canonical or not.

    What tells a prefix written through a catalog from a plain one.
    """
    digits = name[len(_CATALOG_OBJECT) :].partition(".")[0]
    return (
        name.startswith(_CATALOG_OBJECT)
        and len(digits) == _CATALOG_VERSION_DIGITS
        and digits.isascii()
        and digits.isdigit()
    )


def parse_catalog_object_name(name: str) -> tuple[int, int, int | None] | None:
    """``(version, format version, token)`` of a canonical catalog object name, or None."""
    if not name.startswith(_CATALOG_OBJECT) or not name.isascii():
        return None
    digits, _dot, rest = name[len(_CATALOG_OBJECT) :].partition(".")
    fmt, _dot, hex_token = rest.partition(".")
    if len(digits) != _CATALOG_VERSION_DIGITS or not digits.isdigit() or not fmt.isdigit():
        return None
    token = int(hex_token, 16) if _is_token(hex_token) else None
    version = int(digits)
    if version < 1 or catalog_object_name(version, int(fmt), token) != name:
        return None  # not canonical: leading zeros, a bad token, a stray suffix
    return version, int(fmt), token


def _is_token(text: str) -> bool:
    return (
        len(text) == _TOKEN_DIGITS
        and all(c in "0123456789abcdef" for c in text)
        and 0 < int(text, 16) <= MAX_INT64
    )


def parse_catalog_object_path(components: Sequence[str]) -> tuple[str, int, int, int | None] | None:
    """``(key, version, format version, token)`` of a catalog object path, or None.

    ``components`` are relative to a namespace directory, as a walk of it yields them.
    """
    parsed = parse_catalog_object_name(components[-1]) if components else None
    decoded = None if parsed is None else decode_key_path(components)
    return None if parsed is None or decoded is None else (decoded[0], *parsed)
