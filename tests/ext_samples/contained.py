"""A worker-mode event processor that misbehaves on request (event name = the attack).

Its stop() behaviour is read from a file beside it (the worker's environment
is scrubbed, so an environment variable could not reach it).
"""

from __future__ import annotations

import ctypes
import gc
import os
import sys
import time
from pathlib import Path
from typing import Any

from gotstate_persist import EventView

_FOREVER = 10**9
_MODE = Path(__file__).with_suffix(".stopmode")


def _scan(needle: str) -> bool:
    """Whether the repr of any object the collector tracks shows ``needle``."""
    for obj in gc.get_objects():
        try:
            if needle in repr(obj):
                return True
        except Exception:
            continue
    return False


class Contained:
    name = "contained"
    version = "1.0.0"
    category = "event_processing"

    def process(self, event: EventView) -> Any:
        attack = event.name
        if attack == "loop":
            while True:
                pass
        if attack == "sleep":
            time.sleep(_FOREVER)
        if attack == "memory":
            hoard = []
            while True:
                hoard.append(bytearray(16 << 20))
        if attack == "big":
            return EventView("big", 0, {"blob": "x" * (4 << 20)})
        if attack == "deep":
            value: list[Any] = []
            for _ in range(500):
                value = [value]
            return EventView("deep", 0, {"v": value})
        if attack == "exit":
            sys.exit(0)
        if attack == "interrupt":
            raise KeyboardInterrupt
        if attack == "os_exit":
            os._exit(3)
        if attack == "segfault":
            ctypes.string_at(0)
        if attack == "spam":
            for i in range(20000):
                print(f"spam {i} " + "." * 60)
                print(f"spam {i} " + "." * 60, file=sys.stderr)
            return event
        if attack == "env":
            return EventView("env", 0, {"env": dict(os.environ)})
        if attack == "gc":
            first, second = event.metadata["parts"]
            # a list of our own holding a known string: proves the scan can find one
            control = [second + first]
            return (
                EventView(
                    "gc", 0, {"found": _scan(first + second), "control": _scan(second + first)}
                )
                if control
                else None
            )
        return event

    def stop(self) -> None:
        mode = _MODE.read_text() if _MODE.exists() else ""
        if mode == "raise":
            raise RuntimeError("stop failed")
        if mode == "hang":
            time.sleep(_FOREVER)
