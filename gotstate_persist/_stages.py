"""What a record is between the stages of ``_pipeline.RecordPipeline``.

Encoded (not yet sealed, since sealing binds the version), opened (sealed
contents authenticated, body still encoded) and inspected (as tools show it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec

from ._envelope import EnvelopeHeader
from ._keys import Handover
from .backends.base import VersionInfo
from .codec import Codec

__all__ = ["Encoded", "Inspection", "Opened"]


@dataclass(slots=True)
class Encoded:
    """A record encoded as a payload, not yet sealed (sealing binds the version)."""

    kind: str
    format_version: int
    payload: bytes

    def handover(self) -> Handover:
        """The payload for sealing, which frees it; this record is left without it."""
        handover, self.payload = Handover(self.payload), b""
        return handover


@dataclass(frozen=True, slots=True)
class Opened:
    """An authenticated record whose body is still encoded.

    ``kind`` and ``format_version`` come from inside the seal; the body's
    decoder is chosen from them, never from the unauthenticated copy the
    backend keeps beside the blob.
    """

    info: VersionInfo
    codec: Codec
    kind: str
    format_version: int
    body: msgspec.Raw


@dataclass(frozen=True, slots=True)
class Inspection:
    """One record as a tool sees it: typed if its kind is registered, and its blob's header."""

    info: VersionInfo
    record: Any
    typed: bool
    header: EnvelopeHeader
