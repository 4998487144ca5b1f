"""Checkpoints: put a machine back, in memory, exactly as it was before an event.

Why it exists: at an attachment's commit point (``runtime.md``) the machine
has processed an event and the commit (a journal append or a snapshot write)
may still fail; then the machine must be put back to exactly the state it had
before the event, without running entry or exit actions or hooks, so memory
and storage never disagree. A full capture before every event would cost as
much as a snapshot save, so a checkpoint copies lazily, on first access.

:func:`checkpoint` records up front, for the machine and every nested
submachine, only the control state: the current state, the history (each
composite's last active state), the started flag and how many states have a
data dict (gotstate only ever adds data dicts, so the new ones come last).
State data is not copied then. Until the checkpoint is closed, every way
gotstate hands out or changes a state's data goes through a tap:
``graph.get_state_data(state)`` (which hands out the live dict, whose nested
values the caller may change), ``graph.set_state_data(state, key, value)``,
and this package's ``state_data_copy`` and ``set_state_items`` (bound
extensions); the first touch of a state saves a deep copy (``copy.deepcopy``,
under that state's data lock) of its data first. The taps are instance
attributes of each graph, used by gotstate itself (it calls the accessors
through the instance) and by every thread, and :meth:`Checkpoint.close`
removes them, leaving the graph's attributes exactly as they were.

:meth:`Checkpoint.rollback`, under the machine's locks (those of
:func:`~._gotstate.locked`) and with plain assignments that cannot fail,
puts back for the machine and every submachine: the current state, the
history, the started flag, the data of every touched state (into the same dict
object, so references users hold stay valid; nested values become deep copies
equal to what they were), and it removes the data dicts created since the
checkpoint (gotstate creates one when ``get_state_data`` is given a state it
has none for). No action, guard or hook runs. That is everything a snapshot
holds, so a capture after the rollback equals one taken at the checkpoint.
gotstate's ``process_event`` changes nothing else of a machine (event queues,
timers and executors are objects of their own, outside the machine);
``AsyncStateMachine`` and ``AsyncCompositeStateMachine`` subclass the sync
machine and keep the same attributes, so they are covered alike.

What a rollback cannot undo, by design:

- data changed without the accessors above: through gotstate's private
  attributes (``graph._state_data``), through a dict reference obtained
  before the checkpoint was taken, or by a restore (``apply``) into the
  machine while the checkpoint is open;
- structure changes (added states, transitions, submachines): kept, and
  logged at WARNING; the data dicts of states added since stay;
- side effects of the machine's actions and hooks outside the machine.

If a touched state's data cannot be deep-copied, the rollback raises
``FormatError`` and changes nothing (the checkpoint stays open; close it).
One checkpoint per machine at a time: a second one on the machine or on one of
its submachines is refused with ``InvalidArgument``.
"""

from __future__ import annotations

import logging
import threading
import weakref
from types import TracebackType
from typing import Any

from gotstate.core.state_machine import StateMachine

from ..errors import FormatError, InvalidArgument
from ._gotstate import all_submachines, locked
from ._gotstate_undo import (
    control_state,
    deep_copy_data,
    drop_new_data,
    is_tapped,
    put_control,
    put_data,
    tap_data,
    untap_data,
)

__all__ = ["Checkpoint", "checkpoint"]

logger = logging.getLogger(__name__)

_Saved = tuple[Any, dict[Any, Any] | None, dict[Any, Any]]


class _Part:
    """One machine (the top one or a submachine) and what a checkpoint saved of it."""

    __slots__ = ("closed", "control", "failed", "guard", "machine", "saved")

    def __init__(self, machine: Any, guard: threading.Lock) -> None:
        self.machine = machine
        self.guard = guard
        self.control = control_state(machine)
        self.saved: dict[int, _Saved] = {}  # by id(state): State.__hash__ is Python code
        self.failed: dict[int, tuple[Any, str]] = {}
        self.closed = False

    def touch(self, state: Any) -> None:
        """Save a deep copy of the state's data, the first time it is touched."""
        key = id(state)
        if key in self.saved or key in self.failed or self.closed:
            return
        with self.guard:
            if self.closed or key in self.saved or key in self.failed:
                return
            try:
                live, copied = deep_copy_data(self.machine, state)
            except Exception as exc:  # reported by rollback(), which needs the copy
                self.failed[key] = (state, type(exc).__name__)
                return
            self.saved[key] = (state, live, copied)


