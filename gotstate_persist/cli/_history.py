"""``log``, ``journal``, ``diff`` and ``show --at``: looking back at a machine's history.

An attached machine leaves two trails under its key: snapshots (versions of
the key) and, when it journals, one entry per accepted event (its journal's
system key). These commands read both for a person: ``log`` merges them into
one line each, oldest first; ``journal`` prints the entries in full;
``diff`` says what changed between two snapshots (state, history, data key
by key, submachines) and exits 0 whether or not anything did, like ``config
diff``; ``show --at TIME`` prints the snapshot in force at a moment (the
newest taken at or before it, as ``restore_machine(at=)`` picks it) and the
journal entries after it up to that moment.

They read and change nothing else: snapshots are decoded as ``show`` decodes
them (``RecordPipeline.inspect``, ``_recordview``), the journal only through
``runtime.read_journal``, each entry authenticated like any record. A key
counts as existing when it has a snapshot or a journal entry; an unknown one
is ``NotFound`` (exit status 1), saying which other namespaces have it. How
rows and documents are laid out is ``_historyview``'s.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import sys
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import msgspec

from .._names import check_name, printable
from .._pipeline import RecordPipeline
from .._typedjson import Undecodable
from ..backends import Backend
from ..errors import InvalidArgument, NotFound, PersistError
from ..formats import MachineSnapshot
from ..runtime import JournalEntry, journal_key_or_none, read_head, read_journal
from ..sealing import KeyRing
from ..store import SnapshotRef, snapshot_ref
from ._configview import json_text
from ._extview import write_table
from ._historyview import (
    change_json,
    change_row,
    entry_json,
    journal_row,
    log_items,
    log_json,
    log_row,
    moment_text,
    snapshot_changes,
)
from ._jsondoc import json_flag, write_document
from ._keyring import load_keyring
from ._options import NAMED_NAMESPACES, Subcommands, store_command
from ._output import EXIT_OK
from ._recordview import record_document
from ._stores import open_existing

__all__ = ["add_commands", "moment_option", "show_at"]

_LOG_HEADER = ["TIME (UTC)", "SEQ", "WHAT", "DETAIL", "ACTOR"]
_JOURNAL_HEADER = [
    "SEQ",
    "TIME (UTC)",
    "EVENT",
    "PRIORITY",
    "SOURCE",
    "TARGET",
    "SNAPSHOT",
    "METADATA",
    "META",
]
_DIFF_HEADER = ["PATH", "CHANGE", "OLD", "NEW"]
#: The largest sequence or version number an option takes (backends store int64).
_MAX_DIGITS = 18
_EXAMPLE_TIME = "2025-06-01T10:00:00Z"


# Option types: checked before anything is opened (a bad value is exit status 2).


def moment_option(text: str) -> datetime:
    """``--at``: an ISO 8601 time with an offset or ``Z``; a naive time names no moment."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid time {text!r}: use ISO 8601 with an offset, e.g. {_EXAMPLE_TIME} "
            "or 2025-06-01T12:00:00+02:00"
        ) from None
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise argparse.ArgumentTypeError(
            f"time {text!r} has no UTC offset, so it names no single moment: add one, "
            f"e.g. {text.strip()}Z for UTC or {text.strip()}+02:00"
        )
    return moment


def _whole_number(minimum: int, what: str) -> Callable[[str], int]:
    def parse(text: str) -> int:
        if not re.fullmatch(rf"[0-9]{{1,{_MAX_DIGITS}}}", text.strip()) or int(text) < minimum:
            raise argparse.ArgumentTypeError(
                f"invalid {what} {text!r}: use a whole number >= {minimum} "
                "('gotstate-persist log' lists them)"
            )
        return int(text)

    return parse


_sequence_option = _whole_number(0, "sequence number")
_version_option = _whole_number(1, "version")


# Reading.


@contextlib.contextmanager
def _reading(args: argparse.Namespace) -> Iterator[tuple[RecordPipeline, KeyRing]]:
    """The pipeline of the one namespace a command reads (never creating anything)."""
    check_name(args.key, "key")  # journals belong to user keys
    keys = load_keyring(args.keys)  # a missing keyring is reported before the store is opened
    with open_existing(args.url, args.catalog) as backend:
        yield RecordPipeline(backend, keyring=keys, namespace=args.namespace), keys


