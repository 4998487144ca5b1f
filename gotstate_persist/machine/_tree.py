"""A snapshot whose transitions differ but whose state tree matches: restore it as is.

A snapshot holds the active state, history and data, all by state name, so
what it needs from the machine is the state tree (names, parents,
composite-ness, initial states, submachines), not the transitions. A deploy
that only changes transitions therefore restores without a structure
migration. This module owns that decision and its INFO log line, logged once
per (snapshot, machine) fingerprint pair so a fleet restoring many snapshots
of one old structure does not flood the log.

Snapshots of format version 1 record no state-tree digest, only each
machine's state names, parents and composite-ness (the ``structure`` field),
so for them exactly that, and the set of submachines, is compared.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import msgspec

from ..formats.machine import MachineSnapshot, Structure, SubmachineSnapshot, decode_structure
from ._fingerprint import shape

__all__ = ["relations", "transitions_only"]

logger = logging.getLogger(__name__)

#: Fingerprint pairs already logged; forgotten when this many accumulate, so
#: the set stays bounded however many structures a long-lived process meets.
_MAX_LOGGED_PAIRS = 1024
_logged: set[tuple[str, str]] = set()
_logged_lock = threading.Lock()


def relations(structure: Structure) -> dict[str, tuple[str | None, bool]]:
    """Each state name with its parent's name (None at the top) and composite-ness."""
    names = structure.names
    return {
        name: (names[parent] if 0 <= parent < len(names) else None, composite)
        for name, parent, composite in zip(
            names, structure.parents, structure.composite, strict=False
        )
    }


def transitions_only(
    machine: Any, snapshot: MachineSnapshot, live: dict[tuple[str, ...], Any]
) -> MachineSnapshot | None:
    """The snapshot re-stamped with the machine's fingerprints if only transitions differ.

    None if the state trees differ (the caller then tries structure
    migrations). Only reads the machine; call with its locks held. ``live``
    is the machine's submachines by path.
    """
    derived = shape(machine)
    stored = {tuple(sub.path): sub for sub in snapshot.submachines}
    if set(stored) != set(live) or len(stored) != len(snapshot.submachines):
        return None
    if not _same_tree(snapshot, derived.structure):
        return None
    if any(not _same_tree(sub, shape(live[key]).structure) for key, sub in stored.items()):
        return None
    _log_once(snapshot.fingerprint, derived.fingerprint)
    return msgspec.structs.replace(
        snapshot,
        fingerprint=derived.fingerprint,
        submachines=[
            msgspec.structs.replace(sub, fingerprint=shape(live[tuple(sub.path)]).fingerprint)
            for sub in snapshot.submachines
        ],
    )


def _same_tree(snapshot: MachineSnapshot | SubmachineSnapshot, structure: Structure) -> bool:
    stored = decode_structure(snapshot)
    return len(stored.names) == len(structure.names) and relations(stored) == relations(structure)


def _log_once(stored: str, current: str) -> None:
    pair = (stored, current)
    with _logged_lock:
        if pair in _logged:
            return
        if len(_logged) >= _MAX_LOGGED_PAIRS:
            _logged.clear()
        _logged.add(pair)
    logger.info(
        "restoring a snapshot into a machine whose transitions differ but whose state tree "
        "matches (snapshot fingerprint %s, machine fingerprint %s); no structure migration "
        "is needed",
        stored,
        current,
    )
