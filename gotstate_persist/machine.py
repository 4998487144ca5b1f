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
never runs entry or exit actions or hooks. A snapshot of a differently built
machine goes through the registered structure migrations
(:mod:`gotstate_persist.formats.structure`) first, in memory, as part of the
plan.
"""

from __future__ import annotations

import hashlib
import json
import threading
import weakref
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import msgspec
from gotstate.core.state_machine import CompositeStateMachine, StateMachine
from gotstate.core.states import CompositeState

from ._gcpause import gc_paused
from .errors import FormatError, InvalidArgument, StructureMismatch
from .formats._values import TAG_DICT, UnsupportedValue, decode_value, encode_value
from .formats.machine import (
    SUB_DATA_NESTING,
    TOP_DATA_NESTING,
    MachineSnapshot,
    Structure,
    SubmachineSnapshot,
    decode_structure,
    encode_structure,
)
from .formats.structure import (
    Chain,
    Migrated,
    StructureMigrations,
    apply_chain,
    chain_text,
    map_name,
)

__all__ = ["apply", "capture", "fingerprint"]

#: Seconds to wait for a machine's transition lock before giving up. A save
#: from inside one of the machine's own actions would otherwise deadlock.
LOCK_TIMEOUT = 10.0
_MAX_REPORTED = 8
#: Machines with fewer states (holding data) allocate too little while being
#: captured or applied for pausing the garbage collector to pay off.
GC_PAUSE_MIN_STATES = 64

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
            # add_state()/add_transition() take the graph lock: hold it so the
            # structure cannot change under us (same order as process_event).
            graph_lock: threading.Lock = current._graph._graph_lock
            if not graph_lock.acquire(timeout=LOCK_TIMEOUT):
                raise InvalidArgument(
                    f"the machine's graph lock was busy for {LOCK_TIMEOUT:.0f}s; is another "
                    "thread changing its structure?"
                )
            stack.callback(graph_lock.release)
            subs = _submachines(current)
            pending.extend(subs[name] for name in sorted(subs))
        yield


# Structure and fingerprint.


class _Shape:
    """What the adapter derives from a machine's structure, computed once.

    gotstate offers no way to remove states or transitions, so a cheap
    signature (counts and identities) detects every structural change made
    through its API; the expensive canonical digest is recomputed only then.
    """

    __slots__ = ("by_name", "fingerprint", "signature", "structure", "structure_blob", "summary")

    by_name: dict[str, Any]
    fingerprint: str
    signature: tuple[object, ...]
    structure: Structure
    structure_blob: bytes
    summary: dict[str, Any]

    def __init__(self, machine: Any, signature: tuple[object, ...]) -> None:
        graph = machine._graph
        parents = graph._parent_map
        nodes = list(graph._nodes)
        for state in nodes:
            if type(state.name) is not str:
                raise InvalidArgument(
                    f"state names must be str to be saved, found {type(state.name).__name__} "
                    f"{state.name!r}"
                )
        for group in graph._transitions.values():
            for transition in group:
                if type(transition.get_priority()) is not int:
                    raise InvalidArgument(
                        f"transition priorities must be int to be saved, found "
                        f"{transition.get_priority()!r} on {transition.source.name!r} -> "
                        f"{transition.target.name!r}"
                    )
        index = {state: i for i, state in enumerate(nodes)}
        self.signature = signature
        self.by_name = {state.name: state for state in nodes}
        self.structure = Structure(
            names=[state.name for state in nodes],
            parents=[index.get(parents.get(state), -1) for state in nodes],
            composite=[isinstance(state, CompositeState) for state in nodes],
        )
        self.structure_blob = encode_structure(self.structure)
        # the root's initial entry has no composite (None): sort it first
        initial = sorted(
            [
                ((c.name if c is not None else None), s.name)
                for c, s in graph._initial_states.items()
            ],
            key=lambda pair: (pair[0] is not None, pair[0] or ""),
        )
        transitions = sorted(
            (t.source.name, t.target.name, t.get_priority())
            for group in graph._transitions.values()
            for t in group
        )
        subs = {name: _shape(sub).fingerprint for name, sub in _submachines(machine).items()}
        self.summary = {
            "type": _machine_type(machine),
            "states": sorted(
                (state.name, parent.name if parent is not None else None, composite)
                for state, composite in zip(nodes, self.structure.composite, strict=True)
                for parent in (parents.get(state),)
            ),
            "initial": initial,
            "transitions": transitions,
            "submachines": subs,
        }
        canonical = json.dumps(
            self.summary, sort_keys=True, separators=(",", ":"), ensure_ascii=False
        )
        self.fingerprint = "sha256:" + hashlib.sha256(canonical.encode("utf-8")).hexdigest()


# Derived data only, keyed weakly by machine: never keeps a machine alive and
# is recomputed whenever the signature changes.
_shapes: weakref.WeakKeyDictionary[Any, _Shape] = weakref.WeakKeyDictionary()


def _signature(machine: Any) -> tuple[object, ...]:
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
        tuple(_signature(sub) for sub in subs.values()),
    )


def _shape(machine: Any) -> _Shape:
    signature = _signature(machine)
    shape = _shapes.get(machine)
    if shape is None or shape.signature != signature:
        shape = _Shape(machine, signature)
        _shapes[machine] = shape
    return shape


def fingerprint(machine: StateMachine) -> str:
    """A stable digest of a machine's structure (not its current state).

    Covers state names, parents, composite-ness, initial states, transition
    edges and priorities, the machine type and submachines. Two machines built
    by the same code have the same fingerprint; a snapshot restores only into
    a machine with the snapshot's fingerprint.
    """
    with _locked(machine):
        return _shape(machine).fingerprint


# Capture.


def capture(machine: StateMachine, *, struct_kind: StructKind, max_depth: int) -> MachineSnapshot:
    """Take a consistent snapshot while holding the machine's transition lock."""
    with _locked(machine), gc_paused(_is_large(machine)):
        top = _fields(machine, struct_kind, max_depth - TOP_DATA_NESTING)
        subs = [
            SubmachineSnapshot(path=path, **_fields(sub, struct_kind, max_depth - SUB_DATA_NESTING))
            for path, sub in _all_submachines(machine)
        ]
        return MachineSnapshot(**top, submachines=subs)


