"""Configuration values from environment variables (``gp.EnvProvider``).

Why a module of its own: the environment is text, the schema is typed, and the
rules that join them (which variable names a field, how ``PAY_DB__HOST``
reaches ``$.db.host``, how text becomes a float or a list, what an
unparseable variable reports) are a small contract of their own, in the
spirit of pydantic-settings so that its users find no surprise.
"""

from __future__ import annotations

import logging
import os
import types
import typing
from collections.abc import Mapping
from typing import Any

import msgspec

from ..errors import ConfigInvalid, InvalidArgument
from ._providers import Layer, ResolveContext, leaf_path, nested_struct, struct_fields

__all__ = ["EnvProvider"]

logger = logging.getLogger(__name__)

_JSON_KINDS = (
    msgspec.inspect.ListType,
    msgspec.inspect.SetType,
    msgspec.inspect.FrozenSetType,
    msgspec.inspect.VarTupleType,
    msgspec.inspect.TupleType,
    msgspec.inspect.DictType,
    msgspec.inspect.StructType,
    msgspec.inspect.TypedDictType,
    msgspec.inspect.DataclassType,
    msgspec.inspect.NamedTupleType,
)


def _unannotated(tp: Any) -> Any:
    """``tp`` without ``Annotated`` constraints at the top or in a union's members.

    Constraints (``ge=0``...) are the strict decode's to check and report with
    its own reason; here the text only has to be a number, a bool, ...
    """
    while typing.get_origin(tp) is typing.Annotated:
        tp = typing.get_args(tp)[0]
    args = typing.get_args(tp)
    if args and typing.get_origin(tp) in (typing.Union, types.UnionType):
        members = tuple(_unannotated(arg) for arg in args)
        return typing.Union[members]  # noqa: UP007 - built from a tuple at run time
    return tp


def _members(info: msgspec.inspect.Type) -> tuple[msgspec.inspect.Type, ...]:
    if isinstance(info, msgspec.inspect.UnionType):
        return info.types
    return (info,)


def _type_name(tp: Any) -> str:
    if isinstance(tp, type):
        return tp.__name__
    return repr(tp).replace("typing.", "")


def _coerce(text: str, tp: Any) -> Any:
    """The builtins of ``text`` read as ``tp``; raises ``msgspec`` errors when it is not one.

    A type msgspec does not know (a ``Secret``) keeps the text: the strict
    decode turns it into that type. Containers and Structs are read as JSON.
    """
    bare = _unannotated(tp)
    members = _members(msgspec.inspect.type_info(bare))
    if any(isinstance(member, msgspec.inspect.CustomType) for member in members):
        return text
    if any(isinstance(member, msgspec.inspect.StrType) for member in members):
        return text
    if any(isinstance(member, _JSON_KINDS) for member in members):
        return msgspec.to_builtins(msgspec.json.decode(text, type=bare, strict=False))
    return msgspec.to_builtins(msgspec.convert(text, bare, strict=False))


