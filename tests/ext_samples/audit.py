"""A state behavior for the tests: records entries/exits in state data, vetoes by metadata."""

from __future__ import annotations

from typing import Any, ClassVar

from gotstate_persist import StateView, TransitionView


class Audit:
    name = "audit"
    version = "1.0.0"
    category = "state_behavior"
    states: ClassVar[frozenset[str]] = frozenset()

    def on_enter(self, view: StateView) -> dict[str, Any] | None:
        if view.event.metadata.get("fail_enter"):
            raise ValueError("enter failed")
        count = view.data.get("entered", 0)
        return {"entered": count + 1, "last_event": view.event.name, "key": view.machine_key}

    def on_exit(self, view: StateView) -> dict[str, Any] | None:
        return {"exited": (view.data.get("exited", 0) + 1)}

    def allows(self, view: TransitionView) -> bool:
        return not view.event.metadata.get("veto", False)
