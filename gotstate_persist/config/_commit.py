"""The commit protocol of configuration: one atomic write per change, on every backend.

Every ``put``, ``rollback`` and transaction ends in one create-only write: the
next version of the namespace's commit log (``formats.config.ConfigCommit``),
a compare-and-set on the log's newest version. The commit names every
configuration's current version and carries the new values inline, so:

* atomicity needs nothing from the backend beyond its create-only put (one
  SQL transaction; an exclusive create on object stores): a writer killed
  before the log write changed nothing, one killed after it changed
  everything, and readers, who resolve every name through one commit, never
  see a mix;
* the per-configuration keys (``system_key("config", name)``, same version
  numbers as the configuration) are written *after* the commit, from it
  ("materialized"). They only ever hold committed versions, numbered without
  gaps. A crash between the two leaves a key one version behind; whoever
  needs it next (a reader of that version, the next commit touching that
  name, ``history``, ``watch``) writes it from the commit, idempotently.
  Before a commit touches a name, that name's current version is
  materialized, so at most the newest version of a name is ever pending and
  the commit that holds it is always still referenced by the log's newest
  commit (pruning never removes a referenced commit).

CAS per configuration is checked against the log's newest commit just
before the log write, and the log write itself is a compare-and-set on that
commit: a concurrent commit (to any configuration) makes the write fail and
the check run again, so no update is lost and a stale ``expected_version``
is always reported.

``on_step`` is a test hook (like the object stores' ``_step``): the crash
tests replace it to kill the process between the protocol's steps.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Final

import msgspec

from .._names import system_key
from .._pipeline import RecordPipeline
from ..backends.base import to_micros
from ..errors import IntegrityError, NotFound, PersistError, QuotaExceeded, VersionConflict
from ..formats.config import ConfigCommit, ConfigHead, ConfigValue
from ..quota import QuotaBackend

__all__ = ["Change", "ConfigLog", "on_step", "quota_retention", "stale_version"]

logger = logging.getLogger(__name__)

#: System key areas: the commit log (one key) and one key per configuration.
LOG_AREA: Final = "config-log"
LOG_NAME: Final = "commits"
VALUE_AREA: Final = "config"
#: Commits retried after losing the log's compare-and-set to another writer.
MAX_COMMIT_ATTEMPTS: Final = 64
_BACKOFF_BASE_S: Final = 0.001
_BACKOFF_CAP_S: Final = 0.05
#: Reads of the log's newest commit retried when pruning removed it meanwhile.
_MAX_READ_ATTEMPTS: Final = 8
#: Unreferenced commits are pruned every this many commits.
PRUNE_EVERY: Final = 16

_EMPTY = ConfigCommit(heads={}, changes=[])


def on_step(step: str) -> None:
    """Called between the protocol's steps; does nothing (tests replace it)."""


@dataclass(frozen=True, slots=True)
class Change:
    """One configuration's new value, ready to commit (validated, encoded)."""

    name: str
    expected_version: int
    schema_version: int
    payload: bytes
    reason: str = ""


def stale_version(name: str, expected: int, actual: int) -> VersionConflict:
    """The error of a write whose ``expected_version`` is not the current one."""
    return VersionConflict(
        f"configuration {name!r} is at version {actual}, not {expected}: get it again, "
        "re-apply your change and retry",
        expected=expected,
        actual=actual,
    )


def value_key(name: str) -> str:
    """The system key holding the versions of configuration ``name``."""
    return system_key(VALUE_AREA, name)


def log_key() -> str:
    """The system key of the namespace's commit log."""
    return system_key(LOG_AREA, LOG_NAME)


