"""The storage contract every backend fulfils.

A backend stores opaque, already sealed blobs under ``(namespace, key,
version)``. It never decodes, decrypts or interprets them: sealing, formats and
quotas are layers above it, written once for every backend. The abstract
surface is deliberately small (``head``, ``put``, ``get``, ``versions``,
``keys``, ``namespaces``, ``delete``, ``close``); conveniences such as
``usage`` and ``iter_namespace`` are defined here in terms of it and may be
overridden when a backend can do them faster.

Version numbering is the backend's one piece of real logic, and it is the same
everywhere: a key remembers the highest version it ever held (``last_version``),
``put`` creates a version above ``last_version`` or fails with ``VersionConflict``
(the store always asks for ``last_version + 1``; ``copy`` may skip numbers the
source deleted), and ``delete`` never lowers ``last_version``. That single compare-and-set is
what makes concurrent appends safe without any check-then-write race.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import TYPE_CHECKING, TypeVar

import msgspec

from .._names import is_system_key
from ..errors import (
    FormatError,
    IntegrityError,
    InvalidArgument,
    NotFound,
    PersistError,
    VersionConflict,
)

if TYPE_CHECKING:
    from .._quota_rules import Quota

__all__ = [
    "EPOCH",
    "Backend",
    "Capabilities",
    "KeyHead",
    "NewVersion",
    "ReadFailure",
    "Replacement",
    "Usage",
    "VersionInfo",
    "kind_mismatch",
    "not_at_expected",
    "to_micros",
    "usage_drift",
]

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_B = TypeVar("_B", bound="Backend")
#: ``on_error(key, version, error)`` of :meth:`Backend.iter_namespace`: a stored
#: record that cannot be read (``version`` 0 when not even that is readable).
ReadFailure = Callable[[str, int, PersistError], None]


def no_step(step: str) -> None:
    """Where a test's interleaving harness pauses a protocol (see tests/_interleave.py).

    The object-store backends call their ``_step`` hook, this function unless a
    test replaced it, between the steps of every protocol.
    """


def kind_mismatch(key: str, stored: str | None, wanted: str) -> FormatError:
    """The error for saving a record of another kind under a key (one wording everywhere)."""
    return FormatError(
        f"key {key!r} holds records of kind {stored!r}; a {wanted!r} record "
        "cannot be saved under it: use another key, or delete the key first"
    )


def not_at_expected(key: str, expected: int, actual: int) -> VersionConflict:
    """The error for a save whose ``expected_version`` is stale (one wording everywhere)."""
    return VersionConflict(
        f"key {key!r} is at version {actual}, not {expected}: "
        "reload it and retry, or save without expected_version",
        expected=expected,
        actual=actual,
    )


def to_micros(moment: datetime) -> int:
    """Microseconds since the Unix epoch of an aware datetime (exact, no float)."""
    delta = moment - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a backend guarantees, declared rather than guessed by callers.

    ``transactions``: a write and its bookkeeping commit atomically.
    ``list_is_consistent``: a listing made after a write returns that write.
    ``cross_process``: several processes may share the storage safely.
    ``exact_quota``: usage counters and the persisted quota are kept and
    checked in the same transaction as each write (``put`` raises
    ``QuotaExceeded`` and applies retention itself), so limits hold across
    processes.
    ``atomic_put_many``: :meth:`Backend.put_many` stores all its versions in
    one transaction, or none.
    """

    transactions: bool = False
    list_is_consistent: bool = True
    cross_process: bool = True
    exact_quota: bool = False
    atomic_put_many: bool = False


class VersionInfo(msgspec.Struct, frozen=True):
    """Metadata kept beside one stored blob (never read from the blob itself).

    ``kind`` and ``format_version`` here are an unauthenticated copy used for
    listings; the store compares them with the authenticated values inside
    the sealed payload on every read.
    """

    key: str
    version: int
    kind: str
    format_version: int
    size: int
    created_at_us: int

    @property
    def created_at(self) -> datetime:
        """When the version was written (aware UTC).

        Stored as integer microseconds since the Unix epoch: exact, portable
        across databases, and converted only when someone looks.
        """
        try:
            return EPOCH + timedelta(microseconds=self.created_at_us)
        except (OverflowError, TypeError):
            raise IntegrityError(
                f"version {self.version} of key {self.key!r} has an impossible stored "
                "timestamp; the storage was altered outside gotstate-persist"
            ) from None


