"""``ext ls|show|history|register|activate|deactivate|unregister|verify|doctor``.

The extension registry of a namespace, from the command line. Registrations
are sealed records, so every command but ``doctor`` needs the keyring
(``--keys FILE`` or ``$GOTSTATE_PERSIST_KEYS``). ``ls``, ``show``,
``history`` and ``verify`` only decode records and hash files: they import
no extension code, so they are safe to run on a registry whose code nobody
has reviewed. ``register`` checks its target in a throwaway worker process,
never in this one; ``activate`` runs the extension in this process only
until the command exits (useful to check that it starts, and to set the
persisted status).

Writes go through the quota adapter like every other write, so a
registration counts toward its namespace's quota. Everything read from the
store or the disk (targets, reasons, file names) is escaped before it
reaches the terminal; how a registration or a doctor report is laid out is
``_extview``'s.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Callable, Iterator
from typing import Any

from .._names import printable
from .._pipeline import RecordPipeline
from ..backends import Backend
from ..errors import (
    ExtensionCodeChanged,
    ExtensionInvalid,
    NotFound,
    PersistError,
    VersionConflict,
)
from ..extensions import ExtensionRegistry, Registration
from ..extensions._doctor import diagnose
from ..formats.extension import ISOLATIONS
from ..quota import QuotaBackend
from ._extoptions import (
    add_limit_options,
    add_worker_prefix,
    limits_from,
    revision_option,
)
from ._extview import (
    counted,
    doctor_lines,
    drift_lines,
    history_rows,
    listing_row,
    registration_json,
    show_rows,
    write_table,
)
from ._jsondoc import fields_json, json_flag, write_document
from ._keyring import load_keyring
from ._options import (
    Subcommands,
    note_other_namespaces,
    seconds_option,
    selected_namespaces,
    store_command,
)
from ._output import EXIT_FAILED, EXIT_OK, with_option_advice
from ._stores import open_existing

__all__ = ["add_commands"]

# Opening registries.


@contextlib.contextmanager
def _registries(
    args: argparse.Namespace,
) -> Iterator[tuple[Backend, Callable[[str], ExtensionRegistry]]]:
    """The store of ``args.url`` and a registry per namespace; every worker stopped on exit."""
    keys = load_keyring(args.keys)
    prefix = getattr(args, "worker_prefix", ())
    opened: list[ExtensionRegistry] = []
    with open_existing(args.url, args.catalog) as backend:
        adapter = QuotaBackend(backend)  # writes count toward the namespace's quota

        def registry(namespace: str) -> ExtensionRegistry:
            pipeline = RecordPipeline(adapter, keyring=keys, namespace=namespace)
            found = ExtensionRegistry(pipeline, worker_prefix=prefix)
            opened.append(found)
            return found

        try:
            yield backend, registry
        finally:
            for found in opened:
                found.close()


def _failed_namespace(namespace: str, exc: PersistError) -> None:
    message = printable(str(exc))
    sys.stderr.write(
        f"gotstate-persist: namespace {printable(namespace)!r}: {type(exc).__name__}: {message}\n"
    )


# Reading (no extension code is imported).


def _cmd_ls(args: argparse.Namespace) -> int:
    rows: list[list[str]] = []
    listed: list[dict[str, Any]] = []
    status = EXIT_OK
    with _registries(args) as (backend, registry):
        for namespace in selected_namespaces(backend, args):
            try:
                found = registry(namespace).list(include_unregistered=args.all)
            except PersistError as exc:
                _failed_namespace(namespace, exc)
                status = EXIT_FAILED
                continue
            rows.extend(listing_row(namespace, reg) for reg in found)
            listed.extend(registration_json(namespace, reg) for reg in found)
        if not rows:
            note_other_namespaces(backend, args, "listed")
    if args.json:
        write_document("ext ls", extensions=listed)
        return status
    if not rows:
        sys.stdout.write("(no extensions)\n")
        return status
    header = ["NAMESPACE", "NAME", "VERSION", "CATEGORY", "ISOLATION", "STATUS", "REVISION"]
    write_table([*header, "CHANGED (UTC)", "REASON"], rows, sys.stdout)
    return status


def _chosen(registry: ExtensionRegistry, name: str, revision: int | None) -> Registration:
    if revision is None:
        return registry.get(name)
    for reg in registry.history(name):
        if reg.revision == revision:
            return reg
    raise _no_revision(name, revision)


def _no_revision(name: str, revision: int) -> PersistError:
    return NotFound(
        f"extension {name!r} has no revision {revision}; 'gotstate-persist ext history' "
        "lists its revisions"
    )


def _cmd_show(args: argparse.Namespace) -> int:
    with _registries(args) as (_backend, registry):
        reg = _chosen(registry(args.namespace), args.name, args.revision)
    if args.json:
        write_document("ext show", registration=registration_json(args.namespace, reg))
        return EXIT_OK
    write_table(["FIELD", "VALUE"], show_rows(args.namespace, reg, files=args.files), sys.stdout)
    return EXIT_OK


def _cmd_history(args: argparse.Namespace) -> int:
    with _registries(args) as (_backend, registry):
        revisions = registry(args.namespace).history(args.name)
    if args.json:
        shown = [registration_json(args.namespace, reg) for reg in revisions]
        write_document("ext history", namespace=args.namespace, name=args.name, revisions=shown)
        return EXIT_OK
    header = ["REVISION", "CHANGED (UTC)", "STATUS", "VERSION", "REASON"]
    write_table(header, history_rows(revisions), sys.stdout)
    return EXIT_OK


def _cmd_verify(args: argparse.Namespace) -> int:
    checked = changed = 0
    listed: list[dict[str, Any]] = []
    status = EXIT_OK
    with _registries(args) as (backend, registry):
        for namespace in selected_namespaces(backend, args):
            try:
                exts = registry(namespace)
                drifts = exts.verify()
                found = {reg.name: reg for reg in exts.list()}
            except PersistError as exc:
                _failed_namespace(namespace, exc)
                status = EXIT_FAILED
                continue
            for name, drift in sorted(drifts.items()):
                checked += 1
                changed += not drift.clean
                listed.append({"namespace": namespace, "name": name, **fields_json(drift)})
                if not args.json:
                    for line in drift_lines(namespace, found.get(name), name, drift):
                        sys.stdout.write(line + "\n")
        note_other_namespaces(backend, args, "verified")
    if args.json:
        write_document("ext verify", checked=checked, matching=checked - changed, extensions=listed)
        return EXIT_FAILED if changed else status
    sys.stdout.write(
        f"{checked - changed} of {checked} extensions match their pinned code, {changed} changed\n"
    )
    return EXIT_FAILED if changed else status


# Changing registrations.


@contextlib.contextmanager
def _command_line_advice() -> Iterator[None]:
    """Re-raise the API's advice (``expected_version=``...) with the command's options added."""
    try:
        yield
    except VersionConflict as exc:
        advised = with_option_advice(exc)
        if advised is exc:
            raise
        raise advised from exc
    except ExtensionCodeChanged as exc:
        raise ExtensionCodeChanged(
            f"{exc} (on the command line: 'ext register URL TARGET --expected-version N' with "
            "the revision 'ext history' shows)",
            changed=exc.changed,
            added=exc.added,
            removed=exc.removed,
        ) from exc
    except ExtensionInvalid as exc:
        if not any("allow_major=True" in problem for problem in exc.problems):
            raise
        raise ExtensionInvalid(
            f"{exc} (on the command line: --allow-major)", problems=exc.problems
        ) from exc


def _cmd_register(args: argparse.Namespace) -> int:
    limits = limits_from(args)
    with _registries(args) as (_backend, registry), _command_line_advice():
        reg = registry(args.namespace).register(
            args.target,
            limits=limits,
            isolation=args.isolation,
            expected_version=args.expected_version,
            allow_major=args.allow_major,
        )
    if args.json:
        _write_registration("ext register", args.namespace, reg, written=True)
        return EXIT_OK
    upgrade = f" ({printable(reg.reason)})" if reg.reason != "registered" else ""
    sys.stdout.write(
        f"registered {printable(reg.name)} {printable(reg.version)} ({reg.category}, "
        f"{reg.isolation}) as revision {reg.revision} in namespace {args.namespace!r}{upgrade}; "
        f"{counted(len(reg.files), 'file')} pinned, code sha256 {reg.code_sha256}\n"
    )
    return EXIT_OK


def _cmd_activate(args: argparse.Namespace) -> int:
    with _registries(args) as (_backend, registry), _command_line_advice():
        exts = registry(args.namespace)
        before = exts.get(args.name)
        reg = exts.activate(args.name, expected_version=args.expected_version).registration
    if args.json:
        written = reg.revision != before.revision
        _write_registration("ext activate", args.namespace, reg, written=written)
        return EXIT_OK
    runner = "worker" if reg.isolation == "worker" else "guarded runner"
    persisted = (
        "the persisted status was already 'active': nothing was written"
        if reg.revision == before.revision
        else "the persisted status stays 'active' until 'ext deactivate'"
    )
    sys.stdout.write(
        f"activated {printable(reg.name)} (revision {reg.revision}): its {runner} started. "
        f"This command now exits, which stops it; {persisted}\n"
    )
    return EXIT_OK


def _cmd_deactivate(args: argparse.Namespace) -> int:
    with _registries(args) as (_backend, registry), _command_line_advice():
        exts = registry(args.namespace)
        before = exts.get(args.name).revision
        reg = exts.deactivate(
            args.name, timeout=args.timeout, expected_version=args.expected_version
        )
    _write_change(args, "ext deactivate", reg, before)
    return EXIT_OK


def _cmd_unregister(args: argparse.Namespace) -> int:
    with _registries(args) as (_backend, registry), _command_line_advice():
        exts = registry(args.namespace)
        before = exts.get(args.name).revision
        reg = exts.unregister(args.name, expected_version=args.expected_version)
    _write_change(args, "ext unregister", reg, before)
    return EXIT_OK


def _write_registration(command: str, namespace: str, reg: Registration, *, written: bool) -> None:
    """A changing command's document: whether it wrote a revision, and the registration now."""
    write_document(command, written=written, registration=registration_json(namespace, reg))