class Checkpoint:
    """A machine's state at :func:`checkpoint`, to put back with :meth:`rollback`.

    Use it as a context manager: leaving the block closes it (it never rolls
    back by itself). Close every checkpoint: until then every data access of
    the machine is tapped (one dropped unclosed is closed when collected, with
    a warning).
    """

    def __init__(self, machine: StateMachine) -> None:
        self._machine = machine
        self._guard = threading.Lock()
        self._closed = False
        with locked(machine):
            machines = [machine, *(sub for _, sub in all_submachines(machine))]
            if any(is_tapped(found) for found in machines):
                raise InvalidArgument(
                    "this machine (or one of its submachines) already has an open checkpoint; "
                    "close or roll back that one first"
                )
            self._parts = [_Part(found, self._guard) for found in machines]
            for part in self._parts:
                tap_data(part.machine, part.touch)
        # a checkpoint dropped without close() must not leave its taps behind
        self._finalizer = weakref.finalize(self, _release, self._parts)
        self._finalizer.atexit = False

    @property
    def closed(self) -> bool:
        """Whether the checkpoint was closed or rolled back (it then tracks nothing)."""
        return self._closed

    def rollback(self) -> None:
        """Put the machine and its submachines back as at :func:`checkpoint`, then close.

        No action, guard or hook runs. ``InvalidArgument`` if the checkpoint is
        closed, or if the machine's locks stay busy (a rollback from inside the
        machine's own actions); ``FormatError`` (nothing changed) if a touched
        state's data could not be copied.
        """
        with locked(self._machine), self._guard:
            if self._closed:
                raise InvalidArgument(
                    "this checkpoint is closed (rolled back or closed before); take a new one "
                    "before the next event"
                )
            for part in self._parts:
                if part.failed:
                    names = sorted(state.name for state, _ in part.failed.values())
                    kinds = sorted({kind for _, kind in part.failed.values()})
                    raise FormatError(
                        f"cannot roll back: the data of state(s) {names} could not be copied "
                        f"({', '.join(kinds)}); nothing was rolled back. Keep state data to "
                        "values copy.deepcopy can copy, then close this checkpoint"
                    )
            for part in self._parts:
                machine = part.machine
                if control_state(machine).node_count != part.control.node_count:
                    logger.warning(
                        "states were added to a machine while a checkpoint was open; the "
                        "rollback keeps them (it does not undo structure changes)"
                    )
                put_control(machine, part.control)
                for state, live, saved in part.saved.values():
                    if live is not None:
                        put_data(machine, state, live, saved)
                drop_new_data(machine, part.control)
            self._finish()

    def close(self) -> None:
        """Stop tracking and keep the machine as it is now (no error if already closed)."""
        with self._guard:
            if not self._closed:
                self._finish()

    def _finish(self) -> None:
        """Remove the taps and drop the copies; callers hold ``_guard``."""
        self._closed = True
        for part in self._parts:
            part.closed = True
        self._finalizer()

    def __enter__(self) -> Checkpoint:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _release(parts: list[_Part]) -> None:
    """Untap and forget; also run (without the guard) when a checkpoint is collected."""
    if not all(part.closed for part in parts):
        logger.warning("a machine checkpoint was dropped without close(); closing it now")
    for part in parts:
        part.closed = True
        untap_data(part.machine, part.touch)
        part.saved.clear()
        part.failed.clear()


def checkpoint(machine: StateMachine) -> Checkpoint:
    """Record the machine's control state and start tracking its data (see the module).

    ``InvalidArgument`` if ``machine`` is not a gotstate machine, already has
    an open checkpoint, or its locks stay busy (called from its own actions).
    """
    return Checkpoint(machine)
