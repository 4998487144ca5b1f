"""The record pipeline: the one road between a Python record and a stored blob.

Save runs encode -> seal -> store; load runs fetch -> authenticate -> unwrap
-> decode -> upcast. Each layer that can refuse does so before the next one
sees the data: a refused save writes nothing, a load never writes.

Why an object of its own rather than private methods of ``Store``: every
service above storage (``Store`` itself, ``migrate``/``reseal``, ``copy``, the
CLI, and next the extension registry, configuration and the runtime) needs the
same steps, and a service that must reach into ``Store``'s privates to do its
job cannot be written from outside it. So the steps are public methods here,
each one a complete, checked step, and ``Store`` is a thin facade over one
pipeline bound to one namespace. ``docs/architecture.md`` shows how to build a
service on it.

Keys may be user keys or system keys (``_names.system_key``): a service keeps
its own records, such as extension registrations, under system keys, which
users can never name. ``Store``, the public boundary, refuses system keys
before it calls the pipeline.

Appends are optimistic: read the key's head, seal for ``last_version + 1``,
and let the backend's compare-and-set decide. A writer that loses the race
re-seals for the next number (the version is part of what is authenticated,
so a blob cannot simply be renumbered) and tries again.
"""

from __future__ import annotations

import functools
import random
import time
import types
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import msgspec

from ._envelope import reopen_handover, seal_handover
from ._gcpause import GC_PAUSE_MIN_BYTES, gc_paused
from ._keys import Handover
from ._metrics import Metrics
from ._names import check_name, check_stored_key, check_version
from ._stages import Encoded, Inspection, Opened
from .backends.base import (
    Backend,
    NewVersion,
    VersionInfo,
    kind_mismatch,
    not_at_expected,
    to_micros,
)
from .codec import DEFAULT_LIMITS, MAX_DEPTH, MSGPACK, Codec, Limits, codec_by_id
from .errors import FormatError, IntegrityError, InvalidArgument, QuotaExceeded, VersionConflict
from .formats import MACHINE_KIND, FormatRegistry, MachineSnapshot
from .formats._values import UnsupportedValue, comes_back_exactly
from .sealing import KeyRing, envelope_overhead, open_envelope, read_header, seal

__all__ = [
    "KEYRING_NEEDED",
    "MAX_APPEND_ATTEMPTS",
    "Encoded",
    "Inspection",
    "Opened",
    "RecordPipeline",
    "utc_now",
]

#: How often an append is retried after losing a race to another writer.
MAX_APPEND_ATTEMPTS = 64
_BACKOFF_BASE_S = 0.001
_BACKOFF_CAP_S = 0.05
_PAYLOAD_TYPE = tuple[str, int, msgspec.Raw]
_KIND_MISMATCH = (
    "the record's stored kind/format version disagree with its authenticated "
    "contents; the storage was altered: restore it from a backup"
)
KEYRING_NEEDED = (
    "keyring must be a gotstate_persist.KeyRing (KeyRing.generate(), "
    "KeyRing.load(text) or KeyRing.from_env())"
)
_VERIFY_ONLY = "this keyring is verify-only (KeyRing.public()); it cannot save"


@functools.cache
def _snapshot_payload(snapshot_type: type[msgspec.Struct]) -> Any:
    """``tuple[str, int, snapshot_type]``, built once per snapshot format (a hot path)."""
    return types.GenericAlias(tuple, (str, int, snapshot_type))


def utc_now() -> datetime:
    """The default clock: aware UTC now."""
    return datetime.now(UTC)


