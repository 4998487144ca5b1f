"""Machines built from a small spec, and snapshots of them, for the state-tree tests.

A :class:`Spec` says exactly which states (with parents and composite-ness),
initial states and transitions a machine has, so each test states how the
"new" machine differs from the old one. Transitions are guarded by an event
named after their ends (``"a>b"``); priorities are explicit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from gotstate.core.events import Event
from gotstate.core.state_machine import CompositeStateMachine, StateMachine
from gotstate.core.states import CompositeState, State
from gotstate.core.transitions import Transition
from machines import observe, on, state_named

import gotstate_persist as gp
from gotstate_persist import machine as adapter
from gotstate_persist.formats import FormatRegistry
from gotstate_persist.formats.machine import MACHINE_KIND, MachineSnapshot, TreeView

FORMATS = FormatRegistry()

Row = tuple[str, str | None, bool]  # name, parent, composite
Edge = tuple[str, str, int]  # source, target, priority


@dataclass(frozen=True)
class Spec:
    """States in insertion order (parents first; the first is the machine's initial state)."""

    states: tuple[Row, ...]
    edges: tuple[Edge, ...] = ()
    initial: tuple[tuple[str | None, str], ...] = field(default=())  # composite (None: root)

    def without(self, *gone: str) -> Spec:
        return replace(
            self,
            states=tuple(row for row in self.states if row[0] not in gone),
            edges=tuple(e for e in self.edges if e[0] not in gone and e[1] not in gone),
            initial=tuple(i for i in self.initial if i[0] not in gone and i[1] not in gone),
        )

    def plus(self, *rows: Row, edges: Sequence[Edge] = ()) -> Spec:
        return replace(self, states=(*self.states, *rows), edges=(*self.edges, *edges))

    def with_edges(self, *edges: Edge) -> Spec:
        return replace(self, edges=tuple(edges))

    def with_initial(self, composite: str | None, state: str) -> Spec:
        kept = tuple(i for i in self.initial if i[0] != composite)
        return replace(self, initial=(*kept, (composite, state)))

    def changed(self, name: str, parent: str | None, composite: bool) -> Spec:
        return replace(
            self,
            states=tuple(
                (name, parent, composite) if row[0] == name else row for row in self.states
            ),
        )


def build(spec: Spec) -> StateMachine:
    states = {
        name: (CompositeState if composite else State)(name) for name, _, composite in spec.states
    }
    machine = StateMachine(initial_state=states[spec.states[0][0]])
    for name, parent, _ in spec.states[1:]:
        machine.add_state(states[name], parent=states[parent] if parent else None)
        if parent:
            states[name].parent = states[parent]
    for composite, state in spec.initial:
        machine._graph.set_initial_state(
            states[composite] if composite is not None else None, states[state]
        )
    for source, target, priority in spec.edges:
        machine.add_transition(
            Transition(
                states[source], states[target], guards=[on(f"{source}>{target}")], priority=priority
            )
        )
    return machine


#: idle -> checkout{cart -> payment} -> paid <-> paused, paid -> shipped
ORDER = Spec(
    states=(
        ("idle", None, False),
        ("checkout", None, True),
        ("cart", "checkout", False),
        ("payment", "checkout", False),
        ("paid", None, False),
        ("paused", None, False),
        ("shipped", None, False),
    ),
    edges=(
        ("idle", "checkout", 0),
        ("cart", "payment", 0),
        ("payment", "paid", 1),
        ("paid", "paused", 0),
        ("paused", "paid", 0),
        ("paid", "shipped", 0),
        ("checkout", "idle", 0),
    ),
)

#: Never in a message: state data of the snapshots these tests take.
SECRET = "data-that-must-never-be-shown"


def at_paid(spec: Spec = ORDER) -> StateMachine:
    """Started, moved to 'paid' through the checkout, holding data."""
    machine = build(spec)
    machine.start()
    for name in ("idle>checkout", "cart>payment", "payment>paid"):
        assert machine.process_event(Event(name)), name
    machine._graph.set_state_data(state_named(machine, "paid"), "note", SECRET)
    return machine


def newest_type() -> type[MachineSnapshot]:
    found = FORMATS.type_for(MACHINE_KIND, FORMATS.newest_version(MACHINE_KIND))
    assert issubclass(found, MachineSnapshot)
    return found


def capture(machine: Any, snapshot_type: type[MachineSnapshot] | None = None) -> MachineSnapshot:
    """A snapshot of the format ``save_machine`` writes (or ``snapshot_type``)."""
    return adapter.capture(
        machine,
        struct_kind=FORMATS.kind_of,
        max_depth=64,
        snapshot_type=snapshot_type or newest_type(),
    )


def apply(machine: Any, snapshot: MachineSnapshot) -> None:
    adapter.apply(machine, snapshot, struct_type=FORMATS.type_for)


def refused(machine: Any, snapshot: MachineSnapshot) -> gp.StructureMismatch:
    """The StructureMismatch restoring ``snapshot`` raises; the machine must be unchanged."""
    before = observe(machine)
    try:
        apply(machine, snapshot)
    except gp.StructureMismatch as error:
        assert observe(machine) == before
        assert SECRET not in str(error)
        return error
    raise AssertionError("the restore was not refused")


def by_name(view: TreeView) -> tuple[dict[str | None, str], list[Edge]]:
    """A tree view's initial states and transitions by name (order-independent)."""
    names = view.names
    initial: dict[str | None, str] = {
        names[i]: names[target] for i, target in enumerate(view.initial) if target >= 0
    }
    if view.root_initial >= 0:
        initial[None] = names[view.root_initial]
    edges = sorted(
        (names[s], names[t], p)
        for s, t, p in zip(view.sources, view.targets, view.priorities, strict=True)
    )
    return initial, edges


def with_review(*, sub: bool = True, extra: str | None = None) -> CompositeStateMachine:
    """root{idle, review}; 'review' holds a submachine draft -> approved (or a plain 'draft')."""
    root = CompositeState("root")
    machine = CompositeStateMachine(root)
    idle, review = State("idle"), CompositeState("review")
    for state in (idle, review):
        machine.add_state(state, parent=root)
        state.parent = root
    machine.add_transition(Transition(idle, review, guards=[on("review")]))
    draft, approved = State("draft"), State("approved")
    if not sub:
        for state in (draft, approved):
            machine.add_state(state, parent=review)
            state.parent = review
        return machine
    inner = StateMachine(initial_state=draft)
    inner.add_state(approved)
    if extra is not None:
        inner.add_state(State(extra))
    inner.add_transition(Transition(draft, approved, guards=[on("approve")]))
    machine.add_submachine(review, inner)
    return machine


def nested(*, innermost: bool = True, extra: str | None = None) -> CompositeStateMachine:
    """root{idle, review[desk{draft, legal[check -> signed]}]}: a submachine in a submachine."""
    root = CompositeState("root")
    machine = CompositeStateMachine(root)
    idle, review = State("idle"), CompositeState("review")
    for state in (idle, review):
        machine.add_state(state, parent=root)
        state.parent = root
    desk_root = CompositeState("desk")
    desk = CompositeStateMachine(desk_root)
    draft, legal = State("draft"), CompositeState("legal")
    for state in (draft, legal):
        desk.add_state(state, parent=desk_root)
        state.parent = desk_root
    if innermost:
        check = State("check")
        inner = StateMachine(initial_state=check)
        signed = State("signed")
        inner.add_state(signed)
        if extra is not None:
            inner.add_state(State(extra))
        inner.add_transition(Transition(check, signed, guards=[on("sign")]))
        desk.add_submachine(legal, inner)
    machine.add_submachine(review, desk)
    return machine


def submachine(machine: Any, *path: str) -> Any:
    for name in path:
        machine = machine._submachines[state_named(machine, name)]
    return machine
