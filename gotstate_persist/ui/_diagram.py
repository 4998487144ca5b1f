"""A machine snapshot's state tree, laid out for drawing as nested statechart boxes.

The snapshot already stores what the drawing needs: the states with their
parents and which are composite (``structure``), the active state
(``current``), each composite's history (``history``) and, from format
version 2 on, the initial states and transitions (``tree``). Each box gets
the classes the page styles: ``active`` for the current state, ``on-path``
for its ancestors, ``history`` for a state some composite remembers,
``initial`` for a composite's (or the machine's) initial state. A snapshot
of format 1, or one whose tree cannot be read, is drawn without the
initial states and transitions rather than not at all.
"""

from __future__ import annotations

from typing import Any

from ..errors import FormatError
from ..formats import MachineSnapshot, SubmachineSnapshot
from ..formats.machine import Structure, TreeView, decode_structure, decode_tree

__all__ = ["diagrams"]


def diagrams(snapshot: MachineSnapshot) -> list[dict[str, Any]]:
    """One drawing per machine in the snapshot: the machine saved, then each submachine."""
    try:
        trees: list[TreeView] | None = decode_tree(snapshot)
    except FormatError:
        trees = None
    owners: list[MachineSnapshot | SubmachineSnapshot] = [snapshot, *snapshot.submachines]
    drawn = []
    for index, owner in enumerate(owners):
        tree = trees[index] if trees is not None else None
        path = "/".join(owner.path) if isinstance(owner, SubmachineSnapshot) else ""
        drawn.append(_drawing(owner, decode_structure(owner), tree, path))
    return drawn


def _ancestors(structure: Structure, index: int) -> set[int]:
    found: set[int] = set()
    parent = structure.parents[index]
    while 0 <= parent < len(structure.names) and parent not in found:
        found.add(parent)
        parent = structure.parents[parent]
    return found


def _drawing(
    owner: MachineSnapshot | SubmachineSnapshot,
    structure: Structure,
    tree: TreeView | None,
    path: str,
) -> dict[str, Any]:
    names = structure.names
    position = {name: index for index, name in enumerate(names)}
    current = position.get(owner.current) if owner.current is not None else None
    on_path = _ancestors(structure, current) if current is not None else set()
    remembered = {position[name] for name in owner.history.values() if name in position}
    initial: set[int] = set()
    transitions: list[dict[str, Any]] = []
    if tree is not None:
        initial = {index for index in (*tree.initial, tree.root_initial) if index >= 0}
        transitions = [
            {"source": names[source], "target": names[target], "priority": priority}
            for source, target, priority in zip(
                tree.sources, tree.targets, tree.priorities, strict=True
            )
        ]

    def node(index: int) -> dict[str, Any]:
        classes = ["state"]
        if structure.composite[index]:
            classes.append("composite")
        if index == current:
            classes.append("active")
        if index in on_path:
            classes.append("on-path")
        if index in remembered:
            classes.append("history")
        if index in initial:
            classes.append("initial")
        return {
            "name": names[index],
            "classes": " ".join(classes),
            "remembers": owner.history.get(names[index]),
            "children": [node(child) for child in children.get(index, [])],
        }

    children: dict[int, list[int]] = {}
    roots = []
    for index, parent in enumerate(structure.parents):
        if 0 <= parent < len(names) and parent != index:
            children.setdefault(parent, []).append(index)
        else:
            roots.append(index)
    return {
        "path": path,
        "machine": owner.machine_type,
        "current": owner.current,
        "started": owner.started,
        "states": [node(index) for index in roots],
        "transitions": transitions,
    }
