"""The built-in record format of a machine snapshot (kind ``gotstate.machine``).

These Structs are a stored format: a new field or meaning is a new format
version with an upcaster, never an edit of version 1. State data is kept in
the tagged form of :mod:`gotstate_persist.formats._values`: scalars and
arrays only.

The schema bounds its own nesting. State data is typed as a union nested
exactly as deep as the 64-level limit allows at that place in the payload,
and submachines are a flat list rather than a recursion, so msgspec's typed
decode (in C) refuses anything deeper the moment it reaches it. A load of a
machine snapshot at the default limit therefore needs no separate Python
pre-scan (see ``Codec.decode(bounded_type=True)``); a test holds the two to
the same verdict.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple, Union

import msgspec

from ..codec import MAX_DEPTH, MSGPACK
from ..errors import FormatError

__all__ = [
    "MACHINE_FORMAT_VERSION",
    "MACHINE_KIND",
    "SNAPSHOT_FORMATS",
    "SUB_DATA_NESTING",
    "TOP_DATA_NESTING",
    "MachineSnapshot",
    "MachineSnapshotV2",
    "SnapshotFormat",
    "Structure",
    "SubmachineSnapshot",
    "decode_structure",
    "encode_structure",
]

MACHINE_KIND = "gotstate.machine"
MACHINE_FORMAT_VERSION = 2

#: Containers around the top machine's state data in a stored payload:
#: payload tuple, snapshot, data map, tagged data dict.
TOP_DATA_NESTING = 4
#: ... and around a submachine's: payload tuple, snapshot, submachines list,
#: submachine snapshot, data map, tagged data dict.
SUB_DATA_NESTING = 6


def _bounded_value(levels: int) -> Any:
    """A tagged value with at most ``levels`` nested arrays (a msgspec type)."""
    value: Any = Union[None, bool, int, float, str]  # noqa: UP007 - built at run time
    for _ in range(levels):
        value = Union[None, bool, int, float, str, list[value]]  # noqa: UP007
    return value


if TYPE_CHECKING:
    TopValue = Any
    SubValue = Any
else:
    TopValue = _bounded_value(MAX_DEPTH - TOP_DATA_NESTING)
    SubValue = _bounded_value(MAX_DEPTH - SUB_DATA_NESTING)


class Structure(msgspec.Struct, array_like=True, frozen=True, forbid_unknown_fields=True):
    """The machine's states as parallel lists, so a mismatch can be explained.

    ``parents[i]`` is the index of state ``names[i]``'s parent, -1 at the top.
    The digest of the full structure (transitions included) is the snapshot's
    ``fingerprint``; this part only serves error messages and migrations.
    """

    names: list[str]
    parents: list[int]
    composite: list[bool]


class SubmachineSnapshot(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One submachine's state; ``path`` names the composite states leading to it."""

    path: list[str]
    machine_type: str
    fingerprint: str
    started: bool
    current: str | None
    history: dict[str, str]
    structure: bytes
    data: dict[str, list[SubValue]]


class MachineSnapshot(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Everything needed to put a machine of the same structure back where it was.

    ``data`` maps a state name to its data in tagged form, for states that
    hold data only; ``history`` maps a composite state to its last active
    descendant; ``submachines`` lists every (nested) submachine, outermost
    first, each with the path of composite state names that leads to it.

    ``structure`` is a :class:`Structure` encoded as msgpack bytes. It is
    needed only when a restore is refused (to name the differences) or
    migrated, so it travels as one opaque byte string: loading skips it in
    one step instead of building three lists of every state on every restore.
    :func:`decode_structure` reads it (bounded, strict).
    """

    machine_type: str
    fingerprint: str
    started: bool
    current: str | None
    history: dict[str, str]
    structure: bytes
    data: dict[str, list[TopValue]]
    submachines: list[SubmachineSnapshot] = []


class MachineSnapshotV2(MachineSnapshot, frozen=True, forbid_unknown_fields=True):
    """Version 2: a snapshot also says how much of its key's journal it covers.

    ``journal_seq`` is the sequence number of the newest journal entry whose
    event the snapshot already contains (0: none). Recovery replays only the
    entries after it, so a snapshot written after a journal append never
    makes an event count twice.
    """

    journal_seq: int = 0


def _v1_to_v2(data: Any) -> Any:
    """A version 1 snapshot predates the journal: it covers no entry."""
    if not isinstance(data, dict):
        raise FormatError("a version 1 machine snapshot must be a map")
    return {**data, "journal_seq": 0}


class SnapshotFormat(NamedTuple):
    """One stored version of the snapshot format, registered in every FormatRegistry.

    ``upcast`` turns the previous version's data (plain builtins) into this
    version's, as for any registered kind; version 1 has none.
    """

    version: int
    record_type: type[MachineSnapshot]
    upcast: Callable[[Any], Any] | None = None


#: Every snapshot format version this code reads, oldest first; the last one
#: is what ``save_machine`` writes and the only one restored without the
#: general (upcasting) path. A new version is added here, as a subclass of
#: the newest with an upcaster from it; the released entries never change.
SNAPSHOT_FORMATS: tuple[SnapshotFormat, ...] = (
    SnapshotFormat(1, MachineSnapshot),
    SnapshotFormat(2, MachineSnapshotV2, _v1_to_v2),
)


def encode_structure(structure: Structure) -> bytes:
    """The byte form stored in :attr:`MachineSnapshot.structure`."""
    return MSGPACK.encode(structure)


def decode_structure(snapshot: MachineSnapshot | SubmachineSnapshot) -> Structure:
    """Read a snapshot's structure; ``FormatError`` if it is malformed."""
    structure = MSGPACK.decode(snapshot.structure, Structure)
    size = len(structure.names)
    if len(structure.parents) != size or len(structure.composite) != size:
        raise FormatError("machine snapshot structure is malformed: its lists differ in length")
    return structure
