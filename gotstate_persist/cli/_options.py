"""Option types, namespace scopes and shared options of the ``gotstate-persist`` command.

Every option value is checked by argparse before anything is opened, so a bad
value is one usage line (exit status 2), never a traceback or a half-done
run. The namespace options carry one rule: an empty, over-long or
control-character ``--namespace`` is an error, and acting on every namespace
is never a fallback for a missing name: read-only commands default to every
namespace, commands that rewrite or copy records need ``--namespace`` or
``--all-namespaces``.

The options several command groups take (a store URL, ``--catalog``,
``--keys``) are declared here once, so the same option reads the same in
every command's help.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from typing import Any, Literal, Protocol

from .._names import DEFAULT_NAMESPACE, check_name
from ..backends import Backend
from ..errors import InvalidArgument
from ..sealing import DEFAULT_ENV_VAR

__all__ = [
    "MAX_OLDER_THAN_S",
    "NAMED_NAMESPACES",
    "NamespaceScope",
    "Subcommands",
    "batch_size_option",
    "catalog_option",
    "keys_option",
    "namespace_option",
    "namespace_options",
    "note_other_namespaces",
    "seconds_option",
    "selected_namespaces",
    "store_command",
]


class Subcommands(Protocol):
    """What ``add_subparsers()`` returns, as a command group uses it: one parser per command."""

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser: ...


def selected_namespaces(backend: Backend, args: argparse.Namespace) -> list[str]:
    """The namespaces a command acts on: the one of ``--namespace``, or every one."""
    if args.namespace is None or getattr(args, "all_namespaces", False):
        return backend.namespaces()
    return [args.namespace]


#: How many other namespaces a note names before it says "and N more".
NAMED_NAMESPACES = 5


def note_other_namespaces(backend: Backend, args: argparse.Namespace, verb: str) -> None:
    """Say on stderr which namespaces a one-namespace run left out (a forgotten option)."""
    if args.namespace is None or getattr(args, "all_namespaces", False):
        return
    others = [name for name in backend.namespaces() if name != args.namespace]
    if not others:
        return
    named = ", ".join(repr(name) for name in others[:NAMED_NAMESPACES])
    more = len(others) - NAMED_NAMESPACES
    named += f" and {more} more" if more > 0 else ""
    sys.stderr.write(
        f"gotstate-persist: note: only namespace {args.namespace!r} was {verb}; the store "
        f"also has {named}: pass --namespace NAME or --all-namespaces\n"
    )


#: The largest ``gc --older-than``: a century, far past any reservation's life,
#: and small enough that the cutoff stays a valid timestamp.
MAX_OLDER_THAN_S = 100 * 365 * 24 * 3600


def seconds_option(text: str) -> float:
    """``--older-than``: a finite number of seconds in 0..:data:`MAX_OLDER_THAN_S`."""
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or not 0 <= seconds <= MAX_OLDER_THAN_S:
        raise argparse.ArgumentTypeError(
            f"invalid number of seconds {text!r}: use a number from 0 to {MAX_OLDER_THAN_S}"
        )
    return seconds


def batch_size_option(text: str) -> int:
    """``--batch-size``: a whole number >= 1, checked before any store is opened."""
    if not re.fullmatch(r"[0-9]+", text.strip()) or int(text) < 1:
        raise argparse.ArgumentTypeError(f"invalid batch size {text!r}: use a whole number >= 1")
    return int(text)


def namespace_option(text: str) -> str:
    """``--namespace``: a valid namespace, never empty (an unset shell variable)."""
    try:
        return check_name(text, "namespace")
    except InvalidArgument as exc:
        hint = " (is the shell variable meant to name it unset?)" if not text else ""
        raise argparse.ArgumentTypeError(f"{exc}{hint}") from None


#: ``--namespace`` scopes: ``one`` reads one record (default ``default``, as
#: ``open_store``); ``all`` inspects (default: every namespace); ``choose``
#: rewrites or copies records, so the operator must say which namespaces.
NamespaceScope = Literal["one", "all", "choose"]


_NAMESPACE_HELP: dict[str, str] = {
    "one": f"the namespace (default: {DEFAULT_NAMESPACE})",
    "all": "only this namespace (default: every namespace)",
    "choose": "the namespace to act on (this or --all-namespaces is required)",
}


def namespace_options(parser: argparse.ArgumentParser, *, scope: NamespaceScope) -> None:
    """``--namespace NAME`` and, unless one record is read, ``-A/--all-namespaces``.

    Acting on every namespace is never what an empty name (an unset shell
    variable) means: the name is refused, and commands that write take
    every namespace only with the explicit flag.
    """
    group = parser.add_mutually_exclusive_group(required=scope == "choose")
    group.add_argument(
        "--namespace",
        type=namespace_option,
        default=DEFAULT_NAMESPACE if scope == "one" else None,
        metavar="NAME",
        help=_NAMESPACE_HELP[scope],
    )
    if scope != "one":
        group.add_argument(
            "-A", "--all-namespaces", action="store_true", help="every namespace of the store"
        )


def catalog_option(
    parser: argparse.ArgumentParser,
    *,
    help_text: str = "the object store's SQL catalog, if it was opened with one",
) -> None:
    parser.add_argument("--catalog", metavar="SQL_URL", help=help_text)


def keys_option(parser: argparse.ArgumentParser) -> None:
    """``--keys FILE``: the exported keyring, when not in the environment."""
    parser.add_argument(
        "--keys",
        metavar="FILE",
        help=f"exported keyring file (default: ${DEFAULT_ENV_VAR})",
    )


def store_command(
    commands: Subcommands,
    name: str,
    help_text: str,
    *,
    needs_keys: bool,
    scope: NamespaceScope = "all",
) -> argparse.ArgumentParser:
    """A command on one store: its URL, its namespace options, ``--catalog``, maybe ``--keys``."""
    sub = commands.add_parser(name, help=help_text)
    sub.add_argument("url", help="store URL, e.g. sqlite:///state.db")
    namespace_options(sub, scope=scope)
    catalog_option(sub)
    if needs_keys:
        keys_option(sub)
    return sub
