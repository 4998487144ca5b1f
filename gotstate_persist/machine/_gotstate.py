"""The one module that reads and writes gotstate's private attributes.

gotstate (pinned to ``gotstate>=1.0.4,<1.1``) has no public way to read a
machine's whole state, or to put it back without running entry and exit
actions, so the adapter reaches into its internals: ``_graph`` (``_nodes``,
``_parent_map``, ``_initial_states``, ``_transitions``, ``_state_data``,
``_data_locks``, ``_history``, ``_current_state``, ``_graph_lock``),
``_started``, ``_transition_lock``, ``_submachines`` and an async machine's
``_async_lock``. Every such access is here or, for checkpoints (which shadow
the graph's ``get_state_data``/``set_state_data`` with instance attributes),
in :mod:`._gotstate_undo`, so a gotstate upgrade is checked against these two
modules alone;
capture, apply and the fingerprint work with gotstate's state objects, names
and plain dicts, and everything outside the machine package sees only
:class:`~gotstate_persist.formats.MachineSnapshot`.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from typing import Any

from gotstate.core.state_machine import CompositeStateMachine, StateMachine
from gotstate.runtime.async_support import AsyncStateMachine

from ..errors import InvalidArgument

__all__ = [
    "ASYNC_BUSY",
    "DATA_ACCESSORS",
    "LOCK_TIMEOUT",
    "DataTap",
    "add_hook",
    "all_submachines",
    "all_transitions",
    "async_lock",
    "async_locks",
    "current_state",
    "data_items",
    "data_state_count",
    "has_submachines",
    "history_names",
    "holding_async_locks",
    "initial_states",
    "is_started",
    "locked",
    "machine_type",
    "parent_map",
    "refuse_mid_transition",
    "remove_hook",
    "set_state_items",
    "signature",
    "state_by_name",
    "state_data_copy",
    "states",
    "submachines",
    "touch_data",
    "write_state",
]

#: Seconds to wait for a machine's transition lock before giving up. A save
#: from inside one of the machine's own actions would otherwise deadlock.
LOCK_TIMEOUT = 10.0


def machine_type(machine: object) -> str:
    """The machine's type name as stored in a snapshot; ``InvalidArgument`` if not a machine."""
    if isinstance(machine, CompositeStateMachine):
        return "CompositeStateMachine"
    if isinstance(machine, StateMachine):
        return "StateMachine"
    raise InvalidArgument(
        f"expected a gotstate StateMachine or CompositeStateMachine, got {type(machine).__name__}"
    )


def submachines(machine: Any) -> dict[str, Any]:
    """The machine's direct submachines by the name of their composite state."""
    subs: dict[Any, Any] = getattr(machine, "_submachines", None) or {}
    return {state.name: sub for state, sub in subs.items()}


def has_submachines(machine: Any) -> bool:
    return bool(getattr(machine, "_submachines", None))


def all_submachines(machine: Any, path: tuple[str, ...] = ()) -> list[tuple[list[str], Any]]:
    """Every nested submachine with its path of composite state names, outermost first."""
    found: list[tuple[list[str], Any]] = []
    for name, sub in sorted(submachines(machine).items()):
        found.append(([*path, name], sub))
        found.extend(all_submachines(sub, (*path, name)))
    return found


@contextmanager
def locked(machine: Any) -> Iterator[None]:
    """Hold the transition locks of a machine and its submachines, outermost first."""
    with ExitStack() as stack:
        seen: set[int] = set()
        pending = [machine]
        while pending:
            current = pending.pop(0)
            if id(current) in seen:
                raise InvalidArgument("a machine cannot contain itself as a submachine")
            seen.add(id(current))
            machine_type(current)
            refuse_mid_transition(current)
            lock: threading.Lock = current._transition_lock
            if not lock.acquire(timeout=LOCK_TIMEOUT):
                raise InvalidArgument(
                    f"the machine's transition lock was busy for {LOCK_TIMEOUT:.0f}s; do not "
                    "save or restore a machine from inside its own actions or hooks"
                )
            stack.callback(lock.release)
            # add_state()/add_transition() take the graph lock: hold it so the
            # structure cannot change under us (same order as process_event).
            graph_lock: threading.Lock = current._graph._graph_lock
            if not graph_lock.acquire(timeout=LOCK_TIMEOUT):
                raise InvalidArgument(
                    f"the machine's graph lock was busy for {LOCK_TIMEOUT:.0f}s; is another "
                    "thread changing its structure?"
                )
            stack.callback(graph_lock.release)
            subs = submachines(current)
            pending.extend(subs[name] for name in sorted(subs))
        yield


