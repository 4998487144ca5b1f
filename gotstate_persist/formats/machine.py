"""The built-in record format of a machine snapshot (kind ``gotstate.machine``).

These Structs are a stored format: a new field or meaning is a new format
version with an upcaster, never an edit of version 1. State data is kept in
the tagged form of :mod:`gotstate_persist.formats._values` (typed ``Any``
here; the codec's pre-scan bounds its depth and the adapter validates it).
"""

from __future__ import annotations

from typing import Any

import msgspec

from ..codec import MSGPACK
from ..errors import FormatError

__all__ = [
    "MACHINE_FORMAT_VERSION",
    "MACHINE_KIND",
    "MachineSnapshot",
    "Structure",
    "decode_structure",
    "encode_structure",
]

MACHINE_KIND = "gotstate.machine"
MACHINE_FORMAT_VERSION = 1


class Structure(msgspec.Struct, array_like=True, frozen=True, forbid_unknown_fields=True):
    """The machine's states as parallel lists, so a mismatch can be explained.

    ``parents[i]`` is the index of state ``names[i]``'s parent, -1 at the top.
    The digest of the full structure (transitions included) is the snapshot's
    ``fingerprint``; this part only serves error messages and migrations.
    """

    names: list[str]
    parents: list[int]
    composite: list[bool]


class MachineSnapshot(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Everything needed to put a machine of the same structure back where it was.

    ``structure`` is a :class:`Structure` encoded as msgpack bytes. It is
    needed only when a restore is refused (to name the differences) or
    migrated, so it travels as one opaque byte string: loading skips it in
    one step instead of pre-scanning and building three lists of every state
    on every restore. :func:`decode_structure` reads it (bounded, strict).

    ``data`` maps a state name to its data in tagged form, for states that
    hold data only; ``history`` maps a composite state to its last active
    descendant; ``submachines`` are keyed by their composite state's name.
    """

    machine_type: str
    fingerprint: str
    started: bool
    current: str | None
    history: dict[str, str]
    structure: bytes
    data: dict[str, Any]
    submachines: dict[str, MachineSnapshot] = {}


def encode_structure(structure: Structure) -> bytes:
    """The byte form stored in :attr:`MachineSnapshot.structure`."""
    return MSGPACK.encode(structure)


def decode_structure(snapshot: MachineSnapshot) -> Structure:
    """Read a snapshot's structure; ``FormatError`` if it is malformed."""
    structure = MSGPACK.decode(snapshot.structure, Structure)
    size = len(structure.names)
    if len(structure.parents) != size or len(structure.composite) != size:
        raise FormatError("machine snapshot structure is malformed: its lists differ in length")
    return structure
