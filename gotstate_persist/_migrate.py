"""Bulk rewrites of stored records in place: ``Store.migrate`` and ``Store.reseal``.

Both walk a namespace, rebuild each record that needs it, and swap the new
blob in with the backend's compare-and-set ``replace``, in batches. Nothing
but the blob (and, for ``migrate``, its format version) changes: keys,
logical versions, kinds and creation times stay, so references to "version
3" keep meaning the same record.

They are idempotent and resumable: a record already in the newest format
(or already sealed under the primary key) is skipped, and every swap is
atomic, so a run killed at any point and started again finishes the job with
nothing lost or duplicated. A record changed or deleted while the run held
it is left alone and reported.

``migrate(kind)`` also rewrites the records of other kinds that embed a
registered Struct of ``kind`` in their tagged values (state data of machine
snapshots, :mod:`gotstate_persist.formats._values`): each embedded Struct
older than the newest version is upcast as a restore would upcast it, and the
record is written again in the newest format of its own kind, under the same
key and version, by the same compare-and-set swap. Which kinds hold tagged
values, and where, is :data:`EMBEDDING_KINDS`: one :data:`TaggedWalk` per
kind (a new kind such as journal entries adds its walk there);
:func:`upcast_embedded` is the scan and rewrite of one record.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from types import MappingProxyType

import msgspec

from ._pipeline import RecordPipeline
from .backends.base import Replacement, VersionInfo
from .errors import BackendError, FormatError, InvalidArgument, PersistError, QuotaExceeded
from .formats._values import UnsupportedValue, rewrite_structs
from .formats.journal import JOURNAL_KIND, JournalRecord
from .formats.machine import MACHINE_KIND, MachineSnapshot
from .sealing import read_header

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "EMBEDDING_KINDS",
    "MigrationFailure",
    "MigrationReport",
    "Progress",
    "TaggedWalk",
    "migrate",
    "reseal",
    "upcast_embedded",
    "walk_journal",
    "walk_snapshot",
]

logger = logging.getLogger(__name__)

#: ``progress(done, total)``: records looked at so far, and the namespace's
#: record count when the run started (an estimate: writers may add more).
Progress = Callable[[int, int], None]
DEFAULT_BATCH_SIZE = 1000
_CHANGED = "changed or deleted while being rewritten; run again to retry it"


class MigrationFailure(msgspec.Struct, frozen=True):
    """One record a run could not rewrite, and why (it was left as it was)."""

    key: str
    version: int
    reason: str


class MigrationReport(msgspec.Struct, frozen=True):
    """What one ``migrate`` or ``reseal`` run did.

    ``scanned`` counts the records of the kind looked at (every record for
    ``reseal``), ``migrated`` those rewritten (would be rewritten, with
    ``dry_run``), ``already_current`` those that needed nothing.
    ``embedding_scanned`` counts the records of other kinds that can embed
    the kind in their tagged values (machine snapshots) looked at by
    ``migrate``, ``embedding_migrated`` those rewritten (would be, with
    ``dry_run``) because they embedded an older version of it. ``failed``
    lists both.
    """

    scanned: int = 0
    migrated: int = 0
    already_current: int = 0
    failed: list[MigrationFailure] = msgspec.field(default_factory=list)
    embedding_scanned: int = 0
    embedding_migrated: int = 0


#: ``walk(record, fn)``: ``record`` (decoded as the newest format of its kind)
#: with each tagged value it holds replaced by ``fn(value)``; ``fn`` returns
#: the very value it was given when it changes nothing.
TaggedWalk = Callable[[msgspec.Struct, Callable[[object], object]], msgspec.Struct]


def walk_snapshot(record: msgspec.Struct, fn: Callable[[object], object]) -> msgspec.Struct:
    """A machine snapshot's state data (the top machine's and every submachine's)."""
    if not isinstance(record, MachineSnapshot):
        raise FormatError(f"a {MACHINE_KIND!r} record is not a machine snapshot")
    replace = msgspec.structs.replace
    return replace(
        record,
        data={name: fn(tagged) for name, tagged in record.data.items()},
        submachines=[
            replace(sub, data={name: fn(tagged) for name, tagged in sub.data.items()})
            for sub in record.submachines
        ],
    )


def walk_journal(record: msgspec.Struct, fn: Callable[[object], object]) -> msgspec.Struct:
    """A journal entry's event metadata and caller ``meta``."""
    if not isinstance(record, JournalRecord):
        raise FormatError(f"a {JOURNAL_KIND!r} record is not a journal entry")
    return msgspec.structs.replace(record, metadata=fn(record.metadata), meta=fn(record.meta))


