"""``config ls|get|set|history|diff|rollback|explain|watch``: configuration from the command line.

Configurations are sealed records, so every command needs the keyring
(``--keys FILE`` or ``$GOTSTATE_PERSIST_KEYS``). The command line has no
schema definitions -- they live in the application -- so the reading
commands (``ls``, ``get``, ``history``, ``diff``, ``watch``) decode stored
payloads schema-less: the payload marks every secret, so a secret is shown
as ``**********`` without any schema saying where it is, and only ``get
--reveal`` prints one in clear. The writing commands (``set``,
``rollback``) and ``explain`` import the schema the operator names with
``--schema MODULE:CLASS`` (``_configinput``), define it in this process and
go through the same validation as the library: a refusal prints every
problem, exits 1 and writes nothing.

Writes go through the quota adapter, as every other write. How values,
versions and diffs are printed is ``_configview``'s.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Callable, Iterator
from typing import Any

from .._names import printable
from .._pipeline import RecordPipeline
from .._redact import scrub
from ..backends import Backend
from ..config import ConfigStore
from ..config._diff import diff
from ..config._secret import decode_untyped
from ..config._store import ref_of
from ..errors import ConfigInvalid, ExtensionUnavailable, NotFound, PersistError, VersionConflict
from ..extensions import ExtensionRegistry
from ..quota import QuotaBackend
from ..sealing import KeyRing
from ._configinput import (
    FORMATS,
    STDIN,
    load_schema,
    name_option,
    provider_of,
    read_values,
    schema_option,
    source_option,
    version_option,
)
from ._configview import (
    change_json,
    change_rows,
    field_json,
    field_rows,
    json_text,
    plain_value,
    ref_json,
    ref_row,
    toml_text,
    typed_leaves,
    typed_value,
)
from ._extview import write_table
from ._jsondoc import document, json_flag, write_document
from ._keyring import load_keyring
from ._options import (
    Subcommands,
    note_other_namespaces,
    seconds_option,
    selected_namespaces,
    store_command,
)
from ._output import EXIT_FAILED, EXIT_OK, terminal_safe_json, with_option_advice
from ._stores import open_existing

__all__ = ["add_commands"]

_HISTORY_HEADER = ["VERSION", "CHANGED (UTC)", "REASON"]


class _Opened:
    """The store of one command: a configuration store and an extension registry per namespace."""

    def __init__(self, backend: Backend, keys: KeyRing) -> None:
        self.backend = backend
        self._adapter = QuotaBackend(backend)  # writes count toward the namespace's quota
        self._keys = keys
        self._registries: dict[str, ExtensionRegistry] = {}

    def _pipeline(self, namespace: str) -> RecordPipeline:
        return RecordPipeline(self._adapter, keyring=self._keys, namespace=namespace)

    def config(self, namespace: str) -> ConfigStore:
        return ConfigStore(self._pipeline(namespace), extensions=lambda: self.registry(namespace))

    def registry(self, namespace: str) -> ExtensionRegistry:
        if namespace not in self._registries:
            self._registries[namespace] = ExtensionRegistry(self._pipeline(namespace))
        return self._registries[namespace]

    def close(self) -> None:
        for registry in self._registries.values():
            registry.close()


@contextlib.contextmanager
def _opened(args: argparse.Namespace) -> Iterator[_Opened]:
    keys = load_keyring(args.keys)  # a missing keyring is reported before the store is opened
    with open_existing(args.url, args.catalog) as backend:
        opened = _Opened(backend, keys)
        try:
            yield opened
        finally:
            opened.close()


def _write(text: str) -> None:
    sys.stdout.write(text + "\n")


def _no_versions(name: str, namespace: str) -> NotFound:
    return NotFound(
        f"configuration {printable(name)!r} has no stored version in namespace "
        f"{printable(namespace)!r}; 'gotstate-persist config ls' lists the stored ones"
    )


@contextlib.contextmanager
def _command_line_advice() -> Iterator[None]:
    """Re-raise a stale ``expected_version`` with the option that fixes it."""
    try:
        yield
    except VersionConflict as exc:
        advised = with_option_advice(exc)
        if advised is exc:
            raise
        raise advised from exc


def _refused(exc: ConfigInvalid) -> int:
    """Every problem of a refusal, one per line (none quotes a value); exit status 1."""
    first = str(exc).splitlines()[0].rstrip(":") if str(exc) else "refused"
    sys.stderr.write(f"gotstate-persist: ConfigInvalid: {printable(scrub(first))}\n")
    for problem in exc.problems:
        sys.stderr.write(f"  {printable(scrub(problem))}\n")
    return EXIT_FAILED


# Reading (no schema needed).


def _cmd_ls(args: argparse.Namespace) -> int:
    rows: list[list[str]] = []
    found: list[dict[str, Any]] = []
    status = EXIT_OK
    with _opened(args) as opened:
        for namespace in selected_namespaces(opened.backend, args):
            try:
                config = opened.config(namespace)
                refs = [ref_of(config.log.value(name)) for name in config.names()]
            except PersistError as exc:
                message = printable(scrub(str(exc)))
                sys.stderr.write(
                    f"gotstate-persist: namespace {printable(namespace)!r}: "
                    f"{type(exc).__name__}: {message}\n"
                )
                status = EXIT_FAILED
                continue
            for ref in refs:
                rows.append([printable(namespace), printable(ref.name), *ref_row(ref)])
                found.append({"namespace": namespace, **ref_json(ref)})
        if not rows:
            note_other_namespaces(opened.backend, args, "listed")
    if args.json:
        write_document("config ls", configurations=found)
    elif not rows:
        _write("(no configurations)")
    else:
        write_table(["NAMESPACE", "NAME", *_HISTORY_HEADER], rows, sys.stdout)
    return status


def _cmd_get(args: argparse.Namespace) -> int:
    with _opened(args) as opened:
        stored = opened.config(args.namespace).log.value(args.name, args.version)
    if args.json:
        value = typed_value(stored, reveal=args.reveal)
        write_document(
            "config get", namespace=args.namespace, **ref_json(ref_of(stored)), value=value
        )
        return EXIT_OK
    value = plain_value(stored, reveal=args.reveal)
    _write(toml_text(value) if args.toml else json_text(value))
    return EXIT_OK


def _cmd_history(args: argparse.Namespace) -> int:
    with _opened(args) as opened:
        refs = opened.config(args.namespace).history(args.name)
    if not refs:
        raise _no_versions(args.name, args.namespace)
    if args.json:
        shown = [ref_json(ref) for ref in refs]
        write_document("config history", namespace=args.namespace, name=args.name, versions=shown)
    else:
        write_table(_HISTORY_HEADER, [ref_row(ref) for ref in refs], sys.stdout)
    return EXIT_OK


def _cmd_diff(args: argparse.Namespace) -> int:
    with _opened(args) as opened:
        log = opened.config(args.namespace).log
        old, new = log.value(args.name, args.old), log.value(args.name, args.new)
    old_value, new_value = decode_untyped(old.payload), decode_untyped(new.payload)
    changes = diff(old_value, new_value)
    if args.json:
        sides = typed_leaves(old_value), typed_leaves(new_value)
        write_document(
            "config diff",
            namespace=args.namespace,
            name=args.name,
            old=args.old,
            new=args.new,
            changes=[change_json(change, *sides) for change in changes],
        )
    elif not changes:
        _write(f"(no changes from version {args.old} to {args.new})")
    else:
        write_table(["PATH", "OLD", "NEW"], change_rows(changes), sys.stdout)
    return EXIT_OK


def _cmd_watch(args: argparse.Namespace) -> int:
    try:
        with _opened(args) as opened:
            config = opened.config(args.namespace)
            since = args.since
            if since is None:  # only what lands from now on
                try:
                    since = config.log.value(args.name).version
                except NotFound:
                    since = 0
            for ref in config.watch(args.name, since=since, timeout=args.timeout):
                if args.json:  # one document per line (JSON Lines): the watch has no end
                    line = document("config watch", namespace=args.namespace, **ref_json(ref))
                    sys.stdout.write(terminal_safe_json(json.dumps(line, ensure_ascii=False)))
                    sys.stdout.write("\n")
                else:
                    sys.stdout.write("  ".join(ref_row(ref)).rstrip() + "\n")
                sys.stdout.flush()
    except KeyboardInterrupt:  # Ctrl-C is how a watch ends
        return EXIT_OK
    return EXIT_OK


# Writing and resolving (the operator names the schema).


def _cmd_set(args: argparse.Namespace) -> int:
    schema = load_schema(args.schema)
    try:
        values = read_values(args.file, args.format, args.name, schema)
        with _opened(args) as opened, _command_line_advice():
            config = opened.config(args.namespace)
            config.define(args.name, schema, version=args.schema_version)
            ref = config.put(
                args.name, values, expected_version=args.expected_version, reason=args.reason
            )
    except ConfigInvalid as exc:
        return _refused(exc)
    if args.json:
        write_document("config set", namespace=args.namespace, **ref_json(ref))
        return EXIT_OK
    _write(
        f"stored {printable(ref.name)} version {ref.version} in namespace "
        f"{printable(args.namespace)!r}"
    )
    return EXIT_OK


def _cmd_rollback(args: argparse.Namespace) -> int:
    schema = load_schema(args.schema)
    with _opened(args) as opened, _command_line_advice():
        config = opened.config(args.namespace)
        config.define(args.name, schema, version=args.schema_version)
        try:
            ref = config.rollback(
                args.name, to=args.to, expected_version=args.expected_version, reason=args.reason
            )
        except ConfigInvalid as exc:
            return _refused(exc)
    if args.json:
        write_document("config rollback", namespace=args.namespace, to=args.to, **ref_json(ref))
        return EXIT_OK
    _write(
        f"rolled {printable(ref.name)} back to version {args.to}: stored as version "
        f"{ref.version} in namespace {printable(args.namespace)!r}"
    )
    return EXIT_OK


def _start_extension(registry: ExtensionRegistry, name: str) -> None:
    """Start an extension that is persisted ``active`` in this process (writes nothing)."""
    if registry.get(name).status != "active":
        raise ExtensionUnavailable(
            f"extension {printable(name)!r} is not active; activate it first "
            "('gotstate-persist ext activate URL NAME') or leave its --source out"
        )
    registry.activate(name)


def _cmd_explain(args: argparse.Namespace) -> int:
    schema = load_schema(args.schema)
    specs = args.sources or [("store", "")]
    providers = [provider_of(spec) for spec in specs]
    with _opened(args) as opened:
        config = opened.config(args.namespace)
        config.define(args.name, schema, version=args.schema_version)
        for kind, argument in specs:
            if kind == "extension":
                _start_extension(opened.registry(args.namespace), argument)
        try:
            fields = config.explain(args.name, providers=providers)
        except ConfigInvalid as exc:
            return _refused(exc)
    if args.json:
        shown = [field_json(field) for field in fields]
        write_document("config explain", namespace=args.namespace, name=args.name, fields=shown)
    else:
        write_table(["PATH", "VALUE", "SOURCE", "OVERRIDDEN"], field_rows(fields), sys.stdout)
    return EXIT_OK


# The parsers.


def _name_command(
    sub: Subcommands, command: str, help_text: str, func: Callable[[argparse.Namespace], int]
) -> argparse.ArgumentParser:
    parser = store_command(sub, command, help_text, needs_keys=True, scope="one")
    parser.add_argument("name", type=name_option, help="the configuration's name")
    parser.set_defaults(func=func)
    return parser


def _schema_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--schema",
        type=schema_option,
        required=True,
        metavar="MODULE:CLASS",
        help="the configuration's msgspec.Struct schema, imported from PYTHONPATH "
        "(the one the application defines)",
    )
    parser.add_argument(
        "--schema-version",
        type=version_option,
        default=1,
        metavar="N",
        help="its format version, as the application's define(version=) (default 1)",
    )


def _write_options(parser: argparse.ArgumentParser, *, reason: str | None, shown: str) -> None:
    _schema_options(parser)
    parser.add_argument(
        "--expected-version",
        type=version_option,
        required=True,
        metavar="N",
        help="refuse (and write nothing) unless the configuration is at version N "
        "(0: it has none yet)",
    )
    parser.add_argument("--reason", default=reason, help=f"why, kept in the history ({shown})")


def add_commands(commands: Subcommands) -> None:
    """Add ``config`` and its subcommands."""
    group = commands.add_parser(
        "config", help="read, change, explain and watch configurations (secrets redacted)"
    )
    sub = group.add_subparsers(dest="config_command", required=True)

    ls = store_command(sub, "ls", "every stored configuration: newest version", needs_keys=True)
    json_flag(ls)
    ls.set_defaults(func=_cmd_ls)

    get = _name_command(sub, "get", "a version's value (secrets shown as **********)", _cmd_get)
    get.add_argument("--version", type=version_option, metavar="N", help="default: newest")
    get.add_argument(
        "--reveal",
        action="store_true",
        help="print secrets in clear (only with this flag, and only with the keyring)",
    )
    shape = get.add_mutually_exclusive_group()
    shape.add_argument(
        "--json",
        action="store_true",
        help="print one JSON document with the version and the typed value (docs/json.md); "
        "without it the value alone is printed as JSON",
    )
    shape.add_argument("--toml", action="store_true", help="print TOML")

    history = _name_command(sub, "history", "one line per kept version", _cmd_history)
    json_flag(history)

    changes = _name_command(sub, "diff", "what changed between two versions", _cmd_diff)
    changes.add_argument("old", type=version_option, metavar="A", help="the older version")
    changes.add_argument("new", type=version_option, metavar="B", help="the newer version")
    json_flag(changes)

    put = _name_command(
        sub, "set", "validate a TOML or JSON file and store it as the next version", _cmd_set
    )
    put.add_argument(
        "file", nargs="?", default=STDIN, metavar="FILE", help="the value (default '-': stdin)"
    )
    put.add_argument("--format", choices=FORMATS, help="default: by the file's suffix")
    _write_options(put, reason="", shown="default: none")
    json_flag(put)

    rollback = _name_command(
        sub, "rollback", "store an older version again as the next one", _cmd_rollback
    )
    rollback.add_argument(
        "--to", type=version_option, required=True, metavar="N", help="the version to restore"
    )
    _write_options(rollback, reason=None, shown="default: 'rollback to version N'")
    json_flag(rollback)

    explain = _name_command(
        sub, "explain", "per field: value (redacted), winning source, overridden", _cmd_explain
    )
    _schema_options(explain)
    explain.add_argument(
        "--source",
        dest="sources",
        action="append",
        type=source_option,
        metavar="SPEC",
        help="file:PATH, env:PREFIX, store, store:VERSION or extension:NAME (an active "
        "one), repeated lowest precedence first (default: store)",
    )
    json_flag(explain)

    watch = _name_command(
        sub, "watch", "one line per version as it lands (Ctrl-C ends it)", _cmd_watch
    )
    watch.add_argument(
        "--since",
        type=version_option,
        metavar="N",
        help="print every version after N first (default: only new ones)",
    )
    watch.add_argument(
        "--timeout",
        type=seconds_option,
        metavar="S",
        help="end after S seconds without a new version (default: never)",
    )
    json_flag(watch)  # one document per line as each version lands
