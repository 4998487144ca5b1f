"""An event processor: drop repeated deliveries, and cap how many events one burst may carry.

Message queues deliver at least once, so the same order event can arrive
twice. ``Throttle`` drops an event whose ``metadata["id"]`` it has already
seen among the last :attr:`Throttle.window` ids, and splits a ``batch`` event
(``metadata["items"]``: a list of event names) into at most
:attr:`Throttle.max_batch` single events. Everything else passes through,
tagged with ``metadata["checked"] = True``.

The memory of seen ids lives in this object, so it lasts as long as the
worker process: a worker restart (after a crash or a recycle) forgets it. An
application that needs exactly-once across restarts keeps the ids in its
store instead.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import ClassVar

from gotstate_persist import EventView


class Throttle:
    name = "throttle"
    version = "1.0.0"
    category = "event_processing"
    requires = ">=0.1,<1"

    window: ClassVar[int] = 1024
    max_batch: ClassVar[int] = 16

    def __init__(self) -> None:
        self._seen: OrderedDict[str, None] = OrderedDict()

    def process(self, event: EventView) -> EventView | list[EventView] | None:
        event_id = event.metadata.get("id")
        if isinstance(event_id, str):
            if event_id in self._seen:
                return None  # a repeated delivery: drop it
            self._seen[event_id] = None
            if len(self._seen) > self.window:
                self._seen.popitem(last=False)
        if event.name == "batch":
            items = event.metadata.get("items", [])
            names = [item for item in items if isinstance(item, str) and item]
            return [EventView(item, event.priority) for item in names[: self.max_batch]]
        return EventView(event.name, event.priority, {**event.metadata, "checked": True})
