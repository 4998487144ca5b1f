"""The Store facade and ``open_store``: the layers joined in one place.

Save: record -> (kind, format version, record) payload -> bounded codec ->
sealed envelope bound to (namespace, key, version) -> backend create-only put.
Load runs the same layers upward, and every layer that can refuse does so
before the next one sees the data. A refused save writes nothing; a load
never writes.

Appends are optimistic: read the key's head, seal for ``last_version + 1``,
and let the backend's compare-and-set decide. A writer that loses the race
re-seals for the next number (the version is part of what is authenticated,
so a blob cannot simply be renumbered) and tries again.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, TypeVar

import msgspec

from . import _migrate
from . import machine as _machine
from ._gcpause import GC_PAUSE_MIN_BYTES, gc_paused
from ._migrate import DEFAULT_BATCH_SIZE, MigrationReport, Progress
from ._names import DEFAULT_NAMESPACE, check_name
from .backends import Backend, Usage, VersionInfo, open_backend
from .backends.base import kind_mismatch, to_micros
from .codec import DEFAULT_LIMITS, MAX_DEPTH, Codec, Limits, codec_by_id, codec_by_name
from .errors import FormatError, IntegrityError, InvalidArgument, VersionConflict
from .formats import MACHINE_FORMAT_VERSION, MACHINE_KIND, FormatRegistry, MachineSnapshot
from .formats._values import UnsupportedValue, comes_back_exactly
from .quota import Quota, QuotaBackend
from .sealing import KeyRing, envelope_overhead, open_envelope, seal

__all__ = ["SnapshotRef", "Store", "open_store"]

logger = logging.getLogger(__name__)

#: How often an append is retried after losing a race to another writer.
MAX_APPEND_ATTEMPTS = 64
_BACKOFF_BASE_S = 0.001
_BACKOFF_CAP_S = 0.05
_PAYLOAD_TYPE = tuple[str, int, msgspec.Raw]
_MACHINE_PAYLOAD = tuple[str, int, MachineSnapshot]
_KIND_MISMATCH = (
    "the record's stored kind/format version disagree with its authenticated "
    "contents; the storage was altered: restore it from a backup"
)

R = TypeVar("R", bound=msgspec.Struct)


class SnapshotRef(msgspec.Struct, frozen=True):
    """Where a saved record lives, and what it is.

    ``version`` starts at 1 and grows by one per save; ``size`` is the stored
    (sealed) size in bytes; ``kind``/``format_version`` name the record format.
    """

    key: str
    version: int
    size: int
    created_at: datetime
    kind: str
    format_version: int
    namespace: str = DEFAULT_NAMESPACE


def _utc_now() -> datetime:
    return datetime.now(UTC)


class Store:
    """Saves and restores machines and records in one namespace of a backend.

    Thread-safe: it keeps no mutable state of its own. Use :func:`open_store`
    rather than constructing it directly.
    """

    def __init__(
        self,
        backend: Backend,
        *,
        keyring: KeyRing,
        namespace: str = DEFAULT_NAMESPACE,
        formats: FormatRegistry | None = None,
        codec: Codec | str = "msgpack",
        limits: Limits = DEFAULT_LIMITS,
        clock: Callable[[], datetime] = _utc_now,
        quota: Quota | None = None,
    ) -> None:
        if not isinstance(keyring, KeyRing):
            raise InvalidArgument(
                "keyring must be a gotstate_persist.KeyRing (KeyRing.generate(), "
                "KeyRing.load(text) or KeyRing.from_env())"
            )
        if formats is not None and not isinstance(formats, FormatRegistry):
            raise InvalidArgument("formats must be a gotstate_persist.FormatRegistry")
        if not isinstance(limits, Limits):
            raise InvalidArgument("limits must be a gotstate_persist.Limits")
        if quota is not None and not isinstance(quota, Quota):
            raise InvalidArgument("quota must be a gotstate_persist.Quota (or None)")
        self._backend = backend if isinstance(backend, QuotaBackend) else QuotaBackend(backend)
        self._keyring = keyring
        self._namespace = check_name(namespace, "namespace")
        if quota is not None:
            self._adopt(quota)
        self._formats = formats if formats is not None else FormatRegistry()
        self._codec = codec_by_name(codec) if isinstance(codec, str) else codec
        self._limits = limits
        self._clock = clock

    def __repr__(self) -> str:
        return f"Store({self._backend!r}, namespace={self._namespace!r})"

    @property
    def namespace(self) -> str:
        """The namespace this store reads and writes."""
        return self._namespace

    @property
    def backend(self) -> Backend:
        """The backend underneath (for tools such as copy and verify)."""
        return self._backend

    @property
    def formats(self) -> FormatRegistry:
        """The record formats this store can read and write."""
        return self._formats

    # Machines.

    def save_machine(
        self, key: str, machine: Any, *, expected_version: int | None = None
    ) -> SnapshotRef:
        """Snapshot ``machine`` (under its transition lock) as the next version of ``key``."""
        check_name(key, "key")
        snapshot = _machine.capture(
            machine, struct_kind=self._formats.kind_of, max_depth=self._limits.max_depth
        )
        # capture() built the snapshot under the depth limit itself
        return self._save_record(key, snapshot, expected_version, depth_checked=True)

    def restore_machine(self, key: str, machine: Any, *, version: int | None = None) -> SnapshotRef:
        """Put ``machine`` into the state saved under ``key`` (newest or ``version``).

        Entry and exit actions do not run. On any error the machine is unchanged.
        """
        info, record = self._read_machine(key, version)
        ref = self._ref(info)  # before apply: nothing may fail once the machine changed
        _machine.apply(
            machine,
            record,
            struct_type=self._formats.type_for,
            migrations=self._formats.structure_migrations,
        )
        return ref

    # Records.

    def save(
        self, key: str, record: msgspec.Struct, *, expected_version: int | None = None
    ) -> SnapshotRef:
        """Save a registered msgspec Struct as the next version of ``key``."""
        check_name(key, "key")
        return self._save_record(key, record, expected_version)

    def load(self, key: str, *, version: int | None = None) -> Any:
        """Return the record stored under ``key`` (newest or the given version)."""
        return self._read(key, version)[1]

    # Listing and deleting.

    def versions(self, key: str) -> list[SnapshotRef]:
        """Stored versions of ``key``, oldest first; [] for a missing key."""
        check_name(key, "key")
        return [self._ref(info) for info in self._backend.versions(self._namespace, key)]

    def keys(self, prefix: str = "") -> list[str]:
        """Keys with at least one stored version, sorted, optionally by prefix."""
        if prefix:
            check_name(prefix, "key prefix")
        elif not isinstance(prefix, str):
            raise InvalidArgument("prefix must be a str")
        return self._backend.keys(self._namespace, prefix)

    def delete(self, key: str, *, version: int | None = None) -> int:
        """Delete every version of ``key`` (or one); return how many were deleted.

        Version numbers are never reused: the next save continues after the
        highest version the key ever had.
        """
        check_name(key, "key")
        versions = None if version is None else [_check_version(version)]
        return self._backend.delete(self._namespace, key, versions)

    def usage(self, *, recount: bool = False) -> Usage:
        """Stored bytes, records and keys of this namespace.

        From the kept counters; with ``recount`` counted from the stored data
        instead, repairing the counters, with any correction in ``drift``.
        """
        if recount:
            return self._backend.recount(self._namespace)
        return self._backend.usage(self._namespace)

    # Rewriting stored records in place.

    def migrate(
        self,
        kind: str,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        dry_run: bool = False,
        progress: Progress | None = None,
    ) -> MigrationReport:
        """Rewrite every ``kind`` record stored in an older format version as the newest.

        Upcast with the registered upcasters, resealed under the primary key;
        keys and logical versions do not change. Idempotent and resumable (a
        run killed at any point can simply run again). ``progress(done,
        total)`` is called as records are looked at.
        """
        if not self._keyring.can_seal:
            raise InvalidArgument("this keyring is verify-only (KeyRing.public()); it cannot save")
        return _migrate.migrate(
            self, kind, batch_size=batch_size, dry_run=dry_run, progress=progress
        )

    def reseal(
        self, *, batch_size: int = DEFAULT_BATCH_SIZE, progress: Progress | None = None
    ) -> MigrationReport:
        """Rewrite every record not sealed under the primary key under it.

        Afterwards a rotated-out key can be retired (``KeyRing.retire``);
        ``gotstate-persist verify`` shows which key ids are still in use.
        Same guarantees as :meth:`migrate`.
        """
        if not self._keyring.can_seal:
            raise InvalidArgument("this keyring is verify-only (KeyRing.public()); it cannot save")
        return _migrate.reseal(self, batch_size=batch_size, progress=progress)

    @property
    def quota(self) -> Quota | None:
        """The namespace's quota as persisted now (None: unlimited)."""
        return self._backend.quota(self._namespace, fresh=True)

    def set_quota(self, quota: Quota | None) -> None:
        """Replace the namespace's quota for every process (None removes it).

        A limit below current usage refuses further writes; nothing is deleted.
        """
        if quota is not None and not isinstance(quota, Quota):
            raise InvalidArgument("quota must be a gotstate_persist.Quota (or None)")
        self._backend.set_quota(self._namespace, quota)

    def _adopt(self, quota: Quota) -> None:
        stored = self._backend.adopt_quota(self._namespace, quota)
        if stored != quota and not (stored.unlimited and quota.unlimited):
            raise InvalidArgument(
                f"namespace {self._namespace!r} already has a different quota "
                f"({stored.describe()}) than the one given ({quota.describe()}); open it "
                "without quota= to use the stored one, or change it with store.set_quota()"
            )

    def close(self) -> None:
        """Close the backend; the store cannot be used afterwards."""
        self._backend.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # The pipeline.

    def _save_record(
        self,
        key: str,
        record: msgspec.Struct,
        expected_version: int | None,
        *,
        depth_checked: bool = False,
    ) -> SnapshotRef:
        if expected_version is not None:
            _check_version(expected_version, allow_zero=True)
        kind, format_version = self._formats.kind_of(record)
        # encoding builds no Python containers: nothing for the collector to do
        payload = self._codec.encode(
            (kind, format_version, record), limits=self._limits, depth_checked=depth_checked
        )
        if not depth_checked:
            with gc_paused(len(payload) >= GC_PAUSE_MIN_BYTES):
                self._check_round_trip(payload, record)
        stored_size = len(payload) + envelope_overhead(self._keyring.algorithm)
        if stored_size > self._limits.max_blob_bytes:
            raise FormatError(
                f"the sealed record would be {stored_size} bytes, over the limit of "
                f"{self._limits.max_blob_bytes}; store less data per key"
            )
        if not self._keyring.can_seal:
            raise InvalidArgument("this keyring is verify-only (KeyRing.public()); it cannot save")
        for attempt in range(MAX_APPEND_ATTEMPTS):
            head = self._backend.head(self._namespace, key)
            if expected_version is not None and head.newest != expected_version:
                raise VersionConflict(
                    f"key {key!r} is at version {head.newest}, not {expected_version}: "
                    "reload it and retry, or save without expected_version",
                    expected=expected_version,
                    actual=head.newest,
                )
            if head.newest and head.kind != kind:
                raise kind_mismatch(key, head.kind, kind)
            version = head.last_version + 1
            blob = seal(
                self._keyring,
                payload,
                codec_id=self._codec.id,
                namespace=self._namespace,
                key=key,
                version=version,
            )
            try:
                info = self._backend.put(
                    self._namespace,
                    key,
                    version,
                    blob,
                    kind=kind,
                    format_version=format_version,
                    created_at_us=to_micros(self._clock()),
                    expected_newest=expected_version,
                )
            except VersionConflict:
                if expected_version is not None:
                    raise
                delay = min(_BACKOFF_CAP_S, _BACKOFF_BASE_S * 2**attempt)
                time.sleep(random.uniform(0, delay))  # noqa: S311 - jitter, not crypto
                continue
            return self._ref(info)
        raise VersionConflict(
            f"could not append to key {key!r}: {MAX_APPEND_ATTEMPTS} concurrent writers won "
            "the race first; retry later"
        )

    def _check_round_trip(self, payload: bytes, record: msgspec.Struct) -> None:
        """Refuse a record that load would refuse or return changed.

        msgspec encodes whatever the fields hold; only a strict, typed decode
        notices a str in an int field. Run that decode now, before anything
        is written, and compare (repr as well, since NaN != NaN; a signaling
        NaN, which cannot be compared at all, is refused).
        """
        _kind, _version, body = self._codec.decode(payload, _PAYLOAD_TYPE, limits=self._limits)
        try:
            back = self._codec.decode_inner(body, type(record))
        except FormatError as exc:
            raise FormatError(
                f"{type(record).__qualname__} cannot be saved: a field holds a value that "
                f"does not match its annotation, so it could never be loaded ({exc})"
            ) from None
        try:
            exact = comes_back_exactly(back, record)
        except UnsupportedValue as exc:
            raise FormatError(
                f"{type(record).__qualname__} cannot be saved: a field holds {exc}"
            ) from None
        if not exact:
            raise FormatError(
                f"{type(record).__qualname__} cannot be saved exactly: a field holds a value "
                "its annotation cannot carry (such as a tuple in a list or object field); "
                "annotate the field with the exact type"
            )

    def _read_machine(self, key: str, version: int | None) -> tuple[VersionInfo, MachineSnapshot]:
        """Fetch a machine snapshot; at the default depth limit in one typed decode.

        The snapshot schema bounds its own nesting (formats.machine), so its
        typed decode enforces the depth limit and the pre-scan is skipped. Any
        other content (another kind, a damaged record) takes the general path,
        which reports it precisely.
        """
        info, blob = self._fetch(key, version)
        if self._limits.max_depth == MAX_DEPTH and info.kind == MACHINE_KIND:
            codec_id, payload = self._open_blob(info, blob)
            codec = codec_by_id(codec_id)
            try:
                with gc_paused(len(payload) >= GC_PAUSE_MIN_BYTES):
                    kind, format_version, snapshot = codec.decode(
                        payload, _MACHINE_PAYLOAD, limits=self._limits, type_bounds_depth=True
                    )
            except FormatError:
                pass  # not the current snapshot format: let the general path explain
            else:
                if (kind, format_version) != (info.kind, info.format_version):
                    raise IntegrityError(_KIND_MISMATCH)
                if format_version == MACHINE_FORMAT_VERSION:
                    return info, snapshot
        codec, kind, format_version, body = self._unwrap(info, blob)
        with gc_paused(len(body) >= GC_PAUSE_MIN_BYTES):
            record = codec.decode_inner(body, self._formats.type_for(kind, format_version))
        if not isinstance(record, MachineSnapshot):
            raise FormatError(
                f"key {key!r} holds a {info.kind!r} record, not a machine snapshot; "
                "use store.load() for it"
            )
        return info, record

    def _read(self, key: str, version: int | None) -> tuple[VersionInfo, Any]:
        info, codec, kind, format_version, body = self._open(key, version)
        with gc_paused(len(body) >= GC_PAUSE_MIN_BYTES):
            record = self._formats.decode_newest(
                kind, format_version, lambda record_type: codec.decode_inner(body, record_type)
            )
        return info, record

    def _open(
        self, key: str, version: int | None
    ) -> tuple[VersionInfo, Codec, str, int, msgspec.Raw]:
        """Fetch, authenticate and unwrap one record, leaving its body encoded."""
        info, blob = self._fetch(key, version)
        return (info, *self._unwrap(info, blob))

    def _fetch(self, key: str, version: int | None) -> tuple[VersionInfo, bytes]:
        """Check the arguments, fetch the blob, and check it is the one asked for."""
        check_name(key, "key")
        if version is not None:
            _check_version(version)
        info, blob = self._backend.get(self._namespace, key, version)
        if info.key != key or (version is not None and info.version != version):
            raise IntegrityError("the backend returned a record for another key or version")
        return info, blob

    def _unwrap(self, info: VersionInfo, blob: bytes) -> tuple[Codec, str, int, msgspec.Raw]:
        """Authenticate ``blob`` as ``info`` of this namespace and split its payload.

        The body's decoder is then chosen from the authenticated kind and
        format version, never from the unauthenticated copy beside the blob.
        """
        codec_id, payload = self._open_blob(info, blob)
        codec = codec_by_id(codec_id)
        kind, format_version, body = codec.decode(payload, _PAYLOAD_TYPE, limits=self._limits)
        if (kind, format_version) != (info.kind, info.format_version):
            raise IntegrityError(_KIND_MISMATCH)
        return codec, kind, format_version, body

    def _open_blob(self, info: VersionInfo, blob: bytes) -> tuple[int, bytes]:
        """Check the blob's size and authenticate it; return (codec id, payload)."""
        if len(blob) > self._limits.max_blob_bytes:
            raise FormatError(
                f"stored blob of {info.key!r} version {info.version} is {len(blob)} bytes, over "
                f"this store's limit of {self._limits.max_blob_bytes}; open the store with a "
                "higher Limits.max_blob_bytes (at most 16 MiB) if it is legitimate"
            )
        return open_envelope(
            self._keyring, blob, namespace=self._namespace, key=info.key, version=info.version
        )

    def _verify_blob(self, info: VersionInfo, blob: bytes) -> None:
        """Authenticate and fully decode a blob (typed when its kind is registered)."""
        codec, kind, format_version, body = self._unwrap(info, blob)
        if kind in self._formats.kinds():
            codec.decode_inner(body, self._formats.type_for(kind, format_version))
        else:
            codec.decode_inner(body, Any)

    def _inspect(self, key: str, version: int | None) -> tuple[SnapshotRef, Any, bool]:
        """For tools: the record, typed if its kind is registered, else as builtins.

        Returns ``(ref, record, typed)``. Used by the CLI, which cannot know
        the application's own Structs but can still authenticate and show them.
        """
        info, codec, kind, format_version, body = self._open(key, version)
        try:
            record_type = self._formats.type_for(kind, format_version)
        except FormatError:
            if kind in self._formats.kinds():
                raise
            return self._ref(info), codec.decode_inner(body, Any), False
        return self._ref(info), codec.decode_inner(body, record_type), True

    def _ref(self, info: VersionInfo) -> SnapshotRef:
        return SnapshotRef(
            key=info.key,
            version=info.version,
            size=info.size,
            created_at=info.created_at,
            kind=info.kind,
            format_version=info.format_version,
            namespace=self._namespace,
        )