class KeyHead(msgspec.Struct, frozen=True):
    """Where a key stands: highest version ever written and newest stored.

    ``last_version`` never decreases, even when versions are deleted, so a
    version number is never reused. ``newest`` is 0 when nothing is stored.
    ``kind`` is the record kind of the stored versions (None when empty).
    """

    last_version: int = 0
    newest: int = 0
    kind: str | None = None


class Usage(msgspec.Struct, frozen=True):
    """Stored bytes, records (versions) and keys of one namespace.

    ``bytes`` and ``records`` count every stored version, system keys' too;
    ``keys`` counts user keys only (see ``_quota_rules``).

    ``drift`` is set only by a recount that found the kept counters wrong: the
    correction it applied (recounted minus what was kept).
    """

    bytes: int = 0
    records: int = 0
    keys: int = 0
    drift: Usage | None = None


class NewVersion(msgspec.Struct, frozen=True):
    """One version to create with :meth:`Backend.put_many` (the arguments of ``put``)."""

    key: str
    version: int
    blob: bytes
    kind: str
    format_version: int
    created_at_us: int
    expected_newest: int | None = None


class Replacement(msgspec.Struct, frozen=True):
    """One stored version's blob to swap for another (``migrate`` and ``reseal``).

    ``expected`` is the blob that must still be stored: the swap is a
    compare-and-set, so a version changed or deleted meanwhile is left alone.
    """

    key: str
    version: int
    blob: bytes
    format_version: int
    expected: bytes


def usage_drift(kept: Usage, counted: Usage) -> Usage | None:
    """``counted - kept``: what a recount corrects, or None when the kept figures were right."""
    if (kept.bytes, kept.records, kept.keys) == (counted.bytes, counted.records, counted.keys):
        return None
    return Usage(
        counted.bytes - kept.bytes, counted.records - kept.records, counted.keys - kept.keys
    )


