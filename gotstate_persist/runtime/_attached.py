"""``gp.Attached``: a machine that persists itself after every accepted event.

The commit protocol, which is the point of this module:

1. The event goes through the processors (a binding's), each resulting
   event is checked to be journal-able, and the attachment takes a cheap
   in-memory checkpoint of the machine (``machine.checkpoint``).
2. The machine processes the event and releases its locks; nothing is
   persisted from inside a gotstate hook.
3. Commit: the journal append when journaling, else the snapshot, each a
   compare-and-set on the head this attachment last read or wrote. If it
   fails, the checkpoint puts the machine back (no entry or exit action
   runs) and the error is raised: memory and storage never disagree. An
   interruption that is not a storage error (``KeyboardInterrupt``, a
   cancelled task) reads the head to learn whether the write landed, and
   keeps or undoes the event accordingly.
4. With a journal, the periodic snapshot is written after the append; if it
   fails it is logged and retried after the next commit, never rolled back:
   the journal already holds the event.

One attachment is one writer: a second attachment on the same key loses its
next compare-and-set (``VersionConflict``); :meth:`Attached.recover` brings
it to the winner's head so it can retry.
"""

from __future__ import annotations

import logging
import threading
from types import TracebackType
from typing import TYPE_CHECKING, Any

import msgspec

from .. import machine as _machine
from ..errors import InvalidArgument, PersistError, VersionConflict
from ..extensions._views import EventView, gotstate_event, view_of
from ..formats.journal import JournalRecord
from ._checks import check_recoverable
from ._commit import (
    Prepared,
    Step,
    build_records,
    check_room_for_key,
    check_unjournaled,
    claim,
    release,
    stored_prefix,
    withdraw_if_journaled,
)
from ._head import Head, read_head
from ._journal import journal_key, tagged_mapping
from ._recover import Feed, Recovered, active_name, bare_feed, bound_feed, recover

if TYPE_CHECKING:
    from .._pipeline import RecordPipeline
    from ..extensions import BoundMachine
    from ..machine import Checkpoint

__all__ = ["Attached", "Head"]

logger = logging.getLogger("gotstate_persist.runtime")

_DETACHED = "this attachment is detached; attach the machine again (store.attach)"


