"""Envelope version 1 as bytes: the fixed header and the table of algorithms.

Every blob ever sealed depends on these numbers, and the keys, the keyring and
the envelope all need them, so they are written down once, here, below all
three. Nothing in this module may change for envelope version 1: the golden
fixtures in ``tests/fixtures/golden_envelopes`` hold it to that.

Each algorithm's wire id is written out next to its name rather than derived
from its position in a list: reordering the list (it is also the order the
CLI offers the algorithms in) or inserting a new algorithm must never renumber
the ones already on disk.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, TypeGuard

from gotstate_persist.errors import InvalidArgument

__all__ = [
    "AEAD_HEADER_LEN",
    "AEAD_TAG_LEN",
    "AES_256_GCM",
    "ALGORITHMS",
    "ALGORITHMS_BY_ID",
    "ALGORITHMS_BY_NAME",
    "CHACHA20_POLY1305",
    "ED25519",
    "ENVELOPE_VERSION",
    "FIXED",
    "FIXED_LEN",
    "HMAC_LEN",
    "HMAC_SHA256",
    "MAGIC",
    "MAX_BLOB_BYTES",
    "NONCE_LEN",
    "SIGNATURE_LEN",
    "Algorithm",
    "algorithm_named",
    "is_int",
]

# Checked before any parsing or cryptography, so a hostile or corrupt object
# cannot make a reader allocate or hash an unbounded amount of data.
MAX_BLOB_BYTES: Final = 16 * 1024 * 1024

MAGIC: Final = b"GSPB"
ENVELOPE_VERSION: Final = 1

# magic | envelope version | algorithm id | codec id | key id (u32 BE)
FIXED: Final = struct.Struct(">4sBBBI")
FIXED_LEN: Final = FIXED.size  # 11
NONCE_LEN: Final = 12
AEAD_HEADER_LEN: Final = FIXED_LEN + NONCE_LEN  # 23
AEAD_TAG_LEN: Final = 16
HMAC_LEN: Final = 32
SIGNATURE_LEN: Final = 64


@dataclass(frozen=True, slots=True)
class Algorithm:
    """One sealing algorithm as it appears on the wire.

    ``wire_id`` is the byte in every header sealed with it; ``header_len`` is
    how long that header is (AEAD headers carry a nonce after the fixed part)
    and ``overhead`` how many bytes sealing adds to a payload in all.
    """

    name: str
    wire_id: int
    header_len: int
    overhead: int


AES_256_GCM: Final = Algorithm(
    "aes-256-gcm", wire_id=1, header_len=AEAD_HEADER_LEN, overhead=AEAD_HEADER_LEN + AEAD_TAG_LEN
)  # overhead 39
CHACHA20_POLY1305: Final = Algorithm(
    "chacha20-poly1305",
    wire_id=2,
    header_len=AEAD_HEADER_LEN,
    overhead=AEAD_HEADER_LEN + AEAD_TAG_LEN,
)  # overhead 39
HMAC_SHA256: Final = Algorithm(
    "hmac-sha256", wire_id=3, header_len=FIXED_LEN, overhead=FIXED_LEN + HMAC_LEN
)  # overhead 43
ED25519: Final = Algorithm(
    "ed25519", wire_id=4, header_len=FIXED_LEN, overhead=FIXED_LEN + SIGNATURE_LEN
)  # overhead 75

_TABLE: Final = (AES_256_GCM, CHACHA20_POLY1305, HMAC_SHA256, ED25519)

#: The names, in the order they are offered to users. The order means nothing on the wire.
ALGORITHMS: Final[tuple[str, ...]] = tuple(algorithm.name for algorithm in _TABLE)
# Plain dicts typed read-only: opening a blob looks its algorithm up here, and a
# mappingproxy would add a layer to every lookup.
ALGORITHMS_BY_NAME: Final[Mapping[str, Algorithm]] = {
    algorithm.name: algorithm for algorithm in _TABLE
}
ALGORITHMS_BY_ID: Final[Mapping[int, Algorithm]] = {
    algorithm.wire_id: algorithm for algorithm in _TABLE
}


def algorithm_named(name: object) -> Algorithm:
    """The algorithm a caller asked for by name; anything else is their mistake."""
    if isinstance(name, str):
        algorithm = ALGORITHMS_BY_NAME.get(name)
        if algorithm is not None:
            return algorithm
    raise InvalidArgument(
        f"unknown sealing algorithm {name!r}; choose one of {', '.join(ALGORITHMS)}"
    )


def is_int(value: object) -> TypeGuard[int]:
    """An int that is not a bool: ``True`` is never a valid id, version or codec id."""
    return isinstance(value, int) and not isinstance(value, bool)
