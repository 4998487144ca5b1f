"""Option types and namespace scopes of the ``gotstate-persist`` command.

Every option value is checked by argparse before anything is opened, so a bad
value is one usage line (exit status 2), never a traceback or a half-done
run. The namespace options carry one rule: an empty, over-long or
control-character ``--namespace`` is an error, and acting on every namespace
is never a fallback for a missing name: read-only commands default to every
namespace, commands that rewrite or copy records need ``--namespace`` or
``--all-namespaces``.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from typing import Literal

from ._names import DEFAULT_NAMESPACE, check_name
from .backends import Backend
from .errors import InvalidArgument

__all__ = [
    "MAX_OLDER_THAN_S",
    "NAMED_NAMESPACES",
    "NamespaceScope",
    "batch_size_option",
    "namespace_option",
    "namespace_options",
    "note_other_namespaces",
    "seconds_option",
    "selected_namespaces",
    "terminal_safe_json",
]


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


def terminal_safe_json(text: str) -> str:
    """JSON text with every non-printable character as a ``\\u`` escape (still valid JSON).

    ``ensure_ascii=False`` keeps non-ASCII text readable but passes C1
    controls, bidi overrides and the like straight to the terminal.
    """
    if text.replace("\n", "").isprintable():
        return text
    return "".join(
        char if char == "\n" or char.isprintable() else _json_escape(char) for char in text
    )


def _json_escape(char: str) -> str:
    code = ord(char)
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    code -= 0x10000  # a UTF-16 surrogate pair, as JSON spells characters past the BMP
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"


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
