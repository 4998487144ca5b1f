"""Apply: put a machine into a snapshot's state completely, or not at all.

Apply works in two phases: *plan* validates and decodes everything (structure,
names, state data) without touching the machine, then *commit* swaps the
prepared values in with plain assignments that cannot fail. So a restore
either happens completely or leaves the machine exactly as it was, and it
never runs entry or exit actions or hooks. A snapshot whose machine differs
only in its transitions restores as is (:mod:`._tree`); one of a differently
built state tree goes through the registered structure migrations
(:mod:`gotstate_persist.formats.structure`) first, in memory, as part of the
plan. Registered Structs in state data are rebuilt by the caller's
``structs`` decoder (``FormatRegistry.decode_struct``: an older format
version is upcast to the newest, as a top-level record is on load), also
during the plan.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gotstate.core.state_machine import StateMachine

from .._gcpause import gc_paused
from ..errors import FormatError, InvalidArgument
from ..formats._state_data import decode_items
from ..formats._values import (
    StructDecoder,
    StructType,
    UnsupportedValue,
    typed_structs,
)
from ..formats.machine import MachineSnapshot, SubmachineSnapshot
from ..formats.structure import StructureMigrations
from ._capture import GC_PAUSE_MIN_STATES
from ._fingerprint import shape
from ._gotstate import all_submachines, locked, write_state
from ._mismatch import mismatch
from ._structure_migration import migrate_snapshot
from ._tree import transitions_only

__all__ = ["apply", "apply_locked"]

_Commit = Callable[[], None]


def apply(
    machine: StateMachine,
    snapshot: MachineSnapshot,
    *,
    structs: StructDecoder | None = None,
    struct_type: StructType | None = None,
    migrations: StructureMigrations | None = None,
) -> None:
    """Put ``machine`` into the snapshot's state, or raise and change nothing.

    A snapshot whose structure fingerprint differs from the machine's
    restores as is when only transitions differ (the state trees match);
    otherwise it is mapped through ``migrations`` (if a registered chain
    leads to this machine) before anything is planned; otherwise
    ``StructureMismatch``.
    ``snapshot`` may be of any version of the format (a subclass of
    :class:`MachineSnapshot`): only the fields of version 1 are applied.

    ``structs`` rebuilds the registered Structs in state data: pass
    ``formats.decode_struct``, which upcasts older versions. ``struct_type``
    (``formats.type_for``, the older seam) decodes each as its stored
    version's type instead, without upcasting; give exactly one of them.
    """
    if (structs is None) == (struct_type is None):
        raise InvalidArgument("apply takes exactly one of structs= and struct_type=")
    decoder = typed_structs(struct_type) if struct_type is not None else structs
    assert decoder is not None
    with locked(machine):
        apply_locked(machine, snapshot, decoder, migrations)


def apply_locked(
    machine: StateMachine,
    snapshot: MachineSnapshot,
    structs: StructDecoder,
    migrations: StructureMigrations | None,
) -> None:
    """:func:`apply` for a caller that already holds the machine's locks (``locked``).

    ``structs`` rebuilds the registered Structs in state data (``apply``'s
    ``structs``, or the decoder it made of ``struct_type``).
    ``Store.restore_machine`` takes the locks before it decodes, so that one
    pause of the collector covers decode and apply: the decoded snapshot is
    then freed by reference counting before any collection scans it (with a
    pause each, the first collection after decoding traversed all of it, a
    third of the time of a 10,000-state restore).
    """
    with gc_paused(len(snapshot.data) > GC_PAUSE_MIN_STATES):
        live = {tuple(path): sub for path, sub in all_submachines(machine)}
        derived = shape(machine)
        if snapshot.fingerprint != derived.fingerprint:
            # a migration registered from this very structure says how its
            # states map (two siblings swapping names leave the tree equal):
            # it wins over restoring "as is" because only transitions differ
            registered = (
                migrations is not None
                and snapshot.machine_type == derived.summary["type"]
                and bool(migrations.plan(snapshot.fingerprint, derived.fingerprint))
            )
            as_is = None if registered else transitions_only(machine, snapshot, live)
            snapshot = as_is or migrate_snapshot(machine, snapshot, migrations, live)
        stored = {tuple(sub.path): sub for sub in snapshot.submachines}
        commits: list[_Commit] = []
        # the top machine first: its fingerprint covers the submachines' structure
        _plan(machine, snapshot, structs, commits, path="")
        if set(live) != set(stored) or len(stored) != len(snapshot.submachines):
            raise FormatError("the snapshot's submachines do not match the machine's")
        for key, sub_snapshot in stored.items():
            _plan(live[key], sub_snapshot, structs, commits, path="/".join(key))
        for commit in commits:
            commit()


def _plan(
    machine: Any,
    snapshot: MachineSnapshot | SubmachineSnapshot,
    structs: StructDecoder,
    commits: list[_Commit],
    path: str,
) -> None:
    """Check and decode one machine's part of the snapshot; queue its commit."""
    derived = shape(machine)
    if derived.fingerprint != snapshot.fingerprint:
        raise mismatch(snapshot, derived, path)
    by_name = derived.by_name
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
            value = decode_items(tagged, structs)
        except (UnsupportedValue, FormatError) as exc:
            # a Struct newer than this code, or one whose upcast failed: the
            # message names its kind and versions, never its data
            raise FormatError(f"state {name!r}{where}: {exc}") from None
        if type(value) is not dict:
            raise FormatError(f"state {name!r}{where}: state data is not a dict")
        new_data[name] = value
    started = snapshot.started

    def commit() -> None:
        write_state(
            machine,
            started=started,
            current=current,
            history=history,
            data=new_data,
            by_name=by_name,
        )

    commits.append(commit)
