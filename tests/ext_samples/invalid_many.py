"""A class with several problems at once: all must be reported together."""

from __future__ import annotations


class Broken:
    name = "Not Valid!"
    version = "one"
    category = "event_processing"
    requires = ">=99"

    def process(self, first: object, second: object) -> None:
        return None


class NoMethods:
    name = "nomethods"
    version = "1.0.0"
    category = "state_behavior"


class UnknownCategory:
    name = "unknown"
    version = "1.0.0"
    category = "teleportation"

    def process(self, event: object) -> None:
        return None
