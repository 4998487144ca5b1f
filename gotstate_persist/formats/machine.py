"""The built-in record format of a machine snapshot (kind ``gotstate.machine``).

These Structs are a stored format: a new field or meaning is a new format
version with an upcaster, never an edit of version 1. State data is kept in
the tagged form of :mod:`gotstate_persist.formats._values` (typed ``Any``
here; the codec's pre-scan bounds its depth and the adapter validates it).
"""

from __future__ import annotations

from typing import Any

import msgspec

__all__ = ["MACHINE_KIND", "MACHINE_FORMAT_VERSION", "MachineSnapshot", "StateRecord"]

MACHINE_KIND = "gotstate.machine"
MACHINE_FORMAT_VERSION = 1


class StateRecord(msgspec.Struct, array_like=True, frozen=True, forbid_unknown_fields=True):
    """One state: its name, its parent's name, whether composite, its data.

    ``data`` is None when the state holds no data (most states), which keeps
    large snapshots small.
    """

    name: str
    parent: str | None
    composite: bool
    data: Any = None


class MachineSnapshot(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Everything needed to put a machine of the same structure back where it was."""

    machine_type: str
    fingerprint: str
    started: bool
    current: str | None
    history: dict[str, str]
    states: list[StateRecord]
    submachines: dict[str, MachineSnapshot] = {}
