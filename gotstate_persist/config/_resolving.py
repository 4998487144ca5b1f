"""``cfg.resolve`` and ``cfg.explain``: providers merged, then validated like a put.

Joins the providers (``_providers``, ``_env``, ``_files``) and the merge with
provenance (``_resolve``) to a configuration store: the context providers
read the store and extensions through, and the validation every merged
value passes before anyone gets it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import msgspec

from ..errors import ConfigInvalid, InvalidArgument, NotFound
from ._providers import Provider, StoreProvider
from ._resolve import REDACTED, ConfigField, merge
from ._secret import Secret, scrub, secret_values, to_plain

__all__ = ["resolve"]


class _Definition(Protocol):
    @property
    def schema(self) -> type[msgspec.Struct]: ...


class ConfigStore(Protocol):
    """What resolving needs of ``ConfigStore`` (a protocol, so no import cycle)."""

    def definition(self, name: str) -> _Definition: ...

    def current(self, name: str) -> tuple[int, Any]: ...

    def get(self, name: str, *, version: int | None = None) -> Any: ...

    def extension_call(self, extension: str, method: str, payload: Any) -> Any: ...

    def validated(
        self, name: str, candidate: Any, previous: Any
    ) -> tuple[msgspec.Struct | None, list[str]]: ...


class _Context:
    """What providers read: this store's stored versions and its extensions."""

    def __init__(self, config: ConfigStore, name: str) -> None:
        self._config = config
        self.name = name
        self.schema: type[msgspec.Struct] = config.definition(name).schema

    def stored(self, version: int | None) -> tuple[dict[str, Any], int] | None:
        if version is None:
            try:
                number, value = self._config.current(self.name)
            except NotFound:
                return None
        else:
            number, value = version, self._config.get(self.name, version=version)
        plain = to_plain(value, reveal=True)
        assert isinstance(plain, dict)
        return plain, number

    def extension_load(self, extension: str, request: dict[str, Any]) -> dict[str, Any]:
        found = self._config.extension_call(extension, "load", request)
        if not isinstance(found, dict):  # the host validated it already; be explicit
            raise InvalidArgument(f"extension {extension!r} load() did not return a dict")
        return found


def _secret_texts(values: dict[str, Any], fields: list[ConfigField]) -> list[str]:
    """The clear text of every secret leaf (shown redacted in ``fields``), for scrubbing."""
    found = []
    for field in fields:
        if field.value != REDACTED:
            continue
        node: Any = values
        for part in field.path.removeprefix("$.").split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, str) and node:
            found.append(node)
    return found


def resolve(
    config: ConfigStore, name: str, providers: Sequence[Provider] | None
) -> tuple[Any, list[ConfigField]]:
    """The merged, validated value of ``name`` and where each field came from."""
    chosen: Sequence[Provider] = [StoreProvider()] if providers is None else providers
    if isinstance(chosen, str | bytes) or not all(hasattr(p, "load") for p in chosen):
        raise InvalidArgument(
            "providers must be a list of providers (EnvProvider, FileProvider, StoreProvider, "
            "ExtensionProvider), lowest precedence first"
        )
    context = _Context(config, name)
    layers = [provider.load(context) for provider in chosen]
    merged = merge(context.schema, layers, secret_type=Secret)
    try:
        _, previous = config.current(name)
    except NotFound:
        previous = None
    value, problems = config.validated(name, merged.values, previous)
    if problems or value is None:
        secrets = [
            *secret_values(merged.values),
            *secret_values(value),
            *secret_values(previous),
            *_secret_texts(merged.values, merged.fields),
        ]
        shown = [scrub(problem, secrets) for problem in problems]
        raise ConfigInvalid(
            f"configuration {name!r} resolved from {len(layers)} source(s) is refused "
            f"({len(shown)} problem(s)):\n  " + "\n  ".join(shown),
            problems=tuple(shown),
        )
    return value, merged.fields
