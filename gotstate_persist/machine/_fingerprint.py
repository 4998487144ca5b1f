"""The structure fingerprint, and what else capture and apply derive from a structure.

A snapshot restores only into a machine with the snapshot's fingerprint, and
every stored snapshot carries it, so the recipe is part of the stored format:
a canonical JSON summary (machine type, states with parents and
composite-ness, initial states, transition edges with priorities, the
submachines' fingerprints) hashed with SHA-256. Its bytes must never change; a
test pins them (tests/test_golden_objects.py).

The state-tree digest (``fingerprint(machine, part="states")``) covers only
what a snapshot's state depends on (state names, parents, composite-ness,
initial states, submachines' state trees; not the machine type, not
transitions), so a deploy that changes only transitions still restores.

The digests are expensive, so they are derived once per structure together
with the rest of a :class:`Shape` and cached per machine, keyed weakly. The
state tree a version 2 snapshot records (``formats.machine.StateTree``) is
derived from the same Shape on first use and cached with it, encoded, so a
capture of an unchanged machine copies bytes it already has.
"""

from __future__ import annotations

import hashlib
import json
import weakref
from typing import Any, Literal

from gotstate.core.state_machine import StateMachine
from gotstate.core.states import CompositeState

from ..errors import InvalidArgument
from ..formats.machine import (
    MachineTree,
    Structure,
    TreeView,
    encode_structure,
    encode_tree,
    tree_view,
)
from ._gotstate import (
    all_transitions,
    initial_states,
    locked,
    machine_type,
    parent_map,
    signature,
    states,
    submachines,
)

__all__ = ["PART_STATES", "Shape", "fingerprint", "shape"]

#: ``fingerprint(machine, part=PART_STATES)`` digests the state tree alone.
PART_STATES = "states"

#: A recorded tree stores priorities as msgpack integers; Python's are
#: unbounded, so one beyond 64 bits is recorded at the nearest bound (the
#: tree only explains mismatches; the fingerprint keeps the exact value).
_PRIORITY_MIN = -(2**63)
_PRIORITY_MAX = 2**63 - 1


