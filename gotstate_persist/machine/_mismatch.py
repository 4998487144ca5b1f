"""Why a snapshot does not fit a machine, told in a StructureMismatch.

A refused restore is something the user must act on (rebuild the machine
like the saved one, or register or fix a structure migration), so the error
names the differences, both fingerprints and the next step; the plan and the
structure migration both report through here, in the same words.

A snapshot of format version 2 records its state tree and transitions, so
the message names every state, parent, composite-ness, initial state and
submachine that differs, and the transitions that differ too (which alone
would not have refused the restore), each kind bounded. ``differences``
lists what refuses the restore (not the transitions). A snapshot written
before records names, parents and composite-ness only: its message is what it
always was. No state data ever appears in a message.
"""

from __future__ import annotations

from ..errors import FormatError, StructureMismatch
from ..formats.machine import (
    MachineSnapshot,
    SubmachineSnapshot,
    TreeView,
    decode_structure,
    decode_tree,
)
from ..formats.structure import Chain, Migrated, chain_text
from ._fingerprint import Shape
from ._tree import KIND_TRANSITIONS, MAX_NAMED, TreeDifference, relations, tree_differences

__all__ = ["migration_mismatch", "mismatch"]

#: At most this many differences (or state names) are spelled out in a message
#: about a snapshot that records no state tree.
_MAX_REPORTED = 8
#: For one that does: at most this many differences of each kind, per submachine...
_MAX_PER_KIND = MAX_NAMED
#: ... in at most this many submachines.
_MAX_SUBMACHINES = 20

_ADVICE = (
    "Restore into a machine built like the saved one, or register a structure "
    "migration: formats.register_structure_migration(from_fingerprint=<the snapshot "
    "fingerprint>, renames={old: new}, removed={old: destination})."
)
_UNEXPLAINED = (
    "the state trees differ in a way the recorded tree does not show (their digests differ)"
)


def mismatch(
    snapshot: MachineSnapshot | SubmachineSnapshot,
    shape: Shape,
    path: str,
    advice: str | None = None,
) -> StructureMismatch:
    """The snapshot's structure differs from the machine's (``path``: which submachine)."""
    try:
        tree = decode_tree(snapshot)
    except FormatError as exc:
        note = (
            " (the state tree the snapshot records cannot be read, so only state names, "
            f"parents and composite-ness were compared: {exc})"
        )
        return _names_only(snapshot, shape, path, advice, note)
    if tree is None:
        return _names_only(snapshot, shape, path, advice, "")
    return _with_tree(snapshot, tree, shape, path, advice)


def _type_difference(snapshot: MachineSnapshot | SubmachineSnapshot, shape: Shape) -> list[str]:
    if snapshot.machine_type != shape.summary["type"]:
        return [
            f"snapshot is of a {snapshot.machine_type}, the machine is a {shape.summary['type']}"
        ]
    return []


def _with_tree(
    snapshot: MachineSnapshot | SubmachineSnapshot,
    tree: list[TreeView],
    shape: Shape,
    path: str,
    advice: str | None,
) -> StructureMismatch:
    found = tree_differences(tree, shape.tree())
    refusing = [d for d in found if d.kind != KIND_TRANSITIONS]
    transitions = [d for d in found if d.kind == KIND_TRANSITIONS]
    typed = _type_difference(snapshot, shape)
    differences = [*typed, *map(_text, refusing)] or [_UNEXPLAINED]
    shown = [*typed, *_grouped(refusing)] or [_UNEXPLAINED]
    also = ""
    if transitions:
        also = (
            " Transitions differ too (on their own they would not refuse the restore): "
            + "; ".join(_grouped(transitions))
            + "."
        )
    where = f"submachine {path!r} of " if path else ""
    return StructureMismatch(
        f"the snapshot does not fit {where}this machine: {'; '.join(shown)}.{also} Snapshot "
        f"fingerprint {snapshot.fingerprint}, machine fingerprint {shape.fingerprint}. "
        f"{_ADVICE if advice is None else advice}",
        snapshot_fingerprint=snapshot.fingerprint,
        machine_fingerprint=shape.fingerprint,
        differences=tuple(differences),
    )


def _text(difference: TreeDifference) -> str:
    if difference.path:
        return f"in submachine {difference.path!r}: {difference.text}"
    return difference.text


