"""Configuration definitions: a schema per name and format version, kept in the process.

Like a ``FormatRegistry``, definitions are not stored: every process that
uses a configuration defines it (``define`` is idempotent and writes
nothing). A definition owns what turns stored payloads into values of the
newest schema: its format versions and the upcasters between them, with the
same rules as record formats (an upcaster turns the previous version's plain
data into this version's; secrets stay ``Secret`` objects on the way).

One family of names is the library's own: ``extension/<name>`` holds the
settings of extension ``<name>`` (``store.extensions.configure``). The host
cannot import an extension's ``Settings`` class, so these are stored as an
:class:`ExtensionSettings` (the fields as a mapping, secret fields as
``Secret`` objects, so they are sealed and redacted like any other secret);
every process knows that definition, and ``define``/``put`` of such a name
are refused. :class:`ConfigRef` lives here, below both the store and the
extension registry that write configurations.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final, cast

import msgspec
import msgspec.inspect as mi

from .._names import check_name
from ..backends.base import EPOCH
from ..errors import FormatError, InvalidArgument
from ..formats.config import ConfigValue
from ._schema import check_candidate, check_definition
from ._secret import Secret, decode_config, decode_untyped

__all__ = [
    "EXTENSION_SETTINGS_PREFIX",
    "ConfigRef",
    "Definition",
    "Definitions",
    "ExtensionSettings",
    "Upcaster",
    "Validator",
    "extension_settings_name",
    "is_reserved",
    "ref_of",
]

#: A plain validator: ``(candidate, previous) -> problems`` ("$.path: reason" each).
Validator = Callable[[Any, Any], Sequence[str]]
#: Turns the previous format version's plain data into this version's.
Upcaster = Callable[[Any], Any]
#: Format versions of a definition run from 1 to this.
MAX_SCHEMA_VERSION = 2**31 - 1
#: Configuration names starting with this hold extensions' settings.
EXTENSION_SETTINGS_PREFIX: Final = "extension/"


class ConfigRef(msgspec.Struct, frozen=True):
    """One committed version of a configuration."""

    name: str
    version: int
    changed_at: datetime
    reason: str = ""


def ref_of(value: ConfigValue) -> ConfigRef:
    """The public reference of a stored value."""
    changed_at = EPOCH + timedelta(microseconds=value.changed_at_us)
    return ConfigRef(value.name, value.version, changed_at, value.reason)


class ExtensionSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """An extension's settings as stored: its ``Settings`` fields by name.

    Validated against the extension's own ``Settings`` in a throwaway worker
    before it is stored; the fields its ``Settings`` types ``gp.Secret`` are
    ``Secret`` objects here.
    """

    values: dict[str, Any] = msgspec.field(default_factory=dict)


def extension_settings_name(extension: str) -> str:
    """The configuration name holding extension ``extension``'s settings."""
    return EXTENSION_SETTINGS_PREFIX + extension


def is_reserved(name: str) -> bool:
    """Whether ``name`` is one of the library's own configurations (an extension's settings)."""
    return name.startswith(EXTENSION_SETTINGS_PREFIX)


@dataclass
class Definition:
    """One configuration's schema versions, upcasters and validators."""

    name: str
    schemas: dict[int, type[msgspec.Struct]] = field(default_factory=dict)
    upcasts: dict[int, Upcaster] = field(default_factory=dict)
    validators: tuple[Validator | str, ...] = ()
    #: The newest schema's values can be shared between callers (see deeply_immutable).
    shareable: bool = False

    @property
    def version(self) -> int:
        """The newest format version: the one ``put`` writes."""
        return max(self.schemas)

    @property
    def schema(self) -> type[msgspec.Struct]:
        """The newest schema."""
        return self.schemas[self.version]

    def decode(self, schema_version: int, payload: bytes) -> msgspec.Struct:
        """A stored payload as the newest schema (upcast when older); FormatError if not."""
        newest = self.version
        if schema_version > newest:
            raise FormatError(
                f"configuration {self.name!r} was written with format version "
                f"{schema_version}, newer than the {newest} defined here; define that version "
                "(upgrade the application) to read it"
            )
        if schema_version == newest:
            return decode_config(payload, self.schema)
        missing = [v for v in range(schema_version + 1, newest + 1) if v not in self.upcasts]
        if missing:
            raise FormatError(
                f"configuration {self.name!r} version {schema_version} data cannot be read as "
                f"version {newest}: no upcaster into version {missing[0]}; define it with "
                "upcast="
            )
        older = self.schemas.get(schema_version)
        data = decode_untyped(payload) if older is None else _plain(decode_config(payload, older))
        for step in range(schema_version + 1, newest + 1):
            try:
                data = self.upcasts[step](data)
            except Exception as exc:
                # not chained: the message may quote the (decrypted) configuration
                raise FormatError(
                    f"the upcaster of configuration {self.name!r} into version {step} raised "
                    f"{type(exc).__name__}; its message is not shown, as it may quote the "
                    "configuration. Fix the upcaster; nothing stored was changed"
                ) from None
        value, problems = check_candidate(self.schema, data)
        if value is None:
            raise FormatError(
                f"the upcasters of configuration {self.name!r} produced data its newest schema "
                f"refuses ({'; '.join(problems)}); fix them. Nothing stored was changed"
            )
        return cast(msgspec.Struct, value)


