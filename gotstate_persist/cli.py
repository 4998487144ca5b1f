"""The ``gotstate-persist`` command: keys, listing, inspection, verification, copy.

Commands that open records read the exported keyring from ``--keys FILE`` or,
by default, the environment variable ``GOTSTATE_PERSIST_KEYS`` (the one
``KeyRing.from_env()`` reads). Output goes to stdout; problems go to stderr
with exit status 1 (2 for usage errors), and never include key material.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import msgspec
import sqlalchemy as sa

from ._copy import copy_records
from ._names import DEFAULT_NAMESPACE
from .backends import Backend, open_backend
from .errors import InvalidArgument, PersistError
from .formats import MachineSnapshot, SubmachineSnapshot
from .formats._registry import FormatRegistry
from .formats._values import UnsupportedValue, decode_value
from .formats.machine import decode_structure
from .sealing import ALGORITHMS, DEFAULT_ENV_VAR, KeyRing, read_header
from .store import SnapshotRef, Store

__all__ = ["main"]

_SQL_SCHEMES = ("sqlite", "postgresql")
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


def _keyring(path: str | None) -> KeyRing:
    if path is None:
        return KeyRing.from_env(DEFAULT_ENV_VAR)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidArgument(f"cannot read keyring file {path!r}: {exc.strerror}") from None
    return KeyRing.load(text)


def _open_existing(url: str) -> Backend:
    """Open a backend for reading; refuse to create a missing SQLite file."""
    if url.startswith("sqlite"):
        try:
            database = sa.make_url(url).database
        except sa.exc.ArgumentError:
            raise InvalidArgument(
                f"{url!r} is not a store URL; use e.g. sqlite:///path/state.db"
            ) from None
        if database and database != ":memory:" and not Path(database).exists():
            raise InvalidArgument(f"no SQLite database at {database!r}; check the URL")
    if url.split(":", 1)[0].split("+", 1)[0] in _SQL_SCHEMES:
        return open_backend(url, create=False)  # never create tables to read them
    return open_backend(url)


def _namespaces(backend: Backend, namespace: str | None) -> list[str]:
    return [namespace] if namespace else backend.namespaces()


def _print_table(rows: list[list[str]], out: TextIO) -> None:
    if not rows:
        return
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        out.write(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
            + "\n"
        )


def _cmd_keys_generate(args: argparse.Namespace) -> int:
    sys.stdout.write(KeyRing.generate(args.algorithm).export() + "\n")
    return EXIT_OK


def _cmd_ls(args: argparse.Namespace) -> int:
    with _open_existing(args.url) as backend:
        rows = [["NAMESPACE", "KEY", "VERSIONS", "NEWEST", "KIND", "FORMAT", "SIZE", "SAVED (UTC)"]]
        for namespace in _namespaces(backend, args.namespace):
            for key in backend.keys(namespace, args.prefix):
                versions = backend.versions(namespace, key)
                if not versions:
                    continue
                newest = versions[-1]
                rows.append(
                    [
                        namespace,
                        key,
                        str(len(versions)),
                        str(newest.version),
                        newest.kind,
                        str(newest.format_version),
                        str(newest.size),
                        newest.created_at.strftime("%Y-%m-%d %H:%M:%S"),
                    ]
                )
    if len(rows) == 1:
        sys.stdout.write("(no records)\n")
    else:
        _print_table(rows, sys.stdout)
    return EXIT_OK


def _plain(value: Any) -> Any:
    """Make a decoded value printable as JSON without losing what it was."""
    if isinstance(value, dict):
        return {str(k) if isinstance(k, str) else repr(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = [_plain(v) for v in value]
        return items if isinstance(value, list) else {type(value).__name__: items}
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, msgspec.Struct):
        return {type(value).__name__: _plain(msgspec.structs.asdict(value))}
    return repr(value)


def _snapshot_view(
    snapshot: MachineSnapshot | SubmachineSnapshot, formats: FormatRegistry
) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for name, tagged in snapshot.data.items():
        try:
            data[name] = _plain(decode_value(tagged, formats.type_for))
        except (UnsupportedValue, PersistError) as exc:
            data[name] = f"<cannot decode: {exc}>"
    view: dict[str, Any] = {
        "machine": snapshot.machine_type,
        "started": snapshot.started,
        "current_state": snapshot.current,
        "history": snapshot.history,
        "state_data": data,
        "states": len(decode_structure(snapshot).names),
        "fingerprint": snapshot.fingerprint,
    }
    if isinstance(snapshot, MachineSnapshot):
        view["submachines"] = {
            "/".join(sub.path): _snapshot_view(sub, formats) for sub in snapshot.submachines
        }
    return view


def _cmd_show(args: argparse.Namespace) -> int:
    keys = _keyring(args.keys)
    with _open_existing(args.url) as backend:
        store = Store(backend, keyring=keys, namespace=args.namespace or DEFAULT_NAMESPACE)
        ref, record, typed = store._inspect(args.key, args.version)
        header = read_header(backend.get(store.namespace, args.key, ref.version)[1])
    meta = {
        "namespace": ref.namespace,
        "key": ref.key,
        "version": ref.version,
        "kind": ref.kind,
        "format_version": ref.format_version,
        "size": ref.size,
        "saved": ref.created_at.isoformat(),
        "sealed_with": f"{header.algorithm} key {header.key_id:#010x}",
    }
    if isinstance(record, MachineSnapshot):
        body: Any = _snapshot_view(record, store.formats)
    elif typed:
        body = _plain(msgspec.to_builtins(record))
    else:
        meta["note"] = "kind not registered in this tool: fields shown untyped"
        body = _plain(record)
    sys.stdout.write(json.dumps({**meta, "record": body}, indent=2, ensure_ascii=False) + "\n")
    return EXIT_OK


def _verify_key(store: Store, key: str) -> tuple[int, list[str]]:
    problems: list[str] = []
    versions: list[SnapshotRef] = store.versions(key)
    for ref in versions:
        try:
            store._inspect(key, ref.version)
        except PersistError as exc:
            problems.append(f"version {ref.version}: {type(exc).__name__}: {exc}")
    return len(versions), problems


def _verify_namespace(backend: Backend, keys: KeyRing, namespace: str) -> tuple[int, int]:
    """Verify every key of one namespace, print a line per key; return (checked, failed)."""
    checked = failed = 0
    try:
        store = Store(backend, keyring=keys, namespace=namespace)
    except InvalidArgument as exc:  # a name no gotstate-persist could have written
        sys.stdout.write(f"FAILED namespace {namespace!r}: {exc}\n")
        return 0, 1
    for key in backend.keys(namespace):
        try:
            count, problems = _verify_key(store, key)
        except InvalidArgument as exc:
            count, problems = 0, [f"invalid key: {exc}"]
        checked += count
        failed += len(problems)
        status = "ok" if not problems else "FAILED"
        sys.stdout.write(f"{status:6} {namespace}/{key} ({count} versions)\n")
        for problem in problems:
            sys.stdout.write(f"         {problem}\n")
    return checked, failed


def _cmd_verify(args: argparse.Namespace) -> int:
    keys = _keyring(args.keys)
    failed = checked = 0
    with _open_existing(args.url) as backend:
        for namespace in _namespaces(backend, args.namespace):
            ns_checked, ns_failed = _verify_namespace(backend, keys, namespace)
            checked += ns_checked
            failed += ns_failed
    sys.stdout.write(f"{checked - failed} of {checked} records verified, {failed} failed\n")
    return EXIT_FAILED if failed else EXIT_OK


class _ProgressBar:
    """A one-line progress bar on stderr (a plain line every 10% when not a terminal)."""

    WIDTH = 30

    def __init__(self, label: str, stream: TextIO) -> None:
        self._label = label
        self._stream = stream
        self._tty = stream.isatty()
        self._last_tenth = -1

    def __call__(self, done: int, total: int) -> None:
        fraction = done / total if total else 1.0
        if self._tty:
            filled = int(fraction * self.WIDTH)
            bar = "#" * filled + "." * (self.WIDTH - filled)
            self._stream.write(f"\r{self._label} [{bar}] {done}/{total}")
            if done == total:
                self._stream.write("\n")
        elif int(fraction * 10) > self._last_tenth or done == total:
            self._last_tenth = int(fraction * 10)
            self._stream.write(f"{self._label}: {done}/{total}\n")
        self._stream.flush()


def _cmd_copy(args: argparse.Namespace) -> int:
    keys = _keyring(args.keys)
    with _open_existing(args.source) as source, open_backend(args.destination) as destination:
        report = copy_records(
            source,
            destination,
            keys,
            namespaces=[args.namespace] if args.namespace else None,
            progress=_ProgressBar("copying", sys.stderr),
        )
    for namespace, key, version, reason in report.failed:
        sys.stdout.write(f"FAILED {namespace}/{key} version {version}: {reason}\n")
    sys.stdout.write(
        f"{report.copied} copied, {report.skipped} already present, {len(report.failed)} failed\n"
    )
    return EXIT_FAILED if report.failed else EXIT_OK


def _cmd_db(args: argparse.Namespace) -> int:
    from .backends.sql import SQLBackend
    from .migrations import HEAD_REVISION, REVISIONS, current_revision

    if args.db_command == "history":
        for revision in REVISIONS:
            marker = " (head)" if revision == HEAD_REVISION else ""
            sys.stdout.write(f"{revision}{marker}\n")
        return EXIT_OK
    if args.url.split(":", 1)[0].split("+", 1)[0] not in _SQL_SCHEMES:
        raise InvalidArgument("db commands apply to SQL stores (sqlite:///..., postgresql://...)")
    if args.db_command == "upgrade":
        with SQLBackend(args.url, upgrade=True) as backend, backend.engine.connect() as conn:
            sys.stdout.write(f"schema at {current_revision(conn)} (head {HEAD_REVISION})\n")
        return EXIT_OK
    existing = _open_existing(args.url)
    if not isinstance(existing, SQLBackend):  # pragma: no cover - guarded by the scheme check
        raise InvalidArgument("db commands apply to SQL stores")
    with existing, existing.engine.connect() as conn:
        sys.stdout.write(f"{current_revision(conn)}\n")
    return EXIT_OK


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gotstate-persist",
        description="Inspect and verify gotstate-persist stores.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    keys_cmd = commands.add_parser("keys", help="manage keyrings")
    keys_sub = keys_cmd.add_subparsers(dest="keys_command", required=True)
    generate = keys_sub.add_parser("generate", help="print a new exported keyring")
    generate.add_argument("--algorithm", choices=ALGORITHMS, default="aes-256-gcm")
    generate.set_defaults(func=_cmd_keys_generate)

    def store_command(name: str, help_text: str, *, needs_keys: bool) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text)
        sub.add_argument("url", help="store URL, e.g. sqlite:///state.db")
        sub.add_argument("--namespace", help="only this namespace (default: all)")
        if needs_keys:
            sub.add_argument(
                "--keys",
                metavar="FILE",
                help=f"exported keyring file (default: ${DEFAULT_ENV_VAR})",
            )
        return sub

    ls = store_command("ls", "list keys and their versions", needs_keys=False)
    ls.add_argument("--prefix", default="", help="only keys starting with this")
    ls.set_defaults(func=_cmd_ls)

    show = store_command("show", "decode and print one record", needs_keys=True)
    show.add_argument("key")
    show.add_argument("--version", type=int, help="version to show (default: newest)")
    show.set_defaults(func=_cmd_show)

    verify = store_command("verify", "authenticate every stored record", needs_keys=True)
    verify.set_defaults(func=_cmd_verify)

    copy = commands.add_parser(
        "copy", help="copy every version of every key to another store (resumable)"
    )
    copy.add_argument("source", help="store URL to copy from")
    copy.add_argument("destination", help="store URL to copy to")
    copy.add_argument("--namespace", help="only this namespace (default: all)")
    copy.add_argument(
        "--keys", metavar="FILE", help=f"exported keyring file (default: ${DEFAULT_ENV_VAR})"
    )
    copy.set_defaults(func=_cmd_copy)

    db = commands.add_parser("db", help="SQL schema: current revision, upgrade, history")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    for name, text in (
        ("current", "print the schema revision of a database"),
        ("upgrade", "upgrade (or create) the schema to this version's head revision"),
    ):
        sub = db_sub.add_parser(name, help=text)
        sub.add_argument("url", help="SQL store URL, e.g. sqlite:///state.db")
        sub.set_defaults(func=_cmd_db)
    history = db_sub.add_parser("history", help="list the schema revisions this version knows")
    history.set_defaults(func=_cmd_db)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    args = _parser().parse_args(argv)
    try:
        status: int = args.func(args)
    except InvalidArgument as exc:
        sys.stderr.write(f"gotstate-persist: {exc}\n")
        return EXIT_USAGE
    except PersistError as exc:
        sys.stderr.write(f"gotstate-persist: {type(exc).__name__}: {exc}\n")
        return EXIT_FAILED
    return status


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
