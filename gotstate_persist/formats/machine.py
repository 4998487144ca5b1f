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

Version 2 also records the initial states and the transitions, which the
``structure`` fields leave out (:class:`StateTree`, states by index, so no
name is stored twice), so a refused restore can name every difference. The
tree is one opaque byte string in the snapshot, decoded only when a mismatch
needs explaining, by :func:`decode_tree`: through the bounded codec (size and
depth checked first), then strictly (its own schema, flat and four levels
deep, then every length and index checked against the structure). Whether a
restore may ignore a fingerprint difference is decided from
``states_fingerprint`` (the digest of the state tree) alone, so restores
never pay for reading the tree.
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
    "MachineTree",
    "SnapshotFormat",
    "StateTree",
    "Structure",
    "SubmachineSnapshot",
    "TreeView",
    "decode_structure",
    "decode_tree",
    "encode_structure",
    "encode_tree",
    "tree_view",
]

MACHINE_KIND = "gotstate.machine"
MACHINE_FORMAT_VERSION = 2

#: Containers around the top machine's state data in a stored payload:
#: payload tuple, snapshot, data map, tagged data dict.
TOP_DATA_NESTING = 4
#: ... and around a submachine's: payload tuple, snapshot, submachines list,
#: submachine snapshot, data map, tagged data dict.
SUB_DATA_NESTING = 6

_TREE_MALFORMED = "machine snapshot state tree is malformed: "


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


class MachineTree(msgspec.Struct, array_like=True, frozen=True, forbid_unknown_fields=True):
    """What one machine's :class:`Structure` leaves out: initial states and transitions.

    Every state is its index in the names of the structure stored beside it
    (the snapshot's or its submachine's), so no name is stored twice.
    ``initial[i]`` is the index of state ``i``'s initial state (-1: none; only
    composites have one), ``root_initial`` the machine's own. Transitions are
    sorted by source: state ``i`` is the source of the next ``out_degree[i]``
    of them, transition ``j`` goes to ``targets[j]`` with ``priorities[j]``.
    gotstate transitions carry no event name (guards, which are code, decide
    which events they take), so source, target and priority are what tells
    them apart, as in the fingerprint. Guards and actions are never recorded.
    """

    initial: list[int]
    root_initial: int
    out_degree: list[int]
    targets: list[int]
    priorities: list[int]


class StateTree(msgspec.Struct, array_like=True, frozen=True, forbid_unknown_fields=True):
    """The machine saved, then each of its (nested) submachines in snapshot order.

    ``machines[k]`` (k >= 1) belongs to ``submachines[k - 1]``. A flat list,
    not a recursion: the schema bounds its own depth.
    """

    machines: list[MachineTree]


class TreeView(NamedTuple):
    """One machine of a state tree, read: a :class:`MachineTree` with its structure.

    Not stored; what :func:`decode_tree` returns and a recorded tree is
    compared as. ``sources[j]`` is transition ``j``'s source (expanded from
    ``out_degree``); ``path`` is () for the machine saved.
    """

    path: tuple[str, ...]
    names: list[str]
    parents: list[int]
    composite: list[bool]
    initial: list[int]
    root_initial: int
    sources: list[int]
    targets: list[int]
    priorities: list[int]


class MachineSnapshotV2(MachineSnapshot, frozen=True, forbid_unknown_fields=True):
    """Version 2: a snapshot says how much of its key's journal it covers, and its tree.

    ``journal_seq`` is the sequence number of the newest journal entry whose
    event the snapshot already contains (0: none). Recovery replays only the
    entries after it, so a snapshot written after a journal append never
    makes an event count twice.

    ``states_fingerprint`` is ``fingerprint(machine, part="states")`` of the
    machine saved: a restore into a machine with a different structure
    fingerprint but this state-tree digest needs no structure migration.
    ``tree`` is a :class:`StateTree` encoded as msgpack bytes (read with
    :func:`decode_tree`), there to name every difference when a restore is
    refused. Both are empty ("not recorded") in snapshots upcast from version 1.
    """

    journal_seq: int = 0
    states_fingerprint: str = ""
    tree: bytes = b""


def _v1_to_v2(data: Any) -> Any:
    """A version 1 snapshot predates the journal and records no state tree."""
    if not isinstance(data, dict):
        raise FormatError("a version 1 machine snapshot must be a map")
    return {**data, "journal_seq": 0, "states_fingerprint": "", "tree": b""}


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


def encode_tree(machines: list[MachineTree]) -> bytes:
    """The byte form stored in :attr:`MachineSnapshotV2.tree` (machines in snapshot order)."""
    return MSGPACK.encode(StateTree(machines=machines))


def decode_tree(snapshot: MachineSnapshot | SubmachineSnapshot) -> list[TreeView] | None:
    """Read a snapshot's recorded state tree, machine saved first: None if it records none.

    Bounded (the codec checks size and depth before decoding) and strict:
    ``FormatError`` if the bytes do not decode as a :class:`StateTree`, if it
    records another number of machines than the snapshot holds, if a list
    has the wrong length or an index points outside its machine's states.
    """
    if not isinstance(snapshot, MachineSnapshotV2) or not snapshot.tree:
        return None
    tree = MSGPACK.decode(snapshot.tree, StateTree)
    owners: list[tuple[tuple[str, ...], MachineSnapshot | SubmachineSnapshot]] = [
        ((), snapshot),
        *((tuple(sub.path), sub) for sub in snapshot.submachines),
    ]
    if len(tree.machines) != len(owners):
        raise FormatError(
            f"{_TREE_MALFORMED}it records {len(tree.machines)} machines, the snapshot holds "
            f"{len(owners)}"
        )
    return [
        tree_view(path, decode_structure(owner), machine)
        for (path, owner), machine in zip(owners, tree.machines, strict=True)
    ]


def tree_view(path: tuple[str, ...], structure: Structure, machine: MachineTree) -> TreeView:
    """``machine`` read with the ``structure`` stored beside it; ``FormatError`` if at odds."""
    size = len(structure.names)
    degrees = machine.out_degree
    if not (
        len(machine.initial) == len(degrees) == size
        and len(machine.targets) == len(machine.priorities)
    ):
        raise FormatError(_TREE_MALFORMED + "its lists do not match the machine's states")
    if any(degree < 0 for degree in degrees) or sum(degrees) != len(machine.targets):
        raise FormatError(_TREE_MALFORMED + "its transition counts do not add up")
    for index in (*machine.initial, machine.root_initial):
        if not -1 <= index < size:
            raise FormatError(_TREE_MALFORMED + "an initial state is out of range")
    if any(not 0 <= index < size for index in machine.targets):
        raise FormatError(_TREE_MALFORMED + "a transition's target is out of range")
    return TreeView(
        path=path,
        names=structure.names,
        parents=structure.parents,
        composite=structure.composite,
        initial=machine.initial,
        root_initial=machine.root_initial,
        sources=[source for source, degree in enumerate(degrees) for _ in range(degree)],
        targets=machine.targets,
        priorities=machine.priorities,
    )
