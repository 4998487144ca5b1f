"""The gotstate adapter: capture, apply and fingerprint a machine's state.

This package is the only place that reads gotstate's private attributes
(pinned to ``gotstate>=1.0.4,<1.1``), and inside it only
:mod:`~gotstate_persist.machine._gotstate` does; everything else in the
library sees only :class:`~gotstate_persist.formats.MachineSnapshot`.

:func:`capture` takes a consistent snapshot under the machine's locks.
:func:`apply` restores one in two phases, plan then commit, so a restore
either happens completely or leaves the machine exactly as it was, and it
never runs entry or exit actions or hooks; registered Structs in state data
come back as the newest version of their kind (``structs=formats.decode_struct``
upcasts older ones). A snapshot whose machine changed
only its transitions restores as is (the state tree matches: names, parents,
composite-ness, and for snapshots of format version 2, which record the
state-tree digest, initial states and submachines too); one of a differently
built state tree goes through the registered structure migrations first, in
memory. A refused restore raises ``StructureMismatch`` naming what differs:
for a version 2 snapshot, which records its state tree and transitions, every
state, parent, composite-ness, initial state, submachine and transition.
:func:`fingerprint` is the structure digest (``part="states"``: the state
tree's alone).
:func:`checkpoint` remembers a
machine's state cheaply (data is copied on first access) so that
:meth:`Checkpoint.rollback` can put it back, in memory, after a failed commit.

An ``AsyncStateMachine`` runs its transitions under its own asyncio lock:
capture and apply refuse one whose lock is held (a transition is half-way)
unless the caller took that lock in the event loop and says so with
:func:`holding_async_locks` (``gotstate_persist.AsyncStore`` does).
"""

from __future__ import annotations

from ..formats._values import StructDecoder as StructDecoder
from ..formats._values import StructKind as StructKind
from ..formats._values import StructType as StructType
from ._apply import apply
from ._capture import GC_PAUSE_MIN_STATES as GC_PAUSE_MIN_STATES
from ._capture import capture
from ._fingerprint import fingerprint
from ._gotstate import LOCK_TIMEOUT as LOCK_TIMEOUT
from ._gotstate import (
    add_hook,
    all_transitions,
    async_locks,
    holding_async_locks,
    is_started,
    machine_type,
    remove_hook,
    set_state_items,
    state_by_name,
    state_data_copy,
)
from ._undo import Checkpoint, checkpoint

__all__ = [
    "Checkpoint",
    "add_hook",
    "all_transitions",
    "apply",
    "async_locks",
    "capture",
    "checkpoint",
    "fingerprint",
    "holding_async_locks",
    "is_started",
    "machine_type",
    "remove_hook",
    "set_state_items",
    "state_by_name",
    "state_data_copy",
]
