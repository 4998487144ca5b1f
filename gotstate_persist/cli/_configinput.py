"""What the ``config`` commands take in: schema classes, value files, sources, version numbers.

The command line has no schema of its own: ``set``, ``rollback`` and
``explain`` import the one the operator names with ``--schema
MODULE:CLASS`` -- the argument only, never a name read from the store, so
a store cannot make this command import code -- and refuse anything that
is not a ``msgspec.Struct`` subclass. Values come from a TOML or JSON file
(read through :class:`~gotstate_persist.FileProvider`, with its size and
depth limits and its line-numbered, never-quoting errors) or from stdin
(read here, under the same limits). Every problem is one
``InvalidArgument`` or ``ConfigInvalid`` whose message quotes no value: a
file may hold credentials.
"""

from __future__ import annotations

import argparse
import importlib
import json
import re
import sys
import tomllib
from typing import Any, Final

import msgspec

from .._names import check_name
from ..config import EnvProvider, ExtensionProvider, FileProvider, StoreProvider
from ..config._files import MAX_FILE_BYTES
from ..errors import ConfigInvalid, InvalidArgument

__all__ = [
    "FORMATS",
    "STDIN",
    "SourceSpec",
    "load_schema",
    "name_option",
    "provider_of",
    "read_values",
    "schema_option",
    "source_option",
    "version_option",
]

#: The formats ``set`` reads (YAML files work too when PyYAML is installed).
FORMATS: Final = ("toml", "json")
#: The file argument that means standard input.
STDIN: Final = "-"
_DOTTED: Final = r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*"
_SCHEMA: Final = re.compile(rf"({_DOTTED}):({_DOTTED})")
_SOURCE_KINDS: Final = ("file", "env", "store", "extension")
#: One ``--source``: its kind and its argument (``""`` for the newest stored version).
SourceSpec = tuple[str, str]


def version_option(text: str) -> int:
    """A version number (``--version``, ``--expected-version``, ``--to``...): 0 or more."""
    if not re.fullmatch(r"[0-9]{1,18}", text.strip()):
        raise argparse.ArgumentTypeError(
            f"invalid version {text!r}: use a whole number >= 0 (see 'config history')"
        )
    return int(text)


def name_option(text: str) -> str:
    """A configuration's name, checked before anything is opened."""
    try:
        return check_name(text, "configuration name")
    except InvalidArgument as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def schema_option(text: str) -> str:
    """``--schema MODULE:CLASS``: checked for its shape only; imported by :func:`load_schema`."""
    if not _SCHEMA.fullmatch(text):
        raise argparse.ArgumentTypeError(
            f"invalid schema {text!r}: use MODULE:CLASS, e.g. myapp.settings:Payments"
        )
    return text


def load_schema(spec: str) -> type[msgspec.Struct]:
    """Import the class ``MODULE:CLASS`` names; refuse anything but a msgspec Struct."""
    match = _SCHEMA.fullmatch(spec)
    if match is None:  # schema_option checked it already; be explicit anyway
        raise InvalidArgument(f"invalid schema {spec!r}: use MODULE:CLASS")
    module_name, qualname = match.groups()
    failure: str | None = None
    try:
        found: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        failure = f"no module named {exc.name!r} (is it on PYTHONPATH?)"
    except Exception as exc:  # the operator's module raised while importing
        failure = f"importing it raised {type(exc).__name__}"
    if failure is not None:  # raised outside the handler: its message may quote anything
        raise InvalidArgument(f"cannot import the --schema module {module_name!r}: {failure}")
    for part in qualname.split("."):
        found = getattr(found, part, None)
        if found is None:
            raise InvalidArgument(f"--schema {spec!r}: module {module_name!r} has no {qualname!r}")
    if not (isinstance(found, type) and issubclass(found, msgspec.Struct)):
        raise InvalidArgument(
            f"--schema {spec!r} is not a msgspec.Struct subclass; name the configuration's "
            "schema class"
        )
    return found


def source_option(text: str) -> SourceSpec:
    """``--source``: ``file:PATH``, ``env:PREFIX``, ``store``, ``store:N``, ``extension:NAME``."""
    kind, colon, argument = text.partition(":")
    if kind not in _SOURCE_KINDS or (kind != "store" and not argument):
        raise argparse.ArgumentTypeError(
            f"invalid source {text!r}: use file:PATH, env:PREFIX, store, store:VERSION or "
            "extension:NAME"
        )
    if kind == "store" and colon and not re.fullmatch(r"[0-9]{1,18}", argument):
        raise argparse.ArgumentTypeError(f"invalid source {text!r}: store:VERSION takes a number")
    return kind, argument


def provider_of(spec: SourceSpec) -> Any:
    """The provider one ``--source`` names (``InvalidArgument`` if it cannot be one)."""
    kind, argument = spec
    if kind == "file":
        return FileProvider(argument)
    if kind == "env":
        return EnvProvider(argument)
    if kind == "extension":
        return ExtensionProvider(argument)
    return StoreProvider(int(argument) if argument else None)


class _Reading:
    """The resolve context a :class:`FileProvider` gets when ``set`` reads a file.

    A file provider reads its file alone; the store and extensions are not
    sources of ``set``.
    """

    def __init__(self, name: str, schema: type[msgspec.Struct]) -> None:
        self.name = name
        self.schema = schema

    def stored(self, version: int | None) -> tuple[dict[str, Any], int] | None:
        raise InvalidArgument("config set reads its file only")

    def extension_load(self, extension: str, request: dict[str, Any]) -> dict[str, Any]:
        raise InvalidArgument("config set reads its file only")


def _refused(reason: str) -> ConfigInvalid:
    return ConfigInvalid(
        f"standard input is refused: {reason}; nothing was written",
        problems=(f"<stdin>: {reason}",),
    )


def _parse(text: str, fmt: str) -> Any:
    """TOML or JSON text; the error names the line, never the text (it may hold secrets)."""
    failure = ""
    try:
        return tomllib.loads(text) if fmt == "toml" else json.loads(text)
    except tomllib.TOMLDecodeError:
        failure = "not valid TOML"
    except json.JSONDecodeError as exc:
        failure = f"not valid JSON (line {exc.lineno})"
    except RecursionError:
        failure = "nested too deeply"
    raise _refused(failure or "not readable")


def _read_stdin(fmt: str | None) -> dict[str, Any]:
    if fmt is None:
        raise InvalidArgument("reading standard input needs --format toml or --format json")
    text = sys.stdin.read(MAX_FILE_BYTES + 1)
    if len(text) > MAX_FILE_BYTES:
        raise _refused(f"larger than {MAX_FILE_BYTES} characters")
    value = _parse(text, fmt)
    if not isinstance(value, dict):
        raise _refused("the top level must be a table (a mapping of fields)")
    return value


def read_values(
    source: str, fmt: str | None, name: str, schema: type[msgspec.Struct]
) -> dict[str, Any]:
    """The mapping ``set`` stores: the file ``source`` (or stdin for ``-``) in ``fmt``."""
    if source == STDIN:
        return _read_stdin(fmt)
    layer = FileProvider(source, format=fmt).load(_Reading(name, schema))
    return layer.values
