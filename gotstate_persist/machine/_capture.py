"""Capture: a live machine (and its submachines) into a MachineSnapshot.

Capture owns two promises of a save: the snapshot is consistent (taken while
the machine's transition and graph locks are held, each state's data copied
under its data lock), and its state data fits the depth limit (each state's
data gets the budget that is left after the snapshot's own containers, so the
codec need not scan the payload again).

A snapshot of format version 2 or later also records the machine's state
tree: its digest (``states_fingerprint``) and the encoded tree, both cached
with the machine's :class:`~._fingerprint.Shape`, so capturing an unchanged
machine again only copies bytes it already has.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec
from gotstate.core.state_machine import StateMachine

from .._gcpause import gc_paused
from ..errors import FormatError, InvalidArgument
from ..formats._state_data import encode_items
from ..formats._values import StructKind, UnsupportedValue
from ..formats.machine import (
    SUB_DATA_NESTING,
    TOP_DATA_NESTING,
    MachineSnapshot,
    MachineSnapshotV2,
    SubmachineSnapshot,
)
from ._fingerprint import shape
from ._gotstate import (
    all_submachines,
    current_state,
    data_items,
    data_state_count,
    has_submachines,
    history_names,
    is_started,
    locked,
)

__all__ = ["GC_PAUSE_MIN_STATES", "capture"]

#: Machines with fewer states (holding data) allocate too little while being
#: captured or applied for pausing the garbage collector to pay off.
GC_PAUSE_MIN_STATES = 64


def capture(
    machine: StateMachine,
    *,
    struct_kind: StructKind,
    max_depth: int,
    snapshot_type: type[MachineSnapshot] = MachineSnapshot,
    encode_part: Callable[[object], msgspec.Raw] | None = None,
) -> MachineSnapshot:
    """Take a consistent snapshot while holding the machine's transition lock.

    ``snapshot_type`` builds the root snapshot, so a later version of the
    format (a subclass of :class:`MachineSnapshot` whose added fields have
    defaults) is captured by the same code; from version 2 on
    (:class:`MachineSnapshotV2` and its subclasses) it records the state tree.

    ``encode_part`` (the store's ``codec.encode_part``): each state's data is
    encoded as soon as it is tagged, so a save never holds the whole tagged
    form, several times the size of its bytes, at once. Such a snapshot is
    only for encoding: it holds ``msgspec.Raw`` bytes where state data was.
    """
    with locked(machine), gc_paused(_is_large(machine)):
        top = _fields(machine, struct_kind, max_depth - TOP_DATA_NESTING, encode_part)
        if issubclass(snapshot_type, MachineSnapshotV2):
            derived = shape(machine)  # cached by _fields
            top["states_fingerprint"] = derived.states_fingerprint
            top["tree"] = derived.tree_blob()
        subs = [
            SubmachineSnapshot(
                path=path,
                **_fields(sub, struct_kind, max_depth - SUB_DATA_NESTING, encode_part),
            )
            for path, sub in all_submachines(machine)
        ]
        return snapshot_type(**top, submachines=subs)


def _is_large(machine: Any) -> bool:
    return data_state_count(machine) > GC_PAUSE_MIN_STATES or has_submachines(machine)


def _fields(
    machine: Any,
    struct_kind: StructKind,
    budget: int,
    encode_part: Callable[[object], msgspec.Raw] | None,
) -> dict[str, Any]:
    """The snapshot fields of one machine (its own, not its submachines')."""
    if budget < 0:  # the snapshot's own fixed containers would cross the depth limit
        raise FormatError("the depth limit is too low to save this machine; raise it")
    derived = shape(machine)
    current = current_state(machine)
    return {
        "machine_type": derived.summary["type"],
        "fingerprint": derived.fingerprint,
        "started": is_started(machine),
        "current": current.name if current is not None else None,
        "history": history_names(machine),
        "structure": derived.structure_blob,
        "data": _data(machine, struct_kind, budget, encode_part),
    }


def _data(
    machine: Any,
    struct_kind: StructKind,
    budget: int,
    encode_part: Callable[[object], msgspec.Raw] | None,
) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for state, items in data_items(machine):
        tagged = _encode_data(state.name, items, struct_kind, budget)
        data[state.name] = tagged if encode_part is None else encode_part(tagged)
    return data


def _encode_data(
    state: str, items: list[tuple[Any, Any]], struct_kind: StructKind, budget: int
) -> list[object]:
    try:
        return encode_items(items, budget, struct_kind)
    except (UnsupportedValue, InvalidArgument):  # InvalidArgument: unregistered Struct
        pass
    # again item by item, only to name the data key that cannot be saved
    for key, value in items:
        try:
            encode_items([(key, value)], budget, struct_kind)
        except (UnsupportedValue, InvalidArgument) as exc:
            raise FormatError(f"cannot save state {state!r}, data key {key!r}: {exc}") from None
    raise AssertionError("unreachable: a failing item was found above")  # pragma: no cover