#: The record kinds whose tagged values may embed registered Structs, and
#: how to walk them; ``migrate(kind)`` looks into every record of these kinds.
EMBEDDING_KINDS: Mapping[str, TaggedWalk] = MappingProxyType(
    {MACHINE_KIND: walk_snapshot, JOURNAL_KIND: walk_journal}
)


class _Run:
    """Counters and the pending batch of one run."""

    def __init__(
        self, pipeline: RecordPipeline, batch_size: int, dry_run: bool, progress: Progress | None
    ):
        if type(batch_size) is not int or batch_size < 1:
            raise InvalidArgument(f"batch_size must be an int >= 1, got {batch_size!r}")
        if progress is not None and not callable(progress):
            raise InvalidArgument("progress must be a function progress(done, total)")
        self.pipeline = pipeline
        self.batch_size = batch_size
        self.dry_run = dry_run
        self.progress = progress
        self.total = pipeline.backend.usage(pipeline.namespace).records
        self.scanned = self.migrated = self.current = self.looked = 0
        self.embedding_scanned = self.embedding_migrated = 0
        self.failed: list[MigrationFailure] = []
        # each replacement, and whether it rewrites a record embedding the kind
        self.batch: list[tuple[Replacement, bool]] = []
        self.rewrites = "migrated"  # the store's counter of records this run rewrote

    def tick(self) -> None:
        self.looked += 1
        if self.progress is not None and (self.looked % 100 == 0 or self.looked == self.total):
            self.progress(self.looked, max(self.total, self.looked))

    def add(self, replacement: Replacement, *, embedding: bool = False) -> None:
        if self.dry_run:
            self.count(embedding)
            return
        self.batch.append((replacement, embedding))
        if len(self.batch) >= self.batch_size:
            self.flush()

    def count(self, embedding: bool) -> None:
        if embedding:
            self.embedding_migrated += 1
        else:
            self.migrated += 1

    def flush(self) -> None:
        pending, self.batch = self.batch, []
        if not pending:
            return
        batch = [replacement for replacement, _embedding in pending]
        backend, namespace = self.pipeline.backend, self.pipeline.namespace
        try:
            outcomes: list[bool | str] = list(backend.replace(namespace, batch))
        except QuotaExceeded:  # the batch rolled back: find the records over the limit
            outcomes = []
            for one in batch:
                try:
                    outcomes += backend.replace(namespace, [one])
                except QuotaExceeded as exc:
                    if self.pipeline.metrics is not None:
                        self.pipeline.metrics.refused(exc)
                    outcomes.append(str(exc))
        metrics = self.pipeline.metrics
        for (replacement, embedding), outcome in zip(pending, outcomes, strict=True):
            if outcome is True:
                self.count(embedding)
                if metrics is not None:
                    metrics.rewrote(self.rewrites, len(replacement.blob))
            else:
                reason = _CHANGED if outcome is False else str(outcome)
                self.failed.append(MigrationFailure(replacement.key, replacement.version, reason))

    def report(self) -> MigrationReport:
        self.flush()
        if not self.dry_run:
            # what an earlier run cut short left behind (object stores): the
            # records read as current, the leftovers are only wasted space, so
            # a sweep that cannot run (no permission to list) loses nothing
            try:
                self.pipeline.backend.sweep(self.pipeline.namespace)
            except BackendError as exc:
                logger.warning(
                    "namespace %r: the sweep after the run failed (%s); "
                    "run 'gotstate-persist gc' later to remove leftovers",
                    self.pipeline.namespace,
                    exc,
                )
        if self.progress is not None:
            self.progress(self.looked, max(self.total, self.looked))
        return MigrationReport(
            self.scanned,
            self.migrated,
            self.current,
            self.failed,
            embedding_scanned=self.embedding_scanned,
            embedding_migrated=self.embedding_migrated,
        )


def _stored(run: _Run) -> Iterator[tuple[VersionInfo, bytes]]:
    """Every stored version of the namespace with its blob (the backend's fastest walk).

    A record the backend cannot even read (damaged bytes or metadata) is
    reported as failed and the walk goes on.
    """

    def unreadable(key: str, version: int, error: PersistError) -> None:
        run.tick()
        run.scanned += 1
        run.failed.append(MigrationFailure(key, version, str(error)))

    pipeline = run.pipeline
    return pipeline.backend.iter_namespace(pipeline.namespace, on_error=unreadable)