# Structure.


def signature(machine: Any) -> tuple[object, ...]:
    """A cheap value that changes whenever the machine's structure does.

    gotstate offers no way to remove states or transitions, so counts and
    identities detect every structural change made through its API.
    """
    graph = machine._graph
    transitions = graph._transitions
    subs = getattr(machine, "_submachines", None) or {}
    return (
        type(machine),
        len(graph._nodes),
        len(transitions),
        sum(map(len, transitions.values())),
        tuple(map(id, graph._initial_states)),
        tuple(map(id, graph._initial_states.values())),
        tuple(map(id, subs)),
        tuple(signature(sub) for sub in subs.values()),
    )


def states(machine: Any) -> list[Any]:
    """Every state of the machine's graph, in gotstate's order."""
    return list(machine._graph._nodes)


def parent_map(machine: Any) -> dict[Any, Any]:
    """Each state's parent (absent at the top)."""
    return dict(machine._graph._parent_map)


def initial_states(machine: Any) -> dict[Any, Any]:
    """Each composite's initial state, the root's under ``None``."""
    return dict(machine._graph._initial_states)


def all_transitions(machine: Any) -> list[Any]:
    """Every transition of the machine's graph."""
    return [t for group in machine._graph._transitions.values() for t in group]


# State.


def data_state_count(machine: Any) -> int:
    """How many states have a data dict (empty or not)."""
    return len(machine._graph._state_data)


def is_started(machine: Any) -> bool:
    return bool(machine._started)


def current_state(machine: Any) -> Any:
    return machine._graph._current_state


def history_names(machine: Any) -> dict[str, str]:
    """Each composite's last active descendant, by name."""
    return {c.name: s.name for c, s in machine._graph._history._history.items()}


def data_items(machine: Any) -> list[tuple[Any, list[tuple[Any, Any]]]]:
    """Each non-empty state's data items, copied under that state's data lock.

    gotstate's ``set_state_data`` takes the per-state lock, not the transition
    lock, so another thread may be writing data while we capture.
    """
    graph = machine._graph
    locks = graph._data_locks
    found = []
    for state, data in list(graph._state_data.items()):
        if not data:
            continue
        lock = locks.get(state)
        if lock is None:
            items = list(data.items())
        else:
            with lock:
                items = list(data.items())
        if items:
            found.append((state, items))
    return found


def write_state(
    machine: Any,
    *,
    started: bool,
    current: Any,
    history: dict[Any, Any],
    data: dict[str, dict[Any, Any]],
    by_name: dict[str, Any],
) -> None:
    """Swap checked values in with plain assignments that cannot fail.

    ``current`` and ``history`` hold the machine's own state objects, ``data``
    maps a state name (every one of them in ``by_name``) to its new data.
    Callers hold the machine's locks (:func:`locked`); no action or hook runs.
    """
    graph = machine._graph
    graph._current_state = current
    store = graph._history
    with store._lock:
        store._history.clear()
        store._history.update(history)
    locks = graph._data_locks
    state_data = graph._state_data
    for state, existing in state_data.items():
        fresh = data.get(state.name)
        if not fresh and not existing:
            continue  # most states hold no data before or after
        # same dict object: references users hold stay valid
        lock = locks.get(state)
        if lock is not None:
            lock.acquire()
        try:
            existing.clear()
            if fresh:
                existing.update(fresh)
        finally:
            if lock is not None:
                lock.release()
    for name, fresh in data.items():
        state = by_name[name]
        if state not in state_data:  # a state gotstate never gave a data dict
            state_data[state] = dict(fresh)
    machine._started = started


# Hooks and data for bound extensions.


def add_hook(machine: Any, hook: object) -> None:
    """Attach a hook object (``on_enter``/``on_exit``) to the machine.

    gotstate takes hooks only at construction (``hooks=[...]``) and keeps
    them in ``_hooks``, which it iterates on every transition.
    """
    machine._hooks.append(hook)


def remove_hook(machine: Any, hook: object) -> None:
    """Detach a hook added with :func:`add_hook` (no error if already gone)."""
    hooks: list[object] = machine._hooks
    for index, found in enumerate(hooks):
        if found is hook:
            del hooks[index]
            return


def state_by_name(machine: Any, name: str) -> Any:
    """The machine's state called ``name``; ``InvalidArgument`` if it has none."""
    for state in machine._graph._nodes:
        if state.name == name:
            return state
    raise InvalidArgument(f"the machine has no state {name!r}")


