"""A state behavior: keep an audit trail in each state's data, and honour holds.

On every entry ``Audit`` counts the visit and records who caused it (the
event's ``metadata["actor"]``, or ``"system"``) and by which event; on exit
it records the event that left. Its ``allows`` is an extra guard: a state
whose data holds ``"hold": True`` is not left unless the event carries
``metadata["override"] = True``.

It applies to the states named in :attr:`Audit.states` only. The behavior
never sees the machine: it gets a copy of the state's data in a
:class:`~gotstate_persist.StateView` and returns the items to set, which the
host validates before it sets them.
"""

from __future__ import annotations

from typing import Any, ClassVar

from gotstate_persist import StateView, TransitionView


class Audit:
    name = "audit"
    version = "1.0.0"
    category = "state_behavior"
    states: ClassVar[frozenset[str]] = frozenset({"cart", "payment", "picking", "packed"})

    def on_enter(self, view: StateView) -> dict[str, Any] | None:
        visits = view.data.get("visits", 0)
        actor = view.event.metadata.get("actor", "system")
        return {
            "visits": visits + 1 if isinstance(visits, int) else 1,
            "entered_by": actor if isinstance(actor, str) else "system",
            "entered_on": view.event.name,
        }

    def on_exit(self, view: StateView) -> dict[str, Any] | None:
        return {"left_on": view.event.name}

    def allows(self, view: TransitionView) -> bool:
        if view.data.get("hold") is True:
            return view.event.metadata.get("override") is True
        return True
