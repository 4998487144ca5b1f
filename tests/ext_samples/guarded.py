"""In-process extensions for the guarded-mode tests (each misbehaves on request)."""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import Any

from gotstate_persist import EventView

# Set by the host test to release a stuck call at the end (never blocks exit: daemon threads).
RELEASE = threading.Event()


class Guarded:
    name = "guarded"
    version = "1.0.0"
    category = "event_processing"

    def __init__(self) -> None:
        RELEASE.clear()

    def process(self, event: EventView) -> Any:
        action = event.name
        if action == "raise":
            raise ValueError("secret-canary-in-exception-message")
        if action == "exit":
            sys.exit(3)
        if action == "interrupt":
            raise KeyboardInterrupt
        if action == "hang":
            RELEASE.wait(30)
            return None
        if action == "object":
            return object()
        if action == "deep":
            value: list[Any] = []
            for _ in range(200):
                value = [value]
            return value
        if action == "env":
            return EventView("env", 0, {"keys": sorted(os.environ)})
        return event

    def stop(self) -> None:
        mode = os.environ.get("GUARDED_STOP_TEST", "")
        if mode == "raise":
            raise RuntimeError("stop failed")
        if mode == "hang":
            time.sleep(30)
