"""Machine builders for tests and benchmarks (the order workflow lives in examples/)."""

from __future__ import annotations

from collections.abc import Callable

from gotstate.core.events import Event
from gotstate.core.state_machine import CompositeStateMachine, StateMachine
from gotstate.core.states import CompositeState, State
from gotstate.core.transitions import Transition


def on(name: str) -> Callable[[Event], bool]:
    def guard(event: Event) -> bool:
        return event.name == name

    return guard


def build_ring_machine(
    n_states: int = 20, *, groups: int = 4, entered: list[str] | None = None
) -> StateMachine:
    """A root ``start`` state and ``groups`` composites holding the other leaves.

    Events: "next" steps to the next leaf (the last leaf of a group enters the
    next group), "jump" leaves the whole group for the next one, "home" goes
    back to ``start``. Composite entry uses the initial state; history is
    recorded by gotstate on every transition.
    """

    def actions(name: str) -> list[Callable[[], None]]:
        return [] if entered is None else [lambda: entered.append(name)]

    start = State("start", entry_actions=actions("start"))
    machine = StateMachine(initial_state=start)
    per_group = max(1, (n_states - 1 - groups) // groups)
    composites = [
        CompositeState(f"group-{g}", entry_actions=actions(f"group-{g}")) for g in range(groups)
    ]
    leaves: list[list[State]] = []
    for g, composite in enumerate(composites):
        machine.add_state(composite)
        row = []
        for i in range(per_group):
            leaf = State(f"s-{g}-{i}", entry_actions=actions(f"s-{g}-{i}"))
            machine.add_state(leaf, parent=composite)
            leaf.parent = composite
            row.append(leaf)
        leaves.append(row)
    machine.add_transition(Transition(start, composites[0], guards=[on("next")]))
    for g, row in enumerate(leaves):
        following = composites[(g + 1) % groups]
        for i, leaf in enumerate(row[:-1]):
            machine.add_transition(Transition(leaf, row[i + 1], guards=[on("next")]))
        machine.add_transition(Transition(row[-1], following, guards=[on("next")]))
        machine.add_transition(
            Transition(composites[g], following, guards=[on("jump")], priority=1)
        )
        machine.add_transition(Transition(composites[g], start, guards=[on("home")]))
    return machine


def state_named(machine: StateMachine, name: str) -> State:
    return next(s for s in machine.get_states() if s.name == name)


def set_data(machine: StateMachine, state: str, key: str, value: object) -> None:
    machine._graph.set_state_data(state_named(machine, state), key, value)


def observe(machine: StateMachine) -> tuple[object, ...]:
    """Everything a restore must reproduce, in comparable form."""
    graph = machine._graph
    current = graph.get_current_state()
    data = {
        s.name: [(k, type(v).__name__, v) for k, v in sorted(d.items(), key=lambda kv: repr(kv[0]))]
        for s, d in graph._state_data.items()
        if d
    }
    history = {c.name: s.name for c, s in graph._history._history.items()}
    subs = {
        s.name: observe(sub) for s, sub in (getattr(machine, "_submachines", None) or {}).items()
    }
    return (current.name if current else None, machine._started, history, data, subs)


def build_composite_machine(entered: list[str] | None = None) -> CompositeStateMachine:
    """A CompositeStateMachine with a nested composite and a merged submachine."""

    def actions(name: str) -> list[Callable[[], None]]:
        return [] if entered is None else [lambda: entered.append(name)]

    root = CompositeState("root", entry_actions=actions("root"))
    machine = CompositeStateMachine(root)
    idle = State("idle", entry_actions=actions("idle"))
    machine.add_state(idle, parent=root)
    work = CompositeState("work", entry_actions=actions("work"))
    machine.add_state(work, parent=root)
    step_a = State("step-a", entry_actions=actions("step-a"))
    step_b = State("step-b", entry_actions=actions("step-b"))
    machine.add_state(step_a, parent=work)
    machine.add_state(step_b, parent=work)
    for child, parent in ((idle, root), (work, root), (step_a, work), (step_b, work)):
        child.parent = parent

    review = CompositeState("review")
    machine.add_state(review, parent=root)
    review.parent = root
    sub_first = State("draft")
    sub = StateMachine(initial_state=sub_first)
    sub_second = State("approved")
    sub.add_state(sub_second)
    sub.add_transition(Transition(sub_first, sub_second, guards=[on("approve")]))
    machine.add_submachine(review, sub)

    machine.add_transition(Transition(idle, work, guards=[on("go")]))
    machine.add_transition(Transition(step_a, step_b, guards=[on("next")]))
    machine.add_transition(Transition(step_b, review, guards=[on("next")]))
    machine.add_transition(Transition(work, idle, guards=[on("stop")]))
    return machine