def _check_version(version: object, *, allow_zero: bool = False) -> int:
    low = 0 if allow_zero else 1
    if type(version) is not int or not low <= version < 2**63:
        raise InvalidArgument(f"version must be an int >= {low}, got {version!r}")
    return version


def open_store(
    url: str,
    *,
    namespace: str = DEFAULT_NAMESPACE,
    keyring: KeyRing,
    quota: Quota | None = None,
    formats: FormatRegistry | None = None,
    codec: str = "msgpack",
    upgrade: bool = False,
    limits: Limits | None = None,
    **options: Any,
) -> Store:
    """Open a store on the backend that ``url`` names.

    ``options`` (credentials, ``endpoint_url``, ...) go to the backend only,
    never into stored data or logs. Use as a context manager to close it.
    """
    check_name(namespace, "namespace")
    if not isinstance(keyring, KeyRing):
        raise InvalidArgument(
            "keyring must be a gotstate_persist.KeyRing (KeyRing.generate(), "
            "KeyRing.load(text) or KeyRing.from_env())"
        )
    selected = codec_by_name(codec)
    if upgrade:
        options["upgrade"] = True
    backend = open_backend(url, **options)
    try:
        return Store(
            backend,
            keyring=keyring,
            namespace=namespace,
            formats=formats,
            codec=selected,
            limits=limits if limits is not None else DEFAULT_LIMITS,
            quota=quota,
        )
    except BaseException:
        backend.close()
        raise
