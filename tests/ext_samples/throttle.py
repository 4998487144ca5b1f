"""An event processor for the tests: drops, fans out and annotates events."""

from __future__ import annotations

from gotstate_persist import EventView


class Throttle:
    name = "throttle"
    version = "1.0.0"
    category = "event_processing"

    def process(self, event: EventView) -> EventView | list[EventView] | None:
        if event.name == "spam":
            return None
        if event.name == "burst":
            return [EventView("next"), EventView("next")]
        if event.name == "flood":
            return [EventView("next")] * 1000
        if event.name == "bad":
            return "not an event"  # type: ignore[return-value]
        if event.name == "boom":
            raise RuntimeError("processor exploded")
        return EventView(event.name, event.priority, {**event.metadata, "checked": True})