class EnvProvider:
    """Values from environment variables named ``prefix`` + field name (any case).

    ``EnvProvider("PAY_")`` reads ``PAY_TIMEOUT_S`` into ``timeout_s`` and
    ``PAY_DB__HOST`` into the nested Struct field ``db.host`` (the delimiter is
    ``nested_delimiter``); ``PAY_DB`` may also hold a whole nested Struct as
    JSON, which its ``PAY_DB__...`` variables then override. Names match
    case-insensitively (prefix too), as pydantic-settings' default; the same
    name set twice in different cases is a problem, not a coin toss. The
    environment is read at each ``load`` (``environ`` replaces ``os.environ``,
    for tests and embedding).

    Text becomes typed values through msgspec (``strict=False``): numbers,
    bools (``true``/``1``/``false``/``0``), enums, dates...; lists, dicts,
    tuples, sets and Structs are JSON. Constraints (``Meta(ge=0)``) are checked
    by the schema afterwards, with the field's own reason. A field whose type
    msgspec does not know (``gp.Secret``) receives the text. A variable that
    cannot be read as its field's type is reported as ``"$.timeout_s:
    PAY_TIMEOUT_S is not a valid float"`` -- the name, never the value -- in a
    ``ConfigInvalid`` that lists every such variable.

    Variables that carry the prefix but name no field are **ignored** (their
    names are logged at DEBUG). pydantic-settings does the same for the
    environment, and its users asked for exactly that: the environment is
    shared with other programs, and platforms add prefixed variables of their
    own (Kubernetes sets ``<SERVICE>_PORT`` and ``<SERVICE>_SERVICE_HOST`` for
    every service, so a service named ``pay`` collides with prefix ``PAY_``);
    refusing them would make a configuration unloadable for reasons outside
    it. Files, which belong to the configuration, are not lenient that way:
    their unknown keys reach the schema.
    """

    __slots__ = ("environ", "nested_delimiter", "prefix")

    def __init__(
        self,
        prefix: str,
        nested_delimiter: str = "__",
        *,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        if type(prefix) is not str:
            raise InvalidArgument("EnvProvider(prefix) must be a str such as 'PAY_'")
        if type(nested_delimiter) is not str or not nested_delimiter:
            raise InvalidArgument("EnvProvider(nested_delimiter=...) must be a non-empty str")
        self.prefix = prefix
        self.nested_delimiter = nested_delimiter
        self.environ = environ

    def __repr__(self) -> str:
        return f"EnvProvider(prefix={self.prefix!r}, nested_delimiter={self.nested_delimiter!r})"

    def load(self, context: ResolveContext) -> Layer:
        environ = os.environ if self.environ is None else self.environ
        start = self.prefix.upper()
        by_upper: dict[str, list[str]] = {}
        for variable in environ:
            if variable.upper().startswith(start):
                by_upper.setdefault(variable.upper(), []).append(variable)
        reading = _Reading(environ, by_upper, self.nested_delimiter.upper())
        values = reading.struct(context.schema, "$", start)
        ignored = sorted(
            name for upper, names in by_upper.items() if upper not in reading.used for name in names
        )
        if ignored:
            logger.debug(
                "configuration %r: environment variables with prefix %r naming no field "
                "were ignored: %s",
                context.name,
                self.prefix,
                ", ".join(ignored),
            )
        if reading.problems:
            raise ConfigInvalid(
                f"environment variables for configuration {context.name!r} cannot be read "
                f"({'; '.join(reading.problems)}); fix or unset them",
                problems=tuple(reading.problems),
            )
        return Layer(source=f"environment {self.prefix}*", values=values, origins=reading.origins)


class _Reading:
    """One ``load``: the variables found, and what became of them."""

    def __init__(
        self, environ: Mapping[str, str], by_upper: dict[str, list[str]], delimiter: str
    ) -> None:
        self.environ = environ
        self.by_upper = by_upper
        self.delimiter = delimiter
        self.used: set[str] = set()
        self.origins: dict[str, str] = {}
        self.problems: list[str] = []

    def _variable(self, upper: str, path: str) -> str | None:
        names = sorted(self.by_upper.get(upper, ()))
        if not names:
            return None
        self.used.add(upper)
        if len(names) > 1:
            self.problems.append(
                f"{path}: {' and '.join(names)} are all set (names match in any case); unset all "
                "but one"
            )
            return None
        return names[0]

    def struct(
        self,
        schema: type[msgspec.Struct],
        path: str,
        start: str,
        base: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The values of ``schema``'s fields at ``path``: ``base`` (read from JSON), overridden."""
        values: dict[str, Any] = dict(base or {})
        for name, info in struct_fields(schema).items():
            here = leaf_path(path, name)
            upper = start + name.upper()
            nested = nested_struct(info.type)
            variable = self._variable(upper, here)
            if variable is not None:
                try:
                    values[name] = _coerce(self.environ[variable], info.type)
                    self.origins[here] = f"environment {variable}"
                except (msgspec.ValidationError, msgspec.DecodeError, ValueError, TypeError):
                    kind = _type_name(_unannotated(info.type))
                    how = " (JSON)" if nested is not None or "[" in kind else ""
                    self.problems.append(f"{here}: {variable} is not a valid {kind}{how}")
            if nested is not None:
                below = values.get(name)
                inner = self.struct(
                    nested, here, upper + self.delimiter, below if isinstance(below, dict) else None
                )
                if inner:
                    values[name] = inner
        return values
