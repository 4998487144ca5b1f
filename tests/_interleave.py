"""A deterministic interleaving harness for the object-store and catalog protocols.

The backends call ``self._step(name)`` between the steps of every protocol
(put, replace, delete, sweep). :func:`interleave` makes one operation stop at
one named step, runs a second operation from another backend instance while
the first is held there, then lets the first go on. Where the two take the
same lock (local files serialize a key's writers), the second waits for it;
the harness notices and releases the first, which is also an interleaving the
protocol must survive. Tests enumerate every (step, second operation) pair and
check the store's invariants afterwards.

Also a process target for a real multi-process race (``spawn`` children
import this module).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec

#: How long the second operation may wait on a lock the first holds before
#: the harness lets the first go on (a wait, not a measurement: any value is
#: correct, a short one only makes the serialized interleaving likelier).
_BLOCKED_AFTER_S = 0.3
_TIMEOUT_S = 60.0


@dataclass
class Outcome:
    """What an operation returned or raised."""

    value: Any = None
    error: BaseException | None = None

    def ok(self) -> bool:
        return self.error is None


class _Pause:
    def __init__(self, step: str) -> None:
        self.step = step
        self.reached = threading.Event()
        self.release = threading.Event()

    def __call__(self, name: str) -> None:
        if name == self.step and not self.reached.is_set():
            self.reached.set()
            if not self.release.wait(_TIMEOUT_S):
                raise RuntimeError(f"the harness never released step {self.step!r}")


def _run(operation: Callable[[], Any], into: Outcome) -> None:
    try:
        into.value = operation()
    except BaseException as exc:  # the test inspects it
        into.error = exc


def interleave(
    held: Any, step: str, first: Callable[[], Any], second: Callable[[], Any]
) -> tuple[Outcome, Outcome] | None:
    """Run ``first`` (on backend ``held``) until ``step``, all of ``second``, then the rest.

    Returns both outcomes, or None when ``first`` never reached ``step``
    (that step is not on its path for this store and data).
    """
    pause = _Pause(step)
    held._step = pause
    one, two = Outcome(), Outcome()
    first_thread = threading.Thread(target=_run, args=(first, one), daemon=True)
    first_thread.start()
    while not pause.reached.wait(0.01):
        if not first_thread.is_alive():
            return None
    second_thread = threading.Thread(target=_run, args=(second, two), daemon=True)
    second_thread.start()
    second_thread.join(_BLOCKED_AFTER_S)  # waiting on a lock the first holds?
    pause.release.set()
    first_thread.join(_TIMEOUT_S)
    second_thread.join(_TIMEOUT_S)
    assert not first_thread.is_alive() and not second_thread.is_alive(), "deadlock"
    return one, two


class OrderV1(msgspec.Struct):
    id: str


class OrderV2(msgspec.Struct):
    id: str
    n: int


def order_formats(newest: int) -> Any:
    """``order`` at version 1, or 1 and 2 (``n`` added as 2 by the upcaster)."""
    import gotstate_persist as gp

    registry = gp.FormatRegistry()
    registry.register(OrderV1, kind="order")
    if newest > 1:
        registry.register(OrderV2, kind="order", version=2, upcast=lambda d: {**d, "n": 2})
    return registry


def recount_until(
    url: str, options: dict[str, Any], keys_text: str, looping: Any, stop: Any
) -> None:
    """Process target: ``usage(recount=True)`` in a loop (it sweeps) until ``stop`` is set."""
    import gotstate_persist as gp

    keyring = gp.KeyRing.load(keys_text)
    with gp.open_store(url, keyring=keyring, **options) as store:
        while not stop.is_set():
            store.usage(recount=True)
            looping.set()