def _is_large(machine: Any) -> bool:
    return len(machine._graph._state_data) > GC_PAUSE_MIN_STATES or bool(
        getattr(machine, "_submachines", None)
    )


def _all_submachines(machine: Any, path: tuple[str, ...] = ()) -> list[tuple[list[str], Any]]:
    """Every nested submachine with its path of composite state names, outermost first."""
    found: list[tuple[list[str], Any]] = []
    for name, sub in sorted(_submachines(machine).items()):
        found.append(([*path, name], sub))
        found.extend(_all_submachines(sub, (*path, name)))
    return found


def _fields(machine: Any, struct_kind: StructKind, budget: int) -> dict[str, Any]:
    """The snapshot fields of one machine (its own, not its submachines')."""
    if budget < 0:  # the snapshot's own fixed containers would cross the depth limit
        raise FormatError("the depth limit is too low to save this machine; raise it")
    graph = machine._graph
    shape = _shape(machine)
    current = graph._current_state
    return {
        "machine_type": shape.summary["type"],
        "fingerprint": shape.fingerprint,
        "started": bool(machine._started),
        "current": current.name if current is not None else None,
        "history": {c.name: s.name for c, s in graph._history._history.items()},
        "structure": shape.structure_blob,
        "data": {
            state.name: _encode_data(state.name, items, struct_kind, budget)
            for state, items in _data_items(graph)
        },
    }