def state_data_copy(machine: Any, state: Any) -> dict[Any, Any]:
    """A shallow copy of one state's data, taken under its data lock."""
    graph = machine._graph
    touch_data(graph, state)  # the copy is shallow: its caller may change nested values
    data = graph._state_data.get(state)
    if not data:
        return {}
    lock = graph._data_locks.get(state)
    if lock is None:
        return dict(data)
    with lock:
        return dict(data)


def set_state_items(machine: Any, state: Any, items: dict[str, Any]) -> None:
    """Set ``items`` on one state's data, under its data lock (gotstate's own setter)."""
    graph = machine._graph
    graph.get_state_data(state)  # creates the data dict and its lock if missing
    for key, value in items.items():
        graph.set_state_data(state, key, value)


# The checkpoint's tap (machine/_gotstate_undo.py installs it): the data
# accessors above tell it first.

#: The graph methods that hand out (the live dict) or change a state's data.
DATA_ACCESSORS = ("get_state_data", "set_state_data")


class DataTap:
    """An instance attribute shadowing a graph's data accessor: ``touch(state)``, then it."""

    __slots__ = ("original", "previous", "touch")

    def __init__(self, touch: Callable[[Any], None], original: Any, previous: object) -> None:
        self.touch = touch
        self.original = original
        self.previous = previous

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if args:
            self.touch(args[0])
        elif "state" in kwargs:
            self.touch(kwargs["state"])
        return self.original(*args, **kwargs)


def touch_data(graph: Any, state: Any) -> None:
    """Tell an open checkpoint a state's data is about to be handed out or changed."""
    tap = vars(graph).get(DATA_ACCESSORS[0])
    if isinstance(tap, DataTap):
        tap.touch(state)


# Async machines (gotstate.runtime.async_support).
#
# An AsyncStateMachine never takes ``_transition_lock``: it runs start, stop
# and every transition under its own ``asyncio.Lock`` (``_async_lock``),
# awaiting actions half-way. Capture and apply must therefore hold that lock
# too. It can only be taken in the event loop, so gotstate_persist.AsyncStore
# takes it there and declares it, for the pool thread doing the work, with
# :func:`holding_async_locks`; a sync caller meeting it held is refused.

#: Why a machine whose asyncio lock is held cannot be saved or restored now.
ASYNC_BUSY = (
    "the async machine is in the middle of a transition (or starting or stopping): its "
    "asyncio lock is held. Save or restore it with gotstate_persist.AsyncStore "
    "(`await astore.save_machine(...)`), which waits for the transition to finish, and "
    "never from inside the machine's own actions or hooks"
)

_holding = threading.local()


def async_lock(machine: object) -> asyncio.Lock | None:
    """The asyncio lock an ``AsyncStateMachine`` runs its transitions under; None otherwise."""
    if isinstance(machine, AsyncStateMachine):
        lock = getattr(machine, "_async_lock", None)
        if isinstance(lock, asyncio.Lock):
            return lock
    return None


def async_locks(machine: object) -> list[asyncio.Lock]:
    """The asyncio locks of a machine and its submachines, outermost first.

    The order to take them in (the same as :func:`locked`'s). Empty for a
    sync machine or anything that is not a machine: the caller's sync path
    then says what is wrong with it.
    """
    found: list[asyncio.Lock] = []
    seen: set[int] = set()
    pending: list[Any] = [machine]
    while pending:
        current = pending.pop(0)
        if id(current) in seen:
            break  # a machine containing itself: locked() says so
        seen.add(id(current))
        lock = async_lock(current)
        if lock is not None:
            found.append(lock)
        subs = submachines(current)
        pending.extend(subs[name] for name in sorted(subs))
    return found


def _held() -> set[int]:
    held: set[int] | None = getattr(_holding, "locks", None)
    if held is None:
        held = set()
        _holding.locks = held
    return held


@contextmanager
def holding_async_locks(locks: Sequence[asyncio.Lock]) -> Iterator[None]:
    """Declare, for this thread, that the calling task holds ``locks``.

    The task took them in the event loop and keeps them until this thread's
    work is done, so :func:`locked` may go ahead although they are held.
    """
    held = _held()
    added = [id(lock) for lock in locks if id(lock) not in held]
    held.update(added)
    try:
        yield
    finally:
        held.difference_update(added)


def refuse_mid_transition(machine: object) -> None:
    """``InvalidArgument`` if the async machine's lock is held by someone else.

    A sync capture or apply never waits for it (an asyncio lock cannot be
    waited for outside its event loop). On the thread running the machine's
    event loop this check is exact: no task can start a transition while
    sync code runs there.
    """
    lock = async_lock(machine)
    if lock is not None and lock.locked() and id(lock) not in _held():
        raise InvalidArgument(ASYNC_BUSY)
