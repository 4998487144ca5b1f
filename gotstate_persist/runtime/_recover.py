"""Recovery: a key's newest snapshot (or one in force at a moment) plus its journal.

``recover`` is how a machine comes back after a crash or on another worker:
the newest snapshot is applied (entry and exit actions do not run), then the
journal entries after the sequence that snapshot covers are replayed through
the machine, so guards and actions run again, as in Akka's recovery. A key
with entries but no snapshot yet replays from the machine's start.

Replay is checked, not trusted: every entry must be accepted again and end
in the state it recorded; otherwise the machine's behaviour changed since
and ``ReplayDiverged`` names the entry. Either way a failed recovery leaves
the machine as it was given (it is captured first and put back).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

import msgspec

from .. import machine as _machine
from ..backends import VersionInfo
from ..errors import InvalidArgument, NotFound, ReplayDiverged
from ..extensions._views import EventView, gotstate_event
from ..formats.machine import MachineSnapshot
from ._journal import JournalEntry, read_journal

if TYPE_CHECKING:
    from .._pipeline import RecordPipeline

__all__ = ["Feed", "Recovered", "active_name", "bare_feed", "check_moment", "recover"]

#: Gives one journaled event to the machine; returns whether it was accepted.
Feed = Callable[[EventView], bool]


class Recovered(msgspec.Struct, frozen=True):
    """What a recovery applied: the key's head as the machine now holds it."""

    snapshot: VersionInfo | None
    journal_seq: int
    replayed: int


def active_name(machine: Any) -> str | None:
    """The innermost active state's name (None before the machine starts)."""
    state = machine.current_state
    return None if state is None else str(state.name)


def bare_feed(machine: Any) -> Feed:
    """Replay through the machine itself (no extension runs)."""

    def feed(view: EventView) -> bool:
        return bool(machine.process_event(gotstate_event(view)))

    return feed


def check_moment(at: object) -> datetime:
    """``at`` as given, if it is an aware datetime; ``InvalidArgument`` otherwise."""
    if type(at) is not datetime:
        raise InvalidArgument("at must be a datetime")
    if at.tzinfo is None or at.utcoffset() is None:
        raise InvalidArgument(
            "at must be an aware datetime (e.g. datetime(..., tzinfo=timezone.utc)); "
            "a naive one does not name a moment"
        )
    return at


def _snapshot_at(pipeline: RecordPipeline, key: str, at: datetime | None) -> VersionInfo | None:
    versions = pipeline.backend.versions(pipeline.namespace, key)
    if at is not None:
        versions = [info for info in versions if info.created_at <= at]
    return versions[-1] if versions else None


def recover(
    pipeline: RecordPipeline,
    key: str,
    machine: Any,
    *,
    at: datetime | None = None,
    feed: Feed | None = None,
) -> Recovered:
    """Bring ``machine`` to ``key``'s newest state (or the state in force at ``at``).

    ``feed`` replays one entry (default: the bare machine; an attachment with
    extensions passes its binding, whose processors are bypassed).
    """
    formats = pipeline.formats
    info = _snapshot_at(pipeline, key, at)
    if info is None and at is not None:
        raise NotFound(
            f"key {key!r} has no snapshot at or before that moment; "
            "`gotstate-persist log` lists when each was taken"
        )
    snapshot: MachineSnapshot | None = None
    covered = 0
    if info is not None:
        info, snapshot = pipeline.load_snapshot(key, info.version)
        covered = int(getattr(snapshot, "journal_seq", 0))
    entries = read_journal(pipeline, key, since=covered, until=at)
    if snapshot is None:
        when = "" if at is None else " at that moment"
        if not entries:
            raise NotFound(f"key {key!r} has no snapshot or journal entry{when}")
        if entries[0].seq != 1:
            raise NotFound(
                f"key {key!r} has no snapshot{when} and its journal starts at sequence "
                f"{entries[0].seq}: the events before it are gone; restore a version instead"
            )
        if _machine.is_started(machine):
            raise InvalidArgument(
                f"key {key!r} has no snapshot yet: recover into a machine that was never "
                "started, so its journal replays from the start"
            )
    before = _machine.capture(
        machine,
        struct_kind=formats.kind_of,
        max_depth=pipeline.limits.max_depth,
        snapshot_type=pipeline.snapshot_type(),
    )
    try:
        if snapshot is not None:
            _machine.apply(
                machine,
                snapshot,
                struct_type=formats.type_for,
                migrations=formats.structure_migrations,
            )
        else:
            machine.start()
        replay(machine, entries, feed if feed is not None else bare_feed(machine))
    except BaseException:
        _machine.apply(
            machine, before, struct_type=formats.type_for, migrations=formats.structure_migrations
        )
        raise
    last = entries[-1].seq if entries else covered
    return Recovered(snapshot=info, journal_seq=last, replayed=len(entries))


def replay(machine: Any, entries: list[JournalEntry], feed: Feed) -> None:
    """Feed each entry; ``ReplayDiverged`` at the first that goes elsewhere than it did."""
    for entry in entries:
        accepted = feed(entry.event)
        reached = active_name(machine)
        if not accepted or reached != entry.target:
            went = "was refused" if not accepted else f"reached {reached!r}"
            raise ReplayDiverged(
                f"journal entry {entry.seq} ({entry.event.name!r}: {entry.source!r} -> "
                f"{entry.target!r}) {went} on replay: the machine's transitions, guards or "
                "actions changed since it was written; recover with the machine version "
                "that wrote it, or restore a snapshot version instead",
                seq=entry.seq,
            )
