"""The one JSON document a command prints with ``--json`` (its shape: docs/json.md).

Every document is an object that says which shape it has and which command
wrote it, ``{"shape_version": 1, "command": "ls", ...}``, so a program that
reads it can refuse a shape it does not know instead of misreading one.
Values that JSON cannot carry exactly are already tagged by
:mod:`gotstate_persist._typedjson` when they reach here; the text is written
with NaN refused (a float that is not finite must have been tagged) and every
non-printable character escaped, as all output read from a store is.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime
from typing import Any

import msgspec

from .._typedjson import JSON_SHAPE_VERSION, typed_json
from ._output import terminal_safe_json

__all__ = ["document", "fields_json", "json_flag", "write_document"]


def json_flag(parser: argparse.ArgumentParser) -> None:
    """``--json``: one JSON document instead of the table."""
    parser.add_argument(
        "--json", action="store_true", help="print one JSON document (shape: docs/json.md)"
    )


def document(command: str, **body: Any) -> dict[str, Any]:
    """The document ``command`` prints: the shape's version, the command, then its keys."""
    return {"shape_version": JSON_SHAPE_VERSION, "command": command, **body}


def write_document(command: str, **body: Any) -> None:
    """Print :func:`document` as indented JSON, safe for a terminal (still valid JSON)."""
    text = json.dumps(document(command, **body), indent=2, ensure_ascii=False, allow_nan=False)
    sys.stdout.write(terminal_safe_json(text) + "\n")


def fields_json(value: Any) -> Any:
    """The library's own metadata record (a registration, a report) as a JSON object.

    Its Structs become objects of their fields, its tuples arrays and its
    timestamps ISO 8601 text with an offset, as every document prints
    metadata; any other value is tagged as user data is (``typed_json``), so
    nothing is ever a repr.
    """
    if isinstance(value, msgspec.Struct):
        return {name: fields_json(getattr(value, name)) for name in value.__struct_fields__}
    if isinstance(value, datetime):
        return value.isoformat()
    if type(value) is list or type(value) is tuple:  # a record's sequences: arrays
        return [fields_json(item) for item in value]
    if type(value) is dict and all(type(key) is str and key[:1] != "$" for key in value):
        return {key: fields_json(item) for key, item in value.items()}
    return typed_json(value)
