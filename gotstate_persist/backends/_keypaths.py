"""Where a namespace and a key live below an object store's root, and back.

Both backends that keep objects (plain and with a SQL catalog) put each key's
objects in one directory named after the namespace and the key; this module
owns that mapping, so a listing made by either decodes the same way.

Namespace and key are the RFC 4648 base32 text of their UTF-8 bytes, in
lowercase and without padding. Hex was the first idea, but two 255-byte names
in hex take 1,020 characters and would break S3's 1,024-byte key limit on
their own; base32 takes 408 and its alphabet (``a-z``, ``2-7``) is still safe
on case-insensitive file systems, in URLs, and cannot spell ``..``, ``/`` or a
Windows device name. The text is cut into chunks of at most
:data:`CHUNK_CHARS` characters so every component stays far below the
255-byte limit of common file systems. Each component starts with a marker
letter saying what it is: ``x`` a chunk that continues in the next component,
``s`` the last chunk of a namespace, ``k`` the last chunk of a key. The
markers make the path self-describing, so a listing is parsed without knowing
where names were cut, and no marker letter starts a reserved device name.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence

from .._names import MAX_NAME_BYTES
from ..errors import InvalidArgument

__all__ = [
    "CHUNK_CHARS",
    "MAX_STORED_NAME_BYTES",
    "decode_key_path",
    "decode_namespace_key_path",
    "key_components",
    "namespace_components",
]

#: Longest chunk of encoded text in one path component (plus one marker letter).
CHUNK_CHARS = 200
#: Longest namespace or key this layout stores. The public boundary allows
#: 255 bytes (``_names``); the backend is lenient beyond that, as the SQL one
#: is, because the conformance suite stores a 255-byte key plus a suffix. The
#: S3 key-length budget is computed for 255-byte names.
MAX_STORED_NAME_BYTES = 1024

_CONTINUED = "x"
_NAMESPACE_END = "s"
_KEY_END = "k"


def _name_bytes(name: object, what: str) -> bytes:
    """The UTF-8 bytes of ``name``; any text encodes safely, so only size is limited."""
    if not isinstance(name, str):
        raise InvalidArgument(f"{what} must be a str, not {type(name).__name__}")
    try:
        data = name.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidArgument(f"{what} is not valid UTF-8 text (a lone surrogate)") from None
    if not 1 <= len(data) <= MAX_STORED_NAME_BYTES:
        raise InvalidArgument(
            f"{what} must be 1 to {MAX_NAME_BYTES} bytes of UTF-8 (this backend stores at "
            f"most {MAX_STORED_NAME_BYTES}), got {len(data)} bytes"
        )
    return data


def _encode(name: str, what: str, end_marker: str) -> list[str]:
    text = base64.b32encode(_name_bytes(name, what)).decode("ascii")
    text = text.rstrip("=").lower()
    chunks = [text[i : i + CHUNK_CHARS] for i in range(0, len(text), CHUNK_CHARS)]
    return [_CONTINUED + chunk for chunk in chunks[:-1]] + [end_marker + chunks[-1]]


def namespace_components(namespace: str) -> list[str]:
    """Path components of ``namespace`` (raises ``InvalidArgument`` if not allowed)."""
    return _encode(namespace, "namespace", _NAMESPACE_END)


def key_components(key: str) -> list[str]:
    """Path components of ``key`` below its namespace's components."""
    return _encode(key, "key", _KEY_END)


def _decode(components: Sequence[str], end_marker: str) -> tuple[str, int] | None:
    """Decode the name that starts ``components``; return it and how many it used.

    Returns None for anything that is not exactly what :func:`_encode`
    produces, so a stray directory cannot alias a real name.
    """
    text = []
    for used, component in enumerate(components, start=1):
        marker, chunk = component[:1], component[1:]
        if marker == _CONTINUED and len(chunk) == CHUNK_CHARS:
            text.append(chunk)
            continue
        if marker != end_marker or not 1 <= len(chunk) <= CHUNK_CHARS:
            return None
        text.append(chunk)
        encoded = "".join(text)
        try:
            raw = base64.b32decode(encoded.upper() + "=" * (-len(encoded) % 8))
            name = raw.decode("utf-8")
        except (binascii.Error, ValueError):  # UnicodeDecodeError is a ValueError
            return None
        if len(raw) > MAX_STORED_NAME_BYTES:
            return None
        if _encode(name, "name", end_marker) != list(components[:used]):
            return None  # not canonical (e.g. nonzero padding bits)
        return name, used
    return None


def decode_key_path(components: Sequence[str]) -> tuple[str, str] | None:
    """``(key, object name)`` from components relative to a namespace directory."""
    decoded = _decode(components, _KEY_END)
    if decoded is None or decoded[1] != len(components) - 1:
        return None
    return decoded[0], components[-1]


def decode_namespace_key_path(components: Sequence[str]) -> tuple[str, str, str] | None:
    """``(namespace, key, object name)`` from components relative to the root."""
    namespace = _decode(components, _NAMESPACE_END)
    if namespace is None:
        return None
    rest = decode_key_path(components[namespace[1] :])
    if rest is None:
        return None
    return namespace[0], rest[0], rest[1]