def _data_items(graph: Any) -> list[tuple[Any, list[tuple[Any, Any]]]]:
    """Each non-empty state's data items, copied under that state's data lock.

    gotstate's ``set_state_data`` takes the per-state lock, not the transition
    lock, so another thread may be writing data while we capture.
    """
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


def _encode_data(
    state: str, items: list[tuple[Any, Any]], struct_kind: StructKind, budget: int
) -> list[object]:
    out: list[object] = [TAG_DICT]
    append = out.append
    for key, value in items:
        try:
            append(encode_value(key, budget, struct_kind))
            append(encode_value(value, budget, struct_kind))
        except (UnsupportedValue, InvalidArgument) as exc:  # InvalidArgument: unregistered Struct
            raise FormatError(f"cannot save state {state!r}, data key {key!r}: {exc}") from None
    return out


# Apply.

_Commit = Callable[[], None]


def apply(
    machine: StateMachine,
    snapshot: MachineSnapshot,
    *,
    struct_type: StructType,
    migrations: StructureMigrations | None = None,
) -> None:
    """Put ``machine`` into the snapshot's state, or raise and change nothing.

    A snapshot whose structure fingerprint differs from the machine's is
    mapped through ``migrations`` (if a registered chain leads to this
    machine) before anything is planned; otherwise ``StructureMismatch``.
    """
    with _locked(machine), gc_paused(len(snapshot.data) > GC_PAUSE_MIN_STATES):
        live = {tuple(path): sub for path, sub in _all_submachines(machine)}
        if snapshot.fingerprint != _shape(machine).fingerprint:
            snapshot = _migrate(machine, snapshot, migrations, live)
        stored = {tuple(sub.path): sub for sub in snapshot.submachines}
        commits: list[_Commit] = []
        # the top machine first: its fingerprint covers the submachines' structure
        _plan(machine, snapshot, struct_type, commits, path="")
        if set(live) != set(stored) or len(stored) != len(snapshot.submachines):
            raise FormatError("the snapshot's submachines do not match the machine's")
        for key, sub_snapshot in stored.items():
            _plan(live[key], sub_snapshot, struct_type, commits, path="/".join(key))
        for commit in commits:
            commit()


def _plan(
    machine: Any,
    snapshot: MachineSnapshot | SubmachineSnapshot,
    struct_type: StructType,
    commits: list[_Commit],
    path: str,
) -> None:
    shape = _shape(machine)
    if shape.fingerprint != snapshot.fingerprint:
        raise _mismatch(snapshot, shape, path)
    graph = machine._graph
    by_name = shape.by_name
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
    # keyed by name: str hashes are cached in C, State.__hash__ is Python code
    new_data: dict[str, dict[Any, Any]] = {}
    for name, tagged in snapshot.data.items():
        lookup(name)
        try:
            value = decode_value(tagged, struct_type)
        except UnsupportedValue as exc:
            raise FormatError(f"state {name!r}{where}: {exc}") from None
        if type(value) is not dict:
            raise FormatError(f"state {name!r}{where}: state data is not a dict")
        new_data[name] = value

    def commit() -> None:
        graph._current_state = current
        store = graph._history
        with store._lock:
            store._history.clear()
            store._history.update(history)
        locks = graph._data_locks
        state_data = graph._state_data
        for state, existing in state_data.items():
            fresh = new_data.get(state.name)
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
        for name, fresh in new_data.items():
            state = by_name[name]
            if state not in state_data:  # a state gotstate never gave a data dict
                state_data[state] = dict(fresh)
        machine._started = snapshot.started

    commits.append(commit)


