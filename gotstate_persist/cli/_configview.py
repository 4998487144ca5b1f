"""How the ``config`` commands print values, versions, diffs and provenance.

Kept apart from the commands so that every value reaches the terminal one
way: read schema-less from its payload (``config._secret.decode_untyped``),
turned into builtins with every secret ``**********`` unless the operator
passed ``--reveal`` (``to_plain``), then written as JSON or TOML with every
non-printable character escaped. Names and reasons pass through
:func:`~gotstate_persist._names.printable` before any table sees them.

TOML is written here (the standard library only reads it): tables for nested
mappings, inline tables inside arrays, strings escaped as TOML basic strings.
TOML has no null, so a value holding one is refused with advice to use JSON.
"""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, datetime
from typing import Any, Final

from .._names import printable
from .._typedjson import typed_json
from ..config import ConfigChange, ConfigField, ConfigRef
from ..config._secret import REDACTED, Secret, decode_untyped, to_plain
from ..errors import InvalidArgument
from ..formats.config import ConfigValue
from ._output import terminal_safe_json

__all__ = [
    "change_json",
    "change_rows",
    "field_json",
    "field_rows",
    "json_text",
    "plain_value",
    "ref_json",
    "ref_row",
    "shown",
    "toml_text",
    "typed_leaves",
    "typed_value",
]

_TIME: Final = "%Y-%m-%d %H:%M:%S"
_BARE_KEY: Final = re.compile(r"[A-Za-z0-9_-]+")
#: TOML's escapes for the characters that have a short one.
_TOML_ESCAPES: Final = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\t": "\\t",
    "\n": "\\n",
    "\f": "\\f",
    "\r": "\\r",
}


def _utc(moment: datetime) -> str:
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.strftime(_TIME)


def ref_row(ref: ConfigRef) -> list[str]:
    """``VERSION, CHANGED (UTC), REASON`` of one version."""
    return [str(ref.version), _utc(ref.changed_at), printable(ref.reason)]


def ref_json(ref: ConfigRef) -> dict[str, Any]:
    """One version as a JSON object (escaped when the document is written)."""
    return {
        "name": ref.name,
        "version": ref.version,
        "changed_at": ref.changed_at.isoformat(),
        "reason": ref.reason,
    }


def typed_value(value: ConfigValue, *, reveal: bool) -> Any:
    """A stored payload as typed JSON: each secret ``{"$secret": "**********"}``, or its text
    with ``reveal``."""
    decoded = decode_untyped(value.payload)
    return typed_json(_revealed(decoded) if reveal else decoded)


def _revealed(value: Any) -> Any:
    if isinstance(value, Secret):
        return value.reveal()
    if isinstance(value, dict):
        return {key: _revealed(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_revealed(item) for item in value]
    return value


def typed_leaves(value: Any, path: str = "$") -> dict[str, Any]:
    """Each leaf of a schema-less value by the path ``config diff`` names it, as typed JSON.

    The diff reports secrets as ``**********`` text; reading the leaf here
    again shows one as ``{"$secret": ...}``, so a program can tell a secret
    from a value that happens to read ``**********``.
    """
    if isinstance(value, dict) and value:
        leaves: dict[str, Any] = {}
        for key, item in value.items():
            leaves.update(typed_leaves(item, f"{path}.{key}"))
        return leaves
    return {path: typed_json(value)}


def plain_value(value: ConfigValue, *, reveal: bool) -> Any:
    """A stored payload as builtins: secrets ``**********``, or in clear with ``reveal``."""
    return to_plain(decode_untyped(value.payload), reveal=reveal)


def json_text(value: Any) -> str:
    """``value`` as indented JSON, safe to print on a terminal (still valid JSON)."""
    return terminal_safe_json(json.dumps(value, indent=2, ensure_ascii=False))


def shown(value: Any) -> str:
    """One value in a table cell: JSON on one line, escaped (``**********`` stays as it is)."""
    return printable(json.dumps(value, ensure_ascii=False))


def change_rows(changes: list[ConfigChange]) -> list[list[str]]:
    """``PATH, OLD, NEW`` per changed leaf (absent on one side: ``-``)."""
    return [
        [
            printable(change.path),
            "-" if change.old is None else shown(change.old),
            "-" if change.new is None else shown(change.new),
        ]
        for change in changes
    ]


def change_json(change: ConfigChange, old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """One changed leaf as a JSON object, its sides from :func:`typed_leaves` (None: absent)."""
    return {"path": change.path, "old": old.get(change.path), "new": new.get(change.path)}


def field_json(field: ConfigField) -> dict[str, Any]:
    """One leaf of an ``explain`` as a JSON object (secrets already redacted: ``$secret``)."""
    secret = type(field.value) is str and field.value == REDACTED  # explain redacted it
    return {
        "path": field.path,
        "value": {"$secret": REDACTED} if secret else typed_json(field.value),
        "source": field.source,
        "overridden": list(field.overridden),
    }


def field_rows(fields: list[ConfigField]) -> list[list[str]]:
    """``PATH, VALUE, SOURCE, OVERRIDDEN`` per leaf of an ``explain``."""
    return [
        [
            printable(field.path),
            shown(field.value),
            printable(field.source),
            printable(", ".join(field.overridden)) or "-",
        ]
        for field in fields
    ]


# TOML.


def _toml_string(text: str) -> str:
    out = []
    for char in text:
        if char in _TOML_ESCAPES:
            out.append(_TOML_ESCAPES[char])
        elif char.isprintable():
            out.append(char)
        else:  # controls, DEL, bidi overrides: escaped, never sent to the terminal raw
            code = ord(char)
            out.append(f"\\u{code:04X}" if code <= 0xFFFF else f"\\U{code:08X}")
    return '"' + "".join(out) + '"'


def _toml_key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else _toml_string(key)


def _no_null(path: str) -> InvalidArgument:
    return InvalidArgument(
        f"the value holds null at {printable(path)}, which TOML cannot write: use --json"
    )


def _toml_inline(value: Any, path: str) -> str:
    if value is None:
        raise _no_null(path)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, list):
        items = [_toml_inline(item, f"{path}[{i}]") for i, item in enumerate(value)]
        return "[" + ", ".join(items) + "]"
    if isinstance(value, dict):
        items = [
            f"{_toml_key(str(k))} = {_toml_inline(v, f'{path}.{k}')}" for k, v in value.items()
        ]
        return "{" + ", ".join(items) + "}"
    raise InvalidArgument(  # to_plain gives builtins only; say so rather than guess
        f"the value at {printable(path)} has no TOML form: use --json"
    )


def _toml_table(table: dict[str, Any], keys: list[str], path: str, out: list[str]) -> None:
    nested = []
    for key, item in table.items():
        if isinstance(item, dict) and item:
            nested.append((key, item))
        else:
            out.append(f"{_toml_key(str(key))} = {_toml_inline(item, f'{path}.{key}')}")
    for key, item in nested:
        inner = [*keys, _toml_key(str(key))]
        out.append("")
        out.append("[" + ".".join(inner) + "]")
        _toml_table(item, inner, f"{path}.{key}", out)


def toml_text(value: Any) -> str:
    """A value's builtins (a mapping at the top) as a TOML document, terminal-safe."""
    if not isinstance(value, dict):
        raise InvalidArgument("the value is not a table at the top level, so TOML cannot hold it")
    out: list[str] = []
    _toml_table(value, [], "$", out)
    return "\n".join(out).lstrip("\n")