def migrate(
    pipeline: RecordPipeline,
    kind: str,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    dry_run: bool = False,
    progress: Progress | None = None,
) -> MigrationReport:
    """Rewrite every ``kind`` record stored in an older format as the newest one.

    And every record of an :data:`EMBEDDING_KINDS` kind (other than ``kind``)
    whose tagged values embed a ``kind`` Struct older than the newest version.
    """
    formats = pipeline.formats
    newest = formats.newest_version(kind)  # InvalidArgument for an unknown kind
    run = _Run(pipeline, batch_size, dry_run, progress)
    for info, blob in _stored(run):
        run.tick()
        if info.kind != kind:
            walk = EMBEDDING_KINDS.get(info.kind)
            if walk is not None:
                _migrate_embedding(run, info, blob, kind, walk)
            continue
        run.scanned += 1
        if info.format_version == newest:
            run.current += 1
            continue
        if not formats.upcastable(kind, info.format_version):
            # the very words load uses, naming the missing step
            gap = formats.upcast_gap(kind, info.format_version)
            reason = (
                f"{gap}, and run again"
                if gap is not None
                else f"format version {info.format_version} is newer than this code knows"
            )
            run.failed.append(MigrationFailure(info.key, info.version, reason))
            continue
        try:
            sealed = pipeline.upcast_blob(info, blob)
        except PersistError as exc:
            run.failed.append(MigrationFailure(info.key, info.version, str(exc)))
            continue
        run.add(Replacement(info.key, info.version, sealed, newest, blob))
    return run.report()


def _migrate_embedding(
    run: _Run, info: VersionInfo, blob: bytes, kind: str, walk: TaggedWalk
) -> None:
    """Queue the rewrite of one record that may embed ``kind``, or report why it cannot be."""
    run.embedding_scanned += 1
    try:
        sealed = upcast_embedded(run.pipeline, info, blob, kind, walk)
    except PersistError as exc:
        reason = f"looked into for embedded {kind!r} Structs, it could not be rewritten: {exc}"
        run.failed.append(MigrationFailure(info.key, info.version, reason))
        return
    if sealed is not None:
        own_newest = run.pipeline.formats.newest_version(info.kind)
        run.add(Replacement(info.key, info.version, sealed, own_newest, blob), embedding=True)


def upcast_embedded(
    pipeline: RecordPipeline, info: VersionInfo, blob: bytes, kind: str, walk: TaggedWalk
) -> bytes | None:
    """``blob`` with every embedded ``kind`` Struct older than the newest upcast; None if none is.

    ``walk`` visits the tagged values of the record's kind (see
    :data:`TaggedWalk`). The rewritten record is encoded in the newest format
    of its own kind, with its own codec, and sealed under the primary key for
    the same key and version. Raises ``PersistError``: a record that cannot
    be opened or decoded, an embedded Struct newer than this code or that no
    upcaster chain reaches, a failing upcaster, or a result over the limits.
    """
    opened = pipeline.unwrap(info, blob)
    # every struct node spells its kind out in the payload (kind names need no
    # escaping in msgpack or JSON): without those bytes, nothing to decode
    if kind.encode() not in memoryview(opened.body).tobytes():
        return None
    formats = pipeline.formats
    newest = formats.newest_version(kind)

    def upcast(version: int, encoded: bytes) -> tuple[int, bytes] | None:
        if version == newest:
            return None
        return newest, formats.upcast_struct(kind, version, encoded)[1]

    changed = False

    def rewrite(tagged: object) -> object:
        nonlocal changed
        try:
            new = rewrite_structs(tagged, kind, upcast)
        except UnsupportedValue as exc:
            raise FormatError(str(exc)) from None
        changed = changed or new is not tagged
        return new

    record = walk(pipeline.decode(opened), rewrite)
    if not changed:
        return None
    own_newest = formats.newest_version(info.kind)
    payload = opened.codec.encode((info.kind, own_newest, record), limits=pipeline.limits)
    sealed = pipeline.seal(payload, key=info.key, version=info.version, codec_id=opened.codec.id)
    if len(sealed) > pipeline.limits.max_blob_bytes:
        raise FormatError(
            f"rewritten, it would be {len(sealed)} bytes, over the limit of "
            f"{pipeline.limits.max_blob_bytes}; it was left as it was"
        )
    return sealed


def reseal(
    pipeline: RecordPipeline,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: Progress | None = None,
) -> MigrationReport:
    """Rewrite every record not sealed under the keyring's primary key under it."""
    run = _Run(pipeline, batch_size, False, progress)
    run.rewrites = "resealed"
    primary = pipeline.keyring.primary_id
    for info, blob in _stored(run):
        run.tick()
        run.scanned += 1
        try:
            if read_header(blob).key_id == primary:
                run.current += 1
                continue
            sealed = pipeline.reseal_blob(info, blob)
        except PersistError as exc:
            run.failed.append(MigrationFailure(info.key, info.version, str(exc)))
            continue
        run.add(Replacement(info.key, info.version, sealed, info.format_version, blob))
    return run.report()
