"""``gotstate-persist keys``: generate, rotate and retire keys in an exported keyring file.

``retire`` is the one that can lose data: a record sealed by a retired key
never opens again. So it refuses the primary key, and refuses a key that
still seals any record in the stores named with ``--url`` (counted from the
envelope headers, as ``verify`` counts them, in every namespace: a keyring
serves them all).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from .._redact import mask_url
from ..errors import InvalidArgument
from ..sealing import ALGORITHMS, DEFAULT_ENV_VAR, KeyRing, format_key_id
from ._inspect import count_key_ids
from ._keyring import read_keyring_file, write_keyring_file
from ._options import Subcommands
from ._output import EXIT_FAILED, EXIT_OK

__all__ = ["add_commands", "parse_key_id"]

_MAX_KEY_ID = 2**32 - 1


def parse_key_id(text: str) -> int:
    """A key id as ``verify`` and ``show`` print it (``0x1a2b3c4d``), or in decimal."""
    cleaned = text.strip().lower()
    try:
        key_id = int(cleaned, 16) if cleaned.startswith("0x") else int(cleaned, 10)
    except ValueError:
        key_id = -1
    if not 1 <= key_id <= _MAX_KEY_ID:
        raise argparse.ArgumentTypeError(
            f"invalid key id {text!r}: use the form verify prints, e.g. 0x1a2b3c4d"
        )
    return key_id


class _StoreAction(argparse.Action):
    """``--url URL [--catalog SQL_URL]``, repeatable: each ``--catalog`` belongs to the
    ``--url`` before it."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        stores: list[list[str | None]] = list(getattr(namespace, "stores", None) or [])
        if option_string == "--url":
            stores.append([str(values), None])
        elif not stores or stores[-1][1] is not None:
            parser.error("--catalog must follow the --url of the object store it belongs to")
        else:
            stores[-1][1] = str(values)
        namespace.stores = stores


def _cmd_generate(args: argparse.Namespace) -> int:
    sys.stdout.write(KeyRing.generate(args.algorithm).export() + "\n")
    return EXIT_OK


def _cmd_rotate(args: argparse.Namespace) -> int:
    ring = read_keyring_file(args.file)
    old = ring.primary_id
    new = ring.rotate(args.algorithm)
    write_keyring_file(args.file, ring)
    sys.stdout.write(
        f"new primary key {format_key_id(new)} ({ring.algorithm}) in {args.file}; "
        f"{len(ring.key_ids) - 1} older key(s) kept, so existing records still open\n"
        f"next: give every reader the new keyring, then run `gotstate-persist reseal URL "
        f"--keys {args.file} --all-namespaces` and `gotstate-persist keys retire {args.file} "
        f"{format_key_id(old)} --url URL`\n"
    )
    return EXIT_OK


def _cmd_retire(args: argparse.Namespace) -> int:
    ring = read_keyring_file(args.file)
    key_id: int = args.key_id
    if key_id == ring.primary_id:
        raise InvalidArgument(
            f"key {format_key_id(key_id)} is the primary key and cannot be retired; "
            f"run `gotstate-persist keys rotate {args.file}` and reseal first"
        )
    if key_id not in ring.key_ids:
        held = ", ".join(format_key_id(k) for k in ring.key_ids)
        raise InvalidArgument(
            f"key {format_key_id(key_id)} is not in {args.file} (it holds {held}); nothing changed"
        )
    stores: list[list[str | None]] = args.stores or []
    if not stores:
        raise InvalidArgument("name every store sealed with this keyring with --url URL")
    in_use = []
    for url, catalog in stores:
        count = count_key_ids(str(url), catalog)[key_id]
        if count:
            in_use.append(f"{count} record(s) in {mask_url(url)}")
    if in_use:
        sys.stderr.write(
            f"gotstate-persist: key {format_key_id(key_id)} still seals {'; '.join(in_use)}: "
            f"retiring it would make them unreadable. Run `gotstate-persist reseal URL --keys "
            f"{args.file} --all-namespaces` for each store first; nothing changed\n"
        )
        return EXIT_FAILED
    ring.retire(key_id)
    write_keyring_file(args.file, ring)
    sys.stdout.write(
        f"retired key {format_key_id(key_id)} from {args.file}; "
        f"{len(ring.key_ids)} key(s) left, primary {format_key_id(ring.primary_id)}\n"
    )
    return EXIT_OK


def add_commands(commands: Subcommands) -> None:
    """Add ``keys generate|rotate|retire``."""
    keys_cmd = commands.add_parser("keys", help="manage keyrings: generate, rotate, retire")
    keys_sub = keys_cmd.add_subparsers(dest="keys_command", required=True)

    generate = keys_sub.add_parser("generate", help="print a new exported keyring")
    generate.add_argument("--algorithm", choices=ALGORITHMS, default="aes-256-gcm")
    generate.set_defaults(func=_cmd_generate)

    rotate = keys_sub.add_parser(
        "rotate",
        help="add a new primary key to a keyring file (older keys kept)",
        description=(
            "Add a new primary key to the exported keyring in FILE, rewriting the file "
            "atomically with its permissions kept. Older keys stay, so existing records "
            "still open; `reseal` then moves them to the new key."
        ),
    )
    rotate.add_argument("file", metavar="FILE", help="exported keyring file to rewrite")
    rotate.add_argument(
        "--algorithm", choices=ALGORITHMS, help="of the new key (default: the primary's)"
    )
    rotate.set_defaults(func=_cmd_rotate)

    retire = keys_sub.add_parser(
        "retire",
        help="drop a key no record needs any more from a keyring file",
        description=(
            "Remove a non-primary key from the keyring in FILE once no record needs it: "
            "every store sealed with the keyring is named with --url and checked in all "
            f"its namespaces first (as `verify` counts). The keyring in ${DEFAULT_ENV_VAR} "
            "or elsewhere is not changed: deploy FILE afterwards."
        ),
    )
    retire.add_argument("file", metavar="FILE", help="exported keyring file to rewrite")
    retire.add_argument(
        "key_id", metavar="KEY_ID", type=parse_key_id, help="e.g. 0x1a2b3c4d, as verify prints"
    )
    retire.add_argument(
        "--url",
        action=_StoreAction,
        dest="stores",
        required=True,
        metavar="URL",
        help="a store sealed with this keyring (repeat for each store)",
    )
    retire.add_argument(
        "--catalog",
        action=_StoreAction,
        dest="stores",
        metavar="SQL_URL",
        help="the SQL catalog of the object store given by the --url before it",
    )
    retire.set_defaults(func=_cmd_retire)
