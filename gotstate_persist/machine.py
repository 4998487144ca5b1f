"""The gotstate adapter: capture, apply and fingerprint a machine's state.

This is the only module that reads gotstate's private attributes (pinned to
``gotstate>=1.0.4,<1.1``): ``_graph`` (``_nodes``, ``_parent_map``,
``_initial_states``, ``_transitions``, ``_state_data``, ``_data_locks``,
``_history``, ``_current_state``), ``_started``, ``_transition_lock`` and
``_submachines``. Everything else in the package sees only
:class:`~gotstate_persist.formats.MachineSnapshot`.

Apply works in two phases: *plan* validates and decodes everything (structure,
names, state data) without touching the machine, then *commit* swaps the
prepared values in with plain assignments that cannot fail. So a restore
either happens completely or leaves the machine exactly as it was, and it
never runs entry or exit actions or hooks.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import msgspec
from gotstate.core.state_machine import CompositeStateMachine, StateMachine
from gotstate.core.states import CompositeState

from .errors import FormatError, InvalidArgument, StructureMismatch
from .formats._values import TAG_DICT, UnsupportedValue, decode_value, encode_value
from .formats.machine import MachineSnapshot, StateRecord

__all__ = ["apply", "capture", "fingerprint"]

#: Seconds to wait for a machine's transition lock before giving up. A save
#: from inside one of the machine's own actions would otherwise deadlock.
LOCK_TIMEOUT = 10.0
#: Containers that wrap state data inside a stored machine snapshot (payload
#: tuple, snapshot, states list, state record, data dict): subtracted from the
#: codec's depth limit so a refusal can name the state and the data key.
SNAPSHOT_NESTING = 5
SUBMACHINE_NESTING = 2
_MAX_REPORTED = 8

StructKind = Callable[[msgspec.Struct], tuple[str, int]]
StructType = Callable[[str, int], type[msgspec.Struct]]


def _machine_type(machine: object) -> str:
    if isinstance(machine, CompositeStateMachine):
        return "CompositeStateMachine"
    if isinstance(machine, StateMachine):
        return "StateMachine"
    raise InvalidArgument(
        f"expected a gotstate StateMachine or CompositeStateMachine, got {type(machine).__name__}"
    )


def _submachines(machine: Any) -> dict[str, Any]:
    subs: dict[Any, Any] = getattr(machine, "_submachines", None) or {}
    return {state.name: sub for state, sub in subs.items()}


@contextmanager
def _locked(machine: Any) -> Iterator[None]:
    """Hold the transition locks of a machine and its submachines, outermost first."""
    with ExitStack() as stack:
        seen: set[int] = set()
        pending = [machine]
        while pending:
            current = pending.pop(0)
            if id(current) in seen:
                raise InvalidArgument("a machine cannot contain itself as a submachine")
            seen.add(id(current))
            _machine_type(current)
            lock: threading.Lock = current._transition_lock
            if not lock.acquire(timeout=LOCK_TIMEOUT):
                raise InvalidArgument(
                    f"the machine's transition lock was busy for {LOCK_TIMEOUT:.0f}s; do not "
                    "save or restore a machine from inside its own actions or hooks"
                )
            stack.callback(lock.release)
            subs = _submachines(current)
            pending.extend(subs[name] for name in sorted(subs))
        yield


# Structure and fingerprint.


def _structure(machine: Any) -> dict[str, Any]:
    graph = machine._graph
    parents = graph._parent_map
    states = sorted(
        (
            s.name,
            parents[s].name if parents.get(s) is not None else None,
            isinstance(s, CompositeState),
        )
        for s in graph._nodes
    )
    # the root's entry has no composite (None): sort it first without comparing None to str
    initial = sorted(
        [((c.name if c is not None else None), s.name) for c, s in graph._initial_states.items()],
        key=lambda pair: (pair[0] is not None, pair[0] or ""),
    )
    transitions = sorted(
        (t.source.name, t.target.name, t.get_priority())
        for group in graph._transitions.values()
        for t in group
    )
    return {
        "type": _machine_type(machine),
        "states": states,
        "initial": initial,
        "transitions": transitions,
        "submachines": {name: _structure(sub) for name, sub in _submachines(machine).items()},
    }


def _digest(structure: dict[str, Any]) -> str:
    canonical = json.dumps(structure, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "sha256:" + hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def fingerprint(machine: StateMachine) -> str:
    """A stable digest of a machine's structure (not its current state).

    Covers state names, parents, composite-ness, initial states, transition
    edges and priorities, the machine type and submachines. Two machines built
    by the same code have the same fingerprint; a snapshot restores only into
    a machine with the snapshot's fingerprint.
    """
    with _locked(machine):
        return _digest(_structure(machine))


# Capture.


def capture(machine: StateMachine, *, struct_kind: StructKind, max_depth: int) -> MachineSnapshot:
    """Take a consistent snapshot while holding the machine's transition lock."""
    with _locked(machine):
        return _capture(machine, struct_kind, max_depth - SNAPSHOT_NESTING)


def _capture(machine: Any, struct_kind: StructKind, budget: int) -> MachineSnapshot:
    graph = machine._graph
    parents = graph._parent_map
    state_data = graph._state_data
    records = []
    for state in graph._nodes:
        parent = parents.get(state)
        data = state_data.get(state)
        records.append(
            StateRecord(
                state.name,
                parent.name if parent is not None else None,
                isinstance(state, CompositeState),
                _encode_data(state.name, data, struct_kind, budget) if data else None,
            )
        )
    current = graph._current_state
    return MachineSnapshot(
        machine_type=_machine_type(machine),
        fingerprint=_digest(_structure(machine)),
        started=bool(machine._started),
        current=current.name if current is not None else None,
        history={c.name: s.name for c, s in graph._history._history.items()},
        states=records,
        submachines={
            name: _capture(sub, struct_kind, budget - SUBMACHINE_NESTING)
            for name, sub in _submachines(machine).items()
        },
    )