def _has_history(backend: Backend, keys: KeyRing, namespace: str, key: str) -> bool:
    """Whether ``key`` has a snapshot or a journal entry in ``namespace``."""
    try:
        pipeline = RecordPipeline(backend, keyring=keys, namespace=namespace)
    except InvalidArgument:  # a namespace no gotstate-persist could have written
        return False
    head = read_head(pipeline, key, journal=journal_key_or_none(key) is not None)
    return bool(head.snapshot_version or head.journal_seq)


def _no_such_key(pipeline: RecordPipeline, keys: KeyRing, key: str) -> NotFound:
    """The key is unknown here: say which namespaces have it, if any do."""
    backend, namespace = pipeline.backend, pipeline.namespace
    elsewhere = [
        name
        for name in backend.namespaces()
        if name != namespace and _has_history(backend, keys, name, key)
    ]
    if elsewhere:
        named = ", ".join(repr(name) for name in elsewhere[:NAMED_NAMESPACES])
        advice = f"namespace {named} has it: pass --namespace {printable(elsewhere[0])}"
    else:
        advice = "check its spelling and --namespace ('gotstate-persist ls' lists keys)"
    return NotFound(
        f"key {key!r} has no snapshot and no journal entry in namespace {namespace!r}; {advice}"
    )


def _snapshots(pipeline: RecordPipeline, key: str) -> list[SnapshotRef]:
    namespace = pipeline.namespace
    return [snapshot_ref(info, namespace) for info in pipeline.backend.versions(namespace, key)]


def _where(args: argparse.Namespace) -> dict[str, str]:
    """The namespace and key a document is about (the first keys of each)."""
    return {"namespace": args.namespace, "key": args.key}


def _write(text: str) -> None:
    sys.stdout.write(text + "\n")


def _entries(pipeline: RecordPipeline, key: str, **window: Any) -> list[JournalEntry]:
    """The key's journal, each embedded Struct rebuilt if this tool can, else ``$undecodable``."""
    decode = pipeline.formats.decode_struct

    def structs(kind: str, version: int, encoded: bytes) -> msgspec.Struct:
        try:
            return decode(kind, version, encoded)
        except PersistError as exc:  # this Struct alone: the rest of the entry still shows
            return Undecodable(str(exc), kind, version)

    return read_journal(pipeline, key, structs=structs, **window)


# The commands.


def _cmd_log(args: argparse.Namespace) -> int:
    with _reading(args) as (pipeline, keys):
        snapshots = _snapshots(pipeline, args.key)
        entries = _entries(pipeline, args.key)
        if not snapshots and not entries:
            raise _no_such_key(pipeline, keys, args.key)
    items = log_items(snapshots, entries)
    if args.json:
        write_document("log", **_where(args), items=[log_json(item) for item in items])
    else:
        write_table(_LOG_HEADER, [log_row(item) for item in items], sys.stdout)
    return EXIT_OK


def _cmd_journal(args: argparse.Namespace) -> int:
    with _reading(args) as (pipeline, keys):
        entries = _entries(pipeline, args.key, since=args.since)
        if not entries and not _has_history(pipeline.backend, keys, pipeline.namespace, args.key):
            raise _no_such_key(pipeline, keys, args.key)
    if args.json:
        write_document(
            "journal", **_where(args), since=args.since, entries=[entry_json(e) for e in entries]
        )
    elif not entries:
        after = f" after sequence {args.since}" if args.since else ""
        _write(f"(no journal entries{after})")
    else:
        write_table(_JOURNAL_HEADER, [journal_row(entry) for entry in entries], sys.stdout)
    return EXIT_OK


def _machine_snapshot(pipeline: RecordPipeline, key: str, version: int) -> MachineSnapshot:
    inspection = pipeline.inspect(key, version)
    record = inspection.record
    if not isinstance(record, MachineSnapshot):
        raise InvalidArgument(
            f"version {version} of key {key!r} is a {printable(inspection.info.kind)!r} "
            "record, not a machine snapshot: diff compares machine snapshots "
            "('gotstate-persist show --version N' prints any record)"
        )
    return record


