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
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

import msgspec

from ._pipeline import RecordPipeline
from .backends.base import Replacement, VersionInfo
from .errors import BackendError, InvalidArgument, PersistError, QuotaExceeded
from .sealing import read_header

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "MigrationFailure",
    "MigrationReport",
    "Progress",
    "migrate",
    "reseal",
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
    """

    scanned: int = 0
    migrated: int = 0
    already_current: int = 0
    failed: list[MigrationFailure] = msgspec.field(default_factory=list)


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
        self.failed: list[MigrationFailure] = []
        self.batch: list[Replacement] = []

    def tick(self) -> None:
        self.looked += 1
        if self.progress is not None and (self.looked % 100 == 0 or self.looked == self.total):
            self.progress(self.looked, max(self.total, self.looked))

    def add(self, replacement: Replacement) -> None:
        if self.dry_run:
            self.migrated += 1
            return
        self.batch.append(replacement)
        if len(self.batch) >= self.batch_size:
            self.flush()

    def flush(self) -> None:
        batch, self.batch = self.batch, []
        if not batch:
            return
        backend, namespace = self.pipeline.backend, self.pipeline.namespace
        try:
            outcomes: list[bool | str] = list(backend.replace(namespace, batch))
        except QuotaExceeded:  # the batch rolled back: find the records over the limit
            outcomes = []
            for one in batch:
                try:
                    outcomes += backend.replace(namespace, [one])
                except QuotaExceeded as exc:
                    outcomes.append(str(exc))
        for replacement, outcome in zip(batch, outcomes, strict=True):
            if outcome is True:
                self.migrated += 1
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
        return MigrationReport(self.scanned, self.migrated, self.current, self.failed)


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
    """Rewrite every ``kind`` record stored in an older format as the newest one."""
    formats = pipeline.formats
    newest = formats.newest_version(kind)  # InvalidArgument for an unknown kind
    run = _Run(pipeline, batch_size, dry_run, progress)
    for info, blob in _stored(run):
        run.tick()
        if info.kind != kind:
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


def reseal(
    pipeline: RecordPipeline,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: Progress | None = None,
) -> MigrationReport:
    """Rewrite every record not sealed under the keyring's primary key under it."""
    run = _Run(pipeline, batch_size, False, progress)
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
