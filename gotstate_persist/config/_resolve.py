"""Merging provider layers over a schema's defaults, keeping where every value came from.

``ConfigStore.resolve`` and ``explain`` share one merge: this module. It owns
the precedence rule (later layers win, field by field; nested Struct fields
merge recursively; anything else -- a list, a dict-typed field -- is a leaf,
replaced whole), the defaults as the lowest layer, and the provenance record
of each leaf (:class:`ConfigField`), in which a secret's value is always
:data:`REDACTED`. It produces builtins only: the store's strict decode turns
them into the schema (and reports missing fields, wrong types, constraints).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from ..errors import InvalidArgument
from ._providers import Layer, leaf_path, mentions_type, nested_struct, struct_fields

__all__ = ["DEFAULT_SOURCE", "REDACTED", "ConfigField", "Merged", "merge"]

#: How a secret's value is shown in a :class:`ConfigField` (``Secret``'s redaction).
REDACTED = "**********"
#: The source of a value that came from the schema's defaults.
DEFAULT_SOURCE = "default"


class ConfigField(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One leaf of a resolved configuration and where its value came from (``explain``).

    ``path`` is ``"$.db.port"``; ``value`` the plain value, or ``"**********"``
    for a secret; ``source`` where the winning value was written
    (``"payments.toml:3"``, ``"environment PAY_TIMEOUT_S"``, ``"store version
    4"``, ``"default"``); ``overridden`` the lower sources that also set this
    leaf, lowest first.
    """

    path: str
    value: Any
    source: str
    overridden: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Merged:
    """The merge of some layers: ``values`` for the strict decode, ``fields`` for ``explain``.

    ``values`` stays out of ``repr``: it holds secrets in clear.
    """

    values: dict[str, Any] = field(repr=False)
    fields: list[ConfigField]


@dataclass(slots=True)
class _Leaf:
    source: str
    overridden: tuple[str, ...]


def _builtins(value: Any, secret_type: type | None) -> Any:
    def reveal(obj: Any) -> Any:
        if secret_type is not None and isinstance(obj, secret_type):
            secret: Any = obj  # the secret protocol: reveal() -> its plain value
            return secret.reveal()
        raise NotImplementedError

    try:
        return msgspec.to_builtins(value, enc_hook=reveal)
    except (TypeError, NotImplementedError):
        return value  # a type only the schema's decode hook knows: handed on as it is


def _defaults(schema: type[msgspec.Struct], secret_type: type | None) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name, info in struct_fields(schema).items():
        if info.default is not msgspec.NODEFAULT:
            values[name] = _builtins(info.default, secret_type)
        elif info.default_factory is not msgspec.NODEFAULT:
            values[name] = _builtins(info.default_factory(), secret_type)
    return values


class _Merge:
    def __init__(self, secret_type: type | None) -> None:
        self.secret_type = secret_type
        self.values: dict[str, Any] = {}
        self.leaves: dict[str, _Leaf] = {}
        self.default = Layer(source=DEFAULT_SOURCE, values={})

    def _drop(self, path: str) -> tuple[str, ...]:
        """Forget the leaves at and below ``path``; return the sources that had set them.

        A nested Struct replaced by one value overrode every source of its leaves.
        """
        below = path + "."
        sources: dict[str, None] = {}
        for other in [other for other in self.leaves if other == path or other.startswith(below)]:
            leaf = self.leaves.pop(other)
            sources.update(dict.fromkeys((*leaf.overridden, leaf.source)))
        return tuple(sources)

    def _struct_dict(
        self,
        schema: type[msgspec.Struct],
        target: dict[str, Any],
        name: str,
        path: str,
        seeded: bool,
    ) -> dict[str, Any]:
        """The dict of nested field ``name``; a new one starts from its class's defaults."""
        current = target.get(name)
        if isinstance(current, dict):
            return current
        self._drop(path)
        fresh: dict[str, Any] = {}
        target[name] = fresh
        if not seeded:  # the parent's own default holds the whole value already
            self.apply(schema, _defaults(schema, self.secret_type), fresh, path, self.default)
        return fresh

    def apply(
        self,
        schema: type[msgspec.Struct],
        values: dict[str, Any],
        target: dict[str, Any],
        path: str,
        layer: Layer,
    ) -> None:
        known = struct_fields(schema)
        for name, value in values.items():
            here = leaf_path(path, name)
            info = known.get(name)
            if info is None:
                target[name] = value  # unknown to the schema: its decode decides
                continue
            nested = nested_struct(info.type)
            if nested is not None and isinstance(value, dict):
                inner = self._struct_dict(nested, target, name, here, layer is self.default)
                self.apply(nested, value, inner, here, layer)
                continue
            self.leaves[here] = _Leaf(layer.origin(here), self._drop(here))
            target[name] = value

    def fields(self, schema: type[msgspec.Struct], values: Any, path: str) -> list[ConfigField]:
        found = []
        for name, info in struct_fields(schema).items():
            here = leaf_path(path, name)
            value = values.get(name) if isinstance(values, dict) else None
            leaf = self.leaves.get(here)
            if leaf is not None:
                shown = (
                    REDACTED if mentions_type(info.type, self.secret_type) else copy.deepcopy(value)
                )
                found.append(ConfigField(here, shown, leaf.source, leaf.overridden))
            nested = nested_struct(info.type)
            if nested is not None:
                found.extend(self.fields(nested, value, here))
        return found


def merge(
    schema: type[msgspec.Struct],
    layers: Sequence[Layer],
    *,
    secret_type: type | None = None,
) -> Merged:
    """Merge ``layers`` (lowest precedence first) over ``schema``'s defaults, field by field.

    For every leaf the highest layer that set it wins; ``ConfigField.overridden``
    names the lower ones that also set it (``"default"`` first when the schema
    has a default). A field with no default that no layer sets is left out, so
    the strict decode reports it missing. A nested Struct field merges leaf by
    leaf, starting from its own class's defaults when its parent has none;
    any other value (list, dict-typed field, a nested Struct given as a
    non-mapping) is one leaf, replaced whole. Keys the schema does not know are
    passed on in ``values`` (the last layer's wins) but not explained.
    A field whose type mentions ``secret_type`` (``gp.Secret``) is shown as
    :data:`REDACTED`; defaults of that type enter ``values`` through their
    ``reveal()``.
    """
    if not (isinstance(schema, type) and issubclass(schema, msgspec.Struct)):
        raise InvalidArgument("merge(schema, ...) needs a msgspec.Struct class as the schema")
    if any(not isinstance(layer, Layer) for layer in layers):
        raise InvalidArgument("merge(..., layers) takes the Layer each provider's load returned")
    state = _Merge(secret_type)
    state.apply(schema, _defaults(schema, secret_type), state.values, "$", state.default)
    for layer in layers:
        state.apply(schema, layer.values, state.values, "$", layer)
    return Merged(values=state.values, fields=state.fields(schema, state.values, "$"))
