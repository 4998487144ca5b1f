"""The built-in record format of a journal entry (kind ``gotstate.journal``).

An attached machine's journal is one system key per user key
(``_names.system_key("journal", key)``); each accepted event is one version
of it, so the backend's version number is the entry's sequence number: it
is assigned by the same compare-and-set that makes the append the commit
point, and it is never reused, even after a delete.

``metadata`` (the event's) and ``meta`` (the caller's: actor, request id,
...) are kept in the exact-type tagged form of state data
(:mod:`~gotstate_persist.formats._values`), so a Decimal or a tuple comes
back as itself. ``at_us`` is microseconds since the epoch, UTC. These
Structs are a stored format: a change is a new format version with an
upcaster, never an edit of version 1.
"""

from __future__ import annotations

from typing import Any

import msgspec

__all__ = ["JOURNAL_FORMAT_VERSION", "JOURNAL_KIND", "JournalRecord"]

JOURNAL_KIND = "gotstate.journal"
JOURNAL_FORMAT_VERSION = 1


class JournalRecord(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One accepted event, as the machine received it, and where it took the machine.

    ``source``/``target`` name the innermost active state before and after
    the event (None when the machine had none). ``snapshot_version`` is the
    newest snapshot of the key when the entry was appended (0: none yet).
    ``behaviors`` names the state behaviors bound when the event ran: their
    data changes are not in the entry, so a replay must run the same ones.
    """

    event: str
    priority: int
    metadata: Any
    source: str | None
    target: str | None
    meta: Any
    at_us: int
    snapshot_version: int
    behaviors: tuple[str, ...] = ()
