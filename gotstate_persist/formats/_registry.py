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
"""

from __future__ import annotations

import threading

import msgspec

from .._names import check_kind
from ..errors import FormatError, InvalidArgument
from .machine import MACHINE_FORMAT_VERSION, MACHINE_KIND, MachineSnapshot

__all__ = ["FormatRegistry"]

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
        self._add(MachineSnapshot, MACHINE_KIND, MACHINE_FORMAT_VERSION)

    def register(self, record_type: type[msgspec.Struct], *, kind: str, version: int = 1) -> None:
        """Register ``record_type`` as format ``version`` of ``kind``.

        Kinds starting with ``gotstate.`` are reserved for built-in formats.
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
        self._add(record_type, kind, version)

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
            f"(registered: {sorted(versions)}); register that version's Struct"
        )

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
