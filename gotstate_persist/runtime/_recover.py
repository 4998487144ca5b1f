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
from typing import TYPE_CHECKING, Any, NamedTuple

import msgspec

from .. import machine as _machine
from ..backends import VersionInfo
from ..errors import InvalidArgument, NotFound, ReplayDiverged
from ..extensions._views import EventView, gotstate_event
from ..formats.machine import MachineSnapshot
from ._checks import refuse_async
from ._head import Head
from ._journal import JournalEntry, journal_key_or_none, read_journal

if TYPE_CHECKING:
    from .._pipeline import RecordPipeline
    from ..extensions import BoundMachine

__all__ = [
    "Feed",
    "Recovered",
    "RecoveryPlan",
    "active_name",
    "apply_snapshot",
    "bare_feed",
    "bound_feed",
    "capture_for_undo",
    "check_behaviors",
    "check_moment",
    "check_replayable",
    "check_replayed",
    "check_source",
    "plan_recovery",
    "recover",
]

#: Gives one journaled event to the machine; returns whether it was accepted.
Feed = Callable[[EventView], bool]


class Recovered(msgspec.Struct, frozen=True):
    """What a recovery applied: the key's head as the machine now holds it."""

    snapshot: VersionInfo | None
    journal_seq: int
    replayed: int

    def head(self) -> Head:
        """The key's head the machine is at now."""
        return Head(0 if self.snapshot is None else self.snapshot.version, self.journal_seq)


def active_name(machine: Any) -> str | None:
    """The innermost active state's name (None before the machine starts)."""
    state = machine.current_state
    return None if state is None else str(state.name)


def bare_feed(machine: Any) -> Feed:
    """Replay through the machine itself (no extension runs)."""

    def feed(view: EventView) -> bool:
        return bool(machine.process_event(gotstate_event(view)))

    return feed


def bound_feed(bound: BoundMachine) -> Feed:
    """Replay through a binding's behaviors (processors bypassed); their failure stops it.

    A behavior that fails on replay did not do what it did when the entry
    was written, so the replay cannot reproduce that machine: its
    ``ExtensionFailed`` propagates and the recovery is undone.
    """

    def feed(view: EventView) -> bool:
        handled, error = bound.feed(view)
        if error is not None:
            raise error
        return handled

    return feed


def check_moment(at: object, *, version: int | None = None) -> datetime:
    """``at`` if it is an aware datetime and no ``version`` is given; else ``InvalidArgument``."""
    if version is not None:
        raise InvalidArgument("pass version= or at=, not both")
    if type(at) is not datetime:
        raise InvalidArgument("at must be a datetime")
    if at.tzinfo is None or at.utcoffset() is None:
        raise InvalidArgument(
            "at must be an aware datetime (e.g. datetime(..., tzinfo=timezone.utc)); "
            "a naive one does not name a moment"
        )
    return at


def _journal_prefix_end(pipeline: RecordPipeline, key: str, at: datetime) -> int | None:
    """The last sequence before the first entry stamped after ``at`` (None: no journal).

    A clock that stepped back can stamp a later entry earlier; what was in
    force at ``at`` is the journal up to its first entry after ``at``.
    """
    jkey = journal_key_or_none(key)
    versions = pipeline.backend.versions(pipeline.namespace, jkey) if jkey is not None else []
    if not versions:
        return None
    end = versions[0].version - 1
    for info in versions:
        if info.created_at > at:
            break
        end = info.version
    return end


def _load_at(
    pipeline: RecordPipeline, key: str, at: datetime | None
) -> tuple[VersionInfo | None, MachineSnapshot | None]:
    """The snapshot in force at ``at`` (the newest if None), loaded; (None, None) if none.

    At a moment: the newest snapshot not after it whose journal sequence
    is within the journal as it stood then.
    """
    versions = pipeline.backend.versions(pipeline.namespace, key)
    if at is None:
        if not versions:
            return None, None
        return pipeline.load_snapshot(key, versions[-1].version)
    end = _journal_prefix_end(pipeline, key, at)
    for candidate in reversed([info for info in versions if info.created_at <= at]):
        info, snapshot = pipeline.load_snapshot(key, candidate.version)
        if end is None or int(getattr(snapshot, "journal_seq", 0)) <= end:
            return info, snapshot
    return None, None


class RecoveryPlan(NamedTuple):
    """What a recovery will apply, read and checked before the machine is touched."""

    info: VersionInfo | None
    snapshot: MachineSnapshot | None
    entries: list[JournalEntry]
    covered: int

    def result(self) -> Recovered:
        last = self.entries[-1].seq if self.entries else self.covered
        return Recovered(snapshot=self.info, journal_seq=last, replayed=len(self.entries))


def plan_recovery(
    pipeline: RecordPipeline,
    key: str,
    machine: Any,
    at: datetime | None,
    *,
    started: bool = False,
) -> RecoveryPlan:
    """Read the snapshot and the entries to replay; refuse what cannot be recovered.

    ``started``: the machine was just built and started (``open_machine``),
    so a journal without a snapshot replays from it as from ``start()``.
    """
    info, snapshot = _load_at(pipeline, key, at)
    if info is None and at is not None:
        raise NotFound(
            f"key {key!r} has no snapshot at or before that moment; "
            "`gotstate-persist log` lists when each was taken"
        )
    covered = 0 if snapshot is None else int(getattr(snapshot, "journal_seq", 0))
    entries = read_journal(pipeline, key, since=covered, until=at)
    if snapshot is None:
        if not entries:
            raise NotFound(f"key {key!r} has no snapshot or journal entry")
        if entries[0].seq != 1:
            raise NotFound(
                f"key {key!r} has no snapshot and its journal starts at sequence "
                f"{entries[0].seq}: the events before it are gone; restore a version instead"
            )
        if _machine.is_started(machine) and not started:
            raise InvalidArgument(
                f"key {key!r} has no snapshot yet: recover into a machine that was never "
                "started, so its journal replays from the start"
            )
    _check_consecutive(key, covered, entries)
    return RecoveryPlan(info, snapshot, entries, covered)


