"""FormatRegistry: which msgspec Struct is which stored record kind and version.

Schema-evolution rules for a registered kind (the contract users rely on):

* A stored record names its kind and integer format version inside the sealed
  payload, so the decoder is chosen from authenticated data, and only among
  classes the application registered: stored names never choose code.
* A released ``(kind, version)`` pair is frozen: never change the Struct
  registered under it. Adding, removing, renaming or retyping a field is a
  new version.
* Records written by a version newer than any registered one are refused
  with ``FormatError`` and never rewritten.
* Version N+1 may be registered with ``upcast=fn``: ``fn`` takes the data of
  a version-N record as plain builtins (``msgspec.to_builtins``: dicts, lists,
  str, int, ...) and returns the version-(N+1) data as plain builtins, which
  the version-(N+1) Struct then validates. Reads upcast in memory, step by
  step, to the newest registered version; stored bytes never change on read.
* A read always returns the newest registered version. A stored record older
  than that with no upcaster for some step on the way (versions 1 and 3
  registered, but no ``upcast=`` into version 2, say) is a ``FormatError``
  naming the missing step, never the old Struct: ``load`` and ``migrate``
  agree on what can be read.
* A registered Struct stored inside state data (any tagged value of
  :mod:`._values`) keeps the version it was written with and follows the
  same rules: a restore reads it as the newest version
  (:meth:`FormatRegistry.decode_struct`), with the same errors as a load, and
  ``migrate(kind)`` also rewrites the snapshots that embed an older version.
"""

from __future__ import annotations

import threading
import traceback
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, cast

import msgspec

from .._names import check_kind
from ..codec import MSGPACK
from ..errors import FormatError, InvalidArgument
from . import machine as _snapshots
from ._values import UnsupportedValue, encode_struct
from .config import (
    COMMIT_FORMAT_VERSION,
    COMMIT_KIND,
    CONFIG_FORMAT_VERSION,
    CONFIG_KIND,
    ConfigCommit,
    ConfigValue,
)
from .extension import (
    EXTENSION_FORMAT_VERSION,
    EXTENSION_KIND,
    RegistrationRecord,
    RegistrationRecordV1,
    upcast_registration_v1,
)
from .journal import JOURNAL_FORMAT_VERSION, JOURNAL_KIND, JournalRecord
from .machine import MACHINE_KIND
from .structure import StructureMigration, StructureMigrations

__all__ = ["FormatRegistry", "Upcaster"]

#: Turns one version's data (plain builtins) into the next version's data.
Upcaster = Callable[[Any], Any]

_RESERVED_PREFIX = "gotstate."
MAX_FORMAT_VERSION = 2**31 - 1


