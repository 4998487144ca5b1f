"""``usage`` and ``quota``: what a namespace holds, and the limits on what it may hold.

Both work at the backend level and need no keyring: sizes and counts are
read without opening a record. Limits are parsed here, with their units
(50MB, 64KiB) and the word ``none`` that removes one, so a bad limit is a
usage error before the store is touched. A backend without exact shared
counters (object stores) is always measured from its stored data.
"""

from __future__ import annotations

import argparse
import re
import sys
from decimal import Decimal
from typing import Any, Literal

import msgspec

from .._names import check_name, printable
from .._typedjson import typed_json
from ..backends import Usage
from ..errors import InvalidArgument
from ..quota import RETENTIONS, Quota, QuotaBackend
from ._jsondoc import json_flag, write_document
from ._options import (
    Subcommands,
    catalog_option,
    namespace_option,
    selected_namespaces,
    store_command,
)
from ._output import EXIT_OK, print_table
from ._stores import open_existing

__all__ = ["LimitValue", "add_commands", "human_size", "size_option"]

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


def size_option(text: str) -> LimitValue:
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


def human_size(size: int) -> str:
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
    return QuotaBackend(open_existing(url, catalog))


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


def _usage_json(namespace: str, used: Usage, quota: Quota | None, *, recount: bool) -> Any:
    """One namespace of ``usage --json``: its counts, the recount's drift, its quota's limits."""
    shown: dict[str, Any] = {
        "namespace": namespace,
        "bytes": used.bytes,
        "records": used.records,
        "keys": used.keys,
    }
    drift = used.drift if recount else None  # only a recount finds any
    shown["drift"] = (
        None
        if drift is None
        else {"bytes": drift.bytes, "records": drift.records, "keys": drift.keys}
    )
    shown["quota"] = None if quota is None else typed_json(msgspec.structs.asdict(quota))
    return shown


def _cmd_usage(args: argparse.Namespace) -> int:
    with _open_quota_backend(args.url, args.namespace, args.catalog) as backend:
        header = ["NAMESPACE", "BYTES", "SIZE", "RECORDS", "KEYS"]
        header += ["DRIFT", "QUOTA"] if args.recount else ["QUOTA"]
        rows = [header]
        repaired = 0
        listed: list[dict[str, Any]] = []
        names = selected_namespaces(backend, args)
        for namespace in names:
            used = _measure(backend, namespace, recount=args.recount)
            quota = backend.quota(namespace, fresh=True)
            listed.append(_usage_json(namespace, used, quota, recount=args.recount))
            row = [printable(namespace), str(used.bytes), human_size(used.bytes)]
            row += [str(used.records), str(used.keys)]
            if args.recount:
                row.append(_drift_text(used.drift))
                repaired += used.drift is not None
            row.append(_describe(quota))
            rows.append(row)
        exact = backend.capabilities.exact_quota
    if args.json:
        write_document("usage", recounted=args.recount, exact_counters=exact, namespaces=listed)
        return EXIT_OK
    if not names:
        sys.stdout.write("(no namespaces)\n")
        return EXIT_OK
    print_table(rows, sys.stdout)
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


def add_commands(commands: Subcommands) -> None:
    """Add ``usage`` and ``quota show|set|clear``."""
    usage = store_command(
        commands,
        "usage",
        "print stored bytes, records and keys per namespace",
        needs_keys=False,
    )
    usage.add_argument(
        "--recount",
        action="store_true",
        help="count from the stored data and repair the kept counters (a write)",
    )
    json_flag(usage)
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
        catalog_option(sub)
        sub.set_defaults(func=_cmd_quota)
        quota_commands[name] = sub
    quota_set = quota_commands["set"]
    for field in (*_BYTE_LIMITS, *_COUNT_LIMITS):
        in_bytes = field in _BYTE_LIMITS
        quota_set.add_argument(
            "--" + field.replace("_", "-"),
            dest=field,
            metavar="SIZE" if in_bytes else "N",
            type=size_option if in_bytes else _count_option,
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