def _encode_data(
    state: str, data: dict[Any, Any], struct_kind: StructKind, budget: int
) -> list[object]:
    out: list[object] = [TAG_DICT]
    for key, value in data.items():
        try:
            out.append(encode_value(key, budget, struct_kind))
            out.append(encode_value(value, budget, struct_kind))
        except UnsupportedValue as exc:
            raise FormatError(f"cannot save state {state!r}, data key {key!r}: {exc}") from None
        except InvalidArgument as exc:  # an unregistered Struct
            raise FormatError(f"cannot save state {state!r}, data key {key!r}: {exc}") from None
    return out


# Apply.

_Commit = Callable[[], None]


def apply(machine: StateMachine, snapshot: MachineSnapshot, *, struct_type: StructType) -> None:
    """Put ``machine`` into the snapshot's state, or raise and change nothing."""
    with _locked(machine):
        commits: list[_Commit] = []
        _plan(machine, snapshot, struct_type, commits, path="")
        for commit in commits:
            commit()


def _plan(
    machine: Any,
    snapshot: MachineSnapshot,
    struct_type: StructType,
    commits: list[_Commit],
    path: str,
) -> None:
    structure = _structure(machine)
    actual = _digest(structure)
    if actual != snapshot.fingerprint:
        raise _mismatch(snapshot, structure, actual, path)
    graph = machine._graph
    by_name = {state.name: state for state in graph._nodes}
    where = f" (submachine {path})" if path else ""

    def lookup(name: str | None) -> Any:
        if name is None:
            return None
        state = by_name.get(name)
        if state is None:
            raise FormatError(f"snapshot names state {name!r}, absent from the machine{where}")
        return state

    current = lookup(snapshot.current)
    history = {lookup(c): lookup(s) for c, s in snapshot.history.items()}
    new_data: dict[Any, dict[Any, Any]] = {}
    for record in snapshot.states:
        state = lookup(record.name)
        if record.data is None:
            continue
        try:
            value = decode_value(record.data, struct_type)
        except UnsupportedValue as exc:
            raise FormatError(f"state {record.name!r}{where}: {exc}") from None
        if type(value) is not dict:
            raise FormatError(f"state {record.name!r}{where}: state data is not a dict")
        new_data[state] = value
    subs = _submachines(machine)
    if set(subs) != set(snapshot.submachines):
        raise FormatError(f"snapshot's submachines do not match the machine's{where}")
    for name, sub_snapshot in snapshot.submachines.items():
        _plan(subs[name], sub_snapshot, struct_type, commits, f"{path}/{name}")

    def commit() -> None:
        graph._current_state = current
        store = graph._history
        with store._lock:
            store._history.clear()
            store._history.update(history)
        locks = graph._data_locks
        for state in graph._nodes:
            fresh = new_data.get(state, {})
            existing = graph._state_data.get(state)
            if existing is None:
                graph._state_data[state] = dict(fresh)
                continue
            lock = locks.get(state)
            if lock is None:
                existing.clear()
                existing.update(fresh)
            else:
                with lock:
                    existing.clear()
                    existing.update(fresh)
        machine._started = snapshot.started

    commits.append(commit)


def _mismatch(
    snapshot: MachineSnapshot, structure: dict[str, Any], actual: str, path: str
) -> StructureMismatch:
    stored = {r.name: (r.parent, r.composite) for r in snapshot.states}
    live = {name: (parent, composite) for name, parent, composite in structure["states"]}
    differences: list[str] = []
    if snapshot.machine_type != structure["type"]:
        differences.append(
            f"snapshot is of a {snapshot.machine_type}, the machine is a {structure['type']}"
        )
    only_stored = sorted(set(stored) - set(live))
    only_live = sorted(set(live) - set(stored))
    if only_stored:
        differences.append(f"states only in the snapshot: {_names(only_stored)}")
    if only_live:
        differences.append(f"states only in the machine: {_names(only_live)}")
    for name in sorted(set(stored) & set(live)):
        (old_parent, old_comp), (new_parent, new_comp) = stored[name], live[name]
        if old_parent != new_parent:
            differences.append(
                f"state {name!r} has parent {old_parent!r} in the snapshot, "
                f"{new_parent!r} in the machine"
            )
        if old_comp != new_comp:
            differences.append(f"state {name!r} is composite in only one of them")
    if not differences:
        differences.append("initial states, transitions or submachines differ")
    shown = differences[:_MAX_REPORTED]
    if len(differences) > _MAX_REPORTED:
        shown.append(f"... and {len(differences) - _MAX_REPORTED} more")
    where = f"submachine {path!r} of " if path else ""
    return StructureMismatch(
        f"the snapshot does not fit {where}this machine: {'; '.join(shown)}. Snapshot "
        f"fingerprint {snapshot.fingerprint}, machine fingerprint {actual}. Restore into a "
        "machine built like the saved one, or register a structure migration.",
        snapshot_fingerprint=snapshot.fingerprint,
        machine_fingerprint=actual,
        differences=tuple(differences),
    )


def _names(names: list[str]) -> str:
    shown = ", ".join(repr(n) for n in names[:_MAX_REPORTED])
    if len(names) > _MAX_REPORTED:
        shown += f" and {len(names) - _MAX_REPORTED} more"
    return shown
