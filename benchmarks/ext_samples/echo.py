"""Event processors for bench_extensions: they hand the event back unchanged.

Doing nothing is the point: what bench_extensions times is the boundary
around a call (wire form, admission, thread hand-off or worker round trip,
output validation), so the extension's own work must be as close to zero as
the direct-call baseline's. Two classes because a registration's name comes
from its class and each isolation needs its own registration.
"""

from __future__ import annotations

from gotstate_persist import EventView


class GuardedEcho:
    name = "bench-echo-guarded"
    version = "1.0.0"
    category = "event_processing"

    def process(self, event: EventView) -> EventView:
        return event


class WorkerEcho:
    name = "bench-echo-worker"
    version = "1.0.0"
    category = "event_processing"

    def process(self, event: EventView) -> EventView:
        return event