class ConfigLog:
    """Commits and reads configurations of one namespace (see the module doc).

    Thread-safe. Caches the newest commit it read (keyed by the log's version,
    which a cheap ``head`` checks on every read) and the value each name had
    in it, so reading the newest version of a configuration costs one
    bookkeeping lookup when nothing changed.
    """

    def __init__(self, pipeline: RecordPipeline) -> None:
        self._pipeline = pipeline
        self._log_key = log_key()
        self._lock = threading.Lock()
        self._newest: tuple[int, ConfigCommit] = (0, _EMPTY)
        self._values: dict[str, ConfigValue] = {}
        self._materialized: dict[str, int] = {}
        self._committed = threading.Condition()

    # Reading.

    def newest(self) -> tuple[int, ConfigCommit]:
        """The log's newest commit and its number; ``(0, empty)`` before the first."""
        backend, namespace = self._pipeline.backend, self._pipeline.namespace
        for _ in range(_MAX_READ_ATTEMPTS):
            number = backend.head(namespace, self._log_key).newest
            cached = self._newest
            if number == cached[0]:
                return cached
            try:
                _, record = self._pipeline.load(self._log_key, number)
            except NotFound:
                continue  # pruned between the head and the read: a newer one exists
            if not isinstance(record, ConfigCommit):
                raise IntegrityError(
                    "the configuration log holds a record of another kind; the storage was "
                    "altered outside gotstate-persist"
                )
            with self._lock:
                if number > self._newest[0]:
                    self._newest = (number, record)
            return number, record
        raise VersionConflict(
            "the configuration log changed on every read; too many concurrent writers, retry"
        )

    def value(self, name: str, version: int | None = None) -> ConfigValue:
        """The newest committed (or the given) version of ``name``; ``NotFound`` if none."""
        _, commit = self.newest()
        head = commit.heads.get(name)
        if head is None:
            raise NotFound(f"configuration {name!r} has no stored version; put a first one")
        if version is None or version == head.version:
            return self._head_value(name, head)
        if not 1 <= version < head.version:
            raise NotFound(
                f"configuration {name!r} has no version {version}; its newest is {head.version}"
            )
        return self._stored(name, version)

    def head_value(self, commit: ConfigCommit, name: str) -> ConfigValue | None:
        """``name``'s value as of ``commit`` (one the caller read with :meth:`newest`)."""
        head = commit.heads.get(name)
        return None if head is None else self._head_value(name, head)

    def values(self, names: Iterable[str]) -> dict[str, ConfigValue]:
        """The newest committed version of each name, all from one commit."""
        _, commit = self.newest()
        found: dict[str, ConfigValue] = {}
        for name in names:
            head = commit.heads.get(name)
            if head is None:
                raise NotFound(f"configuration {name!r} has no stored version; put a first one")
            found[name] = self._head_value(name, head)
        return found

    def history(self, name: str) -> list[ConfigValue]:
        """Every stored version of ``name``, oldest first ([] if it has none)."""
        _, commit = self.newest()
        head = commit.heads.get(name)
        if head is None:
            return []
        self._roll_forward(name, head)
        backend, namespace = self._pipeline.backend, self._pipeline.namespace
        infos = backend.versions(namespace, value_key(name))
        found = []
        for info in infos:
            if info.version > head.version:
                break  # committed after our read of the log: not in this view
            try:
                found.append(self._stored(name, info.version))
            except NotFound:
                continue  # pruned meanwhile
        return found

    def after(self, name: str, since: int) -> list[ConfigValue]:
        """The committed versions of ``name`` after ``since``, in order (for ``watch``)."""
        _, commit = self.newest()
        head = commit.heads.get(name)
        if head is None or head.version <= since:
            return []
        self._roll_forward(name, head)
        found = []
        for version in range(since + 1, head.version + 1):
            try:
                found.append(self._stored(name, version))
            except NotFound:
                raise NotFound(
                    f"version {version} of configuration {name!r} was removed by retention; "
                    "resume from a version still kept (see history)"
                ) from None
        return found

    def wait(self, number: int, timeout: float, poll_s: float) -> bool:
        """Wait up to ``timeout`` s for a commit after ``number``; whether one came.

        Commits of this process wake the waiter at once; other processes'
        are seen by polling the log's head every ``poll_s``.
        """
        deadline = time.monotonic() + timeout
        backend, namespace = self._pipeline.backend, self._pipeline.namespace
        while True:
            if backend.head(namespace, self._log_key).newest != number:
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            with self._committed:
                if self._newest[0] == number:
                    self._committed.wait(min(poll_s, left))

    # Writing.

    def commit(
        self,
        changes: Sequence[Change],
        *,
        max_versions: Callable[[], tuple[int | None, bool]],
        seen: tuple[int, ConfigCommit] | None = None,
    ) -> list[ConfigValue]:
        """Commit ``changes`` atomically; the values written (CAS per configuration).

        ``max_versions()`` is the quota's ``(max_versions_per_key, prune)``:
        a commit that would keep more versions of a configuration than that
        is refused (``QuotaExceeded``) unless ``prune``, when the oldest go.
        ``seen`` is the newest commit the caller just read (saves a read; a
        stale one only costs a retry, since the log write is a CAS on it).
        """
        for attempt in range(MAX_COMMIT_ATTEMPTS):
            number, commit = seen if seen is not None and attempt == 0 else self.newest()
            heads = dict(commit.heads)
            for change in changes:
                head = heads.get(change.name)
                self._check_expected(change, head.version if head else 0)
                if head is not None:
                    self._roll_forward(change.name, head)
            limit, prune = max_versions()
            if limit is not None and not prune:
                self._check_retention(changes, limit)
            changed_at = to_micros(self._pipeline.clock())
            values = []
            for change in changes:
                value = ConfigValue(
                    name=change.name,
                    version=change.expected_version + 1,
                    schema_version=change.schema_version,
                    payload=change.payload,
                    commit=number + 1,
                    changed_at_us=changed_at,
                    reason=change.reason,
                )
                values.append(value)
                heads[change.name] = ConfigHead(value.version, number + 1)
            record = ConfigCommit(heads=heads, changes=values)
            on_step("validated")
            try:
                materialized = self._write(number, record)
            except VersionConflict:
                delay = min(_BACKOFF_CAP_S, _BACKOFF_BASE_S * 2**attempt)
                time.sleep(random.uniform(0, delay))  # noqa: S311 - jitter, not crypto
                continue
            with self._committed:
                if number + 1 > self._newest[0]:
                    self._newest = (number + 1, record)
                for value in values:
                    self._values[value.name] = value
                self._committed.notify_all()
            on_step("committed")
            self._after_commit(record, number + 1, limit if prune else None, materialized)
            return values
        raise VersionConflict(
            f"could not commit: {MAX_COMMIT_ATTEMPTS} concurrent commits won the race first; "
            "retry later"
        )

    def _write(self, number: int, record: ConfigCommit) -> bool:
        """Write commit ``number + 1``; whether its values were written with it.

        Where the backend has transactions (SQL), the commit and its values'
        keys are one transaction: one durable write, all or none. Elsewhere
        the commit alone is the atomic step and the values follow it.
        ``VersionConflict``: another commit won; nothing was written.
        """
        pipeline = self._pipeline
        if pipeline.backend.capabilities.atomic_put_many:
            writes: list[tuple[str, int, msgspec.Struct, int | None]] = [
                (self._log_key, number + 1, record, number)
            ]
            writes += [(value_key(v.name), v.version, v, v.version - 1) for v in record.changes]
            # built here from validated values, with exact types: nothing to re-check
            pipeline.put_versions(writes, depth_checked=True)
            for value in record.changes:
                self._note_materialized(value.name, value.version)
            return True
        info = pipeline.append(self._log_key, record, expected_version=number)
        if info.version != number + 1:
            raise IntegrityError(
                "the configuration log skipped a version; the storage was altered outside "
                "gotstate-persist"
            )
        return False

    @staticmethod
    def _check_expected(change: Change, actual: int) -> None:
        if change.expected_version != actual:
            raise stale_version(change.name, change.expected_version, actual)

    def _check_retention(self, changes: Sequence[Change], limit: int) -> None:
        backend, namespace = self._pipeline.backend, self._pipeline.namespace
        for change in changes:
            kept = len(backend.versions(namespace, value_key(change.name)))
            if kept + 1 > limit:
                raise QuotaExceeded(
                    f"configuration {change.name!r} already keeps {kept} versions, the "
                    f"namespace's max_versions_per_key ({limit}, retention 'reject'); nothing "
                    "was written: raise the limit or use retention='prune-oldest'",
                    limit="max_versions_per_key",
                    maximum=limit,
                    usage=kept,
                    requested=1,
                )

    def _after_commit(
        self, record: ConfigCommit, number: int, prune: int | None, materialized: bool
    ) -> None:
        """Materialize what was committed, apply retention, prune the log (best effort).

        The commit already happened: a failure here is logged, not raised
        (the value is readable from the commit, and the next writer or
        reader of that configuration materializes it again).
        """
        for value in record.changes:
            try:
                if not materialized:
                    self._materialize(value)
                on_step(f"materialized {value.name}")
                if prune is not None:
                    self._prune_versions(value.name, prune)
            except PersistError as exc:
                logger.warning(
                    "configuration %r version %d is committed but its key was not written "
                    "yet (%s); it will be on next use",
                    value.name,
                    value.version,
                    type(exc).__name__,
                )
        if number % PRUNE_EVERY == 0:
            try:
                self._prune_log(number, record)
            except PersistError as exc:
                logger.warning("could not prune the configuration log (%s)", type(exc).__name__)

    # Materializing.

    def _head_value(self, name: str, head: ConfigHead) -> ConfigValue:
        cached = self._values.get(name)
        if cached is not None and cached.version == head.version:
            return cached
        if self._materialized.get(name, 0) >= head.version:
            value = self._stored(name, head.version)
        else:
            try:
                value = self._from_commit(name, head)
            except NotFound:
                # a newer commit moved the head on and pruned this one meanwhile (a
                # writer prunes only what its own commit no longer refers to, after
                # materializing it): read the materialized value, or say it moved
                value = self._materialized_or_conflict(name, head)
            self._materialize_quietly(value)
        with self._lock:
            self._values[name] = value
        return value

    def _stored(self, name: str, version: int) -> ConfigValue:
        _, record = self._pipeline.load(value_key(name), version)
        if not isinstance(record, ConfigValue) or (record.name, record.version) != (name, version):
            raise IntegrityError(
                f"the key of configuration {name!r} holds another record; the storage was "
                "altered outside gotstate-persist"
            )
        return record

    def _materialized_or_conflict(self, name: str, head: ConfigHead) -> ConfigValue:
        try:
            return self._stored(name, head.version)
        except NotFound:
            raise VersionConflict(
                f"configuration {name!r} changed while it was being read; read it again"
            ) from None

    def _from_commit(self, name: str, head: ConfigHead) -> ConfigValue:
        _, record = self._pipeline.load(self._log_key, head.commit)
        if isinstance(record, ConfigCommit):
            for value in record.changes:
                if value.name == name and value.version == head.version:
                    return value
        raise IntegrityError(
            f"commit {head.commit} does not hold version {head.version} of configuration "
            f"{name!r}; the storage was altered outside gotstate-persist"
        )

    def _roll_forward(self, name: str, head: ConfigHead) -> None:
        """Make sure the key of ``name`` holds ``head.version`` (it may be one behind)."""
        if self._materialized.get(name, 0) >= head.version:
            return
        stored = self._pipeline.backend.head(self._pipeline.namespace, value_key(name))
        if stored.last_version < head.version:
            self._materialize(self._from_commit(name, head))
        else:
            self._note_materialized(name, head.version)

    def _materialize_quietly(self, value: ConfigValue) -> None:
        try:
            self._materialize(value)
        except PersistError as exc:  # a reader still has the value, from the commit
            logger.warning(
                "could not write configuration %r version %d from its commit (%s)",
                value.name,
                value.version,
                type(exc).__name__,
            )

    def _materialize(self, value: ConfigValue) -> None:
        key = value_key(value.name)
        try:
            self._pipeline.append(key, value, expected_version=value.version - 1)
        except VersionConflict:
            stored = self._pipeline.backend.head(self._pipeline.namespace, key)
            if stored.last_version < value.version:
                raise IntegrityError(
                    f"the key of configuration {value.name!r} is at version "
                    f"{stored.newest}, behind its commits; the storage was altered outside "
                    "gotstate-persist"
                ) from None
        self._note_materialized(value.name, value.version)

    def _note_materialized(self, name: str, version: int) -> None:
        with self._lock:
            if self._materialized.get(name, 0) < version:
                self._materialized[name] = version

    # Pruning.

    def _prune_versions(self, name: str, keep: int) -> None:
        backend, namespace = self._pipeline.backend, self._pipeline.namespace
        infos = backend.versions(namespace, value_key(name))
        extra = [info.version for info in infos[: max(0, len(infos) - keep)]]
        if extra:
            backend.delete(namespace, value_key(name), extra)

    def _prune_log(self, number: int, record: ConfigCommit) -> None:
        """Delete the commits before ``number`` (``record``) that no head refers to."""
        referenced = {head.commit for head in record.heads.values()}
        backend, namespace = self._pipeline.backend, self._pipeline.namespace
        stale = [
            info.version
            for info in backend.versions(namespace, self._log_key)
            if info.version < number and info.version not in referenced
        ]
        if stale:
            backend.delete(namespace, self._log_key, stale)


def quota_retention(pipeline: RecordPipeline) -> tuple[int | None, bool]:
    """The namespace's ``(max_versions_per_key, prune oldest?)`` as configuration applies it."""
    backend = pipeline.backend
    if not isinstance(backend, QuotaBackend):
        return None, False
    quota = backend.quota(pipeline.namespace)
    if quota is None:
        return None, False
    return quota.max_versions_per_key, quota.retention == "prune-oldest"
