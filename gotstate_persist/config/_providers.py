"""Where a configuration's values come from: the provider protocol, layers, simple providers.

``ConfigStore.resolve`` merges an ordered list of providers, lowest precedence
first, over the schema's defaults (``_resolve.merge``). Every provider turns
one source into a :class:`Layer`: plain values (nested dicts for nested Struct
fields, exactly the shape a TOML file or ``msgspec.to_builtins`` gives) plus,
per leaf path, a human description of where that value was written
(``"payments.toml:3"``, ``"environment PAY_TIMEOUT_S"``). Coercing the merged
values into the schema (and a secret's text into the secret type) is the strict
decode's job, in the store; providers produce builtins only.

This module owns the protocols (:class:`Provider`, :class:`ResolveContext`),
the :class:`Layer`, the schema walking every provider and the merge share
(:func:`struct_fields`, :func:`nested_struct`, :func:`mentions_type`), and the
two providers that read through the context: :class:`StoreProvider` and
:class:`ExtensionProvider`. The environment and files have their own modules
(``_env``, ``_files``).
"""

from __future__ import annotations

import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import msgspec

from ..errors import ConfigInvalid, InvalidArgument

__all__ = [
    "ExtensionProvider",
    "Layer",
    "Provider",
    "ResolveContext",
    "StoreProvider",
    "leaf_path",
    "mentions_type",
    "nested_struct",
    "struct_fields",
]

#: Keys of an extension's ``load`` request that the host fills in itself.
RESERVED_REQUEST_KEYS = frozenset({"name", "fields"})


@dataclass(frozen=True, slots=True)
class Layer:
    """One provider's contribution to a configuration.

    ``values`` holds plain values keyed by the schema's field names (their
    encoded names), nested dicts for nested Struct fields; keys the schema does
    not know are passed on to the strict decode, which decides. ``origins`` maps
    a leaf path (``"$.db.port"``) to where that value was written; a leaf with
    no entry was written at ``source``. ``values`` stays out of ``repr``: it may
    hold credentials.
    """

    source: str
    values: dict[str, Any] = field(repr=False)
    origins: dict[str, str] = field(default_factory=dict)

    def origin(self, path: str) -> str:
        """Where the value at ``path`` was written.

        Its own origin, else the origin of the nearest enclosing path (a nested
        Struct written whole, as JSON or an inline table), else ``source``.
        """
        while True:
            found = self.origins.get(path)
            if found is not None:
                return found
            path, dot, _ = path.rpartition(".")
            if not dot:
                return self.source


@runtime_checkable
class ResolveContext(Protocol):
    """What a provider may ask of the configuration being resolved (the store implements it).

    ``stored(version)`` returns the builtins of the stored value (secrets as
    plain text) and its version -- the newest when ``version`` is None -- or
    None when the configuration was never stored; a version that does not
    exist (or was pruned) raises ``NotFound``. ``extension_load`` calls a
    registered ``configuration`` extension's ``load(request)`` under its
    isolation and returns its checked result.
    """

    name: str
    schema: type[msgspec.Struct]

    def stored(self, version: int | None) -> tuple[dict[str, Any], int] | None: ...

    def extension_load(self, extension: str, request: dict[str, Any]) -> dict[str, Any]: ...


@runtime_checkable
class Provider(Protocol):
    """A source of configuration values: ``load`` reads it now, for one configuration."""

    def load(self, context: ResolveContext) -> Layer: ...


def leaf_path(parent: str, name: str) -> str:
    """The path of field ``name`` under ``parent`` (``"$"`` is the root)."""
    return f"{parent}.{name}"


def _bare(tp: Any) -> Any:
    while typing.get_origin(tp) is typing.Annotated:
        tp = typing.get_args(tp)[0]
    return tp


def nested_struct(tp: Any) -> type[msgspec.Struct] | None:
    """The Struct class of a field merged field by field (``db: Database``), else None.

    Only a field typed exactly with a Struct (``Annotated`` allowed) is nested;
    ``Database | None``, lists and dicts are leaves, replaced whole.
    """
    tp = _bare(tp)
    if isinstance(tp, type) and issubclass(tp, msgspec.Struct):
        return tp
    return None