class RecordPipeline:
    """Encode/seal/store and fetch/open/decode for one namespace of one backend.

    Thread-safe: it keeps no mutable state of its own. Build it with the
    backend the service should write through (``Store`` passes its
    quota-enforcing adapter) and the keyring that seals and opens.
    ``metrics`` (thread-safe) counts what it writes, reads and is refused.
    """

    def __init__(
        self,
        backend: Backend,
        *,
        keyring: KeyRing,
        namespace: str,
        formats: FormatRegistry | None = None,
        codec: Codec = MSGPACK,
        limits: Limits = DEFAULT_LIMITS,
        clock: Callable[[], datetime] = utc_now,
        metrics: Metrics | None = None,
    ) -> None:
        if not isinstance(keyring, KeyRing):
            raise InvalidArgument(KEYRING_NEEDED)
        self.backend = backend
        self.keyring = keyring
        self.namespace = check_name(namespace, "namespace")
        self.formats = formats if formats is not None else FormatRegistry()
        self.codec = codec
        self.limits = limits
        self.clock = clock
        self.metrics = metrics

    def __repr__(self) -> str:
        return f"RecordPipeline({self.backend!r}, namespace={self.namespace!r})"

    # Save: encode -> seal -> store.

    def encode(self, record: msgspec.Struct, *, depth_checked: bool = False) -> Encoded:
        """Encode a registered record, refusing what could not be loaded back exactly.

        ``depth_checked``: the caller built ``record`` under the depth limit
        (machine capture does), so the pre-scan and the round-trip check are
        skipped.
        """
        kind, format_version = self.formats.kind_of(record)
        # encoding builds no Python containers: nothing for the collector to do
        payload = self.codec.encode(
            (kind, format_version, record), limits=self.limits, depth_checked=depth_checked
        )
        if not depth_checked:
            with gc_paused(len(payload) >= GC_PAUSE_MIN_BYTES):
                self._check_round_trip(payload, record)
        stored_size = len(payload) + envelope_overhead(self.keyring.algorithm)
        if stored_size > self.limits.max_blob_bytes:
            raise FormatError(
                f"the sealed record would be {stored_size} bytes, over the limit of "
                f"{self.limits.max_blob_bytes}; store less data per key"
            )
        return Encoded(kind, format_version, payload)

    def require_sealing(self) -> None:
        """Refuse early, before any work, when the keyring cannot seal (verify-only)."""
        if not self.keyring.can_seal:
            raise InvalidArgument(_VERIFY_ONLY)

    def seal(self, payload: bytes, *, key: str, version: int, codec_id: int | None = None) -> bytes:
        """Seal ``payload`` as ``version`` of ``key`` in this namespace (primary key)."""
        self.require_sealing()
        return seal(
            self.keyring,
            payload,
            codec_id=self.codec.id if codec_id is None else codec_id,
            namespace=self.namespace,
            key=key,
            version=version,
        )

    def append(
        self,
        key: str,
        record: msgspec.Struct,
        *,
        expected_version: int | None = None,
        depth_checked: bool = False,
    ) -> VersionInfo:
        """Save ``record`` as the next version of ``key`` (compare-and-set on the head).

        With ``expected_version`` the save happens only if the key's newest
        version is that one (0: the key has none), else ``VersionConflict``.
        ``key`` may be a system key (``_names.system_key``).
        """
        check_stored_key(key)
        if expected_version is not None:
            check_version(expected_version, allow_zero=True)
        encoded = self.encode(record, depth_checked=depth_checked)
        return self.append_encoded(key, encoded, expected_version=expected_version)

    def append_encoded(
        self, key: str, encoded: Encoded, *, expected_version: int | None = None
    ) -> VersionInfo:
        """:meth:`append` of a record :meth:`encode` made: the record itself may be gone.

        A large snapshot is dropped once encoded, and ``encoded`` gives its
        payload up to the seal, so that sealing and writing never hold the
        record, its payload and its blob at once.
        """
        check_stored_key(key)
        if expected_version is not None:
            check_version(expected_version, allow_zero=True)
        self.require_sealing()
        metrics = self.metrics
        payload = encoded.handover()
        for attempt in range(MAX_APPEND_ATTEMPTS):
            head = self.backend.head(self.namespace, key)
            if expected_version is not None and head.newest != expected_version:
                if metrics is not None:
                    metrics.conflict(retried=False)
                raise not_at_expected(key, expected_version, head.newest)
            if head.newest and head.kind != encoded.kind:
                raise kind_mismatch(key, head.kind, encoded.kind)
            version = head.last_version + 1
            blob = seal_handover(
                self.keyring,
                payload,
                codec_id=self.codec.id,
                namespace=self.namespace,
                key=key,
                version=version,
            )
            try:
                info = self.backend.put(
                    self.namespace,
                    key,
                    version,
                    blob,
                    kind=encoded.kind,
                    format_version=encoded.format_version,
                    created_at_us=to_micros(self.clock()),
                    expected_newest=expected_version,
                )
            except VersionConflict:
                if metrics is not None:
                    metrics.conflict(retried=expected_version is None)
                if expected_version is not None:
                    raise
                # the payload went with the seal: take it back out of the blob
                # (with the key that sealed it: a rotation since cannot take it away)
                payload = Handover(
                    reopen_handover(
                        payload, blob, namespace=self.namespace, key=key, version=version
                    )
                )
                del blob  # not held while the next attempt seals
                delay = min(_BACKOFF_CAP_S, _BACKOFF_BASE_S * 2**attempt)
                time.sleep(random.uniform(0, delay))  # noqa: S311 - jitter, not crypto
                continue
            except QuotaExceeded as exc:
                if metrics is not None:
                    metrics.refused(exc)
                raise
            if metrics is not None:
                metrics.wrote(info.size)
            return info
        raise VersionConflict(
            f"could not append to key {key!r}: {MAX_APPEND_ATTEMPTS} concurrent writers won "
            "the race first; retry later"
        )

    def put_versions(
        self,
        writes: Sequence[tuple[str, int, msgspec.Struct, int | None]],
        *,
        depth_checked: bool = False,
    ) -> list[VersionInfo]:
        """Create exact versions: ``(key, version, record, expected_newest)`` each.

        One ``Backend.put_many``: all or none where the backend has
        transactions, else one after another. ``VersionConflict`` when a
        version exists or a key is not at ``expected_newest``.
        ``depth_checked`` as for :meth:`encode`.
        """
        self.require_sealing()
        created_at_us = to_micros(self.clock())
        items = []
        for key, version, record, expected_newest in writes:
            check_stored_key(key)
            encoded = self.encode(record, depth_checked=depth_checked)
            items.append(
                NewVersion(
                    key=key,
                    version=version,
                    blob=self.seal(encoded.payload, key=key, version=version),
                    kind=encoded.kind,
                    format_version=encoded.format_version,
                    created_at_us=created_at_us,
                    expected_newest=expected_newest,
                )
            )
        try:
            infos = self.backend.put_many(self.namespace, items)
        except (QuotaExceeded, VersionConflict) as exc:
            if self.metrics is not None:
                self.metrics.refused(exc)
            raise
        if self.metrics is not None:
            for info in infos:
                self.metrics.wrote(info.size)
        return infos

    def _check_round_trip(self, payload: bytes, record: msgspec.Struct) -> None:
        """Refuse a record that load would refuse or return changed.

        msgspec encodes whatever the fields hold; only a strict, typed decode
        notices a str in an int field. Run that decode now, before anything
        is written, and compare (repr as well, since NaN != NaN; a signaling
        NaN, which cannot be compared at all, is refused).
        """
        _kind, _version, body = self.codec.decode(payload, _PAYLOAD_TYPE, limits=self.limits)
        name = type(record).__qualname__
        try:
            back = self.codec.decode_inner(body, type(record))
        except FormatError as exc:
            raise FormatError(
                f"{name} cannot be saved: a field holds a value that "
                f"does not match its annotation, so it could never be loaded ({exc})"
            ) from None
        try:
            exact = comes_back_exactly(back, record)
        except UnsupportedValue as exc:
            raise FormatError(f"{name} cannot be saved: a field holds {exc}") from None
        if not exact:
            raise FormatError(
                f"{name} cannot be saved exactly: a field holds a value "
                "its annotation cannot carry (such as a tuple in a list or object field); "
                "annotate the field with the exact type"
            )

    # Load: fetch -> authenticate -> unwrap -> decode -> upcast.

    def fetch(self, key: str, version: int | None = None) -> tuple[VersionInfo, bytes]:
        """Check the arguments, fetch the blob, and check it is the one asked for."""
        check_stored_key(key)
        if version is not None:
            check_version(version)
        try:
            info, blob = self.backend.get(self.namespace, key, version)
        except QuotaExceeded as exc:  # the read rate
            if self.metrics is not None:
                self.metrics.refused(exc)
            raise
        if info.key != key or (version is not None and info.version != version):
            raise IntegrityError("the backend returned a record for another key or version")
        if self.metrics is not None:
            self.metrics.read(len(blob))
        return info, blob

    def authenticate(self, info: VersionInfo, blob: bytes) -> tuple[int, bytes]:
        """Check the blob's size and seal as ``info`` of this namespace; (codec id, payload)."""
        if len(blob) > self.limits.max_blob_bytes:
            raise FormatError(
                f"stored blob of {info.key!r} version {info.version} is {len(blob)} bytes, over "
                f"this store's limit of {self.limits.max_blob_bytes}; open the store with a "
                "higher Limits.max_blob_bytes (at most 16 MiB) if it is legitimate"
            )
        return open_envelope(
            self.keyring, blob, namespace=self.namespace, key=info.key, version=info.version
        )

    def unwrap(self, info: VersionInfo, blob: bytes) -> Opened:
        """Authenticate ``blob`` and split its payload, leaving the body encoded."""
        codec_id, payload = self.authenticate(info, blob)
        codec = codec_by_id(codec_id)
        kind, format_version, body = codec.decode(payload, _PAYLOAD_TYPE, limits=self.limits)
        if (kind, format_version) != (info.kind, info.format_version):
            raise IntegrityError(_KIND_MISMATCH)
        return Opened(info, codec, kind, format_version, body)

    def decode(self, opened: Opened) -> msgspec.Struct:
        """The opened record as the newest registered version of its kind (upcast)."""
        codec, body = opened.codec, opened.body
        with gc_paused(len(body) >= GC_PAUSE_MIN_BYTES):
            return self.formats.decode_newest(
                opened.kind,
                opened.format_version,
                lambda record_type: codec.decode_inner(body, record_type),
            )

    def load(self, key: str, version: int | None = None) -> tuple[VersionInfo, msgspec.Struct]:
        """Fetch, open and decode one record as the newest version of its format."""
        opened = self.unwrap(*self.fetch(key, version))
        return opened.info, self.decode(opened)

    def snapshot_type(self) -> type[MachineSnapshot]:
        """The machine snapshot format saves write: the newest one registered."""
        newest = self.formats.type_for(MACHINE_KIND, self.formats.newest_version(MACHINE_KIND))
        assert issubclass(newest, MachineSnapshot)  # SNAPSHOT_FORMATS holds only those
        return newest

    def load_snapshot(
        self, key: str, version: int | None = None
    ) -> tuple[VersionInfo, MachineSnapshot]:
        """Fetch a machine snapshot as the newest snapshot format.

        A snapshot stored in the newest format, read at the default depth
        limit, takes one typed decode: the snapshot schema bounds its own
        nesting (formats.machine), so the pre-scan is skipped. Anything else
        (an older format to upcast, another kind, a damaged record) takes the
        general path, which upcasts or reports it precisely.
        """
        info, blob = self.fetch(key, version)
        return info, self.decode_snapshot(info, blob)

    def decode_snapshot(self, info: VersionInfo, blob: bytes) -> MachineSnapshot:
        """:meth:`load_snapshot` of a blob :meth:`fetch` returned."""
        newest = self.formats.newest_version(MACHINE_KIND)
        if (
            self.limits.max_depth == MAX_DEPTH
            and info.kind == MACHINE_KIND
            and info.format_version == newest
        ):
            snapshot = self._decode_newest_snapshot(info, blob, newest)
            if snapshot is not None:
                return snapshot
        record = self.decode(self.unwrap(info, blob))
        if not isinstance(record, MachineSnapshot):
            raise FormatError(
                f"key {info.key!r} holds a {info.kind!r} record, not a machine snapshot; "
                "use store.load() for it"
            )
        return record

    def _decode_newest_snapshot(
        self, info: VersionInfo, blob: bytes, newest: int
    ) -> MachineSnapshot | None:
        """The one-decode fast path; None lets the general path explain a failure."""
        codec_id, payload = self.authenticate(info, blob)
        codec = codec_by_id(codec_id)
        payload_type = _snapshot_payload(self.formats.type_for(MACHINE_KIND, newest))
        try:
            with gc_paused(len(payload) >= GC_PAUSE_MIN_BYTES):
                kind, format_version, snapshot = codec.decode(
                    payload, payload_type, limits=self.limits, type_bounds_depth=True
                )
        except FormatError:
            return None
        if (kind, format_version) != (info.kind, info.format_version):
            raise IntegrityError(_KIND_MISMATCH)
        return snapshot  # type: ignore[no-any-return]

    # Tools.

    def verify(self, info: VersionInfo, blob: bytes) -> None:
        """Authenticate and fully decode a blob (typed when its kind is registered)."""
        opened = self.unwrap(info, blob)
        if opened.kind in self.formats.kinds():
            opened.codec.decode_inner(
                opened.body, self.formats.type_for(opened.kind, opened.format_version)
            )
        else:
            opened.codec.decode_inner(opened.body, Any)

    def inspect(self, key: str, version: int | None = None) -> Inspection:
        """One record for a tool that may not know the application's Structs.

        Typed if its kind is registered, else as builtins: the CLI can still
        authenticate and show records of kinds it cannot import.
        """
        info, blob = self.fetch(key, version)
        opened, header = self.unwrap(info, blob), read_header(blob)  # unwrap authenticated it
        try:
            record_type: Any = self.formats.type_for(opened.kind, opened.format_version)
        except FormatError:
            if opened.kind in self.formats.kinds():
                raise
            record_type = Any
        record = opened.codec.decode_inner(opened.body, record_type)
        return Inspection(opened.info, record, record_type is not Any, header)

    # Rewrites in place (migrate, reseal): same key, same version, new blob.

    def upcast_blob(self, info: VersionInfo, blob: bytes) -> bytes:
        """``blob`` rewritten in the newest format of its kind, sealed under the primary key."""
        opened = self.unwrap(info, blob)
        record = self.decode(opened)
        newest = self.formats.newest_version(opened.kind)
        payload = opened.codec.encode((opened.kind, newest, record), limits=self.limits)
        return self.seal(payload, key=info.key, version=info.version, codec_id=opened.codec.id)

    def reseal_blob(self, info: VersionInfo, blob: bytes) -> bytes:
        """``blob``'s payload sealed again under the primary key, bytes unchanged."""
        codec_id, payload = self.authenticate(info, blob)
        codec_by_id(codec_id)  # a known codec, as every read requires
        return self.seal(payload, key=info.key, version=info.version, codec_id=codec_id)
