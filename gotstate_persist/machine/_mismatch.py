"""Why a snapshot does not fit a machine, told in a StructureMismatch.

A refused restore is something the user must act on (rebuild the machine
like the saved one, or register or fix a structure migration), so the error
names the differences, both fingerprints and the next step; the plan and the
structure migration both report through here, in the same words.
"""

from __future__ import annotations

from ..errors import StructureMismatch
from ..formats.machine import MachineSnapshot, SubmachineSnapshot, decode_structure
from ..formats.structure import Chain, Migrated, chain_text
from ._fingerprint import Shape
from ._tree import relations

__all__ = ["migration_mismatch", "mismatch"]

#: At most this many differences (or state names) are spelled out in a message.
_MAX_REPORTED = 8


def mismatch(
    snapshot: MachineSnapshot | SubmachineSnapshot,
    shape: Shape,
    path: str,
    advice: str | None = None,
) -> StructureMismatch:
    """The snapshot's structure differs from the machine's (``path``: which submachine)."""

    stored = relations(decode_structure(snapshot))
    live = relations(shape.structure)
    differences: list[str] = []
    if snapshot.machine_type != shape.summary["type"]:
        differences.append(
            f"snapshot is of a {snapshot.machine_type}, the machine is a {shape.summary['type']}"
        )
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
    if advice is None:
        advice = (
            "Restore into a machine built like the saved one, or register a structure "
            "migration: formats.register_structure_migration(from_fingerprint=<the snapshot "
            "fingerprint>, renames={old: new}, removed={old: destination})."
        )
    return StructureMismatch(
        f"the snapshot does not fit {where}this machine: {'; '.join(shown)}. Snapshot "
        f"fingerprint {snapshot.fingerprint}, machine fingerprint {shape.fingerprint}. "
        f"{advice}",
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
