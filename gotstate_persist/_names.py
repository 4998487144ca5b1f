"""Validation of keys, namespaces and record kinds, shared by every layer.

Checked once at the public boundary so that backends can rely on every name
they receive being 1..255 bytes of UTF-8 text without control characters.
"""

from __future__ import annotations

import re

from .errors import InvalidArgument

MAX_NAME_BYTES = 255
DEFAULT_NAMESPACE = "default"

# C0 controls, DEL and C1 controls: invisible in listings and a classic way to
# smuggle confusing names into logs and terminals.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_KIND = re.compile(r"[a-z][a-z0-9_.-]{0,63}")


def check_name(value: object, what: str) -> str:
    """Return ``value`` if it is an allowed key or namespace, else raise.

    ``what`` is "key" or "namespace" and only shapes the message.
    """
    if not isinstance(value, str):
        raise InvalidArgument(f"{what} must be a str, not {type(value).__name__}")
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidArgument(
            f"{what} is not valid UTF-8 text (it contains a lone surrogate); use plain Unicode text"
        ) from None
    if not 1 <= size <= MAX_NAME_BYTES:
        raise InvalidArgument(
            f"{what} must be 1 to {MAX_NAME_BYTES} bytes of UTF-8, got {size} bytes; "
            f"shorten it or hash long identifiers"
        )
    if _CONTROL.search(value):
        raise InvalidArgument(f"{what} {value!r} contains a control character; remove it")
    return value


def printable(text: str) -> str:
    """``text`` safe to write to a terminal: every non-printable character escaped.

    Names read back from storage were not necessarily written by this library
    (another tool, or someone with database access, may have stored anything),
    so a listing must never hand a terminal an escape sequence, a bidi override
    or a lone surrogate it cannot encode. Printable text, non-ASCII included,
    is returned unchanged; the rest becomes ``\\xNN``, ``\\uNNNN`` or
    ``\\UNNNNNNNN`` as in a Python literal.
    """
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else _escaped(char) for char in text)


def _escaped(char: str) -> str:
    code = ord(char)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def check_kind(value: object) -> str:
    """Return ``value`` if it is a well-formed record kind name."""
    if not isinstance(value, str) or not _KIND.fullmatch(value):
        raise InvalidArgument(
            f"record kind {value!r} is not allowed: use 1-64 characters of lowercase "
            "letters, digits, '_', '.', '-', starting with a letter"
        )
    return value


#: Version numbers are SQL BIGINTs in every backend.
MAX_VERSION = 2**63 - 1


def check_version(version: object, *, allow_zero: bool = False) -> int:
    """A version number argument (from 1; from 0 where 0 means "no version yet")."""
    low = 0 if allow_zero else 1
    if type(version) is not int or not low <= version <= MAX_VERSION:
        raise InvalidArgument(f"version must be an int >= {low}, got {version!r}")
    return version
