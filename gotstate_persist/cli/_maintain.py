"""``migrate``, ``reseal``, ``gc`` and ``db``: keeping a store's records and schema current.

The maintenance an operator runs on a store in place, each safe to stop and
run again: ``migrate`` and ``reseal`` rewrite records (to the newest format,
under the primary key) in batches, ``gc`` settles what interrupted writes left
in an object store, and ``db`` reads or upgrades a SQL store's schema (or a
plain S3 store's object layout, ``backends._layoutmove``). The
rewrites take the application's formats from a ``MODULE:ATTRIBUTE`` the
operator names, never from stored data, and need ``--namespace`` or
``--all-namespaces``.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .._migrate import DEFAULT_BATCH_SIZE
from .._names import printable
from .._redact import mask_url
from ..backends.catalog import STALE_RESERVATION_SECONDS, CatalogBackend
from ..backends.objectstore import ObjectStoreBackend, move_to_layout_2
from ..errors import InvalidArgument, NotFound, SchemaOutdated
from ..formats._registry import FormatRegistry
from ..store import Store
from ._keyring import load_keyring
from ._options import (
    Subcommands,
    batch_size_option,
    catalog_option,
    namespace_options,
    note_other_namespaces,
    seconds_option,
    selected_namespaces,
    store_command,
)
from ._output import EXIT_FAILED, EXIT_OK
from ._progress import ProgressDisplay
from ._stores import (
    READ_IN_NEW_PROCESS,
    SQL_SCHEMES,
    check_existing_sqlite,
    open_existing,
    refuse_process_local,
)

__all__ = ["add_commands", "load_formats"]


def load_formats(target: str) -> FormatRegistry:
    """The application's FormatRegistry named on the command line as ``module:attribute``.

    The name comes from the operator, never from stored data. The attribute is
    a FormatRegistry or a function of no arguments returning one.
    """
    module_name, _, attribute = target.partition(":")
    if not module_name or not attribute:
        raise InvalidArgument(f"--formats must be MODULE:ATTRIBUTE, got {target!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise InvalidArgument(
            f"cannot import {module_name!r} for --formats ({exc}); run from the application's "
            "environment or set PYTHONPATH"
        ) from None
    except (Exception, SystemExit) as exc:  # the application's module failed: its problem
        raise InvalidArgument(
            f"importing {module_name!r} for --formats failed: {_one_line(exc)}; fix the module "
            "or name another"
        ) from None
    found = getattr(module, attribute, None)
    try:
        registry = found() if callable(found) and not isinstance(found, FormatRegistry) else found
    except (Exception, SystemExit) as exc:
        raise InvalidArgument(
            f"calling {target} for --formats failed: {_one_line(exc)}; it must return a "
            "FormatRegistry when called with no arguments"
        ) from None
    if not isinstance(registry, FormatRegistry):
        raise InvalidArgument(
            f"{target} is not a gotstate_persist.FormatRegistry (or a function returning one)"
        )
    return registry


def _one_line(exc: BaseException) -> str:
    """``Type: first line of the message``, for errors raised by the application's code."""
    lines = str(exc).splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def _cmd_rewrite(args: argparse.Namespace) -> int:
    """``migrate`` and ``reseal``: the same walk, the same report."""
    keys = load_keyring(args.keys)
    registry = load_formats(args.formats) if args.command == "migrate" else None
    if registry is not None:
        registry.newest_version(args.kind)  # an unknown kind is refused before anything opens
    failed = 0
    with (
        open_existing(args.url, args.catalog) as backend,
        ProgressDisplay(sys.stderr) as display,
    ):
        for namespace in selected_namespaces(backend, args):
            store = Store(backend, keyring=keys, namespace=namespace, formats=registry)
            bar = display.task(f"{args.command} {namespace}")
            if args.command == "migrate":
                report = store.migrate(
                    args.kind, batch_size=args.batch_size, dry_run=args.dry_run, progress=bar
                )
            else:
                report = store.reseal(batch_size=args.batch_size, progress=bar)
            for failure in report.failed:
                sys.stdout.write(
                    f"FAILED {printable(namespace)}/{printable(failure.key)} version "
                    f"{failure.version}: {printable(failure.reason)}\n"
                )
            verb = "would rewrite" if getattr(args, "dry_run", False) else "rewrote"
            sys.stdout.write(
                f"namespace {namespace!r}: scanned {report.scanned}, {verb} {report.migrated}, "
                f"{report.already_current} already current, {len(report.failed)} failed\n"
            )
            failed += len(report.failed)
        note_other_namespaces(
            backend, args, "migrated" if args.command == "migrate" else "resealed"
        )
    return EXIT_FAILED if failed else EXIT_OK


def _cmd_gc(args: argparse.Namespace) -> int:
    with open_existing(args.url, args.catalog) as backend:
        if isinstance(backend, CatalogBackend):
            everything = backend.known_namespaces()
            what = "stale reservation(s) and orphan object(s)"
        elif isinstance(backend, ObjectStoreBackend):
            everything = backend.namespaces()
            what = "superseded object(s) of interrupted rewrites"
        else:
            raise InvalidArgument(
                "gc applies to object stores (with or without a catalog); SQL stores settle "
                "every write in one transaction and leave nothing to sweep"
            )
        total = 0
        chosen = everything if args.namespace is None else [args.namespace]
        for namespace in chosen:
            swept = backend.sweep(namespace, older_than_s=args.older_than)
            sys.stdout.write(f"namespace {namespace!r}: {swept} removed\n")
            total += swept
    sys.stdout.write(f"{total} {what} removed\n")
    return EXIT_OK


