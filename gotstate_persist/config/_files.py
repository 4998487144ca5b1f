"""Configuration values from a TOML, JSON or YAML file (``gp.FileProvider``).

Why a module of its own: reading a file someone else wrote is a boundary.
The read is bounded (:data:`MAX_FILE_BYTES`, :data:`MAX_VALUES`, the
library's nesting limit ``codec.MAX_DEPTH``), a parser's error is reported by
file and line but never quoted (``json``'s error keeps the whole document,
PyYAML's quotes the offending line: either may hold a credential, so neither
is chained), and every value is tagged with the line it was written on
(``_locate``) so that ``explain`` can say ``payments.toml:3``.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import json
import os
import re
import tomllib
from pathlib import Path
from typing import Any

from ..codec import MAX_DEPTH
from ..errors import ConfigInvalid, InvalidArgument, NotFound
from ._locate import Locations, locate_json, locate_toml, locate_yaml_node
from ._providers import Layer, ResolveContext

__all__ = ["MAX_FILE_BYTES", "MAX_VALUES", "FileProvider"]

#: The largest configuration file read (bytes); a larger one is refused.
MAX_FILE_BYTES = 1 << 20
#: The most values (a YAML alias counts each time it is used) a file may hold.
MAX_VALUES = 1 << 18
#: File name suffix -> format, when ``format`` is not given.
SUFFIXES = {".toml": "toml", ".json": "json", ".yaml": "yaml", ".yml": "yaml"}
FORMATS = ("toml", "json", "yaml")
_TOML_LINE = re.compile(r"\(at line (\d+), column \d+\)")


class _Refused(Exception):
    """Internal: the document is not acceptable; ``line`` is where, when known."""

    def __init__(self, reason: str, line: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.line = line


def _shape_problem(value: Any) -> str | None:
    """Why ``value`` is too deep or too big to accept, or None."""
    budget = MAX_VALUES
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        current, depth = stack.pop()
        budget -= 1
        if budget < 0:
            return f"more than {MAX_VALUES} values"
        if depth > MAX_DEPTH:
            return f"nested deeper than {MAX_DEPTH} levels"
        if isinstance(current, dict):
            stack.extend((item, depth + 1) for item in current.values())
        elif isinstance(current, list | tuple):
            stack.extend((item, depth + 1) for item in current)
    return None


# The parsers raise _Refused outside their ``except`` blocks, so that it carries
# no __context__ either: a JSONDecodeError keeps the whole document in ``doc``.


def _parse_toml(text: str) -> tuple[Any, Locations]:
    refused = None
    try:
        value = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        match = _TOML_LINE.search(str(exc))
        refused = _Refused("not valid TOML", int(match.group(1)) if match else None)
    if refused is not None:
        raise refused
    return value, locate_toml(text)


def _parse_json(text: str) -> tuple[Any, Locations]:
    refused = None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        refused = _Refused("not valid JSON", exc.lineno)
    if refused is not None:
        raise refused
    problem = _shape_problem(value)  # before the scanner recurses into it
    if problem is not None:
        raise _Refused(problem)
    return value, locate_json(text)


def _parse_yaml(text: str) -> tuple[Any, Locations]:
    yaml: Any = importlib.import_module("yaml")
    loader = yaml.SafeLoader(text)  # never yaml.Loader: no object construction from tags
    refused = None
    try:
        node = loader.get_single_node()
        value = None if node is None else loader.construct_document(node)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        refused = _Refused("not valid YAML", None if mark is None else int(mark.line) + 1)
    finally:
        loader.dispose()
    if refused is not None:
        raise refused
    problem = _shape_problem(value)  # aliases can make a small file huge, or recursive
    if problem is not None:
        raise _Refused(problem)
    return value, locate_yaml_node(node, MAX_VALUES)


_PARSERS = {"toml": _parse_toml, "json": _parse_json, "yaml": _parse_yaml}


def _refused(shown: str, refused: _Refused) -> ConfigInvalid:
    where = shown if refused.line is None else f"{shown}:{refused.line}"
    return ConfigInvalid(
        f"configuration file {where} is refused: {refused.reason}; fix the file",
        problems=(f"{where}: {refused.reason}",),
    )


class FileProvider:
    """Values from a configuration file: TOML, JSON, or YAML when PyYAML is installed.

    The format is ``format`` (``"toml"``, ``"json"``, ``"yaml"``) or follows
    the suffix (``.toml``, ``.json``, ``.yaml``/``.yml``). The file is read at
    each ``load``; its top level must be a table (mapping), whose keys are the
    schema's field names and whose tables are nested Struct fields. Every
    value's origin is ``"payments.toml:3"`` -- the path as given and the line
    of its key -- or the bare path where the line is not known for sure. Keys
    the schema does not know are passed on to the schema's strict decode.

    A missing file is ``NotFound``; a file over :data:`MAX_FILE_BYTES`, not
    UTF-8, not valid syntax (``"payments.toml:3: not valid TOML"``), nested
    deeper than ``codec.MAX_DEPTH`` or with more than :data:`MAX_VALUES`
    values is ``ConfigInvalid``. No error quotes the file's contents.
    """

    __slots__ = ("format", "path")

    def __init__(self, path: str | os.PathLike[str], *, format: str | None = None) -> None:
        try:
            self.path = Path(path)
        except TypeError:
            raise InvalidArgument("FileProvider(path) must be a str or os.PathLike") from None
        chosen = format if format is not None else SUFFIXES.get(self.path.suffix.lower())
        if chosen not in FORMATS:
            raise InvalidArgument(
                f"cannot tell the format of configuration file {self.path}: pass "
                f"format= one of {', '.join(FORMATS)} (or use a .toml, .json, .yaml suffix)"
            )
        if chosen == "yaml" and importlib.util.find_spec("yaml") is None:
            raise InvalidArgument(
                f"reading YAML ({self.path}) needs PyYAML: install it (pip install pyyaml) "
                "or use TOML or JSON"
            )
        self.format: str = chosen

    def __repr__(self) -> str:
        return f"FileProvider({str(self.path)!r}, format={self.format!r})"

    def _text(self, shown: str) -> str:
        try:
            with self.path.open("rb") as file:
                data = file.read(MAX_FILE_BYTES + 1)
        except FileNotFoundError:
            raise NotFound(
                f"configuration file {shown} does not exist; create it or leave its "
                "FileProvider out"
            ) from None
        except OSError as exc:
            raise InvalidArgument(
                f"cannot read configuration file {shown} ({type(exc).__name__}); "
                "check that it is a readable file"
            ) from exc
        if len(data) > MAX_FILE_BYTES:
            raise _refused(shown, _Refused(f"larger than {MAX_FILE_BYTES} bytes"))
        text = None
        with contextlib.suppress(UnicodeDecodeError):  # refused below, without its bytes
            text = data.decode("utf-8-sig")
        if text is None:
            raise _refused(shown, _Refused("not UTF-8 text"))
        return text

    def load(self, context: ResolveContext) -> Layer:
        shown = str(self.path)
        text = self._text(shown)
        failed: _Refused | None = None
        try:
            value, locations = _PARSERS[self.format](text)
        except RecursionError:
            failed = _Refused(f"nested deeper than {MAX_DEPTH} levels")
        except _Refused as refused:
            failed = _Refused(refused.reason, refused.line)
        if failed is not None:
            raise _refused(shown, failed)
        if value is None:
            value = {}  # an empty YAML document provides nothing
        if not isinstance(value, dict):
            raise _refused(shown, _Refused("the top level must be a table (a mapping of fields)"))
        problem = _shape_problem(value)
        if problem is not None:
            raise _refused(shown, _Refused(problem))
        origins: dict[str, str] = {}
        stack: list[tuple[dict[str, Any], tuple[str, ...]]] = [(value, ())]
        while stack:
            mapping, path = stack.pop()
            for key, item in mapping.items():
                inner = (*path, str(key))
                line = locations.line(inner)
                # every key gets an entry, so that a leaf without a line never
                # borrows the line of the table around it
                origins["$." + ".".join(inner)] = shown if line is None else f"{shown}:{line}"
                if isinstance(item, dict):
                    stack.append((item, inner))
        return Layer(source=shown, values=value, origins=origins)
