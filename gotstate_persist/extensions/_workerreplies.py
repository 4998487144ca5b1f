"""Turning what a worker said (or how it died) into the errors the caller sees.

Everything here reads untrusted input: a worker runs extension code, which
can write anything on the protocol socket. So replies are checked for shape,
names from the worker are reduced to short identifiers, reasons to short
printable text, and file names to the ones the host pinned itself. The
messages name the extension, the method and the exception type, never any
data the extension handled.
"""

from __future__ import annotations

import re
import signal
from typing import Any, Final

from ..errors import (
    ExtensionCodeChanged,
    ExtensionError,
    ExtensionFailed,
    ExtensionResourceError,
)
from ..formats.extension import ResourceLimits
from ._protocol import CODE_CHANGED, FAILED, RESOURCE, WorkerConfig

__all__ = [
    "death_error",
    "is_reply",
    "malformed",
    "reason_text",
    "resource_error",
    "start_refusal",
    "type_name",
]

_IDENTIFIER: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_.<>]{0,99}")
_MAX_REASON_CHARS: Final = 200
#: How a message tells where to look next, whatever went wrong in a worker.
_RESTARTS: Final = "it restarts on the next call"
_STAGES: Final = {
    "import": "importing its code raised",
    "instantiate": "instantiating its class raised",
    "configure": "configuring it with its settings (configure()) raised",
    "limits": "its worker could not lower its resource limits:",
}


def type_name(value: object) -> str:
    """An exception type name from a worker, or a placeholder when it is not one."""
    if type(value) is str and _IDENTIFIER.fullmatch(value):
        return value
    return "an exception of an unprintable type"


def reason_text(value: object) -> str:
    """Short, printable text from a worker (a WireError's reason)."""
    if type(value) is not str:
        return "no reason given"
    text = value[:_MAX_REASON_CHARS]
    return "".join(c if c.isprintable() else "?" for c in text)


def is_reply(reply: Any, tag: str, length: int) -> bool:
    """Whether ``reply`` is ``[tag, ...]`` with exactly ``length`` items."""
    return type(reply) is list and len(reply) == length and reply[0] == tag


def malformed(name: str, what: str) -> ExtensionFailed:
    return ExtensionFailed(
        f"extension {name!r}: its worker sent a malformed {what}; the worker was killed "
        f"and {_RESTARTS}",
        cause="invalid_output",
    )


def resource_error(name: str, limits: ResourceLimits, resource: str, during: str) -> ExtensionError:
    """The error for a worker that went over ``resource`` ``during`` something."""
    if resource == "memory_bytes":
        return ExtensionResourceError(
            f"extension {name!r} ran out of memory {during} (memory_bytes="
            f"{limits.memory_bytes}); its worker was restarted: raise memory_bytes or "
            "make the extension use less",
            resource="memory_bytes",
        )
    if resource == "max_output_bytes":
        return ExtensionResourceError(
            f"extension {name!r}: the result of {during} is over max_output_bytes "
            f"({limits.max_output_bytes} bytes) and was refused: return less, or raise "
            "max_output_bytes",
            resource="max_output_bytes",
        )
    if resource == "cpu_s":
        return ExtensionResourceError(
            f"extension {name!r} used more than cpu_s ({limits.cpu_s:g} s) of CPU {during}; "
            f"its worker was killed by SIGXCPU and {_RESTARTS}",
            resource="cpu_s",
        )
    return ExtensionResourceError(
        f"extension {name!r} wrote a file larger than file_size_bytes "
        f"({limits.file_size_bytes} bytes) {during}; its worker was killed by SIGXFSZ and "
        f"{_RESTARTS}",
        resource="file_size_bytes",
    )


def death_error(name: str, limits: ResourceLimits, code: int | None, during: str) -> ExtensionError:
    """The error for a worker that closed its channel ``during`` something, by exit status."""
    if code is None:
        return ExtensionFailed(
            f"extension {name!r}: its worker closed the protocol channel {during} but did "
            f"not exit; it was killed and {_RESTARTS}",
            cause="crashed",
        )
    if code < 0:
        if -code == signal.SIGXCPU and limits.cpu_s is not None:
            return resource_error(name, limits, "cpu_s", during)
        if -code == signal.SIGXFSZ and limits.file_size_bytes is not None:
            return resource_error(name, limits, "file_size_bytes", during)
        try:
            how = f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            how = f"was killed by signal {-code}"
    else:
        how = f"exited with code {code}"
    return ExtensionFailed(
        f"extension {name!r}: its worker {how} {during}; {_RESTARTS} (its output tail "
        "shows what it printed)",
        cause="crashed",
    )


def start_refusal(config: WorkerConfig, reply: Any) -> ExtensionError:
    """The error for a worker that answered its start with anything but ``ready``."""
    name = config.name
    if is_reply(reply, CODE_CHANGED, 3):
        pinned = config.files
        changed = tuple(f for f in reply[1] if type(f) is str and f in pinned)
        removed = tuple(f for f in reply[2] if type(f) is str and f in pinned)
        listed = "; ".join(
            f"{what}: {', '.join(files)}"
            for what, files in (("changed", changed), ("removed", removed))
            if files
        )
        return ExtensionCodeChanged(
            f"extension {name!r}: its code differs from what was pinned at registration "
            f"({listed or 'files differ'}); nothing was run: review the change and "
            "register the extension again",
            changed=changed,
            removed=removed,
        )
    if is_reply(reply, RESOURCE, 2) and reply[1] == "memory_bytes":
        return resource_error(name, config.limits, "memory_bytes", "while starting")
    if is_reply(reply, FAILED, 3) and reply[1] in _STAGES:
        return ExtensionFailed(
            f"extension {name!r}: {_STAGES[reply[1]]} {type_name(reply[2])}; fix the "
            "extension (run it outside gotstate-persist to see the traceback)",
            cause="raised",
        )
    if is_reply(reply, FAILED, 3) and reply[1] == "attribute":
        return ExtensionFailed(
            f"extension {name!r}: {config.location.attr!r} is missing from its module or "
            "is not a class; fix the target",
            cause="raised",
        )
    return malformed(name, "answer to its start")
