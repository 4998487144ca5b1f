"""A snapshot whose transitions differ but whose state tree matches: restore it as is.

A snapshot holds the active state, history and data, all by state name, so
what it needs from the machine is the state tree (names, parents,
composite-ness, initial states, submachines), not the transitions. A deploy
that only changes transitions therefore restores without a structure
migration. This module owns that decision and its INFO log line, logged once
per (snapshot, machine) fingerprint pair so a fleet restoring many snapshots
of one old structure does not flood the log.

Snapshots of format version 2 record the digest of their state tree
(``states_fingerprint``, what ``fingerprint(machine, part="states")`` gives),
so the decision is one comparison of two digests and the recorded tree is not
read. Snapshots written before record only each machine's state names,
parents and composite-ness (the ``structure`` field), so for them exactly
that, and the set of submachines, is compared.

When a restore is refused, :func:`tree_differences` compares the recorded
tree with the machine's, item by item, for the error message.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Sequence
from typing import Any, NamedTuple

import msgspec

from ..formats.machine import (
    MachineSnapshot,
    MachineSnapshotV2,
    Structure,
    SubmachineSnapshot,
    TreeView,
    decode_structure,
)
from ._fingerprint import shape

__all__ = [
    "KIND_COMPOSITE",
    "KIND_INITIAL",
    "KIND_PARENT",
    "KIND_STATES",
    "KIND_SUBMACHINE",
    "KIND_TRANSITIONS",
    "MAX_NAMED",
    "TreeDifference",
    "relations",
    "transitions_only",
    "tree_differences",
]

logger = logging.getLogger(__name__)

#: Fingerprint pairs already logged; forgotten when this many accumulate, so
#: the set stays bounded however many structures a long-lived process meets.
_MAX_LOGGED_PAIRS = 1024
_logged: set[tuple[str, str]] = set()
_logged_lock = threading.Lock()

#: At most this many names (or transitions) are spelled out in one difference.
MAX_NAMED = 20

# What a difference is about; the message bounds each kind separately.
KIND_STATES = "states"
KIND_PARENT = "parent differences"
KIND_COMPOSITE = "composite-ness differences"
KIND_INITIAL = "initial-state differences"
KIND_SUBMACHINE = "submachine differences"
KIND_TRANSITIONS = "transitions"

_Relations = dict[str, tuple[str | None, bool]]
_Edge = tuple[str, str, int]


class TreeDifference(NamedTuple):
    """One difference between a recorded state tree and the machine's.

    ``path`` is the submachine it is in ("" for the machine restored into,
    else composite state names joined by "/"), ``kind`` one of the ``KIND_*``
    constants. Transition differences never prevent a restore on their own.
    """

    path: str
    kind: str
    text: str


def relations(structure: Structure) -> dict[str, tuple[str | None, bool]]:
    """Each state name with its parent's name (None at the top) and composite-ness."""
    return _relations(structure.names, structure.parents, structure.composite)