def _check_versions(pipeline: RecordPipeline, keys: KeyRing, key: str, *wanted: int) -> None:
    """``NotFound`` naming the versions asked for that the key does not have."""
    kept = [info.version for info in pipeline.backend.versions(pipeline.namespace, key)]
    missing = sorted({version for version in wanted if version not in kept})
    if not missing:
        return
    if not kept and not _has_history(pipeline.backend, keys, pipeline.namespace, key):
        raise _no_such_key(pipeline, keys, key)
    which = " or ".join(str(version) for version in missing)
    has = (
        f"its snapshots are versions {kept[0]} to {kept[-1]} ({len(kept)} kept)"
        if kept
        else "it has journal entries but no snapshot yet"
    )
    raise NotFound(
        f"key {key!r} in namespace {pipeline.namespace!r} has no version {which}: {has}; "
        "'gotstate-persist log' lists them"
    )


def _cmd_diff(args: argparse.Namespace) -> int:
    with _reading(args) as (pipeline, keys):
        _check_versions(pipeline, keys, args.key, args.old, args.new)
        old = _machine_snapshot(pipeline, args.key, args.old)
        new = _machine_snapshot(pipeline, args.key, args.new)
        changes = snapshot_changes(old, new, pipeline.formats)
    if args.json:
        write_document(
            "diff",
            **_where(args),
            old=args.old,
            new=args.new,
            changes=[change_json(change) for change in changes],
        )
    elif not changes:
        _write(f"(no changes from version {args.old} to {args.new})")
    else:
        write_table(_DIFF_HEADER, [change_row(change) for change in changes], sys.stdout)
    return EXIT_OK


def show_at(args: argparse.Namespace) -> int:
    """``show --at``: the version in force at ``args.at`` and the journal entries after it."""
    moment: datetime = args.at
    with _reading(args) as (pipeline, keys):
        taken = pipeline.backend.versions(pipeline.namespace, args.key)
        in_force = [info for info in taken if info.created_at <= moment]
        if not in_force:
            raise _nothing_in_force(pipeline, keys, args.key, moment, taken[:1])
        inspection = pipeline.inspect(args.key, in_force[-1].version)
        document = record_document(pipeline, inspection)
        covered: Any = getattr(inspection.record, "journal_seq", 0)
        since = covered if type(covered) is int else 0  # a record of another kind: 0
        entries = _entries(pipeline, args.key, since=since, until=moment)
    document["at"] = moment_text(moment)
    document["journal"] = [entry_json(entry) for entry in entries]
    if args.json:
        write_document("show", **document)
    else:
        _write(json_text(document))
    return EXIT_OK


def _nothing_in_force(
    pipeline: RecordPipeline, keys: KeyRing, key: str, moment: datetime, first: list[Any]
) -> NotFound:
    if not first and not _has_history(pipeline.backend, keys, pipeline.namespace, key):
        return _no_such_key(pipeline, keys, key)
    when = (
        f"its first was taken at {moment_text(first[0].created_at)}"
        if first
        else "it has journal entries but no snapshot yet"
    )
    return NotFound(
        f"key {key!r} has no snapshot taken at or before {moment_text(moment)}: {when}; "
        "'gotstate-persist log' lists when each was taken"
    )


def add_commands(commands: Subcommands) -> None:
    """Add ``log``, ``journal`` and ``diff`` (``show --at`` is declared with ``show``)."""
    log = store_command(
        commands,
        "log",
        "a key's snapshots and journal entries, one line each, oldest first",
        needs_keys=True,
        scope="one",
    )
    log.add_argument("key")
    json_flag(log)
    log.set_defaults(func=_cmd_log)

    journal = store_command(
        commands,
        "journal",
        "a key's journal entries in full, oldest first",
        needs_keys=True,
        scope="one",
    )
    journal.add_argument("key")
    journal.add_argument(
        "--since",
        type=_sequence_option,
        default=0,
        metavar="N",
        help="only the entries after sequence N (default 0: every entry)",
    )
    json_flag(journal)
    journal.set_defaults(func=_cmd_journal)

    diff = store_command(
        commands,
        "diff",
        "what changed between two snapshot versions of a key (exit status 0 either way)",
        needs_keys=True,
        scope="one",
    )
    diff.add_argument("key")
    diff.add_argument("old", type=_version_option, metavar="A", help="the older version")
    diff.add_argument("new", type=_version_option, metavar="B", help="the newer version")
    json_flag(diff)
    diff.set_defaults(func=_cmd_diff)
