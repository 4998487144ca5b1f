"""How the ``gotstate-persist`` command speaks: its tables, its JSON, its errors, its exit status.

Every command group prints through these rules, so they hold for all of them
at once: names and values read from a store are escaped before they reach a
terminal, a problem is one line on stderr (2 for usage errors, 1 otherwise)
whose URLs are masked whoever built the message, and an interrupted or
closed-pipe run ends with the status a shell expects, never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable
from typing import NoReturn, TextIO

from .._names import printable
from .._redact import scrub
from ..errors import InvalidArgument, PersistError, VersionConflict

__all__ = [
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "Command",
    "CommandParser",
    "print_table",
    "run_command",
    "terminal_safe_json",
    "with_option_advice",
]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
#: 128 + SIGINT, as shells report a command stopped with Ctrl-C.
EXIT_INTERRUPTED = 130

#: What a subcommand's ``func`` default is: the parsed arguments in, the exit status out.
Command = Callable[[argparse.Namespace], int]


class CommandParser(argparse.ArgumentParser):
    """argparse's parser, whose usage errors quote arguments: URLs among them are masked."""

    def error(self, message: str) -> NoReturn:
        super().error(printable(scrub(message)))  # arguments may hold terminal escapes too


def print_table(rows: list[list[str]], out: TextIO) -> None:
    if not rows:
        return
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        out.write(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
            + "\n"
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


def run_command(command: Command, args: argparse.Namespace) -> int:
    """Run ``command``; every expected failure becomes one line on stderr and its status."""
    # Messages may quote stored names (escaped, one line); any URL in them is
    # masked once more here, whoever built the message.
    try:
        status: int = command(args)
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


def with_option_advice(exc: VersionConflict) -> VersionConflict:
    """A stale ``expected_version`` with the command-line option that fixes it added."""
    if exc.actual is None:
        return exc
    return VersionConflict(
        f"{exc} (on the command line: --expected-version {exc.actual})",
        expected=exc.expected,
        actual=exc.actual,
    )