def _write_change(args: argparse.Namespace, command: str, reg: Registration, before: int) -> None:
    if args.json:
        _write_registration(command, args.namespace, reg, written=reg.revision != before)
        return
    name = printable(reg.name)
    if reg.revision == before:
        sys.stdout.write(
            f"{name} was already {reg.status} (revision {reg.revision}); nothing was written\n"
        )
        return
    sys.stdout.write(
        f"{name} is now {reg.status} (revision {reg.revision}): {printable(reg.reason)}\n"
    )


def _cmd_doctor(args: argparse.Namespace) -> int:
    report = diagnose(args.worker_prefix)
    if args.json:
        write_document("ext doctor", report=fields_json(report))
        return EXIT_FAILED if report.prefix.words and not report.prefix.found else EXIT_OK
    for line in doctor_lines(report):
        sys.stdout.write(line + "\n")
    return EXIT_FAILED if report.prefix.words and not report.prefix.found else EXIT_OK


# The parsers.


def _add_name_command(
    ext: Subcommands, name: str, help_text: str, *, expected: bool = True
) -> argparse.ArgumentParser:
    sub = store_command(ext, name, help_text, needs_keys=True, scope="one")
    sub.add_argument("name", help="the extension's name")
    if expected:
        sub.add_argument(
            "--expected-version",
            type=revision_option,
            metavar="N",
            help="refuse (and write nothing) unless the registration is at revision N",
        )
    return sub