def _grouped(found: list[TreeDifference]) -> list[str]:
    """The differences in order, each kind of each submachine cut at its bound."""
    counts: dict[tuple[str, str], int] = {}
    for difference in found:
        group = (difference.path, difference.kind)
        counts[group] = counts.get(group, 0) + 1
    paths = sorted({path for path, _ in counts if path})
    described = set(paths[:_MAX_SUBMACHINES])
    shown: list[str] = []
    seen: dict[tuple[str, str], int] = {}
    for difference in found:
        group = (difference.path, difference.kind)
        if difference.path and difference.path not in described:
            continue
        seen[group] = seen.get(group, 0) + 1
        if seen[group] <= _MAX_PER_KIND:
            shown.append(_text(difference))
        elif seen[group] == counts[group]:
            where = f" in submachine {difference.path!r}" if difference.path else ""
            shown.append(f"... and {counts[group] - _MAX_PER_KIND} more {difference.kind}{where}")
    if len(paths) > _MAX_SUBMACHINES:
        shown.append(f"... and differences in {len(paths) - _MAX_SUBMACHINES} more submachines")
    return shown


def _names_only(
    snapshot: MachineSnapshot | SubmachineSnapshot,
    shape: Shape,
    path: str,
    advice: str | None,
    note: str,
) -> StructureMismatch:
    """The message of a snapshot that records no state tree (or an unreadable one)."""
    stored = relations(decode_structure(snapshot))
    live = relations(shape.structure)
    differences = _type_difference(snapshot, shape)
    only_stored = sorted(set(stored) - set(live))
    only_live = sorted(set(live) - set(stored))
    if only_stored:
        differences.append(f"states only in the snapshot: {_names(only_stored)}")
    if only_live:
        differences.append(f"states only in the machine: {_names(only_live)}")
    for name in sorted(set(stored) & set(live)):
        (old_parent, old_comp), (new_parent, new_comp) = stored[name], live[name]
        if old_parent != new_parent:
            differences.append(
                f"state {name!r} has parent {old_parent!r} in the snapshot, "
                f"{new_parent!r} in the machine"
            )
        if old_comp != new_comp:
            differences.append(f"state {name!r} is composite in only one of them")
    if not differences:
        differences.append("initial states, transitions or submachines differ")
    shown = differences[:_MAX_REPORTED]
    if len(differences) > _MAX_REPORTED:
        shown.append(f"... and {len(differences) - _MAX_REPORTED} more")
    where = f"submachine {path!r} of " if path else ""
    return StructureMismatch(
        f"the snapshot does not fit {where}this machine: {'; '.join(shown)}{note}. Snapshot "
        f"fingerprint {snapshot.fingerprint}, machine fingerprint {shape.fingerprint}. "
        f"{_ADVICE if advice is None else advice}",
        snapshot_fingerprint=snapshot.fingerprint,
        machine_fingerprint=shape.fingerprint,
        differences=tuple(differences),
    )


def migration_mismatch(
    snapshot: MachineSnapshot, shape: Shape, chain: Chain, result: Migrated, *, path: str
) -> StructureMismatch:
    """The snapshot still does not fit after ``chain`` mapped it (``result``)."""
    differences = result.differences
    shown = differences[:_MAX_REPORTED]
    if len(differences) > _MAX_REPORTED:
        shown.append(f"... and {len(differences) - _MAX_REPORTED} more")
    where = f"submachine {path!r} of " if path else ""
    return StructureMismatch(
        f"the snapshot does not fit {where}this machine even after the structure migration "
        f"({chain_text(chain)}): {'; '.join(shown)}. Snapshot fingerprint "
        f"{snapshot.fingerprint}, machine fingerprint {shape.fingerprint}. Fix the "
        "migration's renames/removed; nothing was changed.",
        snapshot_fingerprint=snapshot.fingerprint,
        machine_fingerprint=shape.fingerprint,
        differences=tuple(differences),
    )


def _names(names: list[str]) -> str:
    shown = ", ".join(repr(n) for n in names[:_MAX_REPORTED])
    if len(names) > _MAX_REPORTED:
        shown += f" and {len(names) - _MAX_REPORTED} more"
    return shown