def _check_consecutive(key: str, covered: int, entries: list[JournalEntry]) -> None:
    """Refuse a journal with a hole after the snapshot: replaying over it is another history."""
    expected = covered + 1
    for entry in entries:
        if entry.seq != expected:
            raise ReplayDiverged(
                f"the journal of key {key!r} misses entries {expected}..{entry.seq - 1} "
                f"after the snapshot covering entry {covered}: replaying over the gap would "
                "give another history; restore a snapshot version instead, and run "
                "`gotstate-persist verify`",
                seq=expected,
            )
        expected += 1


def capture_for_undo(pipeline: RecordPipeline, machine: Any) -> MachineSnapshot:
    """The machine as given, to put back if the recovery fails."""
    return _machine.capture(
        machine,
        struct_kind=pipeline.formats.kind_of,
        max_depth=pipeline.limits.max_depth,
        snapshot_type=pipeline.snapshot_type(),
    )


def apply_snapshot(pipeline: RecordPipeline, machine: Any, snapshot: MachineSnapshot) -> None:
    """Apply a snapshot (all or nothing), with this store's formats and migrations."""
    formats = pipeline.formats
    _machine.apply(
        machine, snapshot, structs=formats.decode_struct, migrations=formats.structure_migrations
    )


def recover(
    pipeline: RecordPipeline,
    key: str,
    machine: Any,
    *,
    at: datetime | None = None,
    feed: Feed | None = None,
    behaviors: tuple[str, ...] = (),
    started: bool = False,
) -> Recovered:
    """Bring ``machine`` to ``key``'s newest state (or the state in force at ``at``).

    ``feed`` replays one entry (default: the bare machine; an attachment with
    extensions passes its binding, whose processors are bypassed) and
    ``behaviors`` names the state behaviors it runs: an entry written with
    other behaviors bound is refused, since their data changes are not in it.
    ``started`` as for :func:`plan_recovery`.
    """
    refuse_async(machine)  # its replay must be awaited: AsyncStore's recover does that
    plan = plan_recovery(pipeline, key, machine, at, started=started)
    before = capture_for_undo(pipeline, machine)
    try:
        if plan.snapshot is not None:
            apply_snapshot(pipeline, machine, plan.snapshot)
        elif not _machine.is_started(machine):
            machine.start()
        replay(machine, plan.entries, feed if feed is not None else bare_feed(machine), behaviors)
    except BaseException:
        apply_snapshot(pipeline, machine, before)
        raise
    return plan.result()


def replay(
    machine: Any, entries: list[JournalEntry], feed: Feed, behaviors: tuple[str, ...] = ()
) -> None:
    """Feed each entry; ``ReplayDiverged`` at the first that goes elsewhere than it did."""
    for entry in entries:
        check_replayable(entry, machine, behaviors)
        check_replayed(entry, feed(entry.event), active_name(machine))


def check_replayable(entry: JournalEntry, machine: Any, behaviors: tuple[str, ...]) -> None:
    """Before an entry is fed (sync or awaited): the same behaviors, and where it started."""
    check_behaviors(entry, behaviors)
    check_source(entry, active_name(machine))


def check_behaviors(entry: JournalEntry, behaviors: tuple[str, ...]) -> None:
    """``ReplayDiverged`` unless the replay runs the state behaviors the entry ran with."""
    if tuple(entry.behaviors) == tuple(behaviors):
        return
    ran = ", ".join(entry.behaviors) or "none"
    raise ReplayDiverged(
        f"journal entry {entry.seq} ({entry.event.name!r}) ran with the state behaviors "
        f"[{ran}] bound, and their data changes are not in the journal; recover it with "
        f"the same extensions (store.open_machine(key, build, extensions=...)), or "
        "restore a snapshot version instead",
        seq=entry.seq,
    )


def check_source(entry: JournalEntry, at: str | None) -> None:
    """``ReplayDiverged`` unless the machine is where the entry started (a forked key)."""
    if at == entry.source:
        return
    raise ReplayDiverged(
        f"journal entry {entry.seq} ({entry.event.name!r}) started in {entry.source!r} but "
        f"the machine is in {at!r} when it replays: the snapshot before it was not written "
        "from this journal; restore a snapshot version instead, and run "
        "`gotstate-persist verify`",
        seq=entry.seq,
    )


def check_replayed(entry: JournalEntry, accepted: bool, reached: str | None) -> None:
    """``ReplayDiverged`` unless the replayed entry was accepted and reached its target."""
    if accepted and reached == entry.target:
        return
    went = "was refused" if not accepted else f"reached {reached!r}"
    raise ReplayDiverged(
        f"journal entry {entry.seq} ({entry.event.name!r}: {entry.source!r} -> "
        f"{entry.target!r}) {went} on replay: the machine's transitions, guards or "
        "actions changed since it was written; recover with the machine version "
        "that wrote it, or restore a snapshot version instead",
        seq=entry.seq,
    )
