"""The Store facade and ``open_store``: the layers joined in one place.

``Store`` is what users call; the work is done by one
:class:`~gotstate_persist._pipeline.RecordPipeline` bound to the store's
namespace (encode -> seal -> store, fetch -> open -> decode -> upcast), by the
machine adapter (capture, apply) and by the services written on the pipeline
(``migrate``/``reseal``). ``Store`` checks the arguments users give, turns
backend version infos into :class:`SnapshotRef`, and keeps nothing else: two
stores on one backend and namespace behave as one.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime
from functools import partial
from types import TracebackType
from typing import TYPE_CHECKING, Any

import msgspec

from . import machine as _machine
from . import runtime as _runtime
from ._gcpause import gc_paused
from ._metrics import Metrics, StoreStats, measured, stats_of
from ._migrate import DEFAULT_BATCH_SIZE, MigrationReport, Progress, migrate, reseal
from ._names import DEFAULT_NAMESPACE, check_name, check_version
from ._pipeline import KEYRING_NEEDED, RecordPipeline, utc_now
from ._refs import SnapshotRef, snapshot_ref
from .backends import Backend, Usage, VersionInfo, open_backend
from .codec import DEFAULT_LIMITS, Codec, Limits, codec_by_name
from .errors import InvalidArgument, NotFound
from .formats import FormatRegistry
from .machine._apply import apply_locked
from .machine._gotstate import locked
from .quota import Quota, QuotaBackend
from .runtime import Attached, Head, JournalEntry
from .sealing import KeyRing

if TYPE_CHECKING:
    from .config import ConfigStore
    from .extensions import ExtensionRegistry

__all__ = ["SnapshotRef", "Store", "StoreStats", "open_store", "snapshot_ref"]


class Store:
    """Saves and restores machines and records in one namespace of a backend.

    Thread-safe: it keeps no mutable state of its own besides the services it
    starts lazily (the extension registry and the workers it runs) and its
    counters (:meth:`stats`). Use :func:`open_store` rather than constructing it directly.
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
        clock: Callable[[], datetime] = utc_now,
        quota: Quota | None = None,
        stats: bool = True,
    ) -> None:
        if not isinstance(keyring, KeyRing):
            raise InvalidArgument(KEYRING_NEEDED)
        if formats is not None and not isinstance(formats, FormatRegistry):
            raise InvalidArgument("formats must be a gotstate_persist.FormatRegistry")
        if not isinstance(limits, Limits):
            raise InvalidArgument("limits must be a gotstate_persist.Limits")
        if quota is not None and not isinstance(quota, Quota):
            raise InvalidArgument("quota must be a gotstate_persist.Quota (or None)")
        adapter = backend if isinstance(backend, QuotaBackend) else QuotaBackend(backend)
        self._pipeline = RecordPipeline(
            adapter,
            keyring=keyring,
            namespace=namespace,
            formats=formats,
            codec=codec_by_name(codec) if isinstance(codec, str) else codec,
            limits=limits,
            clock=clock,
            metrics=Metrics() if stats else None,
        )
        self._backend = adapter
        self._services_lock = threading.Lock()
        self._extensions: ExtensionRegistry | None = None
        self._config: ConfigStore | None = None
        if quota is not None:
            self._adopt(quota)

    def __repr__(self) -> str:
        return f"Store({self._backend!r}, namespace={self.namespace!r})"

    @property
    def namespace(self) -> str:
        """The namespace this store reads and writes."""
        return self._pipeline.namespace

    @property
    def backend(self) -> Backend:
        """The backend underneath (for tools such as copy and verify)."""
        return self._backend

    @property
    def formats(self) -> FormatRegistry:
        """The record formats this store can read and write."""
        return self._pipeline.formats

    @property
    def pipeline(self) -> RecordPipeline:
        """The record pipeline this store reads and writes through, for services built on it.

        E.g. ``AsyncStore``'s attachments; see "Building a service on the
        pipeline" in docs/architecture.md. It takes system keys, which
        ``Store`` refuses: services keep their own records under them.
        """
        return self._pipeline

    @property
    def extensions(self) -> ExtensionRegistry:
        """The extension registry of this namespace (``register``, ``activate``, ``bind``...).

        Registrations are records of this namespace under reserved keys:
        invisible to :meth:`keys`, counted by the namespace's quota. Extensions
        this process activated are stopped when the store closes.
        """
        with self._services_lock:
            if self._extensions is None:
                from .extensions import ExtensionRegistry

                self._extensions = ExtensionRegistry(self._pipeline)
            return self._extensions

    @property
    def config(self) -> ConfigStore:
        """Typed, validated, versioned configuration of this namespace (``define``, ``put``...).

        Configurations are records of this namespace under reserved keys,
        like extension registrations: invisible to :meth:`keys`, counted by
        the namespace's quota.
        """
        with self._services_lock:
            if self._config is None:
                from .config import ConfigStore

                self._config = ConfigStore(self._pipeline, extensions=lambda: self.extensions)
            return self._config

    # Machines.

    @measured("save_machine")
    def save_machine(
        self, key: str, machine: Any, *, expected_version: int | None = None
    ) -> SnapshotRef:
        """Snapshot ``machine`` (under its transition lock) as the next version of ``key``."""
        check_name(key, "key")
        pipeline = self._pipeline
        formats = pipeline.formats
        limits = pipeline.limits
        snapshot = _machine.capture(
            machine,
            struct_kind=formats.kind_of,
            max_depth=limits.max_depth,
            snapshot_type=pipeline.snapshot_type(),
            encode_part=partial(pipeline.codec.encode_part, limits=limits),
        )
        if _runtime.journal_seq(pipeline, key):
            # a snapshot taken behind the back of the attachment journaling the
            # key would fork it: its next entry would replay over this state
            raise InvalidArgument(
                f"key {key!r} keeps a journal, written by its attachment: snapshot it with "
                "attached.snapshot(), or delete the key first"
            )
        # capture() built the snapshot under the depth limit itself
        encoded = pipeline.encode(snapshot, depth_checked=True)
        del snapshot  # its parts, as large as the payload, are not needed to seal and write
        info = pipeline.append_encoded(key, encoded, expected_version=expected_version)
        return self._ref(info)

    @measured("restore_machine")
    def restore_machine(
        self,
        key: str,
        machine: Any,
        *,
        version: int | None = None,
        at: datetime | None = None,
    ) -> SnapshotRef:
        """Put ``machine`` into the state saved under ``key`` (newest, ``version`` or ``at``).

        ``at`` (an aware datetime): the newest snapshot not after that moment,
        plus the key's journal up to it. Entry and exit actions of the
        restore itself do not run (a replayed journal entry runs its
        transition's). On any error the machine is unchanged.
        """
        check_name(key, "key")
        if at is not None:
            moment = _runtime.check_moment(at, version=version)
            recovered = _runtime.recover(self._pipeline, key, machine, at=moment)
            assert recovered.snapshot is not None  # recover(at=) requires one
            return self._ref(recovered.snapshot)
        pipeline = self._pipeline
        info, blob = pipeline.fetch(key, version)
        # the machine's locks first (waiting for them must not pause the collector),
        # then one pause over decode and apply (see apply_locked)
        with locked(machine), gc_paused():
            record = pipeline.decode_snapshot(info, blob)
            del blob
            ref = self._ref(info)  # before apply: nothing may fail once the machine changed
            apply_locked(
                machine, record, self.formats.decode_struct, self.formats.structure_migrations
            )
            del record
        return ref

    # Machines that persist themselves (runtime/).

    def attach(
        self,
        machine: Any,
        key: str,
        *,
        snapshot_every: int = 1,
        journal: bool = False,
        extensions: tuple[str, ...] = (),
    ) -> Attached:
        """Persist ``machine`` under ``key`` after every accepted event; writes nothing now.

        The machine must already hold ``key``'s newest state (restore, recover
        or :meth:`open_machine` first). ``journal``: append each accepted event
        to the key's journal (the commit), with a snapshot every
        ``snapshot_every`` events. ``extensions``: active extensions to bind.
        """
        check_name(key, "key")
        return _runtime.attach(
            self._pipeline,
            machine,
            key,
            snapshot_every=snapshot_every,
            journal=journal,
            extensions=extensions,
            bind=self._bind,
        )

    def open_machine(
        self,
        key: str,
        build: Callable[[], Any],
        *,
        snapshot_every: int = 1,
        journal: bool = False,
        extensions: tuple[str, ...] = (),
    ) -> Attached:
        """Restore-or-start: recover ``key`` into ``build()`` if it exists, else start it.

        Then attach, with the options of :meth:`attach`.
        """
        check_name(key, "key")
        return _runtime.open_machine(
            self._pipeline,
            key,
            build,
            snapshot_every=snapshot_every,
            journal=journal,
            extensions=extensions,
            bind=self._bind,
        )

    def recover(self, key: str, machine: Any) -> Head:
        """The newest snapshot of ``key`` plus a replay of the journal after it.

        Replay runs the machine's guards and actions again. With no snapshot
        yet, ``machine`` (never started) is started and the whole journal
        replayed. On any error the machine is left as it was given.
        """
        check_name(key, "key")
        recovered = _runtime.recover(self._pipeline, key, machine)
        snapshot = recovered.snapshot
        return Head(0 if snapshot is None else snapshot.version, recovered.journal_seq)

    def journal(self, key: str, *, since: int = 0) -> list[JournalEntry]:
        """The journal entries of ``key`` after sequence ``since``, oldest first ([] if none)."""
        check_name(key, "key")
        check_version(since, allow_zero=True)
        return _runtime.read_journal(self._pipeline, key, since=since)

    def _bind(self, machine: Any, *names: str, key: str = "") -> Any:
        return self.extensions.bind(machine, *names, key=key)

    # Records.

    @measured("save")
    def save(
        self, key: str, record: msgspec.Struct, *, expected_version: int | None = None
    ) -> SnapshotRef:
        """Save a registered msgspec Struct as the next version of ``key``."""
        check_name(key, "key")  # the pipeline also takes system keys; users may not
        return self._ref(self._pipeline.append(key, record, expected_version=expected_version))

    @measured("load")
    def load(self, key: str, *, version: int | None = None) -> Any:
        """Return the record stored under ``key`` (newest or the given version)."""
        check_name(key, "key")
        return self._pipeline.load(key, version)[1]

    # Listing and deleting.

    def versions(self, key: str) -> list[SnapshotRef]:
        """Stored versions of ``key``, oldest first; [] for a missing key."""
        check_name(key, "key")
        return [self._ref(info) for info in self._backend.versions(self.namespace, key)]

    def keys(self, prefix: str = "") -> list[str]:
        """Keys with a snapshot or journal entries, sorted, optionally by prefix.

        System keys (the library's own records, such as extension
        registrations) are not listed: no user key can name them.
        """
        if prefix:
            check_name(prefix, "key prefix")
        elif not isinstance(prefix, str):
            raise InvalidArgument("prefix must be a str")
        return _runtime.user_keys(self._backend, self.namespace, prefix)

    def delete(self, key: str, *, version: int | None = None) -> int:
        """Delete every version of ``key`` and its journal (or one snapshot version).

        Returns how many versions and journal entries were deleted. Version
        and sequence numbers are never reused: the next save continues after
        the highest the key ever had.
        """
        check_name(key, "key")
        if version is not None:
            return self._backend.delete(self.namespace, key, [check_version(version)])
        deleted = 0
        for stored in (key, _runtime.journal_key_or_none(key)):
            if stored is not None and self._backend.head(self.namespace, stored).newest:
                deleted += self._backend.delete(self.namespace, stored)
        if not deleted:
            raise NotFound(f"key {key!r} has no stored version")
        return deleted

    def usage(self, *, recount: bool = False) -> Usage:
        """Stored bytes, records and keys of this namespace.

        From the kept counters; with ``recount`` counted from the stored data
        instead, repairing the counters, with any correction in ``drift``.
        The library's own records in the namespace (system keys, such as
        extension registrations) count as bytes and records, not as keys.
        """
        if recount:
            return self._backend.recount(self.namespace)
        return self._backend.usage(self.namespace)

    def stats(self) -> StoreStats:
        """What this store object did since it was opened: counts, bytes, latencies.

        An immutable snapshot (see docs/metrics.md); ``InvalidArgument`` when
        the store was opened with ``stats=False``.
        """
        return stats_of(self._pipeline)

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
        self._pipeline.require_sealing()
        return migrate(
            self._pipeline, kind, batch_size=batch_size, dry_run=dry_run, progress=progress
        )

    def reseal(
        self, *, batch_size: int = DEFAULT_BATCH_SIZE, progress: Progress | None = None
    ) -> MigrationReport:
        """Rewrite every record not sealed under the primary key under it.

        Afterwards a rotated-out key can be retired (``KeyRing.retire``);
        ``gotstate-persist verify`` shows which key ids are still in use.
        Same guarantees as :meth:`migrate`.
        """
        self._pipeline.require_sealing()
        return reseal(self._pipeline, batch_size=batch_size, progress=progress)

    @property
    def quota(self) -> Quota | None:
        """The namespace's quota as persisted now (None: unlimited)."""
        return self._backend.quota(self.namespace, fresh=True)

    def set_quota(self, quota: Quota | None) -> None:
        """Replace the namespace's quota for every process (None removes it).

        A limit below current usage refuses further writes; nothing is deleted.
        """
        if quota is not None and not isinstance(quota, Quota):
            raise InvalidArgument("quota must be a gotstate_persist.Quota (or None)")
        self._backend.set_quota(self.namespace, quota)

    def _adopt(self, quota: Quota) -> None:
        stored = self._backend.adopt_quota(self.namespace, quota)
        if stored != quota and not (stored.unlimited and quota.unlimited):
            raise InvalidArgument(
                f"namespace {self.namespace!r} already has a different quota "
                f"({stored.describe()}) than the one given ({quota.describe()}); open it "
                "without quota= to use the stored one, or change it with store.set_quota()"
            )

    def close(self) -> None:
        """Stop this process's live configurations and extensions, close the backend.

        The store cannot be used afterwards.
        """
        with self._services_lock:
            extensions, self._extensions = self._extensions, None
            config = self._config
        try:
            if config is not None:
                config.close()  # live values stop polling before the backend goes
            if extensions is not None:
                extensions.close()
        finally:
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

    def _ref(self, info: VersionInfo) -> SnapshotRef:
        return snapshot_ref(info, self.namespace)


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
    stats: bool = True,
    **options: Any,
) -> Store:
    """Open a store on the backend that ``url`` names.

    ``options`` (credentials, ``endpoint_url``, ...) go to the backend only,
    never into stored data or logs. Use as a context manager to close it.
    ``stats=False``: count nothing (no :meth:`Store.stats`, no telemetry).
    """
    check_name(namespace, "namespace")
    if not isinstance(keyring, KeyRing):
        raise InvalidArgument(KEYRING_NEEDED)
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
            stats=stats,
        )
    except BaseException:
        backend.close()
        raise