class FormatRegistry:
    """Maps msgspec Struct types to ``(kind, version)`` and back.

    Each registry is independent (no global state); it starts with the
    built-in kinds. Registering is thread-safe; lookups are plain dict reads.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._types: dict[str, dict[int, type[msgspec.Struct]]] = {}
        self._by_type: dict[type[msgspec.Struct], tuple[str, int]] = {}
        # kind -> version -> the function turning version - 1 data into it
        self._upcasts: dict[str, dict[int, Upcaster]] = {}
        #: How snapshots of older machine structures restore into newer machines.
        self.structure_migrations = StructureMigrations()
        # read at construction, so a registry holds the snapshot formats of its time
        for snapshot_format in _snapshots.SNAPSHOT_FORMATS:
            self._add(snapshot_format.record_type, MACHINE_KIND, snapshot_format.version)
            if snapshot_format.upcast is not None:
                self._upcasts.setdefault(MACHINE_KIND, {})[snapshot_format.version] = (
                    snapshot_format.upcast
                )
        # extension registrations are records of their namespace (extensions/)
        self._add(RegistrationRecordV1, EXTENSION_KIND, 1)
        self._add(RegistrationRecord, EXTENSION_KIND, EXTENSION_FORMAT_VERSION)
        self._upcasts.setdefault(EXTENSION_KIND, {})[EXTENSION_FORMAT_VERSION] = (
            upcast_registration_v1
        )
        # configuration values and their commit log are records too (config/)
        self._add(ConfigValue, CONFIG_KIND, CONFIG_FORMAT_VERSION)
        self._add(ConfigCommit, COMMIT_KIND, COMMIT_FORMAT_VERSION)
        # an attached machine's journal entries (runtime/)
        self._add(JournalRecord, JOURNAL_KIND, JOURNAL_FORMAT_VERSION)

    def register(
        self,
        record_type: type[msgspec.Struct],
        *,
        kind: str,
        version: int = 1,
        upcast: Upcaster | None = None,
    ) -> None:
        """Register ``record_type`` as format ``version`` of ``kind``.

        ``upcast`` turns the plain-builtins data of version ``version - 1``
        into data of this version (see the module docstring). Kinds starting
        with ``gotstate.`` are reserved for built-in formats.
        """
        if not (isinstance(record_type, type) and issubclass(record_type, msgspec.Struct)):
            raise InvalidArgument(
                f"only msgspec.Struct subclasses can be registered, not {record_type!r}"
            )
        check_kind(kind)
        if kind.startswith(_RESERVED_PREFIX):
            raise InvalidArgument(f"record kinds starting with {_RESERVED_PREFIX!r} are reserved")
        if type(version) is not int or not 1 <= version <= MAX_FORMAT_VERSION:
            raise InvalidArgument(f"format version must be an int from 1, got {version!r}")
        if upcast is not None:
            if not callable(upcast):
                raise InvalidArgument("upcast must be a function of the previous version's data")
            if version == 1:
                raise InvalidArgument("version 1 has no previous version to upcast from")
        self._add(record_type, kind, version)
        if upcast is not None:
            with self._lock:
                self._upcasts.setdefault(kind, {})[version] = upcast

    def _add(self, record_type: type[msgspec.Struct], kind: str, version: int) -> None:
        with self._lock:
            existing = self._types.get(kind, {}).get(version)
            if existing is not None and existing is not record_type:
                raise InvalidArgument(
                    f"{kind!r} version {version} is already registered as "
                    f"{existing.__qualname__}; register {record_type.__qualname__} as a new version"
                )
            previous = self._by_type.get(record_type)
            if previous is not None and previous != (kind, version):
                raise InvalidArgument(
                    f"{record_type.__qualname__} is already registered as {previous[0]!r} "
                    f"version {previous[1]}"
                )
            self._types.setdefault(kind, {})[version] = record_type
            self._by_type[record_type] = (kind, version)

    def kind_of(self, record: object) -> tuple[str, int]:
        """Return ``(kind, version)`` of a registered Struct instance or type."""
        record_type = record if isinstance(record, type) else type(record)
        found = self._by_type.get(record_type)
        if found is None:
            raise InvalidArgument(
                f"{record_type.__qualname__} is not a registered record format; call "
                f"formats.register({record_type.__qualname__}, kind=..., version=1) and pass "
                "formats= to open_store"
            )
        return found

    def type_for(self, kind: str, version: int) -> type[msgspec.Struct]:
        """Return the Struct registered for ``(kind, version)`` or raise FormatError."""
        versions = self._types.get(kind)
        if not versions:
            raise FormatError(
                f"stored record has kind {kind!r}, which this registry does not know; "
                "register its Struct with formats.register(...) and pass formats= to open_store"
            )
        record_type = versions.get(version)
        if record_type is not None:
            return record_type
        newest = max(versions)
        if version > newest:
            raise FormatError(
                f"stored {kind!r} record has format version {version}, newer than this code "
                f"knows (newest {newest}); upgrade the application. The record was not changed."
            )
        raise FormatError(
            f"stored {kind!r} record has format version {version}, which is not registered "
            f"(registered: {sorted(versions)}); register that version's Struct, or upcasters "
            f"(register(..., upcast=fn)) for every version after it"
        )

    def register_structure_migration(
        self,
        *,
        from_fingerprint: str,
        renames: Mapping[str, str] | None = None,
        removed: Mapping[str, str | None] | Iterable[str] | None = None,
        to_fingerprint: str | None = None,
    ) -> StructureMigration:
        """Let snapshots of the structure ``from_fingerprint`` restore into a newer machine.

        Semantics (renames, removals, chaining through ``to_fingerprint``):
        :mod:`gotstate_persist.formats.structure`.
        """
        return self.structure_migrations.register(
            from_fingerprint=from_fingerprint,
            renames=renames,
            removed=removed,
            to_fingerprint=to_fingerprint,
        )

    def decode_newest(
        self, kind: str, version: int, decode: Callable[[Any], Any]
    ) -> msgspec.Struct:
        """A stored ``(kind, version)`` record as the newest registered version.

        ``decode(type)`` decodes the stored body as ``type`` (a registered
        Struct, or ``Any`` for a version only an upcaster knows). Each step
        runs the next version's upcaster and validates its output against that
        version's Struct; any failure is a ``FormatError`` and nothing stored
        changes.
        """
        versions = self._types.get(kind)
        if not versions or version >= max(versions):
            return cast(msgspec.Struct, decode(self.type_for(kind, version)))
        gap = self.upcast_gap(kind, version)
        if gap is not None:
            raise FormatError(f"{gap}. The stored record was not changed.")
        newest = max(versions)
        stored_type = versions.get(version)  # validate it when its Struct is known
        data = decode(Any) if stored_type is None else msgspec.to_builtins(decode(stored_type))
        record: msgspec.Struct | None = None
        for step in range(version + 1, newest + 1):
            upcaster = self._upcasts.get(kind, {}).get(step)
            if upcaster is None:  # pragma: no cover - upcast_gap guarantees the chain
                raise FormatError(f"{kind!r} has no upcaster into version {step}")
            try:
                data = upcaster(data)
            except Exception as exc:
                # Not chained: its message and traceback may quote the decrypted record.
                raise FormatError(
                    f"the upcaster of {kind!r} from version {step - 1} to {step} failed "
                    f"({type(exc).__name__} {_raised_at(exc)}; its message is not shown, as "
                    "it may quote the decrypted record); fix it. The stored record was not "
                    "changed."
                ) from None
            step_type = versions.get(step)
            if step_type is None:
                continue  # an intermediate version known only by its upcaster
            try:
                record = msgspec.convert(data, step_type)
            except msgspec.ValidationError as exc:
                raise FormatError(
                    f"the upcaster of {kind!r} into version {step} returned data that version "
                    f"{step}'s schema refuses ({_where(exc)}); fix the upcaster. The stored "
                    "record was not changed."
                ) from None
            if step != newest:
                data = msgspec.to_builtins(record)
        assert record is not None  # the newest version is always registered
        return record

    def decode_struct(self, kind: str, version: int, encoded: bytes) -> msgspec.Struct:
        """A Struct embedded in state data, from its msgpack, as the newest version of ``kind``.

        The :data:`~gotstate_persist.formats._values.StructDecoder` a restore
        uses: a Struct stored as the newest version is decoded directly; an
        older one is upcast exactly as :meth:`decode_newest` upcasts a
        top-level record (same checks, same ``FormatError`` messages), see
        :meth:`upcast_struct`.
        """
        versions = self._types.get(kind)
        if versions and version == max(versions):
            return MSGPACK.decode(encoded, versions[version])
        return self.upcast_struct(kind, version, encoded)[0]

    def upcast_struct(
        self, kind: str, version: int, encoded: bytes
    ) -> tuple[msgspec.Struct, bytes]:
        """An embedded Struct stored as an older ``version``, as the newest one, and its msgpack.

        Upcast as :meth:`decode_newest` does (``FormatError`` for a version
        newer than this code knows, a gap in the chain, a failing upcaster
        or output a schema refuses). The result must also be storable exactly
        as state data (the check a save runs), so a restored value can be
        saved again and ``migrate`` can store what a restore would return.
        """
        record = self.decode_newest(kind, version, lambda tp: MSGPACK.decode(encoded, tp))
        newest = max(self._types[kind])
        try:
            return record, encode_struct(record)
        except UnsupportedValue as exc:
            raise FormatError(
                f"the upcasters of {kind!r} from version {version} to {newest} returned a "
                f"value that cannot be stored again ({exc}); fix the upcaster. The stored "
                "record was not changed."
            ) from None

    def _upcasts_below(self, kind: str) -> set[int]:
        """Stored versions from which upcasters reach the newest registered version."""
        versions = self._types.get(kind, {})
        if not versions:
            return set()
        newest = max(versions)
        reachable = set()
        step = newest
        upcasts = self._upcasts.get(kind, {})
        while step in upcasts:
            step -= 1
            if step < 1:
                break
            reachable.add(step)
        return reachable

    def upcast_gap(self, kind: str, version: int) -> str | None:
        """Why a stored ``(kind, version)`` record older than the newest cannot be upcast.

        ``None`` when upcasters lead from ``version`` to the newest registered
        version (or the record is not older than it); otherwise a sentence
        naming the highest step that has no upcaster, the one a developer who
        registered the newer versions most likely forgot. Bounded by the number
        of registered upcasters, not by the version numbers.
        """
        versions = self._types.get(kind, {})
        if not versions or version >= max(versions):
            return None
        newest = max(versions)
        upcasts = self._upcasts.get(kind, {})
        step = newest
        while step in upcasts and step - 1 > version:
            step -= 1
        if step in upcasts:
            return None
        return (
            f"stored {kind!r} record has format version {version}, and no upcaster turns "
            f"version {step - 1} into version {step} on the way to the newest registered "
            f"version {newest}: register version {step} with "
            f"formats.register(..., kind={kind!r}, version={step}, upcast=fn)"
        )

    def upcastable(self, kind: str, version: int) -> bool:
        """Whether a stored ``(kind, version)`` record can be read as the newest version."""
        versions = self._types.get(kind, {})
        return bool(versions) and (version == max(versions) or version in self._upcasts_below(kind))

    def newest_version(self, kind: str) -> int:
        """The newest registered format version of ``kind``."""
        versions = self._types.get(kind)
        if not versions:
            raise InvalidArgument(f"record kind {kind!r} is not registered")
        return max(versions)

    def kinds(self) -> list[str]:
        """Every registered kind, sorted."""
        return sorted(self._types)

    def __repr__(self) -> str:
        return f"FormatRegistry(kinds={self.kinds()!r})"


def _raised_at(exc: BaseException) -> str:
    """Where ``exc`` was raised (file, line, function): code, never data."""
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return "at an unknown place"
    last = frames[-1]
    return f"at {Path(last.filename).name}:{last.lineno} in {last.name}"


def _where(exc: msgspec.ValidationError) -> str:
    """The location part of a validation error (``at `$.x```), never the value."""
    text = str(exc)
    at = text.rfind(" - at `")
    return text[at + 3 :] if at >= 0 else "the data does not match"