class Backend(abc.ABC):
    """Versioned, create-only storage of sealed blobs.

    Implementations must be safe to call from several threads. Every failure of
    the underlying storage is raised as :class:`~gotstate_persist.BackendError`
    with the cause chained; the semantic errors are ``VersionConflict``,
    ``NotFound`` and ``FormatError`` (kind mismatch), as documented per method.
    """

    capabilities: Capabilities = Capabilities()
    #: Which storage this backend is on, as far as this process is concerned:
    #: backends with equal identities share what the process keeps per storage
    #: (the quota adapter's tallies, rate windows and cached quotas).
    #: :func:`~gotstate_persist.backends.open_backend` sets it from the
    #: backend's class and the URL it opened, unless the backend set one itself
    #: (e.g. because several URLs name one storage). None, for a backend made
    #: directly: no other object is on the same storage.
    storage_identity: Hashable | None = None

    @abc.abstractmethod
    def head(self, namespace: str, key: str) -> KeyHead:
        """Return the key's version bookkeeping (all zeros for an unknown key)."""

    @abc.abstractmethod
    def put(
        self,
        namespace: str,
        key: str,
        version: int,
        blob: bytes,
        *,
        kind: str,
        format_version: int,
        created_at_us: int,
        expected_newest: int | None = None,
    ) -> VersionInfo:
        """Create ``version`` of ``key`` holding ``blob``; never overwrite.

        Succeeds only if ``version > last_version`` and, when
        ``expected_newest`` is given, the newest stored version equals it;
        otherwise raises ``VersionConflict`` (carrying the actual newest
        version). Raises ``FormatError`` if stored versions of the key have
        another ``kind``. On any error nothing is stored.
        """

    @abc.abstractmethod
    def get(
        self, namespace: str, key: str, version: int | None = None
    ) -> tuple[VersionInfo, bytes]:
        """Return the newest (or the given) version and its blob, or raise ``NotFound``."""

    @abc.abstractmethod
    def versions(self, namespace: str, key: str) -> list[VersionInfo]:
        """List the stored versions of ``key``, oldest first ([] if none)."""

    @abc.abstractmethod
    def keys(self, namespace: str, prefix: str = "") -> list[str]:
        """List keys with at least one stored version, sorted, without reading blobs.

        Every key, system keys included (those starting with
        ``_names.SYSTEM_KEY_PREFIX``, the library's own records): a backend is
        storage and treats them like any other key, and ``copy``, ``verify``
        and ``migrate`` need them. Listings for users (``Store.keys``,
        ``gotstate-persist ls``) leave them out.
        """

    @abc.abstractmethod
    def namespaces(self) -> list[str]:
        """List namespaces that hold at least one stored version, sorted."""

    @abc.abstractmethod
    def delete(self, namespace: str, key: str, versions: Sequence[int] | None = None) -> int:
        """Delete all (or the given) versions; return how many were deleted.

        Raises ``NotFound`` if the key has no stored version, or if one of the
        given versions is not stored (then nothing is deleted).
        """

    @abc.abstractmethod
    def close(self) -> None:
        """Release connections and files; further use raises ``BackendError``."""

    # Quotas: optional. A backend that cannot persist them refuses to.

    def load_quota(self, namespace: str) -> Quota | None:
        """The quota persisted for ``namespace`` (None: unlimited)."""
        del namespace
        return None

    def store_quota(self, namespace: str, quota: Quota | None, *, replace: bool) -> Quota | None:
        """Persist ``quota`` for ``namespace`` and return the quota now in force.

        With ``replace=False`` an existing quota is kept (and returned), so
        that the first of several processes opening a namespace decides.
        """
        del namespace, quota, replace
        raise InvalidArgument(
            f"{type(self).__name__} cannot persist quotas; open the store without quota=, "
            "or ask the backend's author to implement load_quota() and store_quota()"
        )

    def replace(self, namespace: str, replacements: Sequence[Replacement]) -> list[bool]:
        """Swap stored blobs in place, each only if it is still ``expected``.

        Returns, per replacement, whether it was swapped. Logical versions,
        kinds and creation times never change; readers see the old or the new
        blob, never neither. Optional: ``migrate`` and ``reseal`` need it.
        """
        del namespace, replacements
        raise InvalidArgument(
            f"{type(self).__name__} cannot replace stored blobs, which migrate() and reseal() "
            "need; copy the store to a backend that can (gotstate-persist copy)"
        )

    def recount(self, namespace: str) -> Usage:
        """Count usage from the stored data, repairing kept counters (``drift`` if any)."""
        return self.usage(namespace)

    def sweep(self, namespace: str) -> int:
        """Remove what interrupted writes and rewrites left behind; return how many went.

        Optional: storage that settles everything in a transaction has nothing
        to sweep. Object stores remove superseded objects of a rewrite cut
        short; with a catalog, also stale reservations and orphans. It never
        removes anything a reader, writer or rewriter could still need.
        """
        del namespace
        return 0

    # Conveniences, written once in terms of the abstract surface.

    def put_many(self, namespace: str, items: Sequence[NewVersion]) -> list[VersionInfo]:
        """Create several versions, in order, as :meth:`put` would each.

        A backend with ``capabilities.atomic_put_many`` creates them all in one
        transaction (all or none: the SQL backend); by default they are put
        one after another, so an error leaves the earlier ones stored.
        Callers that need all-or-none everywhere must not rely on it (the
        configuration log makes its first item the commit point).
        """
        return [
            self.put(
                namespace,
                item.key,
                item.version,
                item.blob,
                kind=item.kind,
                format_version=item.format_version,
                created_at_us=item.created_at_us,
                expected_newest=item.expected_newest,
            )
            for item in items
        ]

    def usage(self, namespace: str) -> Usage:
        """Count stored bytes, records and keys of ``namespace``.

        A system key's versions count as bytes and records, never as a key
        (``_quota_rules``); an override must count them the same way.
        """
        total = records = 0
        names = self.keys(namespace)
        for key in names:
            for info in self.versions(namespace, key):
                total += info.size
                records += 1
        users = sum(1 for key in names if not is_system_key(key))
        return Usage(bytes=total, records=records, keys=users)

    def iter_namespace(
        self, namespace: str, *, on_error: ReadFailure | None = None
    ) -> Iterator[tuple[VersionInfo, bytes]]:
        """Yield every stored version of every key with its blob, key by key.

        A record whose stored bytes or metadata are damaged (``FormatError``,
        ``IntegrityError``) is passed to ``on_error(key, version, error)`` and
        skipped, so that a bulk walk (migrate, reseal, verify) reports it and
        goes on: one bad record must not hide the rest, least of all from the
        tool that exists to find it. Without ``on_error`` it is raised. A
        failing storage (``BackendError``) always ends the walk.
        """
        for key in self.keys(namespace):
            try:
                infos = self.versions(namespace, key)
            except (FormatError, IntegrityError) as exc:
                if on_error is None:
                    raise
                on_error(key, 0, exc)
                continue
            for info in infos:
                try:
                    found = self.get(namespace, key, info.version)
                except NotFound:
                    continue  # deleted while we were iterating
                except (FormatError, IntegrityError) as exc:
                    if on_error is None:
                        raise
                    on_error(key, info.version, exc)
                    continue
                yield found

    def __enter__(self: _B) -> _B:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