def _mismatch(
    snapshot: MachineSnapshot | SubmachineSnapshot,
    shape: _Shape,
    path: str,
    advice: str | None = None,
) -> StructureMismatch:
    def relations(structure: Structure) -> dict[str, tuple[str | None, bool]]:
        names = structure.names
        return {
            name: (names[parent] if 0 <= parent < len(names) else None, composite)
            for name, parent, composite in zip(
                names, structure.parents, structure.composite, strict=False
            )
        }

    stored = relations(decode_structure(snapshot))
    live = relations(shape.structure)
    differences: list[str] = []
    if snapshot.machine_type != shape.summary["type"]:
        differences.append(
            f"snapshot is of a {snapshot.machine_type}, the machine is a {shape.summary['type']}"
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
    if advice is None:
        advice = (
            "Restore into a machine built like the saved one, or register a structure "
            "migration: formats.register_structure_migration(from_fingerprint=<the snapshot "
            "fingerprint>, renames={old: new}, removed={old: destination})."
        )
    return StructureMismatch(
        f"the snapshot does not fit {where}this machine: {'; '.join(shown)}. Snapshot "
        f"fingerprint {snapshot.fingerprint}, machine fingerprint {shape.fingerprint}. "
        f"{advice}",
        snapshot_fingerprint=snapshot.fingerprint,
        machine_fingerprint=shape.fingerprint,
        differences=tuple(differences),
    )


# Structure migrations.


def _migrate(
    machine: Any,
    snapshot: MachineSnapshot,
    migrations: StructureMigrations | None,
    live: dict[tuple[str, ...], Any],
) -> MachineSnapshot:
    """The snapshot mapped onto this machine's structure (in memory), or StructureMismatch.

    Only reads the machine: the result goes through the usual plan/commit.
    """
    shape = _shape(machine)
    if migrations is None or snapshot.machine_type != shape.summary["type"]:
        raise _mismatch(snapshot, shape, "")
    chains = migrations.plan(snapshot.fingerprint, shape.fingerprint)
    if not chains:
        registered = migrations.registered_from(snapshot.fingerprint)
        advice = None
        if registered:
            advice = (
                "Structure migrations are registered for the snapshot's structure ("
                + "; ".join(m.describe() for m in registered)
                + ") but none leads to this machine; register one from_fingerprint="
                "<the snapshot fingerprint> (or give the last one's to_fingerprint= so "
                "that migrations chain)."
            )
        raise _mismatch(snapshot, shape, "", advice)
    old = decode_structure(snapshot)
    fits: list[tuple[Chain, Migrated]] = []
    failed: tuple[Chain, Migrated] | None = None
    for chain in chains:
        if fits and len(chain) > len(fits[0][0]):
            break  # only the shortest chains that fit compete
        result = apply_chain(
            chain,
            structure=old,
            current=snapshot.current,
            history=snapshot.history,
            data=snapshot.data,
            target=shape.structure,
            complete=True,
        )
        if result.differences:
            failed = failed or (chain, result)
        else:
            fits.append((chain, result))
    if not fits:
        assert failed is not None  # chains is not empty
        raise _migration_mismatch(snapshot, shape, *failed, path="")
    if len(fits) > 1:
        raise StructureMismatch(
            "structure migrations are ambiguous: more than one chain of "
            f"{len(fits[0][0])} migrations fits this machine ({chain_text(fits[0][0])}; "
            f"{chain_text(fits[1][0])}). Give each migration its to_fingerprint=, or register "
            "only one way from the old structure to the new one.",
            snapshot_fingerprint=snapshot.fingerprint,
            machine_fingerprint=shape.fingerprint,
            differences=("ambiguous structure migrations",),
        )
    chain, result = fits[0]
    return msgspec.structs.replace(
        snapshot,
        fingerprint=shape.fingerprint,
        structure=shape.structure_blob,
        current=result.current,
        history=result.history,
        data=result.data,
        submachines=_migrate_submachines(snapshot, shape, chain, live),
    )


def _migrate_submachines(
    snapshot: MachineSnapshot, shape: _Shape, chain: Chain, live: dict[tuple[str, ...], Any]
) -> list[SubmachineSnapshot]:
    """Each stored submachine mapped through ``chain``, plus defaults for added ones.

    A submachine's states are merged into its parent machine's graph under the
    same names, so the migration registered for the top machine covers them,
    and the path (composite state names) is mapped like any name. A submachine
    whose composite was removed is dropped; one the new machine added gets the
    state of a freshly built machine (not started, at its initial state, no
    data), as added states get no data.
    """
    out: list[SubmachineSnapshot] = []
    for sub in snapshot.submachines:
        mapped = [map_name(chain, name) for name in sub.path]
        key = tuple(name for name in mapped if name is not None)
        if len(key) != len(mapped):
            continue  # a composite on its path was removed, and the submachine with it
        was, now = "/".join(sub.path), "/".join(key)
        target = live.get(key)
        if target is None:
            named = f"{was!r}" if was == now else f"{was!r} (now {now!r})"
            raise StructureMismatch(
                f"the snapshot's submachine at {named} has no counterpart in this machine after "
                f"the structure migration ({chain_text(chain)}); remove its composite state in "
                f"the migration or add the submachine. Snapshot fingerprint "
                f"{snapshot.fingerprint}, machine fingerprint {shape.fingerprint}.",
                snapshot_fingerprint=snapshot.fingerprint,
                machine_fingerprint=shape.fingerprint,
                differences=(f"submachine {named} is only in the snapshot",),
            )
        sub_shape = _shape(target)
        if sub.fingerprint == sub_shape.fingerprint:
            out.append(msgspec.structs.replace(sub, path=list(key)))
            continue
        if sub.machine_type != sub_shape.summary["type"]:
            raise _mismatch(sub, sub_shape, now)
        result = apply_chain(
            chain,
            structure=decode_structure(sub),
            current=sub.current,
            history=sub.history,
            data=sub.data,
            target=sub_shape.structure,
            complete=False,
        )
        if result.differences:
            raise _migration_mismatch(snapshot, shape, chain, result, path=now)
        out.append(
            msgspec.structs.replace(
                sub,
                path=list(key),
                fingerprint=sub_shape.fingerprint,
                structure=sub_shape.structure_blob,
                current=result.current,
                history=result.history,
                data=result.data,
            )
        )
    stored = {tuple(sub.path) for sub in out}
    if len(stored) != len(out):
        raise FormatError("the snapshot's submachines do not match the machine's")
    for key, sub in live.items():
        if key not in stored:
            out.append(_fresh_submachine(list(key), sub))
    return out


def _fresh_submachine(path: list[str], machine: Any) -> SubmachineSnapshot:
    """The state of a freshly built machine of this structure."""
    shape = _shape(machine)
    initial = machine._graph._initial_states.get(None)
    return SubmachineSnapshot(
        path=path,
        machine_type=shape.summary["type"],
        fingerprint=shape.fingerprint,
        started=False,
        current=initial.name if initial is not None else None,
        history={},
        structure=shape.structure_blob,
        data={},
    )


def _migration_mismatch(
    snapshot: MachineSnapshot, shape: _Shape, chain: Chain, result: Migrated, *, path: str
) -> StructureMismatch:
    differences = result.differences
    shown = differences[:_MAX_REPORTED]
    if len(differences) > _MAX_REPORTED:
        shown.append(f"... and {len(differences) - _MAX_REPORTED} more")
    where = f"submachine {path!r} of " if path else ""
    return StructureMismatch(
        f"the snapshot does not fit {where}this machine even after the structure migration "
        f"({chain_text(chain)}): {'; '.join(shown)}. Snapshot fingerprint "
        f"{snapshot.fingerprint}, machine fingerprint {shape.fingerprint}. Fix the "
        "migration's renames/removed; nothing was changed.",
        snapshot_fingerprint=snapshot.fingerprint,
        machine_fingerprint=shape.fingerprint,
        differences=tuple(differences),
    )


def _names(names: list[str]) -> str:
    shown = ", ".join(repr(n) for n in names[:_MAX_REPORTED])
    if len(names) > _MAX_REPORTED:
        shown += f" and {len(names) - _MAX_REPORTED} more"
    return shown