def _cmd_db(args: argparse.Namespace) -> int:
    from .. import migrations

    if args.db_command == "history":
        for revision in migrations.REVISIONS:
            marker = " (head)" if revision == migrations.HEAD_REVISION else ""
            sys.stdout.write(f"{revision}{marker}\n")
        return EXIT_OK
    if args.url.split(":", 1)[0].split("+", 1)[0] not in SQL_SCHEMES:
        return _object_layout(args)
    refuse_process_local(args.url, READ_IN_NEW_PROCESS)  # a schema nobody could use
    if args.db_command == "upgrade":
        upgraded = migrations.upgrade(args.url)
        sys.stdout.write(f"schema at {upgraded} (head {migrations.HEAD_REVISION})\n")
        return EXIT_OK
    check_existing_sqlite(args.url)
    if args.db_command == "check":
        migrations.check(args.url)  # raises (exit 1) unless the schema is the head
        sys.stdout.write(f"schema at {migrations.HEAD_REVISION} (head): up to date\n")
        return EXIT_OK
    found = migrations.current(args.url)
    if found is None:
        raise NotFound(f"{mask_url(args.url)} holds no gotstate-persist store; check the URL")
    sys.stdout.write(f"{found}\n")
    return EXIT_OK


def _object_layout(args: argparse.Namespace) -> int:
    """``db current|check|upgrade`` of an object store: its object layout (1 or 2)."""
    with open_existing(args.url) as backend:
        if not isinstance(backend, ObjectStoreBackend):
            raise InvalidArgument(
                "db commands apply to SQL stores (sqlite:///..., postgresql://...) and to the "
                "object layout of plain object stores (s3://bucket/prefix)"
            )
        layout = backend.prefix.object_layout
        current = backend.prefix.newest_layout  # 2 for plain S3 stores, else 1
        if args.db_command == "current":
            sys.stdout.write(f"object layout {layout}\n")
        elif args.db_command == "check":
            if layout < current:
                raise SchemaOutdated(
                    f"{backend.prefix.display} holds object layout {layout}: stop its writers, "
                    f"then move it with: gotstate-persist db upgrade {mask_url(args.url)}"
                )
            sys.stdout.write(f"object layout {layout} (newest): up to date\n")
        elif layout >= current:
            sys.stdout.write(f"object layout {layout}: nothing to upgrade\n")
            if current == 2:  # a move cut short after its marker: finish removing layout 1
                move_to_layout_2(backend.prefix)
        else:
            moved = move_to_layout_2(backend.prefix)
            sys.stdout.write(
                f"object layout {moved.before} -> {moved.after}: {moved.versions} version(s) of "
                f"{moved.keys} key(s) copied, {moved.removed} layout-1 object(s) removed\n"
            )
    return EXIT_OK


def add_commands(commands: Subcommands) -> None:
    """Add ``migrate``, ``reseal``, ``gc`` and ``db current|upgrade|check|history``."""
    migrate = store_command(
        commands,
        "migrate",
        "rewrite older-format records of a kind as the newest",
        needs_keys=True,
        scope="choose",
    )
    migrate.add_argument("--kind", required=True, help="the record kind to migrate")
    migrate.add_argument(
        "--formats",
        required=True,
        metavar="MODULE:ATTRIBUTE",
        help="the application's FormatRegistry (with its upcasters), e.g. myapp.records:formats",
    )
    migrate.add_argument("--dry-run", action="store_true", help="report, change nothing")
    reseal = store_command(
        commands,
        "reseal",
        "rewrite records sealed by other keys under the primary key",
        needs_keys=True,
        scope="choose",
    )
    for rewrite in (migrate, reseal):
        rewrite.add_argument(
            "--batch-size",
            type=batch_size_option,
            default=DEFAULT_BATCH_SIZE,
            metavar="N",
            help=f"records rewritten per transaction (default {DEFAULT_BATCH_SIZE})",
        )
        rewrite.set_defaults(func=_cmd_rewrite)

    gc = commands.add_parser(
        "gc",
        help="remove what interrupted writes and rewrites left in an object store",
        description=(
            "With a SQL catalog: confirm reservations whose object was written, withdraw "
            "those whose writer died before writing it, take back rewrites whose process "
            "died, and remove objects no catalog row names. Without one: remove the older "
            "object of a version that an interrupted rewrite left twice. Never removes "
            "anything a running writer or rewriter still needs (README: Operations)."
        ),
    )
    gc.add_argument("url", help="object store URL, e.g. s3://bucket/prefix")
    catalog_option(gc, help_text="its SQL catalog, if it has one")
    namespace_options(gc, scope="all")
    gc.add_argument(
        "--older-than",
        type=seconds_option,
        default=STALE_RESERVATION_SECONDS,
        metavar="SECONDS",
        help=f"settle reservations older than this (default {STALE_RESERVATION_SECONDS})",
    )
    gc.set_defaults(func=_cmd_gc)

    db = commands.add_parser(
        "db",
        help="SQL schema (or a plain S3 store's object layout): current, upgrade, check, history",
    )
    db_sub = db.add_subparsers(dest="db_command", required=True)
    for name, text in (
        ("current", "print the schema revision of a database"),
        ("upgrade", "upgrade (or create) the schema to this version's head revision"),
        ("check", "exit 0 if the schema is this version's head, else 1 with the reason"),
    ):
        sub = db_sub.add_parser(name, help=text)
        sub.add_argument(
            "url", help="SQL store URL, e.g. sqlite:///state.db, or an object store s3://bucket/p"
        )
        sub.set_defaults(func=_cmd_db)
    history = db_sub.add_parser("history", help="list the schema revisions this version knows")
    history.set_defaults(func=_cmd_db)
