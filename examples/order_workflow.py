"""An order workflow machine: the example used by ``make demo`` and the tests.

gotstate 1.0 transitions carry guards rather than event names, so each
transition here is guarded by the event's name (``_on("pay")``).

    idle -> checkout{cart -> payment} -> fulfilment{picking -> packed} -> shipped -> delivered
                                         \\-> cancelled (from checkout or fulfilment)
"""

from __future__ import annotations

from collections.abc import Callable

from gotstate.core.events import Event
from gotstate.core.state_machine import StateMachine
from gotstate.core.states import CompositeState, State
from gotstate.core.transitions import Transition


def _on(name: str) -> Callable[[Event], bool]:
    def guard(event: Event) -> bool:
        return event.name == name

    guard.__name__ = f"on_{name}"
    return guard


def build_order_machine(entered: list[str] | None = None) -> StateMachine:
    """Build the order workflow; ``entered`` (if given) records entry actions."""

    def enter(name: str) -> list[Callable[[], None]]:
        return [] if entered is None else [lambda: entered.append(name)]

    idle = State("idle", entry_actions=enter("idle"))
    checkout = CompositeState("checkout", entry_actions=enter("checkout"))
    cart = State("cart", entry_actions=enter("cart"))
    payment = State("payment", entry_actions=enter("payment"))
    fulfilment = CompositeState("fulfilment", entry_actions=enter("fulfilment"))
    picking = State("picking", entry_actions=enter("picking"))
    packed = State("packed", entry_actions=enter("packed"))
    shipped = State("shipped", entry_actions=enter("shipped"))
    delivered = State("delivered", entry_actions=enter("delivered"))
    cancelled = State("cancelled", entry_actions=enter("cancelled"))

    machine = StateMachine(initial_state=idle)
    machine.add_state(checkout)
    machine.add_state(cart, parent=checkout)
    machine.add_state(payment, parent=checkout)
    machine.add_state(fulfilment)
    machine.add_state(picking, parent=fulfilment)
    machine.add_state(packed, parent=fulfilment)
    for state in (shipped, delivered, cancelled):
        machine.add_state(state)
    # gotstate walks `state.parent` to find enclosing states' transitions and to
    # exit/enter composites; the graph's parent map alone does not set it.
    for child, parent in ((cart, checkout), (payment, checkout), (picking, fulfilment)):
        child.parent = parent
    packed.parent = fulfilment

    edges = [
        (idle, checkout, "start"),
        (cart, payment, "checkout"),
        (payment, fulfilment, "pay"),
        (picking, packed, "pack"),
        (packed, shipped, "ship"),
        (shipped, delivered, "deliver"),
        (checkout, cancelled, "cancel"),
        (fulfilment, cancelled, "cancel"),
    ]
    for source, target, event in edges:
        machine.add_transition(Transition(source, target, guards=[_on(event)]))
    return machine


def set_data(machine: StateMachine, state_name: str, key: str, value: object) -> None:
    """Set one item of a state's data (gotstate keeps it on the machine's graph)."""
    state = next(s for s in machine.get_states() if s.name == state_name)
    machine._graph.set_state_data(state, key, value)  # noqa: SLF001 - no public API for it


def get_data(machine: StateMachine, state_name: str) -> dict[str, object]:
    """Return a copy of a state's data."""
    state = next(s for s in machine.get_states() if s.name == state_name)
    return dict(machine._graph.get_state_data(state))  # noqa: SLF001 - no public API for it
