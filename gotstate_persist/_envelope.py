"""Sealing and opening blobs: the caller-facing half of the envelope (design.md, version 1).

This module decides what a caller may pass in and what a header must look
like before any key is consulted: the context is built here from where the
reader is reading, never from the blob, and structural problems no authentic
blob can have are :class:`~gotstate_persist.errors.FormatError` before any
cryptographic work. Which key seals or opens is the keyring's decision
(:meth:`KeyRing.seal_payload`, :meth:`KeyRing.open_blob`).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

from gotstate_persist._keyring import KeyRing
from gotstate_persist._keys import Bytes, Handover
from gotstate_persist._wire import (
    ALGORITHMS_BY_ID,
    ENVELOPE_VERSION,
    FIXED,
    FIXED_LEN,
    MAGIC,
    MAX_BLOB_BYTES,
    algorithm_named,
    is_int,
)
from gotstate_persist.errors import FormatError, InvalidArgument

__all__ = [
    "EnvelopeHeader",
    "envelope_overhead",
    "open_envelope",
    "read_header",
    "reopen_handover",
    "seal",
    "seal_handover",
]

_CONTEXT_PREFIX: Final = b"gotstate-persist/v1\x00"
_MAX_VERSION: Final = 2**63 - 1
_U32: Final = struct.Struct(">I")
_U64: Final = struct.Struct(">Q")


@dataclass(frozen=True, slots=True)
class EnvelopeHeader:
    """The cleartext header, for reports and routing, *not yet authenticated*.

    Nothing read here may be trusted until :func:`open_envelope` succeeds; it
    exists so tools like ``gotstate-persist verify`` can say which key a blob
    needs without holding that key.
    """

    envelope_version: int
    algorithm_id: int
    codec_id: int
    key_id: int

    @property
    def algorithm(self) -> str:
        return ALGORITHMS_BY_ID[self.algorithm_id].name


def envelope_overhead(algorithm: str) -> int:
    """Bytes a sealed blob adds to its payload, for quota arithmetic before sealing."""
    return algorithm_named(algorithm).overhead


def _view(blob: object) -> memoryview:
    try:
        return memoryview(blob).cast("B")  # type: ignore[arg-type]
    except TypeError:
        raise InvalidArgument(
            f"blob must be bytes, bytearray or a contiguous memoryview, got {type(blob).__name__}"
        ) from None


def _parse_header(view: memoryview) -> tuple[int, int, int, int]:
    """Structural checks only: everything here is true of every blob we ever wrote."""
    size = len(view)
    if size > MAX_BLOB_BYTES:
        raise FormatError(
            f"blob of {size} bytes exceeds the {MAX_BLOB_BYTES}-byte limit; "
            "gotstate-persist never writes blobs this large, so it is not one of ours"
        )
    if size < FIXED_LEN:
        raise FormatError(
            f"not a gotstate-persist blob: {size} bytes is too short to hold an envelope header"
        )
    magic, envelope_version, algorithm_id, codec_id, key_id = FIXED.unpack_from(view)
    if magic != MAGIC:
        raise FormatError("not a gotstate-persist blob: it does not start with the GSPB magic")
    if envelope_version != ENVELOPE_VERSION:
        if envelope_version == 0:
            raise FormatError("not a gotstate-persist blob: envelope version 0 does not exist")
        raise FormatError(
            f"unsupported envelope version {envelope_version}: the blob was written by a "
            f"newer version of gotstate-persist (this one reads version {ENVELOPE_VERSION}); "
            "upgrade gotstate-persist to read it"
        )
    algorithm = ALGORITHMS_BY_ID.get(algorithm_id)
    if algorithm is None:
        raise FormatError(
            f"unknown algorithm id {algorithm_id}: the blob was written by a newer version "
            "of gotstate-persist, or is not a gotstate-persist blob"
        )
    if size < algorithm.header_len:
        raise FormatError(
            f"not a gotstate-persist blob: {size} bytes is too short to hold an "
            f"{algorithm.name} envelope header"
        )
    return envelope_version, algorithm_id, codec_id, key_id


def read_header(blob: bytes | memoryview) -> EnvelopeHeader:
    """Parse the header without authenticating it, e.g. to report the key id a blob needs."""
    return EnvelopeHeader(*_parse_header(_view(blob)))


def _context(namespace: str, key: str, version: int) -> bytes:
    # Bound into every MAC/tag/signature so a blob only opens where it was written.
    if not isinstance(namespace, str):
        raise InvalidArgument(f"namespace must be str, got {type(namespace).__name__}")
    if not isinstance(key, str):
        raise InvalidArgument(f"key must be str, got {type(key).__name__}")
    if not is_int(version):
        raise InvalidArgument(f"version must be an int, got {type(version).__name__}")
    if not 1 <= version <= _MAX_VERSION:
        raise InvalidArgument(f"version must be in 1..{_MAX_VERSION}, got {version}")
    try:
        namespace_raw = namespace.encode("utf-8")
        key_raw = key.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidArgument("namespace and key must be valid Unicode text") from None
    return b"".join(
        (
            _CONTEXT_PREFIX,
            _U32.pack(len(namespace_raw)),
            namespace_raw,
            _U32.pack(len(key_raw)),
            key_raw,
            _U64.pack(version),
        )
    )


def seal(
    keyring: KeyRing,
    payload: bytes | bytearray | memoryview,
    *,
    codec_id: int,
    namespace: str,
    key: str,
    version: int,
) -> bytes:
    """Seal ``payload`` with the primary key for exactly this namespace/key/version.

    Save refuses whatever load would refuse, so a payload whose blob would
    exceed :data:`MAX_BLOB_BYTES` is a :class:`FormatError` here, not later.
    """
    if isinstance(payload, memoryview):
        payload = _view(payload)  # len() must count bytes, not items
    elif not isinstance(payload, (bytes, bytearray)):
        raise InvalidArgument(f"payload must be bytes, got {type(payload).__name__}")
    return _seal(keyring, payload, codec_id, _context(namespace, key, version))


def seal_handover(
    keyring: KeyRing, payload: Handover, *, codec_id: int, namespace: str, key: str, version: int
) -> bytes:
    """:func:`seal` of a payload its holder gives up, so it can be freed while sealing."""
    return _seal(keyring, payload, codec_id, _context(namespace, key, version))


def reopen_handover(
    handover: Handover, blob: bytes, *, namespace: str, key: str, version: int
) -> bytes:
    """The payload :func:`seal_handover` sealed into ``blob`` for this namespace/key/version.

    Opened with the key that sealed it, which the keyring may no longer hold.
    """
    return handover.reopen(blob, _context(namespace, key, version))


def _seal(keyring: KeyRing, payload: Bytes | Handover, codec_id: int, context: bytes) -> bytes:
    if not isinstance(keyring, KeyRing):
        raise InvalidArgument(f"keyring must be a KeyRing, got {type(keyring).__name__}")
    if not keyring.can_seal:
        raise InvalidArgument(
            "this keyring is verify-only (made by KeyRing.public()) and cannot seal; "
            "seal with the keyring that holds the private key"
        )
    if not is_int(codec_id) or not 1 <= codec_id <= 255:
        raise InvalidArgument(f"codec_id must be an int in 1..255, got {codec_id!r}")
    return keyring.seal_payload(codec_id, context, payload)


def open_envelope(
    keyring: KeyRing, blob: bytes | memoryview, *, namespace: str, key: str, version: int
) -> tuple[int, bytes]:
    """Authenticate and open a blob read from ``namespace``/``key``/``version``.

    Returns ``(codec_id, payload)``; the codec id is only returned once the
    header it sits in has been authenticated, so the decoder choice is trusted.
    """
    if not isinstance(keyring, KeyRing):
        raise InvalidArgument(f"keyring must be a KeyRing, got {type(keyring).__name__}")
    context = _context(namespace, key, version)
    view = _view(blob)
    _, algorithm_id, codec_id, key_id = _parse_header(view)
    return codec_id, keyring.open_blob(view, algorithm_id, key_id, context)
