"""``gp.BoundMachine``: a gotstate machine with active extensions around it.

Event processors run first, outside the machine, on a view of the event: a
processor failing leaves the machine untouched. The machine then processes
each resulting event; the binding's hook records which states it exits and
enters, and its guard asks ``allows`` behaviors about each transition.
Behaviors' ``on_exit``/``on_enter`` run after the machine finished the
transition, never under its transition lock (an extension call may take up
to its timeout, and gotstate rolls a transition back when a hook blocks or
raises): a failing behavior is reported with the machine in the target state
and that behavior's updates not applied, as the contract says.

The hook and the guards act only during :meth:`BoundMachine.process_event`
on the calling thread: the bare machine (``bound.machine.process_event``)
behaves as if nothing were bound. Only the top machine's states are seen
(gotstate runs a submachine's hooks on the submachine).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from types import TracebackType
from typing import Any

from .. import machine as _machine
from ..errors import PersistError
from ._active import ActiveExtension
from ._views import EventView, StateView, TransitionView, gotstate_event, view_of

__all__ = ["BoundMachine"]


class _Call(threading.local):
    """What the binding records during one ``process_event`` on this thread."""

    def __init__(self) -> None:
        self.steps: list[tuple[str, Any]] | None = None
        self.event: EventView | None = None
        self.guard_error: PersistError | None = None


class _Recorder:
    """The hook gotstate calls on exit and entry; it only writes down what happened."""

    def __init__(self, call: _Call) -> None:
        self._call = call

    def on_enter(self, state: Any) -> None:
        steps = self._call.steps
        if steps is not None:
            steps.append(("on_enter", state))

    def on_exit(self, state: Any) -> None:
        steps = self._call.steps
        if steps is not None:
            steps.append(("on_exit", state))


class _Allows:
    """A guard on one transition that asks every ``allows`` behavior (and-ed)."""

    def __init__(self, bound: BoundMachine, transition: Any) -> None:
        self.__name__ = f"allows({transition.source.name}->{transition.target.name})"
        self._bound = bound
        self._transition = transition

    def __call__(self, event: Any) -> bool:
        return self._bound.allowed(self._transition)


def _applies(handle: ActiveExtension, state_name: str) -> bool:
    states = handle.registration.states
    return not states or state_name in states


class BoundMachine:
    """A machine whose events pass through extensions; ``machine`` is the machine itself.

    A bound machine is saved and restored like any other
    (``store.save_machine(bound.machine)``): the binding adds nothing to the
    snapshot. Call :meth:`unbind` (or use it as a context manager) to detach.
    """

    def __init__(
        self,
        machine: Any,
        extensions: list[ActiveExtension],
        *,
        key: str = "",
        resolve: Callable[[str], ActiveExtension] | None = None,
    ) -> None:
        _machine.machine_type(machine)
        self.machine = machine
        self.key = key
        # names, not handles: an extension activated again (after its circuit
        # opened, or an upgrade) is picked up by the next call through resolve
        current = {h.name: h for h in extensions}
        self._resolve = resolve if resolve is not None else current.__getitem__
        self._processor_names = [
            h.name for h in extensions if h.registration.category == "event_processing"
        ]
        behaviors = [h for h in extensions if h.registration.category == "state_behavior"]
        self._behavior_names = [h.name for h in behaviors]
        self._guard_names = [h.name for h in behaviors if "allows" in h.registration.interface]
        self._call = _Call()
        self._hook = _Recorder(self._call)
        self._installed: list[tuple[Any, _Allows]] = []
        _machine.add_hook(machine, self._hook)
        if self._guard_names:
            for transition in _machine.all_transitions(machine):
                guard = _Allows(self, transition)
                transition.guards.append(guard)
                self._installed.append((transition, guard))

    @property
    def behavior_names(self) -> tuple[str, ...]:
        """The bound state behaviors, in the order they run (a journal records them)."""
        return tuple(self._behavior_names)

    def __repr__(self) -> str:
        names = [*self._processor_names, *self._behavior_names]
        return f"<BoundMachine {type(self.machine).__name__} with {names}>"

    def process_event(self, event: Any) -> bool:
        """Run the processors, then feed each resulting event to the machine.

        Returns whether the machine handled at least one event (False when
        the processors dropped it). Errors: see the module docstring.
        """
        handled = False
        for current in self.events_for(event):
            accepted, error = self.feed(current)
            if error is not None:
                raise error
            handled = accepted or handled
        return handled

    def events_for(self, event: Any) -> list[EventView]:
        """The events the processors make of ``event``, not yet given to the machine.

        A processor failing raises here, with the machine untouched.
        """
        events = [view_of(event)]
        for handle in map(self._resolve, self._processor_names):
            events = [out for current in events for out in handle.call("process", current)]
        return events

    def feed(self, view: EventView) -> tuple[bool, PersistError | None]:
        """Give one processed event to the machine, then run the behaviors.

        Returns whether the machine handled it, and the first behavior or
        guard failure (the transition, if taken, stays taken): an attachment
        commits before it raises that error.
        """
        event = gotstate_event(view)
        call = self._call
        call.steps, call.event, call.guard_error = [], view, None
        try:
            handled = bool(self.machine.process_event(event))
            steps = call.steps
            guard_error = call.guard_error
        finally:
            call.steps, call.event, call.guard_error = None, None, None
        first_error = guard_error
        for method, state in steps:
            error = self._behave(method, state, view)
            first_error = first_error or error
        return handled, first_error

    def _behave(self, method: str, state: Any, view: EventView) -> PersistError | None:
        """Run every behavior's ``method`` for ``state``; apply each valid update."""
        first: PersistError | None = None
        for name in self._behavior_names:
            try:
                handle = self._resolve(name)
            except PersistError as exc:
                first = first or exc
                continue
            if method not in handle.registration.interface or not _applies(handle, state.name):
                continue
            data = _machine.state_data_copy(self.machine, state)
            try:
                updates = handle.call(method, StateView(state.name, data, view, self.key))
            except PersistError as exc:
                first = first or exc
                continue
            if updates:
                _machine.set_state_items(self.machine, state, updates)
        return first

    def allowed(self, transition: Any) -> bool:
        """The guard's question: do all ``allows`` behaviors accept ``transition``?"""
        call = self._call
        if call.steps is None or call.event is None:
            return True  # not inside BoundMachine.process_event: the bare machine
        source = transition.source
        for name in self._guard_names:
            try:
                handle = self._resolve(name)
            except PersistError as exc:
                call.guard_error = call.guard_error or exc
                return False
            if not _applies(handle, source.name):
                continue
            view = TransitionView(
                source.name,
                transition.target.name,
                call.event,
                _machine.state_data_copy(self.machine, source),
            )
            try:
                if not handle.call("allows", view):
                    return False
            except PersistError as exc:
                call.guard_error = call.guard_error or exc
                return False
        return True

    def unbind(self) -> None:
        """Detach the binding's hook and guards from the machine."""
        _machine.remove_hook(self.machine, self._hook)
        for transition, guard in self._installed:
            guards = transition.guards
            for index, found in enumerate(guards):
                if found is guard:
                    del guards[index]
                    break
        self._installed.clear()

    def __enter__(self) -> BoundMachine:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.unbind()