class Attached:
    """A machine attached to a key of a store; see the module docstring for the protocol.

    Thread-safe: events are processed and committed one at a time.
    """

    def __init__(
        self,
        pipeline: RecordPipeline,
        key: str,
        machine: Any,
        *,
        snapshot_every: int,
        journal: bool,
        bound: BoundMachine | None,
        owns_binding: bool,
        head: Head | None = None,
        unsnapped: int | None = None,
    ) -> None:
        """``head``: the key's head the machine is at (read now if not given);
        ``unsnapped``: how many journal entries after the newest snapshot the
        machine holds (unknown: the next commit writes a snapshot too).
        """
        self._pipeline = pipeline
        self._key = key
        self._machine = machine
        self._every = snapshot_every
        self._journal_key = journal_key(key) if journal else None
        self._bound = bound
        self._owns_binding = owns_binding
        self._lock = threading.RLock()
        self._detached = False
        self._written = 0  # entries of the commit in progress that landed
        self._writing: msgspec.Struct | None = None  # the snapshot being written
        self._head = read_head(pipeline, key) if head is None else head
        self._since_snapshot = 0
        self._pending = False
        self._restart(unsnapped)
        self._owner: int | None = None  # the thread inside process_event
        claim(machine, self)

    def _restart(self, unsnapped: int | None) -> None:
        """Count the entries no snapshot covers yet, after attaching or recovering."""
        head = self._head
        if head.snapshot_version == 0:
            # a key without a snapshot gets one after its first event, so it
            # can always be recovered in place (see recover())
            self._since_snapshot, self._pending = self._every - 1, False
        elif unsnapped is None:
            self._since_snapshot, self._pending = 0, head.journal_seq > 0
        else:
            self._since_snapshot, self._pending = unsnapped, False

    def __repr__(self) -> str:
        return f"<Attached {self._key!r} at {self._head.snapshot_version}/{self._head.journal_seq}>"

    @property
    def machine(self) -> Any:
        """The machine itself (process events through :meth:`process_event`)."""
        return self._machine

    @property
    def key(self) -> str:
        """The key this attachment writes."""
        return self._key

    @property
    def detached(self) -> bool:
        """Whether :meth:`detach` was called (the attachment then writes nothing)."""
        return self._detached

    @property
    def head(self) -> Head:
        """The head this attachment last read or wrote."""
        return self._head

    # Events.
    #
    # process_event is three phases, so the asyncio twin can await the middle
    # one in the event loop and run the last in its pool: _prepare (check and
    # tag what will be journaled, before the machine is touched), _step (feed
    # one processed event to the machine) and _finish (commit, or put the
    # machine back). The caller holds the attachment's lock throughout and
    # takes the checkpoint between _prepare and the first _step.

    def process_event(self, event: Any, *, meta: dict[str, Any] | None = None) -> bool:
        """Process ``event``, then persist it; True if the machine accepted it.

        On a failed commit the machine is back where it was and the error
        (``VersionConflict``, ``QuotaExceeded``, ``BackendError``...) is
        raised. An event the processors fan out into several is committed
        all or nothing. A bound behavior failing on enter or exit raises
        ``ExtensionFailed`` after the transition was committed.
        """
        if self._owner == threading.get_ident():
            raise InvalidArgument(
                "process_event was called again from inside the event it is processing (an "
                "action, guard or hook of the machine): queue the event and process it after "
                "the call returns"
            )
        with self._lock:
            self._owner = threading.get_ident()
            try:
                return self._process(event, meta)
            finally:
                self._owner = None

    def _process(self, event: Any, meta: dict[str, Any] | None) -> bool:
        prepared = self._prepare(event, meta)
        undo = _machine.checkpoint(self._machine)
        try:
            steps: list[Step] = []
            error: PersistError | None = None
            try:
                for view, metadata in prepared.events:
                    source = active_name(self._machine)
                    error = self._step(view, metadata, source, self._feed(view), steps)
                    if error is not None:
                        break
            except BaseException:
                undo.rollback()
                raise
            return self._finish(prepared, steps, undo, error)
        finally:
            undo.close()

    def _prepare(self, event: Any, meta: dict[str, Any] | None) -> Prepared:
        """The events to feed (after the processors) and their tagged forms; nothing moves yet."""
        if self._detached:
            raise InvalidArgument(_DETACHED)
        limits = self._pipeline.limits
        kind_of = self._pipeline.formats.kind_of
        given = {} if meta is None else meta
        tagged_meta = tagged_mapping(given, "meta", limits.max_depth, kind_of)
        views = self._bound.events_for(event) if self._bound is not None else [view_of(event)]
        journaled = self._journal_key is not None
        return Prepared(
            [
                (
                    view,
                    tagged_mapping(view.metadata, "event metadata", limits.max_depth, kind_of)
                    if journaled
                    else None,
                )
                for view in views
            ],
            tagged_meta,
        )

    def _step(
        self,
        view: EventView,
        metadata: object,
        source: str | None,
        fed: tuple[bool, PersistError | None],
        steps: list[Step],
    ) -> PersistError | None:
        """Record one fed event if the machine took it (``fed``: what feeding it returned)."""
        handled, error = fed
        if handled:
            steps.append(Step(view, metadata, source, active_name(self._machine)))
        return error

    def _feed(self, view: EventView) -> tuple[bool, PersistError | None]:
        if self._bound is not None:
            return self._bound.feed(view)
        return bool(self._machine.process_event(gotstate_event(view))), None

    def _finish(
        self,
        prepared: Prepared,
        steps: list[Step],
        undo: Checkpoint,
        error: PersistError | None,
    ) -> bool:
        """Commit the accepted events, or put the machine back and raise (see the module)."""
        if not steps:
            # nothing accepted, nothing to write: but a failed action may have
            # changed data before gotstate refused the event, so put it back
            undo.rollback()
            if error is not None:
                raise error
            return False
        before = self._head
        self._written = 0
        records: list[JournalRecord] = []
        try:
            if self._journal_key is not None:
                records = build_records(self._pipeline, prepared, steps, before, self._behaviors())
                self._append(records, before)
            else:
                check_unjournaled(self._pipeline, self._key)
                version = self._write_snapshot(before)
                withdraw_if_journaled(self._pipeline, self._key, version)
                self._head = Head(version, before.journal_seq)
        except VersionConflict:
            written = self._written
            self._undo(undo, steps)
            raise VersionConflict(
                f"key {self._key!r} was written by another writer since this attachment "
                f"last wrote it (at snapshot {before.snapshot_version}, journal "
                f"{before.journal_seq}); {self._undone(steps, written)}: call "
                "attached.recover() and process it again"
            ) from None
        except PersistError as exc:
            written = self._written
            self._undo(undo, steps)
            if written:
                # that write wrote nothing, but earlier entries of the fan-out did
                exc.args = (f"{exc} [{self._undone(steps, written)}]",)
            raise
        except BaseException:
            if self._landed(before, records, len(steps)) < len(steps):
                self._undo(undo, steps)
            raise
        if self._journal_key is not None:
            self._since_snapshot += len(steps)
            if self._pending or self._since_snapshot >= self._every:
                self._periodic_snapshot()
        if error is not None:
            raise error
        return True

    def _behaviors(self) -> tuple[str, ...]:
        return () if self._bound is None else self._bound.behavior_names

    def _append(self, records: list[JournalRecord], before: Head) -> None:
        """Append the entries (all or none where the backend has transactions).

        Elsewhere each is its own compare-and-set on the one before, so a
        failure part-way is known exactly: ``self._written`` counts those that
        landed, and the error propagates for the caller to undo the rest.
        """
        assert self._journal_key is not None
        pipeline, jkey, seq = self._pipeline, self._journal_key, before.journal_seq
        if seq == 0 and before.snapshot_version == 0:
            check_room_for_key(self._pipeline)
        if len(records) > 1 and pipeline.backend.capabilities.atomic_put_many:
            # numbered after the highest sequence the journal ever had (a
            # deleted journal's numbers are never reused), CAS on its newest
            last = pipeline.backend.head(pipeline.namespace, jkey).last_version
            writes = [
                (jkey, last + i + 1, record, seq if i == 0 else last + i)
                for i, record in enumerate(records)
            ]
            infos = pipeline.put_versions(writes)
            self._head = Head(before.snapshot_version, infos[-1].version)
            return
        for done, record in enumerate(records):
            self._written = done
            info = pipeline.append(jkey, record, expected_version=seq + done)
            self._head = Head(before.snapshot_version, info.version)
        self._written = len(records)

    def _undo(self, undo: Checkpoint, steps: list[Step]) -> None:
        """Put the machine back; then replay the entries that did land (part of a fan-out)."""
        written = self._written
        undo.rollback()
        self._written = 0
        if written:
            landed = self._head
            self._head = Head(landed.snapshot_version, landed.journal_seq - written)
            feed = self._replay_feed()
            for step in steps[:written]:
                try:
                    replayed = feed(step.view)
                except Exception:
                    replayed = False
                if not replayed:
                    # the machine holds fewer events than storage: the head it
                    # states says so, and the next commit conflicts (recover)
                    return
                self._head = Head(self._head.snapshot_version, self._head.journal_seq + 1)

    @staticmethod
    def _undone(steps: list[Step], written: int) -> str:
        if not written:
            return "the event was undone" if len(steps) == 1 else "its events were undone"
        return (
            f"the first {written} of the {len(steps)} events it fanned out into were committed "
            "and the machine keeps them; the rest were undone"
        )

    def _landed(self, before: Head, records: list[JournalRecord], wanted: int) -> int:
        """After an interruption: how many of our entries (or our snapshot) reached storage.

        Only records equal to the ones this commit wrote count: another
        writer's entry or snapshot, stored meanwhile, is never adopted.
        """
        written = self._written
        try:
            if self._journal_key is not None:
                landed = written + stored_prefix(
                    self._pipeline,
                    self._journal_key,
                    records[written:],
                    before.journal_seq + written,
                )
                self._head = Head(before.snapshot_version, before.journal_seq + landed)
                self._written = landed
                return landed
            newest = self._pipeline.backend.head(self._pipeline.namespace, self._key).newest
            if newest > before.snapshot_version and self._writing is not None:
                stored = self._pipeline.load(self._key, newest)[1]
                if stored == self._writing:
                    self._head = Head(newest, before.journal_seq)
                    return wanted
        except BaseException:  # cannot tell: keep what we know; the next CAS will say
            return written
        return 0

    def _write_snapshot(self, head: Head) -> int:
        pipeline = self._pipeline
        snapshot = _machine.capture(
            self._machine,
            struct_kind=pipeline.formats.kind_of,
            max_depth=pipeline.limits.max_depth,
            snapshot_type=pipeline.snapshot_type(),
        )
        if head.journal_seq:
            snapshot = msgspec.structs.replace(snapshot, journal_seq=head.journal_seq)
        self._writing = snapshot
        info = pipeline.append(
            self._key, snapshot, expected_version=head.snapshot_version, depth_checked=True
        )
        return info.version

    def _periodic_snapshot(self) -> None:
        head = self._head
        try:
            version = self._write_snapshot(head)
        except PersistError as exc:
            self._pending = True
            if isinstance(exc, VersionConflict):
                # our append won, so the journal is ours: adopt the newer snapshot
                # version and write ours over it next time
                self._head = Head(
                    read_head(self._pipeline, self._key).snapshot_version, head.journal_seq
                )
            logger.warning(
                "snapshot of key %r after journal entry %d failed; retried after the next "
                "event: %s",
                self._key,
                head.journal_seq,
                exc,
            )
            return
        self._head = Head(version, head.journal_seq)
        self._since_snapshot = 0
        self._pending = False

    # Catching up and letting go.

    def snapshot(self) -> Head:
        """Write a snapshot now (compare-and-set on the head); return the new head."""
        with self._lock:
            if self._detached:
                raise InvalidArgument(_DETACHED)
            self._head = Head(self._write_snapshot(self._head), self._head.journal_seq)
            self._since_snapshot = 0
            self._pending = False
            return self._head

    def recover(self) -> Head:
        """Bring the machine to the key's current head (after a ``VersionConflict``).

        Applies the newest snapshot and replays the journal after it; on any
        error the machine stays as it was.
        """
        with self._lock:
            self._check_recoverable()
            recovered = recover(
                self._pipeline,
                self._key,
                self._machine,
                feed=self._replay_feed(),
                behaviors=self._behaviors(),
            )
            return self._adopt(recovered)

    def _adopt(self, recovered: Recovered) -> Head:
        """The machine now holds what ``recovered`` says: follow the key from there."""
        self._head = recovered.head()
        self._restart(recovered.replayed)
        return self._head

    def _check_recoverable(self) -> None:
        """Refuse what cannot be brought to the key's head in place (the asyncio twin too)."""
        if self._detached:
            raise InvalidArgument(_DETACHED)
        check_recoverable(self._pipeline, self._key, journaled=self._journal_key is not None)

    def _replay_feed(self) -> Feed:
        return bare_feed(self._machine) if self._bound is None else bound_feed(self._bound)

    def detach(self) -> None:
        """Stop persisting; first write a snapshot covering journaled events not yet in one.

        The attachment is detached even if that snapshot fails (the error is
        raised; the journal still holds the events).
        """
        with self._lock:
            if self._detached:
                return
            try:
                unsnapped = self._since_snapshot or self._pending
                if self._journal_key is not None and unsnapped and self._head.journal_seq:
                    self._head = Head(self._write_snapshot(self._head), self._head.journal_seq)
            finally:
                self._detached = True
                release(self._machine, self)
                if self._owns_binding and self._bound is not None:
                    self._bound.unbind()

    def __enter__(self) -> Attached:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.detach()
