"""The ``gotstate-persist`` command: keys, listing, inspection, verification, copy, quotas.

Commands that open records read the exported keyring from ``--keys FILE`` or,
by default, the environment variable ``GOTSTATE_PERSIST_KEYS`` (the one
``KeyRing.from_env()`` reads); ``usage`` and ``quota`` work on the backend
alone and need no keyring. Output goes to stdout; problems go to stderr with
exit status 1 (2 for usage errors), and never include key material or
credentials.

Names and values read from a store are escaped before they reach a terminal.
``ls``, ``verify``, ``usage`` and ``gc`` look at every namespace unless
``--namespace`` names one; ``copy``, ``migrate`` and ``reseal`` rewrite or copy
records, so they need ``--namespace`` or ``--all-namespaces``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import re
import sys
from collections import Counter
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal, NoReturn, TextIO

import msgspec
import sqlalchemy as sa

from ._cli_keys import add_commands as _add_keys_commands
from ._cli_keys import read_keyring_file
from ._cli_options import (
    NAMED_NAMESPACES,
    NamespaceScope,
    batch_size_option,
    namespace_option,
    namespace_options,
    note_other_namespaces,
    seconds_option,
    selected_namespaces,
    terminal_safe_json,
)
from ._copy import copy_records
from ._migrate import DEFAULT_BATCH_SIZE
from ._names import check_name, printable
from ._pipeline import RecordPipeline
from ._progress import ProgressDisplay
from ._redact import mask_url, scrub
from .backends import Backend, Usage, open_backend
from .backends.catalog import STALE_RESERVATION_SECONDS, CatalogBackend
from .backends.objectstore import ObjectStoreBackend
from .errors import FormatError, IntegrityError, InvalidArgument, NotFound, PersistError
from .formats import MachineSnapshot, SubmachineSnapshot
from .formats._registry import FormatRegistry
from .formats._values import UnsupportedValue, decode_value
from .formats.machine import decode_structure
from .quota import RETENTIONS, Quota, QuotaBackend
from .sealing import DEFAULT_ENV_VAR, KeyRing, format_key_id, read_header
from .store import Store, snapshot_ref

__all__ = ["main"]

_SQL_SCHEMES = ("sqlite", "postgresql")
#: fsspec's names for the local file system, whose store directory opening would create.
_LOCAL_SCHEMES = ("file", "local")
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
#: 128 + SIGINT, as shells report a command stopped with Ctrl-C.
EXIT_INTERRUPTED = 130


#: What to do about a missing keyring. The existing keyring comes first: a new
#: one cannot open anything already stored, and "generate one" alone led users there.
_NO_KEYRING = (
    f"no keyring: pass --keys FILE or set {DEFAULT_ENV_VAR} to the exported keyring the "
    "store was sealed with (a new keyring cannot open existing data; only for a new store, "
    "create one with `gotstate-persist keys generate`)"
)


def _keyring(path: str | None) -> KeyRing:
    """The keyring of ``--keys FILE`` or of the environment, or one clear error."""
    if path is not None:
        return read_keyring_file(path)
    if not os.environ.get(DEFAULT_ENV_VAR, "").strip():
        raise InvalidArgument(_NO_KEYRING)
    try:
        return KeyRing.from_env(DEFAULT_ENV_VAR)
    except InvalidArgument as exc:
        raise InvalidArgument(f"${DEFAULT_ENV_VAR}: {exc}") from None


def _open_existing(url: str, catalog: str | None = None) -> Backend:
    """Open a backend for reading; refuse a missing SQLite file or local directory.

    With ``catalog``, ``url`` is an object store whose versions and usage live
    in that SQL database (open_store's ``catalog=``), opened the same careful way.
    """
    _refuse_process_local(url, _READ_IN_NEW_PROCESS)
    if catalog is not None:
        _refuse_process_local(catalog, _READ_IN_NEW_PROCESS)
        _check_existing_sqlite(catalog)
        _check_existing_directory(url)  # opening the object store would create it
        return open_backend(url, catalog=catalog, catalog_options={"create": False})
    _check_existing_sqlite(url)
    return _open_local_or_server(url)


_READ_IN_NEW_PROCESS = (
    "lives only in the memory of the process that opened it, and this command is a new "
    "process where it is always empty; give the URL of a store on disk or on a server"
)
_LOST_AT_EXIT = (
    "lives only in this command's memory: everything copied there would be lost when it "
    "exits; copy to a store that outlives it (file://, sqlite:///, postgresql://, s3://)"
)


def _scheme(url: str) -> str:
    return url.split(":", 1)[0].split("+", 1)[0].lower()


def _process_local(url: str) -> bool:
    """Whether ``url`` names a store that exists only inside one process's memory."""
    scheme = _scheme(url)
    if scheme == "memory":
        return True
    if scheme != "sqlite":
        return False
    try:
        parsed = sa.make_url(url)
    except sa.exc.ArgumentError:
        return False  # _check_existing_sqlite says what is wrong with it
    database = parsed.database or ""
    return database in ("", ":memory:") or parsed.query.get("mode") == "memory"


def _refuse_process_local(url: str, why: str) -> None:
    if _process_local(url):
        raise InvalidArgument(f"{mask_url(url)} {why}")


def _check_existing_directory(url: str) -> None:
    """Refuse a local object store whose directory is missing (reads never create it)."""
    if _scheme(url) not in _LOCAL_SCHEMES:
        return
    from fsspec.core import url_to_fs

    root = str(url_to_fs(url)[1])
    if not _local_path(root).is_dir():
        raise InvalidArgument(
            f"no store directory at {_shown_path(root)}; check the URL (reading never creates one)"
        )


#: A path longer than this is shown cut in messages: one line, not 100 kB of it.
_SHOWN_PATH_CHARS = 120


def _shown_path(path: str) -> str:
    shown = path if len(path) <= _SHOWN_PATH_CHARS else path[:_SHOWN_PATH_CHARS] + "..."
    return repr(shown)


def _local_path(path: str) -> Path:
    """``path``, once the operating system agrees it can name a file (else one clear error)."""
    try:
        Path(path).exists()
    except (OSError, ValueError) as exc:  # too long, a NUL byte, ...
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise InvalidArgument(
            f"cannot use the path {_shown_path(path)}: {reason}; check the URL"
        ) from None
    return Path(path)


def _check_existing_sqlite(url: str) -> None:
    if url.startswith("sqlite"):
        try:
            database = sa.make_url(url).database
        except (sa.exc.ArgumentError, ValueError):
            raise InvalidArgument(
                f"{mask_url(url)} is not a store URL; use e.g. sqlite:///path/state.db"
            ) from None
        if database and database != ":memory:" and not _local_path(database).exists():
            raise InvalidArgument(f"no SQLite database at {_shown_path(database)}; check the URL")


def _open_local_or_server(url: str) -> Backend:
    if _scheme(url) in _SQL_SCHEMES:
        return open_backend(url, create=False)  # never create tables to read them
    _check_existing_directory(url)  # opening a local store creates its directory: not here
    return open_backend(url)


def _print_table(rows: list[list[str]], out: TextIO) -> None:
    if not rows:
        return
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        out.write(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
            + "\n"
        )


def _cmd_ls(args: argparse.Namespace) -> int:
    with _open_existing(args.url, args.catalog) as backend:
        rows = [["NAMESPACE", "KEY", "VERSIONS", "NEWEST", "KIND", "FORMAT", "SIZE", "SAVED (UTC)"]]
        for namespace in selected_namespaces(backend, args):
            for key in backend.keys(namespace, args.prefix):
                versions = backend.versions(namespace, key)
                if not versions:
                    continue
                newest = versions[-1]
                rows.append(
                    [  # names come from storage, maybe written by other tools: escaped
                        printable(namespace),
                        printable(key),
                        str(len(versions)),
                        str(newest.version),
                        printable(str(newest.kind)),
                        str(newest.format_version),
                        str(newest.size),
                        newest.created_at.strftime("%Y-%m-%d %H:%M:%S"),
                    ]
                )
        if len(rows) == 1:
            note_other_namespaces(backend, args, "listed")
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
    with _open_existing(args.url, args.catalog) as backend:
        pipeline = RecordPipeline(backend, keyring=keys, namespace=args.namespace)
        try:
            inspection = pipeline.inspect(args.key, args.version)
        except NotFound as exc:
            raise _not_found_here(backend, args.namespace, args.key, exc) from None
        ref = snapshot_ref(inspection.info, pipeline.namespace)
        record, typed = inspection.record, inspection.typed
        header = read_header(backend.get(pipeline.namespace, args.key, ref.version)[1])
    meta = {
        "namespace": ref.namespace,
        "key": ref.key,
        "version": ref.version,
        "kind": ref.kind,
        "format_version": ref.format_version,
        "size": ref.size,
        "saved": ref.created_at.isoformat(),
        "sealed_with": f"{header.algorithm} key {format_key_id(header.key_id)}",
    }
    if isinstance(record, MachineSnapshot):
        body: Any = _snapshot_view(record, pipeline.formats)
    elif typed:
        body = _plain(msgspec.to_builtins(record))
    else:
        meta["note"] = "kind not registered in this tool: fields shown untyped"
        body = _plain(record)
    shown = json.dumps({**meta, "record": body}, indent=2, ensure_ascii=False)
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
    versions = pipeline.backend.versions(pipeline.namespace, check_name(key, "key"))
    for ref in versions:
        try:
            pipeline.inspect(key, ref.version)
        except PersistError as exc:
            problems.append(f"version {ref.version}: {type(exc).__name__}: {exc}")
    return len(versions), problems


def _verify_namespace(backend: Backend, keys: KeyRing, namespace: str) -> tuple[int, int]:
    """Verify every key of one namespace, print a line per key; return (checked, failed)."""
    checked = failed = 0
    try:
        pipeline = RecordPipeline(backend, keyring=keys, namespace=namespace)
    except InvalidArgument as exc:  # a name no gotstate-persist could have written
        sys.stdout.write(f"FAILED namespace {namespace!r}: {printable(str(exc))}\n")
        return 0, 1
    for key in backend.keys(namespace):
        try:
            count, problems = _verify_key(pipeline, key)
        except InvalidArgument as exc:
            count, problems = 0, [f"invalid key: {exc}"]
        except (FormatError, IntegrityError) as exc:  # its versions cannot even be listed
            count, problems = 1, [f"{type(exc).__name__}: {exc}"]
        checked += count
        failed += len(problems)
        status = "ok" if not problems else "FAILED"
        shown = f"{printable(namespace)}/{printable(key)}"
        sys.stdout.write(f"{status:6} {shown} ({count} versions)\n")
        for problem in problems:
            sys.stdout.write(f"         {printable(problem)}\n")
    return checked, failed


def _cmd_verify(args: argparse.Namespace) -> int:
    keys = _keyring(args.keys)
    failed = checked = 0
    in_use: Counter[int] = Counter()
    with _open_existing(args.url, args.catalog) as backend:
        for namespace in selected_namespaces(backend, args):
            ns_checked, ns_failed = _verify_namespace(backend, keys, namespace)
            checked += ns_checked
            failed += ns_failed
            in_use.update(_key_ids(backend, namespace))
        note_other_namespaces(backend, args, "verified")
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


def _count_key_ids(url: str, catalog: str | None) -> Counter[int]:
    """Records per key id in every namespace of the store at ``url`` (for ``keys retire``)."""
    counts: Counter[int] = Counter()
    with _open_existing(url, catalog) as backend:
        for namespace in backend.namespaces():
            counts.update(_key_ids(backend, namespace))
    return counts


def _load_formats(target: str) -> FormatRegistry:
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
    keys = _keyring(args.keys)
    registry = _load_formats(args.formats) if args.command == "migrate" else None
    if registry is not None:
        registry.newest_version(args.kind)  # an unknown kind is refused before anything opens
    failed = 0
    with (
        _open_existing(args.url, args.catalog) as backend,
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


def _cmd_copy(args: argparse.Namespace) -> int:
    _refuse_process_local(args.destination, _LOST_AT_EXIT)
    if args.to_catalog:
        _refuse_process_local(args.to_catalog, _LOST_AT_EXIT)
    keys = _keyring(args.keys)
    target = {"catalog": args.to_catalog} if args.to_catalog else {}
    with (
        _open_existing(args.source, args.catalog) as source,
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


# Usage and quotas: backend level, no keyring needed.

#: Quota fields that count bytes (their options also take units: 50MB, 64KiB).
_BYTE_LIMITS = ("max_bytes", "max_blob_bytes")
#: Quota fields that count items or operations (plain integers).
_COUNT_LIMITS = (
    "max_records",
    "max_keys",
    "max_versions_per_key",
    "max_writes_per_second",
    "max_reads_per_second",
)
_MAX_LIMIT = 2**63 - 1
_NO_LIMIT: Literal["none"] = "none"
_UNITS = {
    "": 1,
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}
_SIZE = re.compile(r"([0-9]+(?:\.[0-9]+)?) ?([A-Za-z]*)")
_HUMAN_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB")

LimitValue = int | Literal["none"]


def _checked_limit(value: int, text: str) -> int:
    if not 1 <= value <= _MAX_LIMIT:
        raise argparse.ArgumentTypeError(
            f"{text!r} is out of range: a limit is 1 to {_MAX_LIMIT} "
            f"(use '{_NO_LIMIT}' to remove the limit)"
        )
    return value


def _size_option(text: str) -> LimitValue:
    """A byte limit: ``none``, a whole number of bytes, or one with a unit (50MB, 1.5GiB)."""
    if text.strip().lower() == _NO_LIMIT:
        return _NO_LIMIT
    found = _SIZE.fullmatch(text.strip())
    unit = found.group(2).lower() if found else ""
    if found is None or unit not in _UNITS:
        raise argparse.ArgumentTypeError(
            f"invalid size {text!r}: use a number of bytes, optionally with a unit "
            "(B, kB, MB, GB, TB = powers of 1000; KiB, MiB, GiB, TiB = powers of 1024), "
            f"e.g. 50MB or 64KiB, or '{_NO_LIMIT}'"
        )
    amount = Decimal(found.group(1)) * _UNITS[unit]
    if amount != amount.to_integral_value():
        raise argparse.ArgumentTypeError(f"invalid size {text!r}: not a whole number of bytes")
    return _checked_limit(int(amount), text)


def _count_option(text: str) -> LimitValue:
    """A count or rate limit: ``none`` or a plain positive integer."""
    if text.strip().lower() == _NO_LIMIT:
        return _NO_LIMIT
    if not re.fullmatch(r"[0-9]+", text.strip()):
        raise argparse.ArgumentTypeError(
            f"invalid number {text!r}: use a whole number such as 1000, or '{_NO_LIMIT}'"
        )
    return _checked_limit(int(text.strip()), text)


def _human_size(size: int) -> str:
    """``size`` bytes in binary units with one decimal (``1.2 KiB``); exact below 1 KiB."""
    if size < 1024:
        return f"{size} B"
    value = size / 1024
    for unit in _HUMAN_UNITS[1:-1]:
        if value < 1023.95:  # would not round up to 1024.0
            return f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} {_HUMAN_UNITS[-1]}"


def _open_quota_backend(url: str, namespace: str | None, catalog: str | None) -> QuotaBackend:
    """The quota adapter over an existing store: never creates tables (create=False)."""
    if namespace is not None:
        check_name(namespace, "namespace")
    return QuotaBackend(_open_existing(url, catalog))


def _describe(quota: Quota | None) -> str:
    return (quota or Quota()).describe()


def _measure(backend: QuotaBackend, namespace: str, *, recount: bool) -> Usage:
    """The namespace's usage: kept counters, or counted (and repaired) with ``recount``.

    A backend without exact, persisted counters (object stores) is always
    counted from its stored data: this process has no ledger worth reading.
    """
    if recount:
        if backend.capabilities.exact_quota:
            return backend.recount(namespace)
        # the adapter's recount would also sync this process's ledger (counting
        # twice); a one-shot command only needs the backend's own recount
        return backend.inner.recount(namespace)
    if backend.capabilities.exact_quota:
        return backend.usage(namespace)
    return backend.inner.usage(namespace)


def _drift_text(drift: Usage | None) -> str:
    if drift is None:
        return "none"
    parts = [
        f"{name} {value:+d}"
        for name, value in (
            ("bytes", drift.bytes),
            ("records", drift.records),
            ("keys", drift.keys),
        )
        if value
    ]
    return ", ".join(parts) or "none"


def _cmd_usage(args: argparse.Namespace) -> int:
    with _open_quota_backend(args.url, args.namespace, args.catalog) as backend:
        header = ["NAMESPACE", "BYTES", "SIZE", "RECORDS", "KEYS"]
        header += ["DRIFT", "QUOTA"] if args.recount else ["QUOTA"]
        rows = [header]
        repaired = 0
        names = selected_namespaces(backend, args)
        for namespace in names:
            used = _measure(backend, namespace, recount=args.recount)
            row = [printable(namespace), str(used.bytes), _human_size(used.bytes)]
            row += [str(used.records), str(used.keys)]
            if args.recount:
                row.append(_drift_text(used.drift))
                repaired += used.drift is not None
            row.append(_describe(backend.quota(namespace, fresh=True)))
            rows.append(row)
        exact = backend.capabilities.exact_quota
    if not names:
        sys.stdout.write("(no namespaces)\n")
        return EXIT_OK
    _print_table(rows, sys.stdout)
    if args.recount:
        counted = f"recounted {len(names)} namespace{'s' if len(names) != 1 else ''}"
        if repaired:
            sys.stdout.write(f"{counted}; repaired the counters of {repaired}\n")
        elif not exact:
            sys.stdout.write(
                f"{counted}: this backend keeps no shared usage counters, usage is always "
                "counted from the stored data\n"
            )
        else:
            sys.stdout.write(f"{counted}; the counters were exact\n")
    return EXIT_OK


def _quota_line(namespace: str, quota: Quota | None) -> str:
    return f"namespace {namespace!r}: {_describe(quota)}\n"


def _over_limits(backend: QuotaBackend, namespace: str, quota: Quota) -> list[str]:
    """The limits of ``quota`` that the namespace's current usage already reaches."""
    if quota.max_bytes is None and quota.max_records is None and quota.max_keys is None:
        return []
    used = _measure(backend, namespace, recount=False)
    return [
        f"{name}={maximum} ({amount} in use)"
        for name, maximum, amount in (
            ("max_bytes", quota.max_bytes, used.bytes),
            ("max_records", quota.max_records, used.records),
            ("max_keys", quota.max_keys, used.keys),
        )
        if maximum is not None and amount >= maximum
    ]


def _cmd_quota(args: argparse.Namespace) -> int:
    namespace: str = args.namespace
    with _open_quota_backend(args.url, namespace, args.catalog) as backend:
        if args.quota_command == "show":
            sys.stdout.write(_quota_line(namespace, backend.quota(namespace, fresh=True)))
            return EXIT_OK
        if args.quota_command == "clear":
            if backend.quota(namespace, fresh=True) is None:
                sys.stdout.write(f"namespace {namespace!r}: no quota to clear, no limits\n")
            else:
                backend.set_quota(namespace, None)
                sys.stdout.write(f"namespace {namespace!r}: quota cleared, no limits\n")
            return EXIT_OK
        given = {
            name: getattr(args, name)
            for name in (*_BYTE_LIMITS, *_COUNT_LIMITS, "retention")
            if getattr(args, name) is not None
        }
        if not given:
            raise InvalidArgument(
                "quota set needs at least one limit option (see 'gotstate-persist quota set "
                "--help'); 'gotstate-persist quota clear' removes the quota"
            )
        base = Quota() if args.replace else backend.quota(namespace, fresh=True) or Quota()
        fields = msgspec.structs.asdict(base)
        fields.update({k: None if v == _NO_LIMIT else v for k, v in given.items()})
        quota = Quota(**fields)
        if "retention" in given and quota.max_versions_per_key is None:
            raise InvalidArgument(
                "--retention applies to --max-versions-per-key, which is not set; give "
                "--max-versions-per-key N as well"
            )
        backend.set_quota(namespace, quota)
        stored = backend.quota(namespace, fresh=True)
        reached = _over_limits(backend, namespace, quota)
    sys.stdout.write(_quota_line(namespace, stored))
    if reached:
        sys.stderr.write(
            f"gotstate-persist: warning: namespace {namespace!r} already reaches "
            f"{', '.join(reached)}: writes that need more are refused; nothing was deleted\n"
        )
    return EXIT_OK


def _cmd_db(args: argparse.Namespace) -> int:
    from . import migrations

    if args.db_command == "history":
        for revision in migrations.REVISIONS:
            marker = " (head)" if revision == migrations.HEAD_REVISION else ""
            sys.stdout.write(f"{revision}{marker}\n")
        return EXIT_OK
    if args.url.split(":", 1)[0].split("+", 1)[0] not in _SQL_SCHEMES:
        raise InvalidArgument("db commands apply to SQL stores (sqlite:///..., postgresql://...)")
    _refuse_process_local(args.url, _READ_IN_NEW_PROCESS)  # a schema nobody could use
    if args.db_command == "upgrade":
        upgraded = migrations.upgrade(args.url)
        sys.stdout.write(f"schema at {upgraded} (head {migrations.HEAD_REVISION})\n")
        return EXIT_OK
    _check_existing_sqlite(args.url)
    if args.db_command == "check":
        migrations.check(args.url)  # raises (exit 1) unless the schema is the head
        sys.stdout.write(f"schema at {migrations.HEAD_REVISION} (head): up to date\n")
        return EXIT_OK
    found = migrations.current(args.url)
    if found is None:
        raise NotFound(f"{mask_url(args.url)} holds no gotstate-persist store; check the URL")
    sys.stdout.write(f"{found}\n")
    return EXIT_OK


def _catalog_option(
    parser: argparse.ArgumentParser,
    *,
    help_text: str = "the object store's SQL catalog, if it was opened with one",
) -> None:
    parser.add_argument("--catalog", metavar="SQL_URL", help=help_text)


def _cmd_gc(args: argparse.Namespace) -> int:
    with _open_existing(args.url, args.catalog) as backend:
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


class _Parser(argparse.ArgumentParser):
    """argparse's parser, whose usage errors quote arguments: URLs among them are masked."""

    def error(self, message: str) -> NoReturn:
        super().error(printable(scrub(message)))  # arguments may hold terminal escapes too


def _parser() -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = _Parser(
        prog="gotstate-persist",
        description="Inspect and verify gotstate-persist stores.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    keys_cmd = commands.add_parser("keys", help="manage keyrings: generate, rotate, retire")
    keys_sub = keys_cmd.add_subparsers(dest="keys_command", required=True)
    _add_keys_commands(keys_sub, count_key_ids=_count_key_ids)

    def store_command(
        name: str, help_text: str, *, needs_keys: bool, scope: NamespaceScope = "all"
    ) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text)
        sub.add_argument("url", help="store URL, e.g. sqlite:///state.db")
        namespace_options(sub, scope=scope)
        _catalog_option(sub)
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

    show = store_command("show", "decode and print one record", needs_keys=True, scope="one")
    show.add_argument("key")
    show.add_argument("--version", type=int, help="version to show (default: newest)")
    show.set_defaults(func=_cmd_show)

    verify = store_command("verify", "authenticate every stored record", needs_keys=True)
    verify.set_defaults(func=_cmd_verify)

    copy = commands.add_parser(
        "copy", help="copy every version of every key to another store (resumable)"
    )
    copy.add_argument("source", help="store URL to copy from")
    copy.add_argument("destination", help="store URL to copy to (not memory://)")
    namespace_options(copy, scope="choose")
    _catalog_option(copy, help_text="the source object store's SQL catalog, if it has one")
    copy.add_argument(
        "--to-catalog",
        metavar="SQL_URL",
        help="keep the destination object store's versions in this SQL catalog",
    )
    copy.add_argument(
        "--keys", metavar="FILE", help=f"exported keyring file (default: ${DEFAULT_ENV_VAR})"
    )
    copy.set_defaults(func=_cmd_copy)

    usage = store_command(
        "usage", "print stored bytes, records and keys per namespace", needs_keys=False
    )
    usage.add_argument(
        "--recount",
        action="store_true",
        help="count from the stored data and repair the kept counters (a write)",
    )
    usage.set_defaults(func=_cmd_usage)

    quota = commands.add_parser("quota", help="show, set or clear a namespace's quota")
    quota_sub = quota.add_subparsers(dest="quota_command", required=True)
    quota_commands: dict[str, argparse.ArgumentParser] = {}
    for name, text in (
        ("show", "print the quota in force"),
        ("set", "change limits: the options given replace those limits, the others are kept"),
        ("clear", "remove every limit"),
    ):
        sub = quota_sub.add_parser(name, help=text, description=text)
        sub.add_argument("url", help="store URL, e.g. sqlite:///state.db")
        sub.add_argument(
            "--namespace", required=True, type=namespace_option, help="the namespace (required)"
        )
        _catalog_option(sub)
        sub.set_defaults(func=_cmd_quota)
        quota_commands[name] = sub
    quota_set = quota_commands["set"]
    for field in (*_BYTE_LIMITS, *_COUNT_LIMITS):
        in_bytes = field in _BYTE_LIMITS
        quota_set.add_argument(
            "--" + field.replace("_", "-"),
            dest=field,
            metavar="SIZE" if in_bytes else "N",
            type=_size_option if in_bytes else _count_option,
            help=(
                "bytes, or with a unit: 50MB, 64KiB; 'none' removes the limit"
                if in_bytes
                else "a whole number; 'none' removes the limit"
            ),
        )
    quota_set.add_argument(
        "--retention",
        choices=RETENTIONS,
        help="what a save over --max-versions-per-key does: refuse it, or delete the oldest",
    )
    quota_set.add_argument(
        "--replace",
        action="store_true",
        help="start from no limits instead of keeping the limits not given",
    )

    migrate = store_command(
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
    gc.add_argument("--catalog", metavar="SQL_URL", help="its SQL catalog, if it has one")
    namespace_options(gc, scope="all")
    gc.add_argument(
        "--older-than",
        type=seconds_option,
        default=STALE_RESERVATION_SECONDS,
        metavar="SECONDS",
        help=f"settle reservations older than this (default {STALE_RESERVATION_SECONDS})",
    )
    gc.set_defaults(func=_cmd_gc)

    db = commands.add_parser("db", help="SQL schema: current revision, upgrade, history")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    for name, text in (
        ("current", "print the schema revision of a database"),
        ("upgrade", "upgrade (or create) the schema to this version's head revision"),
        ("check", "exit 0 if the schema is this version's head, else 1 with the reason"),
    ):
        sub = db_sub.add_parser(name, help=text)
        sub.add_argument("url", help="SQL store URL, e.g. sqlite:///state.db")
        sub.set_defaults(func=_cmd_db)
    history = db_sub.add_parser("history", help="list the schema revisions this version knows")
    history.set_defaults(func=_cmd_db)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # argparse printed the usage error (or --help)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    # Messages may quote stored names (escaped, one line); any URL in them is
    # masked once more here, whoever built the message.
    try:
        status: int = args.func(args)
        sys.stdout.flush()  # a closed pipe shows here, not at interpreter exit
    except BrokenPipeError:
        return _reader_went_away()
    except KeyboardInterrupt:
        sys.stderr.write(
            "gotstate-persist: interrupted; every record is written whole or not at all, "
            "so running the command again finishes the job\n"
        )
        return EXIT_INTERRUPTED
    except InvalidArgument as exc:
        sys.stderr.write(f"gotstate-persist: {printable(scrub(str(exc)))}\n")
        return EXIT_USAGE
    except PersistError as exc:
        message = printable(scrub(str(exc)))
        sys.stderr.write(f"gotstate-persist: {type(exc).__name__}: {message}\n")
        return EXIT_FAILED
    return status


def _reader_went_away() -> int:
    """``| head`` closed stdout: stop quietly, as Unix tools do, with no traceback at exit."""
    with contextlib.suppress(OSError, ValueError):  # e.g. stdout replaced by a test
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    return EXIT_FAILED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
