"""The options of ``ext register`` and its siblings: revisions, worker prefixes, resource limits.

One option per :class:`~gotstate_persist.ResourceLimits` field, named after
the field (``--timeout-s``, ``--memory-bytes``; argparse also takes an
unambiguous prefix such as ``--memory``) and typed by its name: ``*_bytes``
take sizes with units as ``quota set`` does (50MB, 1GiB), ``*_s`` take
seconds, the rest whole numbers; ``none`` removes a limit only where the
field may be unlimited. Values are checked by argparse before any store is
opened; a limit not given keeps the ``ResourceLimits`` default.
"""

from __future__ import annotations

import argparse
import math
import re
import shlex
import typing
from collections.abc import Callable

import msgspec

from ..extensions import ResourceLimits
from ._quota import human_size, size_option

__all__ = [
    "add_limit_options",
    "add_worker_prefix",
    "limits_from",
    "prefix_option",
    "revision_option",
]

#: What each ``ResourceLimits`` field means, for ``ext register --help``.
_LIMIT_HELP = {
    "timeout_s": "wall-clock seconds per call",
    "start_timeout_s": "seconds a worker may take to start",
    "cpu_s": "CPU seconds per call (worker only)",
    "memory_bytes": "address space of a worker, RLIMIT_AS (numpy-class libraries need >= 1GiB)",
    "max_input_bytes": "largest encoded input of a call",
    "max_output_bytes": "largest encoded output of a call",
    "max_events": "most events a processor may fan out to",
    "max_concurrency": "calls at once (threads or workers)",
    "max_queue": "calls waiting beyond max_concurrency (0: none)",
    "rate_per_s": "calls per second, per process",
    "burst": "calls allowed at once within the rate (needs --rate-per-s)",
    "max_failures": "consecutive failures that open the circuit",
    "file_size_bytes": "largest file a worker may write, RLIMIT_FSIZE",
    "open_files": "open file descriptors of a worker, RLIMIT_NOFILE",
}
_NONE = "none"
#: The default of a limit option that was not given (``None`` means "no limit").
_UNSET = object()


def revision_option(text: str) -> int:
    """``--expected-version``: the revision the change is based on (0 for a new name)."""
    if not re.fullmatch(r"[0-9]{1,18}", text.strip()):
        raise argparse.ArgumentTypeError(
            f"invalid revision {text!r}: use a whole number >= 0 (see 'ext history')"
        )
    return int(text)


def prefix_option(text: str) -> tuple[str, ...]:
    """``--worker-prefix``: a command line, split as a POSIX shell would."""
    try:
        return tuple(shlex.split(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"invalid worker prefix: {exc}") from None


def _optional(field: str) -> bool:
    info = next(f for f in msgspec.structs.fields(ResourceLimits) if f.name == field)
    return type(None) in typing.get_args(info.type)


def _limit_option(field: str) -> Callable[[str], object]:
    """The option type of one ``ResourceLimits`` field: a size, a number of seconds, a count."""
    optional = _optional(field)
    refused = f"--{field.replace('_', '-')} always has a limit: 'none' is not accepted"

    def parse(text: str) -> object:
        if text.strip().lower() == _NONE:
            if not optional:
                raise argparse.ArgumentTypeError(refused)
            return None
        if field.endswith("_bytes"):
            return size_option(text)  # 'none' was handled above
        if field.endswith("_s"):
            try:
                value = float(text)
            except ValueError:
                value = math.nan
            if not math.isfinite(value) or value <= 0:
                raise argparse.ArgumentTypeError(
                    f"invalid number {text!r}: use a positive number of seconds (or per second)"
                )
            return value
        if not re.fullmatch(r"[0-9]{1,18}", text.strip()):
            raise argparse.ArgumentTypeError(f"invalid number {text!r}: use a whole number")
        return int(text)

    return parse


def limits_from(args: argparse.Namespace) -> ResourceLimits | None:
    """The limits given on the command line (None: none given, the defaults apply)."""
    given = {
        field: getattr(args, f"limit_{field}")
        for field in ResourceLimits.__struct_fields__
        if getattr(args, f"limit_{field}") is not _UNSET
    }
    return ResourceLimits(**given) if given else None


def add_worker_prefix(sub: argparse.ArgumentParser) -> None:
    """``--worker-prefix COMMAND``: this process's sandbox policy (never persisted)."""
    sub.add_argument(
        "--worker-prefix",
        type=prefix_option,
        default=(),
        metavar="COMMAND",
        help="start workers inside this sandbox command, e.g. 'bwrap --unshare-pid ...' "
        "(split as a shell would)",
    )


def add_limit_options(sub: argparse.ArgumentParser) -> None:
    """One option per ``ResourceLimits`` field, in an argument group of its own."""
    defaults = ResourceLimits()
    limits = sub.add_argument_group("resource limits (default: the ResourceLimits default)")
    for field in ResourceLimits.__struct_fields__:
        default = getattr(defaults, field)
        shown = _NONE if default is None else default
        if field.endswith("_bytes") and isinstance(default, int):
            shown = human_size(default)
        unit = "SIZE" if field.endswith("_bytes") else "S" if field.endswith("_s") else "N"
        if field == "rate_per_s":
            unit = "RATE"
        limits.add_argument(
            "--" + field.replace("_", "-"),
            dest=f"limit_{field}",
            type=_limit_option(field),
            default=_UNSET,
            metavar=unit,
            help=f"{_LIMIT_HELP.get(field, field)} (default: {shown}"
            + ("; 'none': no limit)" if _optional(field) else ")"),
        )
