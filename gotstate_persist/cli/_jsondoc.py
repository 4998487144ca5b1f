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
from typing import Any

from .._typedjson import JSON_SHAPE_VERSION
from ._output import terminal_safe_json

__all__ = ["document", "json_flag", "write_document"]


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
