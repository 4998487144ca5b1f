"""A snapshot of a differently built machine, mapped onto this machine's structure.

When the snapshot's fingerprint differs from the machine's, the registered
structure migrations (:mod:`gotstate_persist.formats.structure`, which maps
names only) decide whether and how its state fits. This module applies them
to the snapshot in memory, top machine and submachines alike, and only reads
the machine: the result goes through the usual plan and commit of a restore,
so a migrated restore is exactly as all-or-nothing as any other.
"""

from __future__ import annotations

from typing import Any

import msgspec

from ..errors import FormatError, StructureMismatch
from ..formats.machine import MachineSnapshot, SubmachineSnapshot, decode_structure
from ..formats.structure import (
    Chain,
    Migrated,
    StructureMigrations,
    apply_chain,
    chain_text,
    map_name,
)
from ._fingerprint import Shape, shape
from ._gotstate import initial_states
from ._mismatch import migration_mismatch, mismatch

__all__ = ["migrate_snapshot"]


def migrate_snapshot(
    machine: Any,
    snapshot: MachineSnapshot,
    migrations: StructureMigrations | None,
    live: dict[tuple[str, ...], Any],
) -> MachineSnapshot:
    """The snapshot mapped onto this machine's structure (in memory), or StructureMismatch.

    Only reads the machine: the result goes through the usual plan/commit.
    ``live`` is the machine's submachines by path.
    """
    derived = shape(machine)
    if migrations is None or snapshot.machine_type != derived.summary["type"]:
        raise mismatch(snapshot, derived, "")
    chains = migrations.plan(snapshot.fingerprint, derived.fingerprint)
    if not chains:
        registered = migrations.registered_from(snapshot.fingerprint)
        advice = None
        if registered:
            advice = (
                "Structure migrations are registered for the snapshot's structure ("
                + "; ".join(m.describe() for m in registered)
                + ") but none leads to this machine; register one from_fingerprint="
                "<the snapshot fingerprint> (or give the last one's to_fingerprint= so "
                "that migrations chain)."
            )
        raise mismatch(snapshot, derived, "", advice)
    old = decode_structure(snapshot)
    fits: list[tuple[Chain, Migrated]] = []
    failed: tuple[Chain, Migrated] | None = None
    for chain in chains:
        if fits and len(chain) > len(fits[0][0]):
            break  # only the shortest chains that fit compete
        result = apply_chain(
            chain,
            structure=old,
            current=snapshot.current,
            history=snapshot.history,
            data=snapshot.data,
            target=derived.structure,
            complete=True,
        )
        if result.differences:
            failed = failed or (chain, result)
        else:
            fits.append((chain, result))
    if not fits:
        assert failed is not None  # chains is not empty
        raise migration_mismatch(snapshot, derived, *failed, path="")
    if len(fits) > 1:
        raise StructureMismatch(
            "structure migrations are ambiguous: more than one chain of "
            f"{len(fits[0][0])} migrations fits this machine ({chain_text(fits[0][0])}; "
            f"{chain_text(fits[1][0])}). Give each migration its to_fingerprint=, or register "
            "only one way from the old structure to the new one.",
            snapshot_fingerprint=snapshot.fingerprint,
            machine_fingerprint=derived.fingerprint,
            differences=("ambiguous structure migrations",),
        )
    chain, result = fits[0]
    return msgspec.structs.replace(
        snapshot,
        fingerprint=derived.fingerprint,
        structure=derived.structure_blob,
        current=result.current,
        history=result.history,
        data=result.data,
        submachines=_migrate_submachines(snapshot, derived, chain, live),
    )


def _migrate_submachines(
    snapshot: MachineSnapshot, derived: Shape, chain: Chain, live: dict[tuple[str, ...], Any]
) -> list[SubmachineSnapshot]:
    """Each stored submachine mapped through ``chain``, plus defaults for added ones.

    A submachine's states are merged into its parent machine's graph under the
    same names, so the migration registered for the top machine covers them,
    and the path (composite state names) is mapped like any name. A submachine
    whose composite was removed is dropped; one the new machine added gets the
    state of a freshly built machine (not started, at its initial state, no
    data), as added states get no data.
    """
    out: list[SubmachineSnapshot] = []
    for sub in snapshot.submachines:
        mapped = [map_name(chain, name) for name in sub.path]
        key = tuple(name for name in mapped if name is not None)
        if len(key) != len(mapped):
            continue  # a composite on its path was removed, and the submachine with it
        was, now = "/".join(sub.path), "/".join(key)
        target = live.get(key)
        if target is None:
            named = f"{was!r}" if was == now else f"{was!r} (now {now!r})"
            raise StructureMismatch(
                f"the snapshot's submachine at {named} has no counterpart in this machine after "
                f"the structure migration ({chain_text(chain)}); remove its composite state in "
                f"the migration or add the submachine. Snapshot fingerprint "
                f"{snapshot.fingerprint}, machine fingerprint {derived.fingerprint}.",
                snapshot_fingerprint=snapshot.fingerprint,
                machine_fingerprint=derived.fingerprint,
                differences=(f"submachine {named} is only in the snapshot",),
            )
        sub_shape = shape(target)
        if sub.fingerprint == sub_shape.fingerprint:
            out.append(msgspec.structs.replace(sub, path=list(key)))
            continue
        if sub.machine_type != sub_shape.summary["type"]:
            raise mismatch(sub, sub_shape, now)
        result = apply_chain(
            chain,
            structure=decode_structure(sub),
            current=sub.current,
            history=sub.history,
            data=sub.data,
            target=sub_shape.structure,
            complete=False,
        )
        if result.differences:
            raise migration_mismatch(snapshot, derived, chain, result, path=now)
        out.append(
            msgspec.structs.replace(
                sub,
                path=list(key),
                fingerprint=sub_shape.fingerprint,
                structure=sub_shape.structure_blob,
                current=result.current,
                history=result.history,
                data=result.data,
            )
        )
    stored = {tuple(sub.path) for sub in out}
    if len(stored) != len(out):
        raise FormatError("the snapshot's submachines do not match the machine's")
    for key, sub in live.items():
        if key not in stored:
            out.append(_fresh_submachine(list(key), sub))
    return out


def _fresh_submachine(path: list[str], machine: Any) -> SubmachineSnapshot:
    """The state of a freshly built machine of this structure."""
    derived = shape(machine)
    initial = initial_states(machine).get(None)
    return SubmachineSnapshot(
        path=path,
        machine_type=derived.summary["type"],
        fingerprint=derived.fingerprint,
        started=False,
        current=initial.name if initial is not None else None,
        history={},
        structure=derived.structure_blob,
        data={},
    )