class Shape:
    """What the adapter derives from a machine's structure, computed once.

    gotstate offers no way to remove states or transitions, so a cheap
    signature (counts and identities) detects every structural change made
    through its API; the expensive canonical digest is recomputed only then.
    """

    __slots__ = (
        "_tree",
        "_tree_blob",
        "by_name",
        "fingerprint",
        "signature",
        "states_fingerprint",
        "structure",
        "structure_blob",
        "sub_shapes",
        "summary",
    )

    by_name: dict[str, Any]
    fingerprint: str
    states_fingerprint: str
    signature: tuple[object, ...]
    structure: Structure
    structure_blob: bytes
    sub_shapes: dict[str, Shape]
    summary: dict[str, Any]
    _tree: list[TreeView] | None
    _tree_blob: bytes | None

    def __init__(self, machine: Any, signature: tuple[object, ...]) -> None:
        parents = parent_map(machine)
        nodes = states(machine)
        edges = all_transitions(machine)
        for state in nodes:
            if type(state.name) is not str:
                raise InvalidArgument(
                    f"state names must be str to be saved, found {type(state.name).__name__} "
                    f"{state.name!r}"
                )
        for transition in edges:
            if type(transition.get_priority()) is not int:
                raise InvalidArgument(
                    f"transition priorities must be int to be saved, found "
                    f"{transition.get_priority()!r} on {transition.source.name!r} -> "
                    f"{transition.target.name!r}"
                )
        index = {state: i for i, state in enumerate(nodes)}
        self.signature = signature
        self.by_name = {state.name: state for state in nodes}
        self.structure = Structure(
            names=[state.name for state in nodes],
            parents=[index.get(parents.get(state), -1) for state in nodes],
            composite=[isinstance(state, CompositeState) for state in nodes],
        )
        self.structure_blob = encode_structure(self.structure)
        # the root's initial entry has no composite (None): sort it first
        initial = sorted(
            [
                ((c.name if c is not None else None), s.name)
                for c, s in initial_states(machine).items()
            ],
            key=lambda pair: (pair[0] is not None, pair[0] or ""),
        )
        transitions = sorted((t.source.name, t.target.name, t.get_priority()) for t in edges)
        sub_shapes = {name: shape(sub) for name, sub in submachines(machine).items()}
        self.sub_shapes = sub_shapes
        self._tree = None
        self._tree_blob = None
        subs = {name: sub.fingerprint for name, sub in sub_shapes.items()}
        self.summary = {
            "type": machine_type(machine),
            "states": sorted(
                (state.name, parent.name if parent is not None else None, composite)
                for state, composite in zip(nodes, self.structure.composite, strict=True)
                for parent in (parents.get(state),)
            ),
            "initial": initial,
            "transitions": transitions,
            "submachines": subs,
        }
        self.fingerprint = _digest(self.summary)
        self.states_fingerprint = _digest(
            {
                "states": self.summary["states"],
                "initial": initial,
                "submachines": {name: sub.states_fingerprint for name, sub in sub_shapes.items()},
            }
        )

    def tree(self) -> list[TreeView]:
        """The state tree and transitions of this machine, then its submachines' (cached)."""
        found = self._tree
        if found is None:  # two threads may both build it: the same value either way
            found = [
                tree_view(path, structure, record)
                for path, structure, record in self.tree_records(())
            ]
            self._tree = found
        return found

    def tree_blob(self) -> bytes:
        """The tree as a version 2 snapshot stores it (cached)."""
        found = self._tree_blob
        if found is None:
            found = encode_tree([record for _, _, record in self.tree_records(())])
            self._tree_blob = found
        return found

    def tree_records(
        self, path: tuple[str, ...]
    ) -> list[tuple[tuple[str, ...], Structure, MachineTree]]:
        """This machine's tree at ``path``, then its submachines' (``all_submachines`` order)."""
        names = self.structure.names
        index = {name: i for i, name in enumerate(names)}
        initial = [-1] * len(names)
        root_initial = -1
        for composite, state in self.summary["initial"]:
            target = index.get(state, -1)
            if composite is None:
                root_initial = target
            elif composite in index:
                initial[index[composite]] = target
        # by source; each source's in the summary's (sorted) order
        leaving: list[list[tuple[int, int]]] = [[] for _ in names]
        for source, target, priority in self.summary["transitions"]:
            source_at, target_at = index.get(source), index.get(target)
            if source_at is not None and target_at is not None:  # gotstate ensures they are
                leaving[source_at].append((target_at, priority))
        priorities = [priority for edges in leaving for _, priority in edges]
        if priorities and not _PRIORITY_MIN <= min(priorities) <= max(priorities) <= _PRIORITY_MAX:
            priorities = [min(max(p, _PRIORITY_MIN), _PRIORITY_MAX) for p in priorities]
        record = MachineTree(
            initial=initial,
            root_initial=root_initial,
            out_degree=[len(edges) for edges in leaving],
            targets=[target for edges in leaving for target, _ in edges],
            priorities=priorities,
        )
        found = [(path, self.structure, record)]
        for name in sorted(self.sub_shapes):
            found.extend(self.sub_shapes[name].tree_records((*path, name)))
        return found


def _digest(summary: dict[str, Any]) -> str:
    """SHA-256 of the canonical JSON of ``summary`` (the stored recipe: never change it)."""
    canonical = json.dumps(summary, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "sha256:" + hashlib.sha256(canonical.encode("utf-8")).hexdigest()


# Derived data only, keyed weakly by machine: never keeps a machine alive and
# is recomputed whenever the signature changes.
_shapes: weakref.WeakKeyDictionary[Any, Shape] = weakref.WeakKeyDictionary()


def shape(machine: Any) -> Shape:
    """The machine's current :class:`Shape`; call with the machine's locks held."""
    current = signature(machine)
    found = _shapes.get(machine)
    if found is None or found.signature != current:
        found = Shape(machine, current)
        _shapes[machine] = found
    return found


def fingerprint(machine: StateMachine, part: Literal["states"] | None = None) -> str:
    """A stable digest of a machine's structure (not its current state).

    Covers state names, parents, composite-ness, initial states, transition
    edges and priorities, the machine type and submachines. Two machines built
    by the same code have the same fingerprint. With ``part="states"`` it
    digests the state tree alone (state names, parents, composite-ness,
    initial states, submachines' state trees): what a snapshot must match to
    restore, so it does not change when only transitions do.
    """
    if part is not None and part != PART_STATES:
        raise InvalidArgument(
            f"part must be None (the whole structure) or {PART_STATES!r} (the state tree "
            f"alone), got {part!r}"
        )
    with locked(machine):
        derived = shape(machine)
        return derived.states_fingerprint if part == PART_STATES else derived.fingerprint
