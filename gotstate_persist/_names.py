"""Validation of keys, namespaces and record kinds, shared by every layer.

Checked once at the public boundary so that backends can rely on every name
they receive being 1..255 bytes of UTF-8 text without control characters.

The one exception is a *system key*: where the library keeps records of its
own in a namespace (an extension's registration, later configuration and the
journal), it stores them as ordinary sealed, versioned records under keys that
start with :data:`SYSTEM_KEY_PREFIX`. That prefix begins with a control
character, so :func:`check_name`, the public boundary, refuses it in every
user key and no user key can ever collide with one. Services below ``Store``
build them with :func:`system_key` and pass them through
:func:`check_stored_key`. Backends store them like any other key; user-facing
listings (``Store.keys``, ``gotstate-persist ls``) hide them, and the quota
rules count them toward bytes and records only (``_quota_rules``).
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

#: Every system key starts with this: a control character (no user key may hold
#: one) and the library's name, so one is recognisable in a raw dump.
SYSTEM_KEY_PREFIX = "\x1fgotstate/"
#: The first character of every system key, and of no user key. SQL compares it
#: with ``substr(key, 1, 1)`` (never a range: collations may order it anywhere).
SYSTEM_KEY_MARKER = SYSTEM_KEY_PREFIX[0]
#: An area of system keys ("ext" for extension registrations): one short word.
_AREA = re.compile(r"[a-z][a-z0-9_-]{0,31}")


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
        if value.startswith(SYSTEM_KEY_PREFIX):
            raise InvalidArgument(
                f"{what} {value!r} is reserved: keys starting with {SYSTEM_KEY_PREFIX!r} hold "
                "gotstate-persist's own records (such as extension registrations) and are "
                "managed by the library; choose a name without control characters"
            )
        raise InvalidArgument(f"{what} {value!r} contains a control character; remove it")
    return value


def is_system_key(key: str) -> bool:
    """Whether ``key`` is one of the library's own (starts with :data:`SYSTEM_KEY_MARKER`)."""
    return key.startswith(SYSTEM_KEY_MARKER)


def system_area_prefix(area: str) -> str:
    """What every system key of ``area`` starts with (for ``Backend.keys(namespace, prefix)``)."""
    if not isinstance(area, str) or not _AREA.fullmatch(area):
        raise InvalidArgument(
            f"system key area {area!r} is not allowed: use 1-32 characters of lowercase "
            "letters, digits, '_', '-', starting with a letter"
        )
    return f"{SYSTEM_KEY_PREFIX}{area}/"


def system_key(area: str, name: str) -> str:
    """The system key of ``name`` in ``area``: ``SYSTEM_KEY_PREFIX + area + "/" + name``.

    ``name`` follows the rules of a user key (:func:`check_name`), and the whole
    key must fit in :data:`MAX_NAME_BYTES` bytes of UTF-8.
    """
    prefix = system_area_prefix(area)
    check_name(name, f"{area} name")
    key = prefix + name
    size = len(key.encode("utf-8"))
    if size > MAX_NAME_BYTES:
        raise InvalidArgument(
            f"{area} name {name!r} is too long: its system key would be {size} bytes, over "
            f"{MAX_NAME_BYTES}; use a name of at most {MAX_NAME_BYTES - len(prefix)} bytes"
        )
    return key


def split_system_key(key: str) -> tuple[str, str]:
    """``(area, name)`` of a well-formed system key; ``InvalidArgument`` for anything else."""
    if not isinstance(key, str) or not key.startswith(SYSTEM_KEY_PREFIX):
        raise InvalidArgument(f"{key!r} is not a system key")
    area, slash, name = key[len(SYSTEM_KEY_PREFIX) :].partition("/")
    if not slash or not _AREA.fullmatch(area):
        raise InvalidArgument(
            f"{key!r} is not a well-formed system key (an area, '/', a name after the prefix)"
        )
    system_key(area, name)  # the name's own rules, and the whole key's size
    return area, name


def check_stored_key(key: object, what: str = "key") -> str:
    """Return ``key`` if it is a user key (:func:`check_name`) or a well-formed system key.

    For services below the public boundary (``RecordPipeline``, ``verify``,
    ``copy``), which handle the library's own records as well as users'.
    """
    if isinstance(key, str) and is_system_key(key):
        try:
            split_system_key(key)
        except InvalidArgument as exc:
            raise InvalidArgument(f"{what}: {exc}") from None
        return key
    return check_name(key, what)


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
