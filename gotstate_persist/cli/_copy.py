"""``gotstate-persist copy``: every version of every key, from one store into another.

The one command that writes to a store other than the one it reads, so the
destination gets the rules the source does not need: it must outlive the
command (never a store in this process's memory), and its quotas hold while
the records arrive. The copy itself, verified and resumable, is the
library's; this module gives it a command line and a report.
"""

from __future__ import annotations

import argparse
import sys

from .._copy import copy_records
from .._names import printable
from ..backends import open_backend
from ..quota import QuotaBackend
from ._keyring import load_keyring
from ._options import (
    Subcommands,
    catalog_option,
    keys_option,
    namespace_options,
    note_other_namespaces,
    selected_namespaces,
)
from ._output import EXIT_FAILED, EXIT_OK
from ._progress import ProgressDisplay
from ._stores import LOST_AT_EXIT, open_existing, refuse_process_local

__all__ = ["add_commands"]


def _cmd_copy(args: argparse.Namespace) -> int:
    refuse_process_local(args.destination, LOST_AT_EXIT)
    if args.to_catalog:
        refuse_process_local(args.to_catalog, LOST_AT_EXIT)
    keys = load_keyring(args.keys)
    target = {"catalog": args.to_catalog} if args.to_catalog else {}
    with (
        open_existing(args.source, args.catalog) as source,
        QuotaBackend(open_backend(args.destination, **target)) as destination,
        ProgressDisplay(sys.stderr) as display,
    ):
        report = copy_records(
            source,
            destination,
            keys,
            namespaces=selected_namespaces(source, args),
            progress=display.task("copying"),
        )
        note_other_namespaces(source, args, "copied")
    for namespace, key, version, reason in report.failed:
        sys.stdout.write(
            f"FAILED {printable(namespace)}/{printable(key)} version {version}: "
            f"{printable(reason)}\n"
        )
    sys.stdout.write(
        f"{report.copied} copied, {report.skipped} already present, {len(report.failed)} failed\n"
    )
    return EXIT_FAILED if report.failed else EXIT_OK


def add_commands(commands: Subcommands) -> None:
    """Add ``copy``."""
    copy = commands.add_parser(
        "copy", help="copy every version of every key to another store (resumable)"
    )
    copy.add_argument("source", help="store URL to copy from")
    copy.add_argument("destination", help="store URL to copy to (not memory://)")
    namespace_options(copy, scope="choose")
    catalog_option(copy, help_text="the source object store's SQL catalog, if it has one")
    copy.add_argument(
        "--to-catalog",
        metavar="SQL_URL",
        help="keep the destination object store's versions in this SQL catalog",
    )
    keys_option(copy)
    copy.set_defaults(func=_cmd_copy)
