"""The pieces of an attachment's commit that need no attachment state.

:mod:`._attached` runs the protocol; here are the values it passes between
its phases (:class:`Prepared`, :class:`Step`), the journal records of a
commit, the checks made before writing (``max_keys`` for a journal-first
key, a snapshot-only writer meeting a journal), how an interrupted commit
recognises its own entries, and the rule of one live attachment per machine.
"""

from __future__ import annotations

import threading
import weakref
from typing import TYPE_CHECKING, Any, NamedTuple

from .._quota_rules import quota_exceeded
from ..backends.base import to_micros
from ..errors import InvalidArgument, VersionConflict
from ..extensions._views import EventView
from ..formats.journal import JournalRecord
from ._head import Head, read_head
from ._journal import journal_key_or_none, user_keys

if TYPE_CHECKING:
    from .._pipeline import RecordPipeline

__all__ = [
    "Prepared",
    "Step",
    "build_records",
    "check_room_for_key",
    "check_unjournaled",
    "claim",
    "release",
    "stored_prefix",
    "withdraw_if_journaled",
]


class Prepared(NamedTuple):
    """One ``process_event`` call, checked and tagged before the machine moves."""

    events: list[tuple[EventView, object]]  # each fed event and its tagged metadata
    meta: object  # the caller's meta, tagged


class Step(NamedTuple):
    """One event the machine accepted, and where it took the machine."""

    view: EventView
    metadata: object
    source: str | None
    target: str | None


def build_records(
    pipeline: RecordPipeline,
    prepared: Prepared,
    steps: list[Step],
    head: Head,
    behaviors: tuple[str, ...],
) -> list[JournalRecord]:
    """The journal entries of one commit, stamped with one reading of the store's clock."""
    at_us = to_micros(pipeline.clock())
    return [
        JournalRecord(
            event=step.view.name,
            priority=step.view.priority,
            metadata=step.metadata,
            source=step.source,
            target=step.target,
            meta=prepared.meta,
            at_us=at_us,
            snapshot_version=head.snapshot_version,
            behaviors=behaviors,
        )
        for step in steps
    ]


def check_unjournaled(pipeline: RecordPipeline, key: str) -> None:
    """The journal part of this snapshot-only attachment's head (0) must still hold.

    Another attachment journaling the key moved the head: a snapshot
    written now would lose its entries, so this is a ``VersionConflict``
    (and ``Attached.recover`` then says to attach with ``journal=True``).
    """
    if journal_key_or_none(key) is not None and read_head(pipeline, key).journal_seq:
        raise VersionConflict(f"key {key!r} is journaled by another attachment")


def withdraw_if_journaled(pipeline: RecordPipeline, key: str, version: int) -> None:
    """After a snapshot-only write: if the key got a journal meanwhile, take the write back.

    :func:`check_unjournaled` runs before the write; a journaled attachment
    may append its first entry between that check and the write. The
    snapshot just written (``version``, never reused once deleted) would then
    claim a state that does not contain that entry, so it is deleted again
    and the commit is a ``VersionConflict``.
    """
    if journal_key_or_none(key) is not None and read_head(pipeline, key).journal_seq:
        pipeline.backend.delete(pipeline.namespace, key, [version])
        raise VersionConflict(f"key {key!r} was journaled by another attachment meanwhile")


def check_room_for_key(pipeline: RecordPipeline) -> None:
    """``max_keys`` for a key whose first write is a journal entry (a system key).

    Counts every user key (those with only journal entries too); checked
    before the entry is written, so writers creating keys at the same moment
    may pass it together (the snapshot after each first entry is then
    refused by the backend's own ``max_keys`` check).
    """
    backend, namespace = pipeline.backend, pipeline.namespace
    quota = backend.load_quota(namespace)
    if quota is None or quota.max_keys is None:
        return
    used = len(user_keys(backend, namespace))
    if used + 1 > quota.max_keys:
        raise quota_exceeded("max_keys", quota.max_keys, used, 1, namespace=namespace)


def stored_prefix(
    pipeline: RecordPipeline, jkey: str, records: list[JournalRecord], after: int
) -> int:
    """How many journal entries after ``after`` are, in order, exactly ``records``."""
    count = 0
    for info in pipeline.backend.versions(pipeline.namespace, jkey):
        if info.version <= after:
            continue
        if count == len(records) or pipeline.load(jkey, info.version)[1] != records[count]:
            break
        count += 1
    return count


# One key per live machine (in this process): attachments to two keys would
# write one machine's events into two journals, neither of which would
# replay. Two attachments of the same key may share it (one wins each CAS).

_LIVE: weakref.WeakKeyDictionary[Any, weakref.ref[Any]] = weakref.WeakKeyDictionary()
_LIVE_LOCK = threading.Lock()


def claim(machine: Any, attached: Any) -> None:
    """Record ``attached`` as the machine's live attachment, or refuse a second one."""
    with _LIVE_LOCK:
        holder = _LIVE.get(machine)
        other = holder() if holder is not None else None
        if other is not None and not other.detached and other.key != attached.key:
            raise InvalidArgument(
                f"this machine is already attached to key {other.key!r}: detach that "
                "attachment first (one machine persists to one key)"
            )
        _LIVE[machine] = weakref.ref(attached)


def release(machine: Any, attached: Any) -> None:
    """Forget the machine's attachment (it was detached)."""
    with _LIVE_LOCK:
        holder = _LIVE.get(machine)
        if holder is not None and holder() is attached:
            del _LIVE[machine]