_SCALARS = (
    mi.BoolType,
    mi.BytesType,
    mi.DateTimeType,
    mi.DateType,
    mi.DecimalType,
    mi.EnumType,
    mi.FloatType,
    mi.IntType,
    mi.LiteralType,
    mi.NoneType,
    mi.StrType,
    mi.TimeDeltaType,
    mi.TimeType,
    mi.UUIDType,
)


def deeply_immutable(info: mi.Type, seen: frozenset[type] = frozenset()) -> bool:
    """Whether every value of this type is immutable all the way down.

    Such a decoded value can be handed to every caller without a copy: a
    frozen Struct of scalars, tuples, frozensets and ``Secret`` (a list or
    dict anywhere could be changed by one caller under another).
    """
    if isinstance(info, _SCALARS):
        return True
    if isinstance(info, mi.CustomType):
        return info.cls is Secret
    if isinstance(info, mi.Metadata):
        return deeply_immutable(info.type, seen)
    if isinstance(info, mi.UnionType):
        return all(deeply_immutable(t, seen) for t in info.types)
    if isinstance(info, mi.VarTupleType | mi.FrozenSetType):
        return deeply_immutable(info.item_type, seen)
    if isinstance(info, mi.TupleType):
        return all(deeply_immutable(t, seen) for t in info.item_types)
    if isinstance(info, mi.StructType):
        if info.cls in seen:
            return True
        config = info.cls.__struct_config__
        return config.frozen and all(
            deeply_immutable(field.type, seen | {info.cls}) for field in info.fields
        )
    return False


def _plain(value: msgspec.Struct) -> Any:
    """Builtins of a decoded value with its secrets kept as ``Secret`` objects."""
    return msgspec.to_builtins(value, enc_hook=lambda obj: obj)


class Definitions:
    """The definitions of one ``ConfigStore``; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_name: dict[str, Definition] = {}

    def define(
        self,
        name: str,
        schema: type[msgspec.Struct],
        *,
        validators: Sequence[Validator | str] = (),
        version: int = 1,
        upcast: Upcaster | None = None,
    ) -> Definition:
        """Add ``schema`` as format ``version`` of ``name`` (idempotent)."""
        check_name(name, "configuration name")
        if is_reserved(name):
            raise InvalidArgument(
                f"configuration names starting with {EXTENSION_SETTINGS_PREFIX!r} hold "
                "extensions' settings (store.extensions.configure); choose another name"
            )
        check_definition(schema)
        if type(version) is not int or not 1 <= version <= MAX_SCHEMA_VERSION:
            raise InvalidArgument(
                f"a configuration's version must be an int from 1, got {version!r}"
            )
        if upcast is not None and (version == 1 or not callable(upcast)):
            raise InvalidArgument(
                "upcast= must be a function of the previous version's plain data, and "
                "version 1 has no previous version"
            )
        checked = tuple(validators)
        for validator in checked:
            if not (callable(validator) or isinstance(validator, str)):
                raise InvalidArgument(
                    "validators must be callables (candidate, previous) -> list[str] or names "
                    "of configuration extensions"
                )
        with self._lock:
            definition = self._by_name.setdefault(name, Definition(name))
            existing = definition.schemas.get(version)
            if existing is not None and existing is not schema:
                raise InvalidArgument(
                    f"configuration {name!r} version {version} is already defined as "
                    f"{existing.__qualname__}; define {schema.__qualname__} as a new version"
                )
            definition.schemas[version] = schema
            if version == definition.version:
                definition.shareable = deeply_immutable(mi.type_info(schema))
            if upcast is not None:
                definition.upcasts[version] = upcast
            if version == definition.version and (checked or not definition.validators):
                definition.validators = checked
            return definition

    def get(self, name: str) -> Definition:
        """The definition of ``name``; InvalidArgument naming ``define`` if there is none."""
        definition = self._by_name.get(name)  # only checked names are ever stored
        if definition is None and is_reserved(name):
            check_name(name, "configuration name")
            return Definition(name, schemas={1: ExtensionSettings})
        if definition is None:
            check_name(name, "configuration name")
            raise InvalidArgument(
                f"configuration {name!r} is not defined in this process; call "
                f"store.config.define({name!r}, Schema) first"
            )
        return definition

    def names(self) -> list[str]:
        """The names defined here, sorted."""
        with self._lock:
            return sorted(self._by_name)
