"""``ls``, ``show`` and ``verify``: the commands that read a store and change nothing.

``ls`` lists users' keys; the library's own records (system keys, such as
extension registrations) are left out of it, but ``verify`` checks them like
every record and ``show`` shows one when asked by its key.

They print what is stored for a person to read: names and decoded values
come from storage, perhaps written by other tools, so each is escaped before
it reaches the terminal, and a value this tool cannot decode is shown as
such rather than failing the whole record. ``verify`` also counts the
records each key id seals, the count ``keys retire`` relies on, so that
count is taken here for both. ``show``'s document is built by ``_recordview``,
which ``show --at`` (``_history``, with the other commands that look back)
prints too; ``versions``, registered here beside ``ls``, is ``_versions``'s.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Iterator
from typing import Any, NamedTuple

from .._names import check_stored_key, printable
from .._pipeline import RecordPipeline
from ..backends import Backend, VersionInfo
from ..errors import FormatError, IntegrityError, InvalidArgument, NotFound, PersistError
from ..runtime import journal_key_or_none, user_keys
from ..sealing import KeyRing, format_key_id, read_header
from ._history import moment_option, show_at
from ._jsondoc import json_flag, write_document
from ._keyring import load_keyring
from ._options import (
    NAMED_NAMESPACES,
    Subcommands,
    note_other_namespaces,
    selected_namespaces,
    store_command,
)
from ._output import EXIT_FAILED, EXIT_OK, print_table, terminal_safe_json
from ._recordview import record_document
from ._stores import open_existing
from ._versions import add_command as add_versions_command

__all__ = ["add_commands", "count_key_ids"]


def _journal_versions(backend: Backend, namespace: str, key: str) -> list[VersionInfo]:
    """The journal entries of a key listed without snapshots (none for a name no key may have)."""
    try:
        jkey = journal_key_or_none(key)
    except InvalidArgument:  # a name written by another tool
        return []
    return backend.versions(namespace, jkey) if jkey is not None else []


def _cmd_ls(args: argparse.Namespace) -> int:
    listed: list[dict[str, Any]] = []
    with open_existing(args.url, args.catalog) as backend:
        rows = [["NAMESPACE", "KEY", "VERSIONS", "NEWEST", "KIND", "FORMAT", "SIZE", "SAVED (UTC)"]]
        for namespace in selected_namespaces(backend, args):
            # the library's own records are not listed (verify and show still read
            # them), but a key with only journal entries is a key: its newest entry
            for key in user_keys(backend, namespace, args.prefix):
                versions = backend.versions(namespace, key)
                newest_of = versions or _journal_versions(backend, namespace, key)
                if not newest_of:
                    continue
                newest = newest_of[-1]
                listed.append(
                    {
                        "namespace": namespace,
                        "key": key,
                        "versions": len(versions),
                        "newest": newest.version if versions else None,
                        "kind": newest.kind,
                        "format_version": newest.format_version,
                        "size": newest.size,
                        "saved": newest.created_at.isoformat(),
                    }
                )
                rows.append(
                    [  # names come from storage, maybe written by other tools: escaped
                        printable(namespace),
                        printable(key),
                        str(len(versions)),
                        str(newest.version) if versions else "-",
                        printable(str(newest.kind)),
                        str(newest.format_version),
                        str(newest.size),
                        newest.created_at.strftime("%Y-%m-%d %H:%M:%S"),
                    ]
                )
        if len(rows) == 1:
            note_other_namespaces(backend, args, "listed")
    if args.json:
        write_document("ls", keys=listed)
    elif len(rows) == 1:
        sys.stdout.write("(no records)\n")
    else:
        print_table(rows, sys.stdout)
    return EXIT_OK


def _cmd_show(args: argparse.Namespace) -> int:
    if args.at is not None:
        return show_at(args)
    keys = load_keyring(args.keys)
    with open_existing(args.url, args.catalog) as backend:
        pipeline = RecordPipeline(backend, keyring=keys, namespace=args.namespace)
        try:
            inspection = pipeline.inspect(args.key, args.version)
        except NotFound as exc:
            raise _not_found_here(backend, args.namespace, args.key, exc) from None
        document = record_document(pipeline, inspection)
    if args.json:
        write_document("show", **document)
    else:  # the same document, without the envelope of --json
        shown = json.dumps(document, indent=2, ensure_ascii=False, allow_nan=False)
        sys.stdout.write(terminal_safe_json(shown) + "\n")
    return EXIT_OK


def _not_found_here(backend: Backend, namespace: str, key: str, exc: NotFound) -> NotFound:
    """``exc``, or where the key is when it exists only in other namespaces."""
    if backend.versions(namespace, key):
        return exc  # the key is here, the version asked is not
    elsewhere = [
        name for name in backend.namespaces() if name != namespace and backend.versions(name, key)
    ]
    if not elsewhere:
        return exc
    named = ", ".join(repr(name) for name in elsewhere[:NAMED_NAMESPACES])
    return NotFound(
        f"key {key!r} is not in namespace {namespace!r}, but namespace {named} has it: pass "
        f"--namespace {printable(elsewhere[0])}"
    )


def _verify_key(pipeline: RecordPipeline, key: str) -> tuple[int, list[str]]:
    problems: list[str] = []
    versions = pipeline.backend.versions(pipeline.namespace, check_stored_key(key))
    for ref in versions:
        try:
            pipeline.inspect(key, ref.version)
        except PersistError as exc:
            problems.append(f"version {ref.version}: {type(exc).__name__}: {exc}")
    return len(versions), problems


class _Checked(NamedTuple):
    """One key's verification (or a namespace's, when its name is invalid: ``key`` None)."""

    namespace: str
    key: str | None
    versions: int
    problems: list[str]

    def as_json(self) -> dict[str, Any]:
        return {
            "namespace": self.namespace,
            "key": self.key,
            "versions": self.versions,
            "ok": not self.problems,
            "problems": self.problems,
        }

    def write(self) -> None:
        """The text lines of this key: ``ok`` or ``FAILED``, then a line per problem."""
        if self.key is None:
            sys.stdout.write(
                f"FAILED namespace {self.namespace!r}: {printable(self.problems[0])}\n"
            )
            return
        status = "ok" if not self.problems else "FAILED"
        shown = f"{printable(self.namespace)}/{printable(self.key)}"
        sys.stdout.write(f"{status:6} {shown} ({self.versions} versions)\n")
        for problem in self.problems:
            sys.stdout.write(f"         {printable(problem)}\n")


def _verify_namespace(backend: Backend, keys: KeyRing, namespace: str) -> Iterator[_Checked]:
    """Verify every key of one namespace, one result per key."""
    try:
        pipeline = RecordPipeline(backend, keyring=keys, namespace=namespace)
    except InvalidArgument as exc:  # a name no gotstate-persist could have written
        yield _Checked(namespace, None, 0, [str(exc)])
        return
    for key in backend.keys(namespace):
        try:
            count, problems = _verify_key(pipeline, key)
        except InvalidArgument as exc:
            count, problems = 0, [f"invalid key: {exc}"]
        except (FormatError, IntegrityError) as exc:  # its versions cannot even be listed
            count, problems = 1, [f"{type(exc).__name__}: {exc}"]
        yield _Checked(namespace, key, count, problems)


def _cmd_verify(args: argparse.Namespace) -> int:
    keys = load_keyring(args.keys)
    results: list[_Checked] = []
    in_use: Counter[int] = Counter()
    with open_existing(args.url, args.catalog) as backend:
        for namespace in selected_namespaces(backend, args):
            for result in _verify_namespace(backend, keys, namespace):
                results.append(result)
                if not args.json:
                    result.write()
            in_use.update(_key_ids(backend, namespace))
        note_other_namespaces(backend, args, "verified")
    checked = sum(result.versions for result in results)
    failed = sum(len(result.problems) for result in results)
    if args.json:
        write_document(
            "verify",
            checked=checked,
            verified=checked - failed,
            failed=failed,
            keys=[result.as_json() for result in results],
            key_ids=[
                {
                    "key_id": format_key_id(key_id),
                    "records": count,
                    "primary": key_id == keys.primary_id,
                }
                for key_id, count in sorted(in_use.items())
            ],
        )
        return EXIT_FAILED if failed else EXIT_OK
    sys.stdout.write(f"{checked - failed} of {checked} records verified, {failed} failed\n")
    if in_use:
        # which keys still seal records: a key may be retired once it seals none
        listed = ", ".join(
            f"{format_key_id(key_id)}{' (primary)' if key_id == keys.primary_id else ''}: {count}"
            for key_id, count in sorted(in_use.items())
        )
        sys.stdout.write(f"records per key id: {listed}\n")
    return EXIT_FAILED if failed else EXIT_OK


def _key_ids(backend: Backend, namespace: str) -> Counter[int]:
    """How many stored records each key id (from the unauthenticated header) sealed."""
    counts: Counter[int] = Counter()

    def unreadable(_key: str, _version: int, _error: PersistError) -> None:
        pass  # verify already reported it

    for _info, blob in backend.iter_namespace(namespace, on_error=unreadable):
        try:
            counts[read_header(blob).key_id] += 1
        except PersistError:
            continue  # not an envelope: verify already reported it
    return counts


def count_key_ids(url: str, catalog: str | None) -> Counter[int]:
    """Records per key id in every namespace of the store at ``url`` (for ``keys retire``)."""
    counts: Counter[int] = Counter()
    with open_existing(url, catalog) as backend:
        for namespace in backend.namespaces():
            counts.update(_key_ids(backend, namespace))
    return counts


def add_commands(commands: Subcommands) -> None:
    """Add ``ls``, ``show`` and ``verify``."""
    ls = store_command(commands, "ls", "list keys and their versions", needs_keys=False)
    ls.add_argument("--prefix", default="", help="only keys starting with this")
    json_flag(ls)
    ls.set_defaults(func=_cmd_ls)

    add_versions_command(commands)

    show = store_command(
        commands, "show", "decode and print one record", needs_keys=True, scope="one"
    )
    show.add_argument("key")
    which = show.add_mutually_exclusive_group()
    which.add_argument("--version", type=int, help="version to show (default: newest)")
    which.add_argument(
        "--at",
        type=moment_option,
        metavar="TIME",
        help="the version in force at TIME (ISO 8601 with an offset, e.g. "
        "2025-06-01T10:00:00Z) and the journal entries after it up to TIME",
    )
    json_flag(show)
    show.set_defaults(func=_cmd_show)

    verify = store_command(commands, "verify", "authenticate every stored record", needs_keys=True)
    json_flag(verify)
    verify.set_defaults(func=_cmd_verify)
