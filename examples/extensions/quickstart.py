"""The walk-through of docs/writing-an-extension.md: the four example extensions at work.

Needs the examples installed (``make install`` does it; by hand
``pip install -e examples/extensions``), since each is registered by its
entry-point name. Run it as ``python examples/extensions/quickstart.py``;
tests/test_writing_an_extension.py runs :func:`walk_through` and checks what
it returns.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gotstate.core.events import Event
from gotstate.core.state_machine import StateMachine
from gotstate.core.states import State
from gotstate.core.transitions import Transition
from gotstate_persist_examples.scratch import Receipt

import gotstate_persist as gp
from gotstate_persist.machine import set_state_items, state_by_name, state_data_copy


def _on(name: str) -> Callable[[Event], bool]:
    def guard(event: Event) -> bool:
        return bool(event.name == name)

    return guard


def build_machine() -> StateMachine:
    """cart -checkout-> payment -pay-> picking -pack-> packed (guards on the event's name)."""
    cart, payment, picking, packed = (State(n) for n in ("cart", "payment", "picking", "packed"))
    machine = StateMachine(initial_state=cart)
    for state in (payment, picking, packed):
        machine.add_state(state)
    for source, target, event in ((cart, payment, "checkout"), (payment, picking, "pay")):
        machine.add_transition(Transition(source, target, guards=[_on(event)]))
    machine.add_transition(Transition(picking, packed, guards=[_on("pack")]))
    return machine


def delivery(name: str, **metadata: Any) -> Event:
    """An event as a message queue delivers it: ``metadata["id"]`` names the message."""
    event = Event(name)
    event.metadata.update(metadata)
    return event


def walk_through(url: str, keys: gp.KeyRing) -> dict[str, Any]:
    """Register, activate, use and deactivate all four examples; what happened."""
    seen: dict[str, Any] = {}
    with gp.open_store(url, namespace="orders", keyring=keys) as store:
        exts = store.extensions
        for name in ("throttle", "audit", "scratch", "site-defaults"):
            exts.register(name, limits=gp.ResourceLimits(timeout_s=2.0))
            exts.activate(name)

        machine = build_machine()
        machine.start()
        bound = exts.bind(machine, "throttle", "audit", key="order-42")
        seen["first"] = bound.process_event(delivery("checkout", id="m-1", actor="ada"))
        seen["repeat"] = bound.process_event(delivery("checkout", id="m-1", actor="ada"))
        payment = state_by_name(machine, "payment")
        seen["payment"] = state_data_copy(machine, payment)

        set_state_items(machine, payment, {"hold": True})  # an operator holds the order
        seen["held"] = bound.process_event(delivery("pay", id="m-2"))
        seen["override"] = bound.process_event(delivery("pay", id="m-3", override=True))
        seen["state"] = machine.current_state.name

        # the Receipt format was registered with this store's formats: share them
        with gp.open_store("scratch://preview", keyring=keys, formats=store.formats) as preview:
            preview.save("receipt-42", Receipt("order-42", 1250))
            seen["receipt"] = preview.load("receipt-42")

        defaults = exts.handle("site-defaults")
        seen["defaults"] = defaults.call("load", {"name": "payments"})
        seen["problems"] = defaults.call("validate", {"endpoint": "http://pay.example.com"})

        for name in ("throttle", "audit"):
            seen[name] = exts.deactivate(name, timeout=5.0).stats
    return seen


def main() -> None:
    with tempfile.TemporaryDirectory() as directory:
        url = f"sqlite:///{Path(directory) / 'state.db'}"
        for what, value in walk_through(url, gp.KeyRing.generate()).items():
            print(f"{what:>10}: {value}")


if __name__ == "__main__":
    main()
