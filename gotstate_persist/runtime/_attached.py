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
from ..backends.base import to_micros
from ..errors import InvalidArgument, PersistError, VersionConflict
from ..extensions._views import EventView, gotstate_event, view_of
from ..formats.journal import JournalRecord
from ._journal import journal_key, tagged_mapping
from ._recover import Feed, active_name, bare_feed, recover

if TYPE_CHECKING:
    from .._pipeline import RecordPipeline
    from ..extensions import BoundMachine

__all__ = ["Attached", "Head"]

logger = logging.getLogger("gotstate_persist.runtime")

_DETACHED = "this attachment is detached; attach the machine again (store.attach)"


class Head(msgspec.Struct, frozen=True):
    """Where a key stands: newest snapshot version and newest journal sequence (0: none)."""

    snapshot_version: int
    journal_seq: int


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
    ) -> None:
        self._pipeline = pipeline
        self._key = key
        self._machine = machine
        self._every = snapshot_every
        self._journal_key = journal_key(key) if journal else None
        self._bound = bound
        self._owns_binding = owns_binding
        self._lock = threading.RLock()
        self._detached = False
        self._head = read_head(pipeline, key)
        # a key without a snapshot gets one after its first event, so it
        # can always be recovered in place (see recover())
        self._since_snapshot = snapshot_every - 1 if self._head.snapshot_version == 0 else 0
        self._pending = False

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
    def head(self) -> Head:
        """The head this attachment last read or wrote."""
        return self._head

    # Events.

    def process_event(self, event: Any, *, meta: dict[str, Any] | None = None) -> bool:
        """Process ``event``, then persist it; True if the machine accepted it.

        On a failed commit the machine is back where it was and the error
        (``VersionConflict``, ``QuotaExceeded``, ``BackendError``...) is
        raised. A bound behavior failing on enter or exit raises
        ``ExtensionFailed`` after the transition was committed.
        """
        with self._lock:
            if self._detached:
                raise InvalidArgument(_DETACHED)
            limits = self._pipeline.limits
            kind_of = self._pipeline.formats.kind_of
            tagged_meta = tagged_mapping(
                {} if meta is None else meta, "meta", limits.max_depth, kind_of
            )
            views = self._bound.events_for(event) if self._bound is not None else [view_of(event)]
            tagged = [
                tagged_mapping(view.metadata, "event metadata", limits.max_depth, kind_of)
                if self._journal_key is not None
                else None
                for view in views
            ]
            handled = False
            for view, metadata in zip(views, tagged, strict=True):
                handled = self._one(view, metadata, tagged_meta) or handled
            return handled

    def _one(self, view: EventView, metadata: object, meta: object) -> bool:
        machine = self._machine
        source = active_name(machine)
        undo = _machine.checkpoint(machine)
        try:
            try:
                handled, error = self._feed(view)
            except BaseException:
                undo.rollback()
                raise
            if not handled:
                undo.close()
                if error is not None:
                    raise error
                return False
            record = None
            if self._journal_key is not None:
                record = JournalRecord(
                    event=view.name,
                    priority=view.priority,
                    metadata=metadata,
                    source=source,
                    target=active_name(machine),
                    meta=meta,
                    at_us=to_micros(self._pipeline.clock()),
                    snapshot_version=self._head.snapshot_version,
                )
            self._commit(record, undo)
        finally:
            undo.close()
        if error is not None:
            raise error
        return True

    def _feed(self, view: EventView) -> tuple[bool, PersistError | None]:
        if self._bound is not None:
            return self._bound.feed(view)
        return bool(self._machine.process_event(gotstate_event(view))), None

    def _commit(self, record: JournalRecord | None, undo: Any) -> None:
        """Persist the processed event, or put the machine back and raise."""
        before = self._head
        try:
            if record is not None:
                assert self._journal_key is not None
                info = self._pipeline.append(
                    self._journal_key, record, expected_version=before.journal_seq
                )
                self._head = Head(before.snapshot_version, info.version)
            else:
                self._head = Head(self._write_snapshot(before), before.journal_seq)
        except VersionConflict:
            undo.rollback()
            raise VersionConflict(
                f"key {self._key!r} was written by another writer since this attachment "
                f"last wrote it (at snapshot {before.snapshot_version}, journal "
                f"{before.journal_seq}); the event was undone: call attached.recover() and "
                "process it again"
            ) from None
        except PersistError:
            undo.rollback()
            raise
        except BaseException:
            if not self._landed(before):
                undo.rollback()
            raise
        if record is not None:
            self._since_snapshot += 1
            if self._pending or self._since_snapshot >= self._every:
                self._periodic_snapshot()

    def _landed(self, before: Head) -> bool:
        """After an interruption: did our write reach storage? (Then memory keeps it.)"""
        try:
            now = read_head(self._pipeline, self._key, journal=self._journal_key is not None)
        except BaseException:  # cannot tell: undo; the next commit's CAS will say
            return False
        if self._journal_key is not None:
            landed = now.journal_seq > before.journal_seq
        else:
            landed = now.snapshot_version > before.snapshot_version
        if landed:
            self._head = now
        return landed

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
            if self._detached:
                raise InvalidArgument(_DETACHED)
            head = read_head(self._pipeline, self._key)
            if head.snapshot_version == 0 and head.journal_seq:
                raise InvalidArgument(
                    f"key {self._key!r} has journal entries but no snapshot yet, so this "
                    "machine cannot be brought to its head in place; open it again with "
                    "store.open_machine(key, build)"
                )
            recover(self._pipeline, self._key, self._machine, feed=self._replay_feed())
            self._head = head
            self._since_snapshot = 0
            self._pending = False
            return head

    def _replay_feed(self) -> Feed:
        bound = self._bound
        if bound is None:
            return bare_feed(self._machine)
        return lambda view: bound.feed(view)[0]

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


def read_head(pipeline: RecordPipeline, key: str, *, journal: bool = True) -> Head:
    """The key's head as stored now (the journal part is 0 when not asked for)."""
    backend, namespace = pipeline.backend, pipeline.namespace
    snapshot = backend.head(namespace, key).newest
    seq = backend.head(namespace, journal_key(key)).newest if journal else 0
    return Head(snapshot, seq)
