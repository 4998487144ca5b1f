"""The checkpoint's half of the gotstate adapter: control state and data taps.

Split from :mod:`._gotstate` (which stays the adapter's reader and writer for
everything else) so each stays small; like it, this module reaches into
gotstate's private attributes (``_graph``, ``_state_data``, ``_data_locks``,
``_history``, ``_current_state``, ``_started``) and only
:mod:`._undo` uses it.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from itertools import islice
from typing import Any, NamedTuple

from ._gotstate import DATA_ACCESSORS, DataTap

__all__ = [
    "ControlState",
    "control_state",
    "deep_copy_data",
    "drop_new_data",
    "is_tapped",
    "put_control",
    "put_data",
    "tap_data",
    "untap_data",
]


_ABSENT = object()


class ControlState(NamedTuple):
    """What a checkpoint records up front: cheap, no state data."""

    current: Any
    history: dict[Any, Any]
    started: bool
    data_count: int  # gotstate only ever adds to ``_state_data``: the new ones come last
    lock_count: int
    node_count: int


def control_state(machine: Any) -> ControlState:
    """The machine's own current state, history, started flag and data counts."""
    graph = machine._graph
    store = graph._history
    with store._lock:
        history = dict(store._history)
    return ControlState(
        current=graph._current_state,
        history=history,
        started=bool(machine._started),
        data_count=len(graph._state_data),
        lock_count=len(graph._data_locks),
        node_count=len(graph._nodes),
    )


def is_tapped(machine: Any) -> bool:
    """Whether the machine's graph data accessors are tapped (a checkpoint is open)."""
    return any(isinstance(vars(machine._graph).get(name), DataTap) for name in DATA_ACCESSORS)


def tap_data(machine: Any, touch: Callable[[Any], None]) -> None:
    """Shadow the graph's data accessors so each call first runs ``touch(state)``.

    gotstate calls them through the instance (``graph.get_state_data(...)``),
    so instance attributes take effect for every caller, gotstate included.
    """
    graph = machine._graph
    own = vars(graph)
    for name in DATA_ACCESSORS:
        setattr(graph, name, DataTap(touch, getattr(graph, name), own.get(name, _ABSENT)))


def untap_data(machine: Any, touch: Callable[[Any], None]) -> None:
    """Remove the taps :func:`tap_data` installed with ``touch``; the graph is as before."""
    graph = machine._graph
    own = vars(graph)
    for name in DATA_ACCESSORS:
        tap = own.get(name)
        if not isinstance(tap, DataTap) or tap.touch != touch:
            continue
        if tap.previous is _ABSENT:
            del own[name]
        else:
            own[name] = tap.previous


def deep_copy_data(machine: Any, state: Any) -> tuple[dict[Any, Any] | None, dict[Any, Any]]:
    """The state's live data dict (``None`` if none) and a deep copy taken under its lock."""
    graph = machine._graph
    live: dict[Any, Any] | None = graph._state_data.get(state)
    if live is None:
        return None, {}
    lock = graph._data_locks.get(state)
    if lock is None:
        return live, copy.deepcopy(live)
    with lock:
        return live, copy.deepcopy(live)


def put_control(machine: Any, control: ControlState) -> None:
    """Put back current state, history and started flag (callers hold :func:`locked`)."""
    graph = machine._graph
    graph._current_state = control.current
    store = graph._history
    with store._lock:
        store._history.clear()
        store._history.update(control.history)
    machine._started = control.started


def put_data(machine: Any, state: Any, live: dict[Any, Any], saved: dict[Any, Any]) -> None:
    """Put ``saved`` into the state's own dict object ``live``, under its data lock."""
    graph = machine._graph
    lock = graph._data_locks.get(state)
    if lock is not None:
        lock.acquire()
    try:
        live.clear()
        live.update(saved)
    finally:
        if lock is not None:
            lock.release()
    graph._state_data[state] = live


def drop_new_data(machine: Any, control: ControlState) -> None:
    """Remove data dicts (and their locks) created after ``control`` was read.

    Those of states that joined the graph since (a structure change, which a
    checkpoint does not undo) stay, so every state of the graph keeps its dict.
    """
    graph = machine._graph
    nodes = graph._nodes
    for table, count in (
        (graph._state_data, control.data_count),
        (graph._data_locks, control.lock_count),
    ):
        for state in list(islice(table, count, None)):
            if state not in nodes:
                del table[state]
