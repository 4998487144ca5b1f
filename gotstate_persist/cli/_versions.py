"""``versions``: every kept snapshot version of one key, with the key id that seals it.

``ls`` shows a key's newest version; before ``show --version``, ``diff`` or
retiring a key an operator wants the whole list: when each version was
saved, how big it is, its kind and format version, and which key id seals
it. The key id is read from each record's unauthenticated envelope header,
so no keyring is needed and nothing is decrypted; ``verify`` authenticates.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .._names import check_stored_key, printable
from ..errors import NotFound, PersistError
from ..sealing import format_key_id, read_header
from ._jsondoc import json_flag, write_document
from ._options import Subcommands, store_command
from ._output import EXIT_OK, print_table
from ._stores import open_existing

__all__ = ["add_command"]

_HEADER = ["VERSION", "SIZE", "SAVED (UTC)", "KIND", "FORMAT", "KEY ID"]
#: What stands for the key id of a record whose header cannot be read (verify says why).
_UNREADABLE = "unreadable"


def _cmd_versions(args: argparse.Namespace) -> int:
    key = check_stored_key(args.key)
    found: list[dict[str, Any]] = []
    with open_existing(args.url, args.catalog) as backend:
        for info in backend.versions(args.namespace, key):
            try:
                key_id = format_key_id(
                    read_header(backend.get(args.namespace, key, info.version)[1]).key_id
                )
            except PersistError:  # not an envelope: 'verify' reports it
                key_id = _UNREADABLE
            found.append(
                {
                    "version": info.version,
                    "size": info.size,
                    "saved": info.created_at.isoformat(),
                    "kind": info.kind,
                    "format_version": info.format_version,
                    "key_id": key_id,
                }
            )
    if not found:
        raise NotFound(
            f"key {key!r} has no snapshot version in namespace {args.namespace!r}; "
            "'gotstate-persist ls' lists keys"
        )
    if args.json:
        write_document("versions", namespace=args.namespace, key=key, versions=found)
        return EXIT_OK
    rows = [_HEADER]
    for item in found:
        saved = item["saved"][:19].replace("T", " ")
        rows.append(
            [
                str(item["version"]),
                str(item["size"]),
                saved,
                printable(item["kind"]),
                str(item["format_version"]),
                item["key_id"],
            ]
        )
    print_table(rows, sys.stdout)
    return EXIT_OK


def add_command(commands: Subcommands) -> None:
    """Add ``versions``."""
    versions = store_command(
        commands,
        "versions",
        "a key's snapshot versions: size, time, kind, format, sealing key id",
        needs_keys=False,
        scope="one",
    )
    versions.add_argument("key")
    json_flag(versions)
    versions.set_defaults(func=_cmd_versions)