def _relations(
    names: Sequence[str], parents: Sequence[int], composite: Sequence[bool]
) -> _Relations:
    return {
        name: (names[parent] if 0 <= parent < len(names) else None, is_composite)
        for name, parent, is_composite in zip(names, parents, composite, strict=False)
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
    recorded = snapshot.states_fingerprint if isinstance(snapshot, MachineSnapshotV2) else ""
    if recorded:
        if recorded != derived.states_fingerprint:
            return None
    elif not _same_tree(snapshot, derived.structure) or any(
        not _same_tree(sub, shape(live[key]).structure) for key, sub in stored.items()
    ):
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


# Explaining a refused restore.


def tree_differences(stored: list[TreeView], live: list[TreeView]) -> list[TreeDifference]:
    """Every difference between a recorded tree and the machine's, in a fixed order.

    The machine restored into first, with the submachines only one side has
    (named once by their path: those inside them are not named again), then
    the submachines both have, by path.
    """
    stored_by = {view.path: view for view in stored}
    live_by = {view.path: view for view in live}
    found: list[TreeDifference] = []
    for path in sorted(set(stored_by) & set(live_by)):
        where = "/".join(path)
        found.extend(
            TreeDifference(where, kind, text)
            for kind, text in _machine_differences(stored_by[path], live_by[path])
        )
        if not path:  # submachines present on one side only: told about at the top
            found.extend(_submachine_differences(set(stored_by), set(live_by)))
    return found


def _submachine_differences(
    stored: set[tuple[str, ...]], live: set[tuple[str, ...]]
) -> list[TreeDifference]:
    found = []
    for side, paths, other in (("snapshot", stored, live), ("machine", live, stored)):
        for path in sorted(paths - other):
            if path[:-1] in other:  # the outermost one only
                found.append(
                    TreeDifference(
                        "",
                        KIND_SUBMACHINE,
                        f"submachines differ: {'/'.join(path)!r} holds one only in the {side}",
                    )
                )
    return found


def _machine_differences(stored: TreeView, live: TreeView) -> list[tuple[str, str]]:
    old = _relations(stored.names, stored.parents, stored.composite)
    new = _relations(live.names, live.parents, live.composite)
    found: list[tuple[str, str]] = []
    for side, names in (
        ("snapshot", sorted(set(old) - set(new))),
        ("machine", sorted(set(new) - set(old))),
    ):
        if names:
            found.append((KIND_STATES, f"states only in the {side}: {_named(names)}"))
    common = sorted(set(old) & set(new))
    for name in common:
        (old_parent, old_composite), (new_parent, new_composite) = old[name], new[name]
        if old_parent != new_parent:
            found.append(
                (
                    KIND_PARENT,
                    f"state {name!r} has parent {old_parent!r} in the snapshot, "
                    f"{new_parent!r} in the machine",
                )
            )
        if old_composite != new_composite:
            sides = ("snapshot", "machine") if old_composite else ("machine", "snapshot")
            found.append(
                (
                    KIND_COMPOSITE,
                    f"state {name!r} is composite in the {sides[0]}, not the {sides[1]}",
                )
            )
    old_initial, new_initial = _initials(stored), _initials(live)
    for composite in [None, *common]:
        before, after = old_initial.get(composite), new_initial.get(composite)
        if before != after:
            of = "the machine" if composite is None else repr(composite)
            found.append(
                (
                    KIND_INITIAL,
                    f"initial state of {of} is {_state(before)} in the snapshot, "
                    f"{_state(after)} in the machine",
                )
            )
    old_edges, new_edges = _edges(stored), _edges(live)
    for side, edges in (("snapshot", old_edges - new_edges), ("machine", new_edges - old_edges)):
        if edges:
            found.append(
                (KIND_TRANSITIONS, f"transitions only in the {side}: {_transitions(edges)}")
            )
    return found


def _initials(tree: TreeView) -> dict[str | None, str]:
    """Each composite's initial state by name, the machine's own under None."""
    names = tree.names
    found: dict[str | None, str] = {
        name: names[index] for name, index in zip(names, tree.initial, strict=True) if index >= 0
    }
    if tree.root_initial >= 0:
        found[None] = names[tree.root_initial]
    return found


def _edges(tree: TreeView) -> Counter[_Edge]:
    names = tree.names
    return Counter(
        (names[source], names[target], priority)
        for source, target, priority in zip(
            tree.sources, tree.targets, tree.priorities, strict=True
        )
    )


def _state(name: str | None) -> str:
    return "none" if name is None else repr(name)


def _named(names: Sequence[str]) -> str:
    """Up to :data:`MAX_NAMED` names, then how many more."""
    return _bounded([repr(name) for name in names])


def _transitions(edges: Counter[_Edge]) -> str:
    texts = []
    for (source, target, priority), count in sorted(edges.items()):
        text = f"{source!r} -> {target!r}"
        if priority:
            text += f" (priority {priority})"
        if count > 1:
            text += f" x{count}"
        texts.append(text)
    return _bounded(texts)


def _bounded(texts: list[str]) -> str:
    shown = ", ".join(texts[:MAX_NAMED])
    if len(texts) > MAX_NAMED:
        shown += f" and {len(texts) - MAX_NAMED} more"
    return shown