def add_commands(commands: Subcommands) -> None:
    """Add ``ext`` and its subcommands."""
    ext = commands.add_parser("ext", help="list, inspect, register and run extensions")
    sub = ext.add_subparsers(dest="ext_command", required=True)

    ls = store_command(
        sub, "ls", "list registered extensions (imports no extension code)", needs_keys=True
    )
    ls.add_argument("--all", action="store_true", help="also list unregistered extensions")
    json_flag(ls)
    ls.set_defaults(func=_cmd_ls)

    show = _add_name_command(
        sub, "show", "every field of a registration (imports no extension code)", expected=False
    )
    show.add_argument("--revision", type=revision_option, metavar="N", help="default: newest")
    show.add_argument("--files", action="store_true", help="also list every pinned file")
    json_flag(show)
    show.set_defaults(func=_cmd_show)

    history = _add_name_command(
        sub, "history", "one line per revision (imports no extension code)", expected=False
    )
    json_flag(history)
    history.set_defaults(func=_cmd_history)

    register = store_command(
        sub,
        "register",
        "check a target in a throwaway worker and register it (a new revision)",
        needs_keys=True,
        scope="one",
    )
    register.add_argument(
        "target",
        help="'module:Class', 'path/to/file.py:Class', 'path/to/pkgdir:Class' or an "
        "entry-point name",
    )
    register.add_argument("--isolation", choices=ISOLATIONS, help="default: by category")
    register.add_argument(
        "--expected-version",
        type=revision_option,
        default=0,
        metavar="N",
        help="the current revision when upgrading or re-registering (default 0: a new name)",
    )
    register.add_argument(
        "--allow-major", action="store_true", help="allow an upgrade to a new MAJOR version"
    )
    add_worker_prefix(register)
    add_limit_options(register)
    json_flag(register)
    register.set_defaults(func=_cmd_register)

    activate = _add_name_command(
        sub,
        "activate",
        "start it in this command to check that it starts, and persist status 'active' "
        "(the command then exits, stopping its workers; applications activate their own)",
    )
    add_worker_prefix(activate)
    json_flag(activate)
    activate.set_defaults(func=_cmd_activate)

    deactivate = _add_name_command(
        sub,
        "deactivate",
        "persist status 'inactive' (processes running it keep doing so until they "
        "deactivate it or exit: each process owns its own workers)",
    )
    deactivate.add_argument(
        "--timeout",
        type=seconds_option,
        default=5.0,
        metavar="S",
        help="seconds to drain and stop what this command itself runs (default 5)",
    )
    json_flag(deactivate)
    deactivate.set_defaults(func=_cmd_deactivate)

    unregister = _add_name_command(
        sub, "unregister", "mark it unregistered (its history stays readable)"
    )
    json_flag(unregister)
    unregister.set_defaults(func=_cmd_unregister)

    verify = store_command(
        sub,
        "verify",
        "re-hash every registration's files; exit 1 naming what changed",
        needs_keys=True,
    )
    json_flag(verify)
    verify.set_defaults(func=_cmd_verify)

    doctor = sub.add_parser(
        "doctor", help="which containment layers this host gives extension workers"
    )
    add_worker_prefix(doctor)
    json_flag(doctor)
    doctor.set_defaults(func=_cmd_doctor)