def struct_fields(schema: type[msgspec.Struct]) -> dict[str, msgspec.structs.FieldInfo]:
    """The fields of ``schema`` by encoded name (the name in files, env and stored builtins)."""
    return {info.encode_name: info for info in msgspec.structs.fields(schema)}


def mentions_type(tp: Any, target: type | None, _seen: frozenset[type] = frozenset()) -> bool:
    """Whether ``target`` occurs anywhere in the type ``tp`` (``Secret``, ``list[Secret]``...).

    A Struct inside a leaf type counts by its fields, so a secret cannot hide in
    ``Database | None``.
    """
    if target is None:
        return False
    tp = _bare(tp)
    if tp is target:
        return True
    if isinstance(tp, type) and issubclass(tp, msgspec.Struct):
        if tp in _seen:
            return False
        return any(
            mentions_type(info.type, target, _seen | {tp}) for info in msgspec.structs.fields(tp)
        )
    return any(mentions_type(arg, target, _seen) for arg in typing.get_args(tp))


class StoreProvider:
    """The stored configuration: the newest version, or ``version`` when given.

    Every leaf's origin is ``"store version 4"``. A configuration never stored
    gives an empty layer (its defaults and other providers still apply); a
    given ``version`` that does not exist is ``NotFound`` (from the store).
    """

    __slots__ = ("version",)

    def __init__(self, version: int | None = None) -> None:
        if version is not None and (type(version) is not int or version < 1):
            raise InvalidArgument(
                "StoreProvider(version=...) must be a stored version number (an int >= 1) "
                "or None for the newest"
            )
        self.version = version

    def __repr__(self) -> str:
        return f"StoreProvider(version={self.version!r})"

    def load(self, context: ResolveContext) -> Layer:
        found = context.stored(self.version)
        if found is None:
            return Layer(source="store (never stored)", values={})
        values, version = found
        return Layer(source=f"store version {version}", values=dict(values))


class ExtensionProvider:
    """Values from a registered ``configuration`` extension's ``load(request)``.

    The request is ``{"name": <configuration name>, "fields": [<top-level
    field names>], **request}``: ``name`` is what the example extension
    ``site-defaults`` reads, ``fields`` lets an extension provide only what the
    schema has; ``request`` adds entries of your own (e.g. ``{"environment":
    "staging"}``) and may not replace those two. The result (a dict with str
    keys, checked by the extension host) is one layer whose every leaf's origin
    is ``"extension site-defaults"``.
    """

    __slots__ = ("name", "request")

    def __init__(self, name: str, *, request: Mapping[str, Any] | None = None) -> None:
        if type(name) is not str or not name:
            raise InvalidArgument("ExtensionProvider(name) must be a registered extension's name")
        extra = dict(request or {})
        if any(type(key) is not str for key in extra):
            raise InvalidArgument("ExtensionProvider(request=...) must have str keys")
        clash = sorted(RESERVED_REQUEST_KEYS & extra.keys())
        if clash:
            raise InvalidArgument(
                f"ExtensionProvider(request=...) may not set {', '.join(clash)}: "
                "the host fills them in from the configuration"
            )
        self.name = name
        self.request = extra

    def __repr__(self) -> str:
        return f"ExtensionProvider({self.name!r})"

    def load(self, context: ResolveContext) -> Layer:
        request = {
            **self.request,
            "name": context.name,
            "fields": list(struct_fields(context.schema)),
        }
        values = context.extension_load(self.name, request)
        if type(values) is not dict or any(type(key) is not str for key in values):
            raise ConfigInvalid(
                f"extension {self.name!r} did not return a dict with str keys from load(); "
                "fix the extension",
                problems=(f"$: extension {self.name} returned no mapping",),
            )
        return Layer(source=f"extension {self.name}", values=dict(values))
