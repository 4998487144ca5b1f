"""The gotstate adapter: capture, apply and fingerprint a machine's state.

This package is the only place that reads gotstate's private attributes
(pinned to ``gotstate>=1.0.4,<1.1``), and inside it only
:mod:`~gotstate_persist.machine._gotstate` does; everything else in the
library sees only :class:`~gotstate_persist.formats.MachineSnapshot`.

:func:`capture` takes a consistent snapshot under the machine's locks.
:func:`apply` restores one in two phases, plan then commit, so a restore
either happens completely or leaves the machine exactly as it was, and it
never runs entry or exit actions or hooks. A snapshot whose machine changed
only its transitions restores as is (the state tree matches); one of a
differently built state tree goes through the registered structure
migrations first, in memory. :func:`fingerprint` is the structure digest
(``part="states"``: the state tree's alone).

An ``AsyncStateMachine`` runs its transitions under its own asyncio lock:
capture and apply refuse one whose lock is held (a transition is half-way)
unless the caller took that lock in the event loop and says so with
:func:`holding_async_locks` (``gotstate_persist.AsyncStore`` does).
"""

from __future__ import annotations

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
    machine_type,
    remove_hook,
    set_state_items,
    state_by_name,
    state_data_copy,
)

__all__ = [
    "add_hook",
    "all_transitions",
    "apply",
    "async_locks",
    "capture",
    "fingerprint",
    "holding_async_locks",
    "machine_type",
    "remove_hook",
    "set_state_items",
    "state_by_name",
    "state_data_copy",
]
